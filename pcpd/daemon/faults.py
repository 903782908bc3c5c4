"""Fault injection for soak runs (``pcpd run --kill-interval``).

Every interval one worker is SIGKILLed; every other kill waits (up to half a
second) for a worker to hold zone->lock and kills that one, so recovery is
exercised mid-refill, mid-drain and mid-merge.  Kills are counted in the
daemon's summary; recovery itself is the daemon's normal path for a worker
that died.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Protocol

from pcpd.daemon.slots import process_alive
from pcpd.model.arena import H_LOCK_HOLDER_PID, Arena

HOLDER_WAIT = 0.5


class _Slot(Protocol):
    @property
    def process(self) -> BaseProcess | None: ...


class _Tally(Protocol):
    kills: int
    kills_holding_lock: int


class FaultInjector:
    """SIGKILL a worker every ``interval`` seconds, seeded."""

    def __init__(self, arena: Arena, slots: Sequence[_Slot], interval: float, seed: int) -> None:
        self.header = arena.header
        self.slots = slots
        self.interval = interval
        self.rng = random.Random(seed)
        self.next = time.monotonic() + interval

    def tick(self, now: float, tally: _Tally) -> None:
        """Kill one worker if a kill is due; count it in ``tally``."""
        if now < self.next:
            return
        self.next = now + self.interval
        # liveness from the process table, not exitcode: once the forkserver is gone, exitcode
        # reads 255 for workers that still run, and the soak would stop killing anything
        live = [s.process.pid for s in self.slots
                if s.process is not None and s.process.pid is not None and process_alive(s.process.pid)]
        if not live:
            return
        victim = self._lock_holder(live) if tally.kills % 2 else None
        if victim is not None:
            tally.kills_holding_lock += 1
        else:
            victim = self.rng.choice(live)
        try:
            os.kill(victim, signal.SIGKILL)
            tally.kills += 1
        except ProcessLookupError:
            pass

    def _lock_holder(self, pids: list[int]) -> int | None:
        """The worker holding zone->lock, if one takes it within HOLDER_WAIT."""
        deadline = time.monotonic() + HOLDER_WAIT
        while time.monotonic() < deadline:
            holder = int(self.header[H_LOCK_HOLDER_PID])
            if holder in pids:
                return holder
            time.sleep(0.0002)
        return None
