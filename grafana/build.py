"""Build pcpd's Grafana dashboards (grafana/dashboards/*.json) from the panel lists below.

    python grafana/build.py            write the dashboards
    python grafana/build.py --check    exit 1 if a written dashboard differs from this file

The JSON files are the product (provisioning reads them); this script keeps
their boilerplate consistent and is the place to edit them.  Every query
selects ``job=~"$job", instance=~"$instance"`` and every datasource is the
``${datasource}`` variable, so no dashboard names a Grafana datasource uid.
Queries use only metrics that pcpd.exporter emits (tests/test_dashboards.py
holds them to it).  The ``mode`` variable picks real runs (``pcpd run``, real
experiments), virtual ones (``pcpd simulate``, virtual experiments) or both,
by ``pcpd_info``'s ``mode``: it narrows the instances, and every join on
``pcpd_info`` carries it, so each policy series is one policy in one mode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).parent / "dashboards"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance"'
KERNEL_SEL = '{job=~"$kernel_job", instance=~"$kernel_instance", zone="Normal"}'
POLICY = 'policy=~"$policy"'
MODE = 'mode=~"$mode"'
RATE = "$__rate_interval"


# ---------------------------------------------------------------------------
# PromQL helpers.

def sel(extra: str = "") -> str:
    return "{" + SEL + (", " + extra if extra else "") + "}"


def rate(metric: str, by: str = "", extra: str = "") -> str:
    """sum [by (...)] (rate(metric{selector}[$__rate_interval]))"""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{sel(extra)}[{RATE}]))"


def ops(by: str = "") -> str:
    """Allocations plus frees per second."""
    return f"({rate('pcpd_allocations_total', by)} + {rate('pcpd_frees_total', by)})"


def share(by_label: str, label: str, total: str) -> str:
    """Each series of ``by_label`` (grouped by ``label``) divided by the one series ``total``."""
    return f"{by_label} / ignoring ({label}) group_left () {total}"


def quantile(q: float, by: str = "") -> str:
    grouping = ", ".join(filter(None, ["le", by]))
    return f"histogram_quantile({q}, sum by ({grouping}) (rate(pcpd_zone_lock_wait_seconds_bucket{sel()}[{RATE}])))"


def padded_size(expr: str) -> str:
    """Orders 0-9 as "00".."09" so that every sort by label puts them in numeric order."""
    return f'label_replace({expr}, "size", "0$1", "size", "^([0-9])$")'


INFO = f"pcpd_info{sel(POLICY + ', ' + MODE)}"
BY_POLICY = "policy, mode"
POLICY_LEGEND = "{{policy}} ({{mode}})"


def by_policy(per_instance: str) -> str:
    """Aggregate a per-(job, instance) expression by the policy and mode in pcpd_info."""
    return f"sum by ({BY_POLICY}) (({per_instance}) * on (job, instance) group_left ({BY_POLICY}) {INFO})"


def per_instance_rate(metric: str, extra: str = "") -> str:
    return rate(metric, "job, instance", extra)


def per_instance_ops() -> str:
    return ops("job, instance")


# ---------------------------------------------------------------------------
# Panels.

def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> dict:
    out = {"datasource": DATASOURCE, "editorMode": "code", "expr": expr, "format": fmt,
           "legendFormat": legend or "__auto", "range": not instant, "instant": instant, "refId": ref}
    return out


def targets(*queries: tuple[str, str], instant: bool = False, fmt: str = "time_series") -> list[dict]:
    return [target(expr, legend, chr(ord("A") + i), instant, fmt) for i, (expr, legend) in enumerate(queries)]


def _panel(kind: str, title: str, description: str, queries: list[dict], options: dict,
           defaults: dict, w: int, h: int) -> dict:
    return {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "targets": queries, "options": options,
            "fieldConfig": {"defaults": defaults, "overrides": []}, "gridPos": {"w": w, "h": h}}


def timeseries(title: str, description: str, queries: list[dict], unit: str = "short",
               stack: bool = False, w: int = 12, h: int = 8, axis: str = "",
               legend_calcs: tuple[str, ...] = ()) -> dict:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 60 if stack else 10,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    if axis:
        custom["axisLabel"] = axis
    legend = {"displayMode": "table" if legend_calcs else "list", "placement": "bottom",
              "showLegend": True, "calcs": list(legend_calcs)}
    return _panel("timeseries", title, description, queries,
                  {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}},
                  {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}, w, h)


def stat(title: str, description: str, queries: list[dict], unit: str = "short",
         mappings: list | None = None, thresholds: list | None = None, w: int = 4, h: int = 4) -> dict:
    defaults = {"unit": unit, "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute",
                               "steps": thresholds or [{"value": None, "color": "text"}]}}
    if mappings:
        defaults["mappings"] = mappings
    options = {"graphMode": "area", "colorMode": "value", "justifyMode": "auto", "textMode": "auto",
               "wideLayout": True, "showPercentChange": False, "percentChangeColorMode": "standard",
               "orientation": "auto", "reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""}}
    return _panel("stat", title, description, queries, options, defaults, w, h)


def bargauge(title: str, description: str, queries: list[dict], unit: str = "short",
             w: int = 12, h: int = 8) -> dict:
    options = {"displayMode": "basic", "valueMode": "color", "namePlacement": "auto", "showUnfilled": True,
               "sizing": "auto", "minVizWidth": 8, "minVizHeight": 16, "maxVizHeight": 300,
               "orientation": "horizontal",
               "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False, "calcs": []},
               "reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""}}
    defaults = {"unit": unit, "min": 0, "color": {"mode": "continuous-BlPu"},
                "thresholds": {"mode": "absolute", "steps": [{"value": None, "color": "blue"}]}}
    return _panel("bargauge", title, description, queries, options, defaults, w, h)


def heatmap(title: str, description: str, queries: list[dict], unit: str, layout: str,
            w: int = 12, h: int = 8) -> dict:
    options = {"calculate": False, "cellGap": 1, "showValue": "never",
               "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "scale": "exponential",
                         "exponent": 0.5, "steps": 64, "reverse": False},
               "rowsFrame": {"layout": layout},
               "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
               "legend": {"show": True}, "tooltip": {"mode": "single", "yHistogram": False},
               "exemplars": {"color": "rgba(255,0,255,0.7)"}}
    defaults = {"custom": {"scaleDistribution": {"type": "linear"},
                           "hideFrom": {"legend": False, "tooltip": False, "viz": False}}}
    return _panel("heatmap", title, description, queries, options, defaults, w, h)


def table(title: str, description: str, queries: list[dict], w: int = 24, h: int = 6) -> dict:
    transformations = [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                         "__name__": True}}}]
    panel = _panel("table", title, description, queries, {"showHeader": True, "frameIndex": 0,
                                                          "cellHeight": "sm"}, {}, w, h)
    panel["transformations"] = transformations
    return panel


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


# ---------------------------------------------------------------------------
# Dashboards.

def variables(policy: bool = False, kernel: bool = False) -> list[dict]:
    def query(name: str, label: str, expr: str, multi: bool) -> dict:
        return {"type": "query", "name": name, "label": label, "datasource": DATASOURCE,
                "query": expr,
                "refresh": 2, "includeAll": True, "allValue": ".*", "multi": multi, "sort": 1,
                "hide": 0, "options": []}

    out = [{"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
            "hide": 0, "refresh": 1, "includeAll": False, "multi": False, "options": []},
           query("job", "Job", "label_values(pcpd_info, job)", False),
           query("mode", "Mode", 'label_values(pcpd_info{job=~"$job"}, mode)', True),
           query("instance", "Instance", 'label_values(pcpd_info{job=~"$job", mode=~"$mode"}, instance)', True)]
    if policy:
        out.append(query("policy", "Policy", 'label_values(pcpd_info{job=~"$job", mode=~"$mode"}, policy)', True))
    if kernel:      # pcpd kernel-exporter: its own job and port, so its own selector
        out.append(query("kernel_job", "Kernel job", "label_values(pcpd_kernel_pcp_high_pages, job)", False))
        out.append(query("kernel_instance", "Kernel instance",
                         'label_values(pcpd_kernel_pcp_high_pages{job=~"$kernel_job"}, instance)', True))
    return out


def layout(panels: list[dict]) -> list[dict]:
    """Place panels left to right, wrapping at Grafana's 24 columns; number them."""
    x = y = line_h = 0
    for pid, panel in enumerate(panels, 1):
        pos = panel["gridPos"]
        if x + pos["w"] > 24:
            x, y, line_h = 0, y + line_h, 0
        pos["x"], pos["y"] = x, y
        panel["id"] = pid
        x += pos["w"]
        line_h = max(line_h, pos["h"])
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[dict], policy: bool = False,
              kernel: bool = False) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["pcpd"],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION,
        "version": 1, "refresh": "10s", "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "templating": {"list": variables(policy, kernel)},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "pcpd dashboards", "type": "dashboards", "icon": "external link", "tooltip": "",
                   "tags": ["pcpd"], "asDropdown": True, "targetBlank": False, "includeVars": True,
                   "keepTime": True}],
        "panels": layout(panels),
    }


