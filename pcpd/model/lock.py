"""The zone lock: one cross-process lock shared by every worker, with profiling.

The lock itself is a POSIX semaphore (``multiprocessing.Lock``, ~60 ns
uncontended here).  A semaphore is not owned, so when a holder dies the
daemon can repair the zone and release it on the dead process's behalf; the
holder's pid and CPU are recorded in the arena header for that purpose
(``H_LOCK_HOLDER_PID``), and ``H_LOCK_OP`` says what it was doing.

Profiling follows jemalloc's mutex stats and costs nothing extra on the
uncontended path beyond two clock reads for the hold time: a first try with
``acquire(False)``; only when that fails are the wait, the number of waiters
(each waiter raises its own ``C_WAITING`` word, so no second lock is needed)
and the wait histogram recorded.  All counts go to the caller's local
``Counters``; nothing is written to shared statistics per acquisition.
"""

from __future__ import annotations

import os
from time import perf_counter_ns
from typing import Protocol

from pcpd.model.arena import C_WAITING, H_LOCK_HOLDER_CPU, H_LOCK_HOLDER_PID, H_LOCK_LAST_CPU, H_LOCK_OP, Arena
from pcpd.model.stats import (
    LOCK_ACQUISITIONS,
    LOCK_CONTENDED,
    LOCK_HOLD_MAX_NS,
    LOCK_HOLD_NS,
    LOCK_OWNER_SWITCHES,
    LOCK_UNCONTENDED,
    LOCK_WAIT_BUCKET,
    LOCK_WAIT_MAX_NS,
    LOCK_WAIT_NS,
    LOCK_WAITERS_MAX,
    Counters,
    wait_bucket,
)

OP_NONE, OP_REFILL, OP_DRAIN, OP_BUDDY_ALLOC, OP_BUDDY_FREE = range(5)
OP_NAMES = ("no op recorded", "refill", "drain", "buddy alloc", "buddy free")


class RawLock(Protocol):
    def acquire(self, block: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...


_ACQ, _UNCONT, _CONT = LOCK_ACQUISITIONS, LOCK_UNCONTENDED, LOCK_CONTENDED
_WAIT, _WAIT_MAX, _HOLD, _HOLD_MAX = LOCK_WAIT_NS, LOCK_WAIT_MAX_NS, LOCK_HOLD_NS, LOCK_HOLD_MAX_NS
_SWITCH, _WAITERS_MAX = LOCK_OWNER_SWITCHES, LOCK_WAITERS_MAX


class ZoneLock:
    """zone->lock for one process: ``with zone_lock(op): ...``.

    ``cpu`` is the caller's CPU slot, or -1 for the daemon (no slot: its
    waits raise no C_WAITING word).
    """

    def __init__(self, raw: RawLock, arena: Arena, counters: Counters, cpu: int) -> None:
        # the header through its memoryview: plain-int stores, ~2x cheaper than numpy scalars
        self.raw, self.header, self.cpuctl = raw, arena.headerq, arena.cpuctl
        self.v = counters.v
        self.cpu = cpu
        self.pid = os.getpid()
        self._op = OP_NONE
        self._since = 0

    def __call__(self, op: int) -> ZoneLock:
        self._op = op
        return self

    def __enter__(self) -> ZoneLock:
        self.acquire(self._op)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, op: int = OP_NONE) -> None:
        if self.raw.acquire(False):
            self.v[_UNCONT] += 1
        else:
            self._wait()
        self.v[_ACQ] += 1
        self.header[H_LOCK_HOLDER_PID] = self.pid
        self.header[H_LOCK_OP] = op
        if self.header[H_LOCK_LAST_CPU] != self.cpu:
            if self.header[H_LOCK_LAST_CPU] >= 0:
                self.v[_SWITCH] += 1
            self.header[H_LOCK_LAST_CPU] = self.cpu
        self.header[H_LOCK_HOLDER_CPU] = self.cpu
        self._since = perf_counter_ns()

    def _wait(self) -> None:
        ctl = self.cpuctl
        if self.cpu >= 0:
            ctl[self.cpu, C_WAITING] = 1
        waiters = int(ctl[:, C_WAITING].sum())
        if waiters > self.v[_WAITERS_MAX]:
            self.v[_WAITERS_MAX] = waiters
        t0 = perf_counter_ns()
        self.raw.acquire()
        waited = perf_counter_ns() - t0
        if self.cpu >= 0:
            ctl[self.cpu, C_WAITING] = 0
        self.v[_CONT] += 1
        self.v[_WAIT] += waited
        if waited > self.v[_WAIT_MAX]:
            self.v[_WAIT_MAX] = waited
        self.v[LOCK_WAIT_BUCKET + wait_bucket(waited)] += 1

    def release(self) -> None:
        held = perf_counter_ns() - self._since
        self.v[_HOLD] += held
        if held > self.v[_HOLD_MAX]:
            self.v[_HOLD_MAX] = held
        self.header[H_LOCK_HOLDER_CPU] = -1
        self.header[H_LOCK_OP] = OP_NONE
        self.header[H_LOCK_HOLDER_PID] = 0
        self.raw.release()
