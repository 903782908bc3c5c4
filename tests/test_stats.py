"""pcpd.model.stats: counters folded into a real arena, snapshots read back, every derived figure."""

from __future__ import annotations

import numpy as np
import pytest

from pcpd.model import stats
from pcpd.model.arena import Arena, Geometry
from pcpd.model.stats import (
    BLOCK_WORDS,
    INDEX,
    NAMES,
    NR_STATS,
    Counters,
    Snapshot,
    derive,
    read_snapshot,
    retire,
    stranded_by_type,
    wait_quantile,
)
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON


@pytest.fixture
def arena():
    """A bare arena with two CPU slots (stats blocks 0 and 1) and the retired block (2)."""
    arena = Arena.create(Geometry(pages=512, record_bytes=64, ncpus=2, ring_slots=8))
    yield arena
    arena.close()
    arena.unlink()


def counters(**values: int) -> Counters:
    c = Counters()
    for name, value in values.items():
        c.v[INDEX[name]] = value
    return c


def window(**values: int) -> dict[str, int]:
    """Every counter zero but those named: what Snapshot.since() or totals() hands derive()."""
    out = dict.fromkeys(NAMES, 0)
    out.update(values)
    return out


def blocks(*per_cpu: dict[str, int]) -> Snapshot:
    rows = np.zeros((len(per_cpu), NR_STATS), dtype=np.int64)
    for cpu, values in enumerate(per_cpu):
        for name, value in values.items():
            rows[cpu, INDEX[name]] = value
    return Snapshot(rows, np.zeros(NR_STATS, dtype=np.int64))


# --- Counters: the hot-path list and its fold ------------------------------------

def test_counters_start_at_zero_and_read_by_name():
    c = Counters()
    assert list(c.v) == [0] * NR_STATS
    c.v[stats.ALLOC_HIT] += 3
    c.v[stats.alloc_index(stats.MEMDESC_TYPES.index("slab"), 9)] += 2
    assert c["alloc_hit"] == 3
    assert c["alloc_slab_order_9"] == 2
    assert c["alloc_slab_order_8"] == 0


def test_fold_publishes_the_whole_list_and_overwrites_the_last_fold(arena):
    c = counters(alloc_hit=5, lock_wait_max_ns=40)
    arena.stats[0, NR_STATS:] = -1                       # padding after the counters, if any
    c.fold(arena.stats[0])
    assert arena.stats[0, INDEX["alloc_hit"]] == 5
    assert arena.stats[0, INDEX["lock_wait_max_ns"]] == 40
    c.v[INDEX["alloc_hit"]] = 7                          # cumulative: the block takes the new value
    c.fold(arena.stats[0])
    assert arena.stats[0, INDEX["alloc_hit"]] == 7
    assert (arena.stats[0, NR_STATS:] == -1).all()       # the fold stays inside its counters
    assert (arena.stats[1] == 0).all()                   # and inside its own block
    assert BLOCK_WORDS % 8 == 0 and BLOCK_WORDS >= NR_STATS


def test_a_real_cpu_publishes_what_its_policy_counted():
    """Two CpuAllocators allocate and free, publish their gauges and fold; the snapshot agrees."""
    spec = ModelSpec(pages=2048, record_bytes=64, policy="legacy", ncpus=2)
    model = create_arena(spec, ring_slots=8)
    try:
        cpus = [CpuAllocator(model, spec, SharedLocks.local(), slot) for slot in range(2)]
        for n, cpu in enumerate(cpus):
            held = [cpu.policy.alloc(T_ANON, 0) for _ in range(10 * (n + 1))]
            for pfn in held[:5]:
                cpu.policy.free(pfn, 0, T_ANON)
            cpu.policy.publish_gauges()
            cpu.counters.fold(model.stats[cpu.cpu])
        snap = read_snapshot(model)
        assert snap.cpu(0, "alloc_anon_order_0") == 10 and snap.cpu(1, "alloc_anon_order_0") == 20
        assert snap.total("free_type_anon") == 10
        assert snap.ops() == 30 + 10
        assert snap.total("pcp_pages") == sum(cpu.policy.pcp_pages() for cpu in cpus) > 0
        figs = derive(snap.totals())
        assert figs.allocs == figs.allocs_served == 30        # nothing failed
        assert snap.total("alloc_refill") >= 2               # each CPU's first allocation refilled
        assert figs.pcp_hit_rate == snap.total("alloc_hit") / 30 < 1
        del cpus
    finally:
        model.close()
        model.unlink()


