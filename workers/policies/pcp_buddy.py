"""``pcp-buddy``: the pageblock-owning PCP.

Sources: Johannes Weiner, "[RFC 0/2] mm: page_alloc: pcp buddy allocator"
(linux-mm, 3 April 2026; 1/2 "replace pageblock_flags bitmap with struct
pageblock_data", 2/2 "per-cpu pageblock buddy allocator"):
https://lkml.iu.edu/hypermail/linux/kernel/2604.0/05978.html (0/2),
https://lkml.iu.edu/hypermail/linux/kernel/2604.0/05977.html (2/2), and the
review thread (van Riel on phase 0's owned-block list,
https://lkml.iu.edu/2604.0/08177.html; Frank van der Linden on the phases and
CMA, https://lkml.iu.edu/2604.0/08626.html).  Rik van Riel's follow-up series
built on it ("1GB superpageblock memory allocation", RFC, 30 April and 20 May
2026) has its remote frees pushed onto a per-CPU lockless list the owner
absorbs ("split-path PCP free with local-trylock + remote-llist",
https://lkml.iu.edu/2605.2/08737.html, cited from an earlier reading: the
search corpus did not return it again for this revision); its
superpageblock steering is ``pcp-buddy-spb`` (workers/policies/pcp_buddy_spb.py).

What the RFC changes, and how it is modelled here:

* A CPU's refill claims a *whole pageblock* from the zone under one
  zone->lock acquisition and becomes its owner (``struct pageblock_data``
  gains the owner; here ``arena.pbowner``, one int16 per pageblock holding
  the owning slot + 1).  The pageblock is split *outside* zone->lock: the
  PCP is a buddy allocator of its own, free lists of every order up to
  pageblock_order, whose pieces are marked PagePCPBuddy (``PG_PCP_BUDDY``
  below, with PG_PCP, the owner CPU and the order in the head's flags, so
  the audit and crash recovery read them as that CPU's PCP pages).  An
  allocation of any order up to 9 takes the smallest piece that fits and
  splits it (``__rmqueue_smallest``/``expand`` on the PCP); a free adds the
  block as a piece of its order, and "a bottom-up merge pass runs under
  pcp->lock on drain" (``__free_one_page``'s merging, on the PCP), so a
  drain gives larger chunks back under zone->lock.  Orders 4-8, which today
  always go through the buddy, are served too.
* Refill phases (RFC 2/2), all four in ``rmqueue_bulk()`` under one
  zone->lock acquisition: phase 0 pulls this CPU's owned fragments that
  drains left in the zone buddy back onto the PCP (scanning only pageblocks
  that had fragments drained, as ``pcp->owned_blocks`` does, and only those
  of the requested migratetype); phase 1 claims a whole pageblock
  (``__rmqueue`` at pageblock_order, changing its migratetype to the
  requester's as a whole-block claim does).  Phase 0 and 1 pages are owned
  and PagePCPBuddy.  When they give no piece that fits, phases 2 and 3 fill
  the ordinary PCP list of the requested order with a batch "cached on PCP
  for batching only -- no ownership, no merging": phase 2 "grab[s]
  sub-pageblock chunks without migratetype stealing" (free blocks of the
  requested type below pageblock_order, taken whole under zone->lock and
  split into blocks of the requested order outside it), phase 3 is
  "traditional __rmqueue() with migratetype fallback" (today's refill).
  Orders the PCP keeps no list of (4-8 in 6.7) go to the buddy then.
* Frees route to the owner: a block of an owned pageblock freed on another
  CPU is sent to the owning CPU, which adds it to its PCP buddy (RFC:
  "frees route back to that PCP instead of the freeing CPU's local one";
  van Riel: the remote free is a push onto the owner's ``free_llist``,
  absorbed by the owner at its next opportunity).  Across worker processes
  the message is an entry on the cross-CPU ring (``pcpd.model.rings``): the
  freeing CPU marks the block in flight and queues it, the owner's worker
  takes it with its inbox (every 256 operations and before it exits) and
  frees it locally.  Blocks of unowned pageblocks (phase 2/3 memory) are
  freed onto the freeing CPU's PCP as today.
* zone->lock is taken to claim (and recover) pageblocks, to return pieces
  on a drain, and for the phase 2/3 and buddy paths; a drain returns cached
  blocks first, then owned pieces largest first; a whole free pageblock
  goes back to the zone and its ownership with it, a smaller piece becomes
  a fragment the owner may recover in phase 0.

Modelling choices (none of these is fixed by the RFC):

* Page state is legacy's: compound blocks are prepped on allocation and
  undone on free, so the comparison with ``legacy`` isolates ownership.
* Phase 2 takes, for each chunk, the largest free block of the requested
  type that fits in what is left of the batch (``nr_pcp_alloc()`` blocks of
  the requested order), down to the requested order itself; the RFC says
  "higher-order entries" without saying which.  Phase 3 runs only when
  phase 2 found nothing.  On pcpd's presets neither runs: a 1 GiB arena
  always has a whole free pageblock (``pcpd simulate``, 2 CPUs, 50,000 ops
  per CPU, every preset: no refill reached phase 2).
* Counting: pieces on the PCP buddy count in ``pcp->count`` against
  ``high`` exactly like cached pages; a claim counts as one refill of 512
  pages (plus what phase 0 recovered), and raises 6.7's auto-tuned ``high``
  by those pages, as ``nr_pcp_alloc()`` raises it by the batch a refill
  takes (without that, a zone whose ``high_min`` is near one pageblock
  drains right after every claim).  Phase 0 stops once it has a batch of
  pages and a piece that fits, as ``rmqueue_bulk()`` stops at its count.
  The PCP buddy serves every order up to 9 whatever the era's
  ``pcp_allowed_order()`` (the era decides only the cached lists).
* Pieces are filed by their pageblock's migratetype when added; the zone
  may change an owned pageblock's type meanwhile (``try_to_claim_block()``
  of its fragments), so the merge pass looks for a buddy under every type
  and files the merged piece under the current one.
* A drain picks the largest owned piece no bigger than what is left to
  drain, else the smallest piece there is (so a drain of 63 pages may give
  back a whole pageblock, as a THP list drain gives back 512 today).
  ``drain_all_pages()`` and a worker's exit drain also give up ownership of
  every pageblock the CPU owns (a CPU going offline hands its blocks back).
* Where the owner runs in the same process as the freeing CPU (``pcpd
  costs``, replay, tests: one process drives every CPU) the message is
  delivered at once: the owner absorbs the block in the same call, charged
  to the owner's counters; the freeing CPU is charged the one line of
  llist_add().  A free whose owner's worker is stopping or gone, or whose
  ring is full, is freed on the freeing CPU's own PCP as an unowned block.
  Routed frees are counted as ``free_remote_out`` on the freeing CPU.
* Charges: inserting a piece writes its head line (page state and its
  page->buddy_list links) and the old first piece's prev link; removing one
  relinks its neighbours, one line each (list_link), and the caller
  rewrites the piece's own line.  The merge pass reads each piece's
  buddy head and rewrites the ones it merges (cause ``buddy``:
  buddy-allocator work, here done on the PCP outside zone->lock).  An
  allocation does not merge (the RFC merges on drain only), so a CPU with
  only small pieces claims another pageblock rather than merging them;
  phase 0 reads the whole pageblock's records (512 lines) per pageblock
  scanned.  The piece lists are linked through the head pages' link words
  as the cached lists are; the per-order dicts beside them are an index
  (a buddy lookup without a list walk), in the lists' order.
* Not modelled: the pcp->lock trylock against remote frees (each CPU's PCP
  is private to its process); the CMA handling Frank van der Linden asked
  about (pcpd has no CMA pageblocks).
"""

