"""Worker slots: one CPU's worker, life after life: start a life, watch it, retire it.

Each life is a process forked by the forkserver, with a log pipe of its own
and its control words in the arena.  Liveness is asked of the process
itself, never of ``exitcode``: with its forkserver gone a running worker's
exit code reads 255, and a zombie the forkserver has not reaped yet is
already dead for the daemon's purposes.
"""

from __future__ import annotations

import logging
import multiprocessing.context
import multiprocessing.process
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psutil

from pcpd.daemon.helpers import restart_helpers
from pcpd.logs import LogReader
from pcpd.model import stats
from pcpd.model.arena import (
    C_HEARTBEAT,
    C_PID,
    C_STATE,
    C_WAITING,
    H_LOCK_HOLDER_PID,
    H_LOCK_OP,
    Arena,
)
from pcpd.model.lock import OP_NAMES
from workers.cpu import SharedLocks
from workers.worker import STATE_EXITED, WorkerPlan, worker_main

HEARTBEAT_TIMEOUT_NS = 5_000_000_000   # a worker silent this long is killed and replaced
STACK_DUMP_WAIT = 0.2                  # for faulthandler to write a stuck worker's stack
JOIN_POLL = 0.01                       # the process table, polled while a worker exits
KILL_WAIT = 10.0                       # for a SIGKILLed worker to leave the process table

log = logging.getLogger("pcpd.daemon")


@dataclass
class Slot:
    """A worker slot: its CPU, the current process and the reader of its log pipe."""

    index: int
    cpu: int
    process: multiprocessing.process.BaseProcess | None = None
    handle: psutil.Process | None = None          # knows the process's start time: no pid reuse
    log_reader: LogReader | None = None
    restarts: int = 0
    started_ns: int = 0

    @property
    def pid(self) -> int:
        """The current worker's pid (0 when the slot has no process)."""
        return (self.process.pid or 0) if self.process is not None else 0


def exited(slot: Slot) -> bool:
    """The slot's worker is dead, even before the forkserver reported its status.

    psutil's handle remembers the start time, so a reused pid does not pass
    for the worker.
    """
    return slot.handle is None or _gone(slot.handle)


def _gone(handle: psutil.Process) -> bool:
    try:
        return not handle.is_running() or handle.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def join_worker(slot: Slot, ctl: np.ndarray, timeout: float) -> bool:
    """Wait for the slot's worker to exit, SIGKILLing it after ``timeout``; True if it
    ended cleanly.

    Both are read from the worker itself, never from multiprocessing: once the
    forkserver is gone, ``Process.join()`` returns at once and ``exitcode``
    reads 255 for a worker that still runs, and the daemon would recover the
    pages that worker is about to drain.  A clean end is the worker's own last
    word in ``ctl`` (its C_STATE row): STATE_EXITED, once all it held is back
    in the arena.
    """
    if slot.process is None or slot.process.pid is None:
        return True
    handle = slot.handle or psutil.Process(slot.process.pid)
    deadline = time.monotonic() + timeout
    while not _gone(handle):
        if time.monotonic() >= deadline:
            log.error("cpu%d: did not exit; killing it", slot.cpu)
            os.kill(handle.pid, signal.SIGKILL)
            _wait_gone(handle)
            return False
        time.sleep(JOIN_POLL)
    return int(ctl[C_STATE]) == STATE_EXITED


def _wait_gone(handle: psutil.Process) -> None:
    deadline = time.monotonic() + KILL_WAIT
    while not _gone(handle) and time.monotonic() < deadline:
        time.sleep(JOIN_POLL)


def process_alive(pid: int) -> bool:
    """A process that can still run: not gone, not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def exit_status(proc: multiprocessing.process.BaseProcess) -> str:
    """How a dead worker ended, for the log; waits briefly for the forkserver's report."""
    proc.join(0.5)
    return f"exit code {proc.exitcode}" if proc.exitcode is not None else "exited"


