"""workers.cpu: one simulated CPU assembled over a real arena.

``create_arena``/``format_arena`` lay out a zone with every page free and a
full descriptor slab; a ``CpuAllocator`` allocates and frees through its
policy, counting every round trip in its own counters; ``release()`` hands
everything it caches (PCP pages, slab descriptors) back to the shared zone.
"""

from __future__ import annotations

import threading

import pytest

from pcpd.daemon.audit import audit
from pcpd.model.arena import H_MEMDESC, H_SLAB_TOP, Arena
from pcpd.model.stats import NAMES
from pcpd.model.zonewords import Z_FREE_PAGES, Z_WMARK_HIGH, Z_WMARK_LOW, Z_WMARK_MIN
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks, create_arena, format_arena
from workers.policies import T_ANON, T_FILE, T_KERNEL

PAGES = 2048
# (policy, record bytes): today's struct page, and both memdesc policies at 16 bytes
MODELS = [("legacy", 64), ("compound", 64), ("memdesc-pcpdesc", 16), ("memdesc", 16)]


@pytest.fixture
def make_arena():
    made = []

    def make(spec: ModelSpec, ring_slots: int = 1024) -> Arena:
        made.append(create_arena(spec, ring_slots))
        return made[-1]

    yield make
    for arena in made:
        try:
            arena.close()
        except Exception:               # a view outlived the test; the segment still goes
            pass
        finally:
            arena.unlink()


def spec_of(policy: str, record_bytes: int, **kwargs) -> ModelSpec:
    return ModelSpec(pages=PAGES, record_bytes=record_bytes, policy=policy, batch=7, **kwargs)


def all_in_buddy(arena: Arena) -> bool:
    result = audit(arena)
    return result.ok and result.pages("buddy") == arena.pages


# -- create_arena / format_arena -----------------------------------------------------------

@pytest.mark.parametrize("policy, record_bytes", MODELS)
def test_create_arena_lays_out_the_spec(make_arena, policy, record_bytes):
    spec = ModelSpec(pages=PAGES, record_bytes=record_bytes, policy=policy, ncpus=3)
    arena = make_arena(spec, ring_slots=16)
    g = arena.geometry
    assert (g.pages, g.record_bytes, g.ncpus, g.ring_slots) == (PAGES, record_bytes, 3, 16)
    assert arena.header[H_MEMDESC] == int(spec.memdesc)
    assert int(arena.zone[Z_FREE_PAGES]) == PAGES
    w = spec.watermarks()
    assert [int(arena.zone[i]) for i in (Z_WMARK_MIN, Z_WMARK_LOW, Z_WMARK_HIGH)] == [w.min, w.low, w.high]
    assert int(arena.header[H_SLAB_TOP]) == g.desc_slots       # every descriptor free
    assert all_in_buddy(arena)


def test_memdesc_flag_follows_the_policy(make_arena):
    assert make_arena(spec_of("legacy", 64)).header[H_MEMDESC] == 0
    assert make_arena(spec_of("memdesc", 64)).header[H_MEMDESC] == 1


@pytest.mark.parametrize("policy, record_bytes", MODELS)
def test_format_arena_makes_a_used_arena_fresh(make_arena, policy, record_bytes):
    spec = spec_of(policy, record_bytes)
    arena = make_arena(spec)
    cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
    for t, order in ((T_ANON, 0), (T_FILE, 3), (T_KERNEL, 1), (T_ANON, 9)):
        cpu.policy.alloc(t, order)
    assert not all_in_buddy(arena)
    del cpu
    format_arena(arena, spec)
    assert all_in_buddy(arena)
    assert int(arena.header[H_SLAB_TOP]) == arena.geometry.desc_slots
    assert not arena.descs.any()


# -- SharedLocks ------------------------------------------------------------------------------

def test_local_locks_are_two_distinct_plain_locks():
    locks = SharedLocks.local()
    assert locks.zone is not locks.slab
    for lock in (locks.zone, locks.slab):
        assert lock.acquire(False)
        assert not lock.acquire(False)                  # not reentrant: a second CPU waits
        lock.release()
    with locks.zone:
        assert locks.slab.acquire(False)                # holding one does not hold the other
        locks.slab.release()
    other = SharedLocks.local()
    with locks.zone:
        assert other.zone.acquire(False)                # every model gets locks of its own
        other.zone.release()
    assert isinstance(locks.zone, type(threading.Lock()))


