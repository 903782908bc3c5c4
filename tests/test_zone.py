"""pcpd.model.zone: the buddy free lists against the kernel reference, section 4.

Splitting (4.4), merging and placement (4.3), migratetype fallback (4.5),
the watermark check (4.7), one zone->lock acquisition per bulk operation,
and property-based invariants of the free lists after random alloc/free
sequences at the zone level.
"""

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcpd.daemon.audit import audit
from pcpd.kernel import MAX_PAGE_ORDER, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE
from pcpd.model.arena import RECORD_SIZES
from pcpd.model.lock import ZoneLock
from pcpd.model.memmap import memmap_for
from pcpd.model.pagewords import NIL
from pcpd.model.stats import Counters
from pcpd.model.zone import Zone
from pcpd.model.zonewords import (
    BELOW_HIGH,
    RECLAIM_ACTIVE,
    Z_CLAIMS,
    Z_FLAGS,
    Z_FREE_PAGES,
    Z_HEAD,
    Z_NR_FREE,
    Z_STEALS,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
    ZONE_BELOW_HIGH,
    ZONE_RECLAIM_ACTIVE,
)
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, T_SLAB


class ZoneModel:
    """An arena with a bare zone: no PCP, no page state beyond the buddy's."""

    def __init__(self, pages: int, record_bytes: int = 64) -> None:
        policy = "legacy" if record_bytes == 64 else "memdesc"
        self.spec = ModelSpec(pages=pages, record_bytes=record_bytes, policy=policy)
        self.arena = create_arena(self.spec)
        self.counters = Counters()
        lock = ZoneLock(threading.Lock(), self.arena, self.counters, 0)
        self.zone = Zone(self.arena, lock, self.counters)
        self.mm = memmap_for(self.arena)

    def free_blocks(self) -> dict[int, int]:
        """pfn -> order of every block on a free list, walking the lists."""
        z, out = self.arena.zone, {}
        for order in range(MAX_PAGE_ORDER + 1):
            for mt in range(3):
                pfn = int(z[Z_HEAD + 3 * order + mt])
                while pfn != NIL:
                    out[pfn] = order
                    pfn = self.mm.next(pfn)
        return out

    def list_of(self, order: int, mt: int) -> list[int]:
        pfn, out = int(self.arena.zone[Z_HEAD + 3 * order + mt]), []
        while pfn != NIL:
            out.append(pfn)
            pfn = self.mm.next(pfn)
        return out

    def close(self) -> None:
        del self.zone, self.mm
        try:
            self.arena.close()
        finally:
            self.arena.unlink()


@pytest.fixture
def make_zone():
    models = []

    def make(pages: int = 2048, record_bytes: int = 64) -> ZoneModel:
        models.append(ZoneModel(pages, record_bytes))
        return models[-1]

    yield make
    for m in models:
        m.close()


def check_free_lists(m: ZoneModel) -> dict[int, int]:
    """Every free block aligned, of one order, unmerged with no free buddy; counters agree."""
    blocks = m.free_blocks()
    z = m.arena.zone
    assert sum(1 << o for o in blocks.values()) == int(z[Z_FREE_PAGES])
    covered = set()
    for pfn, order in blocks.items():
        assert pfn % (1 << order) == 0, f"block {pfn} of order {order} misaligned"
        assert m.mm.buddy_order(pfn) == order
        pages = set(range(pfn, pfn + (1 << order)))
        assert not covered & pages, f"block {pfn} overlaps another"
        covered |= pages
        buddy = pfn ^ (1 << order)
        if order < MAX_PAGE_ORDER and buddy < m.arena.pages:
            assert blocks.get(buddy) != order, f"free buddies {pfn} and {buddy} of order {order}"
    for order in range(MAX_PAGE_ORDER + 1):
        for mt in range(3):
            assert len(m.list_of(order, mt)) == int(z[Z_NR_FREE + 3 * order + mt])
    return blocks


# -- format ---------------------------------------------------------------------

