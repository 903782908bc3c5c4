"""Assembly of one simulated CPU over an arena: counters, locks, zone, slab, policy.

``ModelSpec`` says what to simulate (size, struct page, policy, era, PCP
knobs); ``format_arena`` lays out a fresh zone for it; ``CpuAllocator`` is
what one process (a worker, ``pcpd costs``, a benchmark, a replay) uses to
allocate and free as one CPU.  Several CpuAllocators may share an arena in
one process: each has its own counters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pcpd.model import sizing
from pcpd.model import stats as S
from pcpd.model.arena import Arena, Geometry
from pcpd.model.lock import RawLock, ZoneLock
from pcpd.model.slab import DescriptorSlab, format_slab
from pcpd.model.zone import Zone, format_zone
from workers.policies import POLICIES, PcpTuning, Policy, PolicyOptions

MEMDESC_POLICIES = ("memdesc-pcpdesc", "memdesc")


@dataclass(frozen=True)
class ModelSpec:
    """What to simulate; 0 in a PCP knob means "as the kernel computes it"."""

    pages: int = 1 << 18
    record_bytes: int = 64
    policy: str = "legacy"
    era: str = "6.7"
    ncpus: int = 1
    nsplit: int = 0                       # CPUs sharing the zone for high; 0: ncpus
    batch: int = 0
    high: int = 0
    high_min: int = 0
    high_max: int = 0
    high_fraction: int = 0
    scale_max: int = sizing.SCALE_MAX_DEFAULT
    free_high_batch: bool = False
    pcp_enabled: bool = True
    options: PolicyOptions = field(default_factory=PolicyOptions)

    @property
    def memdesc(self) -> bool:
        return self.policy in MEMDESC_POLICIES

    def watermarks(self) -> sizing.Watermarks:
        return sizing.zone_watermarks(self.pages)

    def limits(self) -> sizing.PcpLimits:
        """zone_set_pageset_high_and_batch() for this zone and era."""
        if not self.pcp_enabled:                  # BOOT_PAGESET_HIGH 0, BOOT_PAGESET_BATCH 1
            return sizing.PcpLimits(batch=1, high=0, high_min=0, high_max=0)
        return sizing.pcp_limits(
            self.era, self.pages, self.watermarks().low, self.nsplit or self.ncpus,
            fraction=self.high_fraction, batch=self.batch or None, high=self.high or None,
            high_min=self.high_min or None, high_max=self.high_max or None)

    def tuning(self) -> PcpTuning:
        return PcpTuning(self.limits(), self.era, self.scale_max, self.free_high_batch)

    @classmethod
    def from_settings(cls, settings, ncpus: int, policy: str | None = None) -> ModelSpec:
        """The model a config describes (``policy`` overrides the config's).

        legacy and compound always model today's 64-byte struct page.
        """
        name = policy or settings.policy.name
        pcp = settings.pcp
        return cls(
            pages=settings.arena.pages,
            record_bytes=64 if name not in MEMDESC_POLICIES else settings.arena.record_bytes,
            policy=name, era=settings.kernel.era, ncpus=ncpus, nsplit=settings.kernel.nsplit,
            batch=pcp.batch, high=pcp.high, high_min=pcp.high_min, high_max=pcp.high_max,
            high_fraction=pcp.high_fraction, scale_max=pcp.scale_max,
            free_high_batch=pcp.free_high_batch, pcp_enabled=pcp.enabled,
            options=PolicyOptions(settings.policy.noncompound_free,
                                  settings.policy.noncompound_alloc, settings.policy.memdesc_high))

    def geometry(self, ring_slots: int = 1024) -> Geometry:
        return Geometry(self.pages, self.record_bytes, self.ncpus, ring_slots)


def format_arena(arena: Arena, spec: ModelSpec) -> None:
    """A fresh zone with every page free, and an empty descriptor slab."""
    w = spec.watermarks()
    format_zone(arena, w.min, w.low, w.high, spec.memdesc)
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
        self.counters = S.Counters()
        self.zone_lock = ZoneLock(locks.zone, arena, self.counters, cpu)
        self.zone = Zone(arena, self.zone_lock, self.counters)
        self.slab = (DescriptorSlab(arena, locks.slab, self.counters, cpu)
                     if spec.memdesc else None)
        self.policy: Policy = POLICIES[spec.policy](
            arena, self.zone, self.slab, self.counters, cpu, spec.tuning(), spec.options)

    def release(self) -> int:
        """Everything back to the shared zone: PCPs drained, cached descriptors returned."""
        pages = self.policy.drain_all("exit")
        if self.slab is not None:
            self.slab.flush_all()
        return pages
