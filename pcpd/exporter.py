"""The Prometheus exporter: a collector over the shared arena, and its HTTP server.

``PcpdCollector`` reads the arena at scrape time, the way node_exporter reads
/proc: workers only fold their plain counters into their stats blocks
(pcpd.model.stats) and never call a metrics library.  One scrape copies the
stats region once (``stats.read_snapshot``), reads the zone words without
zone->lock (a racy read is fine for gauges; every word is whole), and asks
psutil about each worker pid.  The exporter exposes raw counters only:
rates and ratios are Prometheus' to derive, from the same counters that
``stats.derive`` reads.

``MetricsServer`` serves a registry on /metrics, with /-/healthy and /-/ready
for supervisors, from a thread of its own.

Series are summed over CPU slots by default; ``per_cpu`` adds a ``cpu`` label
(see docs/metrics.md for every metric, its labels and its unit).  The PCP
auto-tuning gauges (high, free_count, alloc_factor) carry it in both modes.

A virtual-time run (``pcpd simulate``, ``pcpd.simulate.engine``) serves the
same families over its own arena, its one process standing in the first
CPU slot, and adds ``pcpd_virtual_time_seconds_total``; ``pcpd_info`` says
which ``mode`` ran.  This module reads pcpd.model.arena, pcpd.model.stats
and pcpd.model.zone; nothing in pcpd imports it but the daemon and the
simulator.
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from pcpd.errors import PcpdError, UsageError
from pcpd.kernel import MIGRATE_PCPTYPES, NR_PAGE_ORDERS
from pcpd.model import stats
from pcpd.model.arena import (
    C_PID,
    C_RESTARTS,
    H_AUDIT_FAILURES,
    H_AUDIT_OK,
    H_AUDIT_RUNS,
    H_RESTARTS,
    Arena,
)
from pcpd.model.zonewords import (
    FREE_LISTS,
    Z_CLAIMS,
    Z_FREE_PAGES,
    Z_MANAGED,
    Z_NR_FREE,
    Z_STEALS,
    Z_WMARK_HIGH,
    Z_WMARK_LOW,
    Z_WMARK_MIN,
)

__all__ = ["PcpdCollector", "MetricsServer", "start_exporter", "parse_address", "unusable_free_index",
           "RETIRED_CPU", "NODE", "ZONE"]

log = logging.getLogger(__name__)

NS = 1e-9
NODE, ZONE = "0", "Normal"      # the one zone pcpd simulates, named as /proc/buddyinfo does
RETIRED_CPU = "retired"         # per-CPU mode: the counts of workers that were replaced
ORDERS = tuple(str(o) for o in stats.ORDERS)
# Families by name.  Each family class's add_metric takes its own arguments (a
# value, histogram buckets, an info dict), which Metric does not declare, so
# the table is typed loosely and each use site knows its family.
Families = dict[str, Any]


# ---------------------------------------------------------------------------
# Metrics read from the stats blocks, declared once: describe() and collect()
# both walk this table.

_Series = tuple[tuple[tuple[str, ...], str], ...]     # (label values, stats name) pairs


@dataclass(frozen=True)
class _StatFamily:
    """One metric family backed by stats counters.

    ``series`` maps label values to the stats name that holds the value.
    ``combine`` is how CPU slots sum up without a cpu label: "total" follows
    pcpd.model.stats (counters add the retired block, GAUGES sum the live blocks,
    MAXIMA take the max); "max" takes the largest live value.  ``always_per_cpu``
    families carry the cpu label in both modes: a CPU's PCP tuning state means
    nothing summed over CPUs, and one gauge per CPU keeps the series bounded.
    """

    name: str
    kind: str                                   # "counter" or "gauge"
    doc: str
    labels: tuple[str, ...]
    series: _Series
    scale: float = 1.0
    combine: str = "total"
    always_per_cpu: bool = False


def _one(stat: str) -> _Series:
    return (((), stat),)


def _by(values: Iterable[str], stat: Callable[[str], str]) -> _Series:
    return tuple(((v,), stat(v)) for v in values)


_ACCESS = (("write", "written"), ("read", "read"))

STAT_FAMILIES: tuple[_StatFamily, ...] = (
    # -- operations and the PCP fast path --------------------------------
    _StatFamily("pcpd_allocations", "counter",
                "Allocations attempted (failures included), by memdesc type and order.",
                ("memdesc", "order"),
                tuple(((t, o), f"alloc_{t}_order_{o}") for t in stats.MEMDESC_TYPES for o in ORDERS)),
    _StatFamily("pcpd_frees", "counter", "Frees, by memdesc type.",
                ("memdesc",), _by(stats.MEMDESC_TYPES, lambda t: f"free_type_{t}")),
    _StatFamily("pcpd_pcp_allocations", "counter",
                "Allocations by how they were served: hit (from a PCP list), refill (the PCP "
                "list was refilled from the buddy first), buddy (an order the PCP does not keep).",
                ("result",), _by(("hit", "refill", "buddy"), lambda r: f"alloc_{r}")),
    _StatFamily("pcpd_allocation_failures", "counter", "Allocations that failed, by cause.",
                ("cause",), _by(stats.ALLOC_FAIL_CAUSES, lambda c: f"alloc_fail_{c}")),
    _StatFamily("pcpd_pcp_frees", "counter",
                "Frees by where the block went: pcp (onto this CPU's PCP list) or buddy "
                "(bypassing the PCP, straight to the zone).",
                ("result",), ((("pcp",), "free_pcp"), (("buddy",), "free_buddy"))),
    _StatFamily("pcpd_remote_frees", "counter",
                "Blocks freed on another CPU than the one that allocated them: out (handed to "
                "another CPU) and in (received from one).",
                ("direction",), ((("out",), "free_remote_out"), (("in",), "free_remote_in"))),
    _StatFamily("pcpd_pcp_refills", "counter",
                "PCP refills from the buddy (rmqueue_bulk calls), by the memdesc type that missed.",
                ("memdesc",), _by(stats.MEMDESC_TYPES, lambda t: f"alloc_miss_type_{t}")),
    _StatFamily("pcpd_pcp_refill_pages", "counter", "Pages moved from the buddy to PCP lists by refills.",
                (), _one("refill_pages")),
    _StatFamily("pcpd_pcp_drains", "counter",
                "PCP drains to the buddy (free_pcppages_bulk calls), by cause.",
                ("cause",), _by(stats.DRAIN_CAUSES, lambda c: f"drains_{c}")),
    _StatFamily("pcpd_pcp_drain_pages", "counter", "Pages moved from PCP lists to the buddy, by drain cause.",
                ("cause",), _by(stats.DRAIN_CAUSES, lambda c: f"drain_pages_{c}")),
    _StatFamily("pcpd_pcp_drain_all_seen", "counter",
                "drain_all_pages() requests acted on, counted once per CPU.", (),
                _one("drain_all_requests_seen")),
    _StatFamily("pcpd_pressure_waves", "counter", "Workload pressure waves (mass frees, as reclaim).",
                (), _one("pressure_waves")),
    # -- what the PCP lists hold ------------------------------------------
    _StatFamily("pcpd_pcp_pages", "gauge", "Pages on PCP lists.", (), _one("pcp_pages")),
    _StatFamily("pcpd_pcp_typed_pages", "gauge",
                "Pages on the per-memdesc-type PCP lists of the memdesc policy "
                "(zero under policies whose PCP lists are not typed).",
                ("memdesc",), _by(stats.MEMDESC_TYPES, lambda t: f"pcp_pages_type_{t}")),
    # -- PCP auto-tuning, per CPU (stats.TUNING_GAUGES: how a CPU's PCPs combine) --
    _StatFamily("pcpd_pcp_high_pages", "gauge",
                "PCP high: pages the CPU's PCPs may hold before they drain (auto-tuned from 6.7).",
                (), _one("pcp_high"), always_per_cpu=True),
    _StatFamily("pcpd_pcp_free_count_pages", "gauge",
                "PCP free_count: pages freed to the CPU's PCPs since its last allocation, halved by "
                "each allocation (6.7+; free_factor, a shift, in 5.14-6.6).",
                (), _one("pcp_free_count"), always_per_cpu=True),
    _StatFamily("pcpd_pcp_alloc_factor", "gauge",
                "PCP alloc_factor: a refill takes batch << alloc_factor pages (6.7+; the largest "
                "of the CPU's PCPs).", (), _one("pcp_alloc_factor"), always_per_cpu=True),
    _StatFamily("pcpd_pcp_batch_pages", "gauge",
                "PCP batch: pages per refill or drain chunk (the largest of any CPU when summed).",
                (), _one("pcp_batch"), combine="max"),
    _StatFamily("pcpd_held_pages", "gauge", "Pages the workload holds, as the workers report them.",
                (), _one("held_pages")),
    _StatFamily("pcpd_inflight_pages", "gauge",
                "Pages handed to another CPU and not yet received there.", (), _one("inflight_pages")),
    # -- zone->lock ------------------------------------------------------------
    _StatFamily("pcpd_zone_lock_acquisitions", "counter", "zone->lock acquisitions.",
                (), _one("lock_acquisitions")),
    _StatFamily("pcpd_zone_lock_contended", "counter", "zone->lock acquisitions that had to wait.",
                (), _one("lock_contended")),
    _StatFamily("pcpd_zone_lock_hold_seconds", "counter", "Time zone->lock was held.",
                (), _one("lock_hold_ns"), scale=NS),
    _StatFamily("pcpd_zone_lock_owner_switches", "counter",
                "zone->lock acquisitions by another CPU than the previous holder.",
                (), _one("lock_owner_switches")),
    _StatFamily("pcpd_zone_lock_wait_max_seconds", "gauge", "Longest wait for zone->lock.",
                (), _one("lock_wait_max_ns"), scale=NS),
    _StatFamily("pcpd_zone_lock_hold_max_seconds", "gauge", "Longest hold of zone->lock.",
                (), _one("lock_hold_max_ns"), scale=NS),
    _StatFamily("pcpd_zone_lock_waiters_max", "gauge", "Most CPUs seen waiting for zone->lock at once.",
                (), _one("lock_waiters_max")),
    # -- memory traffic --------------------------------------------------------
    _StatFamily("pcpd_cachelines", "counter",
                "64-byte cachelines touched: struct page lines by cause, descriptor lines, "
                "and list links kept in free memory; by access.",
                ("memory", "cause", "access"),
                tuple((("struct_page", c, a), f"lines_{w}_{c}") for c in stats.CAUSES for a, w in _ACCESS)
                + tuple((("descriptor", "descriptor", a), f"desc_lines_{w}") for a, w in _ACCESS)
                + ((("free_memory", "list_link", "write"), "data_lines_written"),)),
    _StatFamily("pcpd_descriptor_slab_objects", "counter",
                "Memdesc descriptor slab object operations.",
                ("op",), ((("alloc",), "slab_alloc"), (("free",), "slab_free"))),
    _StatFamily("pcpd_descriptor_slab_shared", "counter",
                "Trips to the descriptor slab's shared free stack (each one a lock acquisition).",
                (), _one("slab_shared")),
)

# Stats counters left out, and why (tests hold every name to one or the other).
UNEXPORTED_STATS: Mapping[str, str] = {
    "refills": "equals sum of alloc_miss_type_* (pcpd_pcp_refills_total by memdesc)",
    "lock_uncontended": "equals lock_acquisitions - lock_contended",
    "lock_wait_ns": "the _sum of the pcpd_zone_lock_wait_seconds histogram",
    "heartbeat_ns": "worker liveness, the daemon's business",
    **dict.fromkeys(stats.LOCK_WAIT_BUCKET_COUNTERS, "buckets of pcpd_zone_lock_wait_seconds"),
}

_LOCK_WAIT = "pcpd_zone_lock_wait_seconds"
_LOCK_WAIT_DOC = "Time spent waiting for zone->lock, per contended acquisition."
_VIRTUAL_TIME = "pcpd_virtual_time_seconds"
_VIRTUAL_TIME_DOC = ("Virtual time simulated so far: every virtual CPU has run each step that starts "
                     "before it (virtual-time runs only).")
_LE = tuple(floatToGoString(ns * NS) for ns in stats.LOCK_WAIT_BUCKETS) + ("+Inf",)


# ---------------------------------------------------------------------------
# The collector.

class _WorkerSlot:
    """psutil counters of the processes that ran in one CPU slot.

    A worker's counters die with it; ``retired`` keeps the last values seen
    of every earlier process in the slot, so the slot's series never go
    backwards when the daemon replaces its worker.
    """

    __slots__ = ("pid", "process", "last", "retired")

    def __init__(self) -> None:
        self.pid = 0
        self.process: psutil.Process | None = None
        self.last = np.zeros(4)             # user s, system s, voluntary, involuntary switches
        self.retired = np.zeros(4)

    def sample(self, pid: int) -> tuple[np.ndarray, int | None]:
        """Counters so far and the RSS in bytes (None: no process to read)."""
        if pid != self.pid:
            self.retired += self.last
            self.last = np.zeros(4)
            self.pid, self.process = pid, None
        if not pid:
            return self.retired.copy(), None
        try:
            if self.process is None:
                self.process = psutil.Process(pid)
            with self.process.oneshot():
                times = self.process.cpu_times()
                switches = self.process.num_ctx_switches()
                rss = self.process.memory_info().rss
        except psutil.Error:                # gone, a zombie, or not ours: skip, keep what we had
            return self.retired + self.last, None
        self.last = np.array([times.user, times.system, switches.voluntary, switches.involuntary],
                             dtype=float)
        return self.retired + self.last, rss


class PcpdCollector:
    """Metrics of one arena, read at scrape time; register it on a ``CollectorRegistry()``.

    ``info`` becomes the labels of ``pcpd_info`` (policy, era, record_bytes, config, mode).
    ``per_cpu`` adds a ``cpu`` label to every per-CPU series: the CPU number
    from ``cpus`` (slot i runs ``cpus[i]``; default: the slot number), plus
    ``cpu="retired"`` for the counts of replaced workers, so that summing
    over ``cpu`` gives the default series.  ``virtual_time`` (virtual-time
    runs only) returns the virtual seconds simulated so far, exported as
    ``pcpd_virtual_time_seconds_total``.

    One collector serves one arena for its whole life: unregister it before
    the arena is closed, and register a new one for a new arena.  ``collect``
    may run in several threads at once.
    """

    def __init__(self, arena: Arena, info: Mapping[str, str], *, per_cpu: bool = False,
                 cpus: Sequence[int] | None = None, virtual_time: Callable[[], float] | None = None) -> None:
        ncpus = arena.geometry.ncpus
        if cpus is not None and len(cpus) != ncpus:
            raise ValueError(f"cpus names {len(cpus)} CPUs for an arena of {ncpus} slots")
        self.arena = arena
        self.info = info                    # read at every scrape: a reload may change it
        self.per_cpu = per_cpu
        self.virtual_time = virtual_time
        self.cpu_labels = [str(c) for c in (cpus if cpus is not None else range(ncpus))]
        self._slots = [_WorkerSlot() for _ in range(ncpus)]
        self._slots_lock = threading.Lock()

    # -- the Collector protocol -------------------------------------------
    def describe(self) -> list[Metric]:
        """Every family collect() yields, without samples (so registering reads nothing)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        arena = self.arena
        snap = stats.read_snapshot(arena)                            # one copy per scrape
        zone = np.array(arena.zone[:Z_STEALS + 1])
        header = np.array(arena.header[:H_RESTARTS + 1])
        cpuctl = np.array(arena.cpuctl[:, :C_RESTARTS + 1])
        families = self._families()
        yield from self._stat_families(families, snap)
        yield self._lock_wait(families[_LOCK_WAIT], snap)
        yield from self._zone_families(families, zone, snap)
        yield from self._audit_families(families, header)
        yield from self._worker_families(families, cpuctl, header)
        if self.virtual_time is not None:
            families[_VIRTUAL_TIME].add_metric((), self.virtual_time())
            yield families[_VIRTUAL_TIME]
        families["pcpd"].add_metric([], {str(k): str(v) for k, v in self.info.items()})
        yield families["pcpd"]

    # -- families -----------------------------------------------------------
    def _families(self) -> Families:
        """Fresh, empty families by name, in exposition order."""
        cpu = ("cpu",) if self.per_cpu else ()
        out: Families = {}

        def add(metric: Metric) -> None:
            out[metric.name] = metric

        for spec in STAT_FAMILIES:
            cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            add(cls(spec.name, spec.doc, labels=(("cpu",) if spec.always_per_cpu else cpu) + spec.labels))
        add(HistogramMetricFamily(_LOCK_WAIT, _LOCK_WAIT_DOC, labels=cpu))
        buddy = ("node", "zone", "size")
        add(GaugeMetricFamily("pcpd_buddyinfo_blocks",
                              "Free blocks in the buddy by order (size), as node_exporter's "
                              "node_buddyinfo_blocks reads /proc/buddyinfo.", labels=buddy))
        add(GaugeMetricFamily("pcpd_pagetypeinfo_blocks",
                              "Free blocks in the buddy by order (size) and migratetype, as "
                              "/proc/pagetypeinfo shows them.", labels=buddy[:2] + ("migratetype", "size")))
        add(GaugeMetricFamily("pcpd_extfrag_unusable_index",
                              "Fraction of free memory unusable for an allocation of this order "
                              "(unusable_free_index(), debugfs extfrag/unusable_index / 1000).",
                              labels=("node", "zone", "order")))
        add(CounterMetricFamily("pcpd_zone_fallbacks",
                                "Allocations served from another migratetype's free lists: claim "
                                "(the pageblock changed type) or steal (it did not).", labels=("kind",)))
        add(GaugeMetricFamily("pcpd_zone_managed_pages", "Pages the zone manages."))
        add(GaugeMetricFamily("pcpd_zone_free_pages",
                              "Pages free in the buddy (NR_FREE_PAGES; PCP pages not included)."))
        add(GaugeMetricFamily("pcpd_zone_watermark_pages", "Zone watermarks.", labels=("level",)))
        add(GaugeMetricFamily("pcpd_allocated_pages",
                              "Pages allocated: managed - buddy free - on PCP lists - in flight."))
        add(GaugeMetricFamily("pcpd_audit_ok",
                              "Last conservation audit: 1 passed, 0 found a violation, -1 not run yet."))
        add(CounterMetricFamily("pcpd_audit_runs", "Conservation audits run."))
        add(CounterMetricFamily("pcpd_audit_failures", "Conservation audits that found a violation."))
        add(GaugeMetricFamily("pcpd_workers", "Worker processes running.", labels=cpu))
        add(CounterMetricFamily("pcpd_worker_cpu_seconds",
                                "CPU time of the worker processes (those replaced included).",
                                labels=cpu + ("mode",)))
        add(CounterMetricFamily("pcpd_worker_context_switches",
                                "Context switches of the worker processes (those replaced included).",
                                labels=cpu + ("kind",)))
        add(GaugeMetricFamily("pcpd_worker_resident_memory_bytes",
                              "Resident memory of the running worker processes (the shared arena "
                              "counts once per worker).", labels=cpu))
        add(CounterMetricFamily("pcpd_worker_restarts", "Workers replaced by the daemon.", labels=cpu))
        if self.virtual_time is not None:
            add(CounterMetricFamily(_VIRTUAL_TIME, _VIRTUAL_TIME_DOC))
        add(InfoMetricFamily("pcpd", "What this pcpd run simulates."))
        return out

    def _stat_families(self, families: Families, snap: stats.Snapshot) -> Iterator[Metric]:
        rows = snap.per_cpu.tolist()
        retired = snap.retired.tolist()
        totals = None if self.per_cpu else snap.totals()
        for spec in STAT_FAMILIES:
            family = families[spec.name]
            for values, stat in spec.series:
                i = stats.INDEX[stat]
                if totals is not None and not spec.always_per_cpu:
                    total = (int(snap.per_cpu[:, i].max(initial=0)) if spec.combine == "max"
                             else totals[stat])
                    family.add_metric(values, total * spec.scale)
                    continue
                for label, row in zip(self.cpu_labels, rows):
                    family.add_metric((label, *values), row[i] * spec.scale)
                if stat not in stats.GAUGES:
                    family.add_metric((RETIRED_CPU, *values), retired[i] * spec.scale)
            yield family

    def _lock_wait(self, family: HistogramMetricFamily, snap: stats.Snapshot) -> HistogramMetricFamily:
        buckets = [f"lock_wait_bucket_{i}" for i in range(len(_LE))]

        def add(labels: list[str], counts: Iterable[int], wait_ns: int) -> None:
            family.add_metric(labels, list(zip(_LE, accumulate(counts))), wait_ns * NS)

        if not self.per_cpu:
            add([], (snap.total(name) for name in buckets), snap.total("lock_wait_ns"))
            return family
        lo, hi, wait = stats.INDEX[buckets[0]], stats.INDEX[buckets[-1]] + 1, stats.INDEX["lock_wait_ns"]
        for label, row in zip(self.cpu_labels, snap.per_cpu.tolist()):
            add([label], row[lo:hi], row[wait])
        add([RETIRED_CPU], snap.retired[lo:hi].tolist(), int(snap.retired[wait]))
        return family

    def _zone_families(self, families: Families, zone: np.ndarray,
                       snap: stats.Snapshot) -> Iterator[Metric]:
        nr_free = zone[Z_NR_FREE:Z_NR_FREE + FREE_LISTS].reshape(NR_PAGE_ORDERS, MIGRATE_PCPTYPES)
        blocks = nr_free.sum(axis=1)
        buddyinfo, pagetypeinfo = families["pcpd_buddyinfo_blocks"], families["pcpd_pagetypeinfo_blocks"]
        for order, size in enumerate(ORDERS):
            buddyinfo.add_metric((NODE, ZONE, size), int(blocks[order]))
            for mt, name in enumerate(stats.MIGRATETYPES):
                pagetypeinfo.add_metric((NODE, ZONE, name, size), int(nr_free[order, mt]))
        yield buddyinfo
        yield pagetypeinfo
        unusable = families["pcpd_extfrag_unusable_index"]
        for order, index in enumerate(unusable_free_index(blocks)):
            unusable.add_metric((NODE, ZONE, ORDERS[order]), index)
        yield unusable
        fallbacks = families["pcpd_zone_fallbacks"]
        fallbacks.add_metric(("claim",), int(zone[Z_CLAIMS]))
        fallbacks.add_metric(("steal",), int(zone[Z_STEALS]))
        yield fallbacks
        managed, free = int(zone[Z_MANAGED]), int(zone[Z_FREE_PAGES])
        families["pcpd_zone_managed_pages"].add_metric((), managed)
        families["pcpd_zone_free_pages"].add_metric((), free)
        watermarks = families["pcpd_zone_watermark_pages"]
        for level, word in (("min", Z_WMARK_MIN), ("low", Z_WMARK_LOW), ("high", Z_WMARK_HIGH)):
            watermarks.add_metric((level,), int(zone[word]))
        # The remainder, so the four states add up to managed at every scrape;
        # the PCP and in-flight gauges may be one fold (<= 100 ms) old.
        families["pcpd_allocated_pages"].add_metric(
            (), managed - free - snap.total("pcp_pages") - snap.total("inflight_pages"))
        for name in ("pcpd_zone_managed_pages", "pcpd_zone_free_pages", "pcpd_zone_watermark_pages",
                     "pcpd_allocated_pages"):
            yield families[name]

    def _audit_families(self, families: Families, header: np.ndarray) -> Iterator[Metric]:
        for name, word in (("pcpd_audit_ok", H_AUDIT_OK), ("pcpd_audit_runs", H_AUDIT_RUNS),
                           ("pcpd_audit_failures", H_AUDIT_FAILURES)):
            families[name].add_metric((), int(header[word]))
            yield families[name]

    def _worker_families(self, families: Families, cpuctl: np.ndarray,
                         header: np.ndarray) -> Iterator[Metric]:
        with self._slots_lock:              # the slots' bookkeeping is shared by concurrent scrapes
            samples = [slot.sample(int(pid)) for slot, pid in zip(self._slots, cpuctl[:, C_PID])]
        workers, cpu_s, switches, rss, restarts = (
            families[n] for n in ("pcpd_workers", "pcpd_worker_cpu_seconds",
                                  "pcpd_worker_context_switches",
                                  "pcpd_worker_resident_memory_bytes", "pcpd_worker_restarts"))
        if self.per_cpu:
            for label, (counts, resident), restarted in zip(self.cpu_labels, samples, cpuctl[:, C_RESTARTS]):
                self._add_worker(workers, cpu_s, switches, rss, (label,), [(counts, resident)])
                restarts.add_metric((label,), int(restarted))
        else:
            self._add_worker(workers, cpu_s, switches, rss, (), samples)
            restarts.add_metric((), int(header[H_RESTARTS]))
        yield from (workers, cpu_s, switches, rss, restarts)

    @staticmethod
    def _add_worker(workers: GaugeMetricFamily, cpu_s: CounterMetricFamily, switches: CounterMetricFamily,
                    rss: GaugeMetricFamily,
                    labels: tuple[str, ...], samples: list[tuple[np.ndarray, int | None]]) -> None:
        counts = sum((c for c, _ in samples), np.zeros(4))
        running = [r for _, r in samples if r is not None]
        workers.add_metric(labels, len(running))
        cpu_s.add_metric((*labels, "user"), counts[0])
        cpu_s.add_metric((*labels, "system"), counts[1])
        switches.add_metric((*labels, "voluntary"), counts[2])
        switches.add_metric((*labels, "involuntary"), counts[3])
        rss.add_metric(labels, sum(running))