@pytest.mark.parametrize("record_bytes", RECORD_SIZES)
def test_fresh_zone_is_order_10_blocks_then_smaller(make_zone, record_bytes):
    m = make_zone(pages=2560, record_bytes=record_bytes)      # 2 x 1024 + 512
    assert check_free_lists(m) == {0: 10, 1024: 10, 2048: 9}
    assert m.list_of(10, MIGRATE_MOVABLE) == [0, 1024]
    assert m.zone.free_pages == 2560
    assert (m.arena.pageblock == MIGRATE_MOVABLE).all()
    assert audit(m.arena).ok


def test_watermarks_are_stored(make_zone):
    m = make_zone(pages=16384)
    w = m.spec.watermarks()
    assert (m.zone.watermark(Z_WMARK_MIN), m.zone.watermark(Z_WMARK_LOW),
            m.zone.watermark(Z_WMARK_HIGH)) == (w.min, w.low, w.high)


# -- splitting: __rmqueue_smallest() + expand(), section 4.4 ------------------------

@pytest.mark.parametrize("record_bytes", RECORD_SIZES)
def test_order_0_split_of_order_3_block(make_zone, record_bytes):
    """Section 9 vector: return P; heads become P+4 (o2), P+2 (o1), P+1 (o0)."""
    m = make_zone(pages=512, record_bytes=record_bytes)
    z = m.zone
    for order in (8, 7, 6, 5, 4, 3):                  # leave exactly one order-3 block
        z.rmqueue_buddy(order, MIGRATE_MOVABLE, False)
    [(p, order)] = m.free_blocks().items()
    assert order == 3
    assert z.rmqueue_buddy(0, MIGRATE_MOVABLE, False) == p
    assert m.free_blocks() == {p + 4: 2, p + 2: 1, p + 1: 0}
    assert [m.list_of(o, MIGRATE_MOVABLE) for o in (2, 1, 0)] == [[p + 4], [p + 2], [p + 1]]


def test_expand_puts_upper_halves_on_list_heads(make_zone):
    m = make_zone(pages=1024)
    assert m.zone.rmqueue_buddy(0, MIGRATE_MOVABLE, False) == 0
    assert m.free_blocks() == {1 << o: o for o in range(10)}


def test_refill_from_one_block_comes_out_in_ascending_pfn_order(make_zone):
    """Section 2.6 [derived]: P, P+1, ..., under one zone->lock acquisition."""
    m = make_zone(pages=1024)
    got = m.zone.rmqueue_bulk(0, MIGRATE_MOVABLE, 63, False)
    assert got == list(range(63))
    assert m.counters["lock_acquisitions"] == 1
    check_free_lists(m)


def test_refill_below_high_sets_the_flag_for_the_next_allocation(make_zone):
    """A refill that takes the zone below its high watermark: the next allocation's
    get_page_from_freelist() (a PCP hit too) would set ZONE_BELOW_HIGH, so the
    model sets it as the refill returns, not at the next refill."""
    m = make_zone(pages=1024)
    _marks(m, low=10, high=1000)
    m.zone.flags_from_watermarks()
    assert not m.zone.below_high
    m.zone.rmqueue_bulk(0, MIGRATE_MOVABLE, 32, False)  # 1024 free before it, 992 after
    assert m.zone.below_high and not m.zone.reclaim_active


def test_refill_stops_when_the_zone_is_empty(make_zone):
    m = make_zone(pages=512)
    got = m.zone.rmqueue_bulk(8, MIGRATE_MOVABLE, 5, False)
    assert got == [0, 256]
    assert m.zone.free_pages == 0
    assert m.zone.rmqueue_buddy(0, MIGRATE_MOVABLE, False) == NIL


# -- merging: __free_one_page(), section 4.3 ----------------------------------------

