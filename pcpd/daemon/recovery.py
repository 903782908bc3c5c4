"""Crash recovery: rebuild the zone and reclaim a dead worker's pages from the page array.

The page array is the source of truth, so nothing a dead process kept is
needed: its PCP lists, its workload's list of held blocks and its slab cache
are all recorded in page and descriptor state with its CPU slot.

``rebuild_zone`` throws the free lists away and relinks every PageBuddy head
(a process killed inside a list operation leaves links half updated).
``reclaim_slot`` returns to the buddy every block the slot owned (on its PCP
or allocated), every page marked in flight that no ring holds, and every
orphan page (one that a half-finished operation left in no state); it drops
ring entries the dead consumer had already freed, and gives its cached
descriptors back to the slab.  Both need every writer quiescent and the zone
lock held by the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pcpd.daemon import audit
from pcpd.daemon.slots import process_alive
from pcpd.kernel import PAGEBLOCK_ORDER
from pcpd.model import rings
from pcpd.model.arena import DESC_WORDS, H_LOCK_HOLDER_CPU, H_LOCK_OP, H_MEMDESC, H_SLAB_TOP, Arena
from pcpd.model.lock import OP_NAMES, RawLock
from pcpd.model.memmap import memdesc_word, memmap_for
from pcpd.model.pagewords import MEMDESC_BUDDY, NIL
from pcpd.model.slab import D_PFN, D_STATE, DS_CACHED, DS_FREE, DS_INFLIGHT, DS_INUSE, DS_PCP
from pcpd.model.zone import Zone, _link_tail
from pcpd.model.zonewords import Z_FREE_PAGES, Z_HEAD, Z_NR_FREE

LOCK_TAKEOVER_TIMEOUT = 5.0            # unrecorded holder: a live one never holds it this long

log = logging.getLogger("pcpd.daemon")


@dataclass
class Reclaimed:
    blocks: int = 0
    pages: int = 0
    orphan_pages: int = 0
    descriptors: int = 0
    ring_entries: int = 0

    def __str__(self) -> str:
        return (f"{self.pages} pages in {self.blocks} blocks, {self.orphan_pages} orphan pages, "
                f"{self.descriptors} descriptors, {self.ring_entries} stale ring entries")


def take_over(arena: Arena, lock: RawLock, holder_word: int, dead_pids: set[int], what: str,
              rebuild_zone_lists: bool = False) -> None:
    """Make sure no dead process holds ``lock``; repair what it protected if one did.

    The holder records its pid in ``holder_word``; one killed before it could
    record itself is caught by a timed acquire.  ``rebuild_zone_lists``: the
    lock is zone->lock, whose free lists a killed holder may have left
    half-linked (rebuilt whoever held it: a rebuild of sound lists is a no-op).
    """
    header = arena.header
    holder = int(header[holder_word])
    if holder in dead_pids or (holder and not process_alive(holder)) \
            or not lock.acquire(timeout=LOCK_TAKEOVER_TIMEOUT):
        log.error("%s was held by a dead worker (pid %s, %s); repairing what it protects",
                  what, holder or "unrecorded", OP_NAMES[int(header[H_LOCK_OP])])
    if rebuild_zone_lists:
        rebuild_zone(arena)
        header[H_LOCK_HOLDER_CPU] = -1
    header[holder_word] = 0
    lock.release()


def rebuild_zone(arena: Arena) -> int:
    """Relink free_area from the PageBuddy heads in the page array; returns free pages."""
    z, pb = arena.zone, arena.pageblock
    memmap = memmap_for(arena)
    z[Z_HEAD:Z_NR_FREE] = NIL
    z[Z_NR_FREE:Z_FREE_PAGES + 1] = 0
    heads, orders = memmap.buddy_heads(0, arena.pages)
    for pfn, order in zip(heads.tolist(), orders.tolist()):
        _link_tail(z, memmap, pfn, order, int(pb[pfn >> PAGEBLOCK_ORDER]))
    return int(z[Z_FREE_PAGES])


def _reset_block(arena: Arena, pfn: int, order: int) -> None:
    """Forget a block's owner state so the buddy can take it."""
    w = arena.record_bytes // 8
    if arena.header[H_MEMDESC]:
        mw = memdesc_word(arena.record_bytes)
        word = int(arena.mem[pfn * w + mw])
        if word & 0xF and (word & 0xF) != MEMDESC_BUDDY:      # a described block
            idx = word >> 4
            if int(arena.descs[idx * DESC_WORDS + D_PFN]) == pfn:
                arena.descs[idx * DESC_WORDS + D_STATE] = 0
        arena.mem[pfn * w + mw:(pfn + (1 << order)) * w:w] = MEMDESC_BUDDY
        if arena.record_bytes >= 32:
            arena.mem[pfn * w] = 0
    else:
        arena.mem[pfn * w] = 0


