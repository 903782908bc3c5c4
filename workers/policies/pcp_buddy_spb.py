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
* The counts are taken from the arena when a refill needs them, not kept
  incrementally (every process drains into the shared zone, and the model
  has no shared superpageblock array): a pageblock is *free* when a free
  buddy block of pageblock_order or more covers it, else it counts by its
  migratetype label.  The series tracks the pageblock's actual contents
  (PB_has_unmovable and friends); here a pageblock labelled unmovable
  counts as unmovable while any of it is in use.  The counts are superpageblock
  metadata, not struct page: reading them is not charged.
* Which free pageblock of the chosen superpageblock: the lowest (the series
  keeps per-superpageblock free lists; taking one is one free-list removal,
  charged as the zone's ``__del_page_from_free_list()``, plus putting the
  other half of an order-10 block back).  Which sub-pageblock block to adopt:
  the largest of at least the requested order (the series walks the free
  list and takes the first it finds).  A whole pageblock taken from another
  type's free list changes its type, as a whole-block claim does, and counts
  as one of the zone's claims.
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

from pcpd.kernel import MIGRATE_MOVABLE, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from pcpd.model.arena import Arena
from pcpd.model.memmap import PG_BUDDY, W_PRIVATE64
from pcpd.model.stats import LINES_R
from pcpd.model.zone import Z_CLAIMS, Z_FREE_PAGES
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
    """The superpageblock counts of 08/40, read from the arena at one moment."""

    size: int                  # pageblocks per superpageblock
    free: np.ndarray           # per pageblock: whole and free in the zone
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
    """Count every superpageblock's free, tainted and clean pageblocks (see the module docstring)."""
    nr_pb = len(arena.pageblock)
    size = superpageblock_pageblocks(nr_pb)
    heads = np.arange(nr_pb, dtype=np.int64) * (PAGEBLOCK_NR_PAGES * 8)
    orders = arena.mem[heads + W_PRIVATE64]
    whole = (arena.mem[heads] & PG_BUDDY).astype(bool) & (orders >= _PB)
    free = whole.copy()
    pairs = nr_pb // 2 * 2                 # an order-10 block covers the next pageblock too
    free[1:pairs:2] |= whole[0:pairs:2] & (orders[0:pairs:2] > _PB)
    spb_of = np.arange(nr_pb) // size
    nr_spb = int(spb_of[-1]) + 1
    in_use_foreign = ~free & (arena.pageblock != MIGRATE_MOVABLE)
    return SpbCensus(
        size=size, free=free,
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
        for spb in _fullest_first(census.tainted, nr_free):
            got = self._take_pageblock(spb, census, mt) if nr_free[spb] else []
            if not got:
                got = self._adopt(spb, census, order, mt)
            if got:
                return got
        empty = np.flatnonzero(census.empty)
        if len(empty):
            return self._take_pageblock(int(empty[0]), census, mt)
        return super()._claim_new(order, mt)

    def _take_pageblock(self, spb: int, census: SpbCensus, mt: int) -> list[tuple[int, int]]:
        """The lowest free pageblock of ``spb`` off the zone's free lists, now this CPU's."""
        zone, mem = self.zone, self.arena.mem
        pb = next(p for p in census.pageblocks(spb) if census.free[p])
        start = pb << _PB
        head = start
        if not (mem[start * 8] & PG_BUDDY and mem[start * 8 + W_PRIVATE64] >= _PB):
            head = start - PAGEBLOCK_NR_PAGES      # the upper half of an order-10 block
        order = int(mem[head * 8 + W_PRIVATE64])
        list_mt = zone.pb[head >> _PB]
        zone._del(head, order, list_mt)
        if order > _PB:                            # expand(): the other half back
            zone._add(head if head != start else start + PAGEBLOCK_NR_PAGES, _PB, list_mt)
        zone.z[Z_FREE_PAGES] -= PAGEBLOCK_NR_PAGES     # account_freepages()
        if list_mt != mt:                          # a whole-block claim changes the type
            zone.z[Z_CLAIMS] += 1
        self._own(pb, mt)
        return [(start, _PB)]

    def _adopt(self, spb: int, census: SpbCensus, order: int, mt: int) -> list[tuple[int, int]]:
        """21/40: the largest free block of ``mt``, below pageblock_order and at least
        ``order``, in a pageblock of ``spb`` no CPU owns; its pageblock becomes
        this CPU's, and phase 0 recovers the rest of it later."""
        pbs = census.pageblocks(spb)
        start = pbs.start << _PB
        heads, orders = self.zone.mm.buddy_heads(start, len(pbs) << _PB)
        pb_of = heads >> _PB
        fit = ((orders >= order) & (orders < _PB) & (self.arena.pageblock[pb_of] == mt)
               & (self.arena.pbowner[pb_of] == 0))
        if not fit.any():
            return []
        idx = np.flatnonzero(fit)
        pick = int(idx[np.lexsort((heads[idx], -orders[idx]))[0]])
        head, o = int(heads[pick]), int(orders[pick])
        zone = self.zone
        self.v[_BUDDY_R] += 1                      # the superpageblock free list's entry
        zone._del(head, o, mt)
        zone.z[Z_FREE_PAGES] -= 1 << o             # account_freepages()
        pb = head >> _PB
        self._own(pb, mt)
        self.fragmented.add(pb)                    # pcp->owned_blocks: the rest for phase 0
        return [(head, o)]
