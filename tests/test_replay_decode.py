"""pcpd.replay.decode: pass 1, trace events to model operations (the rules of its docstring)."""

import sys
import tracemalloc

import pytest
from replay_lines import ANON, PERF, alloc, batched, decode_lines, free, locked, work

from pcpd.kernel import MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE
from pcpd.replay.decode import MAX_DECAY_TICKS, PAIR_WINDOW, Decoder, TracePcp, decode, replay_type
from pcpd.replay.spool import DECAY_ONE_CPU, FLUSH_BYTES, OP_ALLOC, OP_DECAY, OP_FREE, OP_FREE_PRE, OpSpool
from pcpd.replay.trace import CONTEXT_EVENTS, EVENTS, MM_PAGE_ALLOC, MM_PAGE_FREE, MM_PAGE_FREE_BATCHED, TraceEvent
from workers.policies import TYPES


def test_free_batched_pairs_in_either_order():
    lines = [
        alloc(0x100), free(0x100), batched(0x100),      # v4.15+: pass 1 frees, pass 2 batched
        alloc(0x200), batched(0x200), free(0x200),      # v3.3-v4.14: batched, then prepare
        alloc(0x300), batched(0x300),                   # v2.6.33 mm_pagevec_free alone
        alloc(0x400, 9, "GFP_TRANSHUGE"), free(0x400, 9), batched(0x400),   # order=0 printed
    ]
    d, ops = decode_lines(lines)
    assert (d.allocs, d.frees, d.batched_pairs, d.unknown_frees) == (4, 4, 3, 0)
    assert d.order_mismatches == 0
    assert [(kind, order) for kind, _, order, _, _ in ops] == [
        (OP_ALLOC, 0), (OP_FREE, 0), (OP_ALLOC, 0), (OP_FREE, 0),
        (OP_ALLOC, 0), (OP_FREE, 0), (OP_ALLOC, 9), (OP_FREE, 9)]
    assert d.live_pages == d.live_blocks == 0 and d.peak_live_pages == 512


def test_frees_of_pages_allocated_before_the_capture_are_replayed_from_the_pool():
    # the kernel puts them on the freeing CPU's PCP all the same: OP_FREE_PRE, block number 0
    d, ops = decode_lines([free(0x10), batched(0x10), batched(0x20), free(0x30, 2, cpu=1)])
    assert (d.unknown_frees, d.pre_capture_frees, d.split_frees) == (3, 3, 0)
    assert (d.batched_pairs, d.frees) == (1, 0)
    anon = TYPES.index("anon")                   # a movable list's default type
    assert ops == [(OP_FREE_PRE, 0, 0, anon, 0), (OP_FREE_PRE, 0, 0, anon, 0),
                   (OP_FREE_PRE, 1, 2, anon, 0)]
    assert d.pool == {(0, 0, anon): 2, (1, 2, anon): 1} and d.cpus == [0, 1]


def test_pieces_of_a_live_block_are_not_replayed():
    # a split THP freed piece by piece: the head's free releases the whole block
    d, ops = decode_lines([alloc(0x200, 9), free(0x203), free(0x3ff), free(0x200, 9)])
    assert (d.unknown_frees, d.split_frees, d.pre_capture_frees, d.frees) == (2, 2, 0, 1)
    assert [kind for kind, *_ in ops] == [OP_ALLOC, OP_FREE]


def test_pre_capture_blocks_take_the_type_the_trace_allocates_from_their_list():
    pagetable = "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"
    lines = [alloc(0x1000, gfp=pagetable), free(0x1001)]   # pageblock 0x1000 >> 9 is unmovable
    lines[0] = lines[0].replace("migratetype=1", "migratetype=0")
    d, ops = decode_lines(lines)
    assert ops[-1] == (OP_FREE_PRE, 0, 0, TYPES.index("pagetable"), 0)


def test_second_free_of_one_allocation_is_unknown():
    d, ops = decode_lines([alloc(0x10), free(0x10), free(0x10)])
    assert (d.frees, d.unknown_frees, d.pre_capture_frees, len(ops)) == (1, 1, 1, 3)


