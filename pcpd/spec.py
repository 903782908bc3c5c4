"""What to simulate: the one translation from a model's sources to ``ModelSpec``.

A model comes from one of three sources, each with a constructor here:

``ModelSpec.from_settings``
    a config (``pcpd run``, experiments): the arena, kernel and PCP sections;
``ModelSpec.from_reference_zone``
    a zone given by its managed pages, low watermark and CPUs (``pcpd costs``
    and ``bench/run.py`` size the PCP as for this machine's Normal zone);
``ModelSpec.from_zoneinfo``
    a replay's zone: PCP limits captured from /proc/zoneinfo, or computed.

All three follow the same two rules: the struct page size comes from the
policy's traits (``pcpd.policies``: legacy and compound model only today's
64-byte page, the memdesc policies the size asked for), and an era's PCP
limits are ``high_min``/``high_max`` where the era auto-tunes high (6.7) and a
fixed ``high`` before it (``pcp_knobs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pcpd.config.settings import Settings
from pcpd.kernel import DEFAULT_ERA, HIGH_BOUNDS_ERAS, PCP_BATCH_SCALE_MAX, STRUCT_PAGE_BYTES
from pcpd.model import sizing
from pcpd.model.arena import Geometry
from pcpd.policies import BASELINE, policy_traits, record_bytes_for
from workers.policies import PcpTuning, PolicyOptions

__all__ = ["ModelSpec", "PcpKnobs", "pcp_knobs"]


@dataclass(frozen=True)
class PcpKnobs:
    """The PCP limits a model pins; 0 means "as the kernel computes it"."""

    batch: int = 0
    high: int = 0
    high_min: int = 0
    high_max: int = 0


def pcp_knobs(era: str, batch: int, high: int, high_min: int, high_max: int) -> PcpKnobs:
    """The knobs of ``era`` among the given ones: high_min and high_max where the
    era auto-tunes high (its high is the clamp of 0 into them, so it is left to
    the kernel's rule), high alone before."""
    if era in HIGH_BOUNDS_ERAS:
        return PcpKnobs(batch, 0, high_min, high_max)
    return PcpKnobs(batch, high, 0, 0)


@dataclass(frozen=True)
class ModelSpec:
    """What to simulate; 0 in a PCP knob means "as the kernel computes it"."""

    pages: int = 1 << 18
    record_bytes: int = STRUCT_PAGE_BYTES
    policy: str = BASELINE
    era: str = DEFAULT_ERA
    ncpus: int = 1
    nsplit: int = 0                       # CPUs sharing the zone for high; 0: ncpus
    batch: int = 0
    high: int = 0
    high_min: int = 0
    high_max: int = 0
    high_fraction: int = 0
    scale_max: int = PCP_BATCH_SCALE_MAX
    free_high_batch: str = "auto"         # PCPF_FREE_HIGH_BATCH: FREE_HIGH_BATCH_MODES
    cache_slice: int = 0                  # per_cpu_data_slice_size, bytes; 0: no cacheinfo
    decay_drain: str = "batched"          # pcpd.kernel.DECAY_DRAINS
    pcp_enabled: bool = True
    options: PolicyOptions = field(default_factory=PolicyOptions)

    @property
    def memdesc(self) -> bool:
        """Pages carry memdesc words and descriptors come from the slab."""
        return policy_traits(self.policy).memdesc

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
        limits = self.limits()
        return PcpTuning(limits, self.era, self.scale_max, self._free_high_batch_flag(limits.batch),
                         self.decay_drain)

    def _free_high_batch_flag(self, batch: int) -> bool:
        # zone_pcp_update_cacheinfo(), unless the model forces the flag
        if self.free_high_batch == "auto":
            return sizing.pcpf_free_high_batch(self.cache_slice, batch)
        return self.free_high_batch == "on"

    def cacheinfo(self) -> dict[str, Any]:
        """What a results file records of PCPF_FREE_HIGH_BATCH: the cache slice the
        model used (bytes; from this machine unless the config gave one), the mode
        and the flag it gave (read by 6.7's nr_pcp_free() only)."""
        return {"cache_slice": self.cache_slice, "free_high_batch": self.free_high_batch,
                "flag": self.tuning().free_high_batch}

    def geometry(self, ring_slots: int = 1024) -> Geometry:
        return Geometry(self.pages, self.record_bytes, self.ncpus, ring_slots)

    # -- the sources -----------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, ncpus: int, policy: str | None = None) -> ModelSpec:
        """The model a config describes (``policy`` overrides the config's)."""
        name = policy or settings.policy.name
        era, pcp = settings.kernel.era, settings.pcp
        knobs = pcp_knobs(era, pcp.batch, pcp.high, pcp.high_min, pcp.high_max)
        return cls(
            pages=settings.arena.pages, record_bytes=record_bytes_for(name, settings.arena.record_bytes),
            policy=name, era=era, ncpus=ncpus, nsplit=settings.kernel.nsplit,
            batch=knobs.batch, high=knobs.high, high_min=knobs.high_min, high_max=knobs.high_max,
            high_fraction=pcp.high_fraction, scale_max=pcp.scale_max,
            free_high_batch=pcp.free_high_batch,
            cache_slice=pcp.cache_slice or sizing.per_cpu_data_slice_size(),
            decay_drain=pcp.decay_drain, pcp_enabled=pcp.enabled,
            options=PolicyOptions(settings.policy.noncompound_free,
                                  settings.policy.noncompound_alloc, settings.policy.memdesc_high))

    @classmethod
    def from_reference_zone(cls, policy: str, era: str, record_bytes: int | None, *, pages: int,
                            managed: int, low_wmark: int, ncpus: int) -> ModelSpec:
        """A model of ``pages`` pages whose PCP is sized as the kernel sizes it for a
        zone of ``managed`` pages, that low watermark and ``ncpus`` CPUs on its node.

        Raises ValueError for an unknown policy or era.
        """
        record = record_bytes_for(policy, record_bytes)
        limits = sizing.pcp_limits(era, managed, low_wmark, ncpus)
        return cls._pinned(policy, era, record, pages, ncpus, 0, limits)

    @classmethod
    def from_zoneinfo(cls, policy: str, era: str, record_bytes: int | None, *, pages: int, ncpus: int,
                      nsplit: int, limits: sizing.PcpLimits | None,
                      options: PolicyOptions | None = None) -> ModelSpec:
        """A replay's model: a zone of ``pages`` pages, PCP limits pinned to those a
        /proc/zoneinfo capture shows (None: computed for the zone, as the kernel would)."""
        record = record_bytes_for(policy, record_bytes)
        spec = cls._pinned(policy, era, record, pages, max(ncpus, 1), nsplit, limits)
        return replace(spec, options=options) if options is not None else spec

    @classmethod
    def _pinned(cls, policy: str, era: str, record_bytes: int, pages: int, ncpus: int, nsplit: int,
                limits: sizing.PcpLimits | None) -> ModelSpec:
        knobs = (pcp_knobs(era, limits.batch, limits.high, limits.high_min, limits.high_max)
                 if limits is not None else PcpKnobs())
        return cls(pages=pages, record_bytes=record_bytes, policy=policy, era=era, ncpus=ncpus,
                   nsplit=nsplit, batch=knobs.batch, high=knobs.high, high_min=knobs.high_min,
                   high_max=knobs.high_max)
