"""Policies on today's 64-byte struct page: ``legacy`` and ``compound``.

PCP lists are linked through page->pcp_list; compound state lives in the
tail pages (compound_head), which is what the two policies treat differently.
"""

from __future__ import annotations

from collections import deque

from pcpd.kernel import PAGE_ORDERS, PAGEBLOCK_ORDER
from pcpd.model import pagewords
from pcpd.model.lines import LineCharges, lines_spanned
from pcpd.model.pagewords import NIL
from workers.policies.base import (
    BUDDY,
    COMPOUND_OF,
    FOLIO_OF,
    FREE_BUDDY,
    FREE_PCP,
    FREE_TYPE,
    HIT,
    LINK_W,
    PAGE_W,
    PREP_W,
    RMAP_R,
    RMAP_W,
    T_KERNEL,
    TYPES,
    UNDO_R,
    UNDO_W,
    W_LINK,
    W_PREV,
    W_REFCOUNT,
    Policy,
)


class _Page64Policy(Policy):
    """PCP lists linked through page->pcp_list in 64-byte struct pages (the registry's
    record sizes for these policies)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cpu1 = (self.cpu + 1) << pagewords.FLAG_CPU_SHIFT
        self._pcp_flags = [pagewords.PG_PCP | cpu1 | (o << pagewords.FLAG_ORDER_SHIFT) for o in PAGE_ORDERS]
        self._alloc_flags = [[self._head_flags(t, o) for o in PAGE_ORDERS] for t in range(len(TYPES))]

    def _head_flags(self, t: int, order: int) -> int:
        flags = (pagewords.PG_ALLOC | ((self.cpu + 1) << pagewords.FLAG_CPU_SHIFT)
                 | (order << pagewords.FLAG_ORDER_SHIFT) | (t << pagewords.FLAG_TYPE_SHIFT))
        if FOLIO_OF[t]:
            flags |= pagewords.PG_LRU
        if order and COMPOUND_OF[t]:
            flags |= pagewords.PG_HEAD
        return flags

    # page state (slow paths: compound blocks, buddy allocations) --------------
    def _post_alloc_hook(self, pfn: int, t: int, order: int) -> None:
        """post_alloc_hook(): head flags, refcount 1, private 0: one line."""
        base = pfn * 8
        self.mem[base] = self._alloc_flags[t][order]
        self.mem[base + pagewords.W_REFCOUNT64] = 1
        self.mem[base + pagewords.W_PRIVATE64] = 0
        self.zone.lines.page(PAGE_W, pfn)

    # The order > 0 helpers serve hits and misses both: ``lines`` is None on a hit (see Policy).
    def _prep_compound_page(self, pfn: int, order: int, lines: LineCharges | None = None) -> None:
        """prep_compound_page(): three stores into each of the 2**order - 1 tails."""
        n = 1 << order
        mem = self.np_mem
        first, end = (pfn + 1) * 8, (pfn + n) * 8
        mem[first + pagewords.W_MAPPING:end:8] = pagewords.TAIL_MAPPING
        mem[first + pagewords.W_LINK:end:8] = (pfn << 1) | 1        # compound_head = head | 1
        mem[first + pagewords.W_PRIVATE64:end:8] = 0
        # prep_compound_head(): order, nr_pages, mapcounts in page[1]; _deferred_list in page[2]
        mem[first + pagewords.W_PRIVATE64] = order
        if lines is None:
            self.v[PREP_W] += lines_spanned(pfn + 1, n - 1, 64)
        else:
            lines.pages(PREP_W, pfn + 1, n - 1)

    def _free_tail_pages(self, pfn: int, order: int, compound: bool, lines: LineCharges | None = None) -> None:
        """__free_pages_prepare() tail loop: read and rewrite every tail's line."""
        n = 1 << order
        mem = self.np_mem
        first, end = (pfn + 1) * 8, (pfn + n) * 8
        flags = mem[first:end:8]
        if compound:                                  # free_tail_page_prepare()
            mem[first + pagewords.W_MAPPING:end:8] = 0
            mem[first + pagewords.W_LINK:end:8] = 0
            mem[first + pagewords.W_PRIVATE64] = 0              # page[1] second-page fields
        # PAGE_FLAGS_CHECK_AT_PREP, and PAGE_FLAGS_SECOND in page[1]
        flags &= ~(pagewords.PG_LRU | pagewords.PG_ALLOC | pagewords.PG_LARGE_RMAPPABLE)
        if lines is None:
            tails = lines_spanned(pfn + 1, n - 1, 64)
            self.v[UNDO_W] += tails
            self.v[UNDO_R] += tails
        else:
            self._tail_undo_lines(pfn, order, lines)

    def _tail_undo_lines(self, pfn: int, order: int, lines: LineCharges) -> None:
        """The tail loop's lines: every tail read and rewritten."""
        lines.pages(UNDO_W, pfn + 1, (1 << order) - 1)
        lines.pages(UNDO_R, pfn + 1, (1 << order) - 1)

    # large-rmappable folio state in page[1] and page[2] (order > 0 folios only)
    def _set_large_rmappable(self, pfn: int, rmappable: bool) -> None:
        """folio_set_large_rmappable() / folio_undo_large_rmappable(): page[1]'s flags.

        Tail flags hold nothing else here, so this stores the whole word; the
        caller charges page[1]'s line unless its tail work wrote that line already.
        """
        self.mem[(pfn + 1) * 8] = pagewords.PG_LARGE_RMAPPABLE if rmappable else 0

    def _unqueue_deferred_split(self, pfn: int) -> None:
        """folio_unqueue_deferred_split(): list_empty(&folio->_deferred_list), in page[2].

        pcpd queues no folio for deferred split, so the list is always empty: the
        load is the whole cost; the caller charges page[2]'s line.
        """
        self.mem[(pfn + 2) * 8 + W_PREV]               # the load is the cost

    def _alloc_buddy(self, t: int, order: int) -> int:
        """rmqueue_buddy() then prep_new_page(): orders the PCP does not keep; one
        operation, each line charged once."""
        with self.zone.lines.operation():
            pfn = self.zone.rmqueue_buddy(order, self.migratetypes[t], self.nofragment)
            if pfn != NIL:
                self.v[BUDDY] += 1
                self._post_alloc_hook(pfn, t, order)
                if order and COMPOUND_OF[t]:
                    self._prep_compound_page(pfn, order, self.zone.lines)
                    if FOLIO_OF[t]:                    # folio_prep_large_rmappable()
                        self._set_large_rmappable(pfn, True)   # page[1]: prep's line, charged there
        if pfn == NIL:
            self._count_fail()
        return pfn

    def _free_buddy(self, pfn: int, order: int, t: int) -> None:
        """__free_pages_prepare() with tails, then free_one_page(); one operation, each
        line charged once."""
        with self.zone.lines.operation():
            if order:
                self._free_tail_pages(pfn, order, COMPOUND_OF[t], self.zone.lines)
            base = pfn * 8
            self.mem[base] = 0
            self.mem[base + pagewords.W_REFCOUNT64] = 0
            self.zone.lines.page(PAGE_W, pfn)
            self.zone.free_one_page(pfn, order)
        self.v[FREE_BUDDY] += 1

    # the PCP fast paths --------------------------------------------------------
    # alloc() and free() are the per-operation path: everything an order-0 hit
    # needs is inline (a call costs ~0.1 us interpreted, and is not free compiled);
    # compound and policy-specific work happens in the order > 0 hooks below.
    def alloc(self, t: int, order: int) -> int:
        self.v[self._alloc_ctr[t][order]] += 1
        lst = self._lists[t][order]
        if lst is None:                                # an order the PCP does not keep
            return self._alloc_buddy(t, order)
        pcp = self.pcp
        pcp.free_count >>= 1                           # __rmqueue_pcplist()
        if not lst:
            return self._alloc_miss(pcp, lst, t, order)
        self.v[HIT] += 1
        pfn = lst.pop()                                # _pcp_pop(), inline: a hit makes no call
        if lst:                                        # list_del(): the new head's prev
            self.mem[lst[-1] * 8 + W_PREV] = NIL
            self.v[LINK_W] += 1
        pcp.count -= 1 << order
        base = pfn * 8                                 # post_alloc_hook(): one line
        self.mem[base] = self._alloc_flags[t][order]
        self.mem[base + W_REFCOUNT] = 1
        self.v[PAGE_W] += 1
        if order:
            self._after_pcp_alloc(pfn, t, order)
        return pfn

    def free(self, pfn: int, order: int, t: int) -> None:
        self.v[FREE_TYPE + t] += 1
        head = 0
        if order:
            head = self._before_pcp_free(pfn, order, t)
            if head < 0:
                return
        pcp = self.pcp
        # free_frozen_page_commit(): the list comes from the pageblock's
        # migratetype, not the caller's
        pindex = pcp.pindex[order][self.pbq[pfn >> PAGEBLOCK_ORDER]]
        lst = pcp.lists[pindex]
        base = pfn * 8
        old = lst[-1] if lst else NIL
        self.mem[base] = self._pcp_flags[order] | head
        self.mem[base + W_LINK] = old
        self.mem[base + W_PREV] = NIL
        self.mem[base + W_REFCOUNT] = 0
        self.v[PAGE_W] += 1
        if old != NIL:
            self.mem[old * 8 + W_PREV] = pfn
            self.v[LINK_W] += 1
        lst.append(pfn)
        pcp.count += 1 << order
        self.v[FREE_PCP] += 1
        drain = pcp.free_check(order, self.zone_words)
        if drain:
            self._drain_after_free(pcp, drain, pindex, self._freed_lines, lst, pfn, order, t)

    # The miss paths: the hit's steps out of line, charged through self.zone.lines.
    def _take_first(self, pcp, lst, t, order) -> int:
        pfn = self._pcp_pop(lst)
        pcp.count -= 1 << order
        self._prep_new_page(pfn, t, order)
        return pfn

    def _pcp_pop(self, lst: deque[int]) -> int:
        """__rmqueue_pcplist()'s list_del() of the first block: the new first block's prev."""
        pfn = lst.pop()
        if lst:
            self.mem[lst[-1] * 8 + W_PREV] = NIL
            self.zone.lines.page(LINK_W, lst[-1])
        return pfn

    def _prep_new_page(self, pfn: int, t: int, order: int) -> None:
        """What alloc() does to a block it took off the list: post_alloc_hook()'s line,
        then the order > 0 work."""
        base = pfn * 8
        self.mem[base] = self._alloc_flags[t][order]
        self.mem[base + W_REFCOUNT] = 1
        self.zone.lines.page(PAGE_W, pfn)
        if order:
            self._after_pcp_alloc(pfn, t, order, self.zone.lines)

    def _freed_lines(self, lst, pfn, order, t) -> None:
        # free()'s head line and list_add()'s link in the old first block
        self.zone.lines.page(PAGE_W, pfn)
        if len(lst) > 1:
            self.zone.lines.page(LINK_W, lst[-2])
        if order:
            self._prepared_lines(pfn, order, t)

    def _prepared_lines(self, pfn: int, order: int, t: int) -> None:
        """The lines _before_pcp_free() charged for a block that went on the PCP."""
        raise NotImplementedError

    def _after_pcp_alloc(self, pfn: int, t: int, order: int, lines: LineCharges | None = None) -> None:
        """Policy work after an order > 0 block came off the PCP (``lines``: None on a hit)."""
        raise NotImplementedError

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        """Policy work before an order > 0 block goes to the PCP.

        Returns the head flag to keep on the PCP, or -1 when the block went
        to the buddy instead.
        """
        raise NotImplementedError

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        flags = self._pcp_flags[order]
        # each block's own line and the old tail's (a block added to an empty
        # list links to the list head in per_cpu_pages)
        if lst:
            self.zone.lines.page(LINK_W, lst[0])
        self.zone.lines.each(LINK_W, blocks)
        tail = lst[0] if lst else NIL
        for pfn in blocks:                             # list_add_tail() in rmqueue_bulk()
            base = pfn * 8
            self.mem[base] = flags
            self.mem[base + W_LINK] = NIL
            self.mem[base + W_PREV] = tail
            if tail != NIL:
                self.mem[tail * 8 + W_LINK] = pfn
            tail = pfn
        lst.extendleft(blocks)

    def _leave(self, pcp, index, order, entries):
        for pfn in entries:
            self.mem[pfn * 8] = 0                      # list_del() from pcp_list
        self.zone.lines.each(LINK_W, entries)
        return entries

    def send(self, pfn, order, t, dst) -> None:
        self.mem[pfn * 8] = self._alloc_flags[t][order] & ~pagewords.PG_ALLOC | pagewords.PG_INFLIGHT
        self.zone.lines.page(PAGE_W, pfn)

    def receive(self, pfn, order, t) -> None:
        self.mem[pfn * 8] = self._alloc_flags[t][order]
        self.zone.lines.page(PAGE_W, pfn)