def unusable_free_index(blocks: np.ndarray) -> list[float]:
    """unusable_free_index() for every order, as a fraction (the kernel reports x1000).

    ``blocks[o]`` is the number of free blocks of order o (fill_contig_page_info()).
    """
    free_pages = int(sum(int(n) << o for o, n in enumerate(blocks)))
    if not free_pages:
        return [0.0] * len(blocks)
    out = []
    for order in range(len(blocks)):
        suitable = sum(int(blocks[o]) << (o - order) for o in range(order, len(blocks)))
        out.append((free_pages - (suitable << order)) / free_pages)
    return out


# ---------------------------------------------------------------------------
# The HTTP server.

def start_exporter(arena: Arena, address: str, info: Mapping[str, str], per_cpu: bool = False, *,
                   ready: Callable[[], bool] = lambda: True, cpus: Sequence[int] | None = None,
                   virtual_time: Callable[[], float] | None = None) -> MetricsServer:
    """Serve the metrics of ``arena`` on ``address`` ("host:port") until ``stop()``.

    A registry of its own holds one ``PcpdCollector(arena, info, per_cpu, cpus, virtual_time)``.
    Stop the server before closing the arena.
    """
    registry = CollectorRegistry()
    registry.register(PcpdCollector(arena, info, per_cpu=per_cpu, cpus=cpus, virtual_time=virtual_time))
    host, port = parse_address(address)
    server = MetricsServer(registry, host, port, ready)
    server.start()
    return server


