"""Reports of an experiment: the comparison table, report.md and PNG plots.

Every number a report shows is the mean of a figure over the repetitions at
one (sweep point, policy), with its spread (standard deviation) and its ratio
to the baseline policy (``legacy``, or the first policy run when legacy was
not).  The same table goes to the terminal and into report.md.  Plots use
matplotlib's Agg canvas directly, so no GUI backend or pyplot state is involved.

Imports: the standard library, ``pcpd.analysis.results``, ``pcpd.model.stats``; matplotlib
only when a plot is drawn.
"""

from __future__ import annotations

import io
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pcpd.analysis.results import (
    FIGURE_BY_KEY,
    FIGURES,
    Figure,
    Results,
    host_cpu_count,
    mixed_machine,
    write_atomic,
)
from pcpd.model import stats
from pcpd.policies import BASELINE, policy_names

UNSTABLE_SPREAD = 0.10               # pyperf's rule: a stdev of 10% of the mean or more
FEW_RUNS = 3
BUSY_MARGIN = 1.0                    # load average above the CPU count + this: a busy machine
PLOTTED = ("throughput_ops_per_second", "pcp_hit_ratio", "zone_lock_acquisitions_per_1k_ops",
           "zone_lock_contended_ratio", "zone_lock_wait_p99_seconds", "struct_page_lines_per_op",
           "descriptor_lines_per_op", "pcp_pages")
REPORT = "report.md"
POLICIES_PNG = "policies.png"
SWEEP_PNG = "sweep.png"


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one figure over ``n`` repetitions."""

    mean: float
    stdev: float
    n: int

    @property
    def spread(self) -> float | None:
        """The standard deviation as a share of the mean; None when the mean is 0."""
        return self.stdev / abs(self.mean) if self.mean else None


def summarize(values: Sequence[float]) -> Summary | None:
    """None for no values; a stdev of 0 for one."""
    if not values:
        return None
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return Summary(statistics.fmean(values), stdev, len(values))


def baseline(results: Results) -> str:
    policies = results.policies()
    return BASELINE if BASELINE in policies else policies[0]


def ratio(value: Summary | None, base: Summary | None) -> float | None:
    """value / base of the means; None where either is missing or the base is 0."""
    if value is None or base is None or not base.mean:
        return None
    return value.mean / base.mean


# ---------------------------------------------------------------------------
# Numbers.

def format_value(figure: Figure, value: float | None) -> str:
    """One value of ``figure`` in its unit, as tables show it."""
    if value is None:
        return "-"
    if figure.unit == "ratio":
        return f"{value:.1%}"
    if figure.unit == "seconds":
        return f"{value * 1e6:.1f} us" if value < 1e-3 else f"{value * 1e3:.1f} ms"
    if figure.unit == "ops/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"
    if figure.unit == "pages":
        return f"{value:,.0f}"
    return _significant(value)


def _significant(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_spread(figure: Figure, summary: Summary) -> str:
    """"±3%" of the mean; the absolute stdev where the mean is 0; "" for one run."""
    if summary.n < 2:
        return ""
    if summary.spread is not None:
        return f"±{summary.spread:.0%}"
    return "" if not summary.stdev else f"±{format_value(figure, summary.stdev)}"


def format_ratio(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x" if value >= 0.1 or not value else f"{value:.2g}x"


def cell(figure: Figure, summary: Summary | None, vs_base: float | None, runs: int = 0) -> str:
    """A table cell: mean, spread, "[n=N]" when only N of the ``runs`` had the figure,
    and the ratio to the baseline in brackets."""
    if summary is None:
        return "-"
    text = format_value(figure, summary.mean)
    spread = format_spread(figure, summary)
    if spread:
        text += f" {spread}"
    if summary.n < runs:
        text += f" [n={summary.n}]"
    if vs_base is not None:
        text += f" ({format_ratio(vs_base)})"
    return text


# ---------------------------------------------------------------------------
# Tables.

def comparison_rows(results: Results, point: Any) -> list[list[str]]:
    """Header row, then one row per figure: label and one cell per policy."""
    policies = results.policies()
    base = baseline(results)
    rows = [["figure", *(f"{p} (base)" if p == base else p for p in policies)]]
    for fig in FIGURES:
        base_summary = summarize(results.values(point, base, fig.key))
        row = [_label(fig)]
        for policy in policies:
            summary = summarize(results.values(point, policy, fig.key))
            vs_base = None if policy == base else ratio(summary, base_summary)
            row.append(cell(fig, summary, vs_base, len(results.select(point, policy))))
        rows.append(row)
    return rows


def type_rows(results: Results, point: Any) -> list[list[str]] | None:
    """Per memdesc type: pages held, stranded, and the refills beside them (policies with per-type PCPs)."""
    typed = [p for p in results.policies() if p in policy_names(typed_pcps=True)]
    if not typed:
        return None
    columns = (("on PCPs", "pcp_pages_{}"), ("stranded", "stranded_pages_{}"),
               ("other refills/1k ops there", "refills_beside_stranded_{}"))
    rows = [["memdesc type", *(f"{p}: {what}" for p in typed for what, _ in columns)]]
    for t in _workload_types(results):
        row = [t]
        for policy in typed:
            for _, pattern in columns:
                key = pattern.format(t)
                row.append(cell(FIGURE_BY_KEY[key], summarize(results.values(point, policy, key)), None))
        rows.append(row)
    return rows


def _workload_types(results: Results) -> list[str]:
    workloads = results.metadata["config"].get("workload", [])
    named = {t for workload in workloads for t in workload.get("types", {})}
    return [t for t in stats.MEMDESC_TYPES if t in named] or list(stats.MEMDESC_TYPES)


def _label(fig: Figure) -> str:
    unit = {"ratio": "", "seconds": "", "pages": ""}.get(fig.unit, fig.unit)
    return f"{fig.label} ({unit})" if unit and unit not in fig.label else fig.label


def format_table(rows: list[list[str]], left: Sequence[int] = (0,)) -> str:
    """A Markdown table padded to align in a terminal; columns in ``left`` flush left, others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i in left else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(rows[0]), rule, *map(line, rows[1:])])


