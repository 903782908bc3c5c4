"""The model's state when the trace begins: PCP high and lists, free pages, pageblocks.

A replay that starts every CPU with ``pcp->high`` at ``high_min``, empty PCP
lists and an all-free zone replays another machine than the one traced: on
a THP workload whose kernel had auto-tuned ``high`` to 25,000 pages the
model drained dozens of times where the kernel drained none, because
``nr_pcp_high()`` grows ``high`` by at most ``free_count + batch`` a drain.
So before the first operation the replay sets up, from what it knows:

``high``
    each CPU's ``pcp->high`` from a /proc/zoneinfo capture taken when the
    trace began (6.7+, where ``high`` is auto-tuned state; earlier eras use
    the captured ``high`` as their fixed limit already, ``pcpd.replay.zone``).
``lists``
    each CPU's PCP pages: the pages the trace itself shows each list held
    (``pcpd.replay.decode.StartLists``: exact for a list the kernel refilled,
    a lower bound otherwise), and, up to the captured ``count``, the rest on
    a list the trace never refilled, since a list the kernel refilled was
    empty then: order 0 first, the one it used most (movable if none), of the
    migratetypes the model keeps lists of (``_remainder_list``).  A list's
    pages become blocks of the memdesc type the trace allocated most from it,
    of those allocating from its migratetype.
``pool``
    the blocks that the trace frees without having allocated them
    (``OP_FREE_PRE``): allocated before the capture, so the model allocates
    them here, and the trace's frees put them on the PCP as the kernel did.
``free pages``
    the zone's ``pages free`` (NR_FREE_PAGES, buddy pages only) from the
    capture: the rest of the arena is allocated (``filler``) so that the
    watermarks see the captured headroom.  An arena smaller than the zone
    (``pcpd.replay.zone.MAX_ARENA_PAGES``) keeps every other page free.
``pageblocks``
    with /proc/pagetypeinfo, the pageblocks of each migratetype (scaled to
    the arena) and the free pages of each; HighAtomic counts as Unmovable,
    CMA and Isolate as Movable.  Without it, the pageblocks that hold the
    pool and PCP pages get those pages' migratetype and the rest stay
    Movable.  The free lists hold each region's free pages in the largest
    blocks that fit: the capture's per-order counts are not reproduced.

Layout: one region per migratetype (Unmovable, Reclaimable, Movable),
1024-page aligned, in that order; in each, the PCP and pool blocks packed
largest first from its start, then the filler, then the free pages.

How the model is brought there, whatever the policy: every free block is
taken off the free lists; then each block to allocate is put alone on the
free list of its allocation's migratetype and allocated through the
policy's own ``alloc()``, so the buddy can only hand back that block and the
page state is whatever that policy writes; each PCP list's blocks are put
alone on the free lists and taken with ``rmqueue_bulk()`` and the policy's
``_enter()`` (the second half of a refill); then the free blocks go back on
their region's lists, the PCP tuning state (``alloc_factor``,
``free_count``, flags) is reset and ``high`` set, and every counter zeroed,
so the replay's figures count the trace only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pcpd.kernel import (
    MAX_PAGE_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    NR_PCP_LISTS,
    PAGEBLOCK_ORDER,
)
from pcpd.model.arena import Arena
from pcpd.model.sizing import pindex_to_order
from pcpd.model.zone import Zone
from pcpd.model.zonewords import Z_CLAIMS, Z_FREE_PAGES, Z_STEALS
from pcpd.pagetypeinfo import ZonePageTypes
from pcpd.replay.decode import Decoded, StartLists
from pcpd.zoneinfo import Pageset
from workers.cpu import CpuAllocator
from workers.pcp import PerCpuPages
from workers.policies import MIGRATETYPE_OF, T_KERNEL, TYPES

START_MODES = ("capture", "trace", "empty")
REGION = 1 << MAX_PAGE_ORDER           # regions are whole MAX_ORDER blocks: no merge across them
MT_NAMES = {MIGRATE_UNMOVABLE: "Unmovable", MIGRATE_MOVABLE: "Movable",
            MIGRATE_RECLAIMABLE: "Reclaimable"}
# pagetypeinfo's columns -> the model's three migratetypes
PAGETYPE_MT = {"Unmovable": MIGRATE_UNMOVABLE, "HighAtomic": MIGRATE_UNMOVABLE,
               "Reclaimable": MIGRATE_RECLAIMABLE, "Movable": MIGRATE_MOVABLE,
               "CMA": MIGRATE_MOVABLE, "Isolate": MIGRATE_MOVABLE}
_REGION_ORDER = (MIGRATE_UNMOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE)


def pindex_mt(pindex: int) -> int:
    """The migratetype of PCP list ``pindex`` (``order_to_pindex()`` inverted)."""
    if pindex >= NR_PCP_LISTS - 2:
        return MIGRATE_MOVABLE if pindex == NR_PCP_LISTS - 1 else MIGRATE_UNMOVABLE
    return pindex % MIGRATE_PCPTYPES


@dataclass(frozen=True)
class CpuStart:
    """One trace CPU at the start: captured pageset values and the lists to seed."""

    cpu: int
    high: int | None                   # pcp->high to set (6.7+), None: leave the model's
    count: int | None                  # captured pcp->count, None: not captured
    lists: tuple[int, ...]             # pages per kernel pindex: what the trace shows ...
    remainder: int = 0                 # ... plus these up to count, on list remainder_pindex
    remainder_pindex: int = -1
    first_refill: int | None = None    # blocks of its first order-0 refill in the trace
    frees_before_refill: int = 0       # frees onto its PCP lists before that refill


@dataclass(frozen=True)
class StartPlan:
    """What the model starts from (see the module docstring); policy-independent."""

    mode: str                          # one of START_MODES
    cpus: tuple[CpuStart, ...] = ()    # in slot order (Decoded.cpus)
    free_pages: int | None = None      # captured NR_FREE_PAGES of the zone
    managed: int = 0
    pagetypes: ZonePageTypes | None = None
    list_types: dict[tuple[int, int], int] = field(default_factory=dict)   # (order, mt) -> type
    pool: dict[tuple[int, int, int], int] = field(default_factory=dict)    # (cpu, order, type) -> n
    unknown: tuple[str, ...] = ()      # what the start state could not be told from
    migratetypes: tuple[int, ...] = MIGRATETYPE_OF   # type -> migratetype (Decoded.migratetypes)

    @property
    def seeds(self) -> bool:
        return self.mode != "empty"


def build_plan(mode: str, decoded: Decoded, *, pagesets: dict[int, Pageset] | None = None,
               high_is_state: bool = False, free_pages: int | None = None, managed: int = 0,
               pagetypes: ZonePageTypes | None = None, per_process: bool = False,
               zoneinfo_given: bool = False) -> StartPlan:
    """The start plan of a replay.

    ``pagesets`` maps a CPU number to its captured pageset (None: no
    capture, or ``--start trace``); ``high_is_state`` says the capture's
    ``high`` is 6.7+'s auto-tuned state and the model's era tunes it too;
    ``zoneinfo_given`` says a zoneinfo sized the zone (and ``--start trace``
    left its state out).
    """
    if mode == "empty":
        return StartPlan(mode, unknown=("everything: every CPU starts with high at high_min and "
                                        "empty PCP lists in an all-free, all-Movable zone "
                                        "(--start empty)",), migratetypes=decoded.migratetypes)
    cpus = [_cpu_start(cpu, decoded.start_lists.get(cpu),
                       pagesets.get(cpu) if pagesets is not None else None, high_is_state,
                       set(decoded.migratetypes))
            for cpu in decoded.cpus]
    no_capture = ("not taken from the zoneinfo (--start trace)" if zoneinfo_given
                  else "not taken from a capture (no zoneinfo)")
    unknown = (_pageset_unknowns(decoded, pagesets, high_is_state, no_capture)
               + _trace_unknowns(decoded, cpus, per_process)
               + _zone_unknowns(free_pages, pagetypes, no_capture))
    return StartPlan(mode, tuple(cpus), free_pages, managed, pagetypes, dict(decoded.list_types),
                     dict(decoded.pool), tuple(unknown), decoded.migratetypes)


def _cpu_start(cpu: int, lists: StartLists | None, p: Pageset | None, high_is_state: bool,
               kept: set[int]) -> CpuStart:
    """One CPU's start: the lists the trace shows, and the captured count beyond them."""
    pages, anchored = _lists_shown(lists)
    count = p.count if p is not None else None
    high = p.high if (p is not None and high_is_state and p.high) else None
    refill = (lists.first_refill, lists.frees_before_refill) if lists is not None else (None, 0)
    if count is None or count <= sum(pages):
        return CpuStart(cpu, high, count, pages, 0, -1, *refill)
    return CpuStart(cpu, high, count, pages, count - sum(pages), _remainder_list(pages, anchored, kept),
                    *refill)