class LegacyPolicy(_Page64Policy):
    """Today's kernel: all comers on the PCP, compound state built and torn down."""

    name = "legacy"

    # The large-rmappable work lands in page[1] and page[2], lines the tail loops
    # (prep_compound_page() writes page[1]; free_tail_page_prepare() reads and
    # writes page[2]) touch in the same operation: charged there, once.
    def _after_pcp_alloc(self, pfn, t, order, lines=None) -> None:
        if COMPOUND_OF[t]:                             # prep_new_page(): __GFP_COMP
            self._prep_compound_page(pfn, order, lines)
            if FOLIO_OF[t]:                            # folio_prep_large_rmappable()
                self._set_large_rmappable(pfn, True)

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        if not self.pcp.allowed[order]:
            self._free_buddy(pfn, order, t)
            return -1
        self._free_pages_prepare(pfn, order, t)
        return 0

    def _free_pages_prepare(self, pfn: int, order: int, t: int) -> None:
        """__free_pages_prepare() of an order > 0 block: folio_unqueue_deferred_split()
        (page[2], whose line the tail loop charges), then the tail pages."""
        if FOLIO_OF[t] and order > 1:
            self._unqueue_deferred_split(pfn)
        self._free_tail_pages(pfn, order, COMPOUND_OF[t])

    def _prepared_lines(self, pfn: int, order: int, t: int) -> None:
        self._tail_undo_lines(pfn, order, self.zone.lines)