class WorkerSlots:
    """The slots of a run and the worker processes in them."""

    def __init__(self, slots: Sequence[Slot], ctx: multiprocessing.context.ForkServerContext,
                 arena: Arena, locks: SharedLocks) -> None:
        self.slots = slots
        self.ctx = ctx
        self.arena = arena
        self.locks = locks

    def start(self, slot: Slot, plan: WorkerPlan) -> None:
        """A new worker life in ``slot``, logging through a pipe of its own."""
        reader, writer = self.ctx.Pipe(duplex=False)
        ctl = self.arena.cpuctl[slot.index]
        ctl[C_STATE] = 0
        ctl[C_HEARTBEAT] = time.monotonic_ns()
        process = self.ctx.Process(target=worker_main, name=f"pcpd-cpu{slot.cpu}",
                                   args=(self.arena.name, plan, self.locks, writer))
        restart_helpers(self.locks)                  # a killed forkserver or tracker, first
        process.start()
        slot.process = process
        slot.handle = psutil.Process(process.pid)
        writer.close()                               # the worker holds the only write end
        slot.log_reader = LogReader(reader, f"cpu{slot.cpu}")
        slot.started_ns = time.monotonic_ns()

    def retire(self, slot: Slot) -> None:
        """After a life ended (its pages dealt with): fold its counters into the retired
        block, clear its control words, read the rest of its log."""
        stats.retire(self.arena.stats[self.arena.geometry.ncpus], self.arena.stats[slot.index])
        ctl = self.arena.cpuctl[slot.index]
        ctl[C_PID] = 0
        ctl[C_WAITING] = 0
        ctl[C_STATE] = STATE_EXITED
        if slot.log_reader is not None:
            slot.log_reader.join(1.0)                 # ends at the pipe's end
            slot.log_reader = None
        slot.process = slot.handle = None

    def dead(self, failed_only: bool = False) -> list[Slot]:
        """Slots whose worker died (``failed_only``: without saying it ended cleanly)."""
        return [s for s in self.slots if s.process is not None and exited(s)
                and not (failed_only and int(self.arena.cpuctl[s.index, C_STATE]) == STATE_EXITED)]

    def states(self, live_only: bool = False) -> list[int]:
        """The slots' C_STATE words (``live_only``: of the slots with a worker)."""
        return [int(self.arena.cpuctl[s.index, C_STATE]) for s in self.slots
                if s.process is not None or not live_only]

    def kill_silent(self) -> None:
        """Kill the workers without a heartbeat for HEARTBEAT_TIMEOUT_NS: stuck, their
        stack to the log first (the next reap recovers them like any dead worker)."""
        now = time.monotonic_ns()
        for slot in self.slots:
            silent = now - int(self.arena.cpuctl[slot.index, C_HEARTBEAT])
            if slot.process is None or silent <= HEARTBEAT_TIMEOUT_NS \
                    or now - slot.started_ns <= HEARTBEAT_TIMEOUT_NS or exited(slot):
                continue
            ctl, header = self.arena.cpuctl[slot.index], self.arena.header
            log.error("cpu%d: no heartbeat for %.1f s (state %d, waiting %d; zone->lock holder "
                      "pid %d, %s); killing pid %d", slot.cpu, silent / 1e9, ctl[C_STATE],
                      ctl[C_WAITING], header[H_LOCK_HOLDER_PID], OP_NAMES[int(header[H_LOCK_OP])],
                      slot.pid)
            os.kill(slot.pid, signal.SIGUSR1)          # its stack to stderr (faulthandler)
            time.sleep(STACK_DUMP_WAIT)
            slot.process.kill()
            slot.process.join(1.0)

    def join(self, slot: Slot, timeout: float) -> bool:
        """Wait for the worker to exit, killing it after ``timeout``; True if it ended cleanly."""
        return join_worker(slot, self.arena.cpuctl[slot.index], timeout)

    def end(self) -> None:
        """Whatever is left of the workers after a failure: killed, their log lines kept."""
        for slot in self.slots:
            if slot.handle is not None and not exited(slot):     # not exitcode: see join_worker()
                os.kill(slot.handle.pid, signal.SIGKILL)
                _wait_gone(slot.handle)
            if slot.log_reader is not None:
                slot.log_reader.join(1.0)