def _lists_shown(lists: StartLists | None) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Pages per pindex the trace shows, and which lists it saw refilled (those are exact)."""
    if lists is None:
        return (0,) * NR_PCP_LISTS, ()
    return tuple(lists.pages()), tuple(a is not None for a in lists.anchor)


def _pageset_unknowns(decoded: Decoded, pagesets: dict[int, Pageset] | None, high_is_state: bool,
                      no_capture: str) -> list[str]:
    """What the capture's pagesets leave unknown: the CPUs it lacks, high, its moment."""
    if pagesets is None:
        return [f"pcp->high and pcp->count of every CPU, {no_capture}: high starts at "
                f"high_min, and the lists hold only the pages the trace shows they held"]
    unknown = []
    missing = [cpu for cpu in decoded.cpus if pagesets.get(cpu) is None]
    if missing:
        unknown.append(f"the pagesets of CPU {','.join(map(str, missing))} (not in the capture)")
    if not high_is_state:
        unknown.append("auto-tuned pcp->high (the capture or the model's era has no high_min/"
                       "high_max): high starts at the era's value")
    stale = _stale_cpus(pagesets, decoded.cpus)
    if stale:
        unknown.append(f"whether the capture is from the trace's start: CPU "
                       f"{','.join(map(str, stale))} held more than high, which the "
                       f"kernel drains at the next free; a capture taken earlier than the trace "
                       f"wants --start trace")
    return unknown