def test_merge_worked_example(make_zone):
    """Free 0x1003 while 0x1002 (o0) and 0x1000 (o1) are free: order 2 at 0x1000."""
    m = make_zone(pages=8192)
    z = m.zone
    taken = z.rmqueue_bulk(0, MIGRATE_MOVABLE, 8, False)    # 0 .. 7 of the first order-10 block
    assert taken == list(range(8))
    for pfn in (0, 1, 2):                            # 0 and 1 merge to order 1, 2 stays alone
        z.free_one_page(pfn, 0)
    assert {p: o for p, o in m.free_blocks().items() if p < 8} == {0: 1, 2: 0}
    z.free_one_page(3, 0)
    assert {p: o for p, o in m.free_blocks().items() if p < 8} == {0: 2}
    z.free_one_page(4, 0)
    z.free_one_page(5, 0)
    z.free_one_page(6, 0)
    z.free_one_page(7, 0)
    assert check_free_lists(m)[0] == 10              # everything merged back to order 10


def test_merge_stops_at_max_order(make_zone):
    m = make_zone(pages=4096)
    z = m.zone
    a = z.rmqueue_buddy(10, MIGRATE_MOVABLE, False)
    b = z.rmqueue_buddy(10, MIGRATE_MOVABLE, False)
    z.free_one_page(a, 10)
    z.free_one_page(b, 10)
    assert set(check_free_lists(m).values()) == {10}


def test_order_10_free_splits_into_pageblocks_of_their_own_type(make_zone):
    """split_large_buddy(): two pieces; the buddy's pageblock is retyped on merge."""
    m = make_zone(pages=1024)
    z = m.zone
    pfn = z.rmqueue_buddy(10, MIGRATE_MOVABLE, False)
    m.arena.pageblock[0] = MIGRATE_UNMOVABLE
    z.free_one_page(pfn, 10)
    assert m.free_blocks() == {0: 10}
    assert m.list_of(10, MIGRATE_MOVABLE) == [0]      # merged under the second piece's type
    assert (m.arena.pageblock == MIGRATE_MOVABLE).all()


def test_buddy_merge_likely_puts_the_block_at_the_tail(make_zone):
    """A block whose order+1 buddy is free goes to the tail (section 4.3 step 4)."""
    m = make_zone(pages=1024)
    z = m.zone
    got = z.rmqueue_bulk(0, MIGRATE_MOVABLE, 16, False)     # 0..15; 16 (o4) .. 512 (o9) free
    z.free_one_page(8, 0)                            # its buddy 9 is allocated: no merge
    z.free_one_page(2, 0)                            # order-1 buddy of {2,3} is {0,1}: allocated
    assert got == list(range(16))
    # 8's higher buddy is {10, 11} (allocated): head; 12 is tested for 2 similarly.
    assert m.list_of(0, MIGRATE_MOVABLE) == [2, 8]
    z.free_one_page(5, 0)                            # 5's order-1 buddy {6,7} is allocated
    z.free_one_page(6, 0)
    z.free_one_page(7, 0)                            # 6+7 merge to o1 at 6; {4,5} not free
    assert m.list_of(0, MIGRATE_MOVABLE)[:1] == [5]
    z.free_one_page(14, 0)
    z.free_one_page(15, 0)                           # {14,15} o1; its o2 buddy {12,13} allocated
    z.free_one_page(12, 0)                           # 13 allocated; {14,15} free at order 1
    assert m.list_of(0, MIGRATE_MOVABLE)[-1] == 12   # merge likely: tail
    check_free_lists(m)


@pytest.mark.parametrize("record_bytes, memmap_lines, free_memory_lines", [
    (64, 11, 0), (16, 9, 0), (8, 8, 10)])
def test_split_charges_each_head_written(make_zone, record_bytes, memmap_lines, free_memory_lines):
    """One order-10 block off its list, ten halves onto empty lists: eleven heads,
    each line once (pfns 0, 1 and 2 share a 16-byte page's line, and 4 too an
    8-byte page's); 8-byte pages keep the links in the free blocks themselves."""
    m = make_zone(pages=1024, record_bytes=record_bytes)
    m.zone.rmqueue_buddy(0, MIGRATE_MOVABLE, False)
    assert m.counters["lines_written_buddy"] == memmap_lines
    assert m.counters["data_lines_written"] == free_memory_lines


