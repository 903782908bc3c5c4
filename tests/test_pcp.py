"""workers.pcp: the PCP dynamics of every era (reference sections 2.5 and 3.3-3.10).

The static sizing formulas are tested in test_sizing.py; here the state
machine that uses them: refill sizes and the alloc_factor ramp, free_high,
the drain threshold and size, the drain's list selection, decay, and the
sizing each era's PCP starts from.  A transcription of the reference's
pseudo-code checks the tuned 6.7 fast path and the 5.14 rules on random
alloc/free sequences.
"""

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcpd.model.sizing import NR_PCP_LISTS, PcpLimits, order_to_pindex, pcp_limits
from pcpd.model.zonewords import BELOW_HIGH, RECLAIM_ACTIVE, Z_FLAGS, Z_FREE_PAGES, Z_WMARK_HIGH
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks, create_arena
from workers.pcp import PCPF_FREE_HIGH_BATCH, PCPF_PREV_FREE_HIGH_ORDER, PerCpuPages
from workers.policies import T_ANON

MOVABLE = 1
EXAMPLE_A = (458752, 7840, 2)          # managed, low watermark, CPUs on the node
THP_LIST = order_to_pindex(9, MOVABLE)


def take_for_drain(pcp: PerCpuPages, count: int, start: int) -> list[tuple[int, int]]:
    """free_pcppages_bulk()'s selection, block by block: (entry, order)."""
    return [(entry, pcp.list_order(index)) for index, entries in pcp.take_runs(count, start) for entry in entries]


def pcp_of(era: str, *zone, **kwargs) -> PerCpuPages:
    return PerCpuPages(pcp_limits(era, *(zone or EXAMPLE_A)), era, **kwargs)


def zone_words(below_high: bool = False, reclaim_active: bool = False) -> memoryview:
    """A zone's words with only its flags set, as free_check() reads them."""
    words = array("q", bytes(8 * (Z_FLAGS + 1)))
    words[Z_FLAGS] = (BELOW_HIGH if below_high else 0) | (RECLAIM_ACTIVE if reclaim_active else 0)
    return memoryview(words)


CLEAR = zone_words()


def push(pcp: PerCpuPages, pfn: int, order: int) -> None:
    """What a policy does before free_check(): head of the list, count up."""
    pcp.lists[order_to_pindex(order, MOVABLE)].append(pfn)
    pcp.count += 1 << order


# -- each era's starting PCP (section 1.7 examples) ---------------------------------------

@pytest.mark.parametrize("era, batch, high, orders", [
    ("4.18", 31, 186, [0]),
    ("5.13", 63, 378, [0, 1, 2, 3, 9]),
    ("5.14", 63, 3920, [0, 1, 2, 3, 9]),
    ("6.7", 63, 0, [0, 1, 2, 3, 9]),                 # BOOT_PAGESET_HIGH; clamped on first use
])
def test_each_era_starts_from_its_sizing(era, batch, high, orders):
    pcp = pcp_of(era)
    assert (pcp.batch, pcp.high, pcp.count) == (batch, high, 0)
    assert [o for o in range(11) if pcp.allowed[o]] == orders
    assert pcp.tuned == (era == "6.7")
    assert len(pcp.lists) == NR_PCP_LISTS


def test_6_7_high_clamps_into_high_min_on_first_use():
    pcp = pcp_of("6.7")
    assert pcp.nr_pcp_high(False, False, False) == 3920
    assert (pcp.high_min, pcp.high_max) == (3920, 28672)


def test_16_gib_zone_with_16_cpus():
    """Example B: high_min 518 drains a 6.7 CPU at 518; 5.14 also at 518; 5.13 at 378."""
    zone = (4194304, 8290, 16)
    pcp = pcp_of("6.7", *zone)
    assert pcp.nr_pcp_high(False, False, False) == 518 and pcp.high_max == 32768
    assert pcp_of("5.14", *zone).nr_pcp_high(False, False, False) == 518
    assert pcp_of("5.13", *zone).nr_pcp_high(False, False, False) == 378


