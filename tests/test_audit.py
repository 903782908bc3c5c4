"""pcpd.daemon.audit: classifying every page from the page array, and catching corruption."""

import pytest
from audit_blocks import pages_by_cpu

from pcpd.daemon.audit import STATES, audit
from pcpd.model.arena import DESC_WORDS
from pcpd.model.memmap import memmap_for
from pcpd.model.pagewords import FLAG_ORDER_SHIFT, MEMDESC_BUDDY
from pcpd.model.slab import D_PFN
from pcpd.model.zonewords import Z_FREE_PAGES, Z_HEAD, Z_NR_FREE
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, T_FILE, T_KERNEL

PAGES = 2048
LAYOUTS = [("legacy", 64), ("compound", 64), ("memdesc", 64), ("memdesc", 32), ("memdesc", 16),
           ("memdesc", 8), ("memdesc-pcpdesc", 32), ("memdesc-pcpdesc", 8)]


@pytest.fixture
def make_model():
    made = []

    def make(policy: str, record_bytes: int, ncpus: int = 1):
        spec = ModelSpec(pages=PAGES, record_bytes=record_bytes, policy=policy, ncpus=ncpus,
                         batch=7)
        arena = create_arena(spec)
        locks = SharedLocks.local()
        cpus = [CpuAllocator(arena, spec, locks, cpu) for cpu in range(ncpus)]
        made.append((arena, cpus))
        return arena, cpus

    yield make
    for arena, cpus in made:
        cpus.clear()
        try:
            arena.close()
        finally:
            arena.unlink()


@pytest.mark.parametrize("policy, record_bytes", LAYOUTS)
def test_fresh_arena_is_all_buddy(make_model, policy, record_bytes):
    arena, _ = make_model(policy, record_bytes)
    result = audit(arena)
    assert result.ok
    assert result.pages("buddy") == PAGES
    assert all(result.pages(s) == 0 for s in STATES if s != "buddy")
    assert result.summary() == \
        f"audit ok: buddy {PAGES} + pcp 0 + allocated 0 + inflight 0 = {PAGES}"


@pytest.mark.parametrize("policy, record_bytes", LAYOUTS)
def test_every_state_is_classified(make_model, policy, record_bytes):
    arena, (cpu0, cpu1) = make_model(policy, record_bytes, ncpus=2)
    kept = cpu0.policy.alloc(T_FILE, 2)
    kernel = cpu0.policy.alloc(T_KERNEL, 0)
    sent = cpu0.policy.alloc(T_ANON, 0)
    cpu0.policy.send(sent, 0, T_ANON, 1)
    freed = cpu1.policy.alloc(T_ANON, 1)
    cpu1.policy.free(freed, 1, T_ANON)
    result = audit(arena)
    assert result.ok, result.describe_problems()
    allocated = result.blocks["allocated"]
    assert sorted(zip(allocated.pfn.tolist(), allocated.order.tolist(), allocated.cpu.tolist())) \
        == sorted([(kept, 2, 0), (kernel, 0, 0)])
    assert result.blocks["inflight"].pfn.tolist() == [sent]
    assert pages_by_cpu(result.blocks["pcp"]) == {0: cpu0.policy.pcp_pages(),
                                                  1: cpu1.policy.pcp_pages()}
    assert sum(result.pages(s) for s in STATES) == PAGES


def _corrupt_free_head(arena, record_bytes: int) -> None:
    """Make the first free block's head page stop looking like a buddy."""
    pfn = int(arena.zone[Z_HEAD + 3 * 10 + 1])
    if record_bytes == 64:
        arena.mem[pfn * 8] = 0
    elif record_bytes == 32:
        arena.mem[pfn * 4] = 0
    elif record_bytes == 16:
        arena.mem[pfn * 2 + 1] = 0
    else:
        arena.mem[pfn] = MEMDESC_BUDDY


@pytest.mark.parametrize("policy, record_bytes", LAYOUTS)
def test_lost_pages_are_orphans(make_model, policy, record_bytes):
    arena, _ = make_model(policy, record_bytes)
    _corrupt_free_head(arena, record_bytes)
    result = audit(arena)
    assert not result.ok
    assert len(result.orphans) == 1024 and result.orphans[0] == 0
    assert any("NR_FREE_PAGES" in p for p in result.problems)
    assert "VIOLATED" in result.summary()


def test_pages_in_two_blocks_are_overlaps(make_model):
    arena, (cpu,) = make_model("legacy", 64)
    pfn = cpu.policy.alloc(T_ANON, 3)
    arena.mem[(pfn + 4) * 8] = arena.mem[pfn * 8] & ~(0xF << FLAG_ORDER_SHIFT) \
        | (2 << FLAG_ORDER_SHIFT)                  # a second head inside the block
    result = audit(arena)
    assert result.overlaps.tolist() == [pfn + 4, pfn + 5, pfn + 6, pfn + 7]
    assert any("two blocks" in p for p in result.describe_problems())


def test_free_list_counters_are_checked(make_model):
    arena, _ = make_model("legacy", 64)
    arena.zone[Z_NR_FREE + 3 * 10 + 1] += 1
    assert any("nr_free" in p for p in audit(arena).problems)
    arena.zone[Z_NR_FREE + 3 * 10 + 1] -= 1
    arena.zone[Z_FREE_PAGES] -= 1
    assert any("NR_FREE_PAGES" in p for p in audit(arena).problems)


def test_broken_list_link_is_reported(make_model):
    arena, _ = make_model("memdesc", 16)
    second = 1024
    memmap = memmap_for(arena)
    memmap.set_prev(second, 5)                       # prev should be 0
    problems = audit(arena).problems
    assert any("bad block at pfn 1024" in p for p in problems)
    del memmap


def test_page_pointing_at_another_blocks_descriptor(make_model):
    arena, (cpu,) = make_model("memdesc", 16)
    a = cpu.policy.alloc(T_FILE, 1)
    b = cpu.policy.alloc(T_FILE, 1)
    arena.mem[(b + 1) * 2] = arena.mem[a * 2]        # b's tail names a's folio
    result = audit(arena)
    assert any("descriptor of another block" in p for p in result.problems)
    assert not result.ok


def test_descriptor_state_decides_the_class(make_model):
    arena, (cpu,) = make_model("memdesc", 8)
    pfn = cpu.policy.alloc(T_ANON, 0)
    idx = int(arena.mem[pfn]) >> 4
    assert arena.descs[idx * DESC_WORDS + D_PFN] == pfn
    assert audit(arena).blocks["allocated"].pfn.tolist() == [pfn]
    arena.descs[idx * DESC_WORDS + D_PFN] = pfn + 1   # the descriptor disowns its page
    result = audit(arena)
    assert not result.ok
    assert pfn in result.orphans.tolist()
