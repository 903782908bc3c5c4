"""The shared policy suite: what every policy must satisfy, built in or installed as a plug-in.

A policy joins by being registered: ``SUITE`` is the registry
(``pcpd.policies.POLICIES``), so a built-in entry or an installed
``pcpd.policies`` entry point is enough, and a plug-in that cannot be loaded
fails here by name.  Four properties, each on the policy's default struct
page and, where it models more than one, on its smallest:

conservation
    random allocations, frees, cross-CPU hand-offs, drains and decays on two
    CPUs; after each burst the page array alone accounts for every page
    (buddy + PCP + allocated + in flight = total, no orphan, no overlap, free
    lists consistent, free buddies merged), and after everything is freed and
    drained the zone is whole again with no descriptor leaked.
recovery after kill
    a CPU slot busy with every kind of state is abandoned as a SIGKILL leaves
    it; the daemon's ``reclaim_slot`` must leave a clean audit, take only what
    that slot owned, keep what is still travelling, and let a replacement
    carry on until everything is back in the buddy.
audit
    every state is classified to its owner, and a block whose head record is
    wiped is caught.
cost-table sanity
    ``pcpd costs`` measures the policy: every (type, order) has its rows, the
    counts are non-negative and add up by cause, a PCP hit takes no
    zone->lock and a miss refills under one, and every allocation writes the
    state that says it is allocated.
traced == charged
    the same rows, measured over a TracedArena: every row (hit, miss, bypass,
    owner) charges exactly the lines its accessors touched, each once (the
    rules and their conventions: tests/test_traced_lines.py).
"""

from __future__ import annotations

import random

import pytest
from audit_blocks import pages_by_cpu
from test_traced_lines import mismatches

from pcpd.analysis.costs import cost_table
from pcpd.daemon.audit import audit
from pcpd.daemon.recovery import reclaim_slot
from pcpd.kernel import MAX_PAGE_ORDER
from pcpd.model import rings
from pcpd.model.arena import H_SLAB_TOP
from pcpd.model.lock import ZoneLock
from pcpd.model.memmap import memdesc_word
from pcpd.model.pagewords import NIL
from pcpd.model.stats import Counters
from pcpd.model.zone import Zone
from pcpd.policies import POLICIES
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import TYPES

SUITE = list(POLICIES)          # every registered policy; see the module docstring


def layouts() -> list[tuple[str, int]]:
    """(policy, record bytes): each policy's default page, and its smallest where that differs."""
    out = []
    for name in SUITE:
        try:
            traits = POLICIES[name]
        except ValueError:                   # a broken plug-in: fail in the test, by name
            out.append((name, 64))
            continue
        out.append((name, traits.default_record_bytes))
        if min(traits.record_sizes) != traits.default_record_bytes:
            out.append((name, min(traits.record_sizes)))
    return out


def ids(layout: tuple[str, int]) -> str:
    return f"{layout[0]}-{layout[1]}B"


