"""What a virtual-time run writes: results.json, results.csv, report.md, and the summary.

The files are real mode's (``pcpd.analysis.results``, ``pcpd.analysis.report``):
one run record per policy with the same ``figures`` (``stats.derive`` over the
CPUs' counters, seconds being virtual) and raw ``counters``, so ``pcpd
compare`` and the report read them as they read an experiment's.  What is
added, all labelled:

* ``metadata.mode = "virtual"`` and ``metadata.virtual``: the cost model and
  the ring size the run used (``pcpd compare`` refuses to mix modes or cost
  models unless forced);
* each run's ``virtual``: the exact zone->lock figures (``LockFigures``),
  the PCP memory over time, each CPU's finishing time and the audit;
* ``results.csv``: the real columns, then ``mode`` and the virtual figures;
* ``report.md``: the experiment report, then a "Virtual time" section and the
  cost model with the source of each constant.

Imports: ``pcpd.analysis`` (results, report, plan, recorder), ``pcpd.config``, ``pcpd.simulate``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, cast

from pcpd.analysis import report
from pcpd.analysis.plan import Plan
from pcpd.analysis.recorder import RESULTS_CSV, RESULTS_JSON, experiment_metadata
from pcpd.analysis.results import (
    Results,
    RunRecord,
    csv_header,
    csv_rows,
    dump,
    figures,
    host_name,
    window_counters,
    write_atomic,
)
from pcpd.config.settings import Settings
from pcpd.model.stats import zero_snapshot
from pcpd.simulate.costs import COST_SOURCES, CostModel
from pcpd.simulate.engine import MODE, SimulationResult

__all__ = ["MODE", "VIRTUAL_COLUMNS", "run_record", "metadata", "write_all", "summary_lines"]

OUTPUTS = (RESULTS_JSON, RESULTS_CSV, report.REPORT, report.POLICIES_PNG, report.TUNING_PNG)

# (key in a run's "virtual", label, unit) in the order the CSV, the report and the summary list them
VIRTUAL_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("cpus", "virtual CPUs", "count"),
    ("lock_acquisitions", "zone->lock acquisitions", "count"),
    ("lock_contended_ratio", "zone->lock contended", "ratio"),
    ("lock_wait_p50_seconds", "zone->lock wait p50", "seconds"),
    ("lock_wait_p90_seconds", "zone->lock wait p90", "seconds"),
    ("lock_wait_p99_seconds", "zone->lock wait p99", "seconds"),
    ("lock_wait_max_seconds", "zone->lock wait max", "seconds"),
    ("lock_wait_mean_seconds", "zone->lock wait mean", "seconds"),
    ("lock_hold_p50_seconds", "zone->lock hold p50", "seconds"),
    ("lock_hold_p99_seconds", "zone->lock hold p99", "seconds"),
    ("lock_hold_max_seconds", "zone->lock hold max", "seconds"),
    ("lock_owner_switches", "zone->lock owner switches", "count"),
    ("lock_waiters_max", "zone->lock most waiters", "count"),
    ("lock_busy_ratio", "zone->lock busy", "ratio"),
    ("lock_order_inversions", "grants out of request order", "count"),
    ("refill_pages", "pages taken from the zone", "count"),
    ("drains_high", "drains: high", "count"),
    ("drains_free_high", "drains: free_high", "count"),
    ("drains_decay", "drains: decay", "count"),
    ("pcp_pages_mean", "pages on PCPs, time-weighted mean", "pages"),
    ("pcp_pages_peak", "pages on PCPs, peak", "pages"),
    ("pcp_high_mean", "sum of pcp->high, time-weighted mean", "pages"),
    ("cpu_seconds_min", "first CPU done at", "seconds"),
    ("cpu_seconds_max", "last CPU done at", "seconds"),
    ("wall_seconds", "wall-clock time here", "wall"),
)
VIRTUAL_COLUMNS = tuple(f"virtual_{key}" for key, _, _ in VIRTUAL_FIGURES)


def virtual_of(run: RunRecord) -> dict[str, Any]:
    """A run's ``virtual`` entry ({} for a real run's record).

    Kept beside ``RunRecord``'s keys rather than among them: real-mode readers
    pass it through untouched (results files keep every key of a run).
    """
    entry = cast(dict[str, Any], run).get("virtual")
    return entry if isinstance(entry, dict) else {}


def virtual_figures(result: SimulationResult) -> dict[str, Any]:
    """A run's ``virtual`` entry: the exact lock figures and what real mode cannot time."""
    lock, totals = result.lock, result.snapshot.totals()
    return {
        "cpus": len(result.cpus),
        "lock_acquisitions": lock.acquisitions,
        "lock_contended": lock.contended,
        "lock_contended_ratio": lock.contended_ratio,
        "lock_wait_p50_seconds": lock.wait_p50_seconds,
        "lock_wait_p90_seconds": lock.wait_p90_seconds,
        "lock_wait_p99_seconds": lock.wait_p99_seconds,
        "lock_wait_max_seconds": lock.wait_max_seconds,
        "lock_wait_mean_seconds": lock.wait_mean_seconds,
        "lock_hold_p50_seconds": lock.hold_p50_seconds,
        "lock_hold_p99_seconds": lock.hold_p99_seconds,
        "lock_hold_max_seconds": lock.hold_max_seconds,
        "lock_hold_mean_seconds": lock.hold_mean_seconds,
        "lock_owner_switches": lock.owner_switches,
        "lock_waiters_max": lock.waiters_max,
        "lock_busy_ratio": lock.busy_ratio,
        "lock_order_inversions": lock.inversions,
        "refill_pages": totals["refill_pages"],
        "drains_high": totals["drains_high"],
        "drains_free_high": totals["drains_free_high"],
        "drains_decay": totals["drains_decay"],
        "pcp_pages_mean": result.pcp_pages_mean,
        "pcp_pages_peak": result.pcp_pages_peak,
        "pcp_high_mean": result.pcp_high_mean,
        "cpu_seconds_min": min(result.finish_seconds),
        "cpu_seconds_max": max(result.finish_seconds),
        "pcp_limits": dataclasses.asdict(result.limits),
        "audit": result.audit_summary,
        "wall_seconds": result.wall_seconds,
    }