def test_pairing_forgets_a_free_once_the_page_is_allocated_again():
    # free(0x10) leaves a pending "free"; after the reallocation a batched
    # free of 0x10 must free the new block, not pair with the old free
    d, ops = decode_lines([alloc(0x10), free(0x10), alloc(0x10), batched(0x10)])
    assert (d.frees, d.batched_pairs, d.live_blocks) == (2, 0, 0)


def test_pairing_window_is_bounded():
    lines = [free(0x1000 + i) for i in range(PAIR_WINDOW + 10)] + [batched(0x1000)]
    d, _ = decode_lines(lines)
    assert d.batched_pairs == 0 and d.unknown_frees == PAIR_WINDOW + 11


def test_failed_lost_remote_and_mismatched():
    lines = [
        alloc(0, 9, "GFP_TRANSHUGE"),                  # page=(nil) pfn=0: failed
        alloc(0x10, cpu=0), alloc(0x10, cpu=1),        # the free of the first was lost
        alloc(0x20, cpu=0), free(0x20, cpu=1),         # remote free: on the freeing CPU
        alloc(0x40, 2, "GFP_KERNEL"), free(0x40, 0),   # split_page(): freed at order 2
    ]
    d, ops = decode_lines(lines)
    assert (d.failed_allocs, d.lost_frees, d.remote_frees, d.order_mismatches) == (1, 1, 1, 1)
    kernel = TYPES.index("kernel")
    assert ops == [                                    # kind, cpu, order, type, block number
        (OP_ALLOC, 0, 0, 0, 0), (OP_FREE, 0, 0, 0, 0), (OP_ALLOC, 1, 0, 0, 1),
        (OP_ALLOC, 0, 0, 0, 2), (OP_FREE, 1, 0, 0, 2),
        (OP_ALLOC, 0, 2, kernel, 3), (OP_FREE, 0, 2, kernel, 3)]
    assert d.cpus == [0, 1] and d.live_blocks == 1


def test_orders_the_model_cannot_make_are_counted():
    # arm64 with 64 KiB pages allocates up to order 13; pfns and CPUs beyond any real machine
    d, ops = decode_lines([alloc(0x10, 13), free(0x10, 13), alloc(1 << 70, 0, cpu=70000),
                           free(1 << 70, 0, cpu=70000)])
    assert (d.above_max_order, d.unknown_frees, d.allocs, d.frees) == (1, 1, 1, 1)
    assert d.pre_capture_frees == 0             # nor is its free replayed
    assert ops == [(OP_ALLOC, 70000, 0, 0, 0), (OP_FREE, 70000, 0, 0, 0)]


def test_trace_refills_and_drains_are_runs_per_cpu():
    def locked(pfn, cpu, refill=1, order=0):
        return (PERF.format(cpu=cpu, ts=1.0) + f"mm_page_alloc_zone_locked: page=0x{pfn:x} "
                f"pfn=0x{pfn:x} order={order} migratetype=1 percpu_refill={refill}")

    def drain(pfn, cpu, order=0):
        return (PERF.format(cpu=cpu, ts=1.0) + f"mm_page_pcpu_drain: page=0x{pfn:x} "
                f"pfn=0x{pfn:x} order={order} migratetype=1")

    extfrag = (PERF.format(cpu=0, ts=1.0) + "mm_page_alloc_extfrag: page=0x3 pfn=0x3 alloc_order=0 "
               "fallback_order=10 pageblock_order=9 alloc_migratetype=1 fallback_migratetype=0 "
               "fragmenting=0 change_ownership=1")
    lines = [locked(1, 0), locked(2, 1), extfrag, locked(3, 0), locked(4, 1), alloc(1, cpu=0),
             locked(5, 0), locked(0x200, 0, 0, 9), locked(6, 0),
             drain(7, 1), drain(0x400, 1, 9), free(4, cpu=1), drain(8, 1)]
    d, _ = decode_lines(lines)
    # the first drain follows a refill, outside a kworker: drain_all_pages(); the second
    # follows a free by the same task and starts at the freed page's list: the free path
    assert TracePcp(refill_blocks=6, refill_pages=6, refills=4, buddy_blocks=1,
                    drain_blocks=3, drain_pages=514, drains=2,
                    drains_by_cause={"drain_all": 1, "free": 1},
                    drain_pages_by_cause={"drain_all": 513, "free": 1}) == d.pcp