class Machine:
    """An arena and one CpuAllocator per CPU slot, tracking who holds what."""

    def __init__(self, policy: str, record_bytes: int, ncpus: int = 2, pages: int = 4096,
                 **knobs) -> None:
        self.spec = ModelSpec(pages=pages, record_bytes=record_bytes, policy=policy, ncpus=ncpus, **knobs)
        self.arena = create_arena(self.spec)
        self.locks = SharedLocks.local()
        self.cpus: list[CpuAllocator | None] = [CpuAllocator(self.arena, self.spec, self.locks, s)
                                                for s in range(ncpus)]
        self.held: list[list[tuple[int, int, int]]] = [[] for _ in range(ncpus)]
        self.queued: list[tuple[int, int, int, int]] = []      # src, dst, pfn, order: in a ring
        self.half_sent: list[tuple[int, int, int]] = []        # in flight, never queued

    def policy(self, slot: int):
        cpu = self.cpus[slot]
        assert cpu is not None
        return cpu.policy

    def alloc(self, slot: int, t: int, order: int) -> bool:
        pfn = self.policy(slot).alloc(t, order)
        if pfn == NIL:
            return False
        assert pfn % (1 << order) == 0
        self.held[slot].append((pfn, order, t))
        return True

    def free(self, slot: int, pick: int) -> None:
        pfn, order, t = self.held[slot].pop(pick % len(self.held[slot]))
        self.policy(slot).free(pfn, order, t)

    def send(self, src: int, dst: int, pick: int, queue: bool = True) -> None:
        """A cross-CPU free as a worker makes one: in flight, then onto the ring to dst."""
        pfn, order, t = self.held[src].pop(pick % len(self.held[src]))
        self.policy(src).send(pfn, order, t, dst)
        if queue and rings.Outbox(self.arena, src).push(dst, rings.encode(pfn, t, order)):
            self.queued.append((src, dst, pfn, order))
        else:
            self.half_sent.append((pfn, order, t))

    def receive(self, dst: int) -> int:
        """What Worker.receive does: claim each entry, then free it here."""
        policy = self.policy(dst)
        taken = rings.Inbox(self.arena, dst).take(lambda pfn, t, order: policy.receive(pfn, order, t))
        for pfn, t, order in taken:
            policy.free(pfn, order, t)
        self.queued = [q for q in self.queued if q[1] != dst]
        return len(taken)

    def kill(self, slot: int) -> None:
        self.cpus[slot] = None
        self.held[slot] = []

    def restart(self, slot: int) -> None:
        self.cpus[slot] = CpuAllocator(self.arena, self.spec, self.locks, slot)

    def recover(self, slot: int) -> None:
        counters = Counters()
        zone = Zone(self.arena, ZoneLock(self.locks.zone, self.arena, counters, slot), counters)
        with self.locks.slab, zone.lock:
            reclaim_slot(self.arena, zone, slot)

    def shut_down(self) -> None:
        """As the daemon's stop: everyone frees what it holds, then takes its inbox and drains."""
        live = [s for s, cpu in enumerate(self.cpus) if cpu is not None]
        for slot in live:
            while self.held[slot]:
                self.free(slot, -1)
        for slot in live:
            self.receive(slot)
        for slot in live:
            cpu = self.cpus[slot]
            assert cpu is not None
            cpu.release()

    def owned(self, slot: int) -> dict[str, list[tuple[int, int]]]:
        result = audit(self.arena)
        return {state: sorted((p, o) for p, o, c in zip(b.pfn.tolist(), b.order.tolist(), b.cpu.tolist())
                              if c == slot)
                for state, b in result.blocks.items() if state != "buddy"}

    def close(self) -> None:
        self.cpus = []
        try:
            self.arena.close()
        finally:
            self.arena.unlink()


@pytest.fixture
def make_machine():
    made: list[Machine] = []

    def make(policy: str, record_bytes: int, **kwargs) -> Machine:
        made.append(Machine(policy, record_bytes, **kwargs))
        return made[-1]

    yield make
    for m in made:
        m.close()


def check_accounted(m: Machine) -> None:
    """The page array alone accounts for every page, as the machine and the PCPs say."""
    result = audit(m.arena)
    assert result.ok, result.describe_problems()
    heads = dict(zip(result.blocks["buddy"].pfn.tolist(), result.blocks["buddy"].order.tolist()))
    for pfn, order in heads.items():
        assert pfn % (1 << order) == 0
        mate = pfn ^ (1 << order)
        if order < MAX_PAGE_ORDER and mate < m.arena.pages:
            assert heads.get(mate) != order, f"free buddies {pfn} and {mate} of order {order} not merged"
    pcp = pages_by_cpu(result.blocks["pcp"])
    for slot, cpu in enumerate(m.cpus):
        if cpu is not None:
            assert pcp.get(slot, 0) == cpu.policy.pcp_pages()
    allocated = sorted(zip(result.blocks["allocated"].pfn.tolist(), result.blocks["allocated"].cpu.tolist()))
    assert allocated == sorted((pfn, slot) for slot, held in enumerate(m.held) for pfn, _, _ in held)
    inflight = sorted(result.blocks["inflight"].pfn.tolist())
    assert inflight == sorted([q[2] for q in m.queued] + [h[0] for h in m.half_sent])
    assert sum(result.pages(s) for s in ("buddy", "pcp", "allocated", "inflight")) == result.total


