"""The policy interface and what every policy shares: memdesc type tables,
counter indices, PCP tuning, and the refill/drain/decay machinery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pcpd.kernel import (
    ALLOC_NOFRAGMENT_ERAS,
    DEFAULT_ERA,
    MEMDESC_TYPES,
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    PAGE_ORDERS,
    PCP_BATCH_SCALE_MAX,
)
from pcpd.model import pagewords, stats
from pcpd.model.arena import Arena
from pcpd.model.sizing import PcpLimits
from pcpd.model.slab import DescriptorSlab
from pcpd.model.zone import Zone
from pcpd.policies import PolicyTraits, policy_traits
from workers.pcp import PerCpuPages

TYPES = MEMDESC_TYPES
T_ANON, T_FILE, T_SLAB, T_PAGETABLE, T_NETPOOL, T_KERNEL = range(len(TYPES))
MEMDESC_OF = (pagewords.MEMDESC_ANON, pagewords.MEMDESC_FILE, pagewords.MEMDESC_SLAB, pagewords.MEMDESC_PAGETABLE,
              pagewords.MEMDESC_NETPOOL, pagewords.MEMDESC_MISC)
# Reclaimable slab (SLAB_RECLAIM_ACCOUNT caches) stands for the RECLAIMABLE type.
MIGRATETYPE_OF = (MIGRATE_MOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE,
                  MIGRATE_UNMOVABLE, MIGRATE_UNMOVABLE)
COMPOUND_OF = (True, True, True, True, True, False)     # __GFP_COMP
FOLIO_OF = (True, True, False, False, False, False)     # needs large-rmappable prep

# Counter indices and record words the policies' hot paths use, bound once as
# module constants so an operation does no dict lookup.
HIT, REFILL, BUDDY = stats.ALLOC_HIT, stats.ALLOC_REFILL, stats.ALLOC_BUDDY
FREE_PCP, FREE_BUDDY = stats.FREE_PCP, stats.FREE_BUDDY
PAGE_W = stats.LINES_W["page_state"]
LINK_W = stats.LINES_W["list_link"]
PREP_W = stats.LINES_W["compound_prep"]
UNDO_W, UNDO_R = stats.LINES_W["tail_undo"], stats.LINES_R["tail_undo"]
MD_W = stats.LINES_W["memdesc_set"]
RMAP_W, RMAP_R = stats.LINES_W["rmappable"], stats.LINES_R["rmappable"]
DESC_W, DESC_R, DATA_W = stats.DESC_W, stats.DESC_R, stats.DATA_W
FREE_TYPE = stats.FREE_TYPE
W_LINK, W_PREV, W_REFCOUNT = pagewords.W_LINK, pagewords.W_PREV, pagewords.W_REFCOUNT64
# Drains free_frozen_page_commit() makes (stats.DRAIN_CAUSES), the only ones after
# which it clears ZONE_BELOW_HIGH.
FREE_PATH_DRAINS = ("high", "free_high")


@dataclass(frozen=True)
class PolicyOptions:
    noncompound_free: str = "buddy"    # compound: "buddy" | "convert"
    noncompound_alloc: str = "buddy"   # compound: "buddy" | "pcp"
    memdesc_high: str = "shared"       # memdesc: "shared" | "per-type" | "split"
    migratetypes: tuple[int, ...] = MIGRATETYPE_OF   # each type's; a replay takes the trace's


@dataclass(frozen=True)
class PcpTuning:
    limits: PcpLimits
    era: str = DEFAULT_ERA
    scale_max: int = PCP_BATCH_SCALE_MAX
    free_high_batch: bool = False
    decay_drain: str = "batched"        # pcpd.kernel.DECAY_DRAINS

    def new_pcp(self, divide: int = 1, nr_types: int = 1) -> PerCpuPages:
        """One CPU's PCP, its limits ``divide``d between that many PCPs; ``nr_types``
        sets of lists under its one count and tuning state."""
        limits = self.limits
        if divide > 1:
            def part(x: int) -> int:
                # the zone_highsize() floor of 4 * batch keeps drains possible
                # (nr_pcp_free() leaves batch pages); 0 (PCP off) stays 0
                return max(x // divide, 4 * limits.batch) if x else 0
            limits = PcpLimits(limits.batch, part(limits.high), part(limits.high_min),
                               part(limits.high_max))
        return PerCpuPages(limits, self.era, self.scale_max, self.free_high_batch, nr_types)


class Policy:
    """One CPU's allocator front end: PCP lists over the shared zone.

    Hits charge cachelines to ``v`` inline; everything else through the CPU's
    ``LineCharges``, ``self.zone.lines`` (pcpd.model.lines), once per line
    per operation.  A helper that hits and misses share takes ``lines``:
    None on a hit, which adds to ``v`` at once (a hit's steps touch distinct
    lines), the LineCharges on a miss (an argument costs the hit less than a
    test of ``lines.exact``).  LineCharges is reached through the zone, not
    kept here: interpreted, CPython 3.11 keeps an instance's attributes in
    its fast shared-key layout only up to 29 of them, pcp-buddy's are 29, and
    a 30th slowed its every hit by 5%.
    """

    name = ""                             # its entry in the registry (pcpd.policies)

    def __init__(self, arena: Arena, zone: Zone, slab: DescriptorSlab | None,
                 counters: stats.Counters, cpu: int, tuning: PcpTuning,
                 options: PolicyOptions = PolicyOptions()) -> None:
        record_sizes = self.traits().record_sizes
        if arena.record_bytes not in record_sizes:
            raise ValueError(f"policy {self.name} needs a struct page of "
                             f"{' or '.join(map(str, record_sizes))} bytes")
        self.arena, self.zone, self.slab = arena, zone, slab
        self.v = counters.v
        self.cpu = cpu
        self.tuning = tuning
        self.options = options
        self.migratetypes = options.migratetypes      # the list each type allocates from
        self.mem = arena.memq
        self.np_mem = arena.mem
        self.rb = arena.record_bytes
        self.w = arena.record_bytes // 8
        self.pbq = arena.pageblockq
        self.zone_words = arena.zoneq                 # the free path's zone->flags test
        # alloc_flags_nofragment() on the fast path (pcpd.model.zone)
        self.nofragment = tuning.era in ALLOC_NOFRAGMENT_ERAS
        self.pcps = self._make_pcps()
        self.pcp = self.pcps[0]
        # (type, order) -> the list an allocation pops, and its counter
        self._lists = [[pcp.lists[pcp.list_index(o, self.migratetypes[t], t % pcp.nr_types)]
                        if pcp.allowed[o] else None
                        for o in PAGE_ORDERS] for t, pcp in zip(range(len(TYPES)), self._pcp_of_type())]
        self._alloc_ctr = [[stats.alloc_index(t, o) for o in PAGE_ORDERS] for t in range(len(TYPES))]

    @classmethod
    def traits(cls) -> PolicyTraits:
        """What the registry says this policy is (record sizes, memdesc, per-type PCPs)."""
        return policy_traits(cls.name)

    # -- interface ---------------------------------------------------------
    def alloc(self, t: int, order: int) -> int:
        """Allocate a block of 2**order pages of memdesc type t; NIL on failure."""
        raise NotImplementedError

    def free(self, pfn: int, order: int, t: int) -> None:
        """Free a block this CPU holds (allocated here, or received from another CPU)."""
        raise NotImplementedError

    def send(self, pfn: int, order: int, t: int, dst: int) -> None:
        """Mark an allocated block as in flight to CPU dst (cross-CPU free)."""
        raise NotImplementedError

    def receive(self, pfn: int, order: int, t: int) -> None:
        """Take ownership of a block another CPU sent here; free() follows."""
        raise NotImplementedError

    def _enter(self, pcp: PerCpuPages, lst, blocks: list[int], order: int, t: int) -> None:
        """Buddy blocks become PCP entries: set their state, append at the tail."""
        raise NotImplementedError

    def _leave(self, pcp: PerCpuPages, index: int, order: int, entries: list[int]) -> list[int]:
        """The entries drained from list ``index`` (blocks of ``order``) go back to the
        buddy: undo their state, return their pfns."""
        raise NotImplementedError

    def _make_pcps(self) -> list[PerCpuPages]:
        return [self.tuning.new_pcp()]

    def _pcp_of_type(self) -> list[PerCpuPages]:
        """The PCP each memdesc type's blocks go on (its lists: slot t % nr_types)."""
        return [self.pcps[0]] * len(TYPES)

    # -- shared machinery ----------------------------------------------------
    # ZONE_BELOW_HIGH and ZONE_RECLAIM_ACTIVE are the shared zone's flags
    # (pcpd.model.zone): every CPU sees another's change at its next test.
    def _clear_below_high(self, cause: str) -> None:
        """free_frozen_page_commit() clears ZONE_BELOW_HIGH after its drain; decay and
        drain_all_pages() leave it."""
        if cause in FREE_PATH_DRAINS:
            self.zone.clear_below_high()

    def _refill(self, pcp: PerCpuPages, lst, order: int, t: int) -> bool:
        """rmqueue_pcplist() with an empty list: rmqueue_bulk() then _enter().

        The first pass runs under ALLOC_NOFRAGMENT; if it finds nothing, rmqueue()
        falls through to rmqueue_buddy(), which takes zone->lock and searches with
        the same flags, and then get_page_from_freelist() walks the zonelist again
        without ALLOC_NOFRAGMENT: the watermarks, nr_pcp_alloc() and rmqueue_bulk()
        once more (pcpd.model.zone).  Should rmqueue_buddy() find a block (freed
        by another CPU since), it goes through the PCP list here, not around it.
        """
        zone, mt = self.zone, self.migratetypes[t]
        zone.check_watermarks(order)
        n = pcp.nr_pcp_alloc(order, zone.below_high)
        blocks = zone.rmqueue_bulk(order, mt, n, self.nofragment)
        if not blocks and self.nofragment:
            pfn = zone.rmqueue_buddy_once(order, mt, True)
            if pfn != pagewords.NIL:
                blocks = [pfn]
            else:
                zone.check_watermarks(order)
                n = pcp.nr_pcp_alloc(order, zone.below_high)
                blocks = zone.rmqueue_bulk(order, mt, n, False)
        if not blocks:
            return False
        self._enter(pcp, lst, blocks, order, t)
        pages = len(blocks) << order
        pcp.count += pages
        self.v[stats.REFILLS] += 1
        self.v[stats.REFILL_PAGES] += pages
        self.v[stats.ALLOC_MISS_TYPE + t] += 1
        return True

    def _drain(self, pcp: PerCpuPages, count: int, start_pindex: int, cause: str) -> int:
        """free_pcppages_bulk(): one zone->lock acquisition for the whole batch; one
        operation, each line it touches charged once."""
        with self.zone.lines.operation():
            runs = self._take_for_drain(pcp, count, start_pindex)
            if runs:
                self.zone.free_pcppages_bulk(runs)
                self._clear_below_high(cause)
        pages = 0
        for order, pfns in runs:
            pages += len(pfns) << order
        if not pages:
            return 0
        self.v[stats.DRAINS[cause]] += 1
        self.v[stats.DRAIN_PAGES[cause]] += pages
        return pages

    def _alloc_miss(self, pcp: PerCpuPages, lst, t: int, order: int) -> int:
        """rmqueue_pcplist() on an empty list: rmqueue_bulk() refills it and the first
        block is taken as a hit takes it (or, with nothing to refill from, the
        buddy); one operation, each line charged once."""
        with self.zone.lines.operation():
            if self._refill(pcp, lst, order, t):
                self.v[REFILL] += 1
                return self._take_first(pcp, lst, t, order)
            return self._alloc_buddy(t, order)

    def _take_first(self, pcp: PerCpuPages, lst, t: int, order: int) -> int:
        """The first block off a list a refill just filled, in use, as alloc() takes it
        on a hit (inline there), charged through ``self.zone.lines``."""
        raise NotImplementedError

    def _alloc_buddy(self, t: int, order: int) -> int:
        """rmqueue_buddy() and the block made type t: an order the PCP does not serve."""
        raise NotImplementedError

    def _drain_after_free(self, pcp: PerCpuPages, count: int, start_pindex: int,
                          freed_lines: Callable[..., None], *block: Any) -> None:
        """free_frozen_page_commit()'s drain, in the free's operation.  The free just
        pushed a block, charging its lines inline as a hit does; ``freed_lines(*block)``
        (``_freed_lines`` for a PCP list) states them again, so the drain counts
        each line free and drain both touch once."""
        lines = self.zone.lines
        with lines.operation():
            lines.prepaid(freed_lines, *block)
            self._drain(pcp, count, start_pindex, pcp.drain_cause)

    def _freed_lines(self, lst, pfn: int, order: int, t: int) -> None:
        """The lines free() charged for block ``pfn``, whose entry is now first on
        ``lst``, stated through ``self.zone.lines``: as the free's own code charges
        them (the block's, the old first entry's link, any order > 0 work)."""
        raise NotImplementedError

    def _take_for_drain(self, pcp: PerCpuPages, count: int, start: int) -> list[tuple[int, list[int]]]:
        """free_pcppages_bulk()'s selection, each block out of its PCP state: a run of
        (order, pfns) per list it emptied or took from, as the kernel frees list by list."""
        runs = []
        for index, entries in pcp.take_runs(count, start):
            order = pcp.list_order(index)
            runs.append((order, self._leave(pcp, index, order, entries)))
        return runs

    def drain_all(self, cause: str = "drain_all") -> int:
        """drain_pages_zone() on every PCP: at most batch << SCALE_MAX a pass."""
        pages = 0
        for pcp in self.pcps:
            while pcp.count:
                pages += self._drain(pcp, min(pcp.count, pcp.free_cap), 0, cause)
        return pages

    def decay(self) -> int:
        """decay_pcp_high() on every PCP: the excess over the lowered high goes in
        batch-sized chunks, one free_pcppages_bulk() and zone->lock hold each
        (fc4b909c368f), or in one call before it (``PcpTuning.decay_drain``)."""
        pages = 0
        batched = self.tuning.decay_drain == "batched"
        for pcp in self.pcps:
            excess = pcp.decay_excess()
            while excess > 0:
                chunk = min(excess, pcp.batch) if batched else excess
                pages += self._drain(pcp, chunk, 0, "decay")
                excess -= chunk
        return pages

    def pcp_pages(self) -> int:
        return sum(p.count for p in self.pcps)

    def pcp_pages_by_type(self) -> list[int]:
        """Pages on PCP lists per memdesc type; all zero where PCPs are not typed."""
        return [0] * len(TYPES)

    def publish_gauges(self) -> None:
        self.v[stats.INDEX["pcp_pages"]] = self.pcp_pages()
        # one value per CPU over its PCPs: stats.TUNING_GAUGES says how they combine
        self.v[stats.INDEX["pcp_high"]] = sum(p.high for p in self.pcps)
        # the slot is free_count (pages) in 6.7+, free_factor (a shift) before: shifts don't add
        free = sum if self.tuning.era == "6.7" else max
        self.v[stats.INDEX["pcp_free_count"]] = free(p.free_count for p in self.pcps)
        self.v[stats.INDEX["pcp_alloc_factor"]] = max(p.alloc_factor for p in self.pcps)
        self.v[stats.INDEX["pcp_batch"]] = self.pcps[0].batch
        for t, pages in enumerate(self.pcp_pages_by_type()):
            self.v[stats.PCP_PAGES_TYPE + t] = pages

    def _count_fail(self) -> None:
        self.v[stats.ALLOC_FAIL["no_memory"]] += 1
