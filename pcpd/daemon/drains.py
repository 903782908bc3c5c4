"""drain_all_pages(): when the daemon asks every PCP to drain back to the buddy.

A worker that ran short (an allocation failed, or it saw the zone below its
low watermark) bumps its C_DRAIN_REQ word; the daemon also watches the low
watermark itself.  Either way it bumps H_DRAIN_SEQ, at most once per
``DRAIN_MIN_INTERVAL_NS``, and every worker drains its PCPs when it sees the
sequence change.
"""

from __future__ import annotations

import time

from pcpd.model.arena import C_DRAIN_REQ, H_DRAIN_SEQ, Arena
from pcpd.model.zonewords import Z_FREE_PAGES, Z_WMARK_LOW

DRAIN_MIN_INTERVAL_NS = 1_000_000_000


class DrainRequests:
    """The daemon's side of drain_all_pages(): serve workers' requests and the low watermark.

    ``watch_watermark`` False leaves the watermark to the workers, whose own
    requests follow their op count: bounded runs stay deterministic.
    """

    def __init__(self, arena: Arena, slots: int, watch_watermark: bool = True) -> None:
        self.arena = arena
        self.seen = [0] * slots
        self.watch_watermark = watch_watermark
        self.last_ns = 0

    def serve(self) -> bool:
        """Ask every PCP to drain if a worker or the watermark wants it; True if asked."""
        arena = self.arena
        wanted = False
        for index, seen in enumerate(self.seen):
            request = int(arena.cpuctl[index, C_DRAIN_REQ])
            if request != seen:
                self.seen[index] = request
                wanted = True
        if self.watch_watermark and int(arena.zone[Z_FREE_PAGES]) < int(arena.zone[Z_WMARK_LOW]):
            wanted = True
        now = time.monotonic_ns()
        if not wanted or now - self.last_ns < DRAIN_MIN_INTERVAL_NS:
            return False
        self.last_ns = now
        arena.header[H_DRAIN_SEQ] += 1
        return True
