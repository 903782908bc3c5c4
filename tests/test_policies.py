"""workers.policies: the four PCP policies over a real arena.

Buddy invariants after random alloc/free sequences for every policy (no
overlap, aligned free blocks of one order, no unmerged free buddies,
conservation), what each policy keeps on its PCP, the compound and memdesc
options, cross-CPU frees, and determinism.
"""

import random

import numpy as np
import pytest
from audit_blocks import pages_by_cpu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcpd.daemon.audit import audit
from pcpd.kernel import ERAS, MAX_PAGE_ORDER, PAGE_ORDERS
from pcpd.model.arena import DESC_WORDS, H_SLAB_TOP
from pcpd.model.pagewords import MEMDESC_FILE, MEMDESC_PCPDESC, NIL, W_LINK
from pcpd.model.slab import D_PFN, D_STATE, DS_INUSE, DS_PCP
from pcpd.model.stats import ALLOC_GRID, NAMES
from pcpd.policies import record_bytes_for
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import POLICIES, T_ANON, T_FILE, T_KERNEL, T_PAGETABLE, T_SLAB, TYPES, PolicyOptions

PAGES = 2048
# Policies whose PCP is refilled a batch at a time and keeps what its own CPU frees;
# pcp-buddy and pcp-buddy-spb claim whole pageblocks and route frees to their owner
# instead (test_pcp_buddy.py holds them to their own refill, hit and remote-free rules).
BATCH_PCP = [name for name in POLICIES if name not in ("pcp-buddy", "pcp-buddy-spb")]


class Model:
    """An arena, its spec, and one CpuAllocator per CPU."""

    def __init__(self, policy: str, pages: int = PAGES, record_bytes: int | None = None,
                 ncpus: int = 1, **knobs) -> None:
        if record_bytes is None:
            record_bytes = record_bytes_for(policy)
        self.spec = ModelSpec(pages=pages, record_bytes=record_bytes, policy=policy,
                              ncpus=ncpus, **knobs)
        self.arena = create_arena(self.spec)
        locks = SharedLocks.local()
        self.cpus = [CpuAllocator(self.arena, self.spec, locks, cpu) for cpu in range(ncpus)]

    @property
    def policy(self):
        return self.cpus[0].policy

    def close(self) -> None:
        del self.cpus
        try:
            self.arena.close()
        finally:
            self.arena.unlink()


@pytest.fixture
def make_model():
    models = []

    def make(policy: str, **kwargs) -> Model:
        models.append(Model(policy, **kwargs))
        return models[-1]

    yield make
    for m in models:
        m.close()


def free_blocks(arena) -> dict[int, int]:
    result = audit(arena)
    b = result.blocks["buddy"]
    return dict(zip(b.pfn.tolist(), b.order.tolist()))


def fully_merged(pages: int) -> dict[int, int]:
    out, pfn = {}, 0
    while pfn < pages:
        order = MAX_PAGE_ORDER
        while pfn + (1 << order) > pages:
            order -= 1
        out[pfn] = order
        pfn += 1 << order
    return out


# -- driving a model with operations ---------------------------------------------------

ALLOC, FREE, SEND, RECEIVE, DRAIN, DECAY = range(6)
ORDERS = (0, 0, 0, 1, 2, 3, 4, 9, 9, 10)


