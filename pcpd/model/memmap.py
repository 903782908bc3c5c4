# cython: wraparound=False, initializedcheck=False
"""``struct page`` layouts for each record size, and the buddy's view of a page.

Record sizes follow the memdesc plan (reference section 6.1).  Word offsets
are in int64 words within one page's record:

    64 B, today (include/linux/mm_types.h, section 5.1):
        w0 flags | w1 lru.next / buddy_list.next / pcp_list.next / compound_head
        w2 lru.prev ... | w3 mapping | w4 index | w5 private (buddy order)
        w6 _mapcount/page_type + _refcount (refcount kept whole here) | w7 memcg_data
    32 B, "2025 world" (Memdescs/Path, section 6.3):
        w0 flags (buddy order in FLAG_ORDER bits) | w1 buddy/pcp next, or memdesc
        w2 buddy/pcp prev, or private | w3 _refcount
    16 B, buddy-embedded option (Wilcox, Jan 2024, section 6.5):
        w0 memdesc; free head: (next+1) << 4 | MEMDESC_BUDDY
        w1 free head: (prev+1) << 5 | BUDDY_HEAD | order
    8 B, end goal: w0 memdesc only; free head: BUDDY_HEAD8 | order << 4 | MEMDESC_BUDDY.
        A free block's list links live in the block's own memory
        (arena ``freelinks``), as a free-list embedded in free memory would.

Flag bits of the 64/32-byte layouts below PG_* are kernel flags or page
types; FLAG_CPU/FLAG_ORDER/FLAG_TYPE are pcpd bookkeeping that lets the audit
and crash recovery classify every page from the array alone (the kernel keeps
the order in page[1] or private, and knows the owner CPU from which list a
page is on).

Callers charge the cachelines these accessors touch (``pcpd.model.lines``).
The tracing mode (``pcpd.model.linetrace``) hands a Memmap built over a
``TracedArena`` views that record the lines each access touches, so the
charges can be checked against them; a Memmap over a plain arena is the same
code over the plain views.  Tracing runs on the
interpreted core (``pcpd.core``): compiled, ``q`` and ``linksq`` are typed
memoryviews, which cannot record.

Scalar accessors (the buddy's per-block work under zone->lock) go through the
arena's memoryviews (``q``, ``linksq``): plain ints interpreted (a numpy
scalar index costs two to three times as much), C loads and stores compiled.
Range work (``buddy_heads``, ``movable_pages``) uses the numpy views.
"""

from __future__ import annotations

import numpy as np

from pcpd.model.arena import DESC_WORDS, H_MEMDESC, Arena
from pcpd.model.pagewords import (
    BUDDY_HEAD,
    BUDDY_HEAD8,
    FLAG_ORDER_SHIFT,
    MEMDESC_ANON,
    MEMDESC_BUDDY,
    MEMDESC_FILE,
    NIL,
    PG_ALLOC,
    PG_BUDDY,
    PG_LRU,
    W_LINK,
    W_PREV,
    W_PRIVATE64,
)
from pcpd.model.slab import DS_INUSE