HIT = 'result="hit"'
HIT_RATE = f"{rate('pcpd_pcp_allocations_total', extra=HIT)} / {rate('pcpd_pcp_allocations_total')}"
LINES_PER_OP = f"{rate('pcpd_cachelines_total')} / {ops()}"
AUDIT_MAPPINGS = [{"type": "value", "options": {"1": {"text": "ok", "color": "green"},
                                                "0": {"text": "VIOLATED", "color": "red"},
                                                "-1": {"text": "not run", "color": "text"}}}]
PAGES = "pages"
STRUCT_PAGE = 'memory="struct_page"'
SOME_ORDERS = 'order=~"1|2|3|4|9|10"'
INVOLUNTARY = 'kind="involuntary"'


def overview() -> dict:
    return dashboard("pcpd-overview", "pcpd / Overview",
                     "Throughput, PCP hit rate, zone->lock contention, cacheline cost and memory of a pcpd run.", [
        table("Runs", "What each instance runs: policy, kernel era, mode (real: pcpd run's workers; virtual: "
              "pcpd simulate's virtual CPUs, its rates per wall-clock second) and config.",
              targets((f"max by (job, instance, policy, era, mode, config) (pcpd_info{sel(MODE)})", ""),
                      instant=True, fmt="table"), h=4),
        stat("Operations / s", "Allocations plus frees per second, every worker.",
             targets((ops(), "ops/s")), unit="ops"),
        stat("PCP hit rate", "Allocations served straight from a PCP list.",
             targets((HIT_RATE, "hit rate")), unit="percentunit"),
        stat("Cachelines / op", "64-byte lines touched (struct page, descriptors, free-memory links) per operation.",
             targets((LINES_PER_OP, "lines/op"))),
        stat("zone->lock contended", "Share of zone->lock acquisitions that had to wait.",
             targets((f"{rate('pcpd_zone_lock_contended_total')} / {rate('pcpd_zone_lock_acquisitions_total')}",
                      "contended")), unit="percentunit"),
        stat("Conservation audit", "Last audit of the page array: every page in exactly one state.",
             targets((f"min(pcpd_audit_ok{sel()})", "audit")), mappings=AUDIT_MAPPINGS,
             thresholds=[{"value": None, "color": "red"}, {"value": -1, "color": "text"},
                         {"value": 0, "color": "red"}, {"value": 1, "color": "green"}]),
        stat("Workers", "Worker processes running.", targets((f"sum(pcpd_workers{sel()})", "workers"))),
        timeseries("Throughput", "Allocations and frees per second.",
                   targets((rate("pcpd_allocations_total"), "allocations"), (rate("pcpd_frees_total"), "frees")),
                   unit="ops"),
        timeseries("PCP hit rate", "hit: from a PCP list; refill: after a refill; buddy: orders the PCP does not keep.",
                   targets((share(rate("pcpd_pcp_allocations_total", "result"), "result",
                                  rate("pcpd_pcp_allocations_total")), "{{result}}")), unit="percentunit",
                   stack=True),
        timeseries("zone->lock contention", "Acquisitions per second, and those that waited.",
                   targets((rate("pcpd_zone_lock_acquisitions_total"), "acquisitions"),
                           (rate("pcpd_zone_lock_contended_total"), "contended"),
                           (rate("pcpd_zone_lock_owner_switches_total"), "owner switches")), unit="ops"),
        timeseries("zone->lock wait quantiles", "Wait per contended acquisition (from the wait histogram).",
                   targets((quantile(0.5), "p50"), (quantile(0.9), "p90"), (quantile(0.99), "p99")), unit="s"),
        heatmap("zone->lock wait distribution", "Contended acquisitions per second by wait time.",
                targets((f"sum by (le) (rate(pcpd_zone_lock_wait_seconds_bucket{sel()}[{RATE}]))", "{{le}}"),
                        fmt="heatmap"), unit="s", layout="le"),
        timeseries("Cachelines per operation", "Lines touched per operation, by memory.",
                   targets((share(rate("pcpd_cachelines_total", "memory"), "memory", ops()), "{{memory}}")),
                   stack=True, axis="lines / op"),
        timeseries("Memory", "Where the zone's pages are; the four states add up to the managed pages.",
                   targets((f"sum(pcpd_zone_free_pages{sel()})", "free (buddy)"),
                           (f"sum(pcpd_pcp_pages{sel()})", "on PCP lists"),
                           (f"sum(pcpd_inflight_pages{sel()})", "in flight"),
                           (f"sum(pcpd_allocated_pages{sel()})", "allocated")), stack=True, axis=PAGES, w=24),
        tuning_panel(),
        *virtual_clock_panels(),
    ])