def check_whole(m: Machine) -> None:
    """Everything back in the buddy, fully merged, no descriptor leaked."""
    result = audit(m.arena)
    assert result.ok, result.describe_problems()
    assert result.pages("buddy") == m.arena.pages
    assert result.blocks["buddy"].order.tolist() == [MAX_PAGE_ORDER] * (m.arena.pages >> MAX_PAGE_ORDER)
    if m.spec.memdesc:
        assert m.arena.header[H_SLAB_TOP] == m.arena.geometry.desc_slots


ORDERS = (0, 0, 0, 0, 1, 2, 3, 4, 9, 9, 10)


def run_random(m: Machine, rng: random.Random, n: int) -> None:
    """n operations of every kind on random CPUs, types and orders."""
    kinds = ["alloc"] * 6 + ["free"] * 4 + ["send", "receive", "drain", "decay"]
    for _ in range(n):
        kind, slot = rng.choice(kinds), rng.randrange(len(m.cpus))
        if kind == "alloc" or (kind in ("free", "send") and not m.held[slot]):
            m.alloc(slot, rng.randrange(len(TYPES)), rng.choice(ORDERS))
        elif kind == "free":
            m.free(slot, rng.randrange(1 << 20))
        elif kind == "send":
            m.send(slot, (slot + 1) % len(m.cpus), rng.randrange(1 << 20))
        elif kind == "receive":
            m.receive(slot)
        elif kind == "drain":
            m.policy(slot).drain_all()
        else:
            m.policy(slot).decay()


# -- conservation -------------------------------------------------------------------------

@pytest.mark.parametrize("layout", layouts(), ids=ids)
@pytest.mark.parametrize("era, batch", [("6.7", 0), ("5.13", 7)])
def test_conservation(make_machine, layout, era, batch):
    policy, record_bytes = layout
    m = make_machine(policy, record_bytes, era=era, batch=batch)
    rng = random.Random(f"{policy}/{record_bytes}/{era}")
    for _ in range(4):
        run_random(m, rng, 150)
        check_accounted(m)
    assert m.half_sent == []                          # every send found room in its ring
    m.shut_down()
    check_accounted(m)
    check_whole(m)


# -- recovery after kill ---------------------------------------------------------------------

# (type, order) of the blocks a busy slot holds: PCP orders, buddy orders, Misc, THPs
BLOCKS = [(0, 0), (1, 0), (2, 1), (4, 0), (0, 2), (5, 1), (1, 4), (0, 9), (0, 3), (4, 1), (5, 0), (3, 0)]


def make_busy(m: Machine) -> None:
    """Slot 1 allocates, frees onto its PCP, hands blocks to slot 0 (one hand-off half done);
    slot 0 does the same towards slot 1."""
    for t, order in BLOCKS * 3:
        assert m.alloc(1, t, order)
    for _ in range(8):
        m.free(1, 0)
    for _ in range(4):
        m.send(1, 0, 0)
    for _ in range(2):
        m.send(1, 0, 0, queue=False)                  # killed between marking and queueing
    for t, order in BLOCKS[:6] * 2:
        assert m.alloc(0, t, order)
    for _ in range(3):
        m.free(0, 0)
    for _ in range(3):
        m.send(0, 1, 0)


@pytest.mark.parametrize("layout", layouts(), ids=ids)
def test_recovery_after_kill(make_machine, layout):
    policy, record_bytes = layout
    m = make_machine(policy, record_bytes)
    make_busy(m)
    check_accounted(m)
    slot0 = m.owned(0)
    travelling = sorted(pfn for _, _, pfn, _ in m.queued)
    m.kill(1)
    m.recover(1)
    m.half_sent.clear()                               # reclaimed: in flight but in no ring
    after = audit(m.arena)
    assert after.ok, after.describe_problems()
    assert m.owned(1)["pcp"] == m.owned(1)["allocated"] == []
    assert m.owned(0)["allocated"] == slot0["allocated"]
    assert sorted(after.blocks["inflight"].pfn.tolist()) == travelling
    m.restart(1)
    m.receive(1)
    m.receive(0)
    for t, order in BLOCKS:                           # the replacement allocates as usual
        assert m.alloc(1, t, order)
    check_accounted(m)
    m.shut_down()
    check_whole(m)


