"""pcp-buddy: the pageblock-owning PCP (Weiner's pcp buddy allocator RFC, van Riel's remote llist),
and pcp-buddy-spb, its superpageblock steering (van Riel's superpageblock series).

Claims take whole pageblocks under one zone->lock and split them outside it;
frees of an owned pageblock's blocks go back to its owner, in this process at
once and across processes as ring messages; drains merge bottom-up and give
whole pageblocks (and their ownership) back; phase 0 recovers fragments;
without whole pageblocks, phase 2 takes chunks and phase 3 is today's refill,
all four phases under one zone->lock.  pcp-buddy-spb steers each claim by
superpageblock: movable into the fullest clean one, unmovable into tainted ones.
"""

from __future__ import annotations

import random

import pytest
from audit_blocks import pages_by_cpu

from pcpd.daemon.audit import audit
from pcpd.kernel import (
    MAX_PAGE_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_UNMOVABLE,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
)
from pcpd.model import rings
from pcpd.model.arena import C_STATE, Arena
from pcpd.model.linetrace import LineTrace, TracedArena
from pcpd.model.pagewords import NIL, PG_PCP, W_LINK, W_PREV
from pcpd.model.stats import LINES_W
from pcpd.model.zonewords import FREE_LISTS, Z_HEAD
from workers import cpu as cpu_module
from workers import worker
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, T_KERNEL, policy_class
from workers.policies.pcp_buddy import OFFLINE_STATES, PG_PCP_BUDDY, PcpBuddyPolicy
from workers.policies.pcp_buddy_spb import SpbCensus, superpageblock_census, superpageblock_pageblocks

# a PCP that holds several pageblocks without draining (the reference zone's limits)
KNOBS = {"pages": 8192, "batch": 63, "high_min": 3920, "high_max": 28672}


@pytest.fixture
def make_cpus():
    made = []

    def make(ncpus: int = 2, separate: bool = False, policy: str = "pcp-buddy",
             **knobs) -> tuple[Arena, list[CpuAllocator]]:
        """``separate``: each CPU on its own mapping of the arena, as in its own process."""
        spec = ModelSpec(policy=policy, ncpus=ncpus, **{**KNOBS, **knobs})
        arena = create_arena(spec)
        locks = SharedLocks.local()
        views = [Arena.attach(arena.name) if separate else arena for _ in range(ncpus)]
        cpus = [CpuAllocator(view, spec, locks, slot) for slot, view in enumerate(views)]
        made.append((arena, views, cpus))
        return arena, cpus

    yield make
    for arena, views, cpus in made:
        cpus.clear()
        for view in views:
            if view is not arena:
                view.close()
        try:
            arena.close()
        finally:
            arena.unlink()


def take_inbox(cpu: CpuAllocator, arena: Arena) -> int:
    """What a worker does with its inbox: claim each block, then free it here."""
    policy = cpu.policy
    taken = rings.Inbox(arena, cpu.cpu).take(lambda pfn, t, order: policy.receive(pfn, order, t))
    for pfn, t, order in taken:
        policy.free(pfn, order, t)
    return len(taken)


def test_a_refill_claims_one_whole_pageblock_under_one_lock(make_cpus):
    arena, (cpu, _) = make_cpus()
    c = cpu.counters
    pfn = cpu.policy.alloc(T_ANON, 0)
    assert (c["refills"], c["refill_pages"], c["lock_acquisitions"]) == (1, PAGEBLOCK_NR_PAGES, 1)
    pb = pfn >> PAGEBLOCK_ORDER
    assert arena.pbowner[pb] == 1 and cpu.policy.owned == {pb}
    assert cpu.policy.pcp_pages() == PAGEBLOCK_NR_PAGES - 1
    # the split happened outside zone->lock: every order up to 9 now comes without it
    for order in (0, 1, 3, 4, 5, 7, 8):
        got = cpu.policy.alloc(T_ANON, order)
        assert got >> PAGEBLOCK_ORDER == pb
    assert c["lock_acquisitions"] == 1 and c["alloc_buddy"] == 0
    pcp = pages_by_cpu(audit(arena).blocks["pcp"])
    assert pcp == {0: cpu.policy.pcp_pages()}