def virtual_clock_panels() -> list[dict]:
    """Virtual runs only: operations per virtual second, and how fast virtual time goes here."""
    clock = rate("pcpd_virtual_time_seconds_total", "job, instance")
    return [
        timeseries("Operations per virtual second", "Virtual runs (pcpd simulate, virtual experiments): "
                   "throughput in virtual time, as their results report it; the other rates here are per "
                   "wall-clock second.",
                   targets((f"{ops('job, instance')} / {clock}", "{{instance}}")), unit="ops"),
        timeseries("Virtual time per second", "Virtual runs: virtual seconds simulated per wall-clock "
                   "second (pcpd_virtual_time_seconds_total), how fast this machine runs the model.",
                   targets((clock, "{{instance}}")), axis="virtual s / s"),
    ]


def tuning_panel() -> dict:
    """high, free_count and the refill size of every CPU, all in pages."""
    batch = f"max by (job, instance) (pcpd_pcp_batch_pages{sel()})"
    refill = f"max by (cpu) (2 ^ pcpd_pcp_alloc_factor{sel()} * on (job, instance) group_left () {batch})"
    return timeseries(
        "PCP auto-tuning per CPU",
        "Each CPU's PCP high (pages it may hold before a drain; nr_pcp_high() tunes it from 6.7 and "
        "decay_pcp_high() lowers it every second), free_count (recent frees, halved by each "
        "allocation) and its order-0 refill size, batch << alloc_factor (pcpd_pcp_alloc_factor).",
        targets((f"max by (cpu) (pcpd_pcp_high_pages{sel()})", "high {{cpu}}"),
                (f"max by (cpu) (pcpd_pcp_free_count_pages{sel()})", "free_count {{cpu}}"),
                (refill, "refill {{cpu}}")),
        axis=PAGES, w=24)


