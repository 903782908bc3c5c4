"""pcpd.daemon.supervisor: multi-process runs, end to end.

``pcpd run`` runs as a subprocess in its own session; the tests synchronise
on its output (workers' "started:" lines, "pcpd:" status lines, reload
messages, the summary), send signals to the daemon's pid only, and kill the
whole group if anything is left.  Per-CPU figures come from an in-process
Daemon (ops-bounded, so the comparisons are exact).  After every run no
shared-memory segment of the daemon may remain.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from groups import end_group

from pcpd.config.load import load_settings, parse_settings, replace_path
from pcpd.daemon.report import RunReport
from pcpd.daemon.supervisor import Daemon, RunOptions
from pcpd.errors import ConfigError
from pcpd.model.arena import C_PID, Arena

CONFIGS = Path(__file__).parent / "data" / "configs"
MIXED = CONFIGS / "mixed.toml"
NET_RX = CONFIGS / "net-rx-small.toml"
ONE_CPU = CONFIGS / "one-cpu.toml"
DEADLINE = 60.0
# counters that read a clock (or count the daemon's timed drain requests)
TIMED = ("lock_wait", "lock_hold", "heartbeat_ns", "drain_all_requests_seen")

SUMMARY_OK = [
    re.compile(r"final audit ok: buddy (\d+) \+ pcp 0 \+ allocated 0 \+ inflight 0 = \1;"),
    re.compile(r"every PCP drained: yes"),
    re.compile(r"pages lost 0\b"),
]
AUDITS = re.compile(r"audits (\d+) \((\d+) failed\)")
RESTARTS = re.compile(r"^  restarts (\d+),", re.M)   # the summary line, not a status line


class DaemonProcess:
    """``pcpd run`` in its own session, with its stdout and stderr read as lines arrive."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcpd", "run", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines = {"stdout": [], "stderr": []}
        self.changed = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(name, getattr(self.proc, name)), daemon=True)
                        for name in self.lines]
        for reader in self.readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, name: str, pipe) -> None:
        for line in pipe:
            with self.changed:
                self.lines[name].append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def matching(self, stream: str, pattern: str) -> list[str]:
        with self.changed:
            return [line for line in self.lines[stream] if re.search(pattern, line)]

    def wait_for(self, stream: str, pattern: str, count: int = 1, timeout: float = DEADLINE) -> list[str]:
        """The first ``count`` lines of ``stream`` matching ``pattern``; fails at the deadline or exit."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [line for line in self.lines[stream] if re.search(pattern, line)]
                if len(found) >= count:
                    return found[:count]
                if self.proc.poll() is not None and not any(r.is_alive() for r in self.readers):
                    raise AssertionError(f"pcpd exited ({self.proc.returncode}) before {count} "
                                         f"line(s) matching {pattern!r}:\n{self.output()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count} line(s) matching {pattern!r} on {stream} "
                                         f"within {timeout} s:\n{self.output()}")
                self.changed.wait(min(left, 0.5))

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def finish(self, timeout: float = DEADLINE) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pcpd did not exit within {timeout} s:\n{self.output()}") from None
        for reader in self.readers:
            reader.join(10.0)
        return code

    def output(self) -> str:
        return "\n".join(["--- stdout"] + self.lines["stdout"] + ["--- stderr"] + self.lines["stderr"])

    def kill_group(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()                 # a test that failed half-way: the daemon first
        self.proc.wait(10.0)
        end_group(self.proc.pid)


@pytest.fixture
def run_daemon():
    """Start ``pcpd run ARGS``; afterwards kill what is left of its group and check /dev/shm."""
    started: list[DaemonProcess] = []

    def start(*args: str) -> DaemonProcess:
        started.append(DaemonProcess(*args))
        return started[-1]

    yield start
    for daemon in started:
        exited = daemon.proc.poll() is not None       # else the test failed before it stopped
        daemon.kill_group()                           # workers, forkserver, anything left
        left = glob.glob(f"/dev/shm/pcpd-{daemon.pid}-*")
        for path in left:
            os.unlink(path)
        if exited:
            assert not left, f"shared-memory segments left behind: {left}"


def assert_clean_exit(daemon: DaemonProcess, code: int, workers: int) -> dict[str, int]:
    """Exit 0, a clean final audit with every PCP drained, periodic audits that all passed,
    no segment left in /dev/shm."""
    text = daemon.output()
    assert code == 0, text
    assert not glob.glob(f"/dev/shm/pcpd-{daemon.pid}-*"), text
    summary = "\n".join(daemon.lines["stdout"])
    for pattern in SUMMARY_OK:
        assert pattern.search(summary), f"{pattern.pattern!r} not in the summary:\n{text}"
    audits, failed = map(int, AUDITS.search(summary).groups())
    assert failed == 0, text
    assert not daemon.matching("stderr", "CONSERVATION VIOLATED|Traceback"), text
    assert len(daemon.matching("stderr", r"cpu\d+ INFO stopped after \d+ ops")) >= workers, text
    return {"audits": audits, "restarts": int(RESTARTS.search(summary).group(1))}


def write_config(path: Path, edits: dict[str, str] | None = None, extra: str = "") -> Path:
    """mixed.toml with ``edits`` (old -> new text) and ``extra`` appended, written to ``path``."""
    text = MIXED.read_text()
    for old, new in (edits or {}).items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text + extra)
    return path


# -- multi-process runs -------------------------------------------------------------

@pytest.mark.parametrize("policy", ["legacy", "memdesc"])
def test_mixed_workload_conserves_pages_at_every_audit_and_at_exit(run_daemon, policy):
    daemon = run_daemon(str(MIXED), "--policy", policy, "--duration", "2.5",
                        "--audit-interval", "0.4", "--status-interval", "1")
    daemon.wait_for("stderr", r"cpu\d+ INFO started: policy " + policy, count=2)
    code = daemon.finish()
    got = assert_clean_exit(daemon, code, workers=2)
    assert got["audits"] >= 3                         # periodic ones, and the final one
    assert got["restarts"] == 0
    assert daemon.matching("stdout", r"^pcpd: [\d,]+ ops/s")


def test_sigterm_stops_cleanly_with_every_pcp_drained(run_daemon):
    daemon = run_daemon(str(MIXED), "--duration", "0", "--audit-interval", "0.5",
                        "--status-interval", "0.3")
    daemon.wait_for("stderr", r"cpu\d+ INFO started:", count=2)
    daemon.wait_for("stdout", r"^pcpd: ", count=2)    # running, with work on every PCP
    daemon.signal(signal.SIGTERM)
    code = daemon.finish()
    assert_clean_exit(daemon, code, workers=2)
    assert daemon.matching("stderr", "daemon INFO stopping")


GROUP_SIGNALS = [
    pytest.param(signal.SIGINT, id="SIGINT"),          # a terminal's ^C
    pytest.param(signal.SIGTERM, id="SIGTERM"),
]


@pytest.mark.parametrize("signum", GROUP_SIGNALS)
def test_a_stop_signal_to_the_whole_process_group_stops_cleanly(run_daemon, signum):
    # timeout(1), a service manager and a terminal signal every process of the group
    daemon = run_daemon(str(MIXED), "--duration", "0", "--audit-interval", "0.5",
                        "--status-interval", "0.3")
    daemon.wait_for("stderr", r"cpu\d+ INFO started:", count=2)
    daemon.wait_for("stdout", r"^pcpd: ")
    os.killpg(daemon.pid, signum)
    code = daemon.finish(timeout=30.0)
    got = assert_clean_exit(daemon, code, workers=2)
    assert got["restarts"] == 0
    assert not daemon.matching("stderr", r"daemon is gone|died")


def test_a_hangup_of_the_whole_process_group_reloads(run_daemon, tmp_path):
    config = write_config(tmp_path / "run.toml")
    daemon = run_daemon(str(config), "--duration", "0", "--audit-interval", "0.5",
                        "--status-interval", "0.3")
    daemon.wait_for("stderr", r"cpu\d+ INFO started:", count=2)
    daemon.wait_for("stdout", r"^pcpd: ")
    os.killpg(daemon.pid, signal.SIGHUP)
    daemon.wait_for("stderr", r"daemon INFO reloaded|worker pid \d+ died")
    assert not daemon.matching("stderr", r"daemon is gone|died"), daemon.output()
    daemon.signal(signal.SIGTERM)
    code = daemon.finish()
    got = assert_clean_exit(daemon, code, workers=4)
    assert got["restarts"] == 0


def test_sighup_with_a_valid_config_replaces_the_workers(run_daemon, tmp_path):
    config = write_config(tmp_path / "run.toml")
    daemon = run_daemon(str(config), "--duration", "0", "--audit-interval", "0.5",
                        "--status-interval", "0.5")
    daemon.wait_for("stderr", r"cpu\d+ INFO started: policy legacy", count=2)
    write_config(config, {"seed = 3": "seed = 4"}, extra='\n[policy]\nname = "compound"\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("stderr", r"daemon INFO reloaded .*run\.toml: policy compound")
    daemon.wait_for("stderr", r"cpu\d+ INFO started: policy compound, workload mix, seed 4", count=2)
    daemon.wait_for("stdout", r"^pcpd: ", count=1)
    daemon.signal(signal.SIGTERM)
    code = daemon.finish()
    got = assert_clean_exit(daemon, code, workers=4)  # two lives per CPU
    assert got["restarts"] == 0                       # a reload is not a crash
    assert daemon.matching("stdout", r"^pcpd run test-mixed: policy compound \(eager prep at refill\),")


def test_sighup_with_an_invalid_config_keeps_the_running_one(run_daemon, tmp_path):
    config = write_config(tmp_path / "run.toml")
    daemon = run_daemon(str(config), "--duration", "0", "--audit-interval", "0.5",
                        "--status-interval", "0.5")
    daemon.wait_for("stderr", r"cpu\d+ INFO started:", count=2)
    write_config(config, extra="\n[pcp]\nbach = 4\n")                  # a misspelt key
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for("stderr", r"reload rejected")
    assert "run.toml" in rejected[0] and "pcp.bach" in rejected[0]
    write_config(config, {'memory = "16MiB"': 'memory = "32MiB"'})
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for("stderr", r"reload rejected", count=2)
    assert "needs a restart" in rejected[1]
    status = len(daemon.matching("stdout", r"^pcpd: "))
    daemon.wait_for("stdout", r"^pcpd: ", count=status + 1)   # still running
    daemon.signal(signal.SIGTERM)
    code = daemon.finish()
    assert_clean_exit(daemon, code, workers=2)
    assert len(daemon.matching("stderr", r"INFO started:")) == 2   # the workers were never replaced
    assert not daemon.matching("stderr", r"INFO reloaded")
    assert daemon.matching("stdout", r"^pcpd run test-mixed: policy legacy,")


def worker_pids(daemon_pid: int) -> list[int]:
    """The pids the daemon's workers recorded in their control words."""
    (segment,) = glob.glob(f"/dev/shm/pcpd-{daemon_pid}-*")
    arena = Arena.attach(os.path.basename(segment))
    try:
        return [int(pid) for pid in arena.cpuctl[:, C_PID]]
    finally:
        arena.close()