def test_merge_reads_each_buddy_it_checks(make_zone):
    m = make_zone(pages=1024)
    pfn = m.zone.rmqueue_buddy(0, MIGRATE_MOVABLE, False)
    m.counters.reset()
    m.zone.free_one_page(pfn, 0)                     # merges 10 times, up to order 10
    assert m.counters["lines_read_buddy"] == 10
    assert m.counters["lines_written_buddy"] == 10 + 1   # each buddy taken off, the result added


# -- fallback: section 4.5 ------------------------------------------------------------

def test_whole_block_claim_retypes_the_pageblocks(make_zone):
    m = make_zone(pages=1024)
    z = m.zone
    assert z.rmqueue_buddy(0, MIGRATE_UNMOVABLE, False) == 0  # claims the order-10 block
    assert list(m.arena.pageblock) == [MIGRATE_UNMOVABLE] * 2
    assert int(m.arena.zone[Z_CLAIMS]) == 1
    assert m.list_of(9, MIGRATE_UNMOVABLE) == [512]
    check_free_lists(m)


def test_movable_order_below_4_never_claims_but_steals(make_zone):
    m = make_zone(pages=512)
    z = m.zone
    z.rmqueue_buddy(0, MIGRATE_UNMOVABLE, False)             # pageblock 0 becomes unmovable
    for order in (8, 7, 6, 5, 4):
        z.rmqueue_buddy(order, MIGRATE_UNMOVABLE, False)
    assert m.free_blocks() == {1: 0, 2: 1, 4: 2, 8: 3}
    claims = int(m.arena.zone[Z_CLAIMS])
    assert z.rmqueue_buddy(0, MIGRATE_MOVABLE, False) == 1   # __rmqueue_steal(): smallest first
    assert int(m.arena.zone[Z_CLAIMS]) == claims
    assert int(m.arena.zone[Z_STEALS]) == 1
    assert m.arena.pageblock[0] == MIGRATE_UNMOVABLE  # the block keeps its type


def _legacy_model(pages: int):
    spec = ModelSpec(pages=pages, record_bytes=64, policy="legacy")
    arena = create_arena(spec)
    return arena, CpuAllocator(arena, spec, SharedLocks.local(), 0)


@pytest.fixture
def legacy_zone():
    arena, cpu = _legacy_model(1024)
    yield arena, cpu
    del cpu
    try:
        arena.close()
    finally:
        arena.unlink()


def test_partial_claim_needs_half_the_pageblock(legacy_zone):
    """try_to_claim_block(): free + alike >= 256; LRU pages are not alike for UNMOVABLE."""
    arena, cpu = legacy_zone
    for order in (8, 8, 8, 7):                       # anon memory (orders 4-8 bypass the PCP)
        cpu.policy.alloc(T_ANON, order)
    zone = cpu.zone
    assert {p: o for p, o in _free(arena).items()} == {896: 7}
    assert zone.rmqueue_buddy(0, MIGRATE_UNMOVABLE, False) == 896   # 128 free + 0 alike < 256: steal
    assert int(arena.zone[Z_CLAIMS]) == 0 and int(arena.zone[Z_STEALS]) == 1
    assert arena.pageblock[1] == MIGRATE_MOVABLE


def test_partial_claim_moves_every_free_block(legacy_zone):
    arena, cpu = legacy_zone
    for order in (8, 8, 8):
        cpu.policy.alloc(T_ANON, order)
    zone = cpu.zone
    assert _free(arena) == {768: 8}
    assert zone.rmqueue_buddy(0, MIGRATE_RECLAIMABLE, False) == 768  # 256 free: claim
    assert int(arena.zone[Z_CLAIMS]) == 1
    assert list(arena.pageblock) == [MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE]