def pcp_detail() -> dict:
    return dashboard("pcpd-pcp", "pcpd / PCP detail",
                     "Per-CPU page lists: traffic by memdesc type and order, refills and drains, pages held.", [
        timeseries("Allocations by memdesc type", "",
                   targets((rate("pcpd_allocations_total", "memdesc"), "{{memdesc}}")),
                   unit="ops", stack=True),
        timeseries("Allocations by order", "", targets((rate("pcpd_allocations_total", "order"), "order {{order}}")),
                   unit="ops", stack=True),
        timeseries("Frees by memdesc type", "", targets((rate("pcpd_frees_total", "memdesc"), "{{memdesc}}")),
                   unit="ops", stack=True),
        timeseries("Where frees go", "pcp: onto the freeing CPU's list; buddy: bypassing it; "
                   "remote: handed to another CPU.",
                   targets((rate("pcpd_pcp_frees_total", "result"), "{{result}}"),
                           (rate("pcpd_remote_frees_total", "direction"), "remote {{direction}}")), unit="ops"),
        timeseries("Refills vs drains", "rmqueue_bulk() and free_pcppages_bulk() calls per second.",
                   targets((rate("pcpd_pcp_refills_total"), "refills"),
                           (rate("pcpd_pcp_drains_total", "cause"), "drains ({{cause}})")), unit="ops"),
        timeseries("Pages moved", "Pages per second from the buddy to PCP lists (refill) and back (drain).",
                   targets((rate("pcpd_pcp_refill_pages_total"), "refill"),
                           (rate("pcpd_pcp_drain_pages_total", "cause"), "drain ({{cause}})")), axis="pages / s"),
        timeseries("Refills by memdesc type", "Which type's PCP list ran empty.",
                   targets((rate("pcpd_pcp_refills_total", "memdesc"), "{{memdesc}}")), unit="ops", stack=True),
        timeseries("Allocation failures", "",
                   targets((rate("pcpd_allocation_failures_total", "cause"), "{{cause}}")), unit="ops"),
        timeseries("Pages held on PCP lists", "Per CPU with exporter.per_cpu = true, else summed.",
                   targets((f"sum by (cpu) (pcpd_pcp_pages{sel()})", "held {{cpu}}"),
                           (f"sum by (cpu) (pcpd_pcp_high_pages{sel()})", "high {{cpu}}")), axis=PAGES),
        timeseries("Pages on typed PCP lists", "The memdesc policy's per-type lists (zero for other policies).",
                   targets((f"sum by (memdesc) (pcpd_pcp_typed_pages{sel()})", "{{memdesc}}")),
                   stack=True, axis=PAGES),
        timeseries("PCP batch", "Pages per refill or drain chunk.",
                   targets((f"max by (cpu) (pcpd_pcp_batch_pages{sel()})", "batch {{cpu}}")), axis=PAGES),
        timeseries("Struct page cachelines by cause", "Per operation.",
                   targets((share(rate("pcpd_cachelines_total", "cause", STRUCT_PAGE), "cause", ops()), "{{cause}}")),
                   stack=True, axis="lines / op"),
        timeseries("Descriptor slab", "Descriptor objects allocated and freed, and trips to the shared free stack.",
                   targets((rate("pcpd_descriptor_slab_objects_total", "op"), "{{op}}"),
                           (rate("pcpd_descriptor_slab_shared_total"), "shared stack")), unit="ops"),
        timeseries("Pages held by the workload", "Pages allocated and not yet freed, and pages in flight between CPUs.",
                   targets((f"sum by (cpu) (pcpd_held_pages{sel()})", "held {{cpu}}"),
                           (f"sum by (cpu) (pcpd_inflight_pages{sel()})", "in flight {{cpu}}")), axis=PAGES),
        row("The real kernel beside the model (pcpd kernel-exporter)"),
        timeseries("PCP high: kernel and model", "The model's pcp->high per CPU beside this machine's "
                   "Normal-zone pageset high, auto-tuned from 6.7 (kernel-exporter's job and instance).",
                   targets((f"max by (cpu) (pcpd_pcp_high_pages{sel()})", "model {{cpu}}"),
                           (f"max by (cpu) (pcpd_kernel_pcp_high_pages{KERNEL_SEL})", "kernel {{cpu}}")),
                   axis=PAGES, w=12),
        timeseries("Pages on PCP lists: kernel and model", "",
                   targets((f"sum by (cpu) (pcpd_pcp_pages{sel()})", "model {{cpu}}"),
                           (f"max by (cpu) (pcpd_kernel_pcp_pages{KERNEL_SEL})", "kernel {{cpu}}")),
                   axis=PAGES, w=12),
    ], kernel=True)


