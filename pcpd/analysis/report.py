"""Reports of an experiment: the comparison table, report.md and PNG plots.

Every number a report shows is the mean of a figure over the repetitions at
one (sweep point, policy), with its spread (standard deviation) and its ratio
to the baseline policy (``legacy``, or the first policy run when legacy was
not).  The same table goes to the terminal and into report.md.  Plots use
matplotlib's Agg canvas directly, so no GUI backend or pyplot state is involved;
where the runs carry the daemon's PCP tuning series, tuning.png shows each
CPU's high and free_count over time.

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
    RunRecord,
    host_cpu_count,
    mixed_machine,
    run_era,
    write_atomic,
)
from pcpd.model import stats
from pcpd.policies import BASELINE, policy_names, run_label

UNSTABLE_SPREAD = 0.10               # pyperf's rule: a stdev of 10% of the mean or more
FEW_RUNS = 3
BUSY_MARGIN = 1.0                    # load average above the CPU count + this: a busy machine
PLOTTED = ("throughput_ops_per_second", "pcp_hit_ratio", "zone_lock_acquisitions_per_1k_ops",
           "zone_lock_contended_ratio", "zone_lock_wait_p99_seconds", "struct_page_lines_per_op",
           "descriptor_lines_per_op", "pcp_pages")
MEMDESC_HIGH_KEY = "policy.memdesc_high"
REPORT = "report.md"
POLICIES_PNG = "policies.png"
SWEEP_PNG = "sweep.png"
TUNING_PNG = "tuning.png"


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


def policy_label(results: Results, point: Any, policy: str) -> str:
    """``policy`` as the report names it: with the budget its per-type PCPs ran under
    (the swept value where ``policy.memdesc_high`` is the sweep; None: every point),
    or the compound reading it is."""
    return run_label(policy, _budget(results.metadata, point))


def policies_line(results: Results, point: Any) -> str | None:
    """"Policies: ..." with each one's budget or compound reading; None where none has either."""
    labels = [policy_label(results, point, p) for p in results.policies()]
    if labels == results.policies():
        return None
    return "Policies: " + "; ".join(labels) + "."


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
    if results.metadata.get("incomplete"):
        out.append(_incomplete(results))
    out += _run_warnings(results)
    for difference in mixed_machine(results.metadata):
        out.append(f"the runs ran on different machines ({difference}): every mean mixes their figures, "
                   "and `pcpd compare` refuses this file without --force")
    busy = _busy_warning(results)
    if busy:
        out.append(busy)
    runs = {len(results.select(point, policy)) for point in results.points() for policy in results.policies()}
    if min(runs, default=FEW_RUNS) < FEW_RUNS:
        out.append(f"{min(runs)} repetition(s) per policy: fewer than {FEW_RUNS}, so spreads are rough "
                   "and `pcpd compare` tests have little power")
    for point in results.points():
        for policy in results.policies():
            out += _cell_warnings(results, point, policy)
    return out


def _run_warnings(results: Results) -> list[str]:
    """Each run that failed its final audit or had workers replaced."""
    out = []
    for run in results.runs:
        where = _where(results, run["point"], run["policy"]) + f", repetition {run['repetition'] + 1}"
        if run["exit_code"]:
            out.append(f"{where}: the run failed (exit {run['exit_code']}: its final conservation audit "
                       "failed or a PCP was not drained); see experiment.log")
        if run["restarts"]:
            out.append(f"{where}: {run['restarts']} worker(s) died and were replaced during the run")
    return out