# --- Snapshots -----------------------------------------------------------------------

def test_read_snapshot_reads_both_workers_and_the_retired_block(arena):
    counters(alloc_hit=5, pcp_pages=30, lock_waiters_max=2).fold(arena.stats[0])
    counters(alloc_hit=7, pcp_pages=12, lock_waiters_max=1).fold(arena.stats[1])
    counters(alloc_hit=100, pcp_pages=999, lock_waiters_max=3).fold(arena.stats[2])   # retired
    snap = read_snapshot(arena)
    assert snap.per_cpu.shape == (2, NR_STATS) and snap.retired.shape == (NR_STATS,)
    assert (snap.cpu(0, "alloc_hit"), snap.cpu(1, "alloc_hit")) == (5, 7)
    assert snap.total("alloc_hit") == 112                # counters: live blocks + retired
    assert snap.total("pcp_pages") == 42                 # gauges: live blocks only
    assert snap.total("lock_waiters_max") == 3           # maxima: the largest, retired included
    assert snap.totals()["alloc_hit"] == 112 and set(snap.totals()) == set(NAMES)


def test_a_snapshot_is_a_copy(arena):
    c = counters(alloc_hit=5)
    c.fold(arena.stats[0])
    snap = read_snapshot(arena)
    c.v[INDEX["alloc_hit"]] = 50
    c.fold(arena.stats[0])
    assert snap.total("alloc_hit") == 5
    assert read_snapshot(arena).total("alloc_hit") == 50


def test_since_takes_increments_but_gauges_and_maxima_as_now():
    earlier = blocks({"alloc_hit": 10, "pcp_pages": 100, "lock_wait_max_ns": 5})
    later = blocks({"alloc_hit": 25, "pcp_pages": 40, "lock_wait_max_ns": 9})
    d = later.since(earlier)
    assert (d["alloc_hit"], d["pcp_pages"], d["lock_wait_max_ns"]) == (15, 40, 9)
    assert set(d) == set(NAMES)


def test_retire_folds_counters_and_maxima_but_not_gauges(arena):
    retired = arena.stats[2]
    counters(alloc_hit=4, lock_hold_max_ns=10, pcp_pages=50).fold(retired)
    counters(alloc_hit=6, lock_hold_max_ns=30, pcp_pages=8).fold(arena.stats[0])
    retire(retired, arena.stats[0])
    assert retired[INDEX["alloc_hit"]] == 10
    assert retired[INDEX["lock_hold_max_ns"]] == 30
    assert retired[INDEX["pcp_pages"]] == 50
    assert (arena.stats[0] == 0).all()


# --- Derived figures ---------------------------------------------------------------

def test_counts_are_sums_of_their_counters():
    figs = derive(window(alloc_anon_order_0=6, alloc_slab_order_9=4, free_type_anon=3, free_type_file=2,
                         alloc_hit=6, alloc_refill=2, alloc_buddy=1, alloc_fail_no_memory=1,
                         alloc_fail_watermark=2, drains_high=2, drains_decay=1, drain_pages_high=60,
                         drain_pages_decay=3, slab_alloc=4, slab_free=3))
    assert (figs.allocs, figs.allocs_served, figs.frees, figs.ops) == (10, 9, 5, 15)
    assert figs.alloc_failures == 3
    assert (figs.drains, figs.drain_pages) == (3, 63)
    assert figs.slab_ops == 7 and figs.slab_ops_per_op == 7 / 15