def _trace_unknowns(decoded: Decoded, cpus: list[CpuStart], per_process: bool) -> list[str]:
    """What the trace leaves unknown about the lists' contents."""
    unknown = []
    if any(c.remainder for c in cpus):
        unknown.append("which lists held the captured count beyond what the trace shows: it is "
                       "put on a list the trace never refilled, order 0 first")
    if decoded.pcp.refill_blocks == 0:
        unknown.append("when the kernel refilled each list (no mm_page_alloc_zone_locked events): "
                       "the list contents are lower bounds")
    if per_process:
        unknown.append("other tasks' use of the PCP lists (a per-process trace): the list "
                       "contents the trace implies may be off")
    return unknown


def _zone_unknowns(free_pages: int | None, pagetypes: ZonePageTypes | None, no_capture: str) -> list[str]:
    """What neither capture nor trace tells of the zone and the PCP tuning state."""
    unknown = []
    if free_pages is None:
        unknown.append(f"the zone's free pages, {no_capture}: all but the pool and PCP pages "
                       f"are free")
    if pagetypes is None:
        unknown.append("pageblock migratetypes (no /proc/pagetypeinfo, or --start trace): "
                       "Movable but where pool and PCP pages sit")
    unknown.append("free_count and the PCPF flags of every CPU (not in /proc/zoneinfo): 0, so the "
                   "first drains are sized as after a quiet spell; alloc_factor too, but where a "
                   "CPU's first order-0 refill in the trace shows it")
    unknown.append("the free lists' per-order shape: free pages are in the largest blocks that fit")
    return unknown


