"""Tests for pcpd.analysis.cluster: ``pcpd experiment --scheduler`` on a LocalCluster and on a real
``dask scheduler`` + ``dask worker`` started as processes, a worker killed mid-point, counts identical
to a local run, and the one-line errors for a bad address, an unreachable scheduler, no Dask."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pcpd.analysis import cluster
from pcpd.analysis.cluster import point_resources, run_remote
from pcpd.analysis.compare import check_comparable
from pcpd.analysis.plan import plan_experiment, plan_points
from pcpd.analysis.report import placement_rows, warnings
from pcpd.analysis.results import Results, load, machine_metadata
from pcpd.cli import main
from pcpd.config.load import load_settings, parse_settings
from pcpd.errors import UsageError

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "results" / "tiny.toml"
OPS = "10000"
# one worker on CPU 0, seeded and bounded by operations: its counts repeat exactly on any host
SWEEP = """
name = "one-worker-sweep"
duration = 1.0                                              # a sweep needs one; --ops bounds the runs
cpus = [0]
[arena]
memory = "16MiB"
[[workload]]
name = "w"
types = { anon = 2, slab = 1, kernel = 1 }
orders = { 0 = 70, 1 = 20, 3 = 10 }
type_orders = { kernel = { 1 = 1 } }
working_set = 1024
burst = 8
pressure = { period = 5000, free_fraction = 0.5 }
[experiment]
policies = ["legacy", "memdesc"]
repeat = 1
warmup = 0.25
[sweep]
key = "pcp.batch"
values = [31, 63]
"""
TIMED = ("_ns", "lock_wait_bucket_")                        # clock readings, not counts


def counts(results: Results) -> list[tuple]:
    """Each run's identity and every count it made, in the file's order."""
    return [(run["policy"], run["point"], run["repetition"], run["seed"], run["ops"],
             {k: v for k, v in run["counters"].items() if not any(t in k for t in TIMED)})
            for run in results.runs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def point_child(root: int) -> psutil.Process | None:
    """A ``python -m pcpd.analysis.cluster`` a task runs under process ``root``, once its daemon has started."""
    try:
        for process in psutil.Process(root).children(recursive=True):
            if "pcpd.analysis.cluster" in process.cmdline() and process.children():
                return process
    except psutil.Error:                                     # a process ended while we looked
        pass
    return None


@pytest.fixture(autouse=True)
def scratch(tmp_path):
    """Dask's scratch space (its default is /tmp/dask-scratch-space) in the test's own directory."""
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        yield


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "sweep.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def local_json(sweep, tmp_path_factory) -> Path:
    """The sweep run here, one point after another: what every cluster run must reproduce."""
    out = tmp_path_factory.mktemp("local")
    assert main(["experiment", str(sweep), "--ops", OPS, "--out", str(out)]) == 0
    return out / "results.json"


@pytest.fixture(scope="module")
def local(local_json) -> Results:
    return load(str(local_json))


# --- mistakes: one line, exit 2, nothing run or written -------------------------------

@pytest.mark.parametrize("address, message", [
    ("localhost", "expected a scheduler address such as tcp://HOST:8786"),
    ("tcp://localhost", "expected a scheduler address such as tcp://HOST:8786"),
    ("http://localhost:8786", "unsupported protocol 'http'; use one of tcp, tls, ws, wss"),
    ("tcp://localhost:99999", "port 99999 is out of range (1-65535)"),
])
def test_a_bad_address_is_a_one_line_error(tmp_path, capsys, address, message):
    assert main(["experiment", str(TINY), "--out", str(tmp_path / "out"), "--scheduler", address]) == 2
    assert capsys.readouterr().err == f"pcpd experiment: error: --scheduler {address}: {message}\n"
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
    address = f"tcp://127.0.0.1:{free_port()}"                # nothing listens there
    assert main(["experiment", str(TINY), "--out", str(tmp_path / "out"), "--scheduler", address]) == 2
    assert capsys.readouterr().err == (f"pcpd experiment: error: --scheduler {address}: cannot reach the "
                                       f"scheduler: Timed out trying to connect to {address} after 0.5 s\n")
    assert not (tmp_path / "out").exists()


def test_without_dask_the_option_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)    # import distributed raises ImportError
    assert main(["experiment", str(TINY), "--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:8786"]) == 2
    assert capsys.readouterr().err == ("pcpd experiment: error: --scheduler needs Dask distributed, which is "
                                       "not installed: pip install 'dask[distributed]' (pcpd's cluster extra)\n")


def test_a_cluster_without_pcpd_nodes_is_a_one_line_error(tmp_path, capsys):
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0",
                                  local_directory=str(tmp_path)) as lc:
        address = lc.scheduler_address
        assert main(["experiment", str(TINY), "--out", str(tmp_path / "out"), "--scheduler", address]) == 2
    assert capsys.readouterr().err == (
        f"pcpd experiment: error: --scheduler {address}: no worker offers the pcpd-node resource; start one "
        f"on each machine with: dask worker {address} --nworkers 1 --nthreads 1 --resources pcpd-node=1\n")


def test_a_point_naming_cpus_its_node_lacks_comes_back_as_that_nodes_error():
    """Checked where it runs, not only where the config was read: else its daemon would retry for ever."""
    text = SWEEP.replace("cpus = [0]", "cpus = [4095]")
    settings = parse_settings(text, "far.toml", available_cpus={0, 4095})
    plan = plan_experiment(settings, ops=100, available_cpus={0, 4095})
    outcome = run_remote(plan, plan_points(plan)[0])
    assert outcome.record is None and outcome.host == socket.gethostname()
    assert outcome.error.startswith("far.toml: cpus: CPU 4095 is not available to this process")


def test_a_real_mode_point_takes_a_whole_node_and_a_virtual_one_none():
    settings = load_settings(str(TINY))
    assert point_resources(plan_experiment(settings)) == {"pcpd-node": 1}
    assert point_resources(plan_experiment(settings, mode="virtual", ops=100)) == {}


# --- a LocalCluster ---------------------------------------------------------------------

def interrupt_one_point(stop: threading.Event, interrupted: list[int]) -> None:
    """SIGTERM the first point process found under this one, once its daemon runs: the run stops, the task
    fails, and Dask must rerun it (``retries``)."""
    while not stop.is_set():
        child = point_child(os.getpid())
        if child is not None:
            child.terminate()
            interrupted.append(child.pid)
            return
        time.sleep(0.02)


def test_a_local_cluster_reruns_an_interrupted_point_and_gives_the_local_counts(sweep, local, local_json,
                                                                               tmp_path, capsys):
    out = tmp_path / "cluster"
    stop, interrupted = threading.Event(), []
    watcher = threading.Thread(target=interrupt_one_point, args=(stop, interrupted))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", resources={"pcpd-node": 1},
                                  local_directory=str(tmp_path)) as lc:
        watcher.start()
        try:
            assert main(["experiment", str(sweep), "--ops", OPS, "--out", str(out),
                         "--scheduler", lc.scheduler_address]) == 0
        finally:
            stop.set()
            watcher.join()
    assert interrupted, "no point was interrupted"
    results = load(str(out / "results.json"))
    assert counts(results) == counts(local)                  # same runs, same order, same counts
    host = socket.gethostname()
    assert {run["host"] for run in results.runs} == {host}
    assert set(results.metadata["hosts"]) == {host}
    assert results.metadata["cpu_count"] == local.metadata["cpu_count"]     # one machine: scalars
    err = capsys.readouterr().err
    assert f"4 runs on {lc.scheduler_address}: 1 worker(s) with pcpd-node" in err
    assert f"pcp.batch = 63 on {host}: " in err
    report = (out / "report.md").read_text()
    assert re.search(rf"^\| ran on +\| {re.escape(host)} \(4 runs\) +\|$", report, re.M)
    log = (out / "experiment.log").read_text()
    assert log.count(f": on {host} ---") == 4 and log.count("final audit ok") == 4
    capsys.readouterr()
    assert main(["compare", str(local_json), str(out / "results.json")]) == 0   # one machine: comparable
    compared = capsys.readouterr().out
    assert re.search(r"^\| Amean +\| struct page lines/op .* \( +same\) +\|$", compared, re.M), compared


def test_virtual_points_share_workers_that_offer_no_pcpd_node(tmp_path, capsys):
    """Virtual runs take no resource: a worker without pcpd-node runs them, two threads at a time,
    with the counts and virtual times of a local run."""
    virtual = ["experiment", str(TINY), "--mode", "virtual", "--ops", "500", "--eras", "5.14,6.7",
               "--repeat", "1"]
    assert main([*virtual, "--out", str(tmp_path / "local")]) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", local_directory=str(tmp_path)) as lc:
        capsys.readouterr()
        assert main([*virtual, "--out", str(tmp_path / "cluster"), "--scheduler", lc.scheduler_address]) == 0
    err = capsys.readouterr().err
    assert f"4 runs on {lc.scheduler_address}: 1 worker(s) on " in err
    local, remote = (load(str(tmp_path / side / "results.json")) for side in ("local", "cluster"))
    assert counts(remote) == counts(local)
    assert [(run["era"], run["seconds"]) for run in remote.runs] == [(run["era"], run["seconds"]) for run in local.runs]
    assert remote.metadata["mode"] == "virtual"


def test_runs_on_unlike_machines_are_marked_and_refused_by_compare(local):
    """Had the sweep's points run on two unlike hosts, the file says so and compare refuses it."""
    this = local.metadata["hosts"][socket.gethostname()]
    hosts = {"a": this, "b": {**this, "cpu_count": this["cpu_count"] + 62}}
    mixed = Results({**local.metadata, **machine_metadata(hosts), "hosts": hosts},
                    [dict(run, host="a" if i % 2 else "b") for i, run in enumerate(local.runs)])
    assert mixed.metadata["cpu_count"] == [this["cpu_count"], this["cpu_count"] + 62]
    with pytest.raises(UsageError, match="differ in machine .B ran on different machines: cpu_count: "):
        check_comparable(local, mixed, ("a", "b"), force=False)
    rows = placement_rows(mixed)
    assert rows is not None and rows[0] == ["pcp.batch", "policy", "repetition", "host", "machine"]
    assert [row[3] for row in rows[1:]] == ["b", "a", "b", "a"]
    assert any(w.startswith("the runs ran on different machines (cpu_count: ") for w in warnings(mixed))