class Memmap:
    """The buddy allocator's accessors to page records: PageBuddy, order, links.

    Subclasses implement one record size.
    """

    record_bytes = 0                # each layout sets its own
    words = 0

    def __init__(self, arena: Arena) -> None:
        self.mem = arena.mem
        self.links = arena.freelinks
        self.q = arena.memq                 # the same words, for scalar access
        self.linksq = arena.freelinksq
        self.descs = arena.descs
        self.w = self.words
        self.described = bool(arena.header[H_MEMDESC])     # memdesc words, not flags

    # Subclass interface -------------------------------------------------
    def buddy_order(self, pfn: int) -> int:
        """Order of the free block headed at pfn, or -1 (page_is_buddy())."""
        raise NotImplementedError

    def set_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        raise NotImplementedError

    def clear_buddy(self, pfn: int) -> None:
        raise NotImplementedError

    # The free-list operations: the page-side half of __add_to_free_list() and
    # __del_page_from_free_list().  Each is set_buddy()/clear_buddy() plus the
    # neighbours' links (list_add(), list_del()) in one body, since a Python call
    # costs about as much as the stores it makes; test_memmap checks them
    # against the accessors for every layout.
    def add_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        """set_buddy(), then point nxt's prev and prev's next (those not NIL) at pfn."""
        raise NotImplementedError

    def del_buddy(self, pfn: int, nxt: int, prev: int) -> None:
        """clear_buddy(), then point nxt's prev and prev's next (those not NIL) past pfn:
        nxt and prev are pfn's links, which the caller read (next(), prev())."""
        raise NotImplementedError

    def next(self, pfn: int) -> int:
        raise NotImplementedError

    def prev(self, pfn: int) -> int:
        raise NotImplementedError

    def set_next(self, pfn: int, value: int) -> None:
        raise NotImplementedError

    def set_prev(self, pfn: int, value: int) -> None:
        raise NotImplementedError

    def buddy_heads(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(pfns, orders) of the free blocks headed inside [start, start+count)."""
        raise NotImplementedError

    def movable_pages(self, start: int, count: int) -> int:
        """Allocated pages in the range that belong to movable (LRU) memory.

        The "alike" pages of try_to_claim_block(): pages of anon or file folios
        in use (not cached on a PCP, not in flight).
        """
        if not self.described:
            return self._movable_flagged(start, count)
        w, mw = self.w, memdesc_word(self.record_bytes)
        word = self.mem[start * w + mw:(start + count) * w:w].copy()
        heads, _ = self.buddy_heads(start, count)
        word[heads - start] = MEMDESC_BUDDY          # a free head's word may hold links
        types = word & 0xF
        idx = word[(types == MEMDESC_ANON) | (types == MEMDESC_FILE)] >> 4
        state = (self.descs[idx * DESC_WORDS] >> 4) & 0xF
        return int((state == DS_INUSE).sum())

    def _movable_flagged(self, start: int, count: int) -> int:
        raise NotImplementedError


class Memmap64(Memmap):
    """Today's 64-byte struct page; also used by the 32-byte stage with other offsets."""

    record_bytes, words = 64, 8
    w_private = W_PRIVATE64

    def buddy_order(self, pfn: int) -> int:
        base = pfn * 8
        return self.q[base + W_PRIVATE64] if self.q[base] & PG_BUDDY else -1

    def set_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        # set_buddy_order(): PageBuddy page type + private = order, plus the list links
        base = pfn * 8
        self.q[base] = PG_BUDDY
        self.q[base + W_LINK] = nxt
        self.q[base + W_PREV] = prev
        self.q[base + W_PRIVATE64] = order

    def clear_buddy(self, pfn: int) -> None:
        base = pfn * 8
        self.q[base] = 0
        self.q[base + W_LINK] = 0           # no stale link reads as a memdesc word
        self.q[base + W_PRIVATE64] = 0

    def add_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        base = pfn * 8
        self.q[base] = PG_BUDDY
        self.q[base + W_LINK] = nxt
        self.q[base + W_PREV] = prev
        self.q[base + W_PRIVATE64] = order
        if nxt != NIL:
            self.q[nxt * 8 + W_PREV] = pfn
        if prev != NIL:
            self.q[prev * 8 + W_LINK] = pfn

    def del_buddy(self, pfn: int, nxt: int, prev: int) -> None:
        base = pfn * 8
        if nxt != NIL:
            self.q[nxt * 8 + W_PREV] = prev
        if prev != NIL:
            self.q[prev * 8 + W_LINK] = nxt
        self.q[base] = 0
        self.q[base + W_LINK] = 0
        self.q[base + W_PRIVATE64] = 0

    def next(self, pfn: int) -> int:
        return self.q[pfn * self.w + W_LINK]

    def prev(self, pfn: int) -> int:
        return self.q[pfn * self.w + W_PREV]

    def set_next(self, pfn: int, value: int) -> None:
        self.q[pfn * self.w + W_LINK] = value

    def set_prev(self, pfn: int, value: int) -> None:
        self.q[pfn * self.w + W_PREV] = value

    def _flags(self, start: int, count: int) -> np.ndarray:
        return self.mem[start * self.w:(start + count) * self.w:self.w]

    def buddy_heads(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        flags = self._flags(start, count)
        idx = np.flatnonzero(flags & PG_BUDDY)
        pfns = idx + start
        orders = self.mem[pfns * self.w + self.w_private]
        return pfns, orders

    def _movable_flagged(self, start: int, count: int) -> int:
        flags = self._flags(start, count)
        # both bits set; (flags & PG_ALLOC) & bool would mask bit 6 with 1 and match nothing
        heads = np.flatnonzero((flags & (PG_ALLOC | PG_LRU)) == PG_ALLOC | PG_LRU)
        orders = (flags[heads] >> FLAG_ORDER_SHIFT) & 0xF
        # a block headed here may reach past the range: clip to it
        ends = np.minimum(heads + (1 << orders), count)
        return int((ends - heads).sum())


class Memmap32(Memmap64):
    """The 32-byte stage: flags, a two-word union, refcount (section 6.3)."""

    record_bytes, words = 32, 4

    def buddy_order(self, pfn: int) -> int:
        f = self.q[pfn * 4]
        return (f >> FLAG_ORDER_SHIFT) & 0xF if f & PG_BUDDY else -1

    def set_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        base = pfn * 4
        self.q[base] = PG_BUDDY | (order << FLAG_ORDER_SHIFT)
        self.q[base + W_LINK] = nxt
        self.q[base + W_PREV] = prev

    def clear_buddy(self, pfn: int) -> None:
        base = pfn * 4
        self.q[base] = 0
        self.q[base + W_LINK] = MEMDESC_BUDDY    # the union now reads as a memdesc word

    def add_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        base = pfn * 4
        self.q[base] = PG_BUDDY | (order << FLAG_ORDER_SHIFT)
        self.q[base + W_LINK] = nxt
        self.q[base + W_PREV] = prev
        if nxt != NIL:
            self.q[nxt * 4 + W_PREV] = pfn
        if prev != NIL:
            self.q[prev * 4 + W_LINK] = pfn

    def del_buddy(self, pfn: int, nxt: int, prev: int) -> None:
        base = pfn * 4
        if nxt != NIL:
            self.q[nxt * 4 + W_PREV] = prev
        if prev != NIL:
            self.q[prev * 4 + W_LINK] = nxt
        self.q[base] = 0
        self.q[base + W_LINK] = MEMDESC_BUDDY

    def buddy_heads(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        flags = self._flags(start, count)
        idx = np.flatnonzero(flags & PG_BUDDY)
        return idx + start, (flags[idx] >> FLAG_ORDER_SHIFT) & 0xF



class Memmap16(Memmap):
    """The 16-byte buddy-embedded page: a free head packs its links and order."""

    record_bytes, words = 16, 2

    def buddy_order(self, pfn: int) -> int:
        base = pfn * 2
        w1 = self.q[base + 1]
        return w1 & 0xF if w1 & BUDDY_HEAD and self.q[base] & 0xF == MEMDESC_BUDDY else -1

    def set_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        base = pfn * 2
        self.q[base] = ((nxt + 1) << 4) | MEMDESC_BUDDY
        self.q[base + 1] = ((prev + 1) << 5) | BUDDY_HEAD | order

    def clear_buddy(self, pfn: int) -> None:
        base = pfn * 2
        self.q[base] = MEMDESC_BUDDY
        self.q[base + 1] = 0

    def add_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        base = pfn * 2
        self.q[base] = ((nxt + 1) << 4) | MEMDESC_BUDDY
        self.q[base + 1] = ((prev + 1) << 5) | BUDDY_HEAD | order
        if nxt != NIL:                      # nxt's prev; its head bits and order stay
            i = nxt * 2 + 1
            self.q[i] = ((pfn + 1) << 5) | (self.q[i] & 0x1F)
        if prev != NIL:
            self.q[prev * 2] = ((pfn + 1) << 4) | MEMDESC_BUDDY

    def del_buddy(self, pfn: int, nxt: int, prev: int) -> None:
        base = pfn * 2
        if nxt != NIL:
            i = nxt * 2 + 1
            self.q[i] = ((prev + 1) << 5) | (self.q[i] & 0x1F)
        if prev != NIL:
            self.q[prev * 2] = ((nxt + 1) << 4) | MEMDESC_BUDDY
        self.q[base] = MEMDESC_BUDDY
        self.q[base + 1] = 0

    def next(self, pfn: int) -> int:
        return (self.q[pfn * 2] >> 4) - 1

    def prev(self, pfn: int) -> int:
        return (self.q[pfn * 2 + 1] >> 5) - 1

    def set_next(self, pfn: int, value: int) -> None:
        self.q[pfn * 2] = ((value + 1) << 4) | MEMDESC_BUDDY

    def set_prev(self, pfn: int, value: int) -> None:
        i = pfn * 2 + 1
        self.q[i] = ((value + 1) << 5) | (self.q[i] & 0x1F)

    def buddy_heads(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        w0 = self.mem[start * 2:(start + count) * 2:2]
        w1 = self.mem[start * 2 + 1:(start + count) * 2:2]
        idx = np.flatnonzero(((w0 & 0xF) == MEMDESC_BUDDY) & ((w1 & BUDDY_HEAD) != 0))
        return idx + start, w1[idx] & 0xF



class Memmap8(Memmap):
    """The 8-byte page: only the memdesc word; free-list links in the free memory."""

    record_bytes, words = 8, 1

    def buddy_order(self, pfn: int) -> int:
        w = self.q[pfn]
        return (w >> 4) & 0xF if w & 0xF == MEMDESC_BUDDY and w & BUDDY_HEAD8 else -1

    def set_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        self.q[pfn] = BUDDY_HEAD8 | (order << 4) | MEMDESC_BUDDY
        self.linksq[pfn * 2] = nxt
        self.linksq[pfn * 2 + 1] = prev

    def clear_buddy(self, pfn: int) -> None:
        self.q[pfn] = MEMDESC_BUDDY

    def add_buddy(self, pfn: int, order: int, nxt: int, prev: int) -> None:
        self.q[pfn] = BUDDY_HEAD8 | (order << 4) | MEMDESC_BUDDY
        self.linksq[pfn * 2] = nxt
        self.linksq[pfn * 2 + 1] = prev
        if nxt != NIL:
            self.linksq[nxt * 2 + 1] = pfn
        if prev != NIL:
            self.linksq[prev * 2] = pfn

    def del_buddy(self, pfn: int, nxt: int, prev: int) -> None:
        if nxt != NIL:
            self.linksq[nxt * 2 + 1] = prev
        if prev != NIL:
            self.linksq[prev * 2] = nxt
        self.q[pfn] = MEMDESC_BUDDY

    def next(self, pfn: int) -> int:
        return self.linksq[pfn * 2]

    def prev(self, pfn: int) -> int:
        return self.linksq[pfn * 2 + 1]

    def set_next(self, pfn: int, value: int) -> None:
        self.linksq[pfn * 2] = value

    def set_prev(self, pfn: int, value: int) -> None:
        self.linksq[pfn * 2 + 1] = value

    def buddy_heads(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.mem[start:start + count]
        idx = np.flatnonzero(((w & 0xF) == MEMDESC_BUDDY) & ((w & BUDDY_HEAD8) != 0))
        return idx + start, (w[idx] >> 4) & 0xF



def memdesc_word(record_bytes: int) -> int:
    """Word offset of the memdesc word: word 1 in 64- and 32-byte pages (the old
    compound_head slot, section 6.3), word 0 in 16- and 8-byte ones."""
    return 1 if record_bytes >= 32 else 0


LAYOUTS: dict[int, type[Memmap]] = {64: Memmap64, 32: Memmap32, 16: Memmap16, 8: Memmap8}


def memmap_for(arena: Arena) -> Memmap:
    return LAYOUTS[arena.record_bytes](arena)
