# cython: wraparound=False, initializedcheck=False
"""The buddy zone: free_area[0..10] x migratetype, linked through the page array.

Every process maps the same zone: list heads, tails and counters live in the
arena's ``zone`` words, the links in the page records (``pcpd.model.memmap``), the
pageblock migratetypes in ``arena.pageblock``.  The entry points take zone->lock
once (``rmqueue_bulk``: one acquisition for a whole PCP refill, as the kernel
does); the methods under "zone->lock held" are for callers that hold it already
(pcp-buddy's refill phases) or that run with every writer stopped (a replay's
start state, crash recovery); those starting with an underscore are the
zone's own.

The zone's words (list heads, tails and counters) are laid out in
``pcpd.model.zonewords``.

zone->flags.  The kernel sets and clears these bits with atomic set_bit() and
clear_bit(); here each flag is one byte of the Z_FLAGS word, 0 or 1, so setting
or clearing one is a single byte store that no other process's update can undo
(a read-modify-write of a word of bits could), and one load of the word tests
them all, as the free path does on every free.  A flag is tested before it is
written, so it is stored only when it changes, and only where the kernel
changes it:

- ZONE_BELOW_HIGH is set by get_page_from_freelist() when an allocation fails
  the high watermark, and cleared by free_frozen_page_commit() after a drain
  once the high watermark is met again (not by decay or drain_all_pages()).
  The model runs get_page_from_freelist()'s check when an allocation reaches
  the zone (a PCP refill, or an order the PCP does not keep), and again, for
  the next allocation, once that refill or buddy allocation has taken its
  pages: a PCP hit does not change NR_FREE_PAGES, so the next allocation on
  any CPU, a hit included, would find what that test finds, and the PCP-hit
  path stays free of shared reads.
- ZONE_RECLAIM_ACTIVE models kswapd.  An allocation that finds free pages at or
  below the low watermark leaves the fast path; the slow path's
  wake_all_kswapds() starts kswapd, whose balance_pgdat() marks the zone
  (set_reclaim_active()).  kswapd reclaims until pgdat_balanced(): free pages
  above the high watermark, then clear_reclaim_active().  The model has no
  kswapd: the flag is set at the allocation that fails the low watermark
  (zone_watermark_fast() at its order; tested as for ZONE_BELOW_HIGH) and
  cleared when pages coming back to the zone (a drain or a buddy free) lift
  it above its high watermark.  Order 0 both ways: kswapd
  falls back to order-0 balancing once it has reclaimed for a high order.

ALLOC_NOFRAGMENT (6bb154504f8b, 5.0: not in the 4.18 era).
alloc_flags_nofragment() sets it on the fast path for ZONE_NORMAL when a DMA32
zone lies below it (x86-64), the zone this model is.
Under it __rmqueue() claims only whole pageblocks of another migratetype
(__rmqueue_claim() from pageblock_order up) and never steals; when the zone has
nothing for the allocation that way, get_page_from_freelist() would try the
DMA32 zone the same way, then walk the zonelist again without the flag.  With
one zone the model goes straight to that retry: the same zone, fragmenting
fallbacks allowed.  The flag is an alloc_flags bit, so it is an argument of
each call; the policy derives it from its era.

A Zone reads and writes zone words, pageblock types and page records through
the arena's memoryviews, not numpy scalars: the buddy path makes dozens of such
accesses per page, and numpy scalar indexing (~100 ns, two to three times a
memoryview's) was about half of its cost (issue 12).  Compiled (pcpd.core),
they are typed memoryviews: C loads and stores.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pcpd.kernel import (
    MAX_PAGE_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
)
from pcpd.model.arena import H_MEMDESC, Arena
from pcpd.model.lines import LineCharges
from pcpd.model.lock import OP_BUDDY_ALLOC, OP_BUDDY_FREE, OP_DRAIN, OP_NONE, OP_REFILL, ZoneLock
from pcpd.model.memmap import Memmap, memdesc_word, memmap_for
from pcpd.model.pagewords import MEMDESC_BUDDY, NIL
from pcpd.model.stats import DATA_W, LINES_R, LINES_W, Counters
from pcpd.model.zonewords import (
    FLAG_AT,
    Z_CLAIMS,
    Z_FREE_PAGES,
    Z_HEAD,
    Z_MANAGED,
    Z_NR_FREE,
    Z_STEALS,
    Z_TAIL,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
    ZONE_BELOW_HIGH,
    ZONE_RECLAIM_ACTIVE,
)

# fallbacks[]: where each migratetype looks when its own lists are empty.
FALLBACKS = {
    MIGRATE_UNMOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),
    MIGRATE_MOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),
    MIGRATE_RECLAIMABLE: (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),
}

# __rmqueue() modes, cached across one rmqueue_bulk().
RMQUEUE_NORMAL, RMQUEUE_CLAIM, RMQUEUE_STEAL = 0, 1, 2

_BW = LINES_W["buddy"]
_BR = LINES_R["buddy"]


def format_zone(arena: Arena, wmark_min: int, wmark_low: int, wmark_high: int,
                memdesc: bool) -> None:
    """Lay out a fresh zone: every page free, pageblocks MOVABLE (as at boot).

    ``memdesc`` records whether pages carry memdesc words (memdesc policies)
    or today's flags (legacy, compound), so the audit can read them.

    Blocks are order 10 where the arena allows and smaller at its end, so
    any whole number of pageblocks works.
    """
    z = arena.zone
    z[:] = 0
    z[Z_HEAD:Z_NR_FREE] = NIL
    z[Z_MANAGED] = arena.pages
    z[Z_WMARK_MIN], z[Z_WMARK_LOW], z[Z_WMARK_HIGH] = wmark_min, wmark_low, wmark_high
    arena.pageblock[:] = MIGRATE_MOVABLE
    arena.mem[:] = 0
    arena.header[H_MEMDESC] = int(memdesc)
    if memdesc:                            # every page starts as free memory
        arena.mem[memdesc_word(arena.record_bytes)::arena.record_bytes // 8] = MEMDESC_BUDDY
    memmap = memmap_for(arena)
    pfn = 0
    while pfn < arena.pages:
        order = MAX_PAGE_ORDER
        while pfn + (1 << order) > arena.pages:
            order -= 1
        _link_tail(z, memmap, pfn, order, MIGRATE_MOVABLE)
        pfn += 1 << order


def _link_tail(z: np.ndarray | memoryview, memmap: Memmap, pfn: int, order: int, mt: int) -> None:
    i = MIGRATE_PCPTYPES * order + mt
    tail = int(z[Z_TAIL + i])
    memmap.add_buddy(pfn, order, NIL, tail)
    if tail == NIL:
        z[Z_HEAD + i] = pfn
    z[Z_TAIL + i] = pfn
    z[Z_NR_FREE + i] += 1
    z[Z_FREE_PAGES] += 1 << order


class Zone:
    """One process's handle on the shared zone.

    Buddy work is charged to ``counters`` through ``lines``, the CPU's
    ``LineCharges`` (lines under the ``buddy`` cause; an 8-byte page's list
    links as free memory): each buddy step states the records it loads and
    stores, and every method a caller uses is an operation (``with
    self.lines.operation():``), which charges each line once; inside a
    policy's operation (a refill, a drain), once for the whole of that.  The
    lock records its own profile there too.
    """

    def __init__(self, arena: Arena, lock: ZoneLock, counters: Counters) -> None:
        self.arena = arena
        self.z = arena.zoneq
        self._flag = arena.zoneb            # zone->flags' bytes: self._flag[FLAG_AT + flag]
        self.pb = arena.pageblockq
        self.mm = memmap_for(arena)
        self.pages = arena.pages
        self.lock = lock
        self.v = counters.v
        self.lines = LineCharges(counters, arena.record_bytes, arena.pages, len(arena.descq))
        # zone work runs inside an operation (every method a caller may use is, or
        # is part of, one), so the buddy's steps mark their lines there: struct page
        # line pfn >> shift, free memory one per page
        self._shift = self.lines.line_shift
        # an 8-byte page keeps free-list links in the free memory, not the memmap
        self._links_in_free_memory = arena.record_bytes == 8
        # a 16-byte free head keeps its prev link in the word with its order and
        # head bit (Memmap16): setting the prev link loads that word first
        self._prev_link_loads = arena.record_bytes == 16
        self._rmqm = RMQUEUE_NORMAL
        self._op = OP_NONE

    def locked(self, op: int) -> Zone:
        """``with zone.locked(op):`` holds zone->lock for ``op``.  The operation's lines
        are charged on taking it and before releasing it (``LineCharges.settle``), so
        the hold is charged the lines first touched under it, while it is held.  (The
        zone is its own context manager: a generator's would cost more than a refill
        of a few pages.)"""
        self._op = op
        return self

    def __enter__(self) -> Zone:
        self.lines.settle()
        self.lock.acquire(self._op)
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.lines.settle()
        self.lock.release()

    # -- accounting and watermarks ----------------------------------------
    @property
    def free_pages(self) -> int:
        return self.z[Z_FREE_PAGES]

    def watermark(self, which: int) -> int:
        return self.z[which]

    def watermark_ok(self, order: int, mark: int) -> bool:
        """__zone_watermark_ok() without reserves: PCP pages are invisible here."""
        free = self.z[Z_FREE_PAGES] - ((1 << order) - 1)
        if free <= mark:
            return False
        if order == 0:
            return True
        for o in range(order, MAX_PAGE_ORDER + 1):
            if any(self.z[Z_NR_FREE + MIGRATE_PCPTYPES * o:Z_NR_FREE + MIGRATE_PCPTYPES * (o + 1)]):
                return True
        return False

    # -- zone->flags (see the module docstring) ------------------------------
    def test_flag(self, flag: int) -> bool:
        """test_bit(flag, &zone->flags)"""
        return bool(self._flag[FLAG_AT + flag])

    def _set_flag(self, flag: int, on: bool) -> None:
        """set_bit() / clear_bit(): one byte store."""
        self._flag[FLAG_AT + flag] = on

    @property
    def below_high(self) -> bool:
        return self.test_flag(ZONE_BELOW_HIGH)

    @property
    def reclaim_active(self) -> bool:
        """kswapd is reclaiming."""
        return self.test_flag(ZONE_RECLAIM_ACTIVE)

    def check_watermarks(self, order: int) -> None:
        """get_page_from_freelist()'s watermark tests for one allocation, before rmqueue().

        The high watermark sets ZONE_BELOW_HIGH (detected here to keep the free
        path cheap); the low watermark failing, zone_watermark_fast(order, low)
        as the fast path's ALLOC_WMARK_LOW, wakes kswapd (ZONE_RECLAIM_ACTIVE).
        """
        if not self.test_flag(ZONE_BELOW_HIGH) and not self.watermark_ok(order, self.z[Z_WMARK_HIGH]):
            self._set_flag(ZONE_BELOW_HIGH, True)
        if not self.test_flag(ZONE_RECLAIM_ACTIVE) and not self.watermark_ok(order, self.z[Z_WMARK_LOW]):
            self._set_flag(ZONE_RECLAIM_ACTIVE, True)      # wake_all_kswapds() -> set_reclaim_active()

    def check_next_watermarks(self) -> None:
        """The next allocation's get_page_from_freelist() tests (order 0), run once pages
        have left the zone: a PCP hit would find the same NR_FREE_PAGES and must not
        read the zone (see the module docstring)."""
        self.check_watermarks(0)

    def clear_below_high(self) -> None:
        """free_frozen_page_commit() after its drain: clear ZONE_BELOW_HIGH once
        zone_watermark_ok() against the high watermark passes again."""
        if self.test_flag(ZONE_BELOW_HIGH) and self.watermark_ok(0, self.z[Z_WMARK_HIGH]):
            self._set_flag(ZONE_BELOW_HIGH, False)

    def _kswapd_balanced(self) -> None:
        """balance_pgdat() stops once pgdat_balanced(): clear_reclaim_active()."""
        if self.test_flag(ZONE_RECLAIM_ACTIVE) and self.watermark_ok(0, self.z[Z_WMARK_HIGH]):
            self._set_flag(ZONE_RECLAIM_ACTIVE, False)

    def flags_from_watermarks(self) -> None:
        """Both flags as the zone's free pages say now (a zone set up mid-life, as a replay's)."""
        self._set_flag(ZONE_BELOW_HIGH, not self.watermark_ok(0, self.z[Z_WMARK_HIGH]))
        self._set_flag(ZONE_RECLAIM_ACTIVE, not self.watermark_ok(0, self.z[Z_WMARK_LOW]))

    def pageblock_mt(self, pfn: int) -> int:
        """get_pfnblock_migratetype()"""
        return self.pb[pfn >> PAGEBLOCK_ORDER]

    # -- free lists (zone->lock held) -------------------------------------
    # The lines of a free-list step: the block's own record (its links too in the
    # 64-, 32- and 16-byte pages; an 8-byte page's are in its free memory), and
    # each list neighbour whose link it rewrites.
    def _link_stored(self, pfn: int, prev: bool) -> None:
        """A free-list neighbour's next (prev: its prev) link now points elsewhere."""
        if self._links_in_free_memory:
            self.lines.record(DATA_W, pfn)
        else:
            line = pfn >> self._shift
            if prev and self._prev_link_loads:
                self.lines.record(_BR, line)
            self.lines.record(_BW, line)

    def _add(self, pfn: int, order: int, mt: int, to_tail: bool = False) -> None:
        """__add_to_free_list(): the caller accounts NR_FREE_PAGES."""
        i = MIGRATE_PCPTYPES * order + mt
        if to_tail:
            neighbour = self.z[Z_TAIL + i]
            self.mm.add_buddy(pfn, order, NIL, neighbour)
            if neighbour == NIL:
                self.z[Z_HEAD + i] = pfn
            self.z[Z_TAIL + i] = pfn
        else:
            neighbour = self.z[Z_HEAD + i]
            self.mm.add_buddy(pfn, order, neighbour, NIL)
            if neighbour == NIL:
                self.z[Z_TAIL + i] = pfn
            self.z[Z_HEAD + i] = pfn
        self.z[Z_NR_FREE + i] += 1
        self.lines.record(_BW, pfn >> self._shift)
        if self._links_in_free_memory:       # add_buddy() also wrote the block's own links
            self.lines.record(DATA_W, pfn)
        if neighbour != NIL:                 # the old head's prev (tail's next) link to pfn
            self._link_stored(neighbour, not to_tail)

    def _del(self, pfn: int, order: int, mt: int) -> None:
        """__del_page_from_free_list(): mt is the list's type, which is always the
        block's pageblock type (free pages sit on their pageblock's list); the
        caller accounts NR_FREE_PAGES."""
        i, line = MIGRATE_PCPTYPES * order + mt, pfn >> self._shift
        nxt, prev = self.mm.next(pfn), self.mm.prev(pfn)
        self.mm.del_buddy(pfn, nxt, prev)     # neighbours relinked in the page array
        if self._links_in_free_memory:
            self.lines.record(_BW, line)
        else:                                 # the block's own links, read and rewritten
            self.lines.updated(_BR, _BW, line)
        if prev == NIL:
            self.z[Z_HEAD + i] = nxt
        else:
            self._link_stored(prev, False)
        if nxt == NIL:
            self.z[Z_TAIL + i] = prev
        else:
            self._link_stored(nxt, True)
        self.z[Z_NR_FREE + i] -= 1

    def _expand(self, pfn: int, low: int, high: int, mt: int) -> None:
        """expand(): upper halves go back to the heads of the lower lists."""
        while high > low:
            high -= 1
            self._add(pfn + (1 << high), high, mt)

    def _free_one_page(self, pfn: int, order: int, mt: int) -> None:
        """__free_one_page(): merge with free buddies up to MAX_PAGE_ORDER."""
        mm, pages, lines, shift = self.mm, self.pages, self.lines, self._shift
        self.z[Z_FREE_PAGES] += 1 << order          # account_freepages()
        while order < MAX_PAGE_ORDER:
            buddy = pfn ^ (1 << order)
            if buddy >= pages:
                break
            lines.record(_BR, buddy >> shift)
            if mm.buddy_order(buddy) != order:      # page_is_buddy()
                break
            buddy_mt = self.pb[buddy >> PAGEBLOCK_ORDER]
            self._del(buddy, order, buddy_mt)
            if order >= PAGEBLOCK_ORDER and buddy_mt != mt:
                self.pb[buddy >> PAGEBLOCK_ORDER] = mt   # every pcpd type is mergeable
            pfn &= buddy
            order += 1
        self._add(pfn, order, mt, self._buddy_merge_likely(pfn, order))

    def _buddy_merge_likely(self, pfn: int, order: int) -> bool:
        """buddy_merge_likely(): keep a block unused if its buddy's buddy is free."""
        if order >= MAX_PAGE_ORDER - 1:
            return False
        higher = pfn & ~(1 << order)
        higher_buddy = higher ^ (1 << (order + 1))
        if higher_buddy >= self.pages:
            return False
        self.lines.record(_BR, higher_buddy >> self._shift)
        return self.mm.buddy_order(higher_buddy) == order + 1

    def _rmqueue_smallest(self, order: int, mt: int) -> int:
        """__rmqueue_smallest(): head of the smallest non-empty list >= order."""
        for cur in range(order, MAX_PAGE_ORDER + 1):
            pfn = self.z[Z_HEAD + MIGRATE_PCPTYPES * cur + mt]
            if pfn != NIL:                          # page_del_and_expand()
                self._del(pfn, cur, mt)
                self._expand(pfn, order, cur, mt)
                self.z[Z_FREE_PAGES] -= 1 << order  # account_freepages()
                return pfn
        return NIL

    def _find_suitable_fallback(self, cur: int, mt: int, claimable: bool) -> int:
        """find_suitable_fallback(): -1 nothing here, -2 stop claiming."""
        base = Z_NR_FREE + MIGRATE_PCPTYPES * cur
        if not any(self.z[base:base + MIGRATE_PCPTYPES]):
            return -1
        if claimable and not _should_try_claim_block(cur, mt):
            return -2
        for fmt in FALLBACKS[mt]:
            if self.z[Z_HEAD + MIGRATE_PCPTYPES * cur + fmt] != NIL:
                return fmt
        return -1

    def _rmqueue_claim(self, order: int, mt: int, nofragment: bool) -> int:
        """__rmqueue_claim(): largest fallback block first, try to own its pageblock.

        Under ALLOC_NOFRAGMENT only whole pageblocks are taken from another type.
        """
        min_order = PAGEBLOCK_ORDER if nofragment and order < PAGEBLOCK_ORDER else order
        for cur in range(MAX_PAGE_ORDER, min_order - 1, -1):
            fmt = self._find_suitable_fallback(cur, mt, claimable=True)
            if fmt == -1:
                continue
            if fmt == -2:
                break
            pfn = self.z[Z_HEAD + MIGRATE_PCPTYPES * cur + fmt]
            got = self._try_to_claim_block(pfn, cur, order, mt, fmt)
            if got != NIL:
                self.z[Z_CLAIMS] += 1
                return got
        return NIL

    def _try_to_claim_block(self, pfn: int, cur: int, order: int, mt: int, block_mt: int) -> int:
        """try_to_claim_block(): whole pageblocks, or the 256-of-512 rule."""
        if cur >= PAGEBLOCK_ORDER:
            self._del(pfn, cur, block_mt)
            first = pfn >> PAGEBLOCK_ORDER
            self.arena.pageblock[first:first + (1 << (cur - PAGEBLOCK_ORDER))] = mt  # change_pageblock_range()
            self._expand(pfn, order, cur, mt)
            self.z[Z_FREE_PAGES] -= 1 << order          # account_freepages()
            return pfn
        start = pfn & ~(PAGEBLOCK_NR_PAGES - 1)
        heads, orders = self.mm.buddy_heads(start, PAGEBLOCK_NR_PAGES)
        self.lines.pages(_BR, start, PAGEBLOCK_NR_PAGES)
        free = int(sum(1 << int(o) for o in orders))
        if mt == MIGRATE_MOVABLE:
            alike = self.mm.movable_pages(start, PAGEBLOCK_NR_PAGES)
        elif block_mt == MIGRATE_MOVABLE:
            alike = PAGEBLOCK_NR_PAGES - free - self.mm.movable_pages(start, PAGEBLOCK_NR_PAGES)
        else:
            alike = 0
        if free + alike < PAGEBLOCK_NR_PAGES // 2:
            return NIL
        # __move_freepages_block(): every free block of the pageblock to mt's lists
        for head, o in zip(heads.tolist(), orders.tolist()):
            self._del(head, o, block_mt)
        self.pb[start >> PAGEBLOCK_ORDER] = mt
        for head, o in zip(heads.tolist(), orders.tolist()):
            self._add(head, o, mt, to_tail=True)
        return self._rmqueue_smallest(order, mt)

    def _rmqueue_steal(self, order: int, mt: int) -> int:
        """__rmqueue_steal(): smallest fallback block, pageblock type unchanged."""
        for cur in range(order, MAX_PAGE_ORDER + 1):
            fmt = self._find_suitable_fallback(cur, mt, claimable=False)
            if fmt < 0:
                continue
            pfn = self.z[Z_HEAD + MIGRATE_PCPTYPES * cur + fmt]
            self._del(pfn, cur, fmt)                   # page_del_and_expand()
            self._expand(pfn, order, cur, fmt)
            self.z[Z_FREE_PAGES] -= 1 << order          # account_freepages()
            self.z[Z_STEALS] += 1
            return pfn
        return NIL

    def _rmqueue(self, order: int, mt: int, nofragment: bool) -> int:
        """__rmqueue(): NORMAL, then CLAIM, then STEAL (never under ALLOC_NOFRAGMENT).
        The mode, ``_rmqm``, sticks for a refill: rmqueue_bulk()'s rmqm, which it hands
        __rmqueue() by pointer; one block alone starts from RMQUEUE_NORMAL."""
        if self._rmqm == RMQUEUE_NORMAL:
            pfn = self._rmqueue_smallest(order, mt)
            if pfn != NIL:
                return pfn
        if self._rmqm <= RMQUEUE_CLAIM:
            pfn = self._rmqueue_claim(order, mt, nofragment)
            if pfn != NIL:
                self._rmqm = RMQUEUE_NORMAL
                return pfn
        if nofragment:
            return NIL
        pfn = self._rmqueue_steal(order, mt)
        if pfn != NIL:
            self._rmqm = RMQUEUE_STEAL
        return pfn

    def _rmqueue_count(self, order: int, mt: int, count: int, nofragment: bool) -> list[int]:
        """rmqueue_bulk()'s loop: __rmqueue() up to count times, its mode cached."""
        out: list[int] = []
        self._rmqm = RMQUEUE_NORMAL
        for _ in range(count):
            pfn = self._rmqueue(order, mt, nofragment)
            if pfn == NIL:
                break
            out.append(pfn)
        return out

    # -- zone->lock held (see the module docstring) --------------------------
    def rmqueue(self, order: int, mt: int, count: int, nofragment: bool) -> list[int]:
        """Up to count blocks by __rmqueue(), under ALLOC_NOFRAGMENT first and, if that
        found none, again without it (get_page_from_freelist()'s retry)."""
        with self.lines.operation():
            out = self._rmqueue_count(order, mt, count, nofragment)
            if not out and nofragment:
                out = self._rmqueue_count(order, mt, count, False)
            return out

    def take_free_block(self, pfn: int, order: int, mt: int) -> None:
        """del_page_from_free_list(): a given free block off its list, and
        account_freepages(); mt is its pageblock's type."""
        with self.lines.operation():
            self._del(pfn, order, mt)
            self.z[Z_FREE_PAGES] -= 1 << order

    def put_free_block(self, pfn: int, order: int, mt: int, to_tail: bool = False) -> None:
        """add_to_free_list() and account_freepages(): no merging (a block whose
        buddies are not free, or a start state laid out block by block)."""
        with self.lines.operation():
            self._add(pfn, order, mt, to_tail)
            self.z[Z_FREE_PAGES] += 1 << order

    def free_blocks(self, order: int, mt: int) -> Iterator[int]:
        """The free blocks on free_area[order].free_list[mt], first to last; the caller
        may take the block it was given before asking for the next."""
        pfn = self.z[Z_HEAD + MIGRATE_PCPTYPES * order + mt]
        while pfn != NIL:
            nxt = self.mm.next(pfn)
            if not self._links_in_free_memory:
                self.lines.page(_BR, pfn)
            yield pfn
            pfn = nxt

    def take_pageblock(self, head: int, order: int, mt: int, pb: int, new_mt: int) -> None:
        """take_page_off_buddy() for pageblock ``pb`` of the free block ``head`` of
        ``order`` on the ``mt`` list (a replay's start state may file a block under
        another type than its pageblock's): break_down_buddy_pages() returns the
        other halves to that list, and the pageblock becomes ``new_mt`` (a
        whole-block claim when that is another type)."""
        with self.lines.operation():
            start = pb << PAGEBLOCK_ORDER
            self._del(head, order, mt)
            while order > PAGEBLOCK_ORDER:
                order -= 1
                half = 1 << order
                if start >= head + half:
                    self._add(head, order, mt)
                    head += half
                else:
                    self._add(head + half, order, mt)
            self.z[Z_FREE_PAGES] -= PAGEBLOCK_NR_PAGES     # account_freepages()
            if mt != new_mt:
                self.z[Z_CLAIMS] += 1
            self.pb[pb] = new_mt

    def split_large_buddy(self, pfn: int, order: int) -> None:
        """split_large_buddy(): pageblock-sized pieces above order 9, each merged
        with its free buddies and filed under its pageblock's type."""
        with self.lines.operation():
            if order <= PAGEBLOCK_ORDER:
                self._free_one_page(pfn, order, self.pageblock_mt(pfn))
                return
            for piece in range(pfn, pfn + (1 << order), PAGEBLOCK_NR_PAGES):
                self._free_one_page(piece, PAGEBLOCK_ORDER, self.pageblock_mt(piece))

    # -- entry points (take zone->lock) -----------------------------------
    def rmqueue_bulk(self, order: int, mt: int, count: int, nofragment: bool) -> list[int]:
        """rmqueue_bulk(): up to count blocks under one zone->lock acquisition, with
        the caller's ALLOC_NOFRAGMENT (the retry without it is the caller's: it
        sizes the batch again); then the next allocation's watermark tests."""
        with self.lines.operation():
            with self.locked(OP_REFILL):
                out = self._rmqueue_count(order, mt, count, nofragment)
            self.check_next_watermarks()
            return out

    def rmqueue_buddy(self, order: int, mt: int, nofragment: bool) -> int:
        """get_page_from_freelist() for a block the PCP does not serve: the watermark
        flags, then rmqueue_buddy() (one block per zone->lock acquisition), with
        ALLOC_NOFRAGMENT first and again without it if that found nothing."""
        self.check_watermarks(order)
        pfn = self.rmqueue_buddy_once(order, mt, nofragment)
        if pfn == NIL and nofragment:
            self.check_watermarks(order)           # the retry walks the zonelist again
            pfn = self.rmqueue_buddy_once(order, mt, False)
        self.check_next_watermarks()
        return pfn

    def rmqueue_buddy_once(self, order: int, mt: int, nofragment: bool) -> int:
        """rmqueue_buddy(): one __rmqueue() under its own zone->lock acquisition."""
        with self.lines.operation():
            with self.locked(OP_BUDDY_ALLOC):
                self._rmqm = RMQUEUE_NORMAL
                return self._rmqueue(order, mt, nofragment)

    def free_pcppages_bulk(self, runs: list[tuple[int, list[int]]]) -> None:
        """free_pcppages_bulk(): give drained blocks back under one acquisition, run by
        run: (order, pfns) from one PCP list each.

        The migratetype is re-read from the pageblock at drain time, as newer
        kernels do.
        """
        with self.lines.operation():
            with self.locked(OP_DRAIN):
                for order, pfns in runs:
                    self._free_run(order, pfns)
            self._kswapd_balanced()

    def _free_run(self, order: int, pfns: list[int]) -> None:
        """free_pcppages_bulk()'s inner loop: one list's blocks to __free_one_page()."""
        for pfn in pfns:
            self._free_one_page(pfn, order, self.pb[pfn >> PAGEBLOCK_ORDER])

    def free_one_page(self, pfn: int, order: int) -> None:
        """free_one_page(): one block straight to the buddy."""
        with self.lines.operation():
            with self.locked(OP_BUDDY_FREE):
                self.split_large_buddy(pfn, order)
            self._kswapd_balanced()


def _should_try_claim_block(order: int, mt: int) -> bool:
    """should_try_claim_block(): movable requests only claim from order >= 4."""
    if order >= PAGEBLOCK_ORDER // 2:
        return True
    return mt in (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE)
