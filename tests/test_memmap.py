"""pcpd.model.memmap: the struct page layouts (reference section 6.1)."""

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcpd.model.arena import DESC_WORDS, H_MEMDESC, RECORD_SIZES, Arena, Geometry
from pcpd.model.linetrace import LineTrace, TracedArena, slab_words, untraced
from pcpd.model.memmap import LAYOUTS, memdesc_word, memmap_for
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
