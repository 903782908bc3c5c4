"""Traced cachelines: the memmap and descriptor accessors in a recording mode.

Every policy charges the lines it touches by hand, at the call site, per
cause (``pcpd.model.stats.CAUSES``).  The tracing mode checks those charges
against what the code actually did: a ``TracedArena`` is the arena with its
page-array, descriptor and free-memory views (``memq``/``mem``,
``descq``/``descs``, ``freelinksq``/``freelinks``) replaced by views that
record, for each access, the 64-byte line it fell in and whether it was a
load or a store.  A CPU built over a ``TracedArena`` (``CpuAllocator``, the
zone's ``Memmap``, the slab, the policy all take their views from the arena
at construction) runs the very same code as over the plain arena; an
ordinary run never builds one, so its hot path is untouched.

What is recorded, per region, is a set of line indices (word index >> 3:
regions start 64-byte aligned and records never straddle a line; in
``freelinks`` one line per page, see ``_FREELINK_SHIFT``), so a line stored
ten times, or by two causes, is in the set once: ``LineTrace`` is the
deduplicated "lines touched" of whatever ran since its last ``clear()``.
``pcpd costs`` reports it per operation, and tests/test_traced_lines.py
holds the charges to it.

Regions: ``memmap`` (struct page records), ``descs`` (memdesc descriptors as
the policies use them), ``slab`` (descriptor words the slab itself stores:
its free-object marker, pcpd's stand-in for the slab freelist pointer, which
``pcpd costs`` counts as a slab operation, not a descriptor line) and
``freelinks`` (list links kept inside free memory).

A load that only stands for a pointer the kernel's caller already holds
(the folio of ``folio_put()``, found here from page->memdesc because the
workload hands pfns around) goes through ``untraced(arena)``: it is pcpd
plumbing, not a memmap access.

Scalar views record one line per access.  Numpy views record indexing
(``a[i]``, fancy and boolean indices), stores (``a[s] = x``), ufuncs on them
(reads of inputs, writes of ``out=`` such as ``a &= m``), reductions,
``copy()`` and ``tolist()``; a slice of a traced view is traced, a copy is a
plain array.  Other numpy functions reading a view directly would go
unrecorded: the model's code uses none on these regions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from pcpd import core
from pcpd.model.arena import Arena

REGIONS = ("memmap", "descs", "slab", "freelinks")
_WORD_SHIFT = 3                      # 8 int64 words per 64-byte line
# A free block's links live in its own memory, a page apart from the next
# block's, so each page's two words count as a line of their own (pcpd packs
# them four pages to a line of the freelinks region).
_FREELINK_SHIFT = 1


class LineTrace:
    """The lines of each region read and written since the last ``clear()``."""

    def __init__(self) -> None:
        self.read: dict[str, set[int]] = {r: set() for r in REGIONS}
        self.written: dict[str, set[int]] = {r: set() for r in REGIONS}

    def clear(self) -> None:
        for lines in (*self.read.values(), *self.written.values()):
            lines.clear()

    def touched(self, region: str) -> set[int]:
        """Lines of ``region`` read or written (each once)."""
        return self.read[region] | self.written[region]

    def lines_touched(self) -> int:
        """Distinct lines touched in every region together."""
        return sum(len(self.touched(r)) for r in REGIONS)


class _TracedWords:
    """A scalar memoryview (``memq``, ``descq``, ``freelinksq``) that records lines."""

    __slots__ = ("_q", "_n", "_shift", "_read", "_written")

    def __init__(self, q: memoryview, read: set[int], written: set[int],
                 shift: int = _WORD_SHIFT) -> None:
        self._q, self._n, self._shift, self._read, self._written = q, len(q), shift, read, written

    def __len__(self) -> int:
        return self._n

    def _lines(self, key: int | slice) -> Iterable[int]:
        if isinstance(key, slice):
            return {i >> self._shift for i in range(*key.indices(self._n))}
        return ((key % self._n) >> self._shift,)

    # int keys first: the model's scalar accesses, thousands per drain
    def __getitem__(self, key: int | slice) -> Any:
        if key.__class__ is int:
            self._read.add((key % self._n) >> self._shift)
        else:
            self._read.update(self._lines(key))
        return self._q[key]

    def __setitem__(self, key: int | slice, value: Any) -> None:
        if key.__class__ is int:
            self._written.add((key % self._n) >> self._shift)
        else:
            self._written.update(self._lines(key))
        self._q[key] = value


class _Region(NamedTuple):
    """Where a traced numpy view's words are, and the sets its accesses go to."""

    origin: int            # address of the region's word 0
    nwords: int
    read: set[int]
    written: set[int]
    shift: int             # word index >> shift = line