# -- CpuAllocator -------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, record_bytes", MODELS)
def test_round_trips_are_counted(make_arena, policy, record_bytes):
    spec = spec_of(policy, record_bytes)
    arena = make_arena(spec)
    cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
    c = cpu.counters
    assert cpu.cpu == 0 and cpu.zone.free_pages == PAGES
    held = [cpu.policy.alloc(T_ANON, 0) for _ in range(5)]
    assert len(set(held)) == 5
    assert c["alloc_anon_order_0"] == 5
    assert c["refills"] == 1 and c["refill_pages"] == 7              # one batch
    assert c["alloc_refill"] == 1 and c["alloc_hit"] == 4
    assert c["lock_acquisitions"] == 1                               # the refill's only
    for pfn in held:
        cpu.policy.free(pfn, 0, T_ANON)
    assert c["free_type_anon"] == 5 and c["free_pcp"] == 5
    assert cpu.policy.pcp_pages() == 7
    # a descriptor for every block on the PCP: memdesc keeps the refill's with the memory,
    # memdesc-pcpdesc swaps a folio and a pcpdesc on every allocation and every free
    slab_ops = {"legacy": (0, 0), "compound": (0, 0), "memdesc": (7, 0), "memdesc-pcpdesc": (7 + 10, 10)}
    assert (c["slab_alloc"], c["slab_free"]) == slab_ops[policy]
    assert not arena.stats.any()                        # counters are this process's own
    assert all(c[name] == 0 for name in NAMES if name.startswith("alloc_fail"))


@pytest.mark.parametrize("policy, record_bytes", MODELS)
def test_release_drains_everything_back_to_the_zone(make_arena, policy, record_bytes):
    spec = spec_of(policy, record_bytes)
    arena = make_arena(spec)
    cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
    blocks = [(cpu.policy.alloc(t, order), order, t)
              for t, order in [(T_ANON, 0)] * 10 + [(T_FILE, 2)] * 3 + [(T_KERNEL, 0)] * 4 + [(T_ANON, 9)]]
    for pfn, order, t in blocks:
        cpu.policy.free(pfn, order, t)
    cached = cpu.policy.pcp_pages()
    assert cached > 0 and cpu.zone.free_pages == PAGES - cached
    if spec.memdesc:
        assert cpu.slab is not None and cpu.slab.local        # descriptors parked on this CPU
    assert cpu.release() == cached
    assert cpu.policy.pcp_pages() == 0
    assert cpu.counters["drain_pages_exit"] == cached
    assert cpu.zone.free_pages == PAGES
    assert all_in_buddy(arena)
    if spec.memdesc:
        assert cpu.slab is not None and cpu.slab.local == []
        assert int(arena.header[H_SLAB_TOP]) == arena.geometry.desc_slots
    assert cpu.release() == 0                            # nothing left the second time


def test_only_memdesc_policies_get_a_slab(make_arena):
    legacy = spec_of("legacy", 64)
    assert CpuAllocator(make_arena(legacy), legacy, SharedLocks.local(), 0).slab is None
    memdesc = spec_of("memdesc", 16)
    assert CpuAllocator(make_arena(memdesc), memdesc, SharedLocks.local(), 0).slab is not None


def test_cpus_sharing_an_arena_count_apart_and_share_the_zone(make_arena):
    spec = ModelSpec(pages=PAGES, record_bytes=16, policy="memdesc", ncpus=2, batch=7)
    arena = make_arena(spec)
    locks = SharedLocks.local()
    cpu0, cpu1 = (CpuAllocator(arena, spec, locks, slot) for slot in (0, 1))
    a = cpu0.policy.alloc(T_ANON, 0)
    b = cpu1.policy.alloc(T_ANON, 0)
    assert a != b
    assert cpu0.counters["alloc_anon_order_0"] == cpu1.counters["alloc_anon_order_0"] == 1
    assert cpu0.zone.free_pages == cpu1.zone.free_pages == PAGES - 14      # two refills of 7
    assert cpu1.counters["lock_owner_switches"] == 1                      # zone->lock went 0 -> 1
    cpu0.policy.free(a, 0, T_ANON)
    cpu1.policy.free(b, 0, T_ANON)
    result = audit(arena)
    assert result.ok
    owners = sorted(set(result.blocks["pcp"].cpu.tolist()))
    assert owners == [0, 1]
    assert cpu0.release() + cpu1.release() == 14
    assert all_in_buddy(arena)