def test_pieces_are_marked_pcp_buddy_and_a_hit_is_lifo(make_cpus):
    arena, (cpu, _) = make_cpus()
    pfn = cpu.policy.alloc(T_ANON, 0)
    cpu.policy.free(pfn, 0, T_ANON)
    assert arena.mem[pfn * 8] & (PG_PCP | PG_PCP_BUDDY) == PG_PCP | PG_PCP_BUDDY
    hits = cpu.counters["alloc_hit"]
    assert cpu.policy.alloc(T_ANON, 0) == pfn
    assert cpu.counters["alloc_hit"] == hits + 1


def test_a_free_on_another_cpu_goes_back_to_the_owner(make_cpus):
    arena, (owner, other) = make_cpus()
    pfn = owner.policy.alloc(T_ANON, 2)
    owner.policy.send(pfn, 2, T_ANON, 1)              # the workload hands it to CPU 1 ...
    other.policy.receive(pfn, 2, T_ANON)
    before = owner.policy.pcp_pages()
    other.policy.free(pfn, 2, T_ANON)                 # ... whose free routes it home
    assert owner.policy.pcp_pages() == before + 4 and other.policy.pcp_pages() == 0
    assert other.counters["free_remote_out"] == 1 and owner.counters["free_remote_in"] == 1
    assert other.counters["lock_acquisitions"] == 0
    assert pages_by_cpu(audit(arena).blocks["pcp"]) == {0: before + 4}


def test_across_processes_the_free_is_a_ring_message(make_cpus):
    arena, (owner, other) = make_cpus(separate=True)
    pfn = owner.policy.alloc(T_ANON, 0)
    other.policy.receive(pfn, 0, T_ANON)
    other.policy.free(pfn, 0, T_ANON)
    result = audit(arena)
    assert result.ok and result.blocks["inflight"].pfn.tolist() == [pfn]   # on the ring to its owner
    assert other.policy.pcp_pages() == 0
    assert take_inbox(owner, arena) == 1
    assert owner.policy.alloc(T_ANON, 0) == pfn       # back on the owner's PCP, cache-hot
    assert audit(arena).ok


def test_an_offline_owner_or_a_full_ring_leaves_the_free_here(make_cpus):
    arena, (owner, other) = make_cpus(separate=True)
    a, b = owner.policy.alloc(T_ANON, 0), owner.policy.alloc(T_ANON, 0)
    for state in OFFLINE_STATES:
        arena.cpuctl[0, C_STATE] = state
        other.policy.receive(a, 0, T_ANON)
        other.policy.free(a, 0, T_ANON)              # unowned treatment: onto CPU 1's PCP
        assert arena.mem[a * 8] & PG_PCP and not arena.mem[a * 8] & PG_PCP_BUDDY
        assert other.policy.pcp_pages() == 1
        assert other.policy.alloc(T_ANON, 0) == a
    arena.cpuctl[0, C_STATE] = worker.STATE_RUNNING
    ring = rings.Outbox(arena, 1)
    while ring.push(0, rings.encode(0, 0, 0)):        # fill CPU 1's ring to CPU 0
        pass
    other.policy.receive(b, 0, T_ANON)
    other.policy.free(b, 0, T_ANON)
    assert arena.mem[b * 8] & PG_PCP and other.policy.pcp_pages() == 1


def test_offline_states_are_the_workers(make_cpus):
    assert OFFLINE_STATES == (worker.STATE_STOPPING, worker.STATE_EXITED)