def buddy() -> dict:
    blocks = f"sum by (size) (pcpd_buddyinfo_blocks{sel()})"
    return dashboard("pcpd-buddy", "pcpd / Buddy allocator",
                     "Free blocks by order and migratetype, fragmentation and fallbacks of the zone.", [
        bargauge("Free blocks by order (now)", "As /proc/buddyinfo.",
                 targets((padded_size(blocks), "order {{size}}"), instant=True)),
        heatmap("Free blocks by order", "Rows are orders (00 = order 0), colour the number of free blocks.",
                targets((padded_size(blocks), "{{size}}")), unit="none", layout="unknown"),
        timeseries("Free blocks by migratetype", "As /proc/pagetypeinfo, summed over orders.",
                   targets((f"sum by (migratetype) (pcpd_pagetypeinfo_blocks{sel()})", "{{migratetype}}")),
                   stack=True, axis="blocks"),
        timeseries("Unusable free space index", "Share of free memory in blocks too small for an order "
                   "(extfrag/unusable_index): 0 all usable, 1 none.",
                   targets((f"max by (order) (pcpd_extfrag_unusable_index{sel(SOME_ORDERS)})",
                            "order {{order}}")), unit="percentunit"),
        timeseries("Free pages and watermarks", "NR_FREE_PAGES (buddy only) against min/low/high.",
                   targets((f"sum(pcpd_zone_free_pages{sel()})", "free"),
                           (f"max by (level) (pcpd_zone_watermark_pages{sel()})", "wmark {{level}}")), axis=PAGES),
        timeseries("Migratetype fallbacks", "claim: a pageblock changed type; steal: a block was taken without it.",
                   targets((rate("pcpd_zone_fallbacks_total", "kind"), "{{kind}}")), unit="ops"),
    ])


