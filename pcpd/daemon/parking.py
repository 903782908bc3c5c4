"""Parking the workers between operations, so the daemon may read or repair the arena.

Audits and crash recovery need every writer quiescent.  The daemon writes a
fresh sequence number into H_PAUSE_REQ; each worker parks at its next check
point (never inside an operation) and acknowledges with that number in its
C_PAUSE_ACK word, then waits until the request is withdrawn.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

from pcpd.daemon.slots import Slot, exited
from pcpd.model.arena import C_PAUSE_ACK, H_PAUSE_REQ, Arena

PAUSE_TIMEOUT = 10.0
POLL = 0.001

# one sequence for the whole process: an acknowledgement left over from an
# earlier request never passes for the current one
_requests = itertools.count(1)


class Parked:
    """Context manager: every live worker parked between operations, then resumed.

    After entering, ``ok`` says whether every worker parked.  Waiting stops
    early when a worker dies (``died``): nobody else may be able to park before
    its recovery (it may hold zone->lock).  Slots in ``expect_dead`` are
    already known dead and not waited for.
    """

    def __init__(self, arena: Arena, slots: Sequence[Slot], expect_dead: Sequence[Slot] = (),
                 timeout: float = PAUSE_TIMEOUT) -> None:
        self.arena = arena
        self.slots = slots
        self.expect_dead = list(expect_dead)
        self.timeout = timeout
        self.ok = False
        self.died: list[Slot] = []

    def __enter__(self) -> Parked:
        seq = next(_requests)
        self.arena.header[H_PAUSE_REQ] = seq
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            waiting = self._poll(seq)
            if self.died:
                return self
            if not waiting:
                self.ok = True
                return self
            time.sleep(POLL)
        return self

    def _poll(self, seq: int) -> bool:
        """Note dead workers; True while a live one has not acknowledged ``seq``."""
        waiting = False
        for slot in self.slots:
            if slot.process is None or slot in self.expect_dead:
                continue
            if exited(slot):
                self.died.append(slot)
            elif int(self.arena.cpuctl[slot.index, C_PAUSE_ACK]) != seq:
                waiting = True
        return waiting

    def __exit__(self, *exc: object) -> None:
        self.arena.header[H_PAUSE_REQ] = 0
