"""pcpd.model.sizing against the conformance vectors and worked examples of the
kernel reference (sections 1.4-1.7 and 9), plus properties of the formulas."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcpd.config.load import parse_settings
from pcpd.config.settings import DEFAULT_SETTINGS
from pcpd.errors import ConfigError
from pcpd.kernel import ERAS, HPAGE_PMD_ORDER, NR_PCP_LISTS, PAGE_ORDERS
from pcpd.model.sizing import (
    NO_CACHEINFO_SLICE,
    PcpLimits,
    Watermarks,
    calculate_min_free_kbytes,
    check_era,
    order_to_pindex,
    pcp_allowed_order,
    pcp_limits,
    pcpf_free_high_batch,
    per_cpu_data_slice_size,
    pindex_to_order,
    recommended_min_free_kbytes,
    zone_batchsize,
    zone_highsize,
    zone_watermarks,
)
from pcpd.spec import ModelSpec

UNMOVABLE, MOVABLE, RECLAIMABLE = 0, 1, 2

managed_pages = st.integers(min_value=0, max_value=1 << 40)


# Section 9: batch(managed) for the current formula, and the pre-4.19 cap.
@pytest.mark.parametrize("managed, batch, batch_pre_4_19", [
    (3973, 1, 0),
    (12288, 3, 3),
    (24576, 7, 7),
    (45056, 15, 15),
    (90112, 31, 31),
    (176127, 31, 31),
    (176128, 63, 31),
    (458752, 63, 31),
    (4194304, 63, 31),
])
def test_batch_conformance_vectors(managed, batch, batch_pre_4_19):
    assert zone_batchsize(managed, "6.7") == batch
    assert zone_batchsize(managed, "5.14") == batch
    assert zone_batchsize(managed, "4.18") == batch_pre_4_19


# Section 1.4 table, both ends of every row; the old formula gives 0 below 8192.
@pytest.mark.parametrize("low, high, batch, old", [
    (0, 8191, 1, 0),
    (8192, 12287, 1, 1),
    (12288, 24575, 3, 3),
    (24576, 45055, 7, 7),
    (45056, 90111, 15, 15),
    (90112, 176127, 31, 31),
    (176128, 1 << 30, 63, 63),
])
def test_batch_table_rows(low, high, batch, old):
    for managed in (low, high):
        assert zone_batchsize(managed, "6.7") == batch
        assert zone_batchsize(managed, "5.13") == old


@pytest.mark.parametrize("era", ["4.18", "5.13"])
def test_pre_5_14_dma_zone_shows_batch_1_high_0(era):
    # Section 9 / 1.7 D: high is 6 * the raw batch 0, pcp->batch is clamped to 1.
    assert pcp_limits(era, 3970, 0, 8) == PcpLimits(batch=1, high=0, high_min=0, high_max=0)


@pytest.mark.parametrize("era, managed, batch, high", [
    ("5.13", 176128, 63, 378),
    ("5.13", 7654794, 63, 378),
    ("4.18", 1200000, 31, 186),
    ("4.18", 90112, 31, 186),
])
def test_pre_5_14_high_is_six_batches(era, managed, batch, high):
    # Section 1.7 D: every large zone shows high 378 / batch 63 (186 / 31 before 4.19).
    limits = pcp_limits(era, managed, low_wmark=123456, nsplit=4)
    assert (limits.batch, limits.high, limits.high_min, limits.high_max) == (batch, high, high, high)


def test_worked_example_a():
    # Section 1.7 A and 9: managed 458752, low 7840, 2 CPUs on the node.
    limits = pcp_limits("6.7", 458752, 7840, 2)
    assert limits == PcpLimits(batch=63, high=3920, high_min=3920, high_max=28672)
    # The PCP ceiling over both CPUs is managed / 8.
    assert 2 * limits.high_max == 458752 // 8
    assert pcp_limits("5.14", 458752, 7840, 2).high == 3920


def test_worked_example_b_16gib_zone_16_cpus():
    # Section 1.7 B and 9.
    managed = 4194304
    assert calculate_min_free_kbytes(managed * 4) == 16384
    wm = zone_watermarks(managed)
    assert wm == Watermarks(min=4096, low=8290, high=12484, promo=16678)
    limits = pcp_limits("6.7", managed, wm.low, 16)
    assert (limits.batch, limits.high_min, limits.high_max) == (63, 518, 32768)
    assert 16 * limits.high_max == managed // 8
    assert pcp_limits("5.14", managed, wm.low, 16).high == 518
    assert pcp_limits("5.13", managed, wm.low, 16).high == 378


@pytest.mark.parametrize("lowmem_kb, expected", [
    (0, 128), (1000, 128), (16777216, 16384), (1 << 40, 262144),
])
def test_calculate_min_free_kbytes_clamps(lowmem_kb, expected):
    assert calculate_min_free_kbytes(lowmem_kb) == expected


def test_thp_floor_for_two_zones():
    # Section 1.6: 512*2*2 + 512*2*3*3 = 11264 pages = 45056 KiB.
    assert recommended_min_free_kbytes(10_000_000, 2) == 45056
    # ... capped at 5 % of lowmem.
    assert recommended_min_free_kbytes(100_000, 2) == 100_000 // 20 * 4


def test_thp_floor_replaces_smaller_min_free_kbytes_only():
    small = zone_watermarks(458752, thp=False)
    floored = zone_watermarks(458752, thp=True, nr_zones=2)
    assert floored.min == 45056 // 4 and floored.min > small.min
    huge = 1 << 30  # sqrt formula already above the THP floor
    assert zone_watermarks(huge, thp=True, nr_zones=2) == zone_watermarks(huge)


def test_zone_watermarks_splits_min_by_zone_size():
    lowmem = 1_000_000
    parts = [zone_watermarks(m, lowmem) for m in (250_000, 750_000)]
    pages_min = calculate_min_free_kbytes(lowmem * 4) // 4
    assert [w.min for w in parts] == [pages_min // 4, pages_min * 3 // 4]


@pytest.mark.parametrize("kwargs", [
    {"managed": 10, "lowmem_managed": 5},
    {"managed": 0},
    {"managed": 100, "watermark_scale_factor": 0},
])
def test_zone_watermarks_rejects_impossible_input(kwargs):
    with pytest.raises(ValueError):
        zone_watermarks(**kwargs)


def test_zone_highsize_uses_fraction_or_low_watermark():
    assert zone_highsize(458752, 7840, 63, 2, 0) == 3920
    assert zone_highsize(458752, 7840, 63, 2, 8) == 28672
    assert zone_highsize(458752, 100, 63, 2, 0) == 252  # the 4 * batch floor
    with pytest.raises(ValueError):
        zone_highsize(458752, 7840, 63, 0, 0)


@pytest.mark.parametrize("fraction", [1, 7, -1])
def test_fraction_below_8_is_rejected(fraction):
    for era in ERAS:
        with pytest.raises(ValueError):
            pcp_limits(era, 458752, 7840, 2, fraction=fraction)


def test_manual_fraction_turns_auto_tuning_off():
    limits = pcp_limits("6.7", 458752, 7840, 2, fraction=16)
    assert limits.high_min == limits.high_max == limits.high == (458752 // 16) // 2


def test_pre_5_14_fraction_sets_high_and_quarter_batch():
    # pageset_set_high(): batch = high / 4, capped at PAGE_SHIFT * 8.
    assert pcp_limits("5.13", 458752, 0, 2, fraction=8).high == 57344
    assert pcp_limits("5.13", 458752, 0, 2, fraction=8).batch == 96
    assert pcp_limits("4.18", 2000, 0, 2, fraction=8) == PcpLimits(62, 250, 250, 250)


def test_explicit_values_win_and_batch_feeds_the_floors():
    assert pcp_limits("6.7", 458752, 7840, 2, batch=1000).high_min == 4000
    assert pcp_limits("5.13", 458752, 7840, 2, batch=15) == PcpLimits(15, 90, 90, 90)
    assert pcp_limits("5.14", 458752, 7840, 2, high=100).high == 100
    limits = pcp_limits("6.7", 458752, 7840, 2, high_min=100, high_max=200, high=150)
    assert limits == PcpLimits(63, 150, 100, 200)


def test_tiny_zone_high_min_above_high_max_is_kept():
    # A low watermark above managed / 8 makes high_min > high_max; nr_pcp_high()'s
    # clamp() then settles pcp->high at high_max.
    assert pcp_limits("6.7", 0, 5, 1) == PcpLimits(batch=1, high=4, high_min=5, high_max=4)


@pytest.mark.parametrize("era, kwargs", [
    ("5.14", {"high_min": 100}),
    ("5.13", {"high_max": 100}),
    ("6.7", {"high_min": 300, "high_max": 200}),
    ("6.7", {"high": 10}),
    ("6.7", {"high": 30000}),
    ("6.7", {"batch": 0}),
    ("6.7", {"high": -1}),
])
def test_impossible_overrides_are_rejected(era, kwargs):
    with pytest.raises(ValueError):
        pcp_limits(era, 458752, 7840, 2, **kwargs)


def test_check_era():
    assert check_era("6.7") == "6.7"
    with pytest.raises(ValueError, match="6.6"):
        check_era("6.6")


@pytest.mark.parametrize("order, mt, pindex", [
    (0, UNMOVABLE, 0),
    (0, MOVABLE, 1),
    (0, RECLAIMABLE, 2),
    (1, UNMOVABLE, 3),
    (3, RECLAIMABLE, 11),
    (HPAGE_PMD_ORDER, UNMOVABLE, 12),
    (HPAGE_PMD_ORDER, RECLAIMABLE, 12),
    (HPAGE_PMD_ORDER, MOVABLE, 13),
])
def test_pindex_vectors(order, mt, pindex):
    assert order_to_pindex(order, mt) == pindex
    assert pindex_to_order(pindex) == order


@pytest.mark.parametrize("order, mt", [(4, 0), (8, 1), (10, 0), (-1, 0), (0, 3), (0, -1)])
def test_orders_and_types_without_a_pcp_list(order, mt):
    with pytest.raises(ValueError):
        order_to_pindex(order, mt)


@pytest.mark.parametrize("pindex", [-1, NR_PCP_LISTS])
def test_pindex_out_of_range(pindex):
    with pytest.raises(ValueError):
        pindex_to_order(pindex)


def test_pcp_allowed_order_by_era():
    assert [o for o in PAGE_ORDERS if pcp_allowed_order(o, "4.18")] == [0]
    for era in ("5.13", "5.14", "6.7"):
        assert [o for o in PAGE_ORDERS if pcp_allowed_order(o, era)] == [0, 1, 2, 3, 9]


def test_every_pcp_list_is_used_once():
    pindexes = [order_to_pindex(o, mt) for o in (0, 1, 2, 3) for mt in (0, 1, 2)]
    pindexes += [order_to_pindex(HPAGE_PMD_ORDER, mt) for mt in (UNMOVABLE, MOVABLE)]
    assert sorted(pindexes) == list(range(NR_PCP_LISTS))


# Properties.

def _is_pow2_minus_1(n: int) -> bool:
    return n > 0 and (n + 1) & n == 0


@given(managed=managed_pages, era=st.sampled_from(ERAS))
def test_batch_is_2n_minus_1_and_capped(managed, era):
    batch = zone_batchsize(managed, era)
    if era in ("5.14", "6.7"):
        assert _is_pow2_minus_1(batch)
    else:
        assert batch == 0 or _is_pow2_minus_1(batch)
    assert batch <= (31 if era == "4.18" else 63)


@given(a=managed_pages, b=managed_pages, era=st.sampled_from(ERAS))
def test_batch_is_monotone_in_managed(a, b, era):
    a, b = sorted((a, b))
    assert zone_batchsize(a, era) <= zone_batchsize(b, era)


@given(managed=managed_pages, low=managed_pages, nsplit=st.integers(1, 4096),
       era=st.sampled_from(("5.14", "6.7")))
def test_high_is_at_least_four_batches(managed, low, nsplit, era):
    limits = pcp_limits(era, managed, low, nsplit)
    assert limits.batch >= 1
    assert limits.high == min(limits.high_min, limits.high_max)
    assert min(limits.high, limits.high_min, limits.high_max) >= 4 * limits.batch
    if low <= managed // 8:
        assert limits.high_min <= limits.high_max


@given(managed=managed_pages, era=st.sampled_from(("4.18", "5.13")))
def test_pre_5_14_high_is_six_raw_batches(managed, era):
    limits = pcp_limits(era, managed, 0, 1)
    raw = zone_batchsize(managed, era)
    assert limits == PcpLimits(max(1, raw), 6 * raw, 6 * raw, 6 * raw)


@given(managed=managed_pages, low=managed_pages, n=st.integers(1, 4096))
def test_more_cpus_never_raise_high(managed, low, n):
    one = pcp_limits("6.7", managed, low, n)
    more = pcp_limits("6.7", managed, low, n + 1)
    assert more.high_min <= one.high_min and more.high_max <= one.high_max


@given(managed=st.integers(1, 1 << 36), extra=st.integers(0, 1 << 36),
       wsf=st.integers(1, 3000), thp=st.booleans(), nr_zones=st.integers(1, 4))
def test_watermarks_are_evenly_spaced(managed, extra, wsf, thp, nr_zones):
    wm = zone_watermarks(managed, managed + extra, wsf, thp, nr_zones)
    delta = wm.low - wm.min
    assert 0 <= wm.min <= wm.low <= wm.high <= wm.promo
    assert wm.high - wm.low == wm.promo - wm.high == delta
    assert delta >= managed * wsf // 10000 and delta >= wm.min // 4


@given(a=st.integers(0, 1 << 50), b=st.integers(0, 1 << 50))
def test_min_free_kbytes_is_monotone_and_clamped(a, b):
    a, b = sorted((a, b))
    assert 128 <= calculate_min_free_kbytes(a) <= calculate_min_free_kbytes(b) <= 262144


# -- PCPF_FREE_HIGH_BATCH: zone_pcp_update_cacheinfo() from cacheinfo ------------------------

def _cache(root, *leaves: tuple[int, str, str, str]) -> str:
    """A sysfs cpu0/cache directory: (index, type, size, shared_cpu_list) per leaf."""
    for index, kind, size, shared in leaves:
        leaf = root / f"index{index}"
        leaf.mkdir()
        for name, text in (("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (leaf / name).write_text(text + "\n")
    return str(root)


def test_data_slice_is_the_last_level_over_its_sharers(tmp_path):
    root = _cache(tmp_path, (0, "Data", "48K", "0"), (1, "Instruction", "32K", "0"),
                  (2, "Unified", "2048K", "0"), (3, "Unified", "32M", "0-7,16-23"))
    assert per_cpu_data_slice_size(root) == (32 << 20) // 16


def test_data_slice_reads_leaves_in_numeric_order(tmp_path):
    leaves = [(i, "Unified", f"{i + 1}K", "0") for i in range(11)]
    assert per_cpu_data_slice_size(_cache(tmp_path, *leaves)) == 11 << 10   # index10, not index9


@pytest.mark.parametrize("leaves", [
    [],
    [(0, "Data", "48K", "0"), (1, "Instruction", "32K", "0")],    # the last level is no data cache
    [(0, "Unified", "", "0")],
    [(0, "Unified", "1M", "")],
])
def test_no_usable_cacheinfo_gives_no_slice(tmp_path, leaves):
    assert per_cpu_data_slice_size(_cache(tmp_path, *leaves)) == NO_CACHEINFO_SLICE == 0


def test_no_cache_directory_gives_no_slice(tmp_path):
    assert per_cpu_data_slice_size(str(tmp_path / "missing")) == NO_CACHEINFO_SLICE


@pytest.mark.parametrize("slice_bytes, batch, flag", [
    (0, 63, False),
    (756 << 10, 63, False),                # 189 pages: not more than 3 * 63
    ((756 << 10) + 4096, 63, True),
    (2 << 20, 63, True),                   # 32 MiB L3 over 16 CPUs
    (2 << 20, 4095, False),
])
def test_free_high_batch_needs_more_than_three_batches_of_cache(slice_bytes, batch, flag):
    assert pcpf_free_high_batch(slice_bytes, batch) is flag


def test_model_spec_sets_the_flag_from_its_cache_slice():
    spec = ModelSpec(pages=1 << 18)
    batch = spec.limits().batch
    assert not spec.tuning().free_high_batch                     # no cacheinfo: clear
    roomy = dataclasses.replace(spec, cache_slice=(3 * batch + 1) << 12)
    assert roomy.tuning().free_high_batch
    small = dataclasses.replace(spec, cache_slice=(3 * batch) << 12)
    assert not small.tuning().free_high_batch
    assert dataclasses.replace(small, free_high_batch="on").tuning().free_high_batch
    assert not dataclasses.replace(roomy, free_high_batch="off").tuning().free_high_batch


def test_cacheinfo_records_the_slice_the_mode_and_the_flag_they_gave():
    batch = ModelSpec(pages=1 << 18).limits().batch
    roomy = ModelSpec(pages=1 << 18, cache_slice=(3 * batch + 1) << 12)
    assert roomy.cacheinfo() == {"cache_slice": (3 * batch + 1) << 12, "free_high_batch": "auto", "flag": True}
    forced = dataclasses.replace(roomy, free_high_batch="off")
    assert forced.cacheinfo() == {"cache_slice": (3 * batch + 1) << 12, "free_high_batch": "off", "flag": False}


@pytest.mark.parametrize(("value", "mode"), [('"auto"', "auto"), ('"on"', "on"), ('"off"', "off"),
                                             ("true", "on"), ("false", "auto")])
def test_free_high_batch_loads_its_modes_and_older_files_booleans(value, mode):
    pcp = parse_settings(f"[pcp]\nfree_high_batch = {value}\n", "x.toml").pcp
    assert pcp.free_high_batch == mode
    spec = ModelSpec.from_settings(dataclasses.replace(DEFAULT_SETTINGS, pcp=pcp), ncpus=1)
    assert spec.free_high_batch == mode


def test_config_keys_load_and_bad_values_are_one_line_errors():
    text = '[pcp]\ncache_slice = "1MiB"\ndecay_drain = "one-call"\n'
    pcp = parse_settings(text, "x.toml").pcp
    assert (pcp.cache_slice, pcp.decay_drain) == (1 << 20, "one-call")
    for bad, key in (('cache_slice = "lots"', "pcp.cache_slice"), ('decay_drain = "all"', "pcp.decay_drain"),
                     ("free_high_batch = 1", "pcp.free_high_batch")):
        with pytest.raises(ConfigError) as info:
            parse_settings(f"[pcp]\n{bad}\n", "x.toml")
        assert str(info.value).startswith(f"x.toml: {key}: ") and "\n" not in str(info.value)


def test_config_cache_slice_overrides_this_machine():
    pcp = dataclasses.replace(DEFAULT_SETTINGS.pcp, cache_slice=4096, decay_drain="one-call")
    settings = dataclasses.replace(DEFAULT_SETTINGS, pcp=pcp)
    spec = ModelSpec.from_settings(settings, ncpus=1)
    assert spec.cache_slice == 4096 and not spec.tuning().free_high_batch
    assert spec.tuning().decay_drain == "one-call"
    machine = ModelSpec.from_settings(DEFAULT_SETTINGS, ncpus=1)
    assert machine.cache_slice == per_cpu_data_slice_size()
