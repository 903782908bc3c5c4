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

Callers charge cachelines: one line per record touched (record sizes divide
64, so a record never straddles lines); a run of records counts the lines it
spans (``lines_spanned``).  ``LineCharges`` counts them for a CPU, each line
once per operation.  The tracing mode (``pcpd.model.linetrace``) hands
a Memmap built over a ``TracedArena`` views that record the lines each
access touches, so the charges can be checked against them; a Memmap over a
plain arena is the same code over the plain views.  Tracing runs on the
interpreted core (``pcpd.core``): compiled, ``q`` and ``linksq`` are typed
memoryviews, which cannot record.

Scalar accessors (the buddy's per-block work under zone->lock) go through the
arena's memoryviews (``q``, ``linksq``): plain ints interpreted (a numpy
scalar index costs two to three times as much), C loads and stores compiled.
Range work (``buddy_heads``, ``movable_pages``) uses the numpy views.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any
from weakref import WeakValueDictionary

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
from pcpd.model.stats import CAUSES, DATA_W, DESC_R, DESC_W, LINES_R, LINES_W, Counters


def lines_spanned(first_pfn: int, count: int, record_bytes: int) -> int:
    """Cachelines covered by ``count`` consecutive records from ``first_pfn``."""
    if count <= 0:
        return 0
    return ((first_pfn + count - 1) * record_bytes >> 6) - (first_pfn * record_bytes >> 6) + 1


# The counters LineCharges charges, by family (struct page stores and loads, in
# CAUSES order: a line several causes touch in one operation is charged to the
# first of them; descriptor stores and loads; free memory's stores).  Each family
# counts a line at most once per operation.
_FAMILIES = (tuple(LINES_W[c] for c in CAUSES), tuple(LINES_R[c] for c in CAUSES), (DESC_W,), (DESC_R,),
             (DATA_W,))

# A line's mark within an operation: not touched, paid for, or recorded by the
# counter of rank ``mark - RANKED`` (its place in _FAMILIES, flattened).
UNTOUCHED, PAID, RANKED = 0, 1, 2


class LineMarks:
    """The line marks of one thread's operations over one arena geometry: every
    family's lines in one byte array, each family from its own offset, and the
    indices the open operation marked, in the order first marked (``order``:
    machine integers, grown as needed; each index enters once an operation, as
    only an untouched mark is recorded there).

    The CPUs a thread runs (a simulation's, a cost table's) share them, as
    their operations run one at a time; ``owner`` is the LineCharges whose
    operation is open, and another refuses to begin meanwhile.  A thread has
    marks of its own (a test may run workers as threads).
    """

    __slots__ = ("marks", "order", "owner", "__weakref__")
    _threads = threading.local()

    def __init__(self, size: int) -> None:
        self.marks = bytearray(size)
        self.order = array("q", bytes(8 * min(size, 4096)))
        self.owner: LineCharges | None = None

    def grow(self) -> None:
        """Twice the room for marked indices (never more than there are lines).  A new
        array: the open operation's LineCharges holds a view of the old one."""
        self.order = self.order + array("q", bytes(8 * min(len(self.order), len(self.marks) - len(self.order))))

    @classmethod
    def shared(cls, sizes: tuple[int, ...]) -> LineMarks:
        """The marks of every LineCharges in this thread over families of these sizes
        (kept while one of them is: a sweep's geometries come and go)."""
        pool: WeakValueDictionary[tuple[int, ...], LineMarks] = cls._threads.__dict__.setdefault(
            "pool", WeakValueDictionary())
        marks = pool.get(sizes)
        if marks is None:
            marks = pool[sizes] = cls(sum(sizes))
        return marks


def _charges_no_lines(ctr: int) -> ValueError:
    # out of line: building the message in record() would cost every call its registers
    return ValueError(f"counter {ctr} charges no cachelines")