def _stale_cpus(pagesets: dict[int, Pageset], cpus: list[int]) -> list[int]:
    """The trace's CPUs whose captured count is past where their next free drains."""
    return sorted(p.cpu for p in pagesets.values() if p.cpu in cpus and p.count > _drain_above(p))


def _drain_above(p: Pageset) -> int:
    """The count above which a CPU's next free drains for certain: high before 6.7, and
    high_min == high_max without auto-tuning (nr_pcp_high() clamps high to it); with
    auto-tuning a free may grow high instead, up to high_max."""
    if p.high_min is None or p.high_max is None:
        return int(p.high)
    return int(p.high_min if p.high_min == p.high_max else p.high_max)


def _remainder_list(pages: tuple[int, ...], anchored: tuple[bool, ...], kept: set[int]) -> int:
    """The list for captured pages the trace does not show: one the kernel never refilled (a
    refilled list was empty then), of a migratetype the model keeps lists of (``kept``: those
    a type allocates from); order 0 first, the one the trace used most, movable first.

    Where every such order-0 list was refilled (and a replay whose slab pages are all
    Unmovable keeps no Reclaimable list), the pages go on the lowest-order list left: they
    must still count, since ``count`` sizes the refills (``nr_pcp_alloc()``'s room) and
    decides the drains.  -1 where no list is left."""
    free = [pindex for pindex in range(NR_PCP_LISTS)
            if pindex_mt(pindex) in kept and not (anchored and anchored[pindex])]
    if not free:
        return -1
    return max(free, key=lambda pindex: (-pindex_to_order(pindex), pages[pindex],
                                         pindex_mt(pindex) == MIGRATE_MOVABLE))


# --- applying a plan to one policy's model ------------------------------------------------

@dataclass
class SeedReport:
    """What a seeded model started from, for results.json's ``start``."""

    mode: str
    pcp: list[dict[str, Any]] = field(default_factory=list)     # per CPU
    pool_unplaced: int = 0             # pre-capture blocks the arena had no room for
    pcp_unplaced_blocks: int = 0       # PCP blocks the arena had no room for
    free_pages: int = 0                # the model's NR_FREE_PAGES after seeding
    free_pages_captured: int | None = None
    filler_pages: int = 0
    pageblocks: dict[str, int] = field(default_factory=dict)
    free_by_type: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


@dataclass
class _Piece:
    pfn: int
    order: int
    kind: str                          # "pcp", "pool" or "filler"
    slot: int = 0
    t: int = T_KERNEL


def seed(arena: Arena, models: list[CpuAllocator], plan: StartPlan
         ) -> tuple[dict[tuple[int, int, int], list[int]], SeedReport]:
    """Bring fresh models (one per trace CPU, slot order) to the plan's start state.

    Returns the pre-capture pool ((slot, order, type) -> pfns, freed by
    ``OP_FREE_PRE``) and the report.  The arena must be freshly formatted.
    """
    report = SeedReport(plan.mode, free_pages_captured=plan.free_pages, unknown=list(plan.unknown))
    if not plan.seeds:
        report.free_pages = int(arena.zone[Z_FREE_PAGES])
        return {}, report
    zone = models[0].zone
    saved = [[(p.high, p.flags) for p in m.policy.pcps] for m in models]
    _take_all_free(zone)
    pcp_blocks = _pcp_blocks(models, plan, report)
    pool_blocks = _pool_blocks(plan)
    regions, used = _regions(arena.pages, plan, pcp_blocks, pool_blocks)
    pieces, free_blocks = _layout(regions, used, pcp_blocks, pool_blocks, plan.migratetypes, report)
    # labels first: a block put on its type's free list below sits in a pageblock of that
    # type, as the zone assumes when it merges or claims (__free_one_page(), claims by
    # label); and last, as captured, whatever a policy's claims relabelled meanwhile
    _label_regions(arena, regions)
    pool = _allocate(models, pieces)
    _fill_pcps(models, pieces)
    _free_regions(zone, free_blocks)
    _label_regions(arena, regions)
    _reset(models, plan, saved, report)
    report.free_pages = int(zone.z[Z_FREE_PAGES])
    report.pageblocks = {MT_NAMES[mt]: int((arena.pageblock == mt).sum()) for mt in _REGION_ORDER}
    report.free_by_type = {MT_NAMES[mt]: sum(1 << o for _, o, m in free_blocks if m == mt)
                           for mt in _REGION_ORDER}
    return pool, report