def reclaim_slot(arena: Arena, zone: Zone, slot: int, keep_inbox: bool = True) -> Reclaimed:
    """Return everything a dead slot owned, and every orphan page, to the buddy.

    ``keep_inbox`` False also reclaims what other CPUs queued for the slot
    (no replacement will take it).
    """
    rebuild_zone(arena)
    result = audit.audit(arena)
    out = Reclaimed()
    in_flight = set(result.blocks["inflight"].pfn.tolist()) if keep_inbox else set()
    out.ring_entries = rings.drop_consumed(arena, slot, in_flight)
    queued = {rings.decode(int(e))[0] for e in rings.queued_entries(arena)}
    for state in ("pcp", "allocated", "inflight"):
        b = result.blocks[state]
        for pfn, order, cpu in zip(b.pfn.tolist(), b.order.tolist(), b.cpu.tolist()):
            # with every writer parked, a page in flight but in no ring was
            # orphaned by a sender or a consumer that died mid-hand-off
            keep = pfn in queued if state == "inflight" else cpu != slot
            if keep:
                continue
            _reset_block(arena, pfn, order)
            zone.split_large_buddy(pfn, order)
            out.blocks += 1
            out.pages += 1 << order
    for pfn in result.orphans.tolist():
        _reset_block(arena, pfn, 0)
        zone.split_large_buddy(pfn, 0)
        out.orphan_pages += 1
    out.descriptors = release_cached_descriptors(arena, slot)
    if arena.header[H_MEMDESC]:
        out.descriptors += release_unowned_descriptors(arena)
    rebuild_slab(arena)
    return out


def release_unowned_descriptors(arena: Arena) -> int:
    """Descriptors in use that their block's first page does not point to.

    A worker killed between slab_alloc() and setting the memdesc words (or
    between swapping the words and freeing the old descriptor) leaves one.
    """
    state = arena.descs[D_STATE::DESC_WORDS][:arena.geometry.desc_slots]
    live = np.flatnonzero(np.isin((state >> 4) & 0xF, (DS_INUSE, DS_PCP, DS_INFLIGHT)))
    if not len(live):
        return 0
    w = arena.record_bytes // 8
    mw = memdesc_word(arena.record_bytes)
    pfn = arena.descs[live * DESC_WORDS + D_PFN]
    word = arena.mem[pfn * w + mw]
    unowned = live[((word >> 4) != live) | ((word & 0xF) != (state[live] & 0xF))]
    state[unowned] = DS_FREE
    return len(unowned)


def release_cached_descriptors(arena: Arena, slot: int) -> int:
    """Descriptors parked in a dead slot's per-CPU slab part become free."""
    state = arena.descs[D_STATE::DESC_WORDS]
    mine = np.flatnonzero((((state >> 4) & 0xF) == DS_CACHED) & (((state >> 16) & 0xFF) == slot + 1))
    state[mine] = DS_FREE
    return len(mine)


def rebuild_slab(arena: Arena) -> int:
    """The slab's shared free stack from descriptor states (word 0 means free)."""
    state = arena.descs[D_STATE::DESC_WORDS][:arena.geometry.desc_slots]
    free = np.flatnonzero(state == DS_FREE)
    arena.descfree[:len(free)] = free
    arena.header[H_SLAB_TOP] = len(free)
    return len(free)