def test_hit_rate_is_over_allocations_served_not_attempted():
    # 10 attempted, 2 failed: 6 hits of the 8 that got memory
    figs = derive(window(alloc_anon_order_0=10, alloc_hit=6, alloc_refill=1, alloc_buddy=1,
                         alloc_fail_no_memory=2))
    assert figs.pcp_hit_rate == 6 / 8
    assert figs.pcp_hit_rate != 6 / 10


def test_cachelines_by_memory():
    figs = derive(window(alloc_anon_order_0=3, free_type_anon=1,
                         lines_written_page_state=10, lines_read_page_state=2, lines_written_tail_undo=5,
                         lines_read_buddy=3, desc_lines_written=4, desc_lines_read=1, data_lines_written=6))
    assert (figs.struct_page_lines_written, figs.struct_page_lines_read) == (15, 5)
    assert figs.struct_page_lines == 20
    assert figs.lines_by_cause["page_state"] == 12 and figs.lines_by_cause["tail_undo"] == 5
    assert figs.lines_by_cause["buddy"] == 3 and figs.lines_by_cause["memdesc_set"] == 0
    assert (figs.descriptor_lines, figs.free_memory_lines, figs.cachelines) == (5, 6, 31)
    assert figs.struct_page_lines_per_op == 20 / 4
    assert figs.descriptor_lines_per_op == 5 / 4
    assert figs.cachelines_per_op == 31 / 4


def test_zone_lock_figures():
    figs = derive(window(alloc_anon_order_0=400, lock_acquisitions=50, lock_contended=10,
                         lock_wait_ns=30_000, lock_wait_bucket_0=8, lock_wait_bucket_1=2,
                         lock_hold_ns=125_000))
    assert figs.lock_acquisitions_per_1k_ops == 1000 * 50 / 400
    assert figs.lock_contended_ratio == 10 / 50
    assert figs.lock_wait_mean_seconds == pytest.approx(3e-6)          # per contended acquisition
    assert figs.lock_hold_mean_seconds == pytest.approx(2.5e-6)        # per acquisition, every one
    assert figs.lock_wait_p50_seconds == wait_quantile([8, 2] + [0] * 10, 0.5)
    assert figs.lock_wait_p99_seconds == wait_quantile([8, 2] + [0] * 10, 0.99)
    assert figs.lock_wait_p50_seconds == pytest.approx(640e-9)        # 5 of bucket 0's 8: 5/8 of 1024 ns
    assert figs.lock_wait_p99_seconds == pytest.approx((1024 + 3072 * 0.95) * 1e-9)   # 1.9 of bucket 1's 2


def test_throughput_is_ops_over_the_seconds_given():
    assert derive(window(free_type_anon=300), 2.0).ops_per_second == 150.0
    assert derive(window(free_type_anon=300)).ops_per_second is None
    assert derive(window(free_type_anon=300), 0.0, empty=0.0).ops_per_second == 0.0


RATIOS = ("pcp_hit_rate", "lock_acquisitions_per_1k_ops", "lock_contended_ratio", "lock_wait_mean_seconds",
          "lock_hold_mean_seconds",
          "struct_page_lines_per_op", "descriptor_lines_per_op", "cachelines_per_op", "slab_ops_per_op",
          "ops_per_second")


@pytest.mark.parametrize("name", RATIOS)
def test_a_ratio_over_nothing_is_the_empty_value(name):
    """No operations, allocations, acquisitions or time: undefined, or the caller's stand-in."""
    nothing = window(lines_written_page_state=5, desc_lines_read=2, slab_alloc=1, alloc_hit=0,
                     lock_wait_ns=7, lock_hold_ns=7)
    assert getattr(derive(nothing, 0.0), name) is None
    assert getattr(derive(nothing, 0.0, empty=0.0), name) == 0.0