# -- audit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", layouts(), ids=ids)
def test_audit_classifies_every_state_and_catches_a_wiped_head(make_machine, layout):
    policy, record_bytes = layout
    m = make_machine(policy, record_bytes)
    fresh = audit(m.arena)
    assert fresh.ok and fresh.pages("buddy") == m.arena.pages
    make_busy(m)
    result = audit(m.arena)
    assert result.ok, result.describe_problems()
    assert {s: result.pages(s) > 0 for s in ("pcp", "allocated", "inflight")} == \
        {"pcp": True, "allocated": True, "inflight": True}
    check_accounted(m)
    pfn, order, _ = m.held[1][0]                      # wipe an allocated block's head record
    w = m.arena.record_bytes // 8
    word = memdesc_word(record_bytes) if m.spec.memdesc else 0
    m.arena.mem[pfn * w + word] = 0
    assert not audit(m.arena).ok


# -- cost-table sanity and traced == charged ------------------------------------------------

COST_TYPES, COST_ORDERS = ("anon", "slab", "kernel"), (0, 2, 4, 9)


@pytest.fixture(scope="module")
def cost_rows():
    """Each policy's traced cost-table rows, measured once for both tests below."""
    measured: dict[str, list] = {}

    def rows(policy: str) -> list:
        if policy not in measured:
            measured[policy] = cost_table(policies=[policy], types=COST_TYPES, orders=COST_ORDERS)
        return measured[policy]

    return rows


@pytest.mark.interpreted
@pytest.mark.parametrize("policy", SUITE)
def test_cost_table_is_sane(cost_rows, policy):
    types, orders = COST_TYPES, COST_ORDERS
    rows = cost_rows(policy)
    assert {r["policy"] for r in rows} == {policy}
    for memdesc in types:
        for order in orders:
            cell = [r for r in rows if r["memdesc"] == memdesc and r["order"] == order]
            assert any(r["op"] == "alloc" for r in cell), (memdesc, order)
            assert any(r["op"] == "free" for r in cell), (memdesc, order)
    for r in rows:
        where = (r["memdesc"], r["order"], r["op"], r["pcp"])
        counts = [v for k, v in r.items() if isinstance(v, int) and not isinstance(v, bool)
                  and k not in ("order", "record_bytes")]
        assert min(counts) >= 0, where
        assert r["struct_page_lines_written"] == sum(r["by_cause"]["written"].values()), where
        assert r["struct_page_lines_read"] == sum(r["by_cause"]["read"].values()), where
        assert r["descriptor_lines"] == r["descriptor_lines_written"] + r["descriptor_lines_read"], where
        if r["pcp"] == "hit":
            assert r["zone_lock_acquisitions"] == 0 and r["drain_pages"] == 0, where
        if r["op"] == "alloc" and r["pcp"] == "miss":
            assert r["refill_pages"] > 0 and r["zone_lock_acquisitions"] >= 1, where
        if r["op"] == "free" and r["pcp"] == "miss":
            assert r["drain_pages"] > 0 and r["zone_lock_acquisitions"] >= 1, where
        if r["pcp"] == "bypass":
            assert r["zone_lock_acquisitions"] >= 1, where
        if r["op"] == "alloc":                        # something must say the block is taken
            assert r["struct_page_lines_written"] + r["descriptor_lines_written"] \
                + r["free_memory_lines_written"] > 0, where


@pytest.mark.interpreted
@pytest.mark.parametrize("policy", SUITE)
def test_traced_lines_equal_charges(cost_rows, policy):
    rows = cost_rows(policy)
    assert rows and all("traced" in r for r in rows)
    assert [p for r in rows for p in mismatches(r)] == []
