"""Assembly of one simulated CPU over an arena: counters, locks, zone, slab, policy.

``ModelSpec`` (``pcpd.spec``) says what to simulate (size, struct page,
policy, era, PCP knobs); ``format_arena`` lays out a fresh zone for it;
``CpuAllocator`` is what one process (a worker, ``pcpd costs``, a benchmark,
a replay) uses to allocate and free as one CPU.  Several CpuAllocators may
share an arena in one process: each has its own counters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pcpd.model.arena import Arena
from pcpd.model.lock import RawLock, ZoneLock
from pcpd.model.slab import DescriptorSlab, format_slab
from pcpd.model.stats import Counters
from pcpd.model.zone import Zone, format_zone
from pcpd.spec import ModelSpec
from workers.policies import Policy, policy_class

__all__ = ["ModelSpec", "format_arena", "create_arena", "SharedLocks", "CpuAllocator"]


def format_arena(arena: Arena, spec: ModelSpec) -> None:
    """A fresh zone with every page free, no pageblock owned by a CPU, and an empty
    descriptor slab."""
    w = spec.watermarks()
    format_zone(arena, w.min, w.low, w.high, spec.memdesc)
    arena.pbowner[:] = 0                   # the pageblock-owning PCP's claims (pcp_buddy)
    format_slab(arena)


def create_arena(spec: ModelSpec, ring_slots: int = 1024) -> Arena:
    arena = Arena.create(spec.geometry(ring_slots))
    format_arena(arena, spec)
    return arena


@dataclass
class SharedLocks:
    """The cross-process locks: zone->lock and the descriptor slab's shared part."""

    zone: RawLock
    slab: RawLock

    @classmethod
    def local(cls) -> SharedLocks:
        """Locks for a single-process model (costs, benchmarks, replay, tests)."""
        return cls(threading.Lock(), threading.Lock())


class CpuAllocator:
    """One CPU's allocator over a shared arena."""

    def __init__(self, arena: Arena, spec: ModelSpec, locks: SharedLocks, cpu: int) -> None:
        self.cpu = cpu
        self.counters = Counters()
        self.zone_lock = ZoneLock(locks.zone, arena, self.counters, cpu)
        self.zone = Zone(arena, self.zone_lock, self.counters)
        self.slab = (DescriptorSlab(arena, locks.slab, self.counters, cpu)
                     if spec.memdesc else None)
        self.policy: Policy = policy_class(spec.policy)(
            arena, self.zone, self.slab, self.counters, cpu, spec.tuning(), spec.options)

    def release(self) -> int:
        """Everything back to the shared zone: PCPs drained, cached descriptors returned."""
        pages = self.policy.drain_all("exit")
        if self.slab is not None:
            self.slab.flush_all()
        return pages
