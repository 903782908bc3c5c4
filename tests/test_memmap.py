"""pcpd.model.memmap: the struct page layouts (reference section 6.1) and line arithmetic."""

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcpd.model.arena import DESC_WORDS, H_MEMDESC, RECORD_SIZES, Arena, Geometry
from pcpd.model.linetrace import LineTrace, TracedArena, slab_words, untraced
from pcpd.model.memmap import LAYOUTS, LineCharges, lines_spanned, memdesc_word, memmap_for
from pcpd.model.pagewords import (
    BUDDY_HEAD8,
    FLAG_ORDER_SHIFT,
    MEMDESC_ANON,
    MEMDESC_BUDDY,
    MEMDESC_FILE,
    MEMDESC_SLAB,
    NIL,
    PG_ALLOC,
    PG_LRU,
    PG_PCP,
)
from pcpd.model.slab import D_STATE, DS_INUSE, DS_PCP
from pcpd.model.stats import DESC_R, DESC_W, INDEX, LINES_R, LINES_W, Counters

PAGES = 2048


@contextmanager
def arena_of(record_bytes: int):
    arena = Arena.create(Geometry(PAGES, record_bytes, 1))
    try:
        yield arena
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


@pytest.fixture(params=RECORD_SIZES)
def memmap(request):
    with arena_of(request.param) as arena:
        mm = memmap_for(arena)
        yield mm
        del mm


# -- lines_spanned -------------------------------------------------------------------

@pytest.mark.parametrize("record_bytes, lines", [(64, 512), (32, 256), (16, 128), (8, 64)])
def test_order_9_block_memmap_lines(record_bytes, lines):
    """Section 6.1: 32 KiB, 16 KiB, 8 KiB, 4 KiB of memmap per order-9 block."""
    assert lines_spanned(0, 512, record_bytes) == lines
    assert lines_spanned(512 * 7, 512, record_bytes) == lines


def test_tails_of_an_order_9_block():
    assert lines_spanned(1, 511, 64) == 511            # the 511 tails of prep_compound_page()
    assert lines_spanned(1, 511, 8) == 64              # tails share the head's line at 8 B


def test_nothing_spans_no_lines():
    assert lines_spanned(5, 0, 64) == 0
    assert lines_spanned(5, -1, 16) == 0


@given(first=st.integers(0, 1 << 20), count=st.integers(1, 4096),
       record_bytes=st.sampled_from(RECORD_SIZES))
