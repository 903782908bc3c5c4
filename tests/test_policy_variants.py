"""What each added policy changes: legacy-tailmask, compound-lazy, compound-contig.

The shared suite (test_policy_suite.py) holds every policy to conservation,
recovery and audit; these tests pin down each variant's one difference from
the policy it varies, in pages and in counted cachelines.
"""

from __future__ import annotations

import random

import pytest

from pcpd.daemon.audit import audit
from pcpd.model.pagewords import NIL, PG_HEAD, PG_PCP, W_LINK
from pcpd.model.stats import NAMES
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, T_FILE, T_KERNEL, T_PAGETABLE, TYPES
from workers.policies.tailmask import TAIL_INFO, compound_head

THP = 9
# a PCP big enough for a THP refill of 2 blocks (batch 63 >> 9 -> 2) and no drain
KNOBS = {"pages": 16384, "batch": 63, "high_min": 3920, "high_max": 28672}


@pytest.fixture
def make_cpu():
    made = []

    def make(policy: str, ncpus: int = 1, **knobs):
        spec = ModelSpec(policy=policy, ncpus=ncpus, **{**KNOBS, **knobs})
        arena = create_arena(spec)
        locks = SharedLocks.local()
        cpus = [CpuAllocator(arena, spec, locks, slot) for slot in range(ncpus)]
        made.append((arena, cpus))
        return arena, cpus

    yield make
    for arena, cpus in made:
        cpus.clear()
        try:
            arena.close()
        finally:
            arena.unlink()


def tails(arena, pfn: int, order: int, word: int = W_LINK):
    return arena.mem[(pfn + 1) * 8 + word:(pfn + (1 << order)) * 8:8]


# -- legacy-tailmask -------------------------------------------------------------------

def test_tailmask_tails_of_one_order_are_identical_and_find_their_head(make_cpu):
    arena, (cpu,) = make_cpu("legacy-tailmask")
    a, b = cpu.policy.alloc(T_ANON, THP), cpu.policy.alloc(T_FILE, THP)
    assert a != b
    for head in (a, b):
        info = tails(arena, head, THP)
        assert (info == TAIL_INFO[THP]).all()          # the same word whatever the head
        assert {compound_head(int(i), head + k + 1) for k, i in enumerate(info)} == {head}
    small = cpu.policy.alloc(T_ANON, 2)
    assert (tails(arena, small, 2) == TAIL_INFO[2]).all() and TAIL_INFO[2] != TAIL_INFO[THP]
    assert compound_head(int(arena.mem[small * 8 + W_LINK]), small) == small    # a head is no tail


def test_tailmask_writes_the_same_lines_as_legacy():
    """The encoding changes what the tails hold, not how many lines a round trip writes."""
    def counts(policy: str) -> list[dict[str, int]]:
        spec = ModelSpec(policy=policy, ncpus=2, pages=8192)
        arena = create_arena(spec)
        try:
            locks = SharedLocks.local()
            cpus = [CpuAllocator(arena, spec, locks, slot) for slot in range(2)]
            rng, held = random.Random(14), []
            for _ in range(600):
                cpu = rng.randrange(2)
                if held and rng.random() < 0.45:
                    pfn, order, t = held.pop(rng.randrange(len(held)))
                    cpus[cpu].policy.free(pfn, order, t)
                else:
                    t, order = rng.randrange(len(TYPES)), rng.choice((0, 0, 1, 3, 4, 9))
                    pfn = cpus[cpu].policy.alloc(t, order)
                    if pfn != NIL:
                        held.append((pfn, order, t))
            return [{n: cpu.counters.v[i] for i, n in enumerate(NAMES)
                     if not (n.endswith("_ns") or "wait_bucket" in n)} for cpu in cpus]
        finally:
            cpus = []
            arena.close()
            arena.unlink()

    legacy = counts("legacy")
    assert counts("legacy-tailmask") == legacy
    assert sum(cpu["lines_written_compound_prep"] for cpu in legacy) > 0