def test_nofragment_takes_no_piece_of_a_foreign_pageblock(legacy_zone):
    """ALLOC_NOFRAGMENT: __rmqueue_claim() from pageblock_order up only, no __rmqueue_steal()."""
    arena, cpu = legacy_zone
    for order in (8, 8, 8):
        cpu.policy.alloc(T_ANON, order)
    zone = cpu.zone
    assert _free(arena) == {768: 8}                   # half of pageblock 1, MOVABLE
    assert zone.rmqueue_bulk(0, MIGRATE_RECLAIMABLE, 4, True) == []
    assert int(arena.zone[Z_CLAIMS]) == int(arena.zone[Z_STEALS]) == 0
    assert list(arena.pageblock) == [MIGRATE_MOVABLE] * 2
    assert zone.rmqueue_bulk(0, MIGRATE_RECLAIMABLE, 1, False) == [768]     # without it: the 256-of-512 claim


def test_rmqueue_retries_without_nofragment_under_the_held_lock(legacy_zone):
    """Zone.rmqueue(), for callers holding zone->lock (pcp-buddy's phases 1 and 3):
    ALLOC_NOFRAGMENT first, then the fragmenting claim, as a refill's retry would."""
    arena, cpu = legacy_zone
    for order in (8, 8, 8):
        cpu.policy.alloc(T_ANON, order)
    assert cpu.zone.rmqueue(0, MIGRATE_RECLAIMABLE, 2, True) == [768, 769]
    assert int(arena.zone[Z_CLAIMS]) == 1 and int(arena.zone[Z_STEALS]) == 0


def test_nofragment_still_claims_whole_pageblocks(make_zone):
    m = make_zone(pages=1024)
    assert m.zone.rmqueue_bulk(3, MIGRATE_UNMOVABLE, 2, True) == [0, 8]
    assert list(m.arena.pageblock) == [MIGRATE_UNMOVABLE] * 2
    assert int(m.arena.zone[Z_CLAIMS]) == 1


def test_refill_retries_without_nofragment(legacy_zone):
    """get_page_from_freelist(): nothing without fragmenting, so the zonelist is walked
    again without ALLOC_NOFRAGMENT; the one zone gives the claim then.  Between the
    two, rmqueue() falls through to rmqueue_buddy(), which takes zone->lock and fails
    the same way: three acquisitions for the one allocation."""
    arena, cpu = legacy_zone
    for order in (8, 8, 8):
        cpu.policy.alloc(T_ANON, order)
    before = cpu.counters["lock_acquisitions"]
    assert cpu.policy.alloc(T_SLAB, 0) == 768         # slab is RECLAIMABLE
    assert cpu.counters["lock_acquisitions"] - before == 3
    assert cpu.counters["refills"] == 1
    assert int(arena.zone[Z_CLAIMS]) == 1


def test_nofragment_is_off_before_5_0():
    spec = ModelSpec(pages=1024, policy="legacy", era="4.18")
    arena = create_arena(spec)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        for order in (8, 8, 8):
            cpu.policy.alloc(T_ANON, order)
        assert not cpu.policy.nofragment
        assert cpu.zone.rmqueue_buddy(0, MIGRATE_RECLAIMABLE, False) == 768
        assert int(arena.zone[Z_STEALS]) == 0 and int(arena.zone[Z_CLAIMS]) == 1
        del cpu
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


def _free(arena) -> dict[int, int]:
    pfns, orders = memmap_for(arena).buddy_heads(0, arena.pages)
    return dict(zip(pfns.tolist(), orders.tolist()))


# -- watermarks: section 4.7 -----------------------------------------------------------

def test_watermark_ok(make_zone):
    m = make_zone(pages=1024)
    z = m.zone
    assert z.watermark_ok(0, 1023)
    assert not z.watermark_ok(0, 1024)               # free <= mark fails
    assert z.watermark_ok(10, 0)
    assert not z.watermark_ok(10, 1)                 # free - (1024 - 1) = 1 <= 1
    z.rmqueue_buddy(0, MIGRATE_MOVABLE, False)              # no order-10 block remains
    assert not z.watermark_ok(10, 0)
    assert z.watermark_ok(9, 0)