def point_title(results: Results, point: Any) -> str:
    key = results.metadata.get("sweep_key")
    return f"{key} = {point}" if key else "Results"


def warnings(results: Results) -> list[str]:
    """What makes the numbers less trustworthy: failed runs, restarts, few runs, wide spreads."""
    out = []
    for run in results.runs:
        where = _where(results, run["point"], run["policy"]) + f", repetition {run['repetition'] + 1}"
        if run["exit_code"]:
            out.append(f"{where}: the run failed (exit {run['exit_code']}: its final conservation audit "
                       "failed or a PCP was not drained); see experiment.log")
        if run["restarts"]:
            out.append(f"{where}: {run['restarts']} worker(s) died and were replaced during the run")
    for difference in mixed_machine(results.metadata):
        out.append(f"the runs ran on different machines ({difference}): every mean mixes their figures, "
                   "and `pcpd compare` refuses this file without --force")
    # each run against the CPUs of the machine that ran it (runs on a cluster ran on several)
    loads = [(run["load_average"], host_cpu_count(results.metadata, run.get("host"))) for run in results.runs]
    busy = [(load, cpus) for load, cpus in loads if cpus is not None and load > cpus + BUSY_MARGIN]
    if busy:
        counts = {cpus for _, cpus in busy}
        cpus = counts.pop() if len(counts) == 1 else None
        above = (f"{cpus + BUSY_MARGIN:g} (up to {max(load for load, _ in busy):.1f} on {cpus} CPUs)"
                 if cpus is not None else
                 f"their machine's CPU count + {BUSY_MARGIN:g} (up to {max(load for load, _ in busy):.1f})")
        out.append(f"{len(busy)} of {len(results.runs)} runs ended with a 1-minute load average above "
                   f"{above}: other processes competed for the CPUs, so throughput and zone->lock waits "
                   "and hold times are pessimistic; the per-operation figures are not affected")
    runs = {len(results.select(point, policy)) for point in results.points() for policy in results.policies()}
    if min(runs, default=FEW_RUNS) < FEW_RUNS:
        out.append(f"{min(runs)} repetition(s) per policy: fewer than {FEW_RUNS}, so spreads are rough "
                   "and `pcpd compare` tests have little power")
    for point in results.points():
        for policy in results.policies():
            wide = []
            for fig in FIGURES:
                summary = summarize(results.values(point, policy, fig.key))
                if summary and summary.n > 1 and summary.spread is not None \
                        and summary.spread >= UNSTABLE_SPREAD:
                    wide.append(f"{fig.label} ({summary.spread:.0%})")
            if wide:
                out.append(f"{_where(results, point, policy)}: standard deviation >= "
                           f"{UNSTABLE_SPREAD:.0%} of the mean in " + ", ".join(wide))
    return out


def _where(results: Results, point: Any, policy: str) -> str:
    return policy if point is None else f"{policy} at {results.metadata.get('sweep_key')} = {point}"


