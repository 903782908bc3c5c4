"""Plug-in policies: found through the ``pcpd.policies`` entry point group, listed, usable.

In-process tests put a distribution's ``.dist-info`` (metadata plus
entry_points.txt) and its module on sys.path, which is all an installed
distribution is to ``importlib.metadata``, and point a registry at it.  One
end-to-end test has pip install the example plug-in in examples/ (as a
wheel) into a throwaway virtual environment and drives the ``pcpd`` command
line there: ``policies``, ``check``, ``costs``, ``run``, ``replay``, ``experiment``
and ``simulate``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import site
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import pcpd
from pcpd import cli
from pcpd.policies import BUILTIN, POLICIES, PluginError, PolicyRegistry, policy_names, policy_traits
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, policy_class

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "pcpd-policy-example"

GOOD = '''
from pcpd.policies import PolicyTraits
from workers.policies.struct_page import LegacyPolicy

class Fifo(LegacyPolicy):
    name = "{name}"
    TRAITS = PolicyTraits(name="{name}", description="a test plug-in", memdesc=False, typed_pcps=False,
                          record_sizes={sizes}, default_record_bytes=64)
'''


def install(site_dir: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """What pip leaves behind, as far as importlib.metadata looks: a .dist-info and the modules."""
    info = site_dir / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pcpd.policies]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points.items()))
    for module, text in modules.items():
        (site_dir / f"{module}.py").write_text(textwrap.dedent(text))


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A directory on sys.path, and the global registry made to look again (restored after)."""
    where = tmp_path / "site"
    where.mkdir()
    monkeypatch.syspath_prepend(str(where))
    builtins = {t.name: t for t in BUILTIN}
    monkeypatch.setattr(POLICIES, "_traits", dict(builtins))
    monkeypatch.setattr(POLICIES, "_order", list(builtins))
    monkeypatch.setattr(POLICIES, "_plugins", None)
    monkeypatch.setattr(POLICIES, "_broken", {})
    monkeypatch.setattr(POLICIES, "skipped", [])
    yield where
    policy_class.cache_clear()
    for module in [m for m in sys.modules if m.startswith("pcpd_test_plugin")]:
        del sys.modules[module]


def test_plugins_are_found_by_name_and_imported_only_when_needed(site_dir):
    install(site_dir, "pcpd-test-plugin", {"test-fifo": "pcpd_test_plugin_a:Fifo"},
            {"pcpd_test_plugin_a": GOOD.format(name="test-fifo", sizes=(64,))})
    registry = PolicyRegistry(BUILTIN)
    assert list(registry) == [t.name for t in BUILTIN] + ["test-fifo"]
    assert "test-fifo" in registry and "pcpd_test_plugin_a" not in sys.modules
    traits = registry["test-fifo"]
    assert "pcpd_test_plugin_a" in sys.modules
    assert (traits.implementation, traits.source) == ("pcpd_test_plugin_a:Fifo", "pcpd-test-plugin")
    assert (traits.record_sizes, traits.memdesc) == ((64,), False)


def test_a_plugin_runs_like_a_builtin(site_dir):
    install(site_dir, "pcpd-test-plugin", {"test-fifo": "pcpd_test_plugin_b:Fifo"},
            {"pcpd_test_plugin_b": GOOD.format(name="test-fifo", sizes=(64,))})
    assert "test-fifo" in policy_names() and "test-fifo" in policy_names(memdesc=False)
    assert policy_traits("test-fifo").source == "pcpd-test-plugin"
    cls = policy_class("test-fifo")
    assert cls.name == "test-fifo" and cls.traits() is POLICIES["test-fifo"]
    spec = ModelSpec(pages=2048, policy="test-fifo")
    arena = create_arena(spec)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        pfn = cpu.policy.alloc(T_ANON, 0)
        cpu.policy.free(pfn, 0, T_ANON)
        assert cpu.release() > 0
        del cpu
    finally:
        arena.close()
        arena.unlink()