# -- zone->flags: ZONE_BELOW_HIGH and ZONE_RECLAIM_ACTIVE ------------------------------

def _marks(m: ZoneModel, low: int, high: int) -> None:
    m.arena.zone[Z_WMARK_MIN], m.arena.zone[Z_WMARK_LOW], m.arena.zone[Z_WMARK_HIGH] = low // 2, low, high


def test_an_allocation_under_the_high_watermark_sets_below_high(make_zone):
    m = make_zone(pages=1024)
    _marks(m, low=200, high=300)
    z = m.zone
    z.rmqueue_buddy(9, MIGRATE_MOVABLE, False)               # tested before taking: 1024 - 511 > 300
    z.check_watermarks(0)                            # 512 free
    assert not z.below_high and not z.reclaim_active
    z.rmqueue_buddy(8, MIGRATE_MOVABLE, False)               # get_page_from_freelist(): 512 - 255 <= 300
    assert z.below_high and not z.reclaim_active
    z.check_watermarks(0)                            # 256 free, above low
    assert int(m.arena.zone[Z_FLAGS]) == BELOW_HIGH  # one load of zone->flags shows it alone


def test_both_watermarks_follow_the_order_of_the_allocation(make_zone):
    """zone_watermark_fast(order, mark) for the high and the low test alike: 512 pages
    free pass both marks at order 0 but fail them at order 9 with no order-9 block."""
    m = make_zone(pages=1024)
    _marks(m, low=10, high=20)
    m.zone.rmqueue_buddy(9, MIGRATE_MOVABLE, False)
    m.zone.flags_from_watermarks()
    m.zone.check_watermarks(0)
    assert not m.zone.below_high and not m.zone.reclaim_active
    m.zone.check_watermarks(9)                       # 512 free but no order-9 block left
    assert m.zone.below_high and m.zone.reclaim_active


def test_free_path_clears_below_high_once_above_the_high_watermark(make_zone):
    m = make_zone(pages=1024)
    _marks(m, low=200, high=300)
    z = m.zone
    big = z.rmqueue_buddy(9, MIGRATE_MOVABLE, False)
    mid = z.rmqueue_buddy(8, MIGRATE_MOVABLE, False)
    z.check_watermarks(0)
    z.clear_below_high()                             # 256 free: still below high
    assert z.below_high
    z.free_one_page(mid, 8)
    z.clear_below_high()
    assert not z.below_high
    z.free_one_page(big, 9)
    z.check_watermarks(0)
    assert not z.below_high


def test_kswapd_is_active_from_the_low_watermark_until_above_high(make_zone):
    m = make_zone(pages=1024)
    _marks(m, low=200, high=300)
    z = m.zone
    z.rmqueue_buddy(9, MIGRATE_MOVABLE, False)
    mid = z.rmqueue_buddy(8, MIGRATE_MOVABLE, False)
    assert not z.reclaim_active                      # 256 free, above low
    # 192 free: the next allocation's test, run as this one returns, wakes kswapd
    small = z.rmqueue_buddy(6, MIGRATE_MOVABLE, False)
    assert z.reclaim_active
    z.free_one_page(small, 6)                        # 256: between low and high, kswapd goes on
    assert z.reclaim_active
    z.free_pcppages_bulk([(7, [mid + 128])])           # 384 > high: pgdat_balanced()
    assert not z.reclaim_active
    assert z.below_high                              # only the free path's drain clears it