class CompoundPolicy(_Page64Policy):
    """Only compound memory on the PCP; compound state survives the round trip."""

    name = "compound"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.options.noncompound_alloc == "buddy":  # plain multi-page: straight to buddy
            self._lists[T_KERNEL][1:] = [None] * 10

    def _after_pcp_alloc(self, pfn, t, order, lines=None) -> None:
        if not COMPOUND_OF[t]:                         # hand out plain pages: undo compound
            self._free_tail_pages(pfn, order, True, lines)
        elif FOLIO_OF[t]:                              # page_rmappable_folio(): page[1] flag
            self._set_large_rmappable(pfn, True)
            if lines is None:
                self.v[RMAP_W] += 1
            else:
                lines.page(RMAP_W, pfn + 1)

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        convert = not COMPOUND_OF[t] and self.options.noncompound_free == "convert"
        if not self.pcp.allowed[order] or not (COMPOUND_OF[t] or convert):
            self._free_buddy(pfn, order, t)
            return -1
        if convert:                                    # make it compound to keep it
            self._prep_compound_page(pfn, order)
        elif FOLIO_OF[t]:
            self._undo_large_rmappable(pfn, order)
        return pagewords.PG_HEAD

    def _prepared_lines(self, pfn: int, order: int, t: int) -> None:
        if not COMPOUND_OF[t]:                         # converted
            self.zone.lines.pages(PREP_W, pfn + 1, (1 << order) - 1)
        elif FOLIO_OF[t]:
            self._undo_large_rmappable_lines(pfn, order)

    def _undo_large_rmappable(self, pfn: int, order: int) -> None:
        """A folio kept compound on the PCP stops being one: folio_undo_large_rmappable()
        (page[1]) and, from order 2, folio_unqueue_deferred_split() (page[2]).
        Only ever a free's hit part: charged at once."""
        self._set_large_rmappable(pfn, False)
        self.v[RMAP_W] += 1
        if order > 1:
            self._unqueue_deferred_split(pfn)
            self.v[RMAP_R] += 1

    def _undo_large_rmappable_lines(self, pfn: int, order: int) -> None:
        """_undo_large_rmappable()'s lines, for a drain after the free (_prepared_lines)."""
        self.zone.lines.page(RMAP_W, pfn + 1)
        if order > 1:
            self.zone.lines.page(RMAP_R, pfn + 2)

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        _Page64Policy._enter(self, pcp, lst, blocks, order, t)   # (a compiled method: no super())
        if order:                                      # compound from buddy to PCP
            flags = self._pcp_flags[order] | pagewords.PG_HEAD
            for pfn in blocks:
                self._prep_compound_page(pfn, order, self.zone.lines)
                self.mem[pfn * 8] = flags

    def _leave(self, pcp, index, order, entries):
        if order:                                      # compound undone at the buddy boundary
            for pfn in entries:
                self._free_tail_pages(pfn, order, True, self.zone.lines)
        return _Page64Policy._leave(self, pcp, index, order, entries)
