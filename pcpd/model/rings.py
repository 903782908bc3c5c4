"""Bounded single-producer single-consumer rings for cross-CPU frees.

Ring (src, dst) lives in ``arena.rings[src, dst]``: word 0 is the consumer's
head, word 1 the producer's tail (both count entries ever passed, so
``tail - head`` is the fill), words RING_HEADER.. the slots.  Only src writes
the tail and the slots, only dst writes the head, so no lock is needed.  The
producer stores the slot before the tail and the consumer reads the tail
before the slots; x86-64 keeps stores in program order (TSO), which is what
makes the plain stores enough here.

An entry is ``pfn << 8 | memdesc type << 4 | order``.  The pages it names
are marked in flight in the page array (policy ``send``) before the push, so
the audit counts them while they travel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pcpd.model.arena import RING_HEADER, Arena

_HEAD, _TAIL = 0, 1


def encode(pfn: int, t: int, order: int) -> int:
    return (pfn << 8) | (t << 4) | order


def decode(entry: int) -> tuple[int, int, int]:
    """(pfn, memdesc type index, order)"""
    return entry >> 8, (entry >> 4) & 0xF, entry & 0xF


class Outbox:
    """The producer side: src's rings to every other CPU."""

    def __init__(self, arena: Arena, src: int) -> None:
        self.rings = arena.rings[src]
        self.capacity = arena.geometry.ring_slots

    def push(self, dst: int, entry: int) -> bool:
        """Queue an entry for dst; False when that ring is full."""
        ring = self.rings[dst]
        tail = int(ring[_TAIL])
        if tail - int(ring[_HEAD]) >= self.capacity:
            return False
        ring[RING_HEADER + tail % self.capacity] = entry
        ring[_TAIL] = tail + 1
        return True


    def queued_pages(self) -> int:
        """Pages this CPU handed over that their consumers have not taken yet."""
        cap, pages = self.capacity, 0
        for ring in self.rings:
            head, tail = int(ring[_HEAD]), int(ring[_TAIL])
            if tail > head:
                idx = np.arange(head, tail) % cap + RING_HEADER
                pages += int((np.int64(1) << (ring[idx] & 0xF)).sum())
        return pages


class Inbox:
    """The consumer side: every CPU's ring to dst."""

    def __init__(self, arena: Arena, dst: int) -> None:
        self.rings = arena.rings[:, dst]
        self.capacity = arena.geometry.ring_slots

    def pending(self) -> int:
        return int((self.rings[:, _TAIL] - self.rings[:, _HEAD]).sum())

    def take(self, claim: Callable[[int, int, int], None]) -> list[tuple[int, int, int]]:
        """Take every entry queued now, oldest first per source: (pfn, type, order).

        ``claim`` makes each page this CPU's in the page array *before* the
        head moves past its entry, and the caller frees the pages only after:
        a consumer killed between the two leaves pages recovery reclaims as
        its own, and entries at the head whose page is no longer in flight,
        which ``drop_consumed`` removes.  No page is freed twice.
        """
        cap = self.capacity
        taken = []
        for ring in self.rings:
            head, tail = int(ring[_HEAD]), int(ring[_TAIL])
            while head < tail:
                block = decode(int(ring[RING_HEADER + head % cap]))
                claim(*block)
                head += 1
                ring[_HEAD] = head
                taken.append(block)
        return taken


def queued_entries(arena: Arena) -> np.ndarray:
    """Every entry in every ring right now (for recovery: pages still travelling)."""
    cap = arena.geometry.ring_slots
    out = []
    n = arena.geometry.ncpus
    for src in range(n):
        for dst in range(n):
            ring = arena.rings[src, dst]
            head, tail = int(ring[_HEAD]), int(ring[_TAIL])
            for i in range(head, tail):
                out.append(int(ring[RING_HEADER + i % cap]))
    return np.array(out, np.int64)


def drop_consumed(arena: Arena, dst: int, in_flight: set[int]) -> int:
    """Drop entries at the heads of dst's rings whose page is no longer in flight.

    A consumer killed between freeing a page and moving the head leaves that
    entry behind; its replacement must not free the page again.
    """
    cap = arena.geometry.ring_slots
    dropped = 0
    for ring in arena.rings[:, dst]:
        head, tail = int(ring[_HEAD]), int(ring[_TAIL])
        while head < tail and decode(int(ring[RING_HEADER + head % cap]))[0] not in in_flight:
            head += 1
            dropped += 1
        ring[_HEAD] = head
    return dropped
