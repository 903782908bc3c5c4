"""Readings of the compound proposal that it leaves open: ``compound-lazy`` and ``compound-contig``.

Both keep ``compound``'s rule that compound state survives a PCP round trip
(a hit touches the head and, for a folio, page[1]), and both let the PCP
hold blocks whose tails are *not* prepped, so each PCP entry says which it
is: PG_head stays set on the head of a prepped block while it sits on the
PCP (``compound`` sets it on every order > 0 entry).  An allocation preps an
unprepped block it hands out as compound, and undoes a prepped one it hands
out as plain pages; a drain undoes only the prepped ones.

``compound-lazy``
    Source: Matthew Wilcox's proposal (linux-mm, January 2024), which says
    compound memory stays compound on the PCP but not when the tails are
    written.  ``compound`` preps every block of a refill eagerly, under the
    refill, and undoes the ones drained unused (``pcpd costs``: a THP refill
    miss writes 2 x 511 tail lines).  Here ``rmqueue_bulk()`` blocks enter
    the PCP as they left the buddy, and ``prep_compound_page()`` runs at a
    block's first allocation: a refill costs what legacy's does, and a block
    never allocated is never prepped nor undone.

``compound-contig``
    Source: Ryan Roberts and Muhammad Usama Anjum, "mm/page_alloc: Optimize
    free_contig_range()" (linux-mm, v1-v3 2025-March 2026), with its
    frozen-range follow-up: a range of order-0 pages is freed as the largest
    aligned power-of-2 chunks, each prepared page by page
    (free_pages_prepare()) and then handed to the PCP *or* the buddy as one
    non-compound high-order block (free_prepared_contig_range()).  That is
    the opposite of the proposal's rule that only compound memory lives on
    the PCP, and the case the proposal must answer: ``compound`` either
    sends such a block to the buddy or preps it into a compound page
    (``policy.noncompound_free``).  This variant keeps it on the PCP as it
    is, non-compound, at its order where the era's PCP keeps that order; a
    compound allocation that pops it preps it then, and non-compound
    allocations are served from the PCP too (the memory is there).  Refills
    stay eager for compound types, as in ``compound``, so the difference
    from ``compound`` is the non-compound traffic alone.

Modelling choices.  pcpd's workloads free a non-compound block as one unit
of its allocation order; the rework's per-page preparation of a split range
is charged as legacy charges a non-compound free (every tail's line read and
written by the tail loop), and its chunking is the block itself (blocks are
aligned).  ``compound-contig`` ignores ``policy.noncompound_free`` and
``noncompound_alloc``: keeping and serving non-compound blocks is what it
is.  Whether a popped block is prepped is read from its head's flags before
the shared fast path (``_Page64Policy.alloc``) rewrites them: the PG_head bit
of the line the allocation writes anyway, charged as one ``page_state`` read
(a hit loads the head line; the traced-lines test holds every load to a
charge).
"""

from __future__ import annotations

from pcpd.kernel import PAGE_ORDERS
from pcpd.model import pagewords, stats
from workers.policies.base import COMPOUND_OF, FOLIO_OF, RMAP_W, T_KERNEL, TYPES
from workers.policies.struct_page import CompoundPolicy, _Page64Policy

__all__ = ["CompoundLazyPolicy", "CompoundContigPolicy"]

_PG_HEAD = pagewords.PG_HEAD
_PAGE_R = stats.LINES_R["page_state"]


class _PerEntryCompound(CompoundPolicy):
    """Compound, with each PCP entry saying whether its tails are prepped (PG_head)."""

    # Does rmqueue_bulk() prep the blocks of a refill for memdesc type t?
    eager_refill: tuple[bool, ...]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._popped_prepped = False

    def alloc(self, t: int, order: int) -> int:
        if order:
            # the pop in the shared fast path rewrites the head's flags: note first
            # whether the block it will take (the list head, or a refill's) is prepped
            lst = self._lists[t][order]
            if lst:
                self._popped_prepped = bool(self.mem[lst[-1] * 8] & _PG_HEAD)
                self.v[_PAGE_R] += 1
            else:
                self._popped_prepped = self.eager_refill[t]
        return super().alloc(t, order)

    def _after_pcp_alloc(self, pfn, t, order, lines=None) -> None:
        prepped = self._popped_prepped
        if COMPOUND_OF[t]:
            if not prepped:                            # the first allocation preps
                self._prep_compound_page(pfn, order, lines)
            if FOLIO_OF[t]:                            # folio_prep_large_rmappable() / page_rmappable_folio()
                self._set_large_rmappable(pfn, True)
                if prepped and lines is None:          # else page[1] is prep's line, charged there
                    self.v[RMAP_W] += 1
                elif prepped:
                    lines.page(RMAP_W, pfn + 1)
        elif prepped:                                  # hand out plain pages: undo compound
            self._free_tail_pages(pfn, order, True, lines)

    def _enter(self, pcp, lst, blocks, order, t) -> None:
        if order and self.eager_refill[t]:
            super()._enter(pcp, lst, blocks, order, t)      # compound's: prep, PG_head kept
        else:
            _Page64Policy._enter(self, pcp, lst, blocks, order, t)

    def _leave(self, pcp, index, order, entries):
        for pfn in entries if order else ():
            self.zone.lines.page(_PAGE_R, pfn)
            if self.mem[pfn * 8] & _PG_HEAD:           # only prepped blocks carry tail state
                self._free_tail_pages(pfn, order, True, self.zone.lines)
        return _Page64Policy._leave(self, pcp, index, order, entries)


class CompoundLazyPolicy(_PerEntryCompound):
    """Compound with prep_compound_page() at a block's first allocation, not at refill."""

    name = "compound-lazy"
    eager_refill = (False,) * len(TYPES)


class CompoundContigPolicy(_PerEntryCompound):
    """Compound, plus non-compound high-order blocks kept on the PCP as they are freed."""

    name = "compound-contig"
    eager_refill = COMPOUND_OF                          # as compound: compound types prep at refill

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # non-compound allocations are served from the PCP, whatever noncompound_alloc says
        pcp, mt = self.pcp, self.migratetypes[T_KERNEL]
        self._lists[T_KERNEL] = [pcp.lists[pcp.pindex[o][mt]] if pcp.allowed[o] else None
                                 for o in PAGE_ORDERS]

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        if not self.pcp.allowed[order]:
            self._free_buddy(pfn, order, t)
            return -1
        if not COMPOUND_OF[t]:
            # free_prepared_contig_range(): prepared page by page, then onto the PCP
            # at its order as one non-compound block
            self._free_tail_pages(pfn, order, compound=False)
            return 0
        if FOLIO_OF[t]:
            self._undo_large_rmappable(pfn, order)
        return _PG_HEAD

    def _prepared_lines(self, pfn: int, order: int, t: int) -> None:
        if not COMPOUND_OF[t]:
            self._tail_undo_lines(pfn, order, self.zone.lines)
        elif FOLIO_OF[t]:
            self._undo_large_rmappable_lines(pfn, order)