# -- compound-lazy ----------------------------------------------------------------------

def prep_undo(cpu) -> tuple[int, int]:
    c = cpu.counters
    return c["lines_written_compound_prep"], c["lines_written_tail_undo"]


def test_lazy_refill_preps_nothing_and_the_first_allocation_preps_once(make_cpu):
    _, (eager,) = make_cpu("compound")
    _, (lazy,) = make_cpu("compound-lazy")
    for cpu in (eager, lazy):
        pfn = cpu.policy.alloc(T_ANON, THP)           # a refill of two THPs, one handed out
        cpu.policy.free(pfn, THP, T_ANON)
        assert cpu.policy.alloc(T_ANON, THP) == pfn   # the hit: compound state kept
    assert prep_undo(eager) == (2 * 511, 0)           # both refilled THPs prepped at the refill
    assert prep_undo(lazy) == (511, 0)                # only the one handed out
    for cpu in (eager, lazy):
        cpu.policy.free(pfn, THP, T_ANON)
        cpu.release()
    assert prep_undo(eager) == (2 * 511, 2 * 511)     # the drain undoes both
    assert prep_undo(lazy) == (511, 511)              # only the prepped one


def test_lazy_keeps_unprepped_blocks_plain_on_the_pcp(make_cpu):
    arena, (cpu,) = make_cpu("compound-lazy")
    pfn = cpu.policy.alloc(T_ANON, THP)
    other = next(p for p in audit(arena).blocks["pcp"].pfn.tolist())
    assert not arena.mem[other * 8] & PG_HEAD and not tails(arena, other, THP).any()
    assert arena.mem[pfn * 8] & PG_HEAD and (tails(arena, pfn, THP) == (pfn << 1) | 1).all()


# -- compound-contig ---------------------------------------------------------------------

def test_contig_keeps_a_noncompound_free_on_the_pcp_as_it_is(make_cpu):
    arena, (cpu,) = make_cpu("compound-contig")
    c = cpu.counters
    pfn = cpu.policy.alloc(T_KERNEL, 2)               # served from the PCP, not the buddy
    assert c["alloc_refill"] == 1 and c["alloc_buddy"] == 0
    cpu.policy.free(pfn, 2, T_KERNEL)
    assert c["free_pcp"] == 1 and c["free_buddy"] == 0
    assert arena.mem[pfn * 8] & PG_PCP and not arena.mem[pfn * 8] & PG_HEAD
    assert not tails(arena, pfn, 2).any()             # not made compound: no tail written
    assert c["lines_written_compound_prep"] == 0


def test_contig_preps_a_plain_block_for_a_compound_allocation_and_undoes_for_a_plain_one(make_cpu):
    arena, (cpu,) = make_cpu("compound-contig", batch=1)
    c = cpu.counters
    plain = cpu.policy.alloc(T_KERNEL, 2)
    cpu.policy.free(plain, 2, T_KERNEL)
    # a compound allocation of the same migratetype pops it and preps it then
    assert cpu.policy.alloc(T_PAGETABLE, 2) == plain
    assert c["lines_written_compound_prep"] == 3 and (tails(arena, plain, 2) == (plain << 1) | 1).all()
    cpu.policy.free(plain, 2, T_PAGETABLE)            # stays compound on the PCP
    assert arena.mem[plain * 8] & PG_HEAD
    assert cpu.policy.alloc(T_KERNEL, 2) == plain     # handed out plain: the tails undone
    assert c["lines_written_tail_undo"] >= 3 and not tails(arena, plain, 2).any()


def test_compound_sends_the_same_free_to_the_buddy(make_cpu):
    _, (cpu,) = make_cpu("compound")
    pfn = cpu.policy.alloc(T_KERNEL, 2)
    cpu.policy.free(pfn, 2, T_KERNEL)
    assert cpu.counters["free_buddy"] == 1 and cpu.counters["alloc_buddy"] == 1