def test_drain_causes():
    def drain(pfn, cpu=0, comm="bash", ts=1.0, order=0, mt=1):
        return (f"{comm:>16} 2113 [{cpu:03d}]  {ts:.6f}: kmem:mm_page_pcpu_drain: "
                f"page=0x{pfn:x} pfn=0x{pfn:x} order={order} migratetype={mt}")

    lines = [
        alloc(0x10), free(0x10), drain(0x20),                  # free path: same task, same list
        alloc(0x11), free(0x11), drain(0x21, mt=0),            # another list first: drain_all
        alloc(0x14), drain(0x22, comm="kworker/0:1"),          # a kworker, no work event: decay
        work("vmstat_update"), alloc(0x12), drain(0x23, comm="kworker/0:1"),
        work("vmstat_update", False),
        work("lru_add_drain_per_cpu"), alloc(0x13), drain(0x24, comm="kworker/0:1"),
        work("lru_add_drain_per_cpu", False),
    ]
    d, _ = decode_lines(lines)
    assert d.pcp.drains == 5
    assert d.pcp.drains_by_cause == {"free": 1, "drain_all": 1, "decay": 2, "other": 1}
    assert d.context_events == {"workqueue_execute_start": 2, "workqueue_execute_end": 2}
    assert d.system_only_events == 7 and d.system_only_example == "kworker/0:1"


def test_start_lists_from_the_trace():
    lines = [alloc(0x100 + i) for i in range(5)]           # 5 pages the list held at the start
    lines += [free(0x100), locked(0x200), locked(0x201), alloc(0x201), alloc(0x200)]
    lines += [alloc(0x400, 9, "GFP_TRANSHUGE")]            # a THP list never refilled: >= 512
    d, _ = decode_lines(lines)
    pages = d.start_lists[0].pages()
    assert pages[1] == 4 and d.start_lists[0].anchor[1] == 4   # 5 taken, 1 freed back, then empty
    assert pages[13] == 512 and d.start_lists[0].anchor[13] is None
    assert sum(pages) == 516


def test_a_refill_of_another_list_is_another_refill():
    """alloc_pages_bulk() refills with no mm_page_alloc between: the list that changes
    tells the two rmqueue_bulk() calls apart, and the second list was empty then."""
    lines = [alloc(0x10, mt=0), locked(0x100), locked(0x101), locked(0x200, mt=0),
             locked(0x201, mt=0), locked(0x202, order=1, mt=0)]
    d, _ = decode_lines(lines)
    assert d.pcp.refills == 3
    assert d.start_lists[0].anchor[:4] == [1, 0, None, 0]


def test_first_order0_refill_and_the_frees_before_it():
    lines = [alloc(0x10, cpu=1), free(0x10, cpu=1),             # one free onto CPU 1's lists
             locked(0x40, cpu=1, order=3, mt=0),                # an order-3 refill: not it
             alloc(0x48, 3, "GFP_KERNEL|__GFP_COMP", cpu=1, mt=0),
             *[locked(0x100 + i, cpu=1) for i in range(4)],     # the first order-0 refill: 4
             alloc(0x100, cpu=1), free(0x100, cpu=1),           # after it: not counted
             locked(0x200, cpu=1), locked(0x201, cpu=1)]        # a second refill: not it
    d, _ = decode_lines(lines)
    lists = d.start_lists[1]
    assert (lists.first_refill, lists.frees_before_refill) == (4, 1)
    assert d.start_lists.get(0) is None


def test_decay_follows_vmstat_update_work_where_the_trace_has_it():
    lines = [alloc(1, ts=1.0), work("vmstat_update", cpu=1, ts=1.5), alloc(2, ts=2.5),
             work("lru_add_drain_per_cpu", ts=3.0), alloc(3, ts=9.0)]
    d, ops = decode_lines(lines, decay_interval=1.0)
    # no tick once the kernel's own decay times are known: one pass, CPU 1's
    assert [op for op in ops if op[0] == OP_DECAY] == [(OP_DECAY, 1, 0, 0, DECAY_ONE_CPU)]
    assert (d.decay_ticks, d.decay_work) == (1, 1)
    assert decode_lines(lines, decay_interval=0)[0].decay_ticks == 0