# -- refill size: nr_pcp_alloc(), section 2.5 ---------------------------------------------

def test_order_0_refill_ramp_of_example_a():
    pcp = pcp_of("6.7")
    got = []
    for _ in range(7):
        n = pcp.nr_pcp_alloc(0, zone_below_high=False)  # count stays 0: allocations only
        got.append((n, pcp.high, pcp.alloc_factor))
    assert got == [(63, 3983, 1), (126, 4109, 2), (252, 4361, 3), (504, 4865, 4),
                   (1008, 5873, 5), (2016, 7889, 5), (2016, 9905, 5)]
    for _ in range(20):
        pcp.nr_pcp_alloc(0, False)
    assert pcp.high == 28672                         # grows until high_max


def test_refill_does_not_grow_high_below_the_high_watermark():
    pcp = pcp_of("6.7")
    assert pcp.nr_pcp_alloc(0, zone_below_high=True) == 63
    assert pcp.high == 3920


def test_refill_is_capped_by_room_under_high():
    pcp = pcp_of("6.7")
    pcp.count = 3900
    pcp.alloc_factor = 5
    n = pcp.nr_pcp_alloc(0, zone_below_high=True)    # high 3920: room max(3920-3900-63, 63)
    assert n == 63 and pcp.alloc_factor == 5


@pytest.mark.parametrize("batch, high, expect", [
    (63, 3920, {1: 31, 2: 15, 3: 7, 9: 2}),
    (31, 1000, {1: 15, 2: 7, 3: 3, 9: 2}),
])
def test_high_order_refill_blocks(batch, high, expect):
    for order, blocks in expect.items():
        pcp = PerCpuPages(PcpLimits(batch, high, high, 4 * high), "6.7")
        assert pcp.nr_pcp_alloc(order, False) == blocks
        assert pcp.alloc_factor == 0                 # only order 0 ramps


@pytest.mark.parametrize("era, expect", [
    ("5.13", {0: 63, 1: 31, 3: 7, 9: 2}),
    ("5.14", {0: 63, 1: 31, 3: 7, 9: 2}),
    ("4.18", {0: 31}),
])
def test_refill_blocks_before_6_7(era, expect):
    pcp = pcp_of(era)
    for order, blocks in expect.items():
        assert pcp.nr_pcp_alloc(order, False) == blocks
        assert pcp.nr_pcp_alloc(order, False) == blocks   # no ramp before 6.7


def test_pcp_effectively_off_refills_one_block():
    pcp = PerCpuPages(PcpLimits(1, 0, 0, 0), "6.7")      # pcp disabled: BOOT_PAGESET_*
    assert pcp.nr_pcp_alloc(0, False) == 1
    push(pcp, 7, 0)
    assert pcp.free_check(0, CLEAR) == 1                 # every free drains


# -- drain threshold and size: sections 3.3-3.6 -----------------------------------------

def test_6_7_drains_free_count_once_count_reaches_high():
    pcp = pcp_of("6.7")
    for pfn in range(3919):
        push(pcp, pfn, 0)
        assert pcp.free_check(0, CLEAR) == 0
    push(pcp, 3919, 0)
    assert pcp.free_count == 2016                    # capped at batch << 5
    assert pcp.free_check(0, CLEAR) == 2016          # clamp(free_count, batch, high - batch)
    assert pcp.drain_cause == "high"


def test_thp_capacity_example():
    """Section 1.7 A: 7 THPs fit under high 3920; the 8th drains 2048 pages = 4 THPs."""
    pcp = pcp_of("6.7")
    for i in range(7):
        push(pcp, 512 * i, 9)
        assert pcp.free_check(9, CLEAR) == 0
    push(pcp, 512 * 7, 9)
    assert pcp.count == 4096
    n = pcp.free_check(9, CLEAR)
    assert pcp.free_count == 2048 and n == 2048
    drained = take_for_drain(pcp, n, THP_LIST)
    assert drained == [(512 * i, 9) for i in range(4)]   # the coldest THPs, from the tail
    assert pcp.count == 2048