def test_a_drain_merges_and_gives_whole_pageblocks_back_with_their_ownership(make_cpus):
    arena, (cpu, _) = make_cpus()
    held = [cpu.policy.alloc(T_ANON, 0) for _ in range(PAGEBLOCK_NR_PAGES)]   # the whole pageblock
    pb = held[0] >> PAGEBLOCK_ORDER
    assert {p >> PAGEBLOCK_ORDER for p in held} == {pb}
    for pfn in held:                                  # back as 512 order-0 pieces
        cpu.policy.free(pfn, 0, T_ANON)
    assert cpu.policy.pcp_pages() == PAGEBLOCK_NR_PAGES
    assert cpu.policy.drain_all() == PAGEBLOCK_NR_PAGES
    c = cpu.counters
    assert c["lines_written_buddy"] > 0                # the merge pass ran on the PCP
    assert arena.pbowner[pb] == 0 and not cpu.policy.owned
    blocks = audit(arena).blocks["buddy"]             # and the zone got it back whole
    assert arena.pages == blocks.pages and set(blocks.order.tolist()) == {10}


def test_fragments_stay_owned_and_phase_0_recovers_them(make_cpus):
    arena, (cpu, _) = make_cpus()
    kept = cpu.policy.alloc(T_ANON, 0)                # pins the pageblock: it cannot go back whole
    pb = kept >> PAGEBLOCK_ORDER
    cpu.policy._drain(cpu.policy.pcp, cpu.policy.pcp_pages(), 0, "high")     # fragments to the zone
    assert cpu.policy.pcp_pages() == 0
    assert arena.pbowner[pb] == 1 and pb in cpu.policy.fragmented
    zone_pages = cpu.zone.free_pages
    pfn = cpu.policy.alloc(T_ANON, 3)                 # phase 0: the fragments come back, not a new block
    assert pfn >> PAGEBLOCK_ORDER == pb
    assert cpu.zone.free_pages == zone_pages - (PAGEBLOCK_NR_PAGES - 1)
    assert cpu.policy.owned == {pb} and not cpu.policy.fragmented
    assert audit(arena).ok


def test_a_whole_pageblock_claim_takes_the_requested_type(make_cpus):
    arena, (cpu, _) = make_cpus()
    pfn = cpu.policy.alloc(T_KERNEL, 0)               # unmovable, from an all-movable zone
    pb = pfn >> PAGEBLOCK_ORDER
    # __rmqueue_claim() took the largest fallback, an order-10 block, and changed both its
    # pageblocks (the other half stays in the zone as unmovable); the rest are still movable
    assert arena.pageblock[pb] == arena.pageblock[pb ^ 1] == MIGRATE_UNMOVABLE
    assert [b for b in range(len(arena.pageblock)) if arena.pageblock[b] != MIGRATE_MOVABLE] == \
        sorted((pb, pb ^ 1))
    assert arena.pbowner[pb] == 1 and arena.pbowner[pb ^ 1] == 0


def pin_every_pageblock(cpu) -> list[int]:
    """One page allocated in every pageblock of a 2048-page zone, the rest of each back in
    the zone as fragments the CPU has forgotten: no whole pageblock, nothing for phase 0."""
    pins = []
    for _ in range(4):
        pins.append(cpu.policy.alloc(T_ANON, 0))
        cpu.policy._drain(cpu.policy.pcp, cpu.policy.pcp_pages(), 0, "high")
        cpu.policy.fragmented.clear()
    assert {p >> PAGEBLOCK_ORDER for p in pins} == {0, 1, 2, 3}
    return pins