def test_each_type_takes_the_migratetype_its_allocations_asked_for():
    slab = "GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"      # kmalloc: Unmovable
    lines = [alloc(0x100, 3, slab, mt=0), alloc(0x108, 3, slab, mt=0),
             alloc(0x110, 3, slab, mt=2),                           # a reclaimable cache
             alloc(0x200, mt=1)]
    d, _ = decode_lines(lines)
    mts = dict(zip(TYPES, d.migratetypes))
    assert mts["slab"] == MIGRATE_UNMOVABLE                         # two of three
    assert mts["anon"] == MIGRATE_MOVABLE
    assert mts["pagetable"] == MIGRATE_UNMOVABLE                    # none seen: the model's own
    d, _ = decode_lines([alloc(0x110, 3, slab, mt=2)])
    assert dict(zip(TYPES, d.migratetypes))["slab"] == MIGRATE_RECLAIMABLE


def test_decay_ticks_follow_trace_seconds():
    lines = [alloc(1, ts=1.0), alloc(2, ts=2.5), alloc(3, ts=2.9), alloc(4, ts=100.0)]
    d, ops = decode_lines(lines, decay_interval=1.0)
    assert d.decay_ticks == 1 + MAX_DECAY_TICKS
    assert [kind for kind, *_ in ops[:4]] == [OP_ALLOC, OP_DECAY, OP_ALLOC, OP_ALLOC]
    assert decode_lines(lines, decay_interval=0)[0].decay_ticks == 0


@pytest.mark.parametrize("gfp, order, memdesc", [
    ("GFP_TRANSHUGE|__GFP_NORETRY|__GFP_THISNODE", 9, "anon"),
    (ANON, 0, "anon"),
    ("GFP_KERNEL|__GFP_ZERO", 1, "kernel"),      # an x86 PGD: pagetable row, not compound
    ("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP", 0, "pagetable"),
    ("GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 3, "slab"),
    ("GFP_ATOMIC|__GFP_NOWARN", 0, "netpool"),
    ("GFP_ATOMIC|__GFP_NOWARN", 2, "kernel"),
    ("GFP_HIGHUSER|__GFP_ACCOUNT", 0, "kernel"),  # pipe buffers
    ("GFP_KERNEL", 4, "kernel"),
])
def test_replay_type(gfp, order, memdesc):
    assert TYPES[replay_type(gfp, order)] == memdesc


def test_decode_memory_does_not_grow_with_trace_length():
    def events(n):
        for i in range(n):
            pfn = 0x100000 + (i // 2) % 5000
            if i % 2 == 0:
                yield TraceEvent(i % 4, i / 1000, MM_PAGE_ALLOC, pfn, 0, 1, ANON)
            else:
                yield TraceEvent(i % 4, i / 1000, MM_PAGE_FREE, pfn, 0)
            if i % 7 == 0:                             # a free of a page allocated before
                yield TraceEvent(i % 4, i / 1000, MM_PAGE_FREE_BATCHED, 0x900000 + i, 0)

    blocks = []
    peak = {}

    def watched(stream):
        for count, event in enumerate(stream, 1):
            if count % 50_000 == 0:
                blocks.append(sys.getallocatedblocks())
            # tracemalloc slows every allocation; it watches a window in the middle
            if count == 100_000:
                tracemalloc.start()
            elif count == 130_000:
                peak["window"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            yield event

    with OpSpool() as spool:
        d = decode(watched(events(200_000)), spool)
        assert spool.count == d.allocs + d.frees + d.decay_ticks + d.pre_capture_frees
    assert d.allocs == 100_000 and d.unknown_frees == d.pre_capture_frees == 28_572
    # what churns in the window: the pairing window (~140 B an entry) and the spool buffer
    assert peak["window"] < PAIR_WINDOW * 200 + 2 * FLUSH_BYTES + 256 * 1024
    assert max(blocks) - min(blocks) < 1000   # over the whole run, not just the window


def test_every_event_has_a_handler():
    with OpSpool() as spool:
        decoder = Decoder(spool)
        assert set(decoder.handlers) == set(EVENTS)
        assert set(decoder.context_handlers) == set(CONTEXT_EVENTS)