def workers() -> dict:
    return dashboard("pcpd-workers", "pcpd / Workers",
                     "Worker processes: CPU, context switches, memory, restarts (per CPU with exporter.per_cpu).", [
        stat("Workers", "", targets((f"sum(pcpd_workers{sel()})", "running"))),
        stat("Restarts", "Workers replaced by the daemon since it started.",
             targets((f"sum(pcpd_worker_restarts_total{sel()})", "restarts")),
             thresholds=[{"value": None, "color": "green"}, {"value": 1, "color": "orange"}]),
        stat("Worker CPU", "CPUs' worth of time the workers use.",
             targets((rate("pcpd_worker_cpu_seconds_total"), "cpu")), unit="percentunit"),
        stat("Involuntary switches / s", "Preemptions: workers sharing a CPU.",
             targets((rate("pcpd_worker_context_switches_total", extra=INVOLUNTARY), "involuntary")),
             unit="ops", w=6),
        stat("Resident memory", "Summed RSS of the workers (the shared arena counts once per worker).",
             targets((f"sum(pcpd_worker_resident_memory_bytes{sel()})", "rss")), unit="bytes", w=6),
        timeseries("CPU by worker", "",
                   targets((rate("pcpd_worker_cpu_seconds_total", "cpu, mode"), "{{cpu}} {{mode}}")),
                   unit="percentunit", stack=True),
        timeseries("Context switches", "",
                   targets((rate("pcpd_worker_context_switches_total", "cpu, kind"), "{{cpu}} {{kind}}")), unit="ops"),
        timeseries("Resident memory", "",
                   targets((f"sum by (cpu) (pcpd_worker_resident_memory_bytes{sel()})", "{{cpu}}")), unit="bytes"),
        timeseries("Restarts", "Workers replaced over the last 5 minutes.",
                   targets((f"sum by (cpu) (increase(pcpd_worker_restarts_total{sel()}[5m]))", "{{cpu}}"))),
        timeseries("Operations by CPU", "", targets((ops("cpu"), "{{cpu}}")), unit="ops", stack=True),
        timeseries("zone->lock wait by CPU", "Seconds per second each CPU spends waiting for zone->lock.",
                   targets((rate("pcpd_zone_lock_wait_seconds_sum", "cpu"), "{{cpu}}")), unit="percentunit"),
    ])


