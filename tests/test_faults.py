"""Fault injection: killed workers, a killed daemon, scrapes during recovery.

Every run here is a real ``pcpd run`` in its own process group; each test
synchronises on the daemon's output or on process state with a deadline,
never on a fixed sleep, and kills the whole group in ``finally``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from groups import end_group

from pcpd.model.arena import SHM_DIR

CONFIG = """
name = "faults"
seed = 7
cpus = [0, 1]
[arena]
memory = "16MiB"
[exporter]
address = "{address}"
"""


def _config(tmp_path: Path, address: str = "") -> str:
    path = tmp_path / "faults.toml"
    path.write_text(CONFIG.format(address=address))
    return str(path)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pcpd", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()                          # a test that failed half-way: the daemon first
    proc.wait()
    end_group(proc.pid)


def _segments(pid: int) -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(f"pcpd-{pid}-")]


class Lines:
    """Lines of a stream read in a thread, waited on with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [ln for ln in self.lines if rx.search(ln)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count} x {pattern!r} within {timeout} s; got:\n"
                                         + "".join(self.lines[-40:]))
                self.cond.wait(left)

    def text(self) -> str:
        self.thread.join(10)
        return "".join(self.lines)


def test_fifty_kills_lose_no_page(tmp_path):
    """>= 50 SIGKILLs, every other one at a worker holding zone->lock; stopped once they happened."""
    proc = _start([_config(tmp_path), "--duration", "0", "--kill-interval", "0.1",
                   "--audit-interval", "0.5", "--status-interval", "100"])
    err = Lines(proc.stderr)
    try:
        err.wait_for(r"worker pid \d+ died", count=50, timeout=240)
        # logging kept flowing: a replacement announces itself after fifty kills
        err.wait_for(r"INFO started:", count=len(err.wait_for(r"INFO started:")) + 1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, err.text()[-3000:]
    kills = re.search(r"kills (\d+) \((\d+) holding zone->lock\), audits (\d+) \((\d+) failed\)", out)
    assert kills, out
    total, holding, audits, failed = map(int, kills.groups())
    assert total >= 50
    assert holding >= 10
    assert failed == 0 and audits >= 5
    assert "pages lost 0" in out and "every PCP drained: yes" in out
    assert re.search(r"final audit ok: buddy (\d+) \+ pcp 0 \+ allocated 0 \+ inflight 0 = \1", out)
    assert "CONSERVATION VIOLATED" not in err.text()
    assert not _segments(proc.pid)


def _helper(daemon_pid: int, module: str) -> psutil.Process:
    """The daemon's multiprocessing helper process running ``module``'s main (deadline 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(daemon_pid).children():
            try:
                if any(f"from multiprocessing.{module} import main" in arg for arg in child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)                     # polling the process table, with a deadline
    raise AssertionError(f"no {module} child of the daemon within 60 s")


def test_kills_go_on_after_the_forkserver_and_resource_tracker_die(tmp_path):
    """The forkserver and the resource tracker SIGKILLed mid-soak: workers keep being killed
    and replaced (a replacement forkserver starts), and nothing is lost or left behind."""
    proc = _start([_config(tmp_path), "--duration", "0", "--kill-interval", "0.5",
                   "--audit-interval", "1", "--status-interval", "100"])
    err = Lines(proc.stderr)
    try:
        err.wait_for(r"INFO started:", count=2)
        _helper(proc.pid, "forkserver").kill()
        _helper(proc.pid, "resource_tracker").kill()
        before = len(err.wait_for(r"INFO started:"))
        err.wait_for(r"INFO started:", count=before + 6, timeout=120)     # kills and restarts go on
        # and once more just before the stop: the running workers' forkserver is gone when
        # the daemon joins them (multiprocessing then reads exit code 255 for live workers)
        _helper(proc.pid, "forkserver").kill()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, err.text()[-3000:]
    assert "pages lost 0" in out and "every PCP drained: yes" in out
    assert "CONSERVATION VIOLATED" not in err.text()
    # the relaunched tracker knows the lock semaphores: no KeyError at their unregister
    assert "Traceback" not in err.text() and "leaked" not in err.text(), err.text()[-3000:]
    assert not _segments(proc.pid)


def test_killed_daemon_takes_its_workers_and_next_start_cleans_up(tmp_path):
    config = _config(tmp_path)
    proc = _start([config, "--duration", "60"])
    err = Lines(proc.stderr)
    try:
        err.wait_for(r"cpu\d INFO started:", count=2)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
        stale = _segments(proc.pid)
        assert stale, "the killed daemon's segment should still be there"
    finally:
        _kill_group(proc)
    second = _start([config, "--duration", "1"])
    try:
        out, err2 = second.communicate(timeout=120)
    finally:
        _kill_group(second)
    assert second.returncode == 0, err2
    assert "removed 1 stale segment(s)" in err2 and stale[0] in err2
    assert not _segments(proc.pid) and not _segments(second.pid)


def test_hostile_entries_in_dev_shm_do_not_stop_a_start(tmp_path):
    """/dev/shm is world-writable: names that only look like pcpd segments are left alone."""
    token = secrets.token_hex(4)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    entries = {f"pcpd-99999999999999999999-{token}": "file", f"pcpd-\u00b2-{token}": "file",
               f"pcpd-{dead}-{token}": "dir"}
    paths = [os.path.join(SHM_DIR, name) for name in entries]
    try:
        for path, kind in zip(paths, entries.values()):
            if kind == "dir":
                os.mkdir(path)
            else:
                with open(path, "wb"):
                    pass
        proc = _start([_config(tmp_path), "--duration", "1"])
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            _kill_group(proc)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert "pages lost 0" in out
        assert all(os.path.lexists(path) for path in paths)
        assert not _segments(proc.pid)
    finally:
        for path in paths:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)


def test_segments_are_owner_only(tmp_path):
    proc = _start([_config(tmp_path), "--duration", "30"])
    err = Lines(proc.stderr)
    try:
        err.wait_for(r"cpu\d INFO started:", count=2)
        (name,) = _segments(proc.pid)
        assert os.stat(os.path.join(SHM_DIR, name)).st_mode & 0o777 == 0o600
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0
    assert not _segments(proc.pid)


def test_scrapes_answer_during_recovery(tmp_path):
    proc = _start([_config(tmp_path, "127.0.0.1:0"), "--duration", "60", "--kill-interval", "0.5",
                   "--audit-interval", "1", "--status-interval", "100"])
    err = Lines(proc.stderr)
    try:
        (line,) = err.wait_for(r"metrics on http://")
        url = re.search(r"(http://\S+/metrics)", line).group(1)
        answered, restarts_seen = 0, 0
        deadline = time.monotonic() + 60
        while restarts_seen < 4 and time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read().decode()
            assert resp.status == 200
            answered += 1
            m = re.search(r"^pcpd_worker_restarts_total (\d+)", body, re.M)
            restarts_seen = int(float(m.group(1))) if m else 0
        assert restarts_seen >= 4, "the daemon should have recovered from several kills"
        assert answered >= 4
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0
