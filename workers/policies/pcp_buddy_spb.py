"""``pcp-buddy-spb``: pcp-buddy with the superpageblock steering of Rik van Riel's series.

Sources: Rik van Riel, "[RFC PATCH 00/45] 1GB superpageblock memory
allocation" (linux-mm, 30 April 2026,
https://lkml.rescloud.iu.edu/hypermail/linux/kernel/2604.3/12755.html) and its
40-patch version of 20 May 2026, built on Johannes Weiner's pcp buddy
allocator (``pcp-buddy``, workers/policies/pcp_buddy.py).  The patches this
module follows: 08/40 "superpageblock metadata for 1GB anti-fragmentation"
(https://lkml.iu.edu/2605.2/08673.html), 12/40 "steer movable allocations to
fullest clean superpageblocks" (https://lkml.iu.edu/2605.2/08771.html), 20/40
"prefer reclaim over tainting clean superpageblocks"
(https://lkml.iu.edu/2605.2/08681.html) and 21/40 "adopt partial pageblocks
from tainted superpageblocks" (https://lkml.iu.edu/2605.2/08740.html).

The series groups pageblocks into PUD-sized superpageblocks (512 pageblocks, 1
GiB on x86-64) and keeps per superpageblock the count of its pageblocks by
kind: free, unmovable, reclaimable, movable.  One holding an unmovable or
reclaimable pageblock is *tainted*; one with only free and movable pageblocks
is *clean*, and *empty* when all are free.  The goal: as many clean
superpageblocks as possible, so that they can be compacted into 1 GiB pages.
Where the pageblock-owning PCP takes new memory from the zone (the refill's
phase 1) it steers:

* a movable refill to a free pageblock of the fullest clean superpageblock
  that has one (fewest free pageblocks; 12/40's ``sb_preferred_for_movable()``
  walks the clean lists from SB_FULL towards SB_ALMOST_EMPTY), packing movable
  memory and leaving empty superpageblocks alone;
* an unmovable or reclaimable refill into tainted superpageblocks, fullest
  first, each searched completely before the next (20/40): a whole free
  pageblock first, then a free block below pageblock_order of the requested
  type in a pageblock no CPU owns, whose pageblock the CPU then owns (21/40:
  phase 0 recovers the rest of it at later refills); then a whole pageblock of
  an empty superpageblock;
* and when none of that finds memory, pcp-buddy's own phase 1 (``__rmqueue()``
  at pageblock_order), which may taint a clean superpageblock.

Everything else is pcp-buddy's: phases 0, 2 and 3, ownership, routed frees,
the merge pass and drains.

Modelling choices (none fixed by the series):

* Superpageblock size: pcpd's arenas are 1 GiB or less, one real
  superpageblock, where steering could not show.  An arena here is divided
  into 16 superpageblocks of a power-of-two number of pageblocks, at least 2
  and at most the real 512 (``superpageblock_pageblocks()``): 32 pageblocks
  (64 MiB) in the default 1 GiB arena.  The last one may be short, as the
  series' zone-clipped ``total_pageblocks``.
* The counts are taken when a refill needs them, not kept incrementally
  (every process drains into the shared zone, and the model has no shared
  superpageblock array): a pageblock is *free* when a block of
  pageblock_order or more on one of the zone's free lists covers it, else
  it counts by its migratetype label.  The series tracks the pageblock's
  actual contents (PB_has_unmovable and friends); here a pageblock labelled
  unmovable counts as unmovable while any of it is in use.  The counts and
  the free lists they are read from stand for struct superpageblock's
  counters and per-superpageblock free lists, not struct page: the walk is
  read untraced (``linetrace.untraced()``) and not charged.
* Which free pageblock of the chosen superpageblock: the lowest (the series
  keeps per-superpageblock free lists; taking one is one free-list removal
  from the list the census found it on, charged as the zone's
  ``__del_page_from_free_list()``, plus putting the other half of an
  order-10 block back).  Which sub-pageblock block to adopt: the largest on
  the zone's lists of the requested type, of at least the requested order,
  the lowest of those (the series walks the free list and takes the first
  it finds: one buddy read).  Only blocks on the zone's free lists are
  claimed, off the list that holds them: pcpd.replay's seed puts lone
  blocks on their allocation type's list before it labels the pageblocks.
  A whole pageblock taken from another type's free list changes its type,
  as a whole-block claim does, and counts as one of the zone's claims.
* Not modelled: the zone's own steering of pageblock stealing
  (``__rmqueue_claim()`` preferring tainted superpageblocks, 11/40), which
  phase 3 and the buddy path would use; the tainted-superpageblock reserves,
  the background defragmentation worker and evacuation (15/40, 24/45); 1 GiB
  and contiguous allocations (17/40); reclaim before tainting a clean
  superpageblock and the ALLOC_NOFRAGMENT changes (20/40), since the model
  has no reclaim; the unmovable/reclaimable mixing rules (24/40).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcpd.kernel import MAX_PAGE_ORDER, MIGRATE_MOVABLE, MIGRATE_PCPTYPES, PAGEBLOCK_ORDER
from pcpd.model.arena import Arena
from pcpd.model.linetrace import untraced
from pcpd.model.memmap import memmap_for
from pcpd.model.pagewords import NIL
from pcpd.model.stats import LINES_R
from pcpd.model.zonewords import Z_HEAD
from workers.policies.pcp_buddy import PcpBuddyPolicy

__all__ = ["PcpBuddySpbPolicy", "SpbCensus", "superpageblock_census", "superpageblock_pageblocks"]

SUPERBLOCK_NR_PAGEBLOCKS = 512      # x86-64: 512 pageblocks of 2 MiB, 1 GiB
SUPERPAGEBLOCKS_PER_ARENA = 16      # see the module docstring

_PB = PAGEBLOCK_ORDER
_BUDDY_R = LINES_R["buddy"]


def superpageblock_pageblocks(nr_pageblocks: int) -> int:
    """Pageblocks per superpageblock in an arena of ``nr_pageblocks``: about a
    sixteenth of it, a power of two from 2 to SUPERBLOCK_NR_PAGEBLOCKS."""
    size = 2
    while size * 2 <= min(SUPERBLOCK_NR_PAGEBLOCKS, nr_pageblocks // SUPERPAGEBLOCKS_PER_ARENA):
        size *= 2
    return size


@dataclass(frozen=True)
class SpbCensus:
    """The superpageblock counts of 08/40 and the free pageblocks on the zone's free
    lists, read at one moment."""

    size: int                  # pageblocks per superpageblock
    free: np.ndarray           # per pageblock: covered by a free block of pageblock_order or more
    head: np.ndarray           # per free pageblock: that block's head pfn (NIL elsewhere)
    order: np.ndarray          # ... its order
    list_mt: np.ndarray        # ... the migratetype of the free list that holds it
    nr_free: np.ndarray        # per superpageblock: free pageblocks
    total: np.ndarray          # per superpageblock: pageblocks (the last may be short)
    tainted: np.ndarray        # per superpageblock: an unmovable or reclaimable pageblock in use

    @property
    def empty(self) -> np.ndarray:
        return self.nr_free == self.total

    def pageblocks(self, spb: int) -> range:
        first = spb * self.size
        return range(first, first + int(self.total[spb]))


def superpageblock_census(arena: Arena) -> SpbCensus:
    """Count every superpageblock's free, tainted and clean pageblocks (see the module docstring).

    The free pageblocks come off the zone's free lists of pageblock_order and
    up, with the list each is on: a claim takes only what those lists hold,
    off the list that holds it.  The walk is not memory traffic: it stands for
    the series' per-superpageblock counters and free lists (struct
    superpageblock, 08/40), which the model recomputes here instead of keeping
    them up to date on every free-list change.
    """
    plain = untraced(arena)
    z, mm = plain.zoneq, memmap_for(plain)
    nr_pb = len(plain.pageblock)
    blocks: list[tuple[int, int, int]] = []         # (head, order, list) of each free block
    for o in range(_PB, MAX_PAGE_ORDER + 1):
        for mt in range(MIGRATE_PCPTYPES):
            pfn = z[Z_HEAD + MIGRATE_PCPTYPES * o + mt]
            while pfn != NIL:
                blocks.append((pfn, o, mt))
                pfn = mm.next(pfn)
    head = np.full(nr_pb, NIL, dtype=np.int64)
    order = np.zeros(nr_pb, dtype=np.int64)
    list_mt = np.zeros(nr_pb, dtype=np.int64)
    if blocks:                                      # every pageblock of each block, at once
        heads, orders, mts = np.array(blocks, dtype=np.int64).T
        spans = 1 << (orders - _PB)
        first = np.repeat((heads >> _PB) - np.cumsum(spans) + spans, spans)
        covered = first + np.arange(int(spans.sum()))
        head[covered], order[covered], list_mt[covered] = (np.repeat(a, spans) for a in (heads, orders, mts))
    free = head != NIL
    size = superpageblock_pageblocks(nr_pb)
    spb_of = np.arange(nr_pb) // size
    nr_spb = int(spb_of[-1]) + 1
    in_use_foreign = ~free & (np.asarray(plain.pageblock) != MIGRATE_MOVABLE)
    return SpbCensus(
        size=size, free=free, head=head, order=order, list_mt=list_mt,
        nr_free=np.bincount(spb_of, weights=free, minlength=nr_spb).astype(np.int64),
        total=np.bincount(spb_of, minlength=nr_spb).astype(np.int64),
        tainted=np.bincount(spb_of, weights=in_use_foreign, minlength=nr_spb) > 0)


def _fullest_first(candidates: np.ndarray, nr_free: np.ndarray) -> list[int]:
    """Superpageblock indices, fewest free pageblocks first, then by address."""
    idx = np.flatnonzero(candidates)
    return idx[np.lexsort((idx, nr_free[idx]))].tolist()


class PcpBuddySpbPolicy(PcpBuddyPolicy):
    """pcp-buddy whose phase 1 steers claims by superpageblock (module docstring)."""

    name = "pcp-buddy-spb"

    def _claim_new(self, order: int, mt: int) -> list[tuple[int, int]]:
        census = superpageblock_census(self.arena)
        nr_free = census.nr_free
        if mt == MIGRATE_MOVABLE:          # sb_preferred_for_movable()
            clean = _fullest_first(~census.tainted & ~census.empty & (nr_free > 0), nr_free)
            if clean:
                return self._take_pageblock(clean[0], census, mt)
            return super()._claim_new(order, mt)
        adoptable: dict[int, tuple[int, int]] | None = None
        for spb in _fullest_first(census.tainted, nr_free):
            if nr_free[spb]:
                return self._take_pageblock(spb, census, mt)
            if adoptable is None:
                adoptable = self._adoptable(census.size, order, mt)
            if spb in adoptable:
                return self._adopt(*adoptable[spb], mt)
        empty = np.flatnonzero(census.empty)
        if len(empty):
            return self._take_pageblock(int(empty[0]), census, mt)
        return super()._claim_new(order, mt)

    def _take_pageblock(self, spb: int, census: SpbCensus, mt: int) -> list[tuple[int, int]]:
        """The lowest free pageblock of ``spb`` off the zone's free list that holds it,
        now this CPU's."""
        pb = next(p for p in census.pageblocks(spb) if census.free[p])
        self.zone.take_pageblock(int(census.head[pb]), int(census.order[pb]), int(census.list_mt[pb]), pb, mt)
        self._own(pb, mt)
        return [(pb << _PB, _PB)]

    def _adoptable(self, size: int, order: int, mt: int) -> dict[int, tuple[int, int]]:
        """21/40's candidates, by superpageblock: the largest free block on the zone's
        ``mt`` lists below pageblock_order and at least ``order``, the lowest of
        them, in a pageblock of type ``mt`` no CPU owns (so that phase 0 finds
        the rest of it on the ``mt`` lists).  The walk stands for the series'
        per-superpageblock free lists, as the census does: not memory traffic;
        the adoption charges the entry it takes."""
        plain = untraced(self.arena)
        z, mm, owner, label = plain.zoneq, memmap_for(plain), self.owner_of, self.zone.pb
        best: dict[int, tuple[int, int]] = {}
        for o in range(_PB - 1, order - 1, -1):
            lowest: dict[int, int] = {}
            pfn = z[Z_HEAD + MIGRATE_PCPTYPES * o + mt]
            while pfn != NIL:
                spb, pb = (pfn >> _PB) // size, pfn >> _PB
                if spb not in best and not owner[pb] and label[pb] == mt and pfn < lowest.get(spb, pfn + 1):
                    lowest[spb] = pfn
                pfn = mm.next(pfn)
            best.update((spb, (head, o)) for spb, head in lowest.items())
        return best

    def _adopt(self, head: int, order: int, mt: int) -> list[tuple[int, int]]:
        """21/40: a free block of ``mt`` below pageblock_order (``_adoptable()``) off
        the zone; its pageblock becomes this CPU's, and phase 0 recovers the rest
        of it later."""
        zone = self.zone
        self.zone.lines.page(_BUDDY_R, head)            # the superpageblock free list's entry
        zone.take_free_block(head, order, mt)
        pb = head >> _PB
        self._own(pb, mt)
        self.fragmented.add(pb)                    # pcp->owned_blocks: the rest for phase 0
        return [(head, order)]