def test_cli_lists_and_measures_a_plugin(site_dir, capsys):
    install(site_dir, "pcpd-test-plugin", {"test-fifo": "pcpd_test_plugin_c:Fifo"},
            {"pcpd_test_plugin_c": GOOD.format(name="test-fifo", sizes=(64,))})
    assert cli.main(["policies"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.split()[:6] == ["test-fifo", "64", "(64)", "no", "no", "pcpd-test-plugin"]
    assert cli.main(["costs", "--policy", "test-fifo", "--memdesc", "anon", "--order", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["policy"] for r in rows} == {"test-fifo"} and {r["op"] for r in rows} == {"alloc", "free"}


@pytest.mark.parametrize("module, problem", [
    ("raise ImportError('needs libfoo')", "cannot import pcpd_test_plugin_d:Fifo: ImportError: needs libfoo"),
    ("class Fifo:\n    name = 'test-bad'\n", "has no TRAITS = PolicyTraits(...)"),
    (GOOD.format(name="other-name", sizes=(64,)), "calls itself 'other-name'"),
    (GOOD.format(name="test-bad", sizes=(48,)), "record sizes (48,) are not among 8, 16, 32, 64"),
])
def test_a_broken_plugin_is_reported_and_left_out(site_dir, capsys, module, problem):
    install(site_dir, "pcpd-broken-plugin", {"test-bad": "pcpd_test_plugin_d:Fifo"},
            {"pcpd_test_plugin_d": module})
    assert "test-bad" in policy_names()                # its name is known without importing it
    with pytest.raises(PluginError, match="plug-in policy 'test-bad' from pcpd-broken-plugin: "):
        policy_traits("test-bad")
    assert "test-bad" not in [t.name for t in POLICIES.values()]
    assert "test-bad" not in policy_names(memdesc=False)
    assert cli.main(["policies"]) == 1
    out, err = capsys.readouterr()
    assert "test-bad" in out and "cannot be loaded" in out
    assert problem in err
    assert cli.main(["costs", "--policy", "test-bad"]) == 2           # a one-line error, no traceback
    assert "pcpd costs: error: plug-in policy 'test-bad'" in capsys.readouterr().err


def test_a_plugin_cannot_take_a_builtin_name_or_a_bad_one(site_dir, capsys):
    install(site_dir, "pcpd-greedy-plugin", {"legacy": "pcpd_test_plugin_e:Fifo", "Bad Name": "x:y"},
            {"pcpd_test_plugin_e": GOOD.format(name="legacy", sizes=(64,))})
    assert list(POLICIES) == [t.name for t in BUILTIN]
    assert POLICIES["legacy"].source == "pcpd" and "pcpd_test_plugin_e" not in sys.modules
    assert cli.main(["policies"]) == 0                 # skipped entry points are warnings
    err = capsys.readouterr().err
    assert "skipped 'legacy' from pcpd-greedy-plugin: the name is taken (by pcpd)" in err
    assert "skipped 'Bad Name' from pcpd-greedy-plugin: not a valid policy name" in err


# -- a real installed distribution --------------------------------------------------------

def _nested_venv(tmp_path: Path) -> Path:
    """A throwaway venv that sees this interpreter's packages (and so pcpd, pip and setuptools)
    but installs into its own site-packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, timeout=60)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    # --system-site-packages reaches the base interpreter only; when the tests run in a
    # venv of their own, add its site-packages (with its .pth files: pcpd may be editable)
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    lines.append(str(Path(pcpd.__file__).resolve().parent.parent))        # pcpd itself, installed or not
    (Path(own) / "pcpd_parent_env.pth").write_text("\n".join(lines) + "\n")
    return python


def _wheel(project: Path, out: Path) -> Path:
    """The wheel a build backend makes of the example (one module, its metadata and entry
    points from pyproject.toml), made here: a venv's setuptools may lack bdist_wheel, and
    pcpd's tests must not need the network or a build backend to install a plug-in."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    groups = meta.get("entry-points", {})
    files = {
        module.name: module.read_bytes() for module in project.glob("*.py")
    } | {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: pcpd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
            for group, eps in groups.items()).encode(),
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


def test_an_installed_plugin_is_usable_in_every_command(tmp_path):
    pytest.importorskip("pip")
    python = _nested_venv(tmp_path)

    def pcpd_cmd(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
        done = subprocess.run([str(python), "-m", "pcpd", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done

    wheel = _wheel(EXAMPLE, tmp_path)
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    listing = pcpd_cmd("policies").stdout.splitlines()
    [line] = [row for row in listing if row.startswith("example-nothp ")]
    assert "pcpd-policy-example" in line and line.endswith("always go through the buddy")

    config = tmp_path / "plugin.toml"
    config.write_text(textwrap.dedent("""\
        cpus = [0]
        [arena]
        memory = "64MiB"
        [exporter]
        address = ""
        [policy]
        name = "example-nothp"
        [experiment]
        policies = ["legacy", "example-nothp"]
        warmup = 0.25
        [[workload]]
        types = { anon = 1 }
        orders = { 0 = 70, 9 = 30 }
        working_set = 4096
        """))
    pcpd_cmd("check", str(config))

    rows = json.loads(pcpd_cmd("costs", "--policy", "example-nothp", "--memdesc", "anon",
                               "--order", "0", "--order", "9", "--json").stdout)
    assert {(r["order"], r["op"], r["pcp"]) for r in rows if r["order"] == 9} == \
        {(9, "alloc", "bypass"), (9, "free", "bypass")}           # no THP lists

    run = pcpd_cmd("run", str(config), "--duration", "1")
    assert "audit ok" in run.stdout + run.stderr

    trace = REPO / "tests" / "data" / "traces" / "ftrace-4.4-era2.txt"
    replayed = pcpd_cmd("replay", str(trace), "--policies", "legacy,example-nothp",
                        "--out", str(tmp_path / "replay"))
    assert any(row.startswith("example-nothp ") for row in replayed.stdout.splitlines())

    pcpd_cmd("experiment", str(config), "--duration", "1", "--repeat", "1", "--out", str(tmp_path / "exp"))
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert "example-nothp" in json.dumps(results)

    # virtual time: both policies on the same seeded operations, so the plug-in's one
    # change shows in the counts (every THP it frees goes to the buddy, none to a PCP)
    simulated = pcpd_cmd("simulate", str(config), "--cpus", "2", "--ops", "400",
                         "--policy", "legacy,example-nothp", "--out", str(tmp_path / "sim"))
    assert "audit ok" in simulated.stdout
    runs = json.loads((tmp_path / "sim" / "results.json").read_text())["runs"]
    by_policy = {run["policy"]: run for run in runs}
    assert set(by_policy) == {"legacy", "example-nothp"}
    legacy, nothp = by_policy["legacy"]["counters"], by_policy["example-nothp"]["counters"]
    assert by_policy["legacy"]["ops"] == by_policy["example-nothp"]["ops"] == 800
    assert nothp["free_buddy"] > legacy["free_buddy"] and nothp["free_pcp"] < legacy["free_pcp"]
