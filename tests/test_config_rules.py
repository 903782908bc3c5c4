"""Tests for pcpd.config.rules: the rules between keys, and which worker runs which workload."""

import os
from pathlib import Path

import pytest

from pcpd.config.load import load_settings, parse_settings
from pcpd.config.rules import assign_workloads, worker_cpus
from pcpd.config.settings import DEFAULT_SETTINGS, CrossCpu
from pcpd.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parent.parent
TWO_CPUS = frozenset({0, 1})


def parse(text: str):
    return parse_settings(text, "x.toml", available_cpus=TWO_CPUS)


def load_preset(name: str):
    return load_settings(str(ROOT / "configs" / f"{name}.toml"), available_cpus=TWO_CPUS)


# --- rejections: (config text, expected part of the one-line message) ------

BAD_RULES = [
    # weight tables naming types the workload does not allocate
    ("[[workload]]\ntype_orders = {slab = {0 = 1}}", 'workload[0].type_orders.slab: "slab" is not among '
                                                     "workload[0].types"),
    ("[[workload]]\ncross_cpu = {fraction = 0.1, types = [\"netpool\"]}",
     'workload[0].cross_cpu.types: "netpool" is not among workload[0].types'),
    # arena size
    ("[arena]\nmemory = \"2MiB\"\n[[workload]]\norders = {10 = 1}\nworking_set = 8",
     "workload[0].orders: order 10 blocks are 1024 pages, more than the arena's 512"),
    ("[arena]\nmemory = \"2MiB\"\n[[workload]]\nworking_set = 513",
     "workload[0].working_set: 513 pages is more than the arena's 512"),
    # CPUs
    ("cpus = [0, 1, 2]", "x.toml: cpus: CPU 2 is not available to this process (it may run on 0-1)"),
    ("[[workload]]\ncpus = [5]", "workload[0].cpus: CPU 5 is not a worker (workers: 0-1)"),
    ("cpus = [0]\n[[workload]]\ncpus = [1]", "workload[0].cpus: CPU 1 is not a worker (workers: 0)"),
    ("[[workload]]\nname = \"a\"\ncpus = [0]\n[[workload]]\nname = \"b\"\ncpus = [0, 1]",
     "workload[1].cpus: CPU 0 already runs workload[0]; a worker runs one workload"),
    ("[[workload]]\nname = \"a\"\n[[workload]]\nname = \"b\"",
     "workload[1].cpus: only one workload may leave cpus empty"),
    ("[[workload]]\ncpus = [0]", "x.toml: workload: worker CPU 1 runs no workload"),
    ("[[workload]]\nname = \"a\"\ncpus = [0, 1]\n[[workload]]\nname = \"b\"",
     "workload[1].cpus: is empty, so it runs on the workers no other workload names, but the others"),
    ("[[workload]]\nname = \"a\"\ncpus = [0]\n[[workload]]\nname = \"a\"\ncpus = [1]",
     'workload[1].name: "a" is already the name of workload[0]'),
    ("[[workload]]\ncross_cpu = {fraction = 0.5, targets = [3]}",
     "workload[0].cross_cpu.targets: CPU 3 is not a worker (workers: 0-1)"),
    ("[[workload]]\nname = \"a\"\ncpus = [0]\ncross_cpu = {fraction = 0.5, targets = [0]}\n"
     "[[workload]]\nname = \"b\"\ncpus = [1]",
     "workload[0].cross_cpu.targets: CPU 0 runs this workload and would hand frees only to itself"),
    # PCP knobs and kernel eras
    ("[pcp]\nhigh_min = 100\nhigh_max = 50", "pcp.high_max: must be >= pcp.high_min (100), got 50"),
    ("[pcp]\nhigh = 500", "pcp.high: era 6.7 auto-tunes high between pcp.high_min and pcp.high_max"),
    ("[kernel]\nera = \"5.14\"\n[pcp]\nhigh_min = 500", 'pcp.high_min: exists from era 6.7 (kernel.era is "5.14")'),
    ("[kernel]\nera = \"5.13\"\n[pcp]\nhigh_fraction = 8",
     'pcp.high_fraction: vm.percpu_pagelist_high_fraction exists from era 5.14 (kernel.era is "5.13")'),
    ("[pcp]\nhigh_fraction = 8\nhigh_max = 4000", "pcp.high_fraction: sizes high as managed pages / fraction"),
    ("[kernel]\nera = \"5.13\"\n[pcp]\nbatch = 63\nhigh = 31", "pcp.high: must be >= pcp.batch (63)"),
    # policies and struct page sizes
    ("[arena]\nrecord_bytes = 32", "x.toml: policy.name: \"legacy\" runs on today's 64-byte struct page "
                                   "(compound_head in every tail page), but arena.record_bytes is 32"),
    ("[arena]\nrecord_bytes = 16\n[policy]\nname = \"compound\"", 'policy.name: "compound" runs on today\'s'),
    # sweeps and experiments
    ("duration = 5\n[sweep]\nvalues = [1]", "sweep.values: given without a sweep.key to vary"),
    ("duration = 5\n[sweep]\nkey = \"pcp.batch\"", 'sweep.values: sweep.key is "pcp.batch" but there are no values'),
    ("[sweep]\nkey = \"pcp.batch\"\nvalues = [63]",
     "duration: a sweep runs once per value, so it needs a duration > 0"),
    ("duration = 5\n[sweep]\nkey = \"pcp.batch\"\nvalues = [63, 5000]",
     "sweep.values[1]: pcp.batch = 5000 fails: pcp.batch: expected an integer in 0..4095, got 5000"),
    ("duration = 5\n[sweep]\nkey = \"workload[2].burst\"\nvalues = [1]",
     'sweep.key: "workload[2].burst" names a workload that does not exist (the config has 1)'),
    ("duration = 2\n[experiment]\nwarmup = 2", "experiment.warmup: must be shorter than duration (2 s), got 2"),
]