def parse_address(address: str) -> tuple[str, int]:
    """Split an exporter address ("127.0.0.1:9464", "[::1]:9464", "localhost:0")."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"exporter address {address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


_TEXT = "text/plain; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10                            # a client that stalls mid-request loses its thread
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"    # so even a garbled request line gets a status line
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = _TEXT

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        path = urlsplit(self.path).path
        try:
            status, ctype, body = self._route(path)
        except Exception as err:            # a failed scrape answers 500, the server lives on
            log.warning("exporter: %s failed: %s", path, err)
            status, ctype, body = 500, _TEXT, f"error: {err}\n".encode()
        self._send(status, ctype, body, head)

    def _route(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of ``path``: Prometheus' own endpoints, else 404."""
        if path == "/metrics":
            return self._metrics()
        if path == "/-/healthy":
            return 200, _TEXT, b"pcpd is Healthy.\n"
        if path == "/-/ready":
            return self._ready()
        return 404, _TEXT, b"404 page not found\n"

    def _ready(self) -> tuple[int, str, bytes]:
        if self.server.ready():
            return 200, _TEXT, b"pcpd is Ready.\n"
        return 503, _TEXT, b"pcpd is not ready.\n"

    def _send(self, status: int, ctype: str, body: bytes, head: bool) -> None:
        """The response; a large 200 body gzipped for a client that accepts it."""
        encoding = None
        if status == 200 and len(body) > 1024 and "gzip" in self.headers.get("Accept-Encoding", ""):
            body, encoding = gzip.compress(body, compresslevel=1), "gzip"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _metrics(self) -> tuple[int, str, bytes]:
        encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
        return 200, ctype, encoder(self.server.registry)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        log.debug("exporter: %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple, family: int, registry: CollectorRegistry,
                 ready: Callable[[], bool]) -> None:
        self.address_family = family
        self.registry, self.ready = registry, ready
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # a client that hangs up mid-response is not the server's problem
        log.debug("exporter: request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """/metrics, /-/healthy and /-/ready for ``registry`` on host:port, from a thread.

    ``ready`` says whether the daemon is ready (503 on /-/ready until it is).
    Port 0 binds a free port; ``port`` tells which once started.  Every other
    path answers 404.
    """

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9464,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.registry, self.host, self.port, self.ready = registry, host, port, ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; raises PcpdError when the address cannot be bound."""
        try:
            family, _, _, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM)[0]
            self._server = _Server(address, family, self.registry, self.ready)
        except OSError as err:
            raise PcpdError(f"cannot serve metrics on {self.host}:{self.port}: "
                            f"{err.strerror or err}") from err
        self.port = self._server.server_address[1]
        log.debug("exporter: serving on %s", self.address)
        self._thread = threading.Thread(target=self._server.serve_forever, name="pcpd-exporter",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """host:port as a URL writes it (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:           # set whenever _server is; checked for the type
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