class Driver:
    """Applies (kind, cpu, type, order, pick) operations and tracks who holds what."""

    def __init__(self, model: Model) -> None:
        self.m = model
        self.held: list[tuple[int, int, int, int]] = []       # cpu, pfn, order, type
        self.inflight: list[tuple[int, int, int, int]] = []   # dst, pfn, order, type

    def apply(self, kind: int, cpu: int, t: int, order: int, pick: int) -> None:
        cpus = self.m.cpus
        cpu %= len(cpus)
        policy = cpus[cpu].policy
        if kind == ALLOC or (kind in (FREE, SEND) and not self.held):
            pfn = policy.alloc(t, order)
            if pfn != NIL:
                assert pfn % (1 << order) == 0
                self.held.append((cpu, pfn, order, t))
        elif kind == FREE:
            owner, pfn, order, t = self.held.pop(pick % len(self.held))
            cpus[owner].policy.free(pfn, order, t)
        elif kind == SEND:
            owner, pfn, order, t = self.held.pop(pick % len(self.held))
            dst = (owner + 1) % len(cpus)
            cpus[owner].policy.send(pfn, order, t, dst)
            self.inflight.append((dst, pfn, order, t))
        elif kind == RECEIVE and self.inflight:
            dst, pfn, order, t = self.inflight.pop(pick % len(self.inflight))
            cpus[dst].policy.receive(pfn, order, t)
            cpus[dst].policy.free(pfn, order, t)
        elif kind == DRAIN:
            policy.drain_all()
        elif kind == DECAY:
            policy.decay()

    def release_everything(self) -> None:
        for dst, pfn, order, t in self.inflight:
            self.m.cpus[dst].policy.receive(pfn, order, t)
            self.m.cpus[dst].policy.free(pfn, order, t)
        for cpu, pfn, order, t in self.held:
            self.m.cpus[cpu].policy.free(pfn, order, t)
        self.held, self.inflight = [], []
        for cpu in self.m.cpus:
            cpu.release()


def check_invariants(driver: Driver) -> None:
    """The page array alone accounts for every page, as the driver and the PCPs say."""
    m = driver.m
    result = audit(m.arena)
    assert result.ok, result.describe_problems()
    buddy = result.blocks["buddy"]
    heads = dict(zip(buddy.pfn.tolist(), buddy.order.tolist()))
    for pfn, order in heads.items():                  # aligned, one order, merged
        assert pfn % (1 << order) == 0
        mate = pfn ^ (1 << order)
        if order < MAX_PAGE_ORDER and mate < m.arena.pages:
            assert heads.get(mate) != order, f"free buddies {pfn}, {mate} of order {order}"
    assert buddy.pages == m.cpus[0].zone.free_pages
    pcp = pages_by_cpu(result.blocks["pcp"])
    for cpu in m.cpus:
        assert pcp.get(cpu.cpu, 0) == cpu.policy.pcp_pages()
    allocated = result.blocks["allocated"]
    assert sorted(zip(allocated.pfn.tolist(), allocated.order.tolist(), allocated.cpu.tolist())) \
        == sorted((pfn, order, cpu) for cpu, pfn, order, _ in driver.held)
    inflight = result.blocks["inflight"]
    assert sorted(zip(inflight.pfn.tolist(), inflight.order.tolist())) \
        == sorted((pfn, order) for _, pfn, order, _ in driver.inflight)
    assert sum(result.pages(s) for s in ("buddy", "pcp", "allocated", "inflight")) == result.total


def check_all_returned(m: Model) -> None:
    assert free_blocks(m.arena) == fully_merged(m.arena.pages)
    assert m.cpus[0].zone.free_pages == m.arena.pages
    if m.spec.memdesc:                               # no descriptor leaked
        assert m.arena.header[H_SLAB_TOP] == m.arena.geometry.desc_slots


operations = st.lists(
    st.tuples(st.sampled_from([ALLOC] * 5 + [FREE] * 4 + [SEND, RECEIVE, RECEIVE, DRAIN, DECAY]),
              st.integers(0, 1), st.integers(0, len(TYPES) - 1), st.sampled_from(ORDERS),
              st.integers(0, 1 << 20)),
    max_size=120)