def _busy_warning(results: Results) -> str | None:
    """The runs that ended on a machine busier than its CPUs, each judged by the machine that ran
    it (runs on a cluster ran on several); None if none did."""
    loads = [(run["load_average"], host_cpu_count(results.metadata, run.get("host"))) for run in results.runs]
    busy = [(load, cpus) for load, cpus in loads if cpus is not None and load > cpus + BUSY_MARGIN]
    if not busy:
        return None
    counts = {cpus for _, cpus in busy}
    cpus = counts.pop() if len(counts) == 1 else None
    top = max(load for load, _ in busy)
    above = (f"{cpus + BUSY_MARGIN:g} (up to {top:.1f} on {cpus} CPUs)" if cpus is not None
             else f"their machine's CPU count + {BUSY_MARGIN:g} (up to {top:.1f})")
    return (f"{len(busy)} of {len(results.runs)} runs ended with a 1-minute load average above "
            f"{above}: other processes competed for the CPUs, so throughput and zone->lock waits "
            "and hold times are pessimistic; the per-operation figures are not affected")


def _cell_warnings(results: Results, point: Any, policy: str) -> list[str]:
    """One policy at one point: a window without zone->lock traffic, figures that spread widely."""
    out = []
    if _no_lock(results, point, policy):
        out.append(f"{_where(results, point, policy)}: {NO_LOCK} in the measured window, so "
                   "zone->lock contention, waits and hold times have nothing to report there "
                   "(every allocation and free was a PCP hit: a longer window, or a smaller "
                   "pcp.high, would refill and drain)")
    wide = [f"{fig.label} ({spread:.0%})" for fig in FIGURES
            if (spread := _spread(results, point, policy, fig.key)) is not None and spread >= UNSTABLE_SPREAD]
    if wide:
        out.append(f"{_where(results, point, policy)}: standard deviation >= "
                   f"{UNSTABLE_SPREAD:.0%} of the mean in " + ", ".join(wide))
    return out


def _spread(results: Results, point: Any, policy: str, key: str) -> float | None:
    """The spread of a figure over the repetitions of one policy at one point; None from one run."""
    summary = summarize(results.values(point, policy, key))
    return summary.spread if summary and summary.n > 1 else None


def _incomplete(results: Results) -> str:
    """Why the experiment stopped before its last run: a ^C, or the error in ``metadata.failure``."""
    failure = results.metadata.get("failure")
    done = f"after {len(results.runs)} of its {results.metadata.get('runs_planned', '?')} runs"
    how = f"failed {done}: {failure}" if failure else f"was interrupted {done}"
    return f"incomplete: the experiment {how}; `pcpd experiment ... --resume DIR` runs the rest"


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
        named = policies_line(results, point)
        if named:
            parts.append(named)
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
        lines += _point_section(results, point)
    placed = placement_rows(results)
    if placed:
        lines += ["## Where the runs ran", "", format_table(placed, left=(0, 1, 2, 4)), ""]
    problems = warnings(results)
    if problems:
        lines += ["## Warnings", ""] + [f"- {w}" for w in problems] + [""]
    if images:
        lines += ["## Plots", ""] + [f"![{os.path.splitext(name)[0]}]({name})" for name in images] + [""]
    return "\n".join(lines + _definitions(results, images))


def _point_section(results: Results, point: Any) -> list[str]:
    """One sweep point's heading, the policies it ran, its table and its per-type table."""
    named = policies_line(results, point)
    lines = [f"## {point_title(results, point)}", "", *([named, ""] if named else []),
             format_table(comparison_rows(results, point)), ""]
    typed = type_rows(results, point)
    if typed:
        lines += ["Pages per memdesc type at the end of the measured window:", "", format_table(typed), ""]
    return lines


def _definitions(results: Results, images: Sequence[str]) -> list[str]:
    """The report's closing section: what each figure, the window and the plots mean."""
    lines = ["## Definitions", ""]
    lines += [f"- **{fig.label}** ({fig.better or 'neither'} is better): {fig.doc}." for fig in FIGURES]
    lines += ["- **Per memdesc type** (memdesc): *on PCPs*, the pages on that type's lists; *stranded*, "
              "those of them on CPUs that allocated no memory of the type in the window; *other refills "
              "there*, buddy refills for the other types per 1,000 operations on those same CPUs: "
              "zone->lock trips that happened while the stranded pages sat unused beside them."]
    lines += [f"- **Measured window**: {_window_definition(results.metadata)}"]
    if TUNING_PNG in images:
        lines += [f"- **PCP auto-tuning** (tuning.png): each CPU's PCP `high` and `free_count` as "
                  f"{_tuning_definition(results.metadata)}; a CPU with one PCP per memdesc type (memdesc "
                  "budgets per-type and split) shows their sum."]
    return lines + [""]


