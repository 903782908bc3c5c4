# cython: wraparound=False, initializedcheck=False, boundscheck=False
"""Cacheline charges: the lines each step of an operation touches, each charged once.

A struct page line is ``pfn * record_bytes >> 6`` (record sizes divide 64, so
a record never straddles lines); a run of records counts the lines it spans
(``lines_spanned``).  ``LineCharges`` counts them for a CPU: per call on a
PCP hit, once per line in a refill, a drain or a buddy allocation or free.

Compiled (pcpd.core), this module runs without Cython's bounds checks: a
line's mark is the zone path's most frequent store, several indexings a call
(issue 12).  Each index is checked where it enters instead: ``record()``,
``each()`` and ``pages()`` refuse a counter outside the counters and a line
outside its counter's family, so every mark, counter and rank they index lies
inside its array; the rest index what those checks or the constructor
bounded, and ``_pending[mark]`` what the stamps' rule bounds: no mark is newer
than the open operation's settle, because a thread runs one operation at a
time and ``begin()``/``fold()``/``abort()`` keep its depth from going below
zero.  The arrays and settle numbers are read-only from Python (``lines.pxd``).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any
from weakref import WeakValueDictionary

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

# A line's mark is a stamp: a settle number (see LineCharges.settle) times
# _STATES, plus the line's state since that settle: PAID, or the rank of the
# counter that recorded it (its place in _FAMILIES, flattened, from RANKED).
# A stamp from before the open operation's first settle number is a line it
# has not touched; one from an earlier settle of it, a line paid for.  So no
# pass over the marked lines clears them or counts them: each mark counts its
# line into ``pending`` as it is made.
PAID, RANKED = 1, 2
_STATES = 32
if RANKED + sum(map(len, _FAMILIES)) > _STATES:
    raise ImportError("pcpd.model.lines: more line counters than a mark's states")


class LineMarks:
    """The line marks of one thread's operations over one arena geometry: every
    family's lines in one array of C ints, each family from its own offset, and
    ``seq``, the settle number the thread's next operation starts from.

    The CPUs a thread runs (a simulation's, a cost table's) share them, as
    their operations run one at a time; ``owner`` is the LineCharges whose
    operation is open, and another refuses to begin meanwhile.  A thread has
    marks of its own (a test may run workers as threads).
    """

    __slots__ = ("marks", "seq", "owner", "__weakref__")
    _threads = threading.local()
    # the last settle number whose stamps fit a C int (a test lowers it)
    last_seq = (2**31 - _STATES) // _STATES

    def __init__(self, size: int) -> None:
        self.marks = array("i", bytes(4 * size))
        self.seq = 1
        self.owner: LineCharges | None = None

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

    __slots__ = ("v", "rb", "exact", "depth", "prepaying", "_shift", "_base", "_rank", "_lines", "_counter",
                 "_pending", "_sizes", "_thread", "_shared", "_marks", "_begun", "_now", "_last")

    def __init__(self, counters: Counters, record_bytes: int, pages: int, desc_words: int) -> None:
        self.v = counters.v
        self.rb = record_bytes
        self.exact = False
        self.prepaying = False
        self.depth = 0
        self._shift = (64 // record_bytes).bit_length() - 1
        page_lines = lines_spanned(0, pages, record_bytes)
        sizes = (page_lines, page_lines, -(-desc_words // 8), -(-desc_words // 8), pages)
        # per counter: its family's offset in the marks, its lines, and its rank (below
        # RANKED: not a counter of lines); per rank: its counter, and its lines marked
        # since the last settle (machine-integer arrays: compiled, C loads and stores)
        base, lines, rank = ([0] * len(self.v) for _ in range(3))
        counter = [0] * RANKED
        for family, offset, size in zip(_FAMILIES, accumulate(sizes, initial=0), sizes):
            for ctr in family:
                base[ctr], lines[ctr], rank[ctr] = offset, size, len(counter)
                counter.append(ctr)
        self._base, self._lines, self._rank = array("q", base), array("q", lines), array("q", rank)
        self._counter, self._pending = array("q", counter), array("q", bytes(8 * len(counter)))
        self._sizes = sizes
        self._thread = -1
        self._begun = self._now = 0             # the open operation's first settle's stamp, and this one's
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
        for r in range(RANKED, len(self._pending)):
            self._pending[r] = 0
        if self.depth > 0:
            self._next_settle()
            self._shared.seq = self._now // _STATES
        self.depth = 0
        self.exact = self.prepaying = False
        if self._shared.owner is self:
            self._shared.owner = None

    def _bind_marks(self) -> None:
        """This thread's marks: a CPU may be built in one thread and run in another."""
        self._thread = threading.get_ident()
        self._shared = LineMarks.shared(self._sizes)
        self._marks = self._shared.marks
        self._last = self._shared.last_seq * _STATES

    def begin(self) -> None:
        """An operation starts: mark lines until the matching ``fold()``."""
        if not self.depth:
            if threading.get_ident() != self._thread:
                self._bind_marks()
            if self._shared.owner is not None:
                raise RuntimeError("an operation of another CPU of this thread is open")
            self._shared.owner = self
            self._begun = self._now = self._shared.seq * _STATES
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
        for r in range(RANKED, len(self._pending)):
            if self._pending[r]:
                self.v[self._counter[r]] += self._pending[r]
                self._pending[r] = 0
        self._next_settle()

    def _next_settle(self) -> None:
        """Stamp later marks with the next settle number: those made so far are paid for."""
        self._now += _STATES
        if self._now > self._last:
            self._renumber()

    def _renumber(self) -> None:
        """The settle numbers ran out (``LineMarks.last_seq`` of them): the lines the
        open operation marked become paid at settle 1, every other line untouched,
        and the operation goes on from settle 2."""
        for i in range(len(self._marks)):
            self._marks[i] = _STATES + PAID if self._marks[i] >= self._begun else 0
        self._begun, self._now = _STATES, 2 * _STATES

    def fold(self) -> None:
        """The operation ends: charge every line it marked, each once.  After an
        ``abort()`` (a nested operation's exception, caught inside the outer one)
        there is none left to end."""
        if self.depth <= 0:
            return
        self.depth -= 1
        if self.depth:
            return
        self.settle()
        self.exact = False
        self._shared.seq = self._now // _STATES
        self._shared.owner = None

    def record(self, ctr: int, line: int) -> None:
        """Line ``line`` of ``ctr``'s region touched (a struct page line is
        ``pfn * record_bytes >> 6``): charged now, or marked in an operation."""
        if not 0 <= ctr < len(self._rank):
            self._refuse(ctr, line)
        elif not self.exact:
            self.v[ctr] += 1
        elif not 0 <= line < self._lines[ctr]:   # a counter of no lines has none
            self._refuse(ctr, line)
        else:
            self._mark(self._base[ctr] + line, self._rank[ctr])

    def _refuse(self, ctr: int, line: int) -> None:
        """Raise for a counter outside the counters, a counter of no lines, or a line
        outside its counter's family (out of line: a message built in record() would
        cost every call its registers)."""
        if not 0 <= ctr < len(self._rank):
            raise IndexError(f"no counter {ctr}")
        if self._rank[ctr] < RANKED:
            raise ValueError(f"counter {ctr} charges no cachelines")
        raise ValueError(f"line {line} of counter {ctr} is outside its {self._lines[ctr]} lines")

    def updated(self, loaded: int, stored: int, line: int) -> None:
        """``record(loaded, line)`` and ``record(stored, line)``: a read-modify-write of
        one line (a list_del() of the block's own links) in one call."""
        self.record(loaded, line)
        self.record(stored, line)

    def _mark(self, i: int, rank: int) -> None:
        """Mark index ``i`` of the marks touched, for the counter of ``rank``."""
        stamp = self._marks[i]
        if stamp >= self._now:                  # marked since the last settle
            mark = stamp - self._now
            if mark == PAID or (mark <= rank and not self.prepaying):
                return                          # the first cause in CAUSES order keeps it
            self._pending[mark] -= 1
        elif stamp >= self._begun:              # settled: paid for
            return
        if self.prepaying:
            self._marks[i] = self._now + PAID
        else:
            self._marks[i] = self._now + rank
            self._pending[rank] += 1

    @property
    def line_shift(self) -> int:
        """log2 of the struct pages per 64-byte line."""
        return self._shift

    def page(self, ctr: int, pfn: int) -> None:
        """One struct page record stored or loaded (``ctr`` says which, and why)."""
        self.record(ctr, pfn >> self._shift)

    def each(self, ctr: int, pfns: list[int]) -> None:
        """One record of each block in ``pfns`` (a refill's or a drain's blocks)."""
        if not 0 <= ctr < len(self._rank):
            self._refuse(ctr, 0)
        if not self.exact:
            self.v[ctr] += len(pfns)
            return
        base, rank, lines = self._base[ctr], self._rank[ctr], self._lines[ctr]
        for pfn in pfns:
            line = pfn >> self._shift
            if not 0 <= line < lines:
                self._refuse(ctr, line)
            self._mark(base + line, rank)

    def pages(self, ctr: int, first: int, count: int) -> None:
        """``count`` consecutive records from ``first``."""
        if not 0 <= ctr < len(self._rank):
            self._refuse(ctr, first)
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
