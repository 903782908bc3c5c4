"""``pcpd kernel-exporter``: this machine's real PCP state, as Prometheus metrics.

node_exporter has no pageset metrics, so a developer comparing the model
with the kernel it models had nothing to put beside ``pcpd_pcp_high_pages``.
At every scrape this collector reads, from the running kernel:

* /proc/zoneinfo: every CPU's pageset of every populated zone (``count``,
  ``high``, ``batch`` and, from 6.7, ``high_min``/``high_max``), the zone's
  free and managed pages and its watermarks (``zoneinfo_show_print()``);
* /proc/buddyinfo: free blocks per order (``frag_show_print()``);
* /proc/vmstat: the page allocator's event counters (``pgalloc_<zone>``,
  ``pgfree``, ``allocstall_<zone>``) and ``nr_free_pages``.

The metric names are the model's with ``pcpd_kernel_`` in place of ``pcpd_``,
so one PromQL query can put the two side by side.  A file that cannot be read
or parsed costs its series, not the scrape (as prometheus_client's process
collector does); ``pcpd_kernel_scrape_errors_total`` counts such reads.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from pcpd import argtypes
from pcpd.errors import InputError
from pcpd.exporter import MetricsServer, parse_address
from pcpd.zoneinfo import ZoneInfo, parse_zoneinfo

log = logging.getLogger("pcpd.kernel_exporter")

DEFAULT_ADDRESS = "127.0.0.1:9465"       # one above pcpd run's 9464, so both can run
READ_LIMIT = 16 << 20                    # /proc/zoneinfo of a 4,096-CPU machine is ~5 MiB
_BUDDYINFO = re.compile(r"Node +([0-9]{1,6}), zone +(\S+)((?: +[0-9]{1,20})+) *")
_VMSTAT = re.compile(r"([a-z][a-z0-9_]*) (-?[0-9]{1,20})")
_PER_ZONE_EVENTS = ("pgalloc", "allocstall")    # <event>_<zone> in /proc/vmstat
_EVENTS = ("pgfree",)


@dataclass(frozen=True)
class KernelState:
    """One reading of the three files; a part that could not be read is empty."""

    zones: tuple[ZoneInfo, ...]
    buddyinfo: dict[tuple[int, str], tuple[int, ...]]
    vmstat: dict[str, int]
    errors: int


def read_kernel_state(proc: Path = Path("/proc")) -> KernelState:
    """Read zoneinfo, buddyinfo and vmstat under ``proc``; never raises for a bad file."""
    errors = 0
    zones: tuple[ZoneInfo, ...] = ()
    buddyinfo: dict[tuple[int, str], tuple[int, ...]] = {}
    vmstat: dict[str, int] = {}
    try:
        zones = tuple(parse_zoneinfo(_read(proc / "zoneinfo"), str(proc / "zoneinfo")))
    except (OSError, InputError) as err:
        errors += 1
        log.debug("kernel-exporter: %s", err)
    try:
        buddyinfo = parse_buddyinfo(_read(proc / "buddyinfo"))
    except OSError as err:
        errors += 1
        log.debug("kernel-exporter: %s", err)
    try:
        vmstat = parse_vmstat(_read(proc / "vmstat"))
    except OSError as err:
        errors += 1
        log.debug("kernel-exporter: %s", err)
    return KernelState(zones, buddyinfo, vmstat, errors)


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(READ_LIMIT).decode("utf-8", errors="replace")


def parse_buddyinfo(text: str) -> dict[tuple[int, str], tuple[int, ...]]:
    """``Node 0, zone Normal 231 363 ...`` lines: free blocks per order, by (node, zone)."""
    out = {}
    for line in text.splitlines():
        m = _BUDDYINFO.fullmatch(line)
        if m:
            out[int(m[1]), m[2]] = tuple(int(n) for n in m[3].split())
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    """``name value`` lines of /proc/vmstat; other lines are ignored."""
    return {m[1]: int(m[2]) for m in map(_VMSTAT.fullmatch, text.splitlines()) if m}


class KernelCollector:
    """A prometheus_client collector over ``read_kernel_state(proc)`` at each scrape."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._errors = 0
        self._lock = threading.Lock()           # scrapes run on the server's threads

    def describe(self) -> list[Metric]:
        return []                               # names depend on what the kernel prints

    def collect(self) -> Iterator[Metric]:
        state = read_kernel_state(self.proc)
        with self._lock:
            self._errors += state.errors
            errors = self._errors
        yield from pageset_families(state.zones)
        yield from zone_families(state.zones)
        yield from buddy_families(state.buddyinfo)
        yield from vmstat_families(state.vmstat)
        yield CounterMetricFamily("pcpd_kernel_scrape_errors",
                                  "Reads of /proc files that failed or did not parse",
                                  value=errors)