def _window_definition(meta: dict) -> str:
    """How a run's counters were read: around the window after the warm-up, or (virtual time)
    before the first operation and after the last."""
    if meta.get("mode") == "virtual":
        return ("each virtual run's window is the whole run, cold PCPs included: every counter is read "
                "before the first operation and after every CPU's last; figures are the differences "
                "(pages on PCPs: as at the end).")
    return ("each run starts its workers, waits the warm-up, then reads every counter at the start and "
            "the end of the window; figures are the differences (pages on PCPs: as at the end).")


def _tuning_definition(meta: dict) -> str:
    """Who sampled the tuning series and how often: the daemon on the clock (pcpd.daemon.supervisor),
    or the simulation in virtual time (pcpd.simulate.engine); both thin a long series alike."""
    thinned = "past 512 samples every other one is dropped and the interval doubles"
    if meta.get("mode") == "virtual":
        return ("the simulation sampled them every 10 us of virtual time over the whole of the first run "
                f"of each policy, which has no warm-up ({thinned})")
    return ("the daemon sampled them once a second over the first run of each policy"
            + (", warm-up included" if meta.get("warmup") else "") + f" ({thinned})")


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
            ["policies", ", ".join(run_label(p, _budget(meta)) for p in meta.get("policies", []))],
            ["runs", f"{meta.get('repeat', '?')} repetition(s); {bound}; seeds {meta['seed']}+repetition"],
            ["kernel era", ", ".join(meta["eras"]) if meta.get("eras")
             else str(config.get("kernel", {}).get("era", "?"))],
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


def _budget(meta: dict, point: Any = None) -> str:
    """policy.memdesc_high as the runs at ``point`` had it: the config's, or the point's
    where it is the sweep ("swept" for no point, or a point that also names an era)."""
    key = meta.get("sweep_key") or ""
    if key == MEMDESC_HIGH_KEY and point is not None:
        return str(point)
    if MEMDESC_HIGH_KEY in key:
        return "swept"
    return meta["config"].get("policy", {}).get("memdesc_high", "not recorded")


def write_report(results: Results, directory: str, *, replace: bool = False) -> list[str]:
    """Write report.md and its plots into ``directory``; the paths written.

    ``tuning.png`` only where runs carry a tuning series (pcpd experiment's daemons sample one).
    """
    images = {SWEEP_PNG: plot_sweep(results)} if results.metadata.get("sweep_key") \
        else {POLICIES_PNG: plot_policies(results)}
    tuning = draw_tuning(results)
    if tuning is not None:
        images[TUNING_PNG] = _png(tuning)
    written = []
    for name, png in images.items():
        write_atomic(os.path.join(directory, name), png, replace=replace)
        written.append(os.path.join(directory, name))
    path = os.path.join(directory, REPORT)
    write_atomic(path, render_report(results, list(images)).encode(), replace=replace)
    return [path, *written]


# ---------------------------------------------------------------------------
# Plots.
#
# Each plot is drawn by a draw_* function that returns the matplotlib Figure
# (what the tests inspect) and written as PNG by plot_*.  Readability rules,
# for every panel: values in a unit scaled to them (16 ms, not 16,000 us);
# a log axis where one policy dwarfs another (struct page lines: 309 vs 1.9
# leaves linear bars invisible), and the value written on every bar; error
# bars (one stdev) only where several repetitions gave one, never below zero;
# sweeps ticked at the swept values; a zone->lock panel whose window saw no
# acquisition says so instead of staying blank.

LOG_RATIO = 20.0                     # largest / smallest positive value: a log axis from here
ZONE_LOCK_FIGURES = frozenset(["zone_lock_contended_ratio", "zone_lock_wait_p50_seconds",
                               "zone_lock_wait_p99_seconds", "zone_lock_hold_mean_seconds"])