def test_free_high_after_high_order_frees():
    """Section 3.4: free_count >= batch + high_min // 2 and the previous free was order 1-3."""
    pcp = pcp_of("6.7")
    pcp.nr_pcp_high(False, False, False)
    pcp.high = 8000
    pcp.free_count = 63 + 3920 // 2
    push(pcp, 0, 3)
    assert pcp.free_check(3, CLEAR) == 0             # first high-order free: sets the flag only
    assert pcp.flags & PCPF_PREV_FREE_HIGH_ORDER
    push(pcp, 8, 3)
    n = pcp.free_check(3, CLEAR)
    assert pcp.drain_cause == "free_high"
    assert n == min(pcp.count, 63 << 5)
    assert pcp.high == 8000 - (63 << 5)              # high drops by batch << SCALE_MAX


def test_free_high_batch_flag_needs_a_batch_on_the_list():
    pcp = pcp_of("6.7", free_high_batch=True)
    assert pcp.flags & PCPF_FREE_HIGH_BATCH
    pcp.nr_pcp_high(False, False, False)
    pcp.free_count = 5000
    pcp.flags |= PCPF_PREV_FREE_HIGH_ORDER
    push(pcp, 0, 1)                                  # count 2 < batch: no free_high
    assert pcp.free_check(1, CLEAR) == 0


def test_order_0_and_thp_frees_clear_the_high_order_flag():
    pcp = pcp_of("6.7")
    push(pcp, 0, 2)
    pcp.free_check(2, CLEAR)
    assert pcp.flags & PCPF_PREV_FREE_HIGH_ORDER
    push(pcp, 4, 0)
    pcp.free_check(0, CLEAR)
    assert not pcp.flags & PCPF_PREV_FREE_HIGH_ORDER


def test_below_high_drains_down_to_high_min():
    pcp = pcp_of("6.7")
    pcp.nr_pcp_high(False, False, False)
    pcp.high = 10000
    for pfn in range(3920):
        push(pcp, pfn, 0)
    pcp.free_count = 500
    n = pcp.free_check(0, zone_words(below_high=True))
    assert pcp.free_count == 501
    assert pcp.high == 10000 - 501                   # lowered by max(free_count, batch)
    assert n == 501                                  # threshold max(count, high_min) = 3920


def test_reclaim_active_keeps_four_batches_and_lowers_high():
    """nr_pcp_high() while kswapd runs: high drops by max(free_count, batch), and the
    threshold is min(4 * batch, high), before any tuning or ZONE_BELOW_HIGH rule."""
    pcp = pcp_of("6.7")
    pcp.nr_pcp_high(False, False, False)
    pcp.high = 10000
    for pfn in range(300):
        push(pcp, pfn, 0)
    assert pcp.free_check(0, CLEAR) == 0             # 300 of 10000: kswapd asleep, no drain
    pcp.free_count = 20
    n = pcp.free_check(0, zone_words(below_high=True, reclaim_active=True))
    assert pcp.high == 10000 - 63                    # max(free_count 21, batch 63)
    assert n == min(max(21, 63), 252 - 63)           # nr_pcp_free() against high 4 * 63


def test_reclaim_active_threshold_floors_at_high_min():
    pcp = pcp_of("6.7")
    pcp.nr_pcp_high(False, False, False)
    assert pcp.nr_pcp_high(False, False, True) == 252 and pcp.high == 3920
    tiny = PerCpuPages(PcpLimits(63, 100, 100, 100), "6.7")
    assert tiny.nr_pcp_high(False, False, True) == 100    # min(4 * batch, high)


@pytest.mark.parametrize("era, threshold", [("5.14", 252), ("5.13", 378), ("4.18", 186)])
def test_reclaim_active_before_6_7(era, threshold):
    """5.14-6.6: min(4 * batch, high) while reclaim is active (c49c2c47dab6); none before."""
    pcp = pcp_of(era)
    high = pcp.high
    assert pcp.nr_pcp_high(False, False, True) == threshold
    assert pcp.high == high                          # high itself unchanged before 6.7