def test_wait_quantiles_stay_none_without_contention_whatever_empty_is():
    figs = derive(window(alloc_anon_order_0=5, lock_acquisitions=5), 1.0, empty=0.0)
    assert figs.lock_contended_ratio == 0.0
    assert figs.lock_wait_p50_seconds is None and figs.lock_wait_p99_seconds is None


@pytest.mark.parametrize("buckets, q, expected_ns", [
    ([10], 0.5, 512),                                        # bucket 0: 0..1024 ns, halfway
    ([0, 4], 0.5, 1024 + (4096 - 1024) * 0.5),               # bucket 1: 1024..4096
    ([5, 5], 0.5, 1024),                                     # the rank ends bucket 0
    ([0, 0, 2, 2], 0.99, 16384 + (65536 - 16384) * 0.98),
    ([0] * 11 + [3], 0.5, 2 ** 30),                          # overflow: its lower bound
    ([0, 4, 0], 0.0, 1024),                                  # q = 0: the first non-empty bucket's bottom
    ([0, 4, 0], 1.0, 4096),                                  # q = 1: the last non-empty bucket's top
])
def test_wait_quantile_interpolates_within_a_bucket(buckets, q, expected_ns):
    assert wait_quantile(buckets, q) == pytest.approx(expected_ns / 1e9)


def test_wait_quantile_of_nothing_is_none():
    assert wait_quantile([0] * 12, 0.5) is None


@pytest.mark.parametrize("ns, bucket", [(0, 0), (1024, 0), (1025, 1), (2 ** 30, 10), (2 ** 30 + 1, 11)])
def test_wait_bucket_upper_bounds_are_inclusive(ns, bucket):
    assert stats.wait_bucket(ns) == bucket


# --- Stranded pages ---------------------------------------------------------------

def test_stranded_pages_sit_where_their_type_is_never_allocated():
    start = blocks({}, {}, {})
    end = blocks(
        # CPU 0 allocates netpool and holds netpool pages: not stranded
        {"alloc_netpool_order_0": 10, "pcp_pages_type_netpool": 40, "alloc_miss_type_netpool": 3,
         "alloc_miss_type_anon": 5},
        # CPU 1 never allocates netpool and holds 70 of them, while it refilled anon twice
        {"alloc_anon_order_0": 10, "pcp_pages_type_netpool": 70, "alloc_miss_type_anon": 2,
         "pcp_pages_type_anon": 5},
        # CPU 2 holds 30 netpool pages it never allocates, and refilled nothing
        {"alloc_anon_order_0": 10, "pcp_pages_type_netpool": 30},
    )
    stranded = stranded_by_type(start, end)
    assert stranded["netpool"] == (100, 2)
    assert stranded["anon"] == (0, 0)                     # CPU 1 allocates anon itself


def test_a_replaced_worker_counts_from_its_restart():
    start = blocks({"alloc_netpool_order_0": 500, "alloc_miss_type_anon": 9})
    end = blocks({"alloc_netpool_order_0": 0, "alloc_miss_type_anon": 2, "pcp_pages_type_netpool": 8})
    assert stranded_by_type(start, end)["netpool"] == (8, 2)


def test_typed_holding_counts_each_types_pages_and_those_stranded_since_the_start_given():
    start = blocks({"alloc_netpool_order_0": 4}, {})
    end = blocks({"alloc_netpool_order_0": 4, "pcp_pages_type_netpool": 40, "pcp_pages_type_anon": 3},
                 {"alloc_anon_order_0": 10, "pcp_pages_type_netpool": 70})
    since_start = stats.typed_holding(start, end)
    assert (since_start.by_type["netpool"], since_start.by_type["anon"]) == (110, 3)
    # CPU 0 allocated no netpool after ``start``: its 40 pages too are stranded in that window
    assert (since_start.stranded["netpool"], since_start.stranded["anon"]) == (110, 3)
    assert since_start.stranded_pages == 113
    whole_run = stats.typed_holding(None, end)             # None: since the counters' start
    assert (whole_run.stranded["netpool"], whole_run.stranded_pages) == (70, 73)