NO_LOCK = "no zone->lock acquisition"


def _figure(panels: int, columns: int = 4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    rows = math.ceil(panels / columns)
    fig = MplFigure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(rows, columns, squeeze=False).flat)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def axis_unit(figure: Figure, values: Sequence[float]) -> tuple[float, str]:
    """(factor, unit) that puts ``values`` of ``figure`` on an axis in readable numbers."""
    top = max((abs(v) for v in values), default=0.0)
    if figure.unit == "ratio":
        return 100.0, "%"
    if figure.unit == "seconds":
        for factor, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "µs")):
            if top * factor >= 1:
                return factor, unit
        return 1e9, "ns"
    if figure.unit in ("ops/s", "pages"):
        for factor, prefix in ((1e-6, "M "), (1e-3, "k ")):
            if top * factor >= 1:
                return factor, prefix + figure.unit
    return 1.0, figure.unit


def _dwarfed(values: Sequence[float]) -> bool:
    """One value is ``LOG_RATIO`` times another: only a log axis shows both."""
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) >= LOG_RATIO * min(positive)


def _log_y(ax) -> None:
    """A log y axis whose ticks read as plain numbers (0.1, 1, 10), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _errors(summaries: Sequence[Summary], factor: float) -> list[list[float]]:
    """[lower, upper] error lengths of one stdev, the lower one stopping at zero."""
    return [[min(s.stdev, s.mean) * factor for s in summaries], [s.stdev * factor for s in summaries]]


def _title(ax, figure: Figure) -> None:
    ax.set_title(f"{figure.label} ({figure.better or 'neither'} is better)", fontsize=9)


def _no_lock(results: Results, point: Any, policy: str) -> bool:
    """Every run at (point, policy) that measured zone->lock traffic saw no acquisition."""
    seen = results.values(point, policy, "zone_lock_acquisitions_per_1k_ops")
    return bool(seen) and not any(seen)


def _note_missing(ax, figure: Figure, empty: bool, no_lock: Sequence[str]) -> None:
    """Say why a panel, or some of its bars or points, show nothing."""
    if figure.key in ZONE_LOCK_FIGURES and no_lock:
        text = f"{NO_LOCK} in the window:\n" + "\n".join(no_lock)
    elif empty:
        text = "no run had this figure"
    else:
        return
    ax.text(0.5, 0.97, text, transform=ax.transAxes, ha="center", va="top", fontsize=7, color="tab:red")


def draw_policies(results: Results):
    """Bars of the main figures, one per policy, each labelled with its value (a matplotlib Figure)."""
    point = results.points()[0]
    fig, axes = _figure(len(PLOTTED))
    for ax, key in zip(axes, PLOTTED):
        _policies_panel(ax, results, point, FIGURE_BY_KEY[key])
    fig.suptitle(_plot_title(results))
    return fig


def _policies_panel(ax, results: Results, point: Any, figure: Figure) -> None:
    """One figure's bars, a policy each, at ``point``."""
    policies = results.policies()
    summaries = _summaries(results, point, figure.key)
    factor, unit = _scale_y(ax, figure, [s.mean for s in summaries.values()])
    bars = [(i, summaries[p]) for i, p in enumerate(policies) if p in summaries]
    ax.bar([x for x, _ in bars], [s.mean * factor for _, s in bars], color="tab:blue")
    _error_bars(ax, bars, factor, "black")
    for x, s in bars:
        _label_bar(ax, figure, x, s, factor)
    ax.set_xticks(range(len(policies)), policies, rotation=20, fontsize=8)
    ax.margins(y=0.15)                  # room for the value labels
    _title(ax, figure)
    ax.set_ylabel(unit, fontsize=8)
    _note_missing(ax, figure, not bars, _lockless(results, point, figure.key))