def run_record(result: SimulationResult, seed: int) -> RunRecord:
    """The run as a results file records it: real mode's record, with its ``virtual`` figures."""
    end = result.snapshot
    start = zero_snapshot(end)                 # the whole run
    record = RunRecord(
        policy=result.policy, point=None, repetition=0, seed=seed, seconds=result.seconds,
        ops=result.ops, exit_code=result.exit_code, restarts=0,
        # this machine's load does not touch virtual time: never a "busy machine" warning
        load_average=0.0,
        figures=figures(start, end, result.seconds, result.policy),
        counters=window_counters(start, end), host=host_name())
    cast(dict[str, Any], record)["virtual"] = virtual_figures(result)
    record["tuning"] = result.tuning.record()          # each CPU's PCP tuning, in virtual seconds
    return record


def metadata(settings: Settings, policies: tuple[str, ...], ops: int, ring_slots: int,
             command: str) -> dict[str, Any]:
    """An experiment's metadata for these runs, labelled ``mode = "virtual"``."""
    plan = Plan(settings, ((None, settings),), policies, 1, 0.0, 0.0, ops)
    meta = experiment_metadata(plan, command)
    meta["mode"] = MODE
    meta["virtual"] = {"cpus": len(settings.cpus), "ring_slots": ring_slots,
                       "costs": CostModel.from_settings(settings.simulate).as_ns()}
    return meta


# ---------------------------------------------------------------------------
# Text.

def _value(unit: str, value: Any) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "seconds":
        if value >= 1e-3:
            return f"{value * 1e3:.3g} ms"
        return f"{value * 1e6:.3g} us" if value >= 1e-6 else f"{value * 1e9:.3g} ns"
    if unit == "wall":
        return f"{value:.1f} s"
    return f"{value:,.0f}"


def run_column(results: Results, run: RunRecord) -> str:
    """A run's column head: its policy, with its point and repetition where the runs have several."""
    label = run["policy"]
    if run["point"] is not None:
        label += f" {run['point']}"
    if results.metadata.get("repeat", 1) > 1:
        label += f" #{run['repetition'] + 1}"
    return label


def virtual_rows(results: Results) -> list[list[str]]:
    """Header, then one row per virtual figure: label and one cell per run (policy)."""
    runs = results.runs
    rows = [["virtual time", *(run_column(results, run) for run in runs)]]
    for key, label, unit in VIRTUAL_FIGURES:
        rows.append([label, *(_value(unit, virtual_of(run).get(key)) for run in runs)])
    return rows


def cost_rows(meta: dict[str, Any]) -> list[list[str]]:
    costs = meta["virtual"]["costs"]
    rows = [["key", "ns", "what", "default's source"]]
    for key, (what, source) in COST_SOURCES.items():
        rows.append([f"simulate.{key}", f"{costs.get(key, 0):g}", what, source])
    return rows