def render_tables(results: Results) -> str:
    """The comparison table of every sweep point (and per-type tables): what the terminal shows."""
    parts = []
    n = max((len(results.select(pt, p)) for pt in results.points() for p in results.policies()), default=0)
    parts.append(f"Mean of {n} repetition(s) ±standard deviation (% of the mean); "
                 f"(0.00x) = ratio to {baseline(results)}; [n=N]: only N runs had the figure.")
    for point in results.points():
        if point is not None:
            parts.append(f"\n{point_title(results, point)}")
        parts.append(format_table(comparison_rows(results, point)))
        typed = type_rows(results, point)
        if typed:
            parts.append("\n" + format_table(typed))
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# report.md

def render_report(results: Results, images: Sequence[str]) -> str:
    meta = results.metadata
    lines = [f"# pcpd experiment: {meta['config']['name']}", ""]
    if meta.get("command"):
        lines += ["Reproduce with:", "", "```", meta["command"], "```", ""]
    lines += _setup_lines(meta, _hosts_line(results)) + [""]
    base = baseline(results)
    lines += [f"Each cell is the mean over the repetitions, ±the standard deviation as a share of the "
              f"mean, and in brackets the ratio to {base} (higher or lower is better as the figure's "
              "definition below says). `-`: the figure does not apply; `[n=N]`: only N of the runs "
              "had the figure (a wait quantile needs a contended acquisition).", ""]
    for point in results.points():
        lines += [f"## {point_title(results, point)}", "", format_table(comparison_rows(results, point)), ""]
        typed = type_rows(results, point)
        if typed:
            lines += ["Pages per memdesc type at the end of the measured window:", "",
                      format_table(typed), ""]
    placed = placement_rows(results)
    if placed:
        lines += ["## Where the runs ran", "", format_table(placed, left=(0, 1, 2, 4)), ""]
    problems = warnings(results)
    if problems:
        lines += ["## Warnings", ""] + [f"- {w}" for w in problems] + [""]
    if images:
        lines += ["## Plots", ""] + [f"![{os.path.splitext(name)[0]}]({name})" for name in images] + [""]
    lines += ["## Definitions", ""]
    lines += [f"- **{fig.label}** ({fig.better or 'neither'} is better): {fig.doc}." for fig in FIGURES]
    lines += ["- **Per memdesc type** (memdesc): *on PCPs*, the pages on that type's lists; *stranded*, "
              "those of them on CPUs that allocated no memory of the type in the window; *other refills "
              "there*, buddy refills for the other types per 1,000 operations on those same CPUs: "
              "zone->lock trips that happened while the stranded pages sat unused beside them."]
    lines += ["- **Measured window**: each run starts its workers, waits the warm-up, then reads every "
              "counter at the start and the end of the window; figures are the differences "
              "(pages on PCPs: as at the end).", ""]
    return "\n".join(lines)


def placement_rows(results: Results) -> list[list[str]] | None:
    """Header, then each run's host and machine, when the runs ran on more than one host."""
    hosts = results.metadata.get("hosts") or {}
    if len({run.get("host") for run in results.runs}) < 2:
        return None
    key = results.metadata.get("sweep_key")
    rows = [[key or "point", "policy", "repetition", "host", "machine"]]
    for run in results.runs:
        env = hosts.get(run.get("host")) or {}
        machine = f"{env.get('cpu_model', '?')}, {env.get('cpu_count', '?')} CPUs, {env.get('kernel', '?')}"
        rows.append(["-" if run["point"] is None else str(run["point"]), run["policy"],
                     str(run["repetition"] + 1), str(run.get("host") or "?"), machine])
    return rows


def _hosts_line(results: Results) -> str:
    """``host (N runs), ...``: where the runs ran; "" for a file that does not say."""
    counts: dict[str, int] = {}
    for run in results.runs:
        if host := run.get("host"):
            counts[host] = counts.get(host, 0) + 1
    return ", ".join(f"{host} ({n} run{'s' if n != 1 else ''})" for host, n in sorted(counts.items()))


