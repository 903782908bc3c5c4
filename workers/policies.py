"""The four PCP policies compared by pcpd, on one interface.

``legacy``
    Today's kernel.  The PCP takes all comers.  Freeing a compound block
    undoes every tail (__free_pages_prepare -> free_tail_page_prepare);
    allocating one re-preps every tail (prep_compound_page).
``compound``
    The proposal before memdescs (linux-mm, January 2024): only compound
    memory lives on PCP lists and keeps its compound state there, so a hit
    touches the head and, for a large folio, the large-rmappable flag.  The
    tail work moves to the buddy boundary (refill preps, drain undoes).
    Non-compound multi-page frees either bypass to the buddy or are converted
    (``noncompound_free``); non-compound allocations either go straight to the
    buddy or take a compound block and undo it (``noncompound_alloc``).
``memdesc-pcpdesc``
    A memdesc world without descriptor caching: allocation slab-allocates the
    descriptor and sets the memdesc word of every page; freeing swaps every
    page's memdesc to a freshly allocated ``struct pcpdesc`` and frees the
    descriptor.  One PCP per CPU, as today.
``memdesc``
    The proposal with memdescs: one PCP per memdesc type; a freed folio stays
    on its type's PCP with its descriptor, and a hit hands both back without
    touching the memmap.  Misc (non-compound kernel) memory has no descriptor;
    its PCP links live in the free memory itself.

Every policy charges what it touches to the CPU's ``Counters``: struct page
lines by cause, descriptor lines, slab operations.  Extension point: a new
policy subclasses ``Policy``, implements ``alloc``, ``free``, ``_enter``
(buddy blocks arriving on a PCP list) and ``_leave`` (PCP blocks going back),
and registers in ``POLICIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pcpd import memmap as M
from pcpd import stats as S
from pcpd.arena import DESC_WORDS, Arena
from pcpd.memmap import NIL, lines_spanned
from pcpd.sizing import PcpLimits
from pcpd.slab import (D_DEFERRED, D_ENTIRE_MAPCOUNT, D_MAPCOUNT, D_MAPPING, D_NEXT,
                       D_NR_PAGES_MAPPED, D_PFN, D_PREV, D_REFCOUNT, D_STATE, DS_INFLIGHT,
                       DS_INUSE, DS_PCP, DescriptorSlab, desc_state)
from pcpd.zone import (MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE,
                       Z_WMARK_HIGH, Zone)
from workers.pcp import PerCpuPages

TYPES = S.MEMDESC_TYPES
T_ANON, T_FILE, T_SLAB, T_PAGETABLE, T_NETPOOL, T_KERNEL = range(len(TYPES))
MEMDESC_OF = (M.MEMDESC_ANON, M.MEMDESC_FILE, M.MEMDESC_SLAB, M.MEMDESC_PAGETABLE,
              M.MEMDESC_NETPOOL, M.MEMDESC_MISC)
# Reclaimable slab (SLAB_RECLAIM_ACCOUNT caches) stands for the RECLAIMABLE type.
MIGRATETYPE_OF = (MIGRATE_MOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE,
                  MIGRATE_UNMOVABLE, MIGRATE_UNMOVABLE)
COMPOUND_OF = (True, True, True, True, True, False)     # __GFP_COMP
FOLIO_OF = (True, True, False, False, False, False)     # needs large-rmappable prep

_HIT, _REFILL, _BUDDY = S.ALLOC_HIT, S.ALLOC_REFILL, S.ALLOC_BUDDY
_FREE_PCP, _FREE_BUDDY = S.FREE_PCP, S.FREE_BUDDY
_W = S.LINES_W
_R = S.LINES_R
_PAGE_W = _W["page_state"]
_LINK_W = _W["list_link"]
_PREP_W = _W["compound_prep"]
_UNDO_W, _UNDO_R = _W["tail_undo"], _R["tail_undo"]
_MD_W = _W["memdesc_set"]
_RMAP_W, _RMAP_R = _W["rmappable"], _R["rmappable"]
_DESC_W, _DESC_R, _DATA_W = S.DESC_W, S.DESC_R, S.DATA_W
_FREE_TYPE = S.FREE_TYPE
_W_LINK, _W_PREV, _W_REFCOUNT = M.W_LINK, M.W_PREV, M.W_REFCOUNT64


@dataclass(frozen=True)
class PolicyOptions:
    noncompound_free: str = "buddy"    # compound: "buddy" | "convert"
    noncompound_alloc: str = "buddy"   # compound: "buddy" | "pcp"
    memdesc_high: str = "per-type"     # memdesc: "per-type" | "split"


@dataclass(frozen=True)
class PcpTuning:
    limits: PcpLimits
    era: str = "6.7"
    scale_max: int = 5
    free_high_batch: bool = False

    def new_pcp(self, divide: int = 1) -> PerCpuPages:
        limits = self.limits
        if divide > 1:
            def part(x: int) -> int:
                # the zone_highsize() floor of 4 * batch keeps drains possible
                # (nr_pcp_free() leaves batch pages); 0 (PCP off) stays 0
                return max(x // divide, 4 * limits.batch) if x else 0
            limits = PcpLimits(limits.batch, part(limits.high), part(limits.high_min),
                               part(limits.high_max))
        return PerCpuPages(limits, self.era, self.scale_max, self.free_high_batch)


class Policy:
    """One CPU's allocator front end: PCP lists over the shared zone."""

    name: ClassVar[str]
    record_sizes: ClassVar[tuple[int, ...]]

    def __init__(self, arena: Arena, zone: Zone, slab: DescriptorSlab | None,
                 counters: S.Counters, cpu: int, tuning: PcpTuning,
                 options: PolicyOptions = PolicyOptions()) -> None:
        if arena.record_bytes not in self.record_sizes:
            raise ValueError(f"policy {self.name} needs a struct page of "
                             f"{' or '.join(map(str, self.record_sizes))} bytes")
        self.arena, self.zone, self.slab = arena, zone, slab
        self.v = counters.v
        self.cpu = cpu
        self.tuning = tuning
        self.options = options
        self.mem = arena.memq
        self.np_mem = arena.mem
        self.rb = arena.record_bytes
        self.w = arena.record_bytes // 8
        self.pbq = arena.pageblockq
        self.below_high = False
        self.pcps = self._make_pcps()
        self.pcp = self.pcps[0]
        # (type, order) -> the list an allocation pops, and its counter
        self._lists = [[pcp.lists[pcp.pindex[o][MIGRATETYPE_OF[t]]] if pcp.allowed[o] else None
                        for o in range(11)] for t, pcp in zip(range(len(TYPES)), self._pcp_of_type())]
        self._alloc_ctr = [[S.alloc_index(t, o) for o in range(11)] for t in range(len(TYPES))]

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

    def _leave(self, pcp: PerCpuPages, entries: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """PCP entries go back to the buddy: undo their state, return (pfn, order)."""
        raise NotImplementedError

    def _make_pcps(self) -> list[PerCpuPages]:
        return [self.tuning.new_pcp()]

    def _pcp_of_type(self) -> list[PerCpuPages]:
        return [self.pcps[0]] * len(TYPES)

    # -- shared machinery ----------------------------------------------------
    # ZONE_BELOW_HIGH is a zone flag; each CPU keeps its own copy, refreshed only
    # where the kernel sets or clears the flag, so the free fast path reads no
    # zone state.  Another CPU's change shows at this CPU's next refill or drain.
    def _set_below_high(self) -> None:
        """ZONE_BELOW_HIGH is set on the allocation side (get_page_from_freelist)."""
        zone = self.zone
        if not self.below_high and not zone.watermark_ok(0, zone.watermark(Z_WMARK_HIGH)):
            self.below_high = True

    def _clear_below_high(self) -> None:
        """... and cleared on the free side after a drain (free_frozen_page_commit)."""
        zone = self.zone
        if self.below_high and zone.watermark_ok(0, zone.watermark(Z_WMARK_HIGH)):
            self.below_high = False

    def _refill(self, pcp: PerCpuPages, lst, order: int, t: int) -> bool:
        """rmqueue_pcplist() with an empty list: rmqueue_bulk() then _enter()."""
        self._set_below_high()
        n = pcp.nr_pcp_alloc(order, self.below_high)
        blocks = self.zone.rmqueue_bulk(order, MIGRATETYPE_OF[t], n)
        if not blocks:
            return False
        self._enter(pcp, lst, blocks, order, t)
        pages = len(blocks) << order
        pcp.count += pages
        v = self.v
        v[S.REFILLS] += 1
        v[S.REFILL_PAGES] += pages
        v[S.ALLOC_MISS_TYPE + t] += 1
        return True

    def _drain(self, pcp: PerCpuPages, count: int, start_pindex: int, cause: str) -> int:
        """free_pcppages_bulk(): one zone->lock acquisition for the whole batch."""
        entries = pcp.take_for_drain(count, start_pindex)
        if not entries:
            return 0
        blocks = self._leave(pcp, entries)
        self.zone.free_pcppages_bulk(blocks)
        self._clear_below_high()
        pages = sum(1 << order for _, order in blocks)
        self.v[S.DRAINS[cause]] += 1
        self.v[S.DRAIN_PAGES[cause]] += pages
        return pages

    def drain_all(self, cause: str = "drain_all") -> int:
        """drain_pages_zone() on every PCP: at most batch << SCALE_MAX a pass."""
        pages = 0
        for pcp in self.pcps:
            while pcp.count:
                pages += self._drain(pcp, min(pcp.count, pcp.batch << pcp.scale_max), 0, cause)
        return pages

    def decay(self) -> int:
        """decay_pcp_high() on every PCP, draining the excess in batch chunks."""
        pages = 0
        for pcp in self.pcps:
            excess = pcp.decay_excess()
            while excess > 0:
                chunk = min(excess, pcp.batch)
                pages += self._drain(pcp, chunk, 0, "decay")
                excess -= chunk
        return pages

    def pcp_pages(self) -> int:
        return sum(p.count for p in self.pcps)

    def pcp_pages_by_type(self) -> list[int]:
        """Pages on PCP lists per memdesc type; all zero where PCPs are not typed."""
        return [0] * len(TYPES)

    def publish_gauges(self) -> None:
        v = self.v
        v[S.INDEX["pcp_pages"]] = self.pcp_pages()
        v[S.INDEX["pcp_high"]] = sum(p.high for p in self.pcps)
        v[S.INDEX["pcp_batch"]] = self.pcps[0].batch
        for t, pages in enumerate(self.pcp_pages_by_type()):
            v[S.PCP_PAGES_TYPE + t] = pages

    def _count_fail(self) -> None:
        self.v[S.ALLOC_FAIL["no_memory"]] += 1


# -- today's 64-byte struct page ---------------------------------------------

class _Page64Policy(Policy):
    """PCP lists linked through page->pcp_list in 64-byte struct pages."""

    record_sizes = (64,)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cpu1 = (self.cpu + 1) << M.FLAG_CPU_SHIFT
        self._pcp_flags = [M.PG_PCP | cpu1 | (o << M.FLAG_ORDER_SHIFT) for o in range(11)]
        self._alloc_flags = [[self._head_flags(t, o) for o in range(11)] for t in range(len(TYPES))]
        self._inflight_flags = [[f & ~M.PG_ALLOC | M.PG_INFLIGHT for f in row]
                                for row in self._alloc_flags]

    def _head_flags(self, t: int, order: int) -> int:
        flags = (M.PG_ALLOC | ((self.cpu + 1) << M.FLAG_CPU_SHIFT)
                 | (order << M.FLAG_ORDER_SHIFT) | (t << M.FLAG_TYPE_SHIFT))
        if FOLIO_OF[t]:
            flags |= M.PG_LRU
        if order and COMPOUND_OF[t]:
            flags |= M.PG_HEAD
        return flags

    # page state (slow paths: compound blocks, buddy allocations) --------------
    def _post_alloc_hook(self, pfn: int, t: int, order: int) -> None:
        """post_alloc_hook(): head flags, refcount 1, private 0: one line."""
        mem, base = self.mem, pfn * 8
        mem[base] = self._alloc_flags[t][order]
        mem[base + M.W_REFCOUNT64] = 1
        mem[base + M.W_PRIVATE64] = 0
        self.v[_PAGE_W] += 1

    def _prep_compound_page(self, pfn: int, order: int) -> None:
        """prep_compound_page(): three stores into each of the 2**order - 1 tails."""
        n = 1 << order
        mem = self.np_mem
        first, end = (pfn + 1) * 8, (pfn + n) * 8
        mem[first + M.W_MAPPING:end:8] = M.TAIL_MAPPING
        mem[first + M.W_LINK:end:8] = (pfn << 1) | 1        # compound_head = head | 1
        mem[first + M.W_PRIVATE64:end:8] = 0
        # prep_compound_head(): order, nr_pages, mapcounts in page[1]; _deferred_list in page[2]
        mem[first + M.W_PRIVATE64] = order
        self.v[_PREP_W] += lines_spanned(pfn + 1, n - 1, 64)

    def _free_tail_pages(self, pfn: int, order: int, compound: bool) -> None:
        """__free_pages_prepare() tail loop: read and rewrite every tail's line."""
        n = 1 << order
        mem = self.np_mem
        first, end = (pfn + 1) * 8, (pfn + n) * 8
        flags = mem[first:end:8]
        if compound:                                  # free_tail_page_prepare()
            mem[first + M.W_MAPPING:end:8] = 0
            mem[first + M.W_LINK:end:8] = 0
            mem[first + M.W_PRIVATE64] = 0              # page[1] second-page fields
        flags &= ~(M.PG_LRU | M.PG_ALLOC)             # PAGE_FLAGS_CHECK_AT_PREP
        lines = lines_spanned(pfn + 1, n - 1, 64)
        self.v[_UNDO_W] += lines
        self.v[_UNDO_R] += lines

    def _alloc_buddy(self, t: int, order: int) -> int:
        """rmqueue_buddy() then prep_new_page(): orders the PCP does not keep."""
        pfn = self.zone.rmqueue_buddy(order, MIGRATETYPE_OF[t])
        if pfn == NIL:
            self._count_fail()
            return NIL
        self.v[_BUDDY] += 1
        self._post_alloc_hook(pfn, t, order)
        if order and COMPOUND_OF[t]:
            self._prep_compound_page(pfn, order)
            if FOLIO_OF[t]:                            # folio_prep_large_rmappable()
                self.v[_RMAP_W] += 1
        return pfn

    def _free_buddy(self, pfn: int, order: int, t: int) -> None:
        """__free_pages_prepare() with tails, then free_one_page()."""
        if order:
            self._free_tail_pages(pfn, order, COMPOUND_OF[t])
        mem, base = self.mem, pfn * 8
        mem[base] = 0
        mem[base + M.W_REFCOUNT64] = 0
        self.v[_PAGE_W] += 1
        self.zone.free_one_page(pfn, order)
        self.v[_FREE_BUDDY] += 1

    # the PCP fast paths --------------------------------------------------------
    # alloc() and free() are the per-operation path: everything an order-0 hit
    # needs is inline (each Python call costs ~0.1 us here); compound and
    # policy-specific work happens in the order > 0 hooks below.
    def alloc(self, t: int, order: int) -> int:
        v = self.v
        v[self._alloc_ctr[t][order]] += 1
        lst = self._lists[t][order]
        if lst is None:                                # an order the PCP does not keep
            return self._alloc_buddy(t, order)
        pcp = self.pcp
        pcp.free_count >>= 1                           # __rmqueue_pcplist()
        if lst:
            v[_HIT] += 1
        elif self._refill(pcp, lst, order, t):
            v[_REFILL] += 1
        else:
            return self._alloc_buddy(t, order)
        mem = self.mem
        pfn = lst.pop()
        if lst:                                        # list_del(): the new head's prev
            mem[lst[-1] * 8 + _W_PREV] = NIL
            v[_LINK_W] += 1
        pcp.count -= 1 << order
        base = pfn * 8                                 # post_alloc_hook(): one line
        mem[base] = self._alloc_flags[t][order]
        mem[base + _W_REFCOUNT] = 1
        v[_PAGE_W] += 1
        if order:
            self._after_pcp_alloc(pfn, t, order)
        return pfn

    def free(self, pfn: int, order: int, t: int) -> None:
        v = self.v
        v[_FREE_TYPE + t] += 1
        head = 0
        if order:
            head = self._before_pcp_free(pfn, order, t)
            if head < 0:
                return
        pcp = self.pcp
        # free_frozen_page_commit(): the list comes from the pageblock's
        # migratetype, not the caller's
        pindex = pcp.pindex[order][self.pbq[pfn >> 9]]
        lst = pcp.lists[pindex]
        mem, base = self.mem, pfn * 8
        old = lst[-1] if lst else NIL
        mem[base] = self._pcp_flags[order] | head
        mem[base + _W_LINK] = old
        mem[base + _W_PREV] = NIL
        mem[base + _W_REFCOUNT] = 0
        v[_PAGE_W] += 1
        if old != NIL:
            mem[old * 8 + _W_PREV] = pfn
            v[_LINK_W] += 1
        lst.append(pfn)
        pcp.count += 1 << order
        v[_FREE_PCP] += 1
        drain = pcp.free_check(order, self.below_high)
        if drain:
            self._drain(pcp, drain, pindex, pcp.drain_cause)

    def _after_pcp_alloc(self, pfn: int, t: int, order: int) -> None:
        """Policy work after an order > 0 block came off the PCP."""
        raise NotImplementedError

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        """Policy work before an order > 0 block goes to the PCP.

        Returns the head flag to keep on the PCP, or -1 when the block went
        to the buddy instead.
        """
        raise NotImplementedError

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        mem, flags = self.mem, self._pcp_flags[order]
        # each block's own line and the old tail's, except that a block added
        # to an empty list links to the list head in per_cpu_pages
        self.v[_LINK_W] += 2 * len(blocks) - 1 if blocks and not lst else 2 * len(blocks)
        for pfn in blocks:                             # list_add_tail() in rmqueue_bulk()
            tail = lst[0] if lst else NIL
            base = pfn * 8
            mem[base] = flags
            mem[base + M.W_LINK] = NIL
            mem[base + M.W_PREV] = tail
            if tail != NIL:
                mem[tail * 8 + M.W_LINK] = pfn
            lst.appendleft(pfn)

    def _leave(self, pcp, entries):
        mem = self.mem
        for pfn, _ in entries:
            mem[pfn * 8] = 0                           # list_del() from pcp_list
        self.v[_LINK_W] += len(entries)
        return entries

    def send(self, pfn, order, t, dst) -> None:
        self.mem[pfn * 8] = self._inflight_flags[t][order]
        self.v[_PAGE_W] += 1

    def receive(self, pfn, order, t) -> None:
        self.mem[pfn * 8] = self._alloc_flags[t][order]
        self.v[_PAGE_W] += 1


class LegacyPolicy(_Page64Policy):
    """Today's kernel: all comers on the PCP, compound state built and torn down."""

    name = "legacy"

    def _after_pcp_alloc(self, pfn: int, t: int, order: int) -> None:
        if COMPOUND_OF[t]:                             # prep_new_page(): __GFP_COMP
            self._prep_compound_page(pfn, order)
            if FOLIO_OF[t]:                            # folio_prep_large_rmappable()
                self.v[_RMAP_W] += 1

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        if not self.pcp.allowed[order]:
            self._free_buddy(pfn, order, t)
            return -1
        self._free_tail_pages(pfn, order, COMPOUND_OF[t])   # __free_pages_prepare()
        if FOLIO_OF[t] and order > 1:                  # folio_unqueue_deferred_split()
            self.v[_RMAP_R] += 1
        return 0


class CompoundPolicy(_Page64Policy):
    """Only compound memory on the PCP; compound state survives the round trip."""

    name = "compound"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.options.noncompound_alloc == "buddy":  # plain multi-page: straight to buddy
            self._lists[T_KERNEL][1:] = [None] * 10

    def _after_pcp_alloc(self, pfn: int, t: int, order: int) -> None:
        if not COMPOUND_OF[t]:                         # hand out plain pages: undo compound
            self._free_tail_pages(pfn, order, compound=True)
        elif FOLIO_OF[t]:                              # page_rmappable_folio(): page[1] flag
            self.v[_RMAP_W] += 1

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        convert = not COMPOUND_OF[t] and self.options.noncompound_free == "convert"
        if not self.pcp.allowed[order] or not (COMPOUND_OF[t] or convert):
            self._free_buddy(pfn, order, t)
            return -1
        if convert:                                    # make it compound to keep it
            self._prep_compound_page(pfn, order)
        elif FOLIO_OF[t]:                              # folio_undo_large_rmappable()
            self.v[_RMAP_W] += 1
            if order > 1:                              # folio_unqueue_deferred_split()
                self.v[_RMAP_R] += 1
        return M.PG_HEAD

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        super()._enter(pcp, lst, blocks, order, t)
        if order:                                      # compound from buddy to PCP
            mem, flags = self.mem, self._pcp_flags[order] | M.PG_HEAD
            for pfn in blocks:
                self._prep_compound_page(pfn, order)
                mem[pfn * 8] = flags

    def _leave(self, pcp, entries):
        for pfn, order in entries:
            if order:                                  # compound undone at the buddy boundary
                self._free_tail_pages(pfn, order, compound=True)
        return super()._leave(pcp, entries)


# -- memdesc stages ---------------------------------------------------------------

class _MemdescPolicy(Policy):
    """Pages carry a memdesc word; descriptors come from the slab.

    Any record size works: in 64- and 32-byte pages the memdesc word is word
    1, where the plan points the old compound_head (section 6.3).
    """

    record_sizes = (64, 32, 16, 8)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.slab is None:
            raise ValueError(f"policy {self.name} needs a descriptor slab")
        self.mw = M.memdesc_word(self.rb)
        self.d = self.arena.descq
        self._dstate_inuse = [[desc_state(MEMDESC_OF[t], DS_INUSE, o, self.cpu) for o in range(11)]
                              for t in range(len(TYPES))]
        self._dstate_pcp = [[desc_state(MEMDESC_OF[t], DS_PCP, o, self.cpu) for o in range(11)]
                            for t in range(len(TYPES))]

    def _set_memdesc(self, pfn: int, order: int, value: int) -> None:
        """Store the memdesc word into every page of the block."""
        n = 1 << order
        w = self.w
        if n == 1:
            self.mem[pfn * w + self.mw] = value
        else:
            self.np_mem[pfn * w + self.mw:(pfn + n) * w:w] = value
        self.v[_MD_W] += lines_spanned(pfn, n, self.rb)

    def _misc_word(self, state: int, order: int) -> int:
        return M.MEMDESC_MISC | (state << 4) | (order << 8) | ((self.cpu + 1) << 16)

    def _new_desc(self, t: int, order: int, pfn: int, state: int) -> int:
        """slab_alloc() a descriptor and fill it in (section 6.4)."""
        idx = self.slab.alloc()
        d, base = self.d, idx * DESC_WORDS
        d[base + D_STATE] = desc_state(MEMDESC_OF[t], state, order, self.cpu)
        d[base + D_PFN] = pfn
        d[base + D_REFCOUNT] = 1 if state == DS_INUSE else 0
        d[base + D_MAPPING] = 0
        d[base + D_MAPCOUNT] = -1
        lines = 1
        if order and FOLIO_OF[t]:                      # large folios use the second line
            d[base + D_ENTIRE_MAPCOUNT] = -1
            d[base + D_NR_PAGES_MAPPED] = 0
            d[base + D_DEFERRED] = NIL
            lines = 2
        self.v[_DESC_W] += lines
        return idx

    def _desc_of(self, pfn: int) -> int:
        """page->memdesc -> descriptor index (the caller holds the folio already)."""
        return self.mem[pfn * self.w + self.mw] >> 4

    def _desc_pfn(self, idx: int) -> int:
        return self.d[idx * DESC_WORDS + D_PFN]

    def _desc_push(self, lst, idx: int) -> None:
        d, base = self.d, idx * DESC_WORDS
        old = lst[-1] if lst else NIL
        d[base + D_NEXT] = old
        d[base + D_PREV] = NIL
        if old != NIL:
            d[old * DESC_WORDS + D_PREV] = idx
            self.v[_DESC_W] += 1
        lst.append(idx)

    def _desc_pop(self, lst) -> int:
        idx = lst.pop()
        if lst:
            self.d[lst[-1] * DESC_WORDS + D_PREV] = NIL
            self.v[_DESC_W] += 1
        return idx

    def _desc_append_tail(self, lst, idx: int) -> None:
        tail = lst[0] if lst else NIL
        d, base = self.d, idx * DESC_WORDS
        d[base + D_NEXT] = NIL
        d[base + D_PREV] = tail
        if tail != NIL:
            d[tail * DESC_WORDS + D_NEXT] = idx
            self.v[_DESC_W] += 1
        lst.appendleft(idx)

    def _alloc_buddy(self, t: int, order: int) -> int:
        pfn = self.zone.rmqueue_buddy(order, MIGRATETYPE_OF[t])
        if pfn == NIL:
            self._count_fail()
            return NIL
        self.v[_BUDDY] += 1
        self._make_allocated(pfn, t, order)
        return pfn

    def _make_allocated(self, pfn: int, t: int, order: int) -> None:
        """Buddy memory becomes type t: a descriptor (unless Misc) in every page."""
        if t == T_KERNEL:
            self._set_memdesc(pfn, order, self._misc_word(DS_INUSE, order))
            return
        idx = self._new_desc(t, order, pfn, DS_INUSE)
        self._set_memdesc(pfn, order, (idx << 4) | MEMDESC_OF[t])

    def _free_to_buddy(self, pfn: int, order: int, t: int) -> None:
        if t != T_KERNEL:
            self.slab.free(self._desc_of(pfn))
        self._set_memdesc(pfn, order, M.MEMDESC_BUDDY)
        self.zone.free_one_page(pfn, order)
        self.v[_FREE_BUDDY] += 1

    def send(self, pfn, order, t, dst) -> None:
        self._set_owner_state(pfn, order, t, DS_INFLIGHT)

    def receive(self, pfn, order, t) -> None:
        self._set_owner_state(pfn, order, t, DS_INUSE)

    def _set_owner_state(self, pfn: int, order: int, t: int, state: int) -> None:
        if t == T_KERNEL:
            self.mem[pfn * self.w + self.mw] = self._misc_word(state, order)
            self.v[_MD_W] += 1
            return
        idx = self._desc_of(pfn)
        self.d[idx * DESC_WORDS + D_STATE] = desc_state(MEMDESC_OF[t], state, order, self.cpu)
        self.v[_DESC_W] += 1


class MemdescPcpdescPolicy(_MemdescPolicy):
    """Memdescs without descriptor caching: swap to a struct pcpdesc on free."""

    name = "memdesc-pcpdesc"

    def _new_pcpdesc(self, pfn: int, order: int) -> int:
        idx = self.slab.alloc()
        d, base = self.d, idx * DESC_WORDS
        d[base + D_STATE] = desc_state(M.MEMDESC_PCPDESC, DS_PCP, order, self.cpu)
        d[base + D_PFN] = pfn
        self.v[_DESC_W] += 1
        self._set_memdesc(pfn, order, (idx << 4) | M.MEMDESC_PCPDESC)
        return idx

    def alloc(self, t: int, order: int) -> int:
        v = self.v
        v[self._alloc_ctr[t][order]] += 1
        lst = self._lists[t][order]
        if lst is None:                                # an order the PCP does not keep
            return self._alloc_buddy(t, order)
        pcp = self.pcp
        pcp.free_count >>= 1                           # __rmqueue_pcplist()
        if lst:
            v[_HIT] += 1
        elif self._refill(pcp, lst, order, t):
            v[_REFILL] += 1
        else:
            return self._alloc_buddy(t, order)
        pidx = self._desc_pop(lst)
        pcp.count -= 1 << order
        pfn = self.d[pidx * DESC_WORDS + D_PFN]
        v[_DESC_R] += 1
        self._make_allocated(pfn, t, order)            # new descriptor, every memdesc word
        self.slab.free(pidx)
        return pfn

    def free(self, pfn: int, order: int, t: int) -> None:
        v = self.v
        v[_FREE_TYPE + t] += 1
        pcp = self.pcp
        if not pcp.allowed[order]:
            self._free_to_buddy(pfn, order, t)
            return
        if t != T_KERNEL:
            self.slab.free(self._desc_of(pfn))
        pidx = self._new_pcpdesc(pfn, order)           # swap every memdesc word
        pindex = pcp.pindex[order][self.pbq[pfn >> 9]]
        self._desc_push(pcp.lists[pindex], pidx)
        pcp.count += 1 << order
        v[_FREE_PCP] += 1
        drain = pcp.free_check(order, self.below_high)
        if drain:
            self._drain(pcp, drain, pindex, pcp.drain_cause)

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        for pfn in blocks:
            self._desc_append_tail(lst, self._new_pcpdesc(pfn, order))

    def _leave(self, pcp, entries):
        out = []
        for pidx, order in entries:
            pfn = self._desc_pfn(pidx)
            self._set_memdesc(pfn, order, M.MEMDESC_BUDDY)
            self.slab.free(pidx)
            out.append((pfn, order))
        return out


class MemdescPolicy(_MemdescPolicy):
    """One PCP per memdesc type, keeping descriptor and memory together."""

    name = "memdesc"

    def _make_pcps(self) -> list[PerCpuPages]:
        divide = len(TYPES) if self.options.memdesc_high == "split" else 1
        return [self.tuning.new_pcp(divide) for _ in TYPES]

    def pcp_pages_by_type(self) -> list[int]:
        return [p.count for p in self.pcps]

    def _pcp_of_type(self) -> list[PerCpuPages]:
        return self.pcps

    def alloc(self, t: int, order: int) -> int:
        v = self.v
        v[self._alloc_ctr[t][order]] += 1
        lst = self._lists[t][order]
        if lst is None:                                # an order the PCP does not keep
            return self._alloc_buddy(t, order)
        pcp = self.pcps[t]
        pcp.free_count >>= 1                           # __rmqueue_pcplist()
        if lst:
            v[_HIT] += 1
        elif self._refill(pcp, lst, order, t):
            v[_REFILL] += 1
        else:
            return self._alloc_buddy(t, order)
        pcp.count -= 1 << order
        if t == T_KERNEL:
            pfn = self._misc_pop(lst)
            self.mem[pfn * self.w + self.mw] = self._misc_word(DS_INUSE, order)
            v[_MD_W] += 1
            return pfn
        d = self.d
        idx = lst.pop()
        if lst:                                        # the new head's prev link
            d[lst[-1] * DESC_WORDS + D_PREV] = NIL
        base = idx * DESC_WORDS                        # the folio comes back ready
        d[base + D_STATE] = self._dstate_inuse[t][order]
        d[base + D_REFCOUNT] = 1
        v[_DESC_W] += 2 if lst else 1
        return d[base + D_PFN]

    def free(self, pfn: int, order: int, t: int) -> None:
        v = self.v
        v[_FREE_TYPE + t] += 1
        pcp = self.pcps[t]
        if not pcp.allowed[order]:
            self._free_to_buddy(pfn, order, t)
            return
        pindex = pcp.pindex[order][self.pbq[pfn >> 9]]
        lst = pcp.lists[pindex]
        if t == T_KERNEL:
            self.mem[pfn * self.w + self.mw] = self._misc_word(DS_PCP, order)
            v[_MD_W] += 1
            self._misc_push(lst, pfn)
        else:
            d = self.d
            idx = self.mem[pfn * self.w + self.mw] >> 4   # the folio the caller holds
            base = idx * DESC_WORDS
            old = lst[-1] if lst else NIL
            d[base + D_STATE] = self._dstate_pcp[t][order]
            d[base + D_REFCOUNT] = 0
            d[base + D_NEXT] = old
            d[base + D_PREV] = NIL
            if old != NIL:
                d[old * DESC_WORDS + D_PREV] = idx
                v[_DESC_W] += 2
            else:
                v[_DESC_W] += 1
            lst.append(idx)
        pcp.count += 1 << order
        v[_FREE_PCP] += 1
        drain = pcp.free_check(order, self.below_high)
        if drain:
            self._drain(pcp, drain, pindex, pcp.drain_cause)

    # Misc memory has no descriptor: its PCP links live in the free memory.
    def _misc_push(self, lst, pfn: int) -> None:
        links = self.arena.freelinks
        old = lst[-1] if lst else NIL
        links[pfn * 2] = old
        links[pfn * 2 + 1] = NIL
        self.v[_DATA_W] += 1
        if old != NIL:
            links[old * 2 + 1] = pfn
            self.v[_DATA_W] += 1
        lst.append(pfn)

    def _misc_pop(self, lst) -> int:
        pfn = lst.pop()
        if lst:
            self.arena.freelinks[lst[-1] * 2 + 1] = NIL
            self.v[_DATA_W] += 1
        return pfn

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        for pfn in blocks:
            if t == T_KERNEL:
                self._set_memdesc(pfn, order, self._misc_word(DS_PCP, order))
                links = self.arena.freelinks
                tail = lst[0] if lst else NIL
                links[pfn * 2], links[pfn * 2 + 1] = NIL, tail
                if tail != NIL:
                    links[tail * 2] = pfn
                self.v[_DATA_W] += 1 + (tail != NIL)   # its own links, and the old tail's
                lst.appendleft(pfn)
                continue
            idx = self._new_desc(t, order, pfn, DS_PCP)
            self._set_memdesc(pfn, order, (idx << 4) | MEMDESC_OF[t])
            self._desc_append_tail(lst, idx)

    def _leave(self, pcp, entries):
        misc = pcp is self.pcps[T_KERNEL]          # Misc entries are pfns, others descriptors
        out = []
        for entry, order in entries:
            pfn = entry if misc else self._desc_pfn(entry)
            if not misc:
                self.slab.free(entry)
            self._set_memdesc(pfn, order, M.MEMDESC_BUDDY)
            out.append((pfn, order))
        return out


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (LegacyPolicy, CompoundPolicy, MemdescPcpdescPolicy, MemdescPolicy)
}