def _summaries(results: Results, point: Any, key: str) -> dict[str, Summary]:
    """Each policy's summary of figure ``key`` at ``point``, for the policies that have one."""
    out = {}
    for policy in results.policies():
        summary = summarize(results.values(point, policy, key))
        if summary is not None:
            out[policy] = summary
    return out


def _lockless(results: Results, point: Any, key: str) -> list[str]:
    """The policies without figure ``key`` at ``point`` because their window took no zone->lock."""
    return [p for p in results.policies()
            if summarize(results.values(point, p, key)) is None and _no_lock(results, point, p)]


def _scale_y(ax, figure: Figure, means: Sequence[float]) -> tuple[float, str]:
    """The panel's y unit for ``means`` (``axis_unit``), on a log axis where one dwarfs another."""
    if _dwarfed(means):
        _log_y(ax)
    return axis_unit(figure, means)


def _error_bars(ax, shown: Sequence[tuple[float, Summary]], factor: float, color: str) -> None:
    """One stdev about each mean that several repetitions gave."""
    spread = [(x, s) for x, s in shown if s.n > 1]
    if spread:
        ax.errorbar([x for x, _ in spread], [s.mean * factor for _, s in spread],
                    yerr=_errors([s for _, s in spread], factor), fmt="none", ecolor=color, capsize=3)


def _label_bar(ax, figure: Figure, x: float, s: Summary, factor: float) -> None:
    """The value above its bar and error bar."""
    top = (s.mean + (s.stdev if s.n > 1 else 0.0)) * factor
    # a zero has no place on a log axis: its label sits on the axis' floor
    at, coords = ((x, top), "data") if top > 0 or ax.get_yscale() == "linear" \
        else ((x, 0.0), ("data", "axes fraction"))
    ax.annotate(format_value(figure, s.mean), at, xycoords=coords, xytext=(0, 2),
                textcoords="offset points", ha="center", va="bottom", fontsize=7)


def _plot_title(results: Results) -> str:
    return (f"pcpd experiment {results.metadata['config']['name']}: mean"
            + (", ±1 stdev" if _repeated(results) else ""))


def _repeated(results: Results) -> bool:
    return any(len(results.select(pt, p)) > 1 for pt in results.points() for p in results.policies())


def draw_sweep(results: Results):
    """The main figures against the swept value, one line per policy (a matplotlib Figure)."""
    points = results.points()
    numeric = all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in points)
    xs = list(points) if numeric else list(range(len(points)))
    log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 16
    fig, axes = _figure(len(PLOTTED))
    for ax, key in zip(axes, PLOTTED):
        _sweep_panel(ax, results, xs, FIGURE_BY_KEY[key])
        _sweep_x_axis(ax, results, xs, log_x)
    labelled = next((ax for ax in axes if ax.get_legend_handles_labels()[0]), None)
    if labelled is not None:                 # one legend, on the first panel with a line
        labelled.legend(fontsize=7)
    fig.suptitle(_plot_title(results))
    return fig


def _sweep_panel(ax, results: Results, xs: list[Any], figure: Figure) -> None:
    """One figure against the swept value (placed at ``xs``), a line per policy."""
    points = results.points()
    lines = _sweep_lines(results, xs, figure.key)
    means = [s.mean for shown in lines.values() for _, s in shown]
    factor, unit = _scale_y(ax, figure, means)
    for policy, shown in lines.items():
        if shown:
            (line,) = ax.plot([x for x, _ in shown], [s.mean * factor for _, s in shown], marker="o", label=policy)
            _error_bars(ax, shown, factor, line.get_color())
    _title(ax, figure)
    ax.set_ylabel(unit, fontsize=8)
    _note_missing(ax, figure, not means,
                  [f"{policy} at {p}" for p in points for policy in _lockless(results, p, figure.key)])


def _sweep_lines(results: Results, xs: list[Any], key: str) -> dict[str, list[tuple[Any, Summary]]]:
    """Per policy, (x, summary) of figure ``key`` at each swept value that has one."""
    at = [_summaries(results, p, key) for p in results.points()]
    return {policy: [(x, summaries[policy]) for x, summaries in zip(xs, at) if policy in summaries]
            for policy in results.policies()}