def test_without_whole_pageblocks_phase_2_takes_chunks_and_splits_them_on_the_pcp(make_cpus):
    arena, (cpu, _) = make_cpus(pages=2048)
    pin_every_pageblock(cpu)
    c = cpu.counters
    refills, locks, owners = c["refills"], c["lock_acquisitions"], arena.pbowner.tolist()
    pfn = cpu.policy.alloc(T_ANON, 0)
    assert pfn != NIL and c["refills"] == refills + 1
    assert c["lock_acquisitions"] == locks + 1             # all four phases under one zone->lock
    assert arena.pbowner.tolist() == owners                # nothing claimed
    cached = sorted(audit(arena).blocks["pcp"].pfn.tolist() + [pfn])
    assert not any(arena.mem[p * 8] & PG_PCP_BUDDY for p in cached)
    # order-0 blocks of larger chunks: runs of contiguous pages (rmqueue_bulk() would take
    # the smallest blocks first, the order-0 fragment of each pageblock)
    runs = sum(1 for a, b in zip(cached, cached[1:]) if b == a + 1)
    assert runs >= len(cached) // 2
    assert audit(arena).ok


def test_phase_3_is_todays_rmqueue_bulk_with_its_fallbacks(make_cpus):
    arena, (cpu, _) = make_cpus(pages=2048)
    pin_every_pageblock(cpu)                          # every free page is movable
    c = cpu.counters
    locks = c["lock_acquisitions"]
    pfn = cpu.policy.alloc(T_KERNEL, 0)               # phase 2 finds no unmovable chunk
    assert pfn != NIL and c["lock_acquisitions"] == locks + 1
    assert arena.pageblock[pfn >> PAGEBLOCK_ORDER] == MIGRATE_UNMOVABLE   # __rmqueue_claim()
    assert not arena.mem[pfn * 8] & PG_PCP_BUDDY and audit(arena).ok


def test_a_replacement_inherits_its_slots_pageblocks(make_cpus):
    arena, (cpu, _) = make_cpus()
    pfn = cpu.policy.alloc(T_ANON, 0)
    pb = pfn >> PAGEBLOCK_ORDER
    spec, locks = ModelSpec(policy="pcp-buddy", ncpus=2, **KNOBS), SharedLocks.local()
    new = CpuAllocator(arena, spec, locks, 0)
    assert new.policy.owned == {pb} and new.policy.fragmented == {pb}


def piece_list(mem, head: int, most: int) -> list[int]:
    """A PCP buddy free list walked through its struct page links, first piece first
    (at most ``most`` + 1 pieces: a list that does not end shows as one too long)."""
    out = []
    while head != NIL and len(out) <= most:
        out.append(head)
        head = int(mem[head * 8 + W_LINK])
    return out


@pytest.mark.interpreted
def test_piece_lists_are_linked_through_struct_page():
    """The pieces' lists are page->buddy_list lists: the links are stored in the pieces'
    struct pages, in the order of the policy's index, and list_del() of a piece in the
    middle stores into both neighbours, each charged (traced: exactly those two lines)."""
    spec = ModelSpec(policy="pcp-buddy", ncpus=1, **KNOBS)
    arena = create_arena(spec)
    try:
        trace = LineTrace()
        cpu = CpuAllocator(TracedArena(arena, trace), spec, SharedLocks.local(), 0)
        policy, v = cpu.policy, cpu.counters.v
        held = [policy.alloc(T_ANON, 0) for _ in range(8)]
        for pfn in held[0:6:2]:                       # no two of them buddies: no merging
            policy.free(pfn, 0, T_ANON)
        lst = policy.free_lists[0][arena.pageblock[held[0] >> PAGEBLOCK_ORDER]]
        oldest, middle, first = held[0:6:2]
        assert list(lst) == [oldest, middle, first]
        assert piece_list(arena.mem, first, 3) == [first, middle, oldest]
        assert int(arena.mem[oldest * 8 + W_PREV]) == middle and int(arena.mem[first * 8 + W_PREV]) == NIL
        trace.clear()
        links = v[LINES_W["list_link"]]
        policy._piece_del(lst, middle, 0)
        assert v[LINES_W["list_link"]] - links == 2
        assert trace.written["memmap"] == {oldest, first}          # one 64-byte line per page
        assert piece_list(arena.mem, first, 2) == [first, oldest] and list(lst) == [oldest, first]
        assert int(arena.mem[oldest * 8 + W_PREV]) == first
        del cpu, policy
    finally:
        arena.close()
        arena.unlink()