def plan_slot(plan: StartPlan, cpu: int) -> int:
    for slot, c in enumerate(plan.cpus):
        if c.cpu == cpu:
            return slot
    return -1


def _pool_blocks(plan: StartPlan) -> list[tuple[int, int, int, int]]:
    """(slot, order, type, blocks) of the pre-capture pool, of the CPUs the plan seeds."""
    return [(slot, order, t, n) for (cpu, order, t), n in sorted(plan.pool.items())
            for slot in [plan_slot(plan, cpu)] if slot >= 0]


def _take_all_free(zone: Zone) -> None:
    """Every free block off the free lists (the fresh zone's MAX_ORDER blocks)."""
    for order in range(MAX_PAGE_ORDER + 1):
        for mt in range(MIGRATE_PCPTYPES):
            for pfn in zone.free_blocks(order, mt):
                zone.take_free_block(pfn, order, mt)


def _pcp_blocks(models: list[CpuAllocator], plan: StartPlan, report: SeedReport
                ) -> list[tuple[int, int, int, int]]:
    """(slot, order, type, blocks) for each model PCP list to fill, and the per-CPU report."""
    out = []
    for slot, c in enumerate(plan.cpus):
        policy = models[slot].policy
        pages = list(c.lists)
        if c.remainder_pindex >= 0:
            pages[c.remainder_pindex] += c.remainder
        placed = unplaced = 0
        for pindex, n in enumerate(pages):
            if n <= 0:
                continue
            order, mt = pindex_to_order(pindex), pindex_mt(pindex)
            t = _list_type(plan, order, mt)
            if t is None or policy._lists[t][order] is None:   # a list the model does not keep
                unplaced += n
                continue
            out.append((slot, order, t, n >> order))
            placed += n >> order << order
        report.pcp.append({"cpu": c.cpu, "count_captured": c.count, "high_captured": c.high,
                           "pages_seeded": placed, "from_trace": sum(c.lists),
                           "beyond_trace": c.remainder, "unplaced": unplaced})
    return out


def _list_type(plan: StartPlan, order: int, mt: int) -> int | None:
    """The memdesc type whose blocks stand for list (order, mt)'s pages: the one the trace
    allocated most from it, else the list's default, of the types allocating from ``mt``
    (``plan.migratetypes``); None where no type does (a replay whose slab pages are all
    Unmovable keeps no Reclaimable list)."""
    allocating = [t for t, m in enumerate(plan.migratetypes) if m == mt]
    for t in (plan.list_types.get((order, mt)), _default_type(mt)):
        if t in allocating:
            return t
    return allocating[0] if allocating else None


def _default_type(mt: int) -> int:
    return {MIGRATE_MOVABLE: TYPES.index("anon"), MIGRATE_RECLAIMABLE: TYPES.index("slab")}.get(
        mt, T_KERNEL)


def _regions(pages: int, plan: StartPlan, pcp_blocks: list[tuple[int, int, int, int]],
             pool_blocks: list[tuple[int, int, int, int]]
             ) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
    """(start, size, mt) of each region, and the pages used in each (the rest is free).

    Unmovable and Reclaimable regions get the capture's share of pageblocks,
    at least room for their blocks and free pages; Movable gets the rest.
    The free pages asked for (the capture's, or everything not held) are
    split as the capture splits them by migratetype, else all Movable.
    """
    need: Counter[int] = Counter()                 # pages each migratetype's blocks take
    for _, order, t, n in pcp_blocks + pool_blocks:
        need[plan.migratetypes[t]] += n << order
    free_total = max(0, pages - sum(need.values()))
    if plan.free_pages is not None:
        free_total = min(plan.free_pages, free_total)
    share, free_want = _capture_shares(plan.pagetypes, pages, free_total)
    regions = _region_bounds(pages, share, need, free_want)
    free_in = _free_in(regions, need, free_want, free_total, plan.pagetypes is not None)
    return regions, {mt: n - free_in[mt] for _, n, mt in regions}