def policies() -> dict:
    def ratio(num: str, den: str) -> str:
        return f"{by_policy(num)} / {by_policy(den)}"

    lines = per_instance_rate("pcpd_cachelines_total")
    page_lines = per_instance_rate("pcpd_cachelines_total", STRUCT_PAGE)
    desc_lines = per_instance_rate("pcpd_cachelines_total", 'memory="descriptor"')
    hits = per_instance_rate("pcpd_pcp_allocations_total", 'result="hit"')
    allocs = per_instance_rate("pcpd_pcp_allocations_total")
    wait_p99 = (f"histogram_quantile(0.99, sum by ({BY_POLICY}, le) (rate(pcpd_zone_lock_wait_seconds_bucket"
                f"{sel()}[{RATE}]) * on (job, instance) group_left ({BY_POLICY}) {INFO}))")
    means = ("mean", "max")
    return dashboard("pcpd-policies", "pcpd / Policy comparison",
                     "Experiment runs side by side: each series is one policy in one mode (from pcpd_info); "
                     "the legend table gives each policy's mean over the time range.", [
        table("Runs in range", "Every policy, era, mode and config that ran in the time range.",
              targets((f'max by (job, instance, policy, era, mode, record_bytes, config) '
                       f"(max_over_time({INFO}[$__range]))", ""),
                      instant=True, fmt="table")),
        timeseries("Operations / s", "", targets((by_policy(per_instance_ops()), POLICY_LEGEND)), unit="ops",
                   legend_calcs=means),
        timeseries("Cachelines per operation", "Every line: struct page, descriptors and free-memory links.",
                   targets((ratio(lines, per_instance_ops()), POLICY_LEGEND)), legend_calcs=means,
                   axis="lines / op"),
        timeseries("Struct page cachelines per operation", "",
                   targets((ratio(page_lines, per_instance_ops()), POLICY_LEGEND)), legend_calcs=means,
                   axis="lines / op"),
        timeseries("Descriptor cachelines per operation", "Memdesc policies only.",
                   targets((ratio(desc_lines, per_instance_ops()), POLICY_LEGEND)), legend_calcs=means,
                   axis="lines / op"),
        timeseries("PCP hit rate", "", targets((ratio(hits, allocs), POLICY_LEGEND)), unit="percentunit",
                   legend_calcs=means),
        timeseries("zone->lock acquisitions per operation", "",
                   targets((ratio(per_instance_rate("pcpd_zone_lock_acquisitions_total"), per_instance_ops()),
                            POLICY_LEGEND)), legend_calcs=means),
        timeseries("zone->lock wait p99", "", targets((wait_p99, POLICY_LEGEND)), unit="s", legend_calcs=means),
        timeseries("Worker CPU per million operations", "CPU seconds the workers spend per 10^6 operations.",
                   targets((f"1e6 * {ratio(per_instance_rate('pcpd_worker_cpu_seconds_total'), per_instance_ops())}",
                            POLICY_LEGEND)), unit="s", legend_calcs=means),
        timeseries("Pages on PCP lists", "",
                   targets((by_policy(f"sum by (job, instance) (pcpd_pcp_pages{sel()})"), POLICY_LEGEND)),
                   legend_calcs=means, axis=PAGES),
        timeseries("Operations per virtual second", "Virtual runs only: throughput in virtual time, as "
                   "their results report it (the Operations / s above is per wall-clock second).",
                   targets((ratio(per_instance_ops(), per_instance_rate("pcpd_virtual_time_seconds_total")),
                            POLICY_LEGEND)), unit="ops", legend_calcs=means),
    ], policy=True)


DASHBOARDS = {
    "pcpd-overview.json": overview,
    "pcpd-pcp.json": pcp_detail,
    "pcpd-buddy.json": buddy,
    "pcpd-workers.json": workers,
    "pcpd-policies.json": policies,
}


def render(build) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python grafana/build.py [--check]", file=sys.stderr)
        return 2
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        path, text = OUT / name, render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python grafana/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