def test_a_killed_worker_is_replaced_and_its_pages_recovered(run_daemon):
    daemon = run_daemon(str(MIXED), "--duration", "0", "--audit-interval", "0.5",
                        "--status-interval", "0.5")
    daemon.wait_for("stderr", r"cpu\d+ INFO started:", count=2)
    daemon.wait_for("stdout", r"^pcpd: ")
    victim = worker_pids(daemon.pid)[1]
    assert victim > 0
    os.kill(victim, signal.SIGKILL)
    daemon.wait_for("stderr", rf"cpu1: worker pid {victim} died")
    daemon.wait_for("stderr", r"cpu1: recovered \d+ pages")
    daemon.wait_for("stderr", r"cpu1 INFO started:", count=2)
    daemon.wait_for("stdout", r"restarts 1$")
    daemon.signal(signal.SIGTERM)
    code = daemon.finish()
    got = assert_clean_exit(daemon, code, workers=2)
    assert got["restarts"] == 1


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    for args in (["--ops", "-1"], ["--duration", "soon"], [str(tmp_path / "missing.toml")]):
        proc = subprocess.run([sys.executable, "-m", "pcpd", "run", *args], capture_output=True,
                              text=True, timeout=DEADLINE)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("pcpd run: error: ")


# -- in-process runs: per-CPU counters ----------------------------------------------

