"""The compiled core (pcpd.core): which build runs, and that both count alike."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcpd import core
from pcpd.analysis.costs import DEFAULT_MEMDESC_RECORD, cost_table
from pcpd.config.load import parse_settings
from pcpd.kernel import DEFAULT_ERA, MEMDESC_TYPES, PAGE_ORDERS
from pcpd.model.arena import RECORD_SIZES
from pcpd.policies import POLICIES
from pcpd.simulate.engine import Simulation

REPO = Path(__file__).resolve().parent.parent
compiled_only = pytest.mark.skipif(not core.running_compiled(), reason="this run is on the interpreted core")

MIXED = """
name = "core"
seed = 7
cpus = [0, 1, 2]
[arena]
memory = "16MiB"
[[workload]]
name = "w"
types = { anon = 3, file = 1, slab = 2, kernel = 1 }
orders = { 0 = 70, 1 = 10, 3 = 10, 9 = 10 }
working_set = 512
burst = 32
cross_cpu = { fraction = 0.2 }
pressure = { period = 3000, free_fraction = 0.5 }
"""


def simulated(policy: str) -> tuple:
    """Every count and virtual time of three virtual CPUs of a mixed workload."""
    settings = parse_settings(MIXED, "core.toml", available_cpus=range(3))
    result = Simulation(settings, policy, 3000).run()
    assert result.audit_ok, result.audit_summary
    return result.snapshot.per_cpu.tolist(), result.finish_seconds, result.lock


def core_files() -> list[str]:
    """Where this process loaded each core module from."""
    return [importlib.import_module(m).__file__ for m in core.COMPILED]


@compiled_only
def test_a_call_on_the_interpreted_core_runs_there():
    assert not any(f.endswith(".py") for f in core_files())
    assert all(f.endswith(".py") for f in core.call_interpreted(core_files))


@compiled_only
def test_the_compiled_core_counts_every_cost_table_cell_as_the_interpreted_one():
    every_cell = (DEFAULT_ERA, DEFAULT_MEMDESC_RECORD, list(POLICIES), MEMDESC_TYPES, PAGE_ORDERS, False)
    assert cost_table(*every_cell) == core.call_interpreted(cost_table, *every_cell)


@compiled_only
@pytest.mark.parametrize("record_bytes", sorted(set(RECORD_SIZES) - {DEFAULT_MEMDESC_RECORD}))
def test_the_compiled_core_counts_every_record_size_as_the_interpreted_one(record_bytes):
    """The other struct page layouts (Memmap64, 32, 8: free-list links in free memory)."""
    cells = (DEFAULT_ERA, record_bytes, ["memdesc", "memdesc-pcpdesc"], MEMDESC_TYPES, [0, 3, 9], False)
    assert cost_table(*cells) == core.call_interpreted(cost_table, *cells)


@compiled_only
@pytest.mark.parametrize("policy", list(POLICIES))
def test_the_compiled_core_runs_a_workload_as_the_interpreted_one(policy):
    assert simulated(policy) == core.call_interpreted(simulated, policy)


@compiled_only
def test_the_tracing_tests_pass_on_the_interpreted_core():
    env = dict(os.environ, **{core.PURE_ENV: "1"})
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "interpreted",
                           str(REPO / "tests")], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1] and "skipped" not in done.stdout.splitlines()[-1]


def test_pure_python_runs_every_core_module_from_its_source():
    code = ("import importlib, json; from pcpd import core; "
            "print(json.dumps([importlib.import_module(m).__file__ for m in core.COMPILED]))")
    env = dict(os.environ, **{core.PURE_ENV: "1"})
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(f.endswith(".py") for f in json.loads(done.stdout))
    assert done.stderr == ""                   # asked for: nothing to warn about


def test_ci_runs_the_compiled_core():
    """.ci/run sets PCPD_REQUIRE_COMPILED: there the build must have compiled every module."""
    if not os.environ.get("PCPD_REQUIRE_COMPILED"):
        pytest.skip("PCPD_REQUIRE_COMPILED is not set")
    assert core.why_interpreted() is None and core.running_compiled()
    assert not any(f.endswith(".py") for f in core_files())


def _fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: bool) -> tuple[Path, Path]:
    """Two compiled modules in a tree of their own, the second's .pxd cimporting the first's."""
    monkeypatch.setattr(core, "COMPILED", ("pkg.low", "pkg.high"))
    monkeypatch.setattr(core, "_ROOT", tmp_path)
    monkeypatch.delenv(core.PURE_ENV, raising=False)
    (tmp_path / "pkg").mkdir()
    for name, pxd in (("low", "cdef class Low:\n    pass\n"), ("high", "from pkg.low cimport Low\n")):
        source = tmp_path / "pkg" / f"{name}.py"
        source.write_text("")
        source.with_suffix(".pxd").write_text(pxd)
        os.utime(source, (1_000_000, 1_000_000))
        os.utime(source.with_suffix(".pxd"), (1_000_000, 1_000_000))
        if built:
            so = source.with_suffix(core.importlib.machinery.EXTENSION_SUFFIXES[0])
            so.write_bytes(b"")
            os.utime(so, (1_000_001, 1_000_001))      # an install writes both within moments
    return tmp_path / "pkg" / "low.py", tmp_path / "pkg" / "high.py"


def test_a_source_edited_after_the_build_runs_interpreted(tmp_path, monkeypatch):
    low, high = _fake_tree(tmp_path, monkeypatch, built=True)
    assert core.why_interpreted() is None
    os.utime(low, (1_000_100, 1_000_100))             # a body: only its own build is stale
    assert core.why_interpreted() == ("pkg/low.py is newer than the build of pkg.low "
                                      "(rebuild: pip install -e .)")
    os.utime(low.with_suffix(core.importlib.machinery.EXTENSION_SUFFIXES[0]), (1_000_100, 1_000_100))
    assert core.why_interpreted() is None             # rebuilt alone: high did not depend on it
    os.utime(low.with_suffix(".pxd"), (1_000_200, 1_000_200))   # a layout: its cimporters too
    os.utime(low.with_suffix(core.importlib.machinery.EXTENSION_SUFFIXES[0]), (1_000_200, 1_000_200))
    assert core.why_interpreted().startswith("pkg/low.pxd is newer than the build of pkg.high")


def test_no_compiled_file_or_the_environment_runs_interpreted(tmp_path, monkeypatch):
    _fake_tree(tmp_path, monkeypatch, built=False)
    assert core.why_interpreted() == "pkg.low is not compiled"
    monkeypatch.setenv(core.PURE_ENV, "1")
    assert core.why_interpreted() == f"{core.PURE_ENV} is set"