def test_a_pageblock_whose_type_changes_while_owned_still_merges(make_cpus):
    """The zone may claim an owned pageblock's fragments for another type (try_to_claim_block());
    pieces filed under the old type still merge with the ones filed under the new."""
    arena, (cpu, _) = make_cpus()
    held = [cpu.policy.alloc(T_ANON, 0) for _ in range(8)]
    pb = held[0] >> PAGEBLOCK_ORDER
    for pfn in held[::2]:
        cpu.policy.free(pfn, 0, T_ANON)               # filed under MOVABLE
    arena.pageblock[pb] = MIGRATE_UNMOVABLE           # as the zone's claim would
    for pfn in held[1::2]:
        cpu.policy.free(pfn, 0, T_ANON)               # filed under UNMOVABLE
    assert cpu.policy.drain_all() == PAGEBLOCK_NR_PAGES
    assert audit(arena).ok and cpu.zone.free_pages == arena.pages


# -- pcp-buddy-spb: superpageblock steering (van Riel) ------------------------------------

def watched(policy: type[PcpBuddyPolicy]) -> type[PcpBuddyPolicy]:
    """The policy, recording every phase-1 claim in ``claims``: the census before it, the
    type, what it took.  (A subclass: a compiled policy has no instance dict to patch.)"""

    class Watched(policy):                             # type: ignore[valid-type, misc]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.claims: list[tuple[SpbCensus, int, list[tuple[int, int]]]] = []

        def _claim_new(self, order: int, mt: int) -> list[tuple[int, int]]:
            census = superpageblock_census(self.arena)
            got = super()._claim_new(order, mt)
            self.claims.append((census, mt, got))
            return got

    return Watched


def steering_violations(seen) -> int:
    """Claims that break the series' rules: a movable claim not in the fullest clean
    superpageblock with a free pageblock (lowest first among equals), when there is one;
    a non-movable claim outside the tainted superpageblocks when one has a free pageblock."""
    bad = 0
    for census, mt, got in seen:
        if not got:
            continue
        spb = (got[0][0] >> PAGEBLOCK_ORDER) // census.size
        if mt == MIGRATE_MOVABLE:
            clean = [s for s in range(len(census.total)) if not census.tainted[s]
                     and 0 < census.nr_free[s] < census.total[s]]
            if clean and spb != min(clean, key=lambda s: (census.nr_free[s], s)):
                bad += 1
        elif any(census.tainted & (census.nr_free > 0)) and not census.tainted[spb]:
            bad += 1
    return bad


@pytest.mark.parametrize("policy, steered", [("pcp-buddy-spb", True), ("pcp-buddy", False)])
def test_claims_steer_by_superpageblock(make_cpus, monkeypatch, policy, steered):
    """A seeded mix of movable and unmovable traffic on two CPUs: the steered policy keeps
    every rule at every claim; the same traffic under pcp-buddy breaks them (the rules
    are not met by chance), and taints more superpageblocks."""
    monkeypatch.setattr(cpu_module, "policy_class", lambda name: watched(policy_class(name)))
    arena, cpus = make_cpus(policy=policy, pages=32768)
    assert superpageblock_pageblocks(len(arena.pageblock)) == 4
    seen = [cpu.policy.claims for cpu in cpus]
    rng = random.Random(7)
    held: list[list[tuple[int, int, int]]] = [[], []]
    for step in range(3000):
        c = rng.randrange(2)
        if held[c] and rng.random() < 0.45:
            pfn, order, t = held[c].pop(rng.randrange(len(held[c])))
            cpus[c].policy.free(pfn, order, t)
        else:
            t = rng.choice((T_ANON, T_ANON, T_ANON, T_KERNEL))
            order = rng.choice((0, 0, 2, 9))
            pfn = cpus[c].policy.alloc(t, order)
            if pfn != NIL:
                held[c].append((pfn, order, t))
        if step % 500 == 499:
            cpus[c].policy.drain_all()
    claims = [claim for per_cpu in seen for claim in per_cpu]
    assert len(claims) > 20 and {mt for _, mt, _ in claims} == {MIGRATE_MOVABLE, MIGRATE_UNMOVABLE}
    violations = steering_violations(claims)
    assert (violations == 0) if steered else (violations > 0)
    assert audit(arena).ok


