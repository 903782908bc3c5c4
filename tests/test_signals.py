"""pcpd.daemon.signals: a run's stop and reload flags, and ^C at any moment of ``pcpd run``.

The end-to-end test sends SIGINT to ``python -m pcpd run`` at seeded-random
moments of its start, run and shutdown (to the daemon alone, or to its whole
process group as a terminal does) and wants, every time, no traceback, an
exit status a shell reads as ^C or success, and no segment left behind.

Its clock starts once the interpreter has imported ``pcpd.cli`` (seen with
``-X importtime``): before that the interpreter is still starting up (site
imports), where a ^C gets CPython's own fatal-error report whatever the
program, and pcpd has no code running yet to handle it.
"""

from __future__ import annotations

import glob
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from groups import end_group

from pcpd.daemon.signals import GROUP_SIGNALS, RunSignals, held_from_children

CONFIG = """
name = "sigint"
seed = 5
cpus = [0]
[arena]
memory = "16MiB"
[exporter]
address = ""
"""
RUNS = 12
# 0: stopped and audited; 130: ^C before the daemon ran (cli.main); -SIGINT: the same, where
# CPython turns the exit into death by SIGINT (a KeyboardInterrupt that went through an
# exec() of source, as dataclasses does while modules import): a shell reads 130 for both
CLEAN_EXITS = {0, 130, -signal.SIGINT}
CLI_IMPORTED = re.compile(r"\| pcpd\.cli$")


# -- the flags ----------------------------------------------------------------------

def test_run_signals_raise_flags_and_put_the_old_handlers_back():
    before = [signal.getsignal(sig) for sig in GROUP_SIGNALS]
    with RunSignals() as signals:
        assert not signals.stop and not signals.take_reload()
        os.kill(os.getpid(), signal.SIGHUP)
        _wait_for(lambda: signals.reload)
        assert signals.take_reload()
        assert not signals.take_reload()              # taken once
        assert not signals.stop
        os.kill(os.getpid(), signal.SIGINT)           # no KeyboardInterrupt while a run is on
        _wait_for(lambda: signals.stop)
        signals.stop = False
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: signals.stop)
    assert [signal.getsignal(sig) for sig in GROUP_SIGNALS] == before


def test_held_from_children_blocks_the_group_signals_and_delivers_them_after():
    with RunSignals() as signals:
        with held_from_children():
            child = subprocess.run([sys.executable, "-c", "print(open('/proc/self/status').read())"],
                                   capture_output=True, text=True, check=True)
            # to this thread: another thread of the process would take a process-wide one
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            time.sleep(0.05)
            assert not signals.stop                   # held back ...
        _wait_for(lambda: signals.stop)               # ... not lost
    (blocked,) = re.findall(r"^SigBlk:\s*([0-9a-f]+)$", child.stdout, re.M)
    mask = int(blocked, 16)
    assert all(mask & (1 << (sig - 1)) for sig in GROUP_SIGNALS), child.stdout
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & set(GROUP_SIGNALS)


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


# -- ^C at any moment ---------------------------------------------------------------

class Started:
    """``python -X importtime -m pcpd run ...`` with both streams read as they come."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "pcpd", "run", str(config), "--duration", "5",
             "--audit-interval", "0.5", "--status-interval", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.cli_imported = threading.Event()
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if CLI_IMPORTED.search(lines[-1]):
                self.cli_imported.set()

    def interrupt(self, group: bool) -> None:
        if group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            os.kill(self.proc.pid, signal.SIGINT)

    def finish(self) -> int:
        code = self.proc.wait(60)
        for reader in self.readers:
            reader.join(10)
        return code

    def output(self) -> str:
        logs = [line for line in self.stderr if not line.startswith("import time:")]
        return "\n".join(["--- stdout", *self.stdout, "--- stderr (imports left out)", *logs])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sigint.toml"
    path.write_text(CONFIG)
    return path


def test_sigint_at_any_moment_of_start_run_and_shutdown_exits_cleanly(config):
    rng = random.Random(16)
    outcomes = []
    for run in range(RUNS):
        # half the runs aim at the imports and the daemon's start, half anywhere in 2 s
        delay = rng.uniform(0.0, 0.4) if run % 2 else rng.uniform(0.0, 2.0)
        group = run % 4 >= 2                          # to the daemon alone, or as a terminal does
        second = rng.uniform(0.0, 0.5) if run % 3 == 2 else None   # a second ^C while it stops
        daemon = Started(config)
        try:
            assert daemon.cli_imported.wait(30), daemon.output()
            time.sleep(delay)
            daemon.interrupt(group)
            if second is not None:
                time.sleep(second)
                if daemon.proc.poll() is None:
                    daemon.interrupt(group)
            code = daemon.finish()
        finally:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
                daemon.proc.wait(10)
            end_group(daemon.proc.pid)
        where = f"run {run}: SIGINT {delay:.3f} s after pcpd.cli loaded, {'group' if group else 'daemon'}"
        text = daemon.output()
        assert "Traceback" not in "\n".join(daemon.stderr), f"{where}\n{text}"
        assert code in CLEAN_EXITS, f"{where}: exit {code}\n{text}"
        if code == 0:                                 # the run was on: stopped, drained, audited
            assert any("pages lost 0" in line for line in daemon.stdout), f"{where}\n{text}"
        left = glob.glob(f"/dev/shm/pcpd-{daemon.proc.pid}-*")
        for path in left:
            os.unlink(path)
        assert not left, f"{where}: segments left behind: {left}\n{text}"
        outcomes.append(code)
    assert len(outcomes) == RUNS