def test_lines_spanned_counts_distinct_lines(first, count, record_bytes):
    lines = {pfn * record_bytes // 64 for pfn in range(first, first + count)}
    assert lines_spanned(first, count, record_bytes) == len(lines)


# -- buddy accessors, every layout ----------------------------------------------------

def test_layout_matches_arena(memmap):
    assert memmap.words * 8 == memmap.record_bytes
    assert memmap.mem.size * 8 == len(memmap.links) // 2 * memmap.record_bytes


@pytest.mark.parametrize("order", [0, 1, 9, 10])
def test_set_buddy_round_trip(memmap, order):
    pfn = 1024
    memmap.set_buddy(pfn, order, PAGES - 1, NIL)
    assert memmap.buddy_order(pfn) == order
    assert (memmap.next(pfn), memmap.prev(pfn)) == (PAGES - 1, NIL)
    memmap.set_next(pfn, NIL)
    memmap.set_prev(pfn, 0)
    assert (memmap.next(pfn), memmap.prev(pfn)) == (NIL, 0)
    assert memmap.buddy_order(pfn) == order           # links never disturb the order
    memmap.clear_buddy(pfn)
    assert memmap.buddy_order(pfn) == -1


def test_add_and_del_buddy_keep_the_neighbours_linked(memmap):
    """add_buddy()/del_buddy() are set_buddy()/clear_buddy() plus list_add()/list_del() on the
    neighbours, spelled out per layout: the accessors must read back what they wrote."""
    a, b, c = 64, 512, 1024
    memmap.add_buddy(a, 6, NIL, NIL)                  # a alone on its list
    memmap.add_buddy(b, 9, a, NIL)                    # b at the head: b -> a
    memmap.add_buddy(c, 10, NIL, a)                   # c at the tail: b -> a -> c
    links = {pfn: (memmap.next(pfn), memmap.prev(pfn)) for pfn in (a, b, c)}
    assert links == {b: (a, NIL), a: (c, b), c: (NIL, a)}
    assert [memmap.buddy_order(pfn) for pfn in (a, b, c)] == [6, 9, 10]   # links never disturb orders
    memmap.del_buddy(a, c, b)                         # from the middle: b -> c
    assert memmap.buddy_order(a) == -1
    assert (memmap.next(b), memmap.prev(c)) == (c, b)
    assert [memmap.buddy_order(pfn) for pfn in (b, c)] == [9, 10]
    memmap.del_buddy(b, c, NIL)                       # the head: c alone
    assert (memmap.prev(c), memmap.next(c), memmap.buddy_order(c)) == (NIL, NIL, 10)
    memmap.del_buddy(c, NIL, NIL)
    assert memmap.buddy_order(c) == -1


def test_page_is_buddy_only_for_heads(memmap):
    memmap.set_buddy(512, 9, NIL, NIL)
    assert memmap.buddy_order(512) == 9
    assert memmap.buddy_order(513) == -1
    assert memmap.buddy_order(0) == -1


def test_buddy_heads_finds_every_head(memmap):
    heads = {0: 3, 8: 0, 16: 4, 1536: 9}
    for pfn, order in heads.items():
        memmap.set_buddy(pfn, order, NIL, NIL)
    pfns, orders = memmap.buddy_heads(0, PAGES)
    assert dict(zip(pfns.tolist(), orders.tolist())) == heads
    pfns, orders = memmap.buddy_heads(8, 16)          # a window
    assert dict(zip(pfns.tolist(), orders.tolist())) == {8: 0, 16: 4}


@given(pfn=st.integers(0, PAGES - 1), nxt=st.integers(-1, PAGES - 1),
       prev=st.integers(-1, PAGES - 1), order=st.integers(0, 10))
def test_16_byte_head_packs_links_and_order(pfn, nxt, prev, order):
    with arena_of(16) as arena:
        mm = memmap_for(arena)
        mm.set_buddy(pfn, order, nxt, prev)
        assert (mm.buddy_order(pfn), mm.next(pfn), mm.prev(pfn)) == (order, nxt, prev)
        assert arena.mem[pfn * 2] & 0xF == MEMDESC_BUDDY   # word 0 reads as a buddy memdesc
        del mm


@pytest.mark.parametrize("memmap", [8], indirect=True)
def test_8_byte_links_live_in_free_memory(memmap):
    memmap.set_buddy(64, 6, 128, 0)
    assert memmap.mem[64] == BUDDY_HEAD8 | 6 << 4 | MEMDESC_BUDDY
    assert list(memmap.links[128:130]) == [128, 0]


# -- movable_pages: try_to_claim_block()'s "alike" pages ---------------------------------

def test_movable_pages_flag_layout():
    with arena_of(64) as arena:
        mm = memmap_for(arena)
        flags = arena.mem[0::8]
        lru = PG_ALLOC | PG_LRU
        flags[0] = lru | (2 << FLAG_ORDER_SHIFT)   # anon order 2: 4 pages
        flags[4] = PG_ALLOC                       # kernel page: not movable
        flags[8] = PG_PCP | PG_LRU              # not allocated
        flags[510] = lru | (3 << FLAG_ORDER_SHIFT)  # reaches past the window: clipped
        assert mm.movable_pages(0, 512) == 4 + 2
        assert mm.movable_pages(0, 4) == 4
        del mm, flags


@pytest.mark.parametrize("record_bytes", [64, 32, 16, 8])
def test_movable_pages_memdesc_layouts(record_bytes):
    """try_to_claim_block()'s alike pages: anon/file folios in use, not cached on a PCP."""
    with arena_of(record_bytes) as arena:
        arena.header[H_MEMDESC] = 1
        mm = memmap_for(arena)
        w = record_bytes // 8
        words = arena.mem[memdesc_word(record_bytes)::w]
        words[:4] = (7 << 4) | MEMDESC_ANON
        words[4:6] = (9 << 4) | MEMDESC_FILE
        words[6:8] = (3 << 4) | MEMDESC_SLAB
        words[8:10] = (5 << 4) | MEMDESC_ANON
        descs = arena.descs
        for idx, state in ((7, DS_INUSE), (9, DS_INUSE), (3, DS_INUSE), (5, DS_PCP)):
            descs[idx * DESC_WORDS + D_STATE] = state << 4
        assert mm.movable_pages(0, 512) == 6          # the PCP-cached folio is not alike
        del mm, words, descs


def test_layouts_cover_every_record_size():
    assert set(LAYOUTS) == set(RECORD_SIZES)
    assert all(LAYOUTS[rb].record_bytes == rb for rb in RECORD_SIZES)


# -- the tracing mode (pcpd.model.linetrace) ---------------------------------------------

@contextmanager
def traced_arena(record_bytes: int):
    with arena_of(record_bytes) as arena:
        trace = LineTrace()
        yield arena, TracedArena(arena, trace), trace


@pytest.mark.interpreted
def test_traced_scalar_accesses_record_their_lines():
    with traced_arena(64) as (arena, ta, trace):
        ta.memq[5 * 8 + 1] = 7                        # page 5's line
        assert arena.memq[5 * 8 + 1] == 7
        assert ta.memq[9 * 8] == 0 and ta.memq[-1] == 0
        assert trace.written["memmap"] == {5} and trace.read["memmap"] == {9, PAGES - 1}
        ta.memq[0:24]                                 # three records: three lines
        assert trace.read["memmap"] == {0, 1, 2, 9, PAGES - 1}
        ta.descq[DESC_WORDS + 9] = 1                  # descriptor 1's second line
        ta.freelinksq[5 * 2 + 1] = 3                  # page 5's links: a line of their own
        assert arena.freelinksq[11] == 3
        assert (trace.written["descs"], trace.written["freelinks"]) == ({3}, {5})
        assert trace.lines_touched() == 5 + 1 + 1 + 1     # page 5 read and written: once
        trace.clear()
        assert trace.lines_touched() == 0 and not trace.read["memmap"]


@pytest.mark.interpreted
def test_traced_numpy_views_record_what_they_load_and_store():
    with traced_arena(16) as (arena, ta, trace):      # 4 records a line
        ta.mem[2 * 5:2 * 20:2] = 1                    # pages 5..19: lines 1..4
        assert trace.written["memmap"] == {1, 2, 3, 4} and not trace.read["memmap"]
        assert arena.mem[2 * 19] == 1 and arena.mem[2 * 20] == 0
        view = ta.mem[2 * 40:2 * 48:2]                # a view loads nothing
        assert not trace.read["memmap"]
        view &= ~1                                    # read and rewrite: pages 40..47, lines 10, 11
        assert trace.read["memmap"] == trace.written["memmap"] - {1, 2, 3, 4} == {10, 11}
        trace.clear()
        got = ta.mem[np.array([0, 2 * 100])]          # a fancy index: a plain copy, both loaded
        assert type(got) is np.ndarray and trace.read["memmap"] == {0, 25}
        total = (ta.mem[2 * 200:2 * 204] & 0xF).sum()  # a ufunc's input: loaded; its result plain
        assert total == 0 and trace.read["memmap"] == {0, 25, 50}
        assert ta.mem[2 * 300:2 * 304].copy().tolist() == [0] * 8
        assert ta.mem[2 * 400:2 * 404].tolist() == [0] * 8
        assert trace.read["memmap"] == {0, 25, 50, 75, 100} and not trace.written["memmap"]


@pytest.mark.interpreted
def test_a_traced_arena_is_only_a_view():
    with traced_arena(8) as (arena, ta, _):
        assert untraced(ta) is arena and untraced(arena) is arena
        assert slab_words(arena) is arena.descq and slab_words(ta) is ta.slab_descq
        assert (ta.pages, ta.record_bytes, ta.zoneq) == (arena.pages, arena.record_bytes, arena.zoneq)
        with pytest.raises(TypeError, match="close the arena"):
            ta.close()
        with pytest.raises(TypeError, match="unlink the arena"):
            ta.unlink()


# -- LineCharges: each line once per operation ---------------------------------------

def test_line_charges_count_per_call_outside_an_operation_and_per_line_inside():
    counters = Counters()
    lines = LineCharges(counters, 16, pages=64, desc_words=64)   # four records to a line
    buddy, link, memdesc = LINES_W["buddy"], LINES_W["list_link"], LINES_W["memdesc_set"]
    lines.page(buddy, 0)
    lines.page(buddy, 1)                                   # a hit's way: per call
    assert counters["lines_written_buddy"] == 2
    lines.begin()
    lines.page(buddy, 0)
    lines.page(link, 3)                                    # pfns 0-3: line 0, list_link first in CAUSES
    lines.pages(memdesc, 0, 8)                             # lines 0 and 1
    lines.desc(DESC_R, 0)
    lines.desc(DESC_R, 7)                                  # words 0-7: descriptor line 0
    lines.desc(DESC_R, 8)
    lines.begin()                                          # nested: part of the outer one
    lines.free_memory(5)
    lines.fold()
    assert counters["data_lines_written"] == 0
    lines.fold()
    assert (counters["lines_written_list_link"], counters["lines_written_memdesc_set"],
            counters["lines_written_buddy"]) == (1, 1, 2)
    assert (counters["desc_lines_read"], counters["data_lines_written"]) == (2, 1)


def test_line_charges_leave_out_prepaid_lines_and_charge_a_settled_line_once():
    counters = Counters()
    lines = LineCharges(counters, 64, pages=64, desc_words=64)
    page, link, buddy = LINES_W["page_state"], LINES_W["list_link"], LINES_W["buddy"]
    lines.begin()
    lines.prepaid(lines.page, page, 4)                     # a hit part charged it already
    lines.page(buddy, 4)
    lines.page(buddy, 5)
    lines.settle()                                         # as zone->lock is taken
    assert (counters["lines_written_page_state"], counters["lines_written_buddy"]) == (0, 1)
    lines.page(link, 5)                                    # settled: paid for
    lines.page(link, 6)
    lines.fold()
    assert (counters["lines_written_list_link"], counters["lines_written_buddy"]) == (1, 1)
    lines.page(link, 6)                                    # a new operation's line, per call again
    assert counters["lines_written_list_link"] == 2


def test_line_charges_count_each_family_apart_and_a_prepaid_line_pending_not_at_all():
    counters = Counters()
    lines = LineCharges(counters, 64, pages=64, desc_words=64)
    buddy_w, buddy_r, page = LINES_W["buddy"], LINES_R["buddy"], LINES_W["page_state"]
    with lines.operation():
        lines.page(buddy_w, 4)                             # pending ...
        lines.prepaid(lines.page, page, 4)                 # ... then a hit part's: paid
        lines.page(buddy_r, 4)                             # a load of the same line: its own family
        lines.desc(DESC_W, 0)
        lines.desc(DESC_R, 0)
    assert (counters["lines_written_buddy"], counters["lines_written_page_state"]) == (0, 0)
    assert (counters["lines_read_buddy"], counters["desc_lines_written"], counters["desc_lines_read"]) == (1, 1, 1)
    with lines.operation():                                # a new operation: charged again
        lines.page(buddy_w, 4)
    assert counters["lines_written_buddy"] == 1


def test_line_charges_of_one_thread_take_turns_and_an_exception_frees_the_marks():
    counters = Counters()
    a, b = (LineCharges(counters, 64, pages=64, desc_words=64) for _ in range(2))
    buddy = LINES_W["buddy"]
    with a.operation():
        with pytest.raises(RuntimeError, match="another CPU"):
            b.begin()                                      # the CPUs of a thread share marks
    with pytest.raises(KeyError):
        with a.operation():
            a.page(buddy, 1)
            a.settle()                                     # zone->lock taken: charged
            a.page(buddy, 2)                               # never settled: not charged
            raise KeyError("a bug mid-operation")
    assert counters["lines_written_buddy"] == 1 and (a.depth, a.exact) == (0, False)
    with b.operation():                                    # the thread goes on, marks clean
        b.page(buddy, 2)
    assert counters["lines_written_buddy"] == 2


def test_line_charges_of_a_large_operation_grow_room_for_every_line():
    """An operation may mark more lines than the marks' first room: the room grows, in
    the middle of an operation and between two CPUs of one thread, and each line is
    charged once."""
    counters = Counters()
    a, b = (LineCharges(counters, 64, pages=20000, desc_words=64) for _ in range(2))
    buddy_w, buddy_r = LINES_W["buddy"], LINES_R["buddy"]
    with b.operation():
        b.page(buddy_w, 0)                                 # b binds the first room
    with a.operation():
        a.pages(buddy_w, 0, 3000)
        a.settle()
        a.pages(buddy_w, 0, 12000)                         # 9,000 new lines: past 4,096 twice
        a.pages(buddy_r, 0, 5000)
    assert (counters["lines_written_buddy"], counters["lines_read_buddy"]) == (12001, 5000)
    with b.operation():                                    # b works in the grown room, marks clean
        b.pages(buddy_w, 0, 20000)
    assert counters["lines_written_buddy"] == 32001


def test_a_counter_that_is_not_a_line_counter_is_refused():
    lines = LineCharges(Counters(), 64, pages=64, desc_words=64)
    with lines.operation(), pytest.raises(ValueError, match="charges no cachelines"):
        lines.record(INDEX["alloc_hit"], 0)