PAGESET_FIELDS = (
    ("count", "pcpd_kernel_pcp_pages", "Pages on the CPU's PCP lists (pageset count)"),
    ("high", "pcpd_kernel_pcp_high_pages", "The PCP's current high (auto-tuned from 6.7)"),
    ("batch", "pcpd_kernel_pcp_batch_pages", "Pages moved per refill or drain (pageset batch)"),
    ("high_min", "pcpd_kernel_pcp_high_min_pages", "Lower bound of the auto-tuned high (6.7+)"),
    ("high_max", "pcpd_kernel_pcp_high_max_pages", "Upper bound of the auto-tuned high (6.7+)"),
)


def pageset_families(zones: tuple[ZoneInfo, ...]) -> Iterator[Metric]:
    """One gauge per pageset field, labelled by node, zone and CPU."""
    for field, name, doc in PAGESET_FIELDS:
        family = GaugeMetricFamily(name, doc, labels=["node", "zone", "cpu"])
        for zone in zones:
            for pageset in zone.pagesets:
                value = getattr(pageset, field)
                if value is not None:
                    family.add_metric([str(zone.node), zone.zone, str(pageset.cpu)], value)
        if family.samples:
            yield family


def zone_families(zones: tuple[ZoneInfo, ...]) -> Iterator[Metric]:
    labels = ["node", "zone"]
    free = GaugeMetricFamily("pcpd_kernel_zone_free_pages", "Free pages in the zone (NR_FREE_PAGES)",
                             labels=labels)
    managed = GaugeMetricFamily("pcpd_kernel_zone_managed_pages", "Pages the buddy allocator manages",
                                labels=labels)
    marks = GaugeMetricFamily("pcpd_kernel_zone_watermark_pages", "The zone's watermarks",
                              labels=labels + ["watermark"])
    for zone in zones:
        where = [str(zone.node), zone.zone]
        free.add_metric(where, zone.pages_free)
        managed.add_metric(where, zone.managed)
        for mark in ("min", "low", "high"):
            marks.add_metric(where + [mark], getattr(zone.watermarks, mark))
    if zones:
        yield from (free, managed, marks)


def buddy_families(buddyinfo: dict[tuple[int, str], tuple[int, ...]]) -> Iterator[Metric]:
    family = GaugeMetricFamily("pcpd_kernel_buddyinfo_blocks", "Free blocks per order (/proc/buddyinfo)",
                               labels=["node", "zone", "order"])
    for (node, zone), blocks in buddyinfo.items():
        for order, n in enumerate(blocks):
            family.add_metric([str(node), zone, str(order)], n)
    if buddyinfo:
        yield family


def vmstat_families(vmstat: dict[str, int]) -> Iterator[Metric]:
    for event in _PER_ZONE_EVENTS:
        family = CounterMetricFamily(f"pcpd_kernel_{event}", f"/proc/vmstat {event}_<zone>",
                                     labels=["zone"])
        for key, value in vmstat.items():
            zone = key.removeprefix(event + "_")
            if zone != key and zone.isalnum():
                family.add_metric([zone], value)
        if family.samples:
            yield family
    for event in _EVENTS:
        if event in vmstat:
            yield CounterMetricFamily(f"pcpd_kernel_{event}", f"/proc/vmstat {event}", value=vmstat[event])
    if "nr_free_pages" in vmstat:
        yield GaugeMetricFamily("pcpd_kernel_free_pages", "Free pages of every zone (nr_free_pages)",
                                value=vmstat["nr_free_pages"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                        help=f"where to serve /metrics (default {DEFAULT_ADDRESS})")
    parser.add_argument("--duration", type=argtypes.seconds, metavar="SECONDS",
                        help="stop after this long (default: until ^C or SIGTERM)")


def command(args: argparse.Namespace) -> int:
    host, port = parse_address(args.address)
    registry = CollectorRegistry()
    registry.register(KernelCollector())
    with MetricsServer(registry, host, port) as server:
        print(f"pcpd kernel-exporter: serving this kernel's PCP state on http://{server.address}/metrics",
              flush=True)
        threading.Event().wait(args.duration)   # ^C ends it through cli's KeyboardInterrupt
    return 0