def _sweep_x_axis(ax, results: Results, xs: list[Any], log_x: bool) -> None:
    """Ticks at the swept values, on a log axis where they span 16x or more."""
    if log_x:
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(xs) / 1.2, max(xs) * 1.2)
    else:                                # also places an empty panel's ticks
        pad = (max(xs) - min(xs)) * 0.05 or 0.5
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_xticks(xs, [str(p) for p in results.points()], fontsize=8)
    ax.set_xticks([], minor=True)        # a log axis would add its own between the swept values
    ax.set_xlabel(results.metadata["sweep_key"], fontsize=8)


def tuning_runs(results: Results) -> dict[str, RunRecord]:
    """Per policy, the first run (in point and repetition order) that carries a tuning series."""
    out: dict[str, RunRecord] = {}
    for run in results.runs:
        if "tuning" in run and run["tuning"]["seconds"]:
            out.setdefault(run["policy"], run)
    return out


def _free_count_axis(era: str) -> tuple[str, str]:
    """(what, unit) of the free_count slot in ``era``: before 6.7 it holds free_factor, a shift
    (workers/pcp.py)."""
    return ("free_count: recent frees", "pages") if era == "6.7" else ("free_factor", "shift")


def _tuning_where(results: Results, policy: str, run: RunRecord) -> str:
    """Which run a row of the tuning plot shows."""
    key_name = results.metadata.get("sweep_key")
    return f"{policy}" + (f" at {key_name} = {run['point']}" if key_name else "") \
        + f", repetition {run['repetition'] + 1}"


def _draw_tuning_panel(ax, tuning: dict[str, Any], key: str, what: str, unit: str, *,
                       warmup: float, seconds: str) -> None:
    """One gauge of one run, a line per CPU."""
    few = len(tuning["seconds"]) <= 30       # a short run: mark each sample
    for cpu, values in zip(tuning["cpus"], tuning[key]):
        ax.plot(tuning["seconds"], values, label=f"cpu {cpu}", linewidth=1, marker="o" if few else "")
    ax.set_xlim(left=0)
    if warmup:
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)    # the measured window opens
    ax.set_title(what, fontsize=9)
    ax.set_xlabel(f"{seconds} since the run started" + (" (dotted: the window opens)" if warmup else ""),
                  fontsize=8)
    ax.set_ylabel(unit, fontsize=8)
    if len(tuning["cpus"]) <= 8:
        ax.legend(fontsize=7)


def draw_tuning(results: Results):
    """Each CPU's PCP high and free_count over time, one row per policy; None without series."""
    runs = tuning_runs(results)
    if not runs:
        return None
    fig, axes = _figure(2 * len(runs), columns=2)
    meta = results.metadata
    warmup = meta.get("warmup") or 0
    virtual = meta.get("mode") == "virtual"
    seconds = "virtual seconds" if virtual else "seconds"
    for (policy, run), row in zip(runs.items(), range(0, len(axes), 2)):
        where = _tuning_where(results, policy, run)
        # each run's own era: under experiment.eras the rows ran different kernels
        for ax, key, (what, unit) in zip(axes[row:row + 2], ("high", "free_count"),
                                         (("high: pages it may hold", "pages"),
                                          _free_count_axis(run_era(results, run)))):
            _draw_tuning_panel(ax, run["tuning"], key, f"{where}: {what}", unit, warmup=warmup, seconds=seconds)
    fig.suptitle(f"pcpd experiment {meta['config']['name']}: PCP auto-tuning per CPU "
                 + ("(sampled every 10 us of virtual time)" if virtual else "(sampled by the daemon)"))
    return fig


def plot_policies(results: Results) -> bytes:
    """``draw_policies`` as PNG."""
    return _png(draw_policies(results))


def plot_sweep(results: Results) -> bytes:
    """``draw_sweep`` as PNG."""
    return _png(draw_sweep(results))