def _capture_shares(pt: ZonePageTypes | None, pages: int, free_total: int
                    ) -> tuple[dict[int, int], dict[int, int]]:
    """Pages of pageblocks and free pages each migratetype asks for: the capture's
    shares scaled to the arena, else no pageblocks and every free page Movable."""
    share: dict[int, int] = dict.fromkeys(_REGION_ORDER, 0)
    free_want: dict[int, int] = dict.fromkeys(_REGION_ORDER, 0)
    free_want[MIGRATE_MOVABLE] = free_total
    if pt is None or not pt.blocks:
        return share, free_want
    blocks: Counter[int] = Counter()
    free: Counter[int] = Counter()
    for name, n in pt.blocks.items():
        blocks[PAGETYPE_MT.get(name, MIGRATE_MOVABLE)] += n
    for name in pt.free:
        free[PAGETYPE_MT.get(name, MIGRATE_MOVABLE)] += pt.free_pages(name)
    for mt in _REGION_ORDER:
        share[mt] = blocks[mt] * pages // max(sum(blocks.values()), 1)
        free_want[mt] = free[mt] * free_total // max(sum(free.values()), 1)
    free_want[MIGRATE_MOVABLE] += free_total - sum(free_want.values())     # the rounding
    return share, free_want


def _region_bounds(pages: int, share: dict[int, int], need: Counter[int],
                   free_want: dict[int, int]) -> list[tuple[int, int, int]]:
    """(start, size, mt) in _REGION_ORDER: Unmovable and Reclaimable in whole MAX_ORDER
    blocks, as large as their share or their blocks and free pages; Movable the rest,
    at least one MAX_ORDER block.  An empty region is left out."""
    regions = []
    start = 0
    for mt in _REGION_ORDER:
        n = pages - start
        if mt != MIGRATE_MOVABLE:
            n = max(share[mt], need[mt] + free_want[mt])
            n = max(0, min(-(-n // REGION) * REGION, pages - start - REGION))
        if n:
            regions.append((start, n, mt))
        start += n
    return regions


def _free_in(regions: list[tuple[int, int, int]], need: Counter[int], free_want: dict[int, int],
             free_total: int, have_pagetypes: bool) -> dict[int, int]:
    """The free pages of each region: what it asks for, as far as its room allows."""
    free_in: dict[int, int] = {}
    for _, n, mt in regions:                       # in _REGION_ORDER: Movable comes last
        room = max(0, n - need[mt])
        if mt == MIGRATE_MOVABLE:                  # Movable holds what the others do not
            free_in[mt] = max(0, min(room, free_total - sum(free_in.values())))
        elif not have_pagetypes:
            # without pagetypeinfo an Unmovable or Reclaimable region is only as large as its
            # blocks need, rounded up to whole MAX_ORDER blocks: the rounding stays free
            free_in[mt] = room
        else:
            free_in[mt] = min(free_want[mt], room)
    return free_in


_Wanted = tuple[int, int, int, str]                # (order, slot, type, kind) of a block to place


def _layout(regions: list[tuple[int, int, int]], used: dict[int, int],
            pcp_blocks: list[tuple[int, int, int, int]], pool_blocks: list[tuple[int, int, int, int]],
            migratetypes: tuple[int, ...], report: SeedReport
            ) -> tuple[list[_Piece], list[tuple[int, int, int]]]:
    """Concrete blocks per region: PCP and pool blocks, filler, free blocks."""
    pieces: list[_Piece] = []
    free_blocks: list[tuple[int, int, int]] = []
    wanted = _wanted_by_mt(pcp_blocks, pool_blocks, migratetypes)
    spill: list[_Wanted] = []
    for i, (start, size, mt) in enumerate(regions):
        todo = spill + wanted.pop(mt, [])
        if i == len(regions) - 1:                  # the last region takes whatever is left
            todo += [w for ws in wanted.values() for w in ws]
        cursor, spill = _pack(todo, start, start + size, pieces)
        used_end = max(start + used[mt], cursor)
        report.filler_pages += used_end - cursor
        pieces += [_Piece(pfn, order, "filler") for pfn, order in _aligned(cursor, used_end)]
        free_blocks += [(pfn, order, mt) for pfn, order in _aligned(used_end, start + size)]
    _count_unplaced(spill, report)
    return pieces, free_blocks


def _wanted_by_mt(pcp_blocks: list[tuple[int, int, int, int]], pool_blocks: list[tuple[int, int, int, int]],
                  migratetypes: tuple[int, ...]) -> dict[int, list[_Wanted]]:
    """Every PCP and pool block to place, one entry a block, by its migratetype's region."""
    wanted: dict[int, list[_Wanted]] = {mt: [] for mt in _REGION_ORDER}
    for slot, order, t, n in pcp_blocks:
        wanted[migratetypes[t]] += [(order, slot, t, "pcp")] * n
    for slot, order, t, n in pool_blocks:
        wanted[migratetypes[t]] += [(order, slot, t, "pool")] * n
    return wanted


def _pack(todo: list[_Wanted], start: int, end: int, pieces: list[_Piece]) -> tuple[int, list[_Wanted]]:
    """Place ``todo`` in [start, end) largest first, so each block is aligned; returns the
    first page after them and the blocks that did not fit (they spill to the next region)."""
    spill = []
    cursor = start
    for order, slot, t, kind in sorted(todo, key=lambda w: -w[0]):
        if cursor + (1 << order) > end:
            spill.append((order, slot, t, kind))
            continue
        pieces.append(_Piece(cursor, order, kind, slot, t))
        cursor += 1 << order
    return cursor, spill


def _count_unplaced(spill: list[_Wanted], report: SeedReport) -> None:
    """The blocks the arena had no room for."""
    for _, _, _, kind in spill:
        if kind == "pool":
            report.pool_unplaced += 1
        else:
            report.pcp_unplaced_blocks += 1


def _aligned(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as the largest aligned blocks: no two of them are free buddies."""
    out = []
    while start < end:
        order = MAX_PAGE_ORDER
        while start & ((1 << order) - 1) or start + (1 << order) > end:
            order -= 1
        out.append((start, order))
        start += 1 << order
    return out


def _allocate(models: list[CpuAllocator], pieces: list[_Piece]) -> dict[tuple[int, int, int], list[int]]:
    """Pool and filler blocks allocated through each policy's alloc(), one lone block at a time."""
    pool: dict[tuple[int, int, int], list[int]] = {}
    zone = models[0].zone
    for p in pieces:
        if p.kind == "pcp":
            continue
        mt = models[p.slot].policy.migratetypes[p.t]
        zone.put_free_block(p.pfn, p.order, mt)
        got = models[p.slot].policy.alloc(p.t, p.order)
        if got != p.pfn:
            raise RuntimeError(f"start state: {models[p.slot].policy.name} allocated pfn {got}, "
                               f"not the lone free block {p.pfn} (order {p.order})")
        if p.kind == "pool":
            pool.setdefault((p.slot, p.order, p.t), []).append(p.pfn)
    return pool


def _fill_pcps(models: list[CpuAllocator], pieces: list[_Piece]) -> None:
    """Each list's blocks alone on the free lists, then rmqueue_bulk() and _enter(): a refill."""
    lists: dict[tuple[int, int, int], list[int]] = {}
    for p in pieces:
        if p.kind == "pcp":
            lists.setdefault((p.slot, p.order, p.t), []).append(p.pfn)
    zone = models[0].zone
    for (slot, order, t), pfns in lists.items():
        mt = models[slot].policy.migratetypes[t]
        for pfn in pfns:
            zone.put_free_block(pfn, order, mt)
        policy = models[slot].policy
        # alone on the free list: ALLOC_NOFRAGMENT would change nothing
        blocks = zone.rmqueue_bulk(order, mt, len(pfns), False)
        if sorted(blocks) != sorted(pfns):
            raise RuntimeError(f"start state: rmqueue_bulk() gave {len(blocks)} blocks, "
                               f"not the {len(pfns)} put alone on the free list")
        pcp = policy._pcp_of_type()[t]
        lst = policy._lists[t][order]
        policy._enter(pcp, lst, blocks, order, t)
        pcp.count += len(blocks) << order


def _label_regions(arena: Arena, regions: list[tuple[int, int, int]]) -> None:
    """Each region's pageblocks marked with its migratetype."""
    for start, size, mt in regions:
        arena.pageblock[start >> PAGEBLOCK_ORDER:(start + size) >> PAGEBLOCK_ORDER] = mt


def _free_regions(zone: Zone, free_blocks: list[tuple[int, int, int]]) -> None:
    """The free blocks onto the buddy's free lists of their region's migratetype."""
    for pfn, order, mt in free_blocks:
        zone.put_free_block(pfn, order, mt, to_tail=True)


def alloc_factor_at_start(first_refill: int | None, frees: int, batch: int, scale_max: int) -> int | None:
    """pcp->alloc_factor when the trace began, from the CPU's first order-0 refill, or None.

    nr_pcp_alloc() takes ``batch << alloc_factor`` blocks (unless ``high``
    leaves less room) and only an order-0 refill raises alloc_factor;
    free_frozen_page_commit() halves it at every free.  A first refill of
    exactly ``batch << k`` blocks after ``frees`` frees says it was at least
    ``k << frees`` at the start (capped at PCP_BATCH_SCALE_MAX); any other size
    (a refill cut by ``high``, or by the trace's start) says nothing, nor
    does ``k == 0`` after a free.
    """
    if not first_refill or batch <= 0 or first_refill % batch:
        return None
    k = (first_refill // batch).bit_length() - 1
    if first_refill != batch << k or (k == 0 and frees):
        return None
    return min(k << min(frees, scale_max), scale_max)


def _reset(models: list[CpuAllocator], plan: StartPlan, saved: list[list[tuple[int, int]]],
           report: SeedReport) -> None:
    """PCP tuning state as at boot but for high (and alloc_factor where the trace shows
    it), every counter zeroed."""
    zone = models[0].zone
    zone.z[Z_CLAIMS] = zone.z[Z_STEALS] = 0
    zone.flags_from_watermarks()
    for slot, model in enumerate(models):
        policy = model.policy
        start = plan.cpus[slot] if slot < len(plan.cpus) else None
        factors = {_reset_pcp(pcp, boot_high, flags, start)
                   for pcp, (boot_high, flags) in zip(policy.pcps, saved[slot])}
        model.counters.reset()
        if slot < len(report.pcp):
            report.pcp[slot]["high_model"] = sum(p.high for p in policy.pcps)
            report.pcp[slot]["alloc_factor"] = factors.pop() if len(factors) == 1 else None
            report.pcp[slot]["count_model"] = policy.pcp_pages()


def _reset_pcp(pcp: PerCpuPages, boot_high: int, flags: int, start: CpuStart | None) -> int | None:
    """One PCP's tuning state at the start: the captured high, alloc_factor where the trace
    shows it (returned, None where not), the rest as at boot."""
    factor = (alloc_factor_at_start(start.first_refill, start.frees_before_refill, pcp.batch,
                                    pcp.scale_max) if start is not None else None)
    pcp.alloc_factor = factor or 0
    pcp.free_count = 0
    pcp.flags = flags
    high = start.high if start is not None else None
    pcp.high = boot_high if high is None else min(max(high, pcp.high_min), pcp.high_max)
    return factor
