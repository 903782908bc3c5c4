"""Policies on today's 64-byte struct page: ``legacy`` and ``compound``.

PCP lists are linked through page->pcp_list; compound state lives in the
tail pages (compound_head), which is what the two policies treat differently.
"""

from __future__ import annotations

from pcpd.model import memmap as M
from pcpd.model.memmap import NIL, lines_spanned
from workers.policies.base import (
    _BUDDY,
    _FREE_BUDDY,
    _FREE_PCP,
    _FREE_TYPE,
    _HIT,
    _LINK_W,
    _PAGE_W,
    _PREP_W,
    _REFILL,
    _RMAP_R,
    _RMAP_W,
    _UNDO_R,
    _UNDO_W,
    _W_LINK,
    _W_PREV,
    _W_REFCOUNT,
    COMPOUND_OF,
    FOLIO_OF,
    MIGRATETYPE_OF,
    T_KERNEL,
    TYPES,
    Policy,
)


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