class _TracedArray(np.ndarray):
    """A numpy view of a region whose element loads and stores are recorded as lines.

    A view's word indices in the region follow from its address and stride.
    """

    _region: _Region | None

    def __array_finalize__(self, obj: Any) -> None:
        self._region = getattr(obj, "_region", None)

    def _words(self) -> np.ndarray | None:
        """Word indices of this view's elements in the region; None for a copy."""
        region = self._region
        if region is None or not self.size:
            return None
        first = (self.__array_interface__["data"][0] - region.origin) // 8
        if not 0 <= first < region.nwords:
            return None
        return first + self.strides[0] // 8 * np.arange(self.shape[0])

    def _record(self, stored: bool, positions: Any = slice(None)) -> None:
        words, region = self._words(), self._region
        if words is None or region is None:
            return
        lines = np.unique(np.atleast_1d(words[positions]) >> region.shift).tolist()
        (region.written if stored else region.read).update(lines)

    def __getitem__(self, key: Any) -> Any:
        out = super().__getitem__(key)
        if isinstance(out, _TracedArray) and out._words() is not None:
            return out                               # a view: nothing loaded yet
        self._record(False, key)                     # a scalar, or a fancy-index copy
        return out.view(np.ndarray) if isinstance(out, np.ndarray) else out

    def __setitem__(self, key: Any, value: Any) -> None:
        self._record(True, key)
        super().__setitem__(key, _plain(value, write=False))

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        args = [_plain(x, write=False) for x in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(o, write=True) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:                          # a &= m: the name keeps the traced view
            return out[0] if len(out) == 1 else out
        return result

    def copy(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        self._record(False)
        return self.view(np.ndarray).copy(order)

    def tolist(self) -> Any:
        self._record(False)
        return self.view(np.ndarray).tolist()


def _traced_array(a: np.ndarray, read: set[int], written: set[int],
                  shift: int = _WORD_SHIFT) -> np.ndarray:
    view = a.view(_TracedArray)
    view._region = _Region(a.__array_interface__["data"][0], a.shape[0], read, written, shift)
    return view


class TracingNeedsInterpreted(RuntimeError):
    """The compiled core's typed memoryviews cannot record: see ``pcpd.core``."""


class TracedArena(Arena):
    """``arena``'s views, with the memmap, descriptor and free-memory ones recording
    into ``trace``.  Shares the mapping: close and unlink the arena, not this."""

    real: Arena

    def __init__(self, arena: Arena, trace: LineTrace) -> None:   # a view: no Arena.__init__
        if core.running_compiled():
            raise TracingNeedsInterpreted(
                f"tracing cachelines runs the interpreted core: set {core.PURE_ENV}=1 (pcpd.core)")
        self.__dict__.update(arena.__dict__)
        self.real, self.trace = arena, trace
        r, w = trace.read, trace.written
        self.memq = _TracedWords(arena.memq, r["memmap"], w["memmap"])  # type: ignore[assignment]
        self.mem = _traced_array(arena.mem, r["memmap"], w["memmap"])
        self.descq = _TracedWords(arena.descq, r["descs"], w["descs"])  # type: ignore[assignment]
        self.descs = _traced_array(arena.descs, r["descs"], w["descs"])
        self.slab_descq = _TracedWords(arena.descq, r["slab"], w["slab"])
        self.freelinksq = _TracedWords(arena.freelinksq, r["freelinks"],  # type: ignore[assignment]
                                       w["freelinks"], _FREELINK_SHIFT)
        self.freelinks = _traced_array(arena.freelinks, r["freelinks"], w["freelinks"], _FREELINK_SHIFT)

    def close(self) -> None:
        raise TypeError("close the arena a TracedArena views, not the view")

    def unlink(self) -> None:
        raise TypeError("unlink the arena a TracedArena views, not the view")


def untraced(arena: Arena) -> Arena:
    """The plain arena under a traced one (itself otherwise): for loads that stand
    for a pointer the kernel's caller holds, which no trace should count."""
    return arena.real if isinstance(arena, TracedArena) else arena


def slab_words(arena: Arena) -> memoryview:
    """The descriptor view the slab stores its own bookkeeping through: traced apart
    (region ``slab``) under a TracedArena."""
    return arena.slab_descq if isinstance(arena, TracedArena) else arena.descq   # type: ignore[return-value]


def _plain(x: Any, write: bool) -> Any:
    """``x`` as a plain array, its whole view recorded as read or written, if traced."""
    if isinstance(x, _TracedArray):
        x._record(write)
        return x.view(np.ndarray)
    return x