@pytest.mark.parametrize("policy", list(POLICIES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(era=st.sampled_from(ERAS), batch=st.sampled_from([0, 7, 31]),
       record_bytes=st.sampled_from([64, 32, 16, 8]), ops=operations)
def test_random_sequences_keep_every_invariant(policy, era, batch, record_bytes, ops):
    record_bytes = record_bytes_for(policy, record_bytes)   # legacy and compound: always 64
    m = Model(policy, record_bytes=record_bytes, ncpus=2, era=era, batch=batch)
    try:
        driver = Driver(m)
        for op in ops:
            driver.apply(*op)
        check_invariants(driver)
        driver.release_everything()
        check_invariants(driver)
        check_all_returned(m)
    finally:
        m.close()


def _random_ops(seed: int, n: int) -> list[tuple[int, int, int, int, int]]:
    rng = random.Random(seed)
    kinds = [ALLOC] * 5 + [FREE] * 4 + [SEND, RECEIVE, RECEIVE, DRAIN, DECAY]
    return [(rng.choice(kinds), rng.randrange(2), rng.randrange(len(TYPES)), rng.choice(ORDERS),
             rng.randrange(1 << 20)) for _ in range(n)]


_TIMING = [i for i, name in enumerate(NAMES) if name.endswith("_ns") or "wait_bucket" in name]


def _run_seed(policy: str, seed: int) -> tuple[list[list[int]], bytes]:
    m = Model(policy, ncpus=2)
    try:
        driver = Driver(m)
        for op in _random_ops(seed, 400):
            driver.apply(*op)
        counters = [[v for i, v in enumerate(cpu.counters.v) if i not in _TIMING] for cpu in m.cpus]
        state = m.arena.mem.tobytes() + m.arena.zone.tobytes() + m.arena.descs.tobytes()
        return counters, state
    finally:
        m.close()


@pytest.mark.parametrize("policy", list(POLICIES))
def test_identical_seeds_give_identical_counts(policy):
    first = _run_seed(policy, 2024)
    assert first == _run_seed(policy, 2024)
    assert first[0] != _run_seed(policy, 2025)[0]


# -- per-policy behaviour -----------------------------------------------------------

@pytest.mark.parametrize("policy", ["legacy", "compound"])
def test_todays_policies_need_64_byte_pages(policy):
    spec = ModelSpec(pages=PAGES, record_bytes=16, policy=policy)
    arena = create_arena(spec)
    try:
        with pytest.raises(ValueError, match="64 bytes"):
            CpuAllocator(arena, spec, SharedLocks.local(), 0)
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("t", range(len(TYPES)))
def test_round_trip_of_every_type_and_order(make_model, policy, t):
    m = make_model(policy, pages=4096)
    for order in PAGE_ORDERS:
        pfn = m.policy.alloc(t, order)
        assert pfn != NIL and pfn % (1 << order) == 0
        assert audit(m.arena).blocks["allocated"].pfn.tolist() == [pfn]
        m.policy.free(pfn, order, t)
        assert audit(m.arena).ok
    m.cpus[0].release()
    check_all_returned(m)


@pytest.mark.parametrize("policy", BATCH_PCP)
def test_pcp_hit_returns_the_block_just_freed(make_model, policy):
    m = make_model(policy, batch=31)
    p = m.policy
    pfn = p.alloc(T_ANON, 0)
    p.free(pfn, 0, T_ANON)
    hits = m.cpus[0].counters["alloc_hit"]
    assert p.alloc(T_ANON, 0) == pfn                  # LIFO: cache-hot
    assert m.cpus[0].counters["alloc_hit"] == hits + 1


@pytest.mark.parametrize("policy", BATCH_PCP)
def test_refill_takes_one_batch_under_one_lock(make_model, policy):
    m = make_model(policy, batch=31, pages=4096)
    c = m.cpus[0].counters
    m.policy.alloc(T_ANON, 0)
    assert c["refills"] == 1 and c["refill_pages"] == 31
    assert c["lock_acquisitions"] == 1
    assert m.policy.pcp_pages() == 30
    for _ in range(30):
        m.policy.alloc(T_ANON, 0)
    assert c["lock_acquisitions"] == 1 and c["alloc_hit"] == 30


def test_legacy_undoes_tails_on_free_and_rebuilds_them_on_alloc(make_model):
    m = make_model("legacy", pages=16384, batch=63, high_min=3920, high_max=28672)
    p = m.policy
    pfn = p.alloc(T_ANON, 9)
    mem = m.arena.mem
    tails = mem[(pfn + 1) * 8 + W_LINK:(pfn + 512) * 8:8]
    assert (tails == (pfn << 1) | 1).all()            # compound_head in every tail
    p.free(pfn, 9, T_ANON)
    assert not tails.any()                            # free_tail_page_prepare()
    assert m.cpus[0].counters["lines_written_tail_undo"] == 511
    assert p.alloc(T_ANON, 9) == pfn
    assert (tails == (pfn << 1) | 1).all()
    del tails


def test_compound_keeps_compound_state_on_the_pcp(make_model):
    m = make_model("compound", pages=16384, batch=63, high_min=3920, high_max=28672)
    p = m.policy
    c = m.cpus[0].counters
    pfn = p.alloc(T_ANON, 9)
    prep = c["lines_written_compound_prep"]
    assert prep == 2 * 511                            # both refilled THPs prepped at the refill
    p.free(pfn, 9, T_ANON)
    tails = m.arena.mem[(pfn + 1) * 8 + W_LINK:(pfn + 512) * 8:8]
    assert (tails == (pfn << 1) | 1).all()
    assert p.alloc(T_ANON, 9) == pfn
    assert c["lines_written_compound_prep"] == prep and c["lines_written_tail_undo"] == 0
    p.free(pfn, 9, T_ANON)
    m.cpus[0].release()                               # the drain undoes the tails
    assert c["lines_written_tail_undo"] == 2 * 511
    check_all_returned(m)
    del tails


def test_compound_sends_noncompound_multipage_memory_to_the_buddy(make_model):
    m = make_model("compound", pages=4096)
    c = m.cpus[0].counters
    pfn = m.policy.alloc(T_KERNEL, 2)
    assert c["alloc_buddy"] == 1
    m.policy.free(pfn, 2, T_KERNEL)
    assert c["free_buddy"] == 1 and m.policy.pcp_pages() == 0


def test_compound_converts_noncompound_frees_when_asked(make_model):
    m = make_model("compound", pages=4096, options=PolicyOptions(noncompound_free="convert",
                                                                 noncompound_alloc="pcp"))
    c = m.cpus[0].counters
    # from the PCP: the refill preps its blocks' tails and the allocation undoes them for
    # the caller, the same three lines, charged once (to compound_prep, first in CAUSES)
    pfn = m.policy.alloc(T_KERNEL, 2)
    assert c["alloc_refill"] == 1 and c["lines_written_tail_undo"] == 0
    assert c["lines_read_tail_undo"] == 3             # the tail loop loads what it rewrites
    prep = c["lines_written_compound_prep"]
    m.policy.free(pfn, 2, T_KERNEL)                   # made compound to stay on the PCP
    assert c["free_pcp"] == 1 and c["lines_written_compound_prep"] == prep + 3
    assert audit(m.arena).ok
    m.cpus[0].release()
    check_all_returned(m)


def test_memdesc_keeps_the_descriptor_on_its_type_pcp(make_model):
    m = make_model("memdesc", pages=4096, batch=31)
    p = m.policy
    c = m.cpus[0].counters
    pfn = p.alloc(T_FILE, 3)
    refilled = c["lines_written_memdesc_set"]         # the refill's 3 blocks (lines the buddy left)
    assert refilled > 0
    idx = int(m.arena.mem[pfn * 2]) >> 4               # 16-byte page: word 0 is the memdesc
    assert int(m.arena.mem[pfn * 2]) & 0xF == MEMDESC_FILE
    assert (m.arena.mem[pfn * 2:(pfn + 8) * 2:2] == m.arena.mem[pfn * 2]).all()
    base = idx * DESC_WORDS
    assert m.arena.descs[base + D_PFN] == pfn
    assert (m.arena.descs[base + D_STATE] >> 4) & 0xF == DS_INUSE
    p.free(pfn, 3, T_FILE)
    assert (m.arena.descs[base + D_STATE] >> 4) & 0xF == DS_PCP
    assert p.pcp_pages_by_type()[T_FILE] == p.pcp_pages() > 0
    slab_ops = c["slab_alloc"] + c["slab_free"]
    assert p.alloc(T_FILE, 3) == pfn                  # the folio comes back with its memory
    assert c["slab_alloc"] + c["slab_free"] == slab_ops
    assert c["lines_written_memdesc_set"] == refilled  # only the refill set them


def test_memdesc_types_do_not_share_lists(make_model):
    m = make_model("memdesc", pages=4096, batch=7)
    p = m.policy
    a = p.alloc(T_ANON, 0)
    p.free(a, 0, T_ANON)
    assert p.alloc(T_PAGETABLE, 0) != a               # a pagetable never reuses an anon page here
    assert p.pcp_pages_by_type()[T_ANON] == 7


def test_memdesc_misc_links_live_in_free_memory(make_model):
    m = make_model("memdesc", pages=4096, record_bytes=8, batch=7)
    p = m.policy
    c = m.cpus[0].counters
    pfn = p.alloc(T_KERNEL, 0)
    p.free(pfn, 0, T_KERNEL)
    assert c["data_lines_written"] > 0 and c["desc_lines_written"] == 0
    assert c["slab_alloc"] == 0
    assert audit(m.arena).ok


@pytest.mark.parametrize("budget, most", [("shared", 55), ("per-type", 3 * 55), ("split", 3 * 27)])
def test_memdesc_budget_bounds_the_pages_a_cpu_holds(make_model, budget, most):
    """Shared: the types' lists under one count and one high (free_frozen_page_commit()
    compares the CPU's total), as legacy's lists; per-type: each type's PCP fills to high;
    split: each to high / 6, floored at 4 * batch."""
    m = make_model("memdesc", pages=8192, batch=7, high_min=56, high_max=56,
                   options=PolicyOptions(memdesc_high=budget))
    p = m.policy
    assert len(p.pcps) == (1 if budget == "shared" else len(TYPES))
    blocks = [(p.alloc(t, 0), t) for _ in range(60) for t in (T_ANON, T_FILE, T_SLAB)]
    held = []
    for pfn, t in blocks:
        p.free(pfn, 0, t)
        held.append(p.pcp_pages())
        assert p.pcp_pages() == sum(p.pcp_pages_by_type())
    assert max(held) == most
    m.cpus[0].release()
    check_all_returned(m)


def test_memdesc_shared_budget_tunes_and_drains_per_cpu(make_model):
    """One high, free_count and alloc_factor per CPU; a drain takes from every type."""
    m = make_model("memdesc", pages=8192, batch=7)
    p = m.policy
    [pcp] = p.pcps
    blocks = [(p.alloc(t, 0), t) for _ in range(40) for t in (T_ANON, T_FILE)]
    assert pcp.alloc_factor > 0 and pcp.count == p.pcp_pages() > 0
    for pfn, t in blocks:
        p.free(pfn, 0, t)
    assert pcp.free_count > 0
    before = p.pcp_pages_by_type()
    # from the file list freed to: each list is emptied before the next (file's, then anon's)
    p._drain(pcp, before[T_FILE] + pcp.batch, pcp.list_index(0, 1, T_FILE), "high")
    after = p.pcp_pages_by_type()
    assert after[T_FILE] == 0 and after[T_ANON] == before[T_ANON] - pcp.batch
    p.publish_gauges()
    c = m.cpus[0].counters
    assert (c["pcp_high"], c["pcp_free_count"]) == (pcp.high, pcp.free_count)
    assert c["pcp_pages_type_anon"] == after[T_ANON] and c["pcp_pages"] == sum(after)
    assert audit(m.arena).ok


def test_memdesc_split_high_divides_high_between_types(make_model):
    whole = make_model("memdesc", pages=16384, batch=7,
                       options=PolicyOptions(memdesc_high="per-type")).policy.pcps[0]
    split = make_model("memdesc", pages=16384, batch=7,
                       options=PolicyOptions(memdesc_high="split")).policy.pcps[0]
    assert split.high_min == max(whole.high_min // len(TYPES), 7)
    assert split.high_max == max(whole.high_max // len(TYPES), 7)


def test_pcpdesc_swaps_every_memdesc_word_on_free(make_model):
    m = make_model("memdesc-pcpdesc", pages=4096, batch=31)
    p = m.policy
    pfn = p.alloc(T_SLAB, 3)
    p.free(pfn, 3, T_SLAB)
    words = m.arena.mem[pfn * 2:(pfn + 8) * 2:2]
    assert ((words & 0xF) == MEMDESC_PCPDESC).all()
    assert len(set(words.tolist())) == 1
    del words


@pytest.mark.parametrize("policy", BATCH_PCP)
def test_remote_free_lands_on_the_freeing_cpu(make_model, policy):
    m = make_model(policy, ncpus=2, batch=7)
    src, dst = m.cpus
    pfn = src.policy.alloc(T_ANON, 0)
    src.policy.send(pfn, 0, T_ANON, 1)
    result = audit(m.arena)
    assert result.blocks["inflight"].pfn.tolist() == [pfn]
    dst.policy.receive(pfn, 0, T_ANON)
    dst.policy.free(pfn, 0, T_ANON)
    assert pages_by_cpu(audit(m.arena).blocks["pcp"]) == {0: 6, 1: 1}
    assert dst.policy.pcp_pages() == 1


@pytest.mark.parametrize("policy", list(POLICIES))
def test_exhaustion_fails_cleanly(make_model, policy):
    m = make_model(policy, pages=1024)
    held = []
    while (pfn := m.policy.alloc(T_ANON, 3)) != NIL:
        held.append(pfn)
    assert len(held) == 1024 // 8
    assert m.cpus[0].counters["alloc_fail_no_memory"] == 1
    for pfn in held:
        m.policy.free(pfn, 3, T_ANON)
    m.cpus[0].release()
    check_all_returned(m)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_drain_all_and_decay(make_model, policy):
    m = make_model(policy, pages=8192, batch=7)
    p = m.policy
    held = [p.alloc(T_ANON, 0) for _ in range(500)]
    for pfn in held:
        p.free(pfn, 0, T_ANON)
    assert p.pcp_pages() > 0
    pcp = p.pcps[0]                                   # the anon PCP under memdesc
    pcp.high = pcp.high_max                           # as after a busy period
    before = p.pcp_pages()
    drained = p.decay()
    assert pcp.high_min < pcp.high < pcp.high_max     # down by an eighth
    assert pcp.count <= pcp.high                      # the excess went back
    assert p.pcp_pages() == before - drained
    pages = p.pcp_pages()
    assert p.drain_all() == pages and p.pcp_pages() == 0
    assert m.cpus[0].counters["drain_pages_drain_all"] == pages
    m.cpus[0].release()
    check_all_returned(m)


def test_pcp_gauges_are_published(make_model):
    m = make_model("memdesc", batch=7)
    m.policy.free(m.policy.alloc(T_SLAB, 0), 0, T_SLAB)
    m.policy.publish_gauges()
    c = m.cpus[0].counters
    assert c["pcp_pages"] == 7 and c["pcp_pages_type_slab"] == 7 and c["pcp_batch"] == 7


def test_alloc_grid_counts_type_and_order(make_model):
    m = make_model("legacy")
    m.policy.alloc(T_FILE, 2)
    m.policy.alloc(T_FILE, 2)
    assert m.cpus[0].counters["alloc_file_order_2"] == 2
    grid = np.array(m.cpus[0].counters.v[ALLOC_GRID:ALLOC_GRID + 66])
    assert grid.sum() == 2