def test_5_14_drain_grows_by_free_factor():
    pcp = pcp_of("5.14")
    sizes = []
    for pfn in range(20000):
        push(pcp, pfn, 0)
        n = pcp.free_check(0, CLEAR)
        if n:
            sizes.append(n)
            pcp.count -= n
        if len(sizes) == 6:
            break
    # batch << free_factor, the factor stepping up while n < high - batch (3857)
    assert sizes == [63, 126, 252, 504, 1008, 2016]


def test_5_14_free_high_drains_everything():
    pcp = pcp_of("5.14")
    pcp.free_count = 1                               # free_factor
    for pfn in range(0, 80, 8):
        push(pcp, pfn, 3)
    assert pcp.free_check(3, CLEAR) == pcp.count == 80


@pytest.mark.parametrize("era, high, batch", [("5.13", 378, 63), ("4.18", 186, 31)])
def test_old_eras_drain_one_batch_at_high(era, high, batch):
    pcp = pcp_of(era)
    for pfn in range(high - 1):
        push(pcp, pfn, 0)
        assert pcp.free_check(0, CLEAR) == 0
    push(pcp, high, 0)
    assert pcp.free_check(0, CLEAR) == batch


# -- the drain's list selection: free_pcppages_bulk(), section 3.7 -------------------------

def test_drain_empties_each_list_round_robin_from_start():
    pcp = PerCpuPages(PcpLimits(63, 3920, 3920, 3920), "5.14")
    pcp.lists[0].extend([1, 2, 3])                  # tail on the left
    pcp.lists[1].extend([10, 11])
    pcp.lists[THP_LIST].extend([512, 1024])
    pcp.count = 5 + 1024
    assert take_for_drain(pcp, 4, 1) == [(10, 0), (11, 0), (512, 9)]   # a THP consumes 512 of 4
    assert pcp.count == 1029 - 514
    assert take_for_drain(pcp, 600, THP_LIST) == [(1024, 9), (1, 0), (2, 0), (3, 0)]  # wraps
    assert pcp.count == 0


def test_drain_of_63_when_the_thp_list_is_next():
    """Section 9 vector: frees 1 THP, count -= 512."""
    pcp = PerCpuPages(PcpLimits(63, 3920, 3920, 3920), "5.14")
    pcp.lists[THP_LIST].extend([0, 512])
    pcp.lists[0].extend(range(2048, 2100))
    pcp.count = 1024 + 52
    assert take_for_drain(pcp, 63, THP_LIST) == [(0, 9)]
    assert pcp.count == 1024 + 52 - 512


def test_drain_never_takes_more_than_count():
    pcp = PerCpuPages(PcpLimits(63, 3920, 3920, 3920), "5.14")
    pcp.lists[2].extend([5, 6])
    pcp.count = 2
    assert take_for_drain(pcp, 1000, 0) == [(5, 0), (6, 0)]
    assert take_for_drain(pcp, 10, 0) == []


def test_typed_lists_drain_each_kernel_list_s_pieces_in_turn():
    """Six types under one count: list pindex * 6 + slot; a drain starts at the list freed
    to, takes the other types' pieces of that kernel list, then the next kernel list."""
    pcp = PerCpuPages(PcpLimits(63, 3920, 3920, 3920), "5.14", nr_types=6)
    assert len(pcp.lists) == 6 * NR_PCP_LISTS
    anon, file, kernel = (pcp.list_index(0, MOVABLE, 0), pcp.list_index(0, MOVABLE, 1),
                          pcp.list_index(1, 0, 5))
    assert (anon, file, kernel) == (6, 7, 23)
    assert pcp.list_index(9, MOVABLE, 2) == THP_LIST * 6 + 2 and pcp.list_index(4, MOVABLE, 0) == -1
    pcp.lists[anon].extend([1, 2])
    pcp.lists[file].extend([10, 11])
    pcp.lists[kernel].append(20)
    pcp.count = 6
    assert pcp.pages_by_slot() == [2, 2, 0, 0, 0, 2]
    assert pcp.take_runs(5, file) == [(file, [10, 11]), (kernel, [20]), (anon, [1])]   # wraps
    assert pcp.count == 1 and pcp.list_order(kernel) == 1
    assert take_for_drain(pcp, 5, 0) == [(2, 0)]