# --- a real scheduler and worker, started as processes ----------------------------------

def ended(process: psutil.Process, timeout: float) -> bool:
    """Whether ``process`` exits within ``timeout`` s (a zombie nobody has reaped yet counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def scratch_env(directory: Path) -> dict[str, str]:
    """The environment for a Dask process whose scratch space is ``directory`` (not /tmp/dask-scratch-space)."""
    return dict(os.environ, DASK_TEMPORARY_DIRECTORY=str(directory))


def start(*args: str, log: Path) -> subprocess.Popen:
    """A process in a session of its own, so that the test can end it and all it started."""
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=ROOT, env=scratch_env(log.parent))


def end(process: subprocess.Popen) -> None:
    """Stop a process started by ``start`` and every process of its session."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        try:                                                 # what it started may outlive it
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return



def test_a_worker_killed_mid_point_has_its_point_rerun(sweep, local, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # bounded: a scheduler left idle ends itself, a worker without its scheduler too
    scheduler = start("dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                      "--idle-timeout", "120s", log=tmp_path / "scheduler.log")
    worker = None
    try:
        worker = start("dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
                       "--resources", "pcpd-node=1", "--no-dashboard", "--host", "127.0.0.1",
                       "--death-timeout", "30", "--local-directory", str(tmp_path), log=tmp_path / "worker.log")
        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=30)
        out = tmp_path / "out"
        experiment = subprocess.Popen([sys.executable, "-m", "pcpd", "experiment", str(sweep), "--ops", OPS,
                                       "--out", str(out), "--scheduler", address],
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=scratch_env(tmp_path))
        try:
            deadline = time.monotonic() + 30
            child = None
            while child is None and time.monotonic() < deadline and experiment.poll() is None:
                child = point_child(worker.pid)
                time.sleep(0.02)
            assert child is not None, "no point started on the worker"
            killed = child.parent()
            assert killed is not None and "pcpd.analysis.cluster" not in killed.cmdline()
            killed.kill()                                    # the Dask worker process, mid-point
            # the point's own process follows its worker (PR_SET_PDEATHSIG), so nothing runs beside the rerun
            assert ended(child, timeout=15)
            stdout, stderr = experiment.communicate(timeout=60)
        finally:
            if experiment.poll() is None:
                experiment.kill()
        assert experiment.returncode == 0, stderr
        results = load(str(out / "results.json"))
        assert counts(results) == counts(local)              # the rerun point too
        assert {run["host"] for run in results.runs} == {socket.gethostname()}
        assert "wrote " in stdout
    finally:
        if worker is not None:
            end(worker)
        end(scheduler)