@pytest.mark.parametrize("text, message", BAD_RULES, ids=[f"{i}:{m[:40]}" for i, (_, m) in enumerate(BAD_RULES)])
def test_broken_rule_is_one_line_error(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    error = str(info.value)
    assert message in error
    assert error.startswith("x.toml: ") and "\n" not in error
    assert isinstance(info.value, UsageError)


def test_cpus_default_to_this_process_affinity():
    settings = parse_settings("", "x.toml")
    assert worker_cpus(settings) == tuple(sorted(os.sched_getaffinity(0)))


def test_many_workloads_are_checked_in_linear_time():
    """Names were compared pairwise: 30,000 workloads (a 1 MB file) took 45 s."""
    text = "\n".join(f'[[workload]]\nname = "w{i}"\ncpus = [{i % 2}]' for i in range(30_000))
    with pytest.raises(ConfigError, match=r"workload\[2\]\.cpus: CPU 0 already runs workload\[0\]"):
        parse(text)
    named = "\n".join(f'[[workload]]\nname = "w{i}"' for i in range(30_000)) + '\n[[workload]]\nname = "w7"'
    with pytest.raises(ConfigError, match=r'workload\[30000\]\.name: "w7" is already the name of workload\[7\]'):
        parse(named)


# --- workers and workloads ------------------------------------------------

def test_assign_workloads():
    settings = load_preset("net-rx")
    assignment = assign_workloads(settings, TWO_CPUS)
    assert {cpu: w.name for cpu, w in assignment.items()} == {0: "rx", 1: "app"}
    assert {cpu: w.name for cpu, w in assign_workloads(DEFAULT_SETTINGS, {0, 1, 2, 3}).items()} == \
        {0: "soak", 1: "soak", 2: "soak", 3: "soak"}
    two = parse('cpus = [0, 1]\n[[workload]]\nname = "a"\ncpus = [1]\n[[workload]]\nname = "rest"')
    assert {cpu: w.name for cpu, w in assign_workloads(two, TWO_CPUS).items()} == {0: "rest", 1: "a"}


def test_cross_cpu_targets_exclude_the_freeing_cpu():
    assert CrossCpu(fraction=0.5).targets_for(1, (0, 1, 2)) == (0, 2)
    assert CrossCpu(fraction=0.5, targets=(1, 2)).targets_for(1, (0, 1, 2)) == (2,)
    assert CrossCpu(fraction=0.5).targets_for(0, (0,)) == ()   # one worker: frees stay local


def test_experiments_may_list_struct_page_policies_with_small_records():
    """Experiments run legacy and compound on 64-byte pages whatever record_bytes says."""
    settings = parse('[arena]\nrecord_bytes = 8\n[policy]\nname = "memdesc"')
    assert settings.arena.record_bytes == 8
    assert "legacy" in settings.experiment.policies
