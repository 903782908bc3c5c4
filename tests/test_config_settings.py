"""Tests for pcpd.config.settings: the defaults are the soak mix; settings pickle and hash."""

import pickle
from pathlib import Path

from pcpd.config.load import load_settings
from pcpd.config.settings import DEFAULT_SETTINGS, SOAK_WORKLOAD, sweepable_paths

ROOT = Path(__file__).resolve().parent.parent
TWO_CPUS = frozenset({0, 1})


def load_preset(name: str):
    return load_settings(str(ROOT / "configs" / f"{name}.toml"), available_cpus=TWO_CPUS)


def test_soak_preset_is_the_default():
    assert load_preset("soak") == DEFAULT_SETTINGS
    assert DEFAULT_SETTINGS.workloads == (SOAK_WORKLOAD,)


def test_default_is_the_soak_mix():
    soak = DEFAULT_SETTINGS.workloads[0]
    assert set(soak.types) == {"anon", "file", "slab", "pagetable", "netpool", "kernel"}
    assert set(soak.orders_for("anon")) == set(soak.orders_for("file")) == {0, 2, 4, 9}
    assert set(soak.orders_for("slab")) == {0, 1, 2, 3}
    assert set(soak.orders_for("pagetable")) == {0}
    assert set(soak.orders_for("netpool")) == {0, 1}
    assert set(soak.orders_for("kernel")) == {1, 2, 3}
    assert soak.cross_cpu.fraction > 0 and soak.cross_cpu.types == ("netpool",)
    assert soak.pressure.period > 0


def test_settings_pickle_and_hash():
    settings = load_preset("memdesc-stranding")
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert hash(settings) == hash(load_preset("memdesc-stranding"))



def test_sweepable_paths_are_the_numeric_settings_outside_sweep_and_experiment():
    paths = sweepable_paths()
    assert {"seed", "duration", "arena.memory", "arena.record_bytes", "pcp.batch", "workload.burst",
            "workload.pressure.period", "workload.cross_cpu.fraction"} <= set(paths)
    assert not any(path.startswith(("sweep.", "experiment.")) for path in paths)
    assert not {"name", "cpus", "policy.name", "workload.types", "exporter.per_cpu"} & set(paths)
