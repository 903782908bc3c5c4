"""Memdesc descriptors and the slab cache they come from.

In a memdesc world a folio, slab, ptdesc or netmem descriptor is a slab object
(section 6.2, 6.4).  pcpd keeps every descriptor in the arena's ``descs``
region, 128 bytes (two cachelines) each, so the page array plus descriptors
remain the whole truth.  Descriptor words:

    D_STATE   type nibble | DS_* state << 4 | order << 8 | (cpu + 1) << 16
    D_PFN     first page of the block      D_REFCOUNT, D_MAPPING,
    D_NEXT/D_PREV  lru / PCP list links (descriptor indices)
    (word 6, the folio's private, is not modelled)             D_MAPCOUNT
    line 2 (large folios only): D_ENTIRE_MAPCOUNT, D_NR_PAGES_MAPPED, D_DEFERRED

The cache has a per-CPU part (``DescriptorSlab``: a local stack of free
indices, refilled and flushed ``SLAB_BATCH`` at a time) and a shared part (a
stack of free indices in ``arena.descfree`` with its top in the header,
protected by its own cross-process lock).  ``slab_alloc``/``slab_free`` count
every object operation; ``slab_shared`` counts trips to the shared part, each
one a lock acquisition.  A descriptor parked in a CPU's local stack is marked
DS_CACHED with that CPU so crash recovery can hand it back.
"""

from __future__ import annotations

import os
from array import array

from pcpd.model.arena import DESC_WORDS, H_SLAB_HOLDER_PID, H_SLAB_TOP, Arena
from pcpd.model.linetrace import slab_words
from pcpd.model.lock import RawLock
from pcpd.model.stats import SLAB_ALLOC, SLAB_FREE, SLAB_SHARED, Counters

D_STATE, D_PFN, D_REFCOUNT, D_MAPPING, D_NEXT, D_PREV = range(6)
D_MAPCOUNT = 7           # word 6 would be the folio's private, which nothing models
# DS_FREE is 0: a descriptor whose state word is 0 is free
D_ENTIRE_MAPCOUNT, D_NR_PAGES_MAPPED, D_DEFERRED = 8, 9, 10
DS_FREE, DS_CACHED, DS_INUSE, DS_PCP, DS_INFLIGHT = range(5)
SLAB_BATCH = 32
SLAB_LOCAL_MAX = 2 * SLAB_BATCH
# bound once: alloc() and free() run on every memdesc-pcpdesc operation
_SLAB_ALLOC, _SLAB_FREE, _DESC_WORDS = SLAB_ALLOC, SLAB_FREE, DESC_WORDS
_D_STATE, _SLAB_BATCH, _SLAB_LOCAL_MAX = D_STATE, SLAB_BATCH, SLAB_LOCAL_MAX


def desc_state(mtype: int, state: int, order: int, cpu: int) -> int:
    return mtype | (state << 4) | (order << 8) | ((cpu + 1) << 16)


def format_slab(arena: Arena) -> None:
    """Every descriptor free, on the shared stack."""
    n = arena.geometry.desc_slots
    arena.descs[:] = 0
    arena.descfree[:n] = range(n)
    arena.header[H_SLAB_TOP] = n


class DescriptorSlab:
    """One CPU's view of the descriptor cache."""

    def __init__(self, arena: Arena, lock: RawLock, counters: Counters, cpu: int) -> None:
        # scalar stores: the memoryview (plain ints); traced apart from the policies'
        # descriptor lines under a TracedArena (slab work is counted in slab_ops)
        self.d = slab_words(arena)
        self.free_stack = arena.descfree
        self.header = arena.header
        self.lock = lock
        self.v = counters.v
        self.cpu = cpu
        # the per-CPU part, as the kernel's struct array_cache: a stack of free indices,
        # entry[0:avail], with room for the one free() puts over SLAB_LOCAL_MAX before it
        # flushes a batch
        self.entry = array("q", bytes(8 * (SLAB_LOCAL_MAX + 1)))
        self.avail = 0
        self._cached = desc_state(0, DS_CACHED, 0, cpu)     # D_STATE of a locally parked object

    @property
    def local(self) -> list[int]:
        """The locally cached indices, the next alloc()'s last."""
        return [self.entry[i] for i in range(self.avail)]

    def alloc(self) -> int:
        """slab_alloc(): a free descriptor index; the caller initialises it."""
        self.v[_SLAB_ALLOC] += 1
        if not self.avail:
            self._refill()
        self.avail -= 1
        return self.entry[self.avail]

    def free(self, idx: int) -> None:
        """slab_free(): back to the per-CPU part, flushing a batch when full."""
        self.v[_SLAB_FREE] += 1
        self.d[idx * _DESC_WORDS + _D_STATE] = self._cached
        self.entry[self.avail] = idx
        self.avail += 1
        if self.avail > _SLAB_LOCAL_MAX:
            self._flush(_SLAB_BATCH)

    def _refill(self) -> None:
        stack, h = self.free_stack, self.header
        with self._shared():
            top = int(h[H_SLAB_TOP])
            take = min(SLAB_BATCH, top)
            got = stack[top - take:top].tolist()
            h[H_SLAB_TOP] = top - take
        if not got:
            raise MemoryError("descriptor slab exhausted")
        cached = self._cached
        for idx in got:
            self.d[idx * DESC_WORDS + D_STATE] = cached
            self.entry[self.avail] = idx
            self.avail += 1

    def _flush(self, count: int) -> None:
        """The ``count`` oldest local indices back to the shared part."""
        give = self.local[:count]
        self.avail -= count
        for i in range(self.avail):
            self.entry[i] = self.entry[count + i]
        for idx in give:
            self.d[idx * DESC_WORDS + D_STATE] = DS_FREE
        with self._shared():
            top = int(self.header[H_SLAB_TOP])
            self.free_stack[top:top + len(give)] = give
            self.header[H_SLAB_TOP] = top + len(give)

    def flush_all(self) -> None:
        """Return every locally cached descriptor (worker exit)."""
        if self.avail:
            self._flush(self.avail)

    def _shared(self) -> _SharedPart:
        self.v[SLAB_SHARED] += 1
        return _SharedPart(self.lock, self.header)


class _SharedPart:
    """The slab's shared part under its lock; the holder is recorded for recovery."""

    def __init__(self, lock: RawLock, header) -> None:
        self.lock, self.header = lock, header

    def __enter__(self) -> None:
        self.lock.acquire()
        self.header[H_SLAB_HOLDER_PID] = os.getpid()

    def __exit__(self, *exc: object) -> None:
        self.header[H_SLAB_HOLDER_PID] = 0
        self.lock.release()