from __future__ import annotations

import weakref
from collections import deque

import numpy as np

from pcpd.kernel import MIGRATE_PCPTYPES, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from pcpd.model import pagewords, rings
from pcpd.model.arena import C_STATE, Arena
from pcpd.model.lines import LineCharges
from pcpd.model.lock import OP_REFILL
from pcpd.model.pagewords import NIL
from pcpd.model.stats import ALLOC_MISS_TYPE, INDEX, LINES_R, LINES_W, REFILL_PAGES, REFILLS
from workers.pcp import PerCpuPages
from workers.policies.base import (
    FREE_PCP,
    FREE_TYPE,
    HIT,
    LINK_W,
    PAGE_W,
    REFILL,
    W_LINK,
    W_PREV,
    W_REFCOUNT,
)
from workers.policies.struct_page import LegacyPolicy

__all__ = ["PcpBuddyPolicy", "PG_PCP_BUDDY", "OFFLINE_STATES"]

# PagePCPBuddy: a free piece of an owned pageblock on its owner's PCP, eligible for
# merging there.  A flag bit pcpd.model.memmap leaves unused (its PG_* bits are 0-3, 5, 6).
PG_PCP_BUDDY = 1 << 4

# Worker states (cpuctl C_STATE, workers.worker.STATE_STOPPING and STATE_EXITED) in
# which a CPU slot takes no routed free: its worker has taken its inbox for the last
# time, or is about to.  0, no worker at all, is a single-process model: routed.
OFFLINE_STATES = (4, 5)