def test_each_flag_has_its_own_byte_of_the_flags_word(make_zone):
    """The layout: each flag is one byte of Z_FLAGS, 0 or 1, and one flag's change
    leaves the other.  (That each change is a single byte store, not a read-modify-
    write of the word, is the code's; one process cannot see the difference.)"""
    m = make_zone(pages=1024)
    _marks(m, low=1024, high=1024)
    m.zone.check_watermarks(0)
    flag_bytes = bytes(m.arena.zoneb[Z_FLAGS * 8:Z_FLAGS * 8 + 8])
    assert flag_bytes[ZONE_BELOW_HIGH] == flag_bytes[ZONE_RECLAIM_ACTIVE] == 1
    assert sum(flag_bytes) == 2
    assert int(m.arena.zone[Z_FLAGS]) == BELOW_HIGH | RECLAIM_ACTIVE
    _marks(m, low=0, high=0)
    m.zone.clear_below_high()
    assert int(m.arena.zone[Z_FLAGS]) == RECLAIM_ACTIVE
    m.zone.free_one_page(m.zone.rmqueue_buddy(0, MIGRATE_MOVABLE, False), 0)   # kswapd balanced
    assert int(m.arena.zone[Z_FLAGS]) == 0


def test_flags_from_watermarks(make_zone):
    m = make_zone(pages=1024)
    _marks(m, low=600, high=1024)
    m.zone.flags_from_watermarks()
    assert m.zone.below_high and not m.zone.reclaim_active
    _marks(m, low=1024, high=1024)
    m.zone.flags_from_watermarks()
    assert m.zone.below_high and m.zone.reclaim_active
    _marks(m, low=10, high=20)
    m.zone.flags_from_watermarks()
    assert not m.zone.below_high and not m.zone.reclaim_active


# -- zone->lock -----------------------------------------------------------------------

def test_one_lock_acquisition_per_bulk_operation(make_zone):
    m = make_zone(pages=2048)
    got = m.zone.rmqueue_bulk(0, MIGRATE_MOVABLE, 31, False)
    m.zone.free_pcppages_bulk([(0, got)])
    assert m.counters["lock_acquisitions"] == 2
    m.zone.free_one_page(m.zone.rmqueue_buddy(3, MIGRATE_MOVABLE, False), 3)
    assert m.counters["lock_acquisitions"] == 4
    assert m.counters["lock_uncontended"] == 4


# -- properties ---------------------------------------------------------------------

ops = st.lists(st.tuples(st.booleans(), st.integers(0, MAX_PAGE_ORDER), st.integers(0, 2),
                         st.integers(0, 1 << 30)), max_size=80)


@settings(max_examples=40, deadline=None)
@given(record_bytes=st.sampled_from(RECORD_SIZES), ops=ops)
def test_random_alloc_free_keeps_buddy_invariants(record_bytes, ops):
    """No overlap, aligned blocks of one order, no unmerged free buddies, conservation."""
    m = ZoneModel(2048, record_bytes)
    try:
        held: list[tuple[int, int]] = []
        for alloc, order, mt, pick in ops:
            if alloc or not held:
                pfn = m.zone.rmqueue_buddy(order, mt, False)
                if pfn != NIL:
                    assert pfn % (1 << order) == 0
                    held.append((pfn, order))
            else:
                pfn, order = held.pop(pick % len(held))
                m.zone.free_one_page(pfn, order)
        blocks = check_free_lists(m)
        free = set()
        for pfn, order in blocks.items():
            free.update(range(pfn, pfn + (1 << order)))
        for pfn, order in held:
            assert not free & set(range(pfn, pfn + (1 << order))), "allocated block on a free list"
        assert m.zone.free_pages + sum(1 << o for _, o in held) == 2048
        for pfn, order in held:
            m.zone.free_one_page(pfn, order)
        assert check_free_lists(m) == {0: 10, 1024: 10}
    finally:
        m.close()


def test_merge_is_independent_of_free_order(make_zone):
    """Freeing a split block's pieces in any order restores the order-10 blocks."""
    m = make_zone(pages=2048)
    got = m.zone.rmqueue_bulk(0, MIGRATE_MOVABLE, 1024, False)
    random.Random(7).shuffle(got)
    for pfn in got:
        m.zone.free_one_page(pfn, 0)
    assert check_free_lists(m) == {0: 10, 1024: 10}