def virtual_section(results: Results) -> list[str]:
    meta = results.metadata
    return [
        "## Virtual time", "",
        f"These runs ran in virtual time (`pcpd simulate`): {meta['virtual']['cpus']} virtual CPUs in one "
        "process, interleaved by a discrete-event clock; every time and rate above is virtual, from the "
        "cost model below, and independent of the machine that ran them (same seed, same figures). "
        "zone->lock is a virtual resource with FIFO waiters, so its figures here are exact: every "
        "acquisition's wait and hold, not a histogram. The measured window is the whole run.", "",
        report.format_table(virtual_rows(results)), "",
        "## Cost model", "",
        report.format_table(cost_rows(meta), left=(0, 2, 3)), "",
    ]


def summary_lines(results: Results) -> list[str]:
    """The short text on stdout: one paragraph per run."""
    out = []
    for run in results.runs:
        v, f = virtual_of(run), run["figures"]
        unit = {key: u for key, _, u in VIRTUAL_FIGURES}
        lines = [
            f"{run['policy']}, era {results.metadata['config']['kernel']['era']}: {v['cpus']} virtual CPUs, "
            f"{run['ops']:,} ops in {_value('seconds', run['seconds'])} virtual "
            f"({v['wall_seconds']:.1f} s here); {(f['throughput_ops_per_second'] or 0) / 1e6:,.1f}M ops/s "
            f"virtual, PCP hit {f['pcp_hit_ratio'] or 0:.1%}",
            f"  zone->lock: {v['lock_acquisitions']:,} acquisitions "
            f"({f['zone_lock_acquisitions_per_1k_ops'] or 0:.2f} per 1k ops), "
            f"{_value('ratio', v['lock_contended_ratio'])} contended, busy {_value('ratio', v['lock_busy_ratio'])}; "
            f"wait p50 {_value('seconds', v['lock_wait_p50_seconds'])}, "
            f"p99 {_value('seconds', v['lock_wait_p99_seconds'])}, "
            f"max {_value('seconds', v['lock_wait_max_seconds'])}; "
            f"hold p50 {_value('seconds', v['lock_hold_p50_seconds'])}, "
            f"p99 {_value('seconds', v['lock_hold_p99_seconds'])}; "
            f"{v['lock_owner_switches']:,} owner switches, at most {v['lock_waiters_max']} waiting",
            f"  pages from the zone {v['refill_pages']:,}; drains high {v['drains_high']:,}, "
            f"free_high {v['drains_free_high']:,}, decay {v['drains_decay']:,}; pages on PCPs at the end "
            f"{f['pcp_pages'] or 0:,.0f}, mean {_value(unit['pcp_pages_mean'], v['pcp_pages_mean'])}, "
            f"peak {v['pcp_pages_peak']:,}",
            f"  {v['audit']}" + ("" if not run["exit_code"] else "  FAILED"),
        ]
        if v["lock_order_inversions"]:
            lines[1] += f"; {v['lock_order_inversions']:,} grants out of request order"
        out += lines
    return out


# ---------------------------------------------------------------------------
# Files.

def csv_text(results: Results) -> str:
    """Real mode's columns (``results.csv_rows``), then ``mode`` and the virtual figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*csv_header(results), "mode", *VIRTUAL_COLUMNS])
    for run, row in zip(results.runs, csv_rows(results)):
        v = virtual_of(run)
        writer.writerow([*row, MODE, *("" if v.get(key) is None else v[key] for key, _, _ in VIRTUAL_FIGURES)])
    return buffer.getvalue()


def write_all(results: Results, directory: str, *, replace: bool = False) -> list[str]:
    """results.json, results.csv, report.md with its plots in ``directory``; the paths written.

    report.md is the experiment's (``report.write_report``: the sweep or policies plot, and
    tuning.png), rewritten with the virtual sections after its tables and warnings.
    """
    paths = [os.path.join(directory, name) for name in (RESULTS_JSON, RESULTS_CSV)]
    dump(results, paths[0], replace=replace)
    write_atomic(paths[1], csv_text(results).encode(), replace=replace)
    written = report.write_report(results, directory, replace=replace)
    images = [os.path.basename(path) for path in written[1:]]
    text = report.render_report(results, images).rstrip("\n").split("\n")
    at = next((i for i, line in enumerate(text) if line in ("## Plots", "## Definitions")), len(text))
    text[at:at] = virtual_section(results)
    write_atomic(written[0], ("\n".join(text) + "\n").encode(), replace=True)    # ours: written above
    return paths + written