def test_an_unmovable_refill_adopts_a_fragment_of_a_full_tainted_superpageblock(make_cpus):
    arena, (a, b, c) = make_cpus(ncpus=3, policy="pcp-buddy-spb")
    assert superpageblock_pageblocks(len(arena.pageblock)) == 2
    pin = a.policy.alloc(T_KERNEL, 0)                 # an unmovable pageblock in superpageblock 0
    pb = pin >> PAGEBLOCK_ORDER
    b.policy.alloc(T_ANON, PAGEBLOCK_ORDER)           # its neighbour, movable and in use
    a.policy.drain_all()                              # pb's fragments back in the zone, unowned
    census = superpageblock_census(arena)
    spb = pb // census.size
    assert census.tainted[spb] and census.nr_free[spb] == 0 and arena.pbowner[pb] == 0
    assert sum(census.tainted) == 1 and sum(census.empty) == len(census.total) - 1
    free_before = c.zone.free_pages
    pfn = c.policy.alloc(T_KERNEL, 0)                 # 21/40: adopted rather than an empty one tainted
    assert pfn >> PAGEBLOCK_ORDER == pb and arena.pbowner[pb] == 3
    assert pb in c.policy.fragmented and c.zone.free_pages == free_before - 256
    assert sum(superpageblock_census(arena).tainted) == 1
    assert audit(arena).ok


def lone_free_block(zone, pfn: int, order: int, mt: int) -> None:
    """Every free block off the zone's free lists, then ``pfn`` alone on the list of ``mt``
    whatever its pageblock's label: the state pcpd.replay.start's seed allocates from."""
    for o in range(MAX_PAGE_ORDER + 1):
        for m in range(MIGRATE_PCPTYPES):
            for head in zone.free_blocks(o, m):
                zone.take_free_block(head, o, m)
    zone.put_free_block(pfn, order, mt)


def test_a_claim_takes_its_pageblock_off_the_free_list_that_holds_it(make_cpus):
    """The replay seed puts a lone block on the free list of the type it is allocated as
    before it labels the pageblocks.  A claim must unlink the block from that list, not
    the one its pageblock's label names: else that list keeps the block as its head and
    the next __rmqueue() hands it out a second time."""
    arena, (a, b) = make_cpus(policy="pcp-buddy-spb")
    pin = a.policy.alloc(T_KERNEL, 0)                 # taints superpageblock 0
    pb = (pin >> PAGEBLOCK_ORDER) ^ 1                 # its other pageblock, labelled movable
    assert superpageblock_pageblocks(len(arena.pageblock)) == 2 and arena.pageblock[pb] == MIGRATE_MOVABLE
    zone = b.zone
    lone_free_block(zone, pb << PAGEBLOCK_ORDER, PAGEBLOCK_ORDER, MIGRATE_UNMOVABLE)
    assert b.policy.alloc(T_KERNEL, PAGEBLOCK_ORDER) == pb << PAGEBLOCK_ORDER
    assert zone.free_pages == 0 and {zone.z[Z_HEAD + i] for i in range(FREE_LISTS)} == {NIL}
    assert b.policy.alloc(T_KERNEL, PAGEBLOCK_ORDER) == NIL    # nothing left to hand out twice


def test_superpageblocks_are_a_sixteenth_of_the_arena_up_to_the_real_size():
    assert [superpageblock_pageblocks(n) for n in (4, 16, 64, 512, 8192, 65536)] == [2, 2, 4, 32, 512, 512]
