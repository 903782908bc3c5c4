"""The kernel's static PCP and watermark sizing, as pure functions.

Everything here is arithmetic from mm/page_alloc.c (and mm/khugepaged.c for
the THP watermark floor), restated per kernel era.  Nothing holds state;
the simulator and ``pcpd zoneinfo`` both call these to know what a kernel
of a given era would configure for a zone.

Eras are strings (see ``ERAS``):

- ``"4.18"``: before 4.19. Order-0-only PCP lists, batch capped at 31,
  ``high = 6 * batch``.
- ``"5.13"``: high-order PCP lists, batch capped at 63, ``high = 6 * batch``.
- ``"5.14"``: 5.14 to 6.6. ``high`` derived from the low watermark per CPU.
- ``"6.7"``: 6.7 and later. ``high`` auto-tuned between ``high_min`` and
  ``high_max``.

Sizes are in base pages (4 KiB) unless a name ends in ``kbytes``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pcpd.kernel import (
    ERAS,
    HIGH_BOUNDS_ERAS,
    HPAGE_PMD_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    MIN_PERCPU_PAGELIST_HIGH_FRACTION,
    NR_PCP_LISTS,
    PAGE_ALLOC_COSTLY_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PAGEBLOCK_NR_PAGES,
)

_PAGE_KBYTES = PAGE_SIZE >> 10


def check_era(era: str) -> str:
    """Return *era* if it is one of ``ERAS``; raise ValueError otherwise."""
    if era not in ERAS:
        raise ValueError(f"unknown kernel era {era!r}; expected one of {', '.join(ERAS)}")
    return era


def _rounddown_pow_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def zone_batchsize(managed: int, era: str) -> int:
    """The kernel's ``zone_batchsize()`` for a zone of *managed* pages.

    ``"5.14"`` and ``"6.7"`` use the current form, which never returns less
    than 1 (5.14-6.6 computed the old form but clamped it to 1 before use,
    which gives the same numbers).  ``"5.13"`` and ``"4.18"`` return the raw old result, which is 0
    for zones under 8192 pages; callers of that era clamp it to 1 for
    ``pcp->batch`` but compute ``high`` from the 0 (see ``pcp_limits``).
    ``"4.18"`` caps the result at 31 (512 KiB, before commit d8a759b57035).
    """
    check_era(era)
    if managed < 0:
        raise ValueError(f"managed pages must be >= 0, got {managed}")
    # About 0.1 % of the zone, capped at 1 MiB (512 KiB before 4.19), then
    # divided by 4 because the 2^n - 1 rounding below multiplies back up.
    cap_bytes = 512 * 1024 if era == "4.18" else 1024 * 1024
    batch = min(managed >> 10, cap_bytes >> PAGE_SHIFT) // 4
    if batch <= 1:
        # Old kernels floor at 1 and then round 1 down to 2^0 - 1 = 0.
        return 1 if era in ("5.14", "6.7") else 0
    # 2^n - 1 avoids cache aliasing between tasks taking alternate batches.
    return _rounddown_pow_of_two(batch + batch // 2) - 1


def calculate_min_free_kbytes(lowmem_kb: int) -> int:
    """``calculate_min_free_kbytes()``: ``clamp(isqrt(lowmem_kB * 16), 128, 262144)``."""
    if lowmem_kb < 0:
        raise ValueError(f"lowmem must be >= 0 KiB, got {lowmem_kb}")
    return min(max(math.isqrt(lowmem_kb * 16), 128), 262144)


def recommended_min_free_kbytes(lowmem_managed: int, nr_zones: int) -> int:
    """khugepaged's ``set_recommended_min_free_kbytes()`` floor, in KiB.

    *nr_zones* counts populated zones at or below ZONE_NORMAL.  Two free
    pageblocks per zone, plus one per migratetype pair per zone, capped at
    5 % of lowmem.
    """
    if nr_zones < 1:
        raise ValueError(f"nr_zones must be >= 1, got {nr_zones}")
    pages = PAGEBLOCK_NR_PAGES * nr_zones * 2
    pages += PAGEBLOCK_NR_PAGES * nr_zones * MIGRATE_PCPTYPES * MIGRATE_PCPTYPES
    pages = min(pages, lowmem_managed // 20)
    return pages * _PAGE_KBYTES


@dataclass(frozen=True)
class Watermarks:
    """A zone's ``_watermark[]``: WMARK_MIN, WMARK_LOW, WMARK_HIGH, WMARK_PROMO, in pages."""

    min: int
    low: int
    high: int
    promo: int


