"""The one zone a replay models: its size, era, watermarks and PCP limits.

The model has one zone.  With ``--zoneinfo`` it is the capture's first
populated Normal zone: its managed pages (at most ``MAX_ARENA_PAGES``, or
the trace's need if larger), watermarks and era, and the PCP batch and
high limits the capture shows (the era model's values where the CPUs
disagree or another era is asked for).  Without it the zone is
``DEFAULT_PAGES`` (1 GiB), or four times the trace's peak live pages if
that is larger, sized as the kernel sizes such a zone, with nsplit the
highest CPU number seen plus one.  The capture's per-CPU pagesets, free
pages and (with ``--pagetypeinfo``) the zone's row of /proc/pagetypeinfo
are kept for the start state (``pcpd.replay.start``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pcpd.errors import InputError
from pcpd.inputs import display_name
from pcpd.kernel import PAGEBLOCK_NR_PAGES
from pcpd.model import sizing
from pcpd.pagetypeinfo import ZonePageTypes, read_pagetypeinfo
from pcpd.replay.decode import Decoded
from pcpd.zoneinfo import Pageset, ZoneComparison, compare_zones, read_zoneinfo

DEFAULT_PAGES = 1 << 18            # 1 GiB of 4 KiB pages
MAX_ARENA_PAGES = 1 << 20          # 4 GiB: about 216 MiB of model per policy


@dataclass(frozen=True)
class ZoneSetup:
    """The modelled zone: size, era, PCP limits and where they came from."""

    pages: int                         # arena pages
    era: str
    nsplit: int
    source: str                        # "default" or the zoneinfo file
    managed: int                       # the zone's own size (== pages unless capped)
    limits: sizing.PcpLimits | None = None       # None: as the kernel sizes ``pages``
    watermarks: sizing.Watermarks | None = None  # None: as the kernel sets them for ``pages``
    node: int | None = None
    captured: bool = False             # limits read from the capture's pagesets
    pagesets: dict[int, Pageset] | None = None   # cpu -> its captured pageset
    free_pages: int | None = None      # the capture's "pages free" (NR_FREE_PAGES)
    high_is_state: bool = False        # pagesets' high is 6.7+ auto-tuned state, and era 6.7 runs
    pagetypes: ZonePageTypes | None = None       # the zone's /proc/pagetypeinfo rows
    pagetypes_source: str | None = None


def trace_pages(decoded: Decoded) -> int:
    """Arena pages the trace needs: four times its peak live pages and the pages its start
    state holds (pre-capture blocks and PCP pages), at least 1 GiB."""
    need = max(DEFAULT_PAGES, 4 * (decoded.peak_live_pages + decoded.start_pages))
    return -(-need // 1024) * 1024


def default_zone(decoded: Decoded, era: str) -> ZoneSetup:
    """The zone without a capture: sized for the trace, as the kernel would size it."""
    pages = trace_pages(decoded)
    return ZoneSetup(pages, era, max(decoded.nr_cpu_ids, 1), "default", pages)


def zoneinfo_zone(path: str, decoded: Decoded, era: str | None,
                  pagetypeinfo: str | None = None) -> ZoneSetup:
    """The zone of a /proc/zoneinfo capture (see the module docstring)."""
    source = display_name(path)
    comparisons = compare_zones(read_zoneinfo(path))
    c = next((c for c in comparisons if c.zone.zone == "Normal"), None)
    if c is None:
        raise InputError(f"{source}: no populated Normal zone to model")
    era = era or c.era
    z = c.zone
    limits, captured = captured_limits(c) if era == c.era else (None, False)
    if limits is None:
        limits = dict(c.models)[era]
    wm = z.watermarks
    managed = max(z.managed // PAGEBLOCK_NR_PAGES * PAGEBLOCK_NR_PAGES, PAGEBLOCK_NR_PAGES)
    pages = min(managed, max(MAX_ARENA_PAGES, trace_pages(decoded)))
    pagetypes = None
    if pagetypeinfo is not None:
        pagetypes = read_pagetypeinfo(pagetypeinfo).zone(z.node, z.zone)
        if pagetypes is None:
            raise InputError(f"{display_name(pagetypeinfo)}: no rows for Node {z.node}, zone "
                             f"{z.zone} (the zone {source} models)")
    return ZoneSetup(pages, era, c.nsplit, source, z.managed, limits,
                     sizing.Watermarks(wm.min, wm.low, wm.high, wm.promo or wm.high),
                     z.node, captured, {p.cpu: p for p in z.pagesets}, z.pages_free,
                     z.has_high_bounds and era == "6.7", pagetypes,
                     display_name(pagetypeinfo) if pagetypeinfo is not None else None)


def captured_limits(c: ZoneComparison) -> tuple[sizing.PcpLimits | None, bool]:
    """The PCP limits every CPU of the capture shows, or (None, False)."""
    z = c.zone
    if z.has_high_bounds:                  # 6.7+: high is auto-tuned state, not a limit
        if z.batch is None or z.high_min is None or z.high_max is None:
            return None, False
        return sizing.PcpLimits(z.batch, z.high_min, z.high_min, z.high_max), True
    if z.batch is None or z.high is None:
        return None, False
    return sizing.PcpLimits(z.batch, z.high, z.high, z.high), True