def _setup_lines(meta: dict, hosts_line: str = "") -> list[str]:
    config = meta["config"]
    bound = (f"{meta['ops']:,} operations per worker" if meta.get("ops")
             else f"{meta.get('duration', config.get('duration'))} s per run, of which "
                  f"{meta.get('warmup', 0)} s warm-up")
    rows = [["setting", "value"],
            ["config", f"{meta.get('source', '')} (hash {meta['config_hash']})"],
            ["policies", ", ".join(meta.get("policies", []))],
            ["runs", f"{meta.get('repeat', '?')} repetition(s); {bound}; seeds {meta['seed']}+repetition"],
            ["kernel era", str(config.get("kernel", {}).get("era", "?"))],
            ["machine", "several: see Where the runs ran" if mixed_machine(meta) else
             f"{meta['cpu_model']}, {meta['cpu_count']} CPUs, {meta['kernel']}"],
            ["software", f"pcpd {meta['pcpd_version']}, {meta['python']}"]]
    if meta.get("mode") == "virtual":         # pcpd simulate: its CPUs and times are not the machine's
        rows.insert(1, ["mode", f"virtual time: {meta['virtual']['cpus']} virtual CPUs on a discrete-event "
                                "clock (pcpd simulate); the machine only ran the simulation"])
    if hosts_line:
        rows.append(["ran on", hosts_line])
    if meta.get("sweep_key"):
        rows.insert(3, ["sweep", f"{meta['sweep_key']} over {meta.get('sweep_values')}"])
    if meta.get("date"):
        rows.append(["date", meta["date"]])
    return [format_table(rows, left=(0, 1))]


def write_report(results: Results, directory: str, *, replace: bool = False) -> list[str]:
    """Write report.md and its plots into ``directory``; the paths written."""
    images = {SWEEP_PNG: plot_sweep(results)} if results.metadata.get("sweep_key") \
        else {POLICIES_PNG: plot_policies(results)}
    written = []
    for name, png in images.items():
        write_atomic(os.path.join(directory, name), png, replace=replace)
        written.append(os.path.join(directory, name))
    path = os.path.join(directory, REPORT)
    write_atomic(path, render_report(results, list(images)).encode(), replace=replace)
    return [path, *written]


# ---------------------------------------------------------------------------
# Plots.

def _figure(panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    columns = 4
    rows = math.ceil(panels / columns)
    fig = MplFigure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(rows, columns, squeeze=False).flat)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _axis_label(fig: Figure) -> str:
    return {"ratio": "share", "seconds": "us"}.get(fig.unit, fig.unit)


def _scaled(fig: Figure, value: float) -> float:
    return value * 1e6 if fig.unit == "seconds" else value


def plot_policies(results: Results) -> bytes:
    """Bar charts of the main figures, one bar per policy, error bars one stdev (PNG)."""
    point = results.points()[0]
    policies = results.policies()
    fig, axes = _figure(len(PLOTTED))
    for ax, key in zip(axes, PLOTTED):
        figure = FIGURE_BY_KEY[key]
        summaries = [summarize(results.values(point, p, key)) for p in policies]
        heights = [_scaled(figure, s.mean) if s else 0.0 for s in summaries]
        errors = [_scaled(figure, s.stdev) if s else 0.0 for s in summaries]
        ax.bar(range(len(policies)), heights, yerr=errors, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(policies)), policies, rotation=20, fontsize=8)
        ax.set_title(f"{figure.label} ({figure.better or 'neither'} is better)", fontsize=9)
        ax.set_ylabel(_axis_label(figure), fontsize=8)
    fig.suptitle(f"pcpd experiment {results.metadata['config']['name']}: mean ±1 stdev")
    return _png(fig)


def plot_sweep(results: Results) -> bytes:
    """The main figures against the sweep variable, one line per policy (PNG)."""
    points = results.points()
    numeric = all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in points)
    xs = list(points) if numeric else list(range(len(points)))
    log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 16
    fig, axes = _figure(len(PLOTTED))
    for ax, key in zip(axes, PLOTTED):
        figure = FIGURE_BY_KEY[key]
        for policy in results.policies():
            summaries = [summarize(results.values(p, policy, key)) for p in points]
            shown = [(x, s) for x, s in zip(xs, summaries) if s is not None]
            if shown:
                ax.errorbar([x for x, _ in shown], [_scaled(figure, s.mean) for _, s in shown],
                            yerr=[_scaled(figure, s.stdev) for _, s in shown],
                            marker="o", capsize=3, label=policy)
        if log_x:
            ax.set_xscale("log", base=2)
        if not numeric:
            ax.set_xticks(xs, [str(p) for p in points], fontsize=8)
        ax.set_title(f"{figure.label} ({figure.better or 'neither'} is better)", fontsize=9)
        ax.set_xlabel(results.metadata["sweep_key"], fontsize=8)
        ax.set_ylabel(_axis_label(figure), fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"pcpd experiment {results.metadata['config']['name']}: mean ±1 stdev")
    return _png(fig)
