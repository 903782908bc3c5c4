"""pcpd.replay.decode: pass 1, trace events to model operations (the rules of its docstring)."""

import sys
import tracemalloc

import pytest
from replay_lines import ANON, PERF, alloc, batched, decode_lines, free

from pcpd.replay.decode import MAX_DECAY_TICKS, PAIR_WINDOW, Decoder, TracePcp, decode, replay_type
from pcpd.replay.spool import FLUSH_BYTES, OP_ALLOC, OP_DECAY, OP_FREE, OpSpool
from pcpd.replay.trace import EVENTS, MM_PAGE_ALLOC, MM_PAGE_FREE, MM_PAGE_FREE_BATCHED, TraceEvent
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


def test_frees_of_pages_the_trace_never_allocated_are_counted():
    d, ops = decode_lines([free(0x10), batched(0x10), batched(0x20), free(0x30, 2)])
    assert (d.unknown_frees, d.batched_pairs, d.frees, ops) == (3, 1, 0, [])


def test_second_free_of_one_allocation_is_unknown():
    d, ops = decode_lines([alloc(0x10), free(0x10), free(0x10)])
    assert (d.frees, d.unknown_frees, len(ops)) == (1, 1, 2)


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
    assert TracePcp(refill_blocks=6, refill_pages=6, refills=4, buddy_blocks=1,
                      drain_blocks=3, drain_pages=514, drains=2) == d.pcp


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
        assert spool.count == d.allocs + d.frees + d.decay_ticks
    assert d.allocs == 100_000 and d.unknown_frees == 28_572
    # what churns in the window: the pairing window (~140 B an entry) and the spool buffer
    assert peak["window"] < PAIR_WINDOW * 200 + 2 * FLUSH_BYTES + 256 * 1024
    assert max(blocks) - min(blocks) < 1000   # over the whole run, not just the window


def test_every_event_has_a_handler():
    with OpSpool() as spool:
        assert set(Decoder(spool).handlers) == set(EVENTS)