_BUDDY_W, _BUDDY_R = LINES_W["buddy"], LINES_R["buddy"]
_LINK_R = LINES_R["list_link"]
_REMOTE_OUT, _REMOTE_IN = INDEX["free_remote_out"], INDEX["free_remote_in"]
_PB = PAGEBLOCK_ORDER

# The policies of each arena that live in this process, by CPU slot: a routed free
# to one of them is delivered at once (see the module docstring).
_PEERS: weakref.WeakKeyDictionary[Arena, dict[int, weakref.ReferenceType[PcpBuddyPolicy]]] = \
    weakref.WeakKeyDictionary()


class PcpBuddyPolicy(LegacyPolicy):
    """Legacy page state; the PCP claims whole pageblocks and is a buddy allocator of its own."""

    name = "pcp-buddy"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        arena = self.arena
        self.me = self.cpu + 1
        self.owner_of = arena.pbowner.data                  # pageblock -> owning slot + 1
        # the PCP buddy's free lists, [order][migratetype], linked through the pieces'
        # head pages; indexed by insertion-ordered dicts, the list's first piece last:
        # allocation takes the first (cache-hot), drains the oldest
        self.free_lists: list[list[dict[int, None]]] = [[{} for _ in range(MIGRATE_PCPTYPES)]
                                                         for _ in range(_PB + 1)]
        self.owned_pages = 0                                 # pages in free_lists, part of pcp.count
        # pcp->owned_blocks: a replacement worker inherits its slot's pageblocks, whose
        # pieces recovery gave back to the zone: every one may hold fragments there
        self.owned: set[int] = set(np.flatnonzero(arena.pbowner == self.me).tolist())
        self.fragmented: set[int] = set(self.owned)
        cpu1 = self.me << pagewords.FLAG_CPU_SHIFT
        self._piece_flags = [pagewords.PG_PCP | PG_PCP_BUDDY | cpu1 | (o << pagewords.FLAG_ORDER_SHIFT)
                             for o in range(_PB + 1)]
        self._outbox = rings.Outbox(arena, self.cpu)
        self._states = arena.cpuctl[:, C_STATE]
        _PEERS.setdefault(arena, {})[self.cpu] = weakref.ref(self)

    # -- the PCP buddy's free lists -------------------------------------------------
    def _piece_add(self, pfn: int, order: int, mt: int) -> None:
        """__add_to_free_list() on the PCP: the piece's head line (its state and its
        links, page->buddy_list), and the old first piece's prev link."""
        old = self._piece_link(pfn, order, mt)
        self.zone.lines.page(PAGE_W, pfn)
        if old != NIL:
            self.zone.lines.page(LINK_W, old)

    def _piece_link(self, pfn: int, order: int, mt: int) -> int:
        """_piece_add() uncharged, for a hit that charges inline: the old first piece."""
        lst = self.free_lists[order][mt]
        old = next(reversed(lst)) if lst else NIL   # the list's first piece: added last
        base = pfn * 8
        self.mem[base] = self._piece_flags[order]
        self.mem[base + W_LINK] = old
        self.mem[base + W_PREV] = NIL
        if old != NIL:
            self.mem[old * 8 + W_PREV] = pfn
        lst[pfn] = None
        self.owned_pages += 1 << order
        return old

    def _piece_del(self, lst: dict[int, None], pfn: int, order: int) -> None:
        """__del_page_from_free_list() on the PCP: list_del() relinks both neighbours;
        the piece's own line is the caller's to rewrite."""
        base, lines = pfn * 8, self.zone.lines
        nxt, prev = self.mem[base + W_LINK], self.mem[base + W_PREV]
        lines.page(_LINK_R, pfn)
        if nxt != NIL:
            self.mem[nxt * 8 + W_PREV] = prev
            lines.page(LINK_W, nxt)
        if prev != NIL:
            self.mem[prev * 8 + W_LINK] = nxt
            lines.page(LINK_W, prev)
        del lst[pfn]
        self.owned_pages -= 1 << order

    def _merge_pass(self) -> None:
        """The drain's bottom-up merge pass: every piece with its free buddy, order by order
        (__free_one_page()'s merging, on the PCP, outside zone->lock).

        A piece sits on the list of its pageblock's type when it was added; the zone
        may change that type since (a claim of the pageblock's fragments there), so a
        buddy is looked for on every type's list and the merged piece goes on the
        list of the type the pageblock has now.
        """
        lines, flags, lists = self.zone.lines, self._piece_flags, self.free_lists
        for order in range(_PB):
            for lst in lists[order]:
                for pfn in list(lst):
                    if pfn not in lst:             # merged already, as an earlier piece's buddy
                        continue
                    buddy = pfn ^ (1 << order)
                    lines.page(_BUDDY_R, buddy)    # page_is_buddy(): the buddy's head
                    if self.mem[buddy * 8] != flags[order]:
                        continue
                    mate = next(other for other in lists[order] if buddy in other)
                    self._piece_del(lst, pfn, order)
                    self._piece_del(mate, buddy, order)
                    self.mem[max(pfn, buddy) * 8] = 0   # the upper half's head is a head no more
                    lines.page(_BUDDY_W, max(pfn, buddy))
                    low = min(pfn, buddy)
                    self._piece_add(low, order + 1, self.pbq[low >> _PB])

    def _piece_take(self, order: int, mt: int, lines: LineCharges | None = None) -> int:
        """__rmqueue_smallest() on the PCP: the smallest piece that fits, split by expand().
        ``lines``: None on a hit, a miss's LineCharges (see Policy)."""
        for cur in range(order, _PB + 1):
            lst = self.free_lists[cur][mt]
            if not lst:
                continue
            pfn, _ = lst.popitem()                 # the first piece: cache-hot
            if lst:                                # list_del(): the new first piece's prev
                first = next(reversed(lst))
                self.mem[first * 8 + W_PREV] = NIL
                if lines is None:
                    self.v[LINK_W] += 1
                else:
                    lines.page(LINK_W, first)
            self.owned_pages -= 1 << cur
            while cur > order:                     # upper halves back onto the PCP buddy
                cur -= 1
                self._piece_add(pfn + (1 << cur), cur, mt)
            return pfn
        return NIL

    # -- allocation ------------------------------------------------------------------
    def alloc(self, t: int, order: int) -> int:
        if order > _PB:                            # beyond a pageblock: the buddy, as legacy
            return LegacyPolicy.alloc(self, t, order)
        mt = self.migratetypes[t]
        pfn = self._piece_take(order, mt)
        if pfn == NIL:
            lst = self._lists[t][order]
            if lst:                                # a cached phase 2/3 block: legacy's hit
                return LegacyPolicy.alloc(self, t, order)
            return self._alloc_miss(self.pcp, lst, t, order)
        self.v[self._alloc_ctr[t][order]] += 1
        self.v[HIT] += 1
        pcp = self.pcp
        pcp.free_count >>= 1                       # __rmqueue_pcplist()
        pcp.count -= 1 << order
        base = pfn * 8                             # post_alloc_hook(): one line
        self.mem[base] = self._alloc_flags[t][order]
        self.mem[base + W_REFCOUNT] = 1
        self.v[PAGE_W] += 1
        if order:
            self._after_pcp_alloc(pfn, t, order)  # legacy's prep_compound_page()
        return pfn

    def _alloc_miss(self, pcp, lst, t, order) -> int:
        """Nothing on the PCP fits: rmqueue_bulk()'s phases, then the piece (or cached
        block) they brought is taken as a hit takes it, or else the buddy; one
        operation, each line charged once."""
        mt = self.migratetypes[t]
        self.v[self._alloc_ctr[t][order]] += 1
        with self.zone.lines.operation():
            if self._rmqueue_bulk(order, mt, t, lst):
                pfn = self._piece_take(order, mt, self.zone.lines)
            elif lst:                              # phases 2 and 3 filled the cached list
                pfn = self._pcp_pop(lst)
            else:                                  # nothing on the PCP: the buddy, as legacy
                return self._alloc_buddy(t, order)
            self.v[REFILL] += 1
            pcp.free_count >>= 1                   # __rmqueue_pcplist()
            pcp.count -= 1 << order
            self._prep_new_page(pfn, t, order)
        return pfn

    def _rmqueue_bulk(self, order: int, mt: int, t: int, lst: deque[int] | None) -> bool:
        """rmqueue_bulk()'s four phases under one zone->lock acquisition; True when a
        piece of ``order`` and ``mt`` is now on the PCP buddy.

        Phases 0 and 1 put owned pieces on the PCP buddy; when they give no
        piece that fits, phases 2 and 3 fill ``lst``, the cached list of
        ``order`` (None for orders the PCP keeps no list of, which then go to
        the buddy): a batch, neither owned nor merged.  Phase 2 takes
        sub-pageblock chunks of ``mt`` only (no fallback) and splits them into
        blocks of ``order`` outside the lock; phase 3, when phase 2 found
        none, is today's ``__rmqueue()`` with its fallbacks.
        """
        pcp, zone = self.pcp, self.zone
        chunks: list[tuple[int, int]] = []
        blocks: list[int] = []
        zone.check_watermarks(order)                       # get_page_from_freelist(), before rmqueue()
        with zone.locked(OP_REFILL):
            got = self._recover_fragments(order, mt)       # phase 0
            if not any(o >= order for _, o in got):
                got += self._claim_new(order, mt)          # phase 1
            fits = any(o >= order for _, o in got)
            if not fits and lst is not None:
                n = pcp.nr_pcp_alloc(order, zone.below_high)   # tunes high as today's refill
                chunks = self._grab_chunks(order, mt, n << order)          # phase 2
                if not chunks:                                             # phase 3
                    blocks = zone.rmqueue(order, mt, n, self.nofragment)
        owned = sum(1 << o for _, o in got)
        if fits:
            self._grow_high(owned)
        zone.check_next_watermarks()
        for head, o in got:                        # onto the PCP buddy, split there on demand
            self._piece_add(head, o, mt)
        for head, o in chunks:                     # expand() on the PCP, outside zone->lock
            blocks.extend(range(head, head + (1 << o), 1 << order))
        if blocks:
            self._enter(pcp, lst, blocks, order, t)
        pages = owned + (len(blocks) << order)
        if pages:
            pcp.count += pages
            self.v[REFILLS] += 1
            self.v[REFILL_PAGES] += pages
            self.v[ALLOC_MISS_TYPE + t] += 1
        return fits

    def _recover_fragments(self, order: int, mt: int) -> list[tuple[int, int]]:
        """Phase 0 (zone->lock held): this CPU's fragments of ``mt`` pageblocks back
        from the zone, until a batch of pages and a piece that fits, as
        rmqueue_bulk() stops at its count."""
        zone = self.zone
        got: list[tuple[int, int]] = []
        pages = 0
        for pb in sorted(self.fragmented):
            if pages >= self.pcp.batch and any(o >= order for _, o in got):
                break
            if self.pbq[pb] != mt:
                continue
            self.fragmented.discard(pb)
            if self.owner_of[pb] != self.me:       # claimed by another CPU since
                self.owned.discard(pb)
                continue
            start = pb << _PB
            heads, orders = zone.mm.buddy_heads(start, PAGEBLOCK_NR_PAGES)
            self.zone.lines.pages(_BUDDY_R, start, PAGEBLOCK_NR_PAGES)
            if len(orders) and int(orders.max()) > _PB:
                self._disown(pb)                   # merged past the pageblock: the zone's again
                continue
            for head, o in zip(heads.tolist(), orders.tolist()):
                zone.take_free_block(head, o, mt)  # on the lists of its pageblock's type
                got.append((head, o))
                pages += 1 << o
        return got

    def _claim_new(self, order: int, mt: int) -> list[tuple[int, int]]:
        """Phase 1 (zone->lock held): one whole pageblock from the zone
        (``__rmqueue()`` at pageblock_order, ALLOC_NOFRAGMENT first as a refill
        does), now this CPU's."""
        got = self.zone.rmqueue(_PB, mt, 1, self.nofragment)
        if not got:
            return []
        pfn = got[0]
        self._own(pfn >> _PB, mt)
        return [(pfn, _PB)]

    def _own(self, pb: int, mt: int) -> None:
        """Record this CPU as the owner of ``pb``; a whole-block claim changes its type."""
        self.pbq[pb] = mt
        self.owner_of[pb] = self.me
        self.owned.add(pb)

    def _grab_chunks(self, order: int, mt: int, want: int) -> list[tuple[int, int]]:
        """Phase 2 (zone->lock held): free blocks of ``mt`` below pageblock_order,
        each the largest that fits in what is left of ``want`` pages, none smaller
        than ``order``."""
        zone = self.zone
        got: list[tuple[int, int]] = []
        cur = _PB - 1
        while want >= 1 << order and cur >= order:
            pfn = next(zone.free_blocks(cur, mt), NIL)
            if pfn == NIL or 1 << cur > want:
                cur -= 1
                continue
            zone.take_free_block(pfn, cur, mt)
            got.append((pfn, cur))
            want -= 1 << cur
        return got

    def _grow_high(self, pages: int) -> None:
        """nr_pcp_alloc()'s tuning of pcp->high for a refill of ``pages``: clamped into
        [high_min, high_max], then raised by what the refill took (6.7's auto-tuned
        high, unless the zone is below its high watermark: as the test before the
        refill found it).  A claim takes a pageblock where rmqueue_bulk() takes a
        batch, so high grows by that."""
        pcp = self.pcp
        if pcp.era != "6.7":
            return
        pcp.high = min(max(pcp.high, pcp.high_min), pcp.high_max)
        if pcp.tuned and not self.zone.below_high:
            pcp.high = min(pcp.high + pages, pcp.high_max)

    # -- free --------------------------------------------------------------------------
    def free(self, pfn: int, order: int, t: int) -> None:
        if order <= _PB:
            owner = self.owner_of[pfn >> _PB]
            if owner == self.me:
                self._free_owned(pfn, order, t)
                return
            if owner and self._route(pfn, order, t, owner - 1):
                return
        LegacyPolicy.free(self, pfn, order, t)     # unowned: onto this CPU's PCP, as today

    def _free_owned(self, pfn: int, order: int, t: int) -> None:
        """A block of a pageblock this CPU owns comes back to its PCP buddy."""
        self.v[FREE_TYPE + t] += 1
        if order:                                  # as legacy
            self._free_pages_prepare(pfn, order, t)
        self.mem[pfn * 8 + W_REFCOUNT] = 0
        pcp = self.pcp
        pcp.count += 1 << order
        old = self._piece_link(pfn, order, self.pbq[pfn >> _PB])    # merged at the next drain
        self.v[PAGE_W] += 1                             # _piece_add()'s lines, a hit's way
        if old != NIL:
            self.v[LINK_W] += 1
        self.v[FREE_PCP] += 1
        drain = pcp.free_check(order, self.zone_words)
        if drain:
            self._drain_after_free(pcp, drain, 0, self._owned_free_lines, pfn, order, t)

    def _owned_free_lines(self, pfn: int, order: int, t: int) -> None:
        """The lines _free_owned() charged: the tails (order > 0, as legacy), the
        piece's head and the old first piece's link (_piece_add()'s)."""
        if order:
            self._prepared_lines(pfn, order, t)
        self.zone.lines.page(PAGE_W, pfn)
        pieces = reversed(self.free_lists[order][self.pbq[pfn >> _PB]])
        next(pieces)                               # pfn itself, added last
        old = next(pieces, NIL)
        if old != NIL:
            self.zone.lines.page(LINK_W, old)

    def _route(self, pfn: int, order: int, t: int, owner: int) -> bool:
        """Send a block to the CPU that owns its pageblock; False when it must be freed here."""
        peers = _PEERS.get(self.arena)
        ref = peers.get(owner) if peers else None
        peer = ref() if ref is not None else None
        if peer is None and self._states[owner] in OFFLINE_STATES:
            return False
        self.send(pfn, order, t, owner)            # llist_add(): the head's line
        if peer is not None:                       # the owner runs here: it absorbs at once
            peer.v[_REMOTE_IN] += 1
            peer._free_owned(pfn, order, t)
        elif not self._outbox.push(owner, rings.encode(pfn, t, order)):
            self.receive(pfn, order, t)            # the ring is full: take it back
            return False
        self.v[_REMOTE_OUT] += 1
        return True

    # -- drains --------------------------------------------------------------------------
    def _take_for_drain(self, pcp: PerCpuPages, count: int, start: int) -> list[tuple[int, list[int]]]:
        """free_pcppages_bulk()'s selection: cached blocks first, then owned pieces."""
        runs: list[tuple[int, list[int]]] = []
        cached = pcp.count - self.owned_pages
        if cached > 0 and any(pcp.lists):
            runs += LegacyPolicy._take_for_drain(self, pcp, min(count, cached), start)
        taken = 0
        for order, pfns in runs:
            taken += len(pfns) << order
        if count > taken and self.owned_pages:
            self._merge_pass()
            runs += self._take_pieces(count - taken)
        return runs

    def _take_pieces(self, want: int) -> list[tuple[int, list[int]]]:
        """Owned pieces for a drain: the largest no bigger than what is left, else the
        smallest; a whole pageblock goes back with its ownership, a smaller piece
        leaves a fragment for phase 0."""
        out: list[tuple[int, list[int]]] = []
        lists = self.free_lists
        while want > 0 and self.owned_pages:
            held = [o for o in range(_PB + 1) if any(lists[o])]
            fits = [o for o in held if 1 << o <= want]
            order = max(fits) if fits else min(held)
            lst = next(lst for lst in lists[order] if lst)
            pfn = next(iter(lst))                  # the oldest piece: cold
            self._piece_del(lst, pfn, order)
            self.mem[pfn * 8] = 0
            self.zone.lines.page(LINK_W, pfn)
            self.pcp.count -= 1 << order
            pb = pfn >> _PB
            if order == _PB:
                self._disown(pb)
            else:
                self.fragmented.add(pb)
            out.append((order, [pfn]))
            want -= 1 << order
        return out

    def _disown(self, pb: int) -> None:
        if self.owner_of[pb] == self.me:
            self.owner_of[pb] = 0
        self.owned.discard(pb)
        self.fragmented.discard(pb)

    def drain_all(self, cause: str = "drain_all") -> int:
        """drain_pages_zone(), and every owned pageblock handed back (see the module docstring)."""
        pcp, pages = self.pcp, 0
        while pcp.count:
            drained = self._drain(pcp, min(pcp.count, pcp.free_cap), 0, cause)
            if not drained:                        # the lists and pcp->count disagree
                raise RuntimeError(f"cpu {self.cpu}: {pcp.count} pages counted on the PCP, none found")
            pages += drained
        for pb in sorted(self.owned):
            self._disown(pb)
        return pages
