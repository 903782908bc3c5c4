"""Ending the process group of a `pcpd run` started by a test.

A daemon's group holds its workers, its forkserver and multiprocessing's
resource tracker.  Once the daemon is gone they all leave by themselves, and
the tracker unlinks the daemon's semaphores on its way out; a SIGKILL to the
whole group would leave those in /dev/shm.  So wait for the group to empty,
and kill only what is still there after the grace period.
"""

from __future__ import annotations

import os
import signal
import time

import psutil


def members(pgid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def end_group(pgid: int, grace: float = 15.0) -> None:
    """Wait up to ``grace`` seconds for the group to empty, then SIGKILL the rest."""
    deadline = time.monotonic() + grace
    while members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