# -- decay_pcp_high(), section 3.10 ---------------------------------------------------------

def test_decay_from_high_max_to_high_min_in_15_ticks():
    pcp = pcp_of("6.7")
    pcp.high = 28672
    seen = [pcp.high]
    while pcp.high > pcp.high_min:
        assert pcp.decay_excess() == 0
        seen.append(pcp.high)
    assert seen == [28672, 25088, 21952, 19208, 16807, 14707, 12869, 11261, 9854, 8623, 7546,
                    6603, 5778, 5056, 4424, 3920]


def test_decay_is_floored_at_count_minus_2016_and_returns_the_excess():
    pcp = pcp_of("6.7")
    pcp.high, pcp.count = 28672, 28000
    assert pcp.decay_excess() == 28000 - 25984 and pcp.high == 25984
    pcp.high, pcp.count = 3920, 5000                # at high_min: only the excess
    assert pcp.decay_excess() == 1080 and pcp.high == 3920


@pytest.mark.parametrize("decay_drain", ["batched", "one-call"])
def test_decay_drains_in_batches_or_in_one_call(decay_drain):
    """decay_pcp_high(): the same excess either way, in batch-sized chunks from
    fc4b909c368f, in one free_pcppages_bulk() before; ZONE_BELOW_HIGH stays."""
    spec = ModelSpec(pages=2048, batch=8, high_min=32, high_max=512, decay_drain=decay_drain)
    arena = create_arena(spec)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        p = cpu.policy
        held = [p.alloc(T_ANON, 0) for _ in range(104)]
        for pfn in held:
            p.free(pfn, 0, T_ANON)
        pcp = p.pcp
        assert pcp.count >= 104 and cpu.counters["drains_high"] == 0
        pcp.high = pcp.count
        arena.zone[Z_FLAGS] = BELOW_HIGH
        before = pcp.count
        excess = pcp.high >> 3
        assert p.decay() == excess and pcp.count == before - excess
        assert excess > spec.batch
        chunks = -(-excess // spec.batch) if decay_drain == "batched" else 1
        assert cpu.counters["drains_decay"] == chunks
        assert cpu.counters["drain_pages_decay"] == excess
        assert p.zone.below_high                     # decay does not clear it
        p.drain_all()
        assert pcp.count == 0 and p.zone.below_high  # nor does drain_all_pages()
        del cpu, p
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


def test_free_path_drain_clears_below_high_another_cpu_set():
    """The flags are the shared zone's: CPU 0's refill below the high watermark sets
    ZONE_BELOW_HIGH, CPU 1's free path reads it, drains, and clears it."""
    spec = ModelSpec(pages=2048, ncpus=2, batch=8, high_min=32, high_max=512)
    arena = create_arena(spec)
    try:
        locks = SharedLocks.local()
        cpu0, cpu1 = (CpuAllocator(arena, spec, locks, slot) for slot in (0, 1))
        held = [cpu1.policy.alloc(T_ANON, 0) for _ in range(64)]
        arena.zone[Z_WMARK_HIGH] = int(arena.zone[Z_FREE_PAGES])      # free pages now at high
        cpu0.policy.alloc(T_ANON, 0)                 # a refill: get_page_from_freelist() sets it
        assert int(arena.zone[Z_FLAGS]) == BELOW_HIGH and cpu1.zone.below_high
        arena.zone[Z_WMARK_HIGH] = 0
        for pfn in held:
            cpu1.policy.free(pfn, 0, T_ANON)         # drains once count reaches high_min
        assert cpu1.counters["drains_high"] >= 1
        assert int(arena.zone[Z_FLAGS]) == 0
        del cpu0, cpu1
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


@pytest.mark.parametrize("era", ["4.18", "5.13", "5.14"])
def test_no_decay_before_6_7(era):
    pcp = pcp_of(era)
    pcp.count = 10000
    high = pcp.high
    assert pcp.decay_excess() == 0 and pcp.high == high


# -- the rules as the reference writes them, against the implementation ---------------------

class Reference67:
    """Sections 2.4-2.5 and 3.3-3.6 for 6.7+, as written there."""

    def __init__(self, batch, high_min, high_max, scale_max=5, free_high_batch=False):
        self.batch, self.high_min, self.high_max = batch, high_min, high_max
        self.scale_max = scale_max
        self.high = self.count = self.free_count = self.alloc_factor = 0
        self.prev_high_order = False
        self.free_high_batch = free_high_batch

    def clamp_high(self):
        self.high = min(max(self.high, self.high_min), self.high_max)

    def nr_pcp_alloc(self, order, below_high):
        base = self.batch
        self.clamp_high()
        if self.high < base:
            return 1
        n = base if order > 0 else base << self.alloc_factor
        if self.high_min != self.high_max and not below_high:
            self.high = min(self.high + n, self.high_max)
        if order == 0:
            room = max(self.high - self.count - base, base)
            if n <= room and self.alloc_factor < self.scale_max:
                self.alloc_factor += 1
            n = min(n, room)
        if n > 1:
            n = max(n >> order, 2)
        return n

    def commit(self, order, below_high, reclaim_active):
        self.alloc_factor >>= 1
        self.count += 1 << order
        free_high = False
        if 1 <= order <= 3:
            free_high = (self.free_count >= self.batch + self.high_min // 2 and self.prev_high_order
                         and (not self.free_high_batch or self.count >= self.batch))
            self.prev_high_order = True
        else:
            self.prev_high_order = False
        if self.free_count < self.batch << self.scale_max:
            self.free_count += 1 << order
        h = self.nr_pcp_high(free_high, below_high, reclaim_active)
        if self.count < h:
            return 0
        return self.nr_pcp_free(h, free_high)

    def nr_pcp_high(self, free_high, below_high, reclaim_active):
        self.clamp_high()
        h = self.high
        if h == 0:
            return 0
        if free_high:
            self.high = max(h - (self.batch << self.scale_max), self.high_min)
            return 0
        if reclaim_active:
            self.high = max(h - max(self.free_count, self.batch), self.high_min)
            return min(self.batch << 2, self.high)
        if self.high_min == self.high_max:
            return h
        if below_high:
            self.high = max(h - max(self.free_count, self.batch), self.high_min)
            return max(self.count, self.high_min)
        if self.count >= h:
            need = self.free_count + self.batch
            if self.high < need:
                self.high = min(max(need, self.high_min), self.high_max)
        return h

    def nr_pcp_free(self, high, free_high):
        if free_high:
            return min(self.count, self.batch << self.scale_max)
        if high < self.batch:
            return 1
        return min(max(self.free_count, self.batch), high - self.batch)


class Reference514:
    """Sections 2.5 and 3.3-3.6 for 5.14-6.6; free_factor capped at SCALE_MAX as pcpd does."""

    def __init__(self, batch, high, scale_max=5):
        self.batch, self.high, self.scale_max = batch, high, scale_max
        self.count = self.free_factor = 0

    def nr_pcp_alloc(self, order, below_high):
        n = self.batch
        return max(n >> order, 2) if n > 1 else n

    def commit(self, order, below_high, reclaim_active):
        self.count += 1 << order
        free_high = self.free_factor != 0 and 1 <= order <= 3
        h = 0 if (self.high == 0 or free_high) else self.high
        if h and reclaim_active:
            h = min(self.batch << 2, h)
        if self.count < h:
            return 0
        if free_high:
            return self.count
        if h < self.batch:
            return 1
        n = self.batch << self.free_factor
        if n < h - self.batch and self.free_factor < self.scale_max:
            self.free_factor += 1
        return min(max(n, self.batch), h - self.batch)


def _state(pcp: PerCpuPages, era: str) -> tuple:
    if era == "6.7":
        return (pcp.high, pcp.count, pcp.free_count, pcp.alloc_factor,
                bool(pcp.flags & PCPF_PREV_FREE_HIGH_ORDER))
    return (pcp.high, pcp.count, pcp.free_count)


def _ref_state(ref, era: str) -> tuple:
    if era == "6.7":
        return (ref.high, ref.count, ref.free_count, ref.alloc_factor, ref.prev_high_order)
    return (ref.high, ref.count, ref.free_factor)


steps = st.lists(st.tuples(st.booleans(), st.sampled_from([0, 0, 0, 1, 2, 3, 9]), st.booleans(),
                           st.sampled_from([False, False, False, True])),
                 min_size=1, max_size=400)


@settings(max_examples=60, deadline=None)
@given(era=st.sampled_from(["6.7", "5.14"]), batch=st.sampled_from([1, 7, 31, 63]),
       high_min=st.integers(0, 5000), span=st.integers(0, 20000),
       free_high_batch=st.booleans(), steps=steps)
def test_pcp_matches_the_reference_rules(era, batch, high_min, span, free_high_batch, steps):
    high_min = max(high_min, 4 * batch)
    limits = PcpLimits(batch, high_min, high_min, high_min + span if era == "6.7" else high_min)
    pcp = PerCpuPages(limits, era, free_high_batch=free_high_batch)
    if era == "6.7":
        ref = Reference67(batch, limits.high_min, limits.high_max, free_high_batch=free_high_batch)
    else:
        ref = Reference514(batch, limits.high)
    pfn = 0
    for is_alloc, order, below_high, reclaim_active in steps:
        lst = pcp.lists[order_to_pindex(order, MOVABLE)]
        if is_alloc:
            pcp.free_count >>= 1                     # __rmqueue_pcplist(), done by the policy
            if era == "6.7":
                ref.free_count >>= 1
            else:
                ref.free_factor >>= 1
            if not lst:
                n = pcp.nr_pcp_alloc(order, below_high)
                assert n == ref.nr_pcp_alloc(order, below_high)
                for _ in range(n):
                    lst.appendleft(pfn)
                    pfn += 1 << order
                pcp.count += n << order
                ref.count += n << order
            lst.pop()
            pcp.count -= 1 << order
            ref.count -= 1 << order
        else:
            lst.append(pfn)
            pfn += 1 << order
            pcp.count += 1 << order
            n = pcp.free_check(order, zone_words(below_high, reclaim_active))
            assert n == ref.commit(order, below_high, reclaim_active)
            if n:
                drained = take_for_drain(pcp, n, order_to_pindex(order, MOVABLE))
                ref.count -= sum(1 << o for _, o in drained)
        assert _state(pcp, era) == _ref_state(ref, era)
        assert pcp.count == sum(len(lst) << o for lst, o in
                                zip(pcp.lists, [i // 3 if i < 12 else 9 for i in range(14)]))


@pytest.mark.parametrize("policy, record_bytes", [("legacy", 64), ("compound", 64),
                                                  ("memdesc-pcpdesc", 16), ("memdesc", 16)])
def test_lists_are_lifo_with_refills_at_the_tail(policy, record_bytes):
    """Every policy's PCP: a refill's blocks leave in the order rmqueue_bulk() took them
    (list_add_tail); a freed block goes on the head and is the next one handed out."""
    spec = ModelSpec(pages=1024, record_bytes=record_bytes, policy=policy, batch=7)
    arena = create_arena(spec)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        p = cpu.policy
        first = [p.alloc(T_ANON, 0) for _ in range(3)]
        assert first == [0, 1, 2]                    # one refill of pfns 0..6, tail first
        assert cpu.counters["refills"] == 1
        p.free(1, 0, T_ANON)
        assert [p.alloc(T_ANON, 0) for _ in range(2)] == [1, 3]
        del cpu, p
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()