class LineCharges:
    """One CPU's cacheline charges: the lines each step touches, charged per step
    or once per operation.

    Every charge names its counter: a ``LINES_W``/``LINES_R`` cause for struct
    page records (``page``, ``pages``, ``each``), ``DESC_W``/``DESC_R`` for
    descriptor words (``desc``), and free memory's links (``free_memory``:
    stores only, one line per page, as ``pcpd.model.linetrace`` counts them);
    ``record`` takes a line number itself.

    By default a call charges its lines at once: a PCP hit's steps touch
    distinct lines (the hit paths are written so).  Between ``begin()`` and
    ``fold()`` (a refill, a drain, a buddy allocation or free, with the PCP
    work around it) a call only marks its lines (``LineMarks``), and the
    operation charges each line once per family: struct page lines stored,
    and loaded (stored as well or not), per cause; descriptor lines stored
    and loaded; free-memory lines stored.  These are the lines a
    ``TracedArena`` records for the operation.  ``begin()`` nests: the
    outermost ``fold()`` charges.  Lines are charged when the operation
    settles (``settle()``: on taking and before releasing zone->lock, and at
    ``fold()``); a line marked by several causes between two settles counts
    for the first of them in ``CAUSES`` order, and a settled line is paid
    for until the operation ends.

    A PCP hit's part of an operation (the block a free pushed before its
    drain) charged its lines inline, as every hit does; ``prepaid()`` states
    them again, so they are marked paid and counted no more (a line a hit part
    and the rest both touch keeps the hit's cause).  Hit paths add to ``v``
    themselves, which saves a hit a call per charge (about 60 ns each interpreted).
    """

    __slots__ = ("v", "rb", "exact", "depth", "prepaying", "_shift", "_base", "_rank", "_counter",
                 "_charged", "_sizes", "_thread", "_shared", "_marks", "_order", "_marked", "_settled")

    def __init__(self, counters: Counters, record_bytes: int, pages: int, desc_words: int) -> None:
        self.v = counters.v
        self.rb = record_bytes
        self.exact = False
        self.prepaying = False
        self.depth = 0
        self._shift = (64 // record_bytes).bit_length() - 1
        page_lines = lines_spanned(0, pages, record_bytes)
        sizes = (page_lines, page_lines, -(-desc_words // 8), -(-desc_words // 8), pages)
        # each counter's family offset in the marks, and its rank; the counter of a rank
        # (machine-integer arrays: the compiled core indexes them without boxing)
        base = [0] * (max(max(family) for family in _FAMILIES) + 1)
        rank = list(base)                   # below RANKED: not a counter of lines
        counter: list[int] = []
        for family, offset in zip(_FAMILIES, accumulate(sizes, initial=0)):
            for ctr in family:
                base[ctr], rank[ctr] = offset, RANKED + len(counter)
                counter.append(ctr)
        self._base, self._rank, self._counter = array("q", base), array("q", rank), array("q", counter)
        self._charged = array("q", bytes(8 * len(counter)))     # lines per rank, in one settle
        self._sizes = sizes
        self._thread = -1
        # the open operation's marked indices: _order[:_marked], those from _settled on
        # not settled yet (0 and 0 between operations)
        self._marked = self._settled = 0
        self._bind_marks()

    def prepaid(self, state: Callable[..., None], *args: Any) -> None:
        """Mark the lines ``state(*args)`` charges as paid already (see the class)."""
        self.prepaying = True
        try:
            state(*args)
        finally:
            self.prepaying = False

    def operation(self) -> LineCharges:
        """``with lines.operation():`` runs one operation: ``begin()`` on entry and
        ``fold()`` on leaving, or ``abort()`` when an exception leaves it."""
        return self

    def __enter__(self) -> LineCharges:
        self.begin()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.fold()
        else:
            self.abort()

    def abort(self) -> None:
        """Abandon the open operation, nested ones included: lines it marked and did not
        settle are not charged, and the thread's marks are clean for its next one (an
        exception in one CPU's operation must not stop another's)."""
        self._unmark()
        self.depth = 0
        self.exact = self.prepaying = False
        if self._shared.owner is self:
            self._shared.owner = None

    def _bind_marks(self) -> None:
        """This thread's marks: a CPU may be built in one thread and run in another."""
        self._thread = threading.get_ident()
        self._shared = LineMarks.shared(self._sizes)
        self._marks, self._order = self._shared.marks, self._shared.order

    def begin(self) -> None:
        """An operation starts: mark lines until the matching ``fold()``."""
        if not self.depth:
            if threading.get_ident() != self._thread:
                self._bind_marks()
            if self._shared.owner is not None:
                raise RuntimeError("an operation of another CPU of this thread is open")
            self._shared.owner = self
            self._order = self._shared.order        # another CPU may have grown it
        self.depth += 1
        self.exact = True

    def settle(self) -> None:
        """Charge the lines marked since the last settle, each once, and count them as
        paid for the rest of the operation.  Zone work settles on taking zone->lock
        and before releasing it, so that the hold is charged the lines first
        touched under it, while it is held (virtual time prices a hold by them:
        pcpd.simulate.clock)."""
        if not self.exact:
            return
        for i in range(self._settled, self._marked):
            mark = self._marks[self._order[i]]
            if mark != PAID:
                self._charged[mark - RANKED] += 1
                self._marks[self._order[i]] = PAID
        self._settled = self._marked
        for i in range(len(self._charged)):     # a few counters: one sum each, not one per line
            if self._charged[i]:
                self.v[self._counter[i]] += self._charged[i]
                self._charged[i] = 0

    def fold(self) -> None:
        """The operation ends: charge every line it marked, each once."""
        self.depth -= 1
        if self.depth:
            return
        self.settle()
        self.exact = False
        self._unmark()
        self._shared.owner = None

    def _unmark(self) -> None:
        """Every line the operation marked untouched again."""
        for i in range(self._marked):
            self._marks[self._order[i]] = UNTOUCHED
        self._marked = self._settled = 0

    def record(self, ctr: int, line: int) -> None:
        """Line ``line`` of ``ctr``'s region touched (a struct page line is
        ``pfn * record_bytes >> 6``): charged now, or marked in an operation."""
        if not self.exact:
            self.v[ctr] += 1
        elif self._rank[ctr] < RANKED:
            raise _charges_no_lines(ctr)
        else:
            self._mark(self._base[ctr] + line, self._rank[ctr])

    def updated(self, loaded: int, stored: int, line: int) -> None:
        """``record(loaded, line)`` and ``record(stored, line)``: a read-modify-write of
        one line (a list_del() of the block's own links) in one call."""
        self.record(loaded, line)
        self.record(stored, line)

    def _mark(self, i: int, rank: int) -> None:
        """Mark index ``i`` of the marks touched, for the counter of ``rank``."""
        mark = self._marks[i]
        if mark == UNTOUCHED:
            self._marks[i] = PAID if self.prepaying else rank
            if self._marked == len(self._order):
                self._grow_order()
            self._order[self._marked] = i
            self._marked += 1
        elif self.prepaying:
            self._marks[i] = PAID
        elif mark > rank:                       # PAID is below every rank: paid stays paid
            self._marks[i] = rank

    def _grow_order(self) -> None:
        self._shared.grow()
        self._order = self._shared.order

    @property
    def line_shift(self) -> int:
        """log2 of the struct pages per 64-byte line."""
        return self._shift

    def page(self, ctr: int, pfn: int) -> None:
        """One struct page record stored or loaded (``ctr`` says which, and why)."""
        self.record(ctr, pfn >> self._shift)

    def each(self, ctr: int, pfns: list[int]) -> None:
        """One record of each block in ``pfns`` (a refill's or a drain's blocks)."""
        if not self.exact:
            self.v[ctr] += len(pfns)
        elif self._rank[ctr] < RANKED:
            raise _charges_no_lines(ctr)
        else:
            base, rank = self._base[ctr], self._rank[ctr]
            for pfn in pfns:
                self._mark(base + (pfn >> self._shift), rank)

    def pages(self, ctr: int, first: int, count: int) -> None:
        """``count`` consecutive records from ``first``."""
        if count <= 0:
            return
        if self.exact:
            for line in range(first >> self._shift, ((first + count - 1) >> self._shift) + 1):
                self.record(ctr, line)
        else:
            self.v[ctr] += lines_spanned(first, count, self.rb)

    def desc(self, ctr: int, word: int) -> None:
        """Descriptor word ``word`` (index in the descriptor array) stored (DESC_W) or loaded (DESC_R)."""
        self.record(ctr, word >> 3)

    def free_memory(self, pfn: int) -> None:
        """List links stored in free page ``pfn`` (the page's own line)."""
        self.record(DATA_W, pfn)


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