@pytest.fixture
def in_process():
    """Run a Daemon in this process: its report, once it has stopped cleanly."""

    def run(settings, **options) -> RunReport:
        options = {"audit_interval": 0.5, "status_interval": 60.0, "quiet": True, "listen": "",
                   **options}
        handlers = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        report = Daemon(settings, RunOptions(**options)).run()
        assert report.exit_code == 0, report
        assert report.final_audit.startswith("audit ok")
        assert report.audit_failures == 0
        assert report.drained and report.pages_lost == 0 and not report.interrupted
        assert not glob.glob(f"/dev/shm/pcpd-{os.getpid()}-*")
        # the run's signal handlers went with it
        assert [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == handlers
        return report

    return run


def test_cross_cpu_frees_land_on_the_consumers_pcp(in_process):
    cross = load_settings(str(NET_RX))
    local = replace_path(cross, "workload[0].cross_cpu.fraction", 0.0)
    ops = 30_000
    far = in_process(cross, ops=ops).measurement.end
    near = in_process(local, ops=ops).measurement.end
    rx, app = 0, 1
    # the consumer took the producer's pages and freed them onto its own PCP
    assert far.cpu(app, "free_remote_in") > 0
    assert far.cpu(app, "free_type_netpool") == far.cpu(app, "free_remote_in")
    assert far.cpu(app, "free_pcp") == sum(far.cpu(app, f"free_type_{t}") for t in ("anon", "file", "netpool"))
    assert far.cpu(rx, "free_remote_out") >= far.cpu(app, "free_remote_in")
    assert near.cpu(app, "free_remote_in") == near.cpu(rx, "free_remote_out") == 0
    # the producer's PCP runs dry and refills under zone->lock
    assert far.cpu(rx, "refills") > near.cpu(rx, "refills")
    per_op_far = far.total("lock_acquisitions") / far.ops()
    per_op_near = near.total("lock_acquisitions") / near.ops()
    assert per_op_far > per_op_near


def counts(report: RunReport) -> dict[str, int]:
    return {k: v for k, v in report.totals.items() if not k.startswith(TIMED)}


def test_one_worker_one_seed_repeats_its_counts(in_process):
    settings = load_settings(str(ONE_CPU))
    first = counts(in_process(settings, ops=100_000))
    second = counts(in_process(settings, ops=100_000))
    assert first == second
    assert first["refills"] > 0 and first["drains_high"] > 0 and first["pressure_waves"] > 0
    other = counts(in_process(dataclasses.replace(settings, seed=8), ops=100_000))
    assert other != first


def test_a_daemon_refuses_cpus_this_process_cannot_run_on():
    """Settings built for another machine (an experiment's, a cluster node's) name CPUs this one
    lacks; a pinned worker could never start there and would be restarted forever."""
    absent = max(os.sched_getaffinity(0)) + 1
    settings = dataclasses.replace(parse_settings("", "test.toml"), cpus=(absent,))
    with pytest.raises(ConfigError, match=rf"test.toml: cpus: CPU\(s\) {absent} not available"):
        Daemon(settings, RunOptions())
