"""struct per_cpu_pages: one CPU's PCP lists and the kernel's sizing rules.

This module owns the list bookkeeping and the era-dependent arithmetic of
mm/page_alloc.c (nr_pcp_alloc, nr_pcp_high, nr_pcp_free, free_high,
decay_pcp_high, the free_pcppages_bulk selection).  It never touches the
page array: policies write page and descriptor state around it.

The zone-wide state these rules read (ZONE_BELOW_HIGH, ZONE_RECLAIM_ACTIVE)
lives in the shared zone's flags word (``pcpd.model.zone``): the free path
loads it on every free, as nr_pcp_high() tests zone->flags, and never writes it.

Simplifications, all eras: 14 lists (the two THP lists of 6.11+, so the
round-robin order of a drain differs slightly before 6.11); the quota-based
free_pcppages_bulk() of kernels before ~5.18 is not modelled; a free-path
drain is one free_pcppages_bulk() call (6.7-6.18; its batching in
91e691296646, Oct 2025, is not modelled); decay drains in one call or in
batches by ``PcpTuning.decay_drain`` (fc4b909c368f).

A PCP shared by several memdesc types (the memdesc policy's ``shared``
budget) keeps one set of lists per type under one count and one tuning
state, as the kernel's one per_cpu_pages keeps its lists: list
``pindex * nr_types + slot`` holds type ``slot``'s share of the kernel's
list ``pindex``.  Each kernel list is split into its types, in place, so a
drain walks the kernel's order (order, then migratetype) and takes every
type's piece of one kernel list before it moves on, as the kernel would
empty the one list those pieces refine.

Lists are deques with the head on the right (LIFO: ``append``/``pop``) and
the tail on the left (refills append there; drains take from there).  They
are a per-process cache: which pages are on this CPU's PCP is recorded in the
page array (or descriptors), so a lost process's lists can be rebuilt.
"""

from __future__ import annotations

from collections import deque

from pcpd.kernel import (
    HPAGE_PMD_ORDER,
    MIGRATE_PCPTYPES,
    NR_PCP_LISTS,
    PAGE_ALLOC_COSTLY_ORDER,
    PAGE_ORDERS,
    PCP_BATCH_SCALE_MAX,
    RECLAIM_ACTIVE_ERAS,
)
from pcpd.model.sizing import PcpLimits, order_to_pindex, pcp_allowed_order, pindex_to_order
from pcpd.model.zonewords import BELOW_HIGH, RECLAIM_ACTIVE, Z_FLAGS

PCPF_PREV_FREE_HIGH_ORDER = 1 << 0
PCPF_FREE_HIGH_BATCH = 1 << 1


