"""The compiled core (pcpd.core): which build runs, and that both count alike."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcpd import core
from pcpd.analysis.costs import DEFAULT_MEMDESC_RECORD, cost_table
from pcpd.config.load import parse_settings
from pcpd.kernel import DEFAULT_ERA, MEMDESC_TYPES, PAGE_ORDERS
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


@compiled_only
def test_a_call_on_the_interpreted_core_runs_there():
    assert core.running_compiled() and not core.call_interpreted(core.running_compiled)


@compiled_only
def test_the_compiled_core_counts_every_cost_table_cell_as_the_interpreted_one():
    every_cell = (DEFAULT_ERA, DEFAULT_MEMDESC_RECORD, list(POLICIES), MEMDESC_TYPES, PAGE_ORDERS, False)
    assert cost_table(*every_cell) == core.call_interpreted(cost_table, *every_cell)


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
    assert all(f.endswith(".py") for f in __import__("json").loads(done.stdout))
    assert done.stderr == ""                   # asked for: nothing to warn about


def test_ci_runs_the_compiled_core():
    """.ci/run sets PCPD_REQUIRE_COMPILED: there the build must have compiled every module."""
    if not os.environ.get("PCPD_REQUIRE_COMPILED"):
        pytest.skip("PCPD_REQUIRE_COMPILED is not set")
    assert core.why_interpreted() is None and core.running_compiled()
    assert all(not sys.modules[m].__file__.endswith(".py") for m in core.COMPILED if m in sys.modules)


def _fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: bool) -> tuple[Path, Path]:
    """One compiled module's source and build in a tree of its own."""
    monkeypatch.setattr(core, "COMPILED", ("pkg.mod",))
    monkeypatch.setattr(core, "_ROOT", tmp_path)
    monkeypatch.delenv(core.PURE_ENV, raising=False)
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "mod.py"
    source.write_text("")
    so = source.with_suffix(core.importlib.machinery.EXTENSION_SUFFIXES[0])
    if built:
        so.write_bytes(b"")
    return source, so


def test_a_source_edited_after_the_build_runs_interpreted(tmp_path, monkeypatch):
    source, so = _fake_tree(tmp_path, monkeypatch, built=True)
    os.utime(source, (1_000_000, 1_000_000))
    os.utime(so, (1_000_001, 1_000_001))       # an install writes both within moments
    assert core.why_interpreted() is None
    os.utime(source, (1_000_100, 1_000_100))
    assert core.why_interpreted() == "pkg/mod.py is newer than its compiled module (rebuild: pip install -e .)"
    pxd = source.with_suffix(".pxd")
    pxd.write_text("")
    os.utime(source, (1_000_000, 1_000_000))
    os.utime(pxd, (1_000_100, 1_000_100))
    assert core.why_interpreted().startswith("pkg/mod.pxd is newer")


def test_no_compiled_file_or_the_environment_runs_interpreted(tmp_path, monkeypatch):
    _fake_tree(tmp_path, monkeypatch, built=False)
    assert core.why_interpreted() == "pkg.mod is not compiled"
    monkeypatch.setenv(core.PURE_ENV, "1")
    assert core.why_interpreted() == f"{core.PURE_ENV} is set"
