"""pcp-buddy: the pageblock-owning PCP (Weiner's pcp buddy allocator RFC, van Riel's remote llist).

Claims take whole pageblocks under one zone->lock and split them outside it;
frees of an owned pageblock's blocks go back to its owner, in this process at
once and across processes as ring messages; drains merge bottom-up and give
whole pageblocks (and their ownership) back; phase 0 recovers fragments.
"""

from __future__ import annotations

import pytest
from audit_blocks import pages_by_cpu

from pcpd.daemon.audit import audit
from pcpd.kernel import MIGRATE_MOVABLE, MIGRATE_UNMOVABLE, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from pcpd.model import rings
from pcpd.model.arena import C_STATE, Arena
from pcpd.model.memmap import NIL, PG_PCP
from workers import worker
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, T_KERNEL
from workers.policies.pcp_buddy import OFFLINE_STATES, PG_PCP_BUDDY

# a PCP that holds several pageblocks without draining (the reference zone's limits)
KNOBS = {"pages": 8192, "batch": 63, "high_min": 3920, "high_max": 28672}


@pytest.fixture
def make_cpus():
    made = []

    def make(ncpus: int = 2, separate: bool = False, **knobs) -> tuple[Arena, list[CpuAllocator]]:
        """``separate``: each CPU on its own mapping of the arena, as in its own process."""
        spec = ModelSpec(policy="pcp-buddy", ncpus=ncpus, **{**KNOBS, **knobs})
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


def test_without_whole_pageblocks_the_refill_is_todays(make_cpus):
    arena, (cpu, _) = make_cpus(pages=2048)
    pins = []
    for _ in range(4):                                # pin a page in every pageblock
        pins.append(cpu.policy.alloc(T_ANON, 0))
        cpu.policy._drain(cpu.policy.pcp, cpu.policy.pcp_pages(), 0, "high")
        cpu.policy.fragmented.clear()                 # and forget them: phase 0 finds nothing
    assert {p >> PAGEBLOCK_ORDER for p in pins} == {0, 1, 2, 3}
    c = cpu.counters
    refills, owners = c["refills"], arena.pbowner.tolist()
    pfn = cpu.policy.alloc(T_ANON, 0)                 # phase 3: rmqueue_bulk of a batch
    assert pfn != NIL and c["refills"] == refills + 1
    assert arena.pbowner.tolist() == owners           # nothing claimed
    cached = audit(arena).blocks["pcp"]               # the batch sits on the cached lists
    assert len(cached.pfn) and not any(arena.mem[p * 8] & PG_PCP_BUDDY for p in cached.pfn.tolist())
    assert audit(arena).ok


def test_a_replacement_inherits_its_slots_pageblocks(make_cpus):
    arena, (cpu, _) = make_cpus()
    pfn = cpu.policy.alloc(T_ANON, 0)
    pb = pfn >> PAGEBLOCK_ORDER
    spec, locks = ModelSpec(policy="pcp-buddy", ncpus=2, **KNOBS), SharedLocks.local()
    new = CpuAllocator(arena, spec, locks, 0)
    assert new.policy.owned == {pb} and new.policy.fragmented == {pb}


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