class PerCpuPages:
    """PCP state for one CPU (under the memdesc policy's per-type budgets, one memdesc type;
    under its shared budget, ``nr_types`` sets of lists)."""

    __slots__ = (
        "lists", "count", "high", "high_min", "high_max", "batch", "flags",
        "alloc_factor", "free_count", "era", "scale_max", "tuned", "free_cap",
        "allowed", "pindex", "drain_cause", "reclaim_limit", "nr_types", "list_orders",
    )

    def __init__(self, limits: PcpLimits, era: str, scale_max: int = PCP_BATCH_SCALE_MAX,
                 free_high_batch: bool = False, nr_types: int = 1) -> None:
        self.nr_types = nr_types
        self.lists: list[deque[int]] = [deque() for _ in range(NR_PCP_LISTS * nr_types)]
        self.count = 0
        self.batch = limits.batch
        self.high_min = limits.high_min
        self.high_max = limits.high_max
        # 6.7+ starts at BOOT_PAGESET_HIGH (0) and clamps lazily; older eras use high as set
        self.high = 0 if era == "6.7" else limits.high
        self.flags = PCPF_FREE_HIGH_BATCH if free_high_batch else 0
        self.alloc_factor = 0
        # free_count in 6.7+, free_factor in 5.14-6.6: one slot, halved on every
        # PCP allocation by the caller (__rmqueue_pcplist), so both eras share it
        self.free_count = 0
        self.era = era
        self.scale_max = scale_max
        self.tuned = era == "6.7" and limits.high_min != limits.high_max
        self.reclaim_limit = era in RECLAIM_ACTIVE_ERAS
        self.free_cap = self.batch << scale_max     # batch << CONFIG_PCP_BATCH_SCALE_MAX
        self.drain_cause = "high"
        self.allowed = [pcp_allowed_order(o, era) for o in PAGE_ORDERS]
        self.pindex = [[order_to_pindex(o, mt) if self.allowed[o] else -1 for mt in range(MIGRATE_PCPTYPES)]
                       for o in PAGE_ORDERS]
        # each list's order, looked up per drained run
        self.list_orders = [pindex_to_order(index // nr_types) for index in range(len(self.lists))]

    def list_index(self, order: int, mt: int, slot: int = 0) -> int:
        """The list a block of ``order`` on a ``mt`` pageblock goes on: the kernel's
        pindex, or its piece for type ``slot`` where the lists are typed; -1 for an
        order the PCP does not keep."""
        pindex = self.pindex[order][mt]
        return pindex * self.nr_types + slot if pindex >= 0 else -1

    def list_order(self, index: int) -> int:
        """pindex_to_order() of a list (typed or not)."""
        return self.list_orders[index]

    def pages_by_slot(self) -> list[int]:
        """Pages on each type's lists, by slot (one slot where the lists are untyped)."""
        pages = [0] * self.nr_types
        for index, lst in enumerate(self.lists):
            if lst:
                pages[index % self.nr_types] += len(lst) << self.list_order(index)
        return pages

    # -- allocation side ----------------------------------------------------
    def nr_pcp_alloc(self, order: int, zone_below_high: bool) -> int:
        """nr_pcp_alloc(): how many blocks of this order one refill takes."""
        batch = self.batch
        if self.era == "4.18":
            return batch
        if self.era != "6.7":
            return max(batch >> order, 2) if batch > 1 else batch
        self.high = min(max(self.high, self.high_min), self.high_max)
        if self.high < batch:
            return 1
        n = batch if order else batch << self.alloc_factor
        if self.tuned and not zone_below_high:
            self.high = min(self.high + n, self.high_max)
        if order == 0:
            room = max(self.high - self.count - batch, batch)
            if n <= room and self.alloc_factor < self.scale_max:
                self.alloc_factor += 1
            n = min(n, room)
        if n > 1:
            n = max(n >> order, 2)
        return n

    # -- free side ----------------------------------------------------------
    def free_commit(self, order: int) -> bool:
        """free_frozen_page_commit() bookkeeping after a block was pushed.

        Returns free_high: whether this free should drain hard (section 3.4).
        """
        if self.era == "6.7":
            self.alloc_factor >>= 1
            free_high = False
            if 1 <= order <= PAGE_ALLOC_COSTLY_ORDER:
                free_high = (self.free_count >= self.batch + self.high_min // 2
                             and bool(self.flags & PCPF_PREV_FREE_HIGH_ORDER)
                             and (not self.flags & PCPF_FREE_HIGH_BATCH
                                  or self.count >= self.batch))
                self.flags |= PCPF_PREV_FREE_HIGH_ORDER
            else:
                self.flags &= ~PCPF_PREV_FREE_HIGH_ORDER
            if self.free_count < self.free_cap:
                self.free_count += 1 << order
            return free_high
        if self.era == "5.14":
            return self.free_count != 0 and 1 <= order <= PAGE_ALLOC_COSTLY_ORDER
        return False

    def free_check(self, order: int, zone_words: memoryview) -> int:
        """After pushing a block: pages to drain now, or 0.

        free_frozen_page_commit()'s tail: free_high, nr_pcp_high(), and
        nr_pcp_free() once count has reached the threshold.  ``zone_words`` is
        the shared zone (its flags); ``drain_cause`` says why ("free_high" or "high").
        """
        zone_flags = zone_words[Z_FLAGS]
        if self.tuned and (order == 0 or order == HPAGE_PMD_ORDER) and not zone_flags:
            # the common 6.7 case inlined; the kernel's steps, in its order (reads
            # before writes: in a steady state the first two are already 0)
            if self.alloc_factor:
                self.alloc_factor >>= 1
            if self.flags & PCPF_PREV_FREE_HIGH_ORDER:
                self.flags &= ~PCPF_PREV_FREE_HIGH_ORDER
            if self.free_count < self.free_cap:
                self.free_count += 1 << order
            if self.high_min <= self.high and self.count < self.high:
                return 0                               # nr_pcp_high(): no drain, no growth
            free_high = False
        else:
            free_high = self.free_commit(order)
        high = self.nr_pcp_high(free_high, bool(zone_flags & BELOW_HIGH),
                                bool(zone_flags & RECLAIM_ACTIVE))
        if self.count < high:
            return 0
        self.drain_cause = "free_high" if free_high else "high"
        return self.nr_pcp_free(high, free_high)

    def nr_pcp_high(self, free_high: bool, zone_below_high: bool, reclaim_active: bool) -> int:
        """nr_pcp_high(): the drain threshold; count >= it drains."""
        if self.era != "6.7":
            if self.high == 0 or free_high:
                return 0
            if reclaim_active and self.reclaim_limit:   # 5.14-6.6: at most 4 batches while kswapd runs
                return min(self.batch << 2, self.high)
            return self.high
        high = self.high = min(max(self.high, self.high_min), self.high_max)
        if high == 0:
            return 0
        if free_high:
            self.high = max(high - self.free_cap, self.high_min)
            return 0
        if reclaim_active:
            # kswapd is reclaiming: shrink high as below the high watermark, and
            # keep at most 4 batches on the PCP meanwhile
            self.high = max(high - max(self.free_count, self.batch), self.high_min)
            return min(self.batch << 2, self.high)
        if not self.tuned:
            return high
        if zone_below_high:
            self.high = max(high - max(self.free_count, self.batch), self.high_min)
            return max(self.count, self.high_min)
        if self.count >= high:
            need = self.free_count + self.batch
            if self.high < need:
                self.high = min(max(need, self.high_min), self.high_max)
        return high

    def nr_pcp_free(self, high: int, free_high: bool) -> int:
        """nr_pcp_free(): pages to drain once count reached the threshold."""
        batch = self.batch
        if self.era == "6.7":
            if free_high:
                return min(self.count, self.free_cap)
            if high < batch:
                return 1
            return min(max(self.free_count, batch), high - batch)
        if self.era == "5.14":
            if free_high:
                return self.count
            if high < batch:
                return 1
            n = batch << self.free_count                # free_factor
            if n < high - batch and self.free_count < self.scale_max:
                self.free_count += 1
            return min(max(n, batch), high - batch)
        return batch

    def take_runs(self, count: int, start: int) -> list[tuple[int, list[int]]]:
        """free_pcppages_bulk()'s selection as (list, entries) runs, coldest first.

        Round-robin from list ``start`` ("ensure requested pindex is drained
        first"); each list is emptied before moving on; a THP consumes 512 of count.
        """
        lists = self.lists
        last = len(lists) - 1
        count = min(count, self.count)
        out: list[tuple[int, list[int]]] = []
        index = start - 1
        while count > 0:
            while True:
                index = index + 1 if index < last else 0
                if lists[index]:
                    break
            lst = lists[index]
            order = self.list_order(index)
            # the kernel's page-by-page loop stops when count is used up or the
            # list is empty: take that many at once
            n = min(len(lst), -(-count >> order))
            if n == len(lst):                          # the whole list, at C speed
                out.append((index, list(lst)))
                lst.clear()
            else:
                popleft = lst.popleft
                out.append((index, [popleft() for _ in range(n)]))
            count -= n << order
            self.count -= n << order
        return out

    def decay_excess(self) -> int:
        """decay_pcp_high(): lower high by 1/8 toward high_min; pages now over it."""
        if self.era != "6.7":
            return 0
        if self.high > self.high_min:
            self.high = max(self.count - self.free_cap,
                            self.high - (self.high >> 3), self.high_min)
        return max(self.count - self.high, 0)