def zone_watermarks(
    managed: int,
    lowmem_managed: int | None = None,
    watermark_scale_factor: int = 10,
    thp: bool = False,
    nr_zones: int = 1,
) -> Watermarks:
    """``__setup_per_zone_wmarks()`` for one lowmem zone of *managed* pages.

    *lowmem_managed* is the sum of managed pages over all lowmem zones
    (default: this zone alone); ``min_free_kbytes`` comes from it.  With
    *thp*, khugepaged's floor for *nr_zones* populated zones replaces
    ``min_free_kbytes`` when larger: real machines with THP enabled need it.
    """
    lowmem = managed if lowmem_managed is None else lowmem_managed
    if managed < 0 or lowmem <= 0 or managed > lowmem:
        raise ValueError(
            f"need 0 <= managed ({managed}) <= lowmem_managed ({lowmem}) and lowmem_managed > 0")
    if watermark_scale_factor < 1:
        raise ValueError(f"watermark_scale_factor must be >= 1, got {watermark_scale_factor}")
    min_free_kbytes = calculate_min_free_kbytes(lowmem * _PAGE_KBYTES)
    if thp:
        min_free_kbytes = max(min_free_kbytes, recommended_min_free_kbytes(lowmem, nr_zones))
    pages_min = min_free_kbytes >> (PAGE_SHIFT - 10)
    # Each lowmem zone gets its share of min_free_kbytes by size.
    wmark_min = pages_min * managed // lowmem
    delta = max(wmark_min >> 2, managed * watermark_scale_factor // 10000)
    low = wmark_min + delta
    high = low + delta
    return Watermarks(min=wmark_min, low=low, high=high, promo=high + delta)


def zone_highsize(managed: int, low_wmark: int, batch: int, nsplit: int, fraction: int) -> int:
    """``zone_highsize()`` (5.14+): one CPU's share of the zone, at least ``4 * batch``.

    The total is the low watermark when *fraction* is 0, else
    ``managed // fraction``.  *nsplit* is the number of CPUs on the zone's
    node (all online CPUs for a memory-only node); it must be >= 1.
    """
    if nsplit < 1:
        raise ValueError(f"nsplit must be >= 1, got {nsplit}")
    _check_fraction(fraction)
    total = low_wmark if fraction == 0 else managed // fraction
    return max(total // nsplit, batch * 4)


def _check_fraction(fraction: int) -> None:
    if fraction != 0 and fraction < MIN_PERCPU_PAGELIST_HIGH_FRACTION:
        raise ValueError(
            f"percpu_pagelist fraction must be 0 or >= {MIN_PERCPU_PAGELIST_HIGH_FRACTION}, got {fraction}")


@dataclass(frozen=True)
class PcpLimits:
    """The zone-wide values ``pageset_update()`` copies into every CPU's pcp.

    ``high`` is the drain threshold a CPU starts from.  In ``"6.7"`` it is
    ``high_min``: ``pcp->high`` boots at 0 and ``nr_pcp_high()`` clamps it
    into ``[high_min, high_max]`` on first use (``high_max`` wins in the rare
    tiny zone where the formulas put ``high_min`` above it).  Eras without
    auto-tuning have ``high_min == high_max == high``.
    """

    batch: int
    high: int
    high_min: int
    high_max: int


def pcp_limits(
    era: str,
    managed: int,
    low_wmark: int,
    nsplit: int,
    fraction: int = 0,
    batch: int | None = None,
    high: int | None = None,
    high_min: int | None = None,
    high_max: int | None = None,
) -> PcpLimits:
    """``zone_set_pageset_high_and_batch()`` of *era* for one zone.

    *fraction* is ``vm.percpu_pagelist_high_fraction`` (``"5.14"``, ``"6.7"``)
    or ``vm.percpu_pagelist_fraction`` (``"4.18"``, ``"5.13"``): 0 or >= 8.
    Explicit *batch*, *high*, *high_min* and *high_max* win over the
    formulas; an explicit *batch* also feeds the ``4 * batch`` floors.
    ``high_min``/``high_max`` may only be given for ``"6.7"``.
    Raises ValueError for impossible values.
    """
    check_era(era)
    _check_fraction(fraction)
    _check_explicit(era, batch, high, high_min, high_max)
    if era in ("4.18", "5.13"):
        return _pageset_limits_pre_5_14(era, managed, fraction, batch, high)
    batch = batch if batch is not None else zone_batchsize(managed, era)
    if era == "5.14":
        return _pageset_limits_5_14(managed, low_wmark, nsplit, fraction, batch, high)
    return _pageset_limits_6_7(managed, low_wmark, nsplit, fraction, batch, high, high_min, high_max)


def _check_explicit(era: str, batch: int | None, high: int | None, high_min: int | None,
                    high_max: int | None) -> None:
    """ValueError for explicit values that no zone of *era* can have."""
    if era not in HIGH_BOUNDS_ERAS and (high_min is not None or high_max is not None):
        raise ValueError(f"high_min/high_max exist only in era 6.7, not {era}")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for name, value in (("high", high), ("high_min", high_min), ("high_max", high_max)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _pageset_limits_5_14(managed: int, low_wmark: int, nsplit: int, fraction: int,
                         batch: int, high: int | None) -> PcpLimits:
    """5.14 to 6.6: one fixed high from the low watermark (``zone_highsize()``)."""
    if high is None:
        high = zone_highsize(managed, low_wmark, batch, nsplit, fraction)
    return PcpLimits(batch, high, high, high)


def _pageset_limits_6_7(managed: int, low_wmark: int, nsplit: int, fraction: int, batch: int,
                        high: int | None, high_min: int | None, high_max: int | None) -> PcpLimits:
    """6.7+: ``high`` auto-tuned between ``high_min`` and ``high_max``."""
    if high_min is not None and high_max is not None and high_min > high_max:
        raise ValueError(f"need high_min <= high_max, got {high_min} > {high_max}")
    # a manual fraction turns auto-tuning off by pinning min == max
    if high_min is None:
        high_min = zone_highsize(managed, low_wmark, batch, nsplit, fraction)
    if high_max is None:
        high_max = (high_min if fraction else
                    zone_highsize(managed, low_wmark, batch, nsplit, MIN_PERCPU_PAGELIST_HIGH_FRACTION))
    return PcpLimits(batch, _first_high(high, high_min, high_max), high_min, high_max)


def _first_high(high: int | None, high_min: int, high_max: int) -> int:
    """The ``high`` a CPU starts from: an explicit one inside the bounds, else the clamp."""
    if high is None:
        # nr_pcp_high() clamps pcp->high (0 at boot) into [high_min, high_max];
        # clamp() lets high_max win in a tiny zone whose low watermark tops managed / 8.
        return min(high_min, high_max)
    if not high_min <= high <= high_max:
        raise ValueError(f"need high_min <= high <= high_max, got {high_min}, {high}, {high_max}")
    return high


def _pageset_limits_pre_5_14(era: str, managed: int, fraction: int,
                             batch: int | None, high: int | None) -> PcpLimits:
    """``zone_set_pageset_high_and_batch()`` up to 5.13 (``pageset_set_batch()``
    and ``pageset_set_high()`` before 5.11)."""
    if fraction:
        # vm.percpu_pagelist_fraction: batch is a quarter of high, at most PAGE_SHIFT * 8.
        default_high = managed // fraction
        default_batch = min(max(1, default_high // 4), PAGE_SHIFT * 8)
    else:
        # high = 6 * the raw batch, so zones under 8192 pages show high 0, batch 1.
        raw = zone_batchsize(managed, era)
        default_batch, default_high = max(1, raw), 6 * raw
    if high is None:
        high = 6 * batch if batch is not None and not fraction else default_high
    if batch is None:
        batch = default_batch
    return PcpLimits(batch, high, high, high)


# cacheinfo of the CPU the model's PCP sizing reads (drivers/base/cacheinfo.c via sysfs)
CACHEINFO_DIR = "/sys/devices/system/cpu/cpu0/cache"
# per_cpu_data_slice_size where sysfs has no usable last-level cache: 0, as the
# kernel leaves it, so PCPF_FREE_HIGH_BATCH stays clear
NO_CACHEINFO_SLICE = 0


def per_cpu_data_slice_size(cache_dir: str = CACHEINFO_DIR) -> int:
    """``update_per_cpu_data_slice_size_cpu()``: the last-level cache's size over
    the CPUs sharing it, in bytes, from *cache_dir*'s ``index*`` entries.

    The last level is the highest ``index`` (``cache_leaves - 1``); it counts only
    if it is a Data or Unified cache.  Returns ``NO_CACHEINFO_SLICE`` where the
    directory, a file or that cache is missing or unreadable.
    """
    try:
        leaves = sorted((entry for entry in os.listdir(cache_dir) if entry.startswith("index")),
                        key=lambda entry: int(entry[5:]) if entry[5:].isdigit() else -1)
        if not leaves:
            return NO_CACHEINFO_SLICE
        llc = os.path.join(cache_dir, leaves[-1])
        kind = _read_text(os.path.join(llc, "type"))
        size = _parse_cache_size(_read_text(os.path.join(llc, "size")))
        shared = _count_cpu_list(_read_text(os.path.join(llc, "shared_cpu_list")))
    except (OSError, ValueError):
        return NO_CACHEINFO_SLICE
    if kind not in ("Data", "Unified") or not shared:
        return NO_CACHEINFO_SLICE
    return size // shared


def _read_text(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read(256).strip()


def _parse_cache_size(text: str) -> int:
    """sysfs's cache ``size``: ``"32K"``, ``"2048K"``, ``"16M"``."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def _count_cpu_list(text: str) -> int:
    """CPUs in a sysfs CPU list such as ``"0-3,8-11"`` (cpumask_weight())."""
    count = 0
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def pcpf_free_high_batch(data_slice_bytes: int, batch: int) -> bool:
    """``zone_pcp_update_cacheinfo()`` (6.7+): PCPF_FREE_HIGH_BATCH when the CPU's
    share of the last-level cache holds more than three batches of pages."""
    return (data_slice_bytes >> PAGE_SHIFT) > 3 * batch


def pcp_allowed_order(order: int, era: str) -> bool:
    """``pcp_allowed_order()``: order 0 before 5.13; orders 0-3 and the THP
    order after (assuming CONFIG_TRANSPARENT_HUGEPAGE=y)."""
    check_era(era)
    if era == "4.18":
        return order == 0
    return 0 <= order <= PAGE_ALLOC_COSTLY_ORDER or order == HPAGE_PMD_ORDER


def order_to_pindex(order: int, mt: int) -> int:
    """``order_to_pindex()`` with the two THP lists of 6.11+ (``NR_PCP_LISTS`` = 14)."""
    if mt not in (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE):
        raise ValueError(f"migratetype {mt} has no PCP list")
    if order == HPAGE_PMD_ORDER:
        return NR_PCP_LISTS - 1 if mt == MIGRATE_MOVABLE else NR_PCP_LISTS - 2
    if not 0 <= order <= PAGE_ALLOC_COSTLY_ORDER:
        raise ValueError(f"order {order} has no PCP list")
    return MIGRATE_PCPTYPES * order + mt


def pindex_to_order(pindex: int) -> int:
    """``pindex_to_order()``: inverse of ``order_to_pindex()`` for the order."""
    if not 0 <= pindex < NR_PCP_LISTS:
        raise ValueError(f"pindex {pindex} out of range 0..{NR_PCP_LISTS - 1}")
    if pindex >= NR_PCP_LISTS - 2:
        return HPAGE_PMD_ORDER
    return pindex // MIGRATE_PCPTYPES
