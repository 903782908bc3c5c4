"""``pcpd compare A B``: how B's figures differ from A's, in the layout of mmtests' compare-kernels.

For every (sweep point, policy) both files ran, one Markdown table: a row per
statistic and figure, a column per file, A the baseline::

    | stat     | figure                |                 A |                 B |
    |----------|-----------------------|------------------:|------------------:|
    | Hmean    | throughput            | 100.0k (   0.00%) | 150.0k *  50.01%* |
    | Amean    | zone->lock per 1k ops |   31.0 (   0.00%) |   20.0 (  35.48%) |
    | Stddev   | throughput            |   1.0k            |   1.0k            |
    | CoeffVar | throughput            |  1.00%            |  0.67%            |

The mean is the harmonic mean where higher is better (rates) and the
arithmetic mean where lower is better (costs), as mmtests chooses it; the
bracket is B's change from A with mmtests' sign (``pdiff``, ``pndiff``):
positive is better either way.  ``*`` in place of the brackets marks a change
that Welch's two-sample t-test at 95% over the repetitions supports; where the
test cannot be made (fewer than two runs on a side, no spread in either) the
change is never marked and a line under the table says why.  Stddev and
CoeffVar rows follow, without a change: a ratio of two spreads from a few
repetitions is noise itself.

A figure computed from too few events in a repetition's window (``SAMPLES``:
a wait quantile of a handful of contended acquisitions, a share of no
acquisitions) reads ``n/a (3 waits)``, the fewest any repetition had, and gets
no change.  Identical means read ``same``; a base that shows as 0 gives no
percentage ("from 0").

Results from different workloads (the config as run, outside the
``[experiment]`` and ``[exporter]`` tables) or different machines
(``pcpd.analysis.results.MACHINE_METADATA``) are refused unless ``--force``; forced,
the differences are printed first.  A file whose runs ran on machines that differ
(a sweep on a cluster of unlike nodes) is a machine difference in itself,
even against a file mixed the same way: which point ran where may differ.

Imports: the standard library, ``pcpd.analysis.results``, ``pcpd.analysis.report``,
``pcpd.model.stats``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pcpd.analysis import report
from pcpd.analysis.results import FIGURES, MACHINE_METADATA, Figure, Results, RunRecord, load, mixed_machine
from pcpd.errors import UsageError
from pcpd.model import stats

ALPHA = 0.05                      # two-sided: a 95% test
# keys of the config as run that do not change what a run measures ([simulate] only matters to
# virtual-time runs, whose cost model is compared as the ``virtual`` metadata)
IGNORED_CONFIG = ("name", "policy.name", "experiment.", "exporter.", "simulate.")
# how a run is measured, beside its config: real or virtual time (absent: real), a
# virtual run's CPUs and cost model (pcpd simulate), and PCPF_FREE_HIGH_BATCH as the
# machine's cache set it (pcpd.spec.ModelSpec.cacheinfo; absent in older files)
MEASUREMENT_METADATA = ("warmup", "ops", "mode", "virtual", "pcp_cacheinfo")
CHANGE_WIDTH = 8                  # "  -5.30%" in its brackets, as mmtests' " (%7.2f%%)"


# ---------------------------------------------------------------------------
# What a figure of one file amounts to.

@dataclass(frozen=True)
class Samples:
    """What one repetition's figure is computed from (``pcpd.model.stats.derive``).

    A repetition whose window summed fewer than ``minimum`` of ``counters``
    gives the figure no meaning: a share of nothing, or a quantile that is one
    of a handful of events.
    """

    counters: tuple[str, ...]
    noun: str                      # plural: "waits"
    minimum: int

    def count(self, run: RunRecord) -> int | None:
        """The window's events; None where the run's counters do not hold them."""
        counters = run["counters"]
        if not all(name in counters for name in self.counters):
            return None
        return sum(counters[name] for name in self.counters)

    def too_few(self, count: int) -> str:
        return f"n/a ({count:,} {self.noun if count != 1 else self.noun[:-1]})"


_OPS = Samples(stats.OPS_COUNTERS, "ops", 1)
_ACQUISITIONS = Samples(("lock_acquisitions",), "acquisitions", 1)
# The events behind each figure that has a minimum.  A share or a per-op figure needs one
# (a window with none stores 0, not a measurement).  A wait quantile needs 5 waits beyond
# it: with fewer it is one of the few longest waits, read off a histogram bucket 4x wide.
SAMPLES: dict[str, Samples] = {
    "pcp_hit_ratio": Samples(stats.SERVED_COUNTERS, "allocations", 1),
    "zone_lock_acquisitions_per_1k_ops": _OPS,
    "zone_lock_contended_ratio": _ACQUISITIONS,
    "zone_lock_wait_p50_seconds": Samples(stats.LOCK_WAIT_BUCKET_COUNTERS, "waits", 10),
    "zone_lock_wait_p99_seconds": Samples(stats.LOCK_WAIT_BUCKET_COUNTERS, "waits", 500),
    "zone_lock_hold_mean_seconds": _ACQUISITIONS,
    "struct_page_lines_per_op": _OPS,
    "descriptor_lines_per_op": _OPS,
    "slab_ops_per_op": _OPS,
}


@dataclass(frozen=True)
class Verdict:
    """Welch's t-test's answer for one figure: None where no test was made, ``reason`` saying why."""

    significant: bool | None
    p_value: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Side:
    """One file's repetitions of one figure at one (point, policy).

    ``too_few`` ("n/a (3 waits)") where a repetition had too few events for
    the figure to mean anything; ``values`` then count for nothing.
    """

    figure: Figure
    values: list[float]
    runs: int
    too_few: str = ""

    @property
    def usable(self) -> bool:
        return bool(self.values) and not self.too_few

    @property
    def mean(self) -> float:
        """mmtests' mean of the repetitions: harmonic where higher is better, arithmetic otherwise."""
        if self.figure.better == "higher":
            return statistics.harmonic_mean(self.values)
        return statistics.fmean(self.values)

    @property
    def stdev(self) -> float | None:
        return statistics.stdev(self.values) if self.usable and len(self.values) > 1 else None


def mean_name(figure: Figure) -> str:
    return "Hmean" if figure.better == "higher" else "Amean"


def side(results: Results, point: Any, policy: str, figure: Figure) -> Side:
    """``figure`` at (point, policy) in ``results``, marked ``too_few`` where a repetition lacked events."""
    runs = results.select(point, policy)
    values = results.values(point, policy, figure.key)
    rule = SAMPLES.get(figure.key)
    counts = [n for run in runs if (n := rule.count(run)) is not None] if rule else []
    fewest = min(counts, default=None)
    too_few = rule.too_few(fewest) if rule and fewest is not None and fewest < rule.minimum else ""
    return Side(figure, values, len(runs), too_few)


# ---------------------------------------------------------------------------
# Statistics.

def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, degrees of freedom, two-sided p) of Welch's unequal-variance t-test.

    Raises ValueError with fewer than two values on a side, or no spread on either.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("needs at least 2 runs on each side")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        raise ValueError("no spread in either set of runs")
    t = (statistics.fmean(b) - statistics.fmean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    return t, df, student_t_two_sided_p(t, df)


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return regularized_beta(df / 2, 0.5, df / (df + t * t))


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by the continued fraction of Numerical Recipes (betai/betacf), for a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, *, eps: float = 1e-15, tiny: float = 1e-300) -> float:
    """Lentz's evaluation of the incomplete beta continued fraction."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def judge(a: Sequence[float], b: Sequence[float]) -> Verdict:
    """Whether the repetitions support a difference between A and B, by Welch's t-test at 95%."""
    try:
        _, _, p = welch_t_test(a, b)
    except ValueError as why:
        return Verdict(None, reason=str(why))
    return Verdict(p < ALPHA, p)


def percent_change(figure: Figure, a_mean: float, b_mean: float) -> float:
    """B's change from A in percent, positive where B is better: mmtests' pdiff, or pndiff for costs."""
    change = 100 * (b_mean - a_mean) / a_mean
    return change if figure.better == "higher" else -change


def describe_change(figure: Figure, a_mean: float, b_mean: float, verdict: Verdict) -> str:
    """B's bracket: "(   5.30%)", "*   5.30%*" where the t-test supports it, "(    same)", "(  from 0)"."""
    if a_mean == b_mean:
        text = "same"
    elif report.format_value(figure, a_mean) == report.format_value(figure, 0.0):
        text = "from 0" if not a_mean else "from ~0"     # never a percentage of (about) nothing
    else:
        # round first: a change too small to print is 0.00%, not -0.00%
        text = f"{round(percent_change(figure, a_mean, b_mean), 2) + 0.0:.2f}%"
    if verdict.significant:
        return f"*{text:>{CHANGE_WIDTH}}*"
    return f"({text:>{CHANGE_WIDTH}})"


# ---------------------------------------------------------------------------
# Which results may be compared.

def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A TOML-shaped dict as dotted keys: workload[0].types.anon -> 2.0."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def workload_differences(a: Mapping, b: Mapping) -> list[str]:
    """``key: A -> B`` for what the two runs' configs and measurement settings disagree on."""
    fa, fb = flatten(a["config"]), flatten(b["config"])
    for key in MEASUREMENT_METADATA:
        fa[key], fb[key] = a.get(key), b.get(key)
    return _differences(fa, fb, ignored=IGNORED_CONFIG)


def machine_differences(a: Mapping, b: Mapping) -> list[str]:
    """What differs between the machines of A and B, and within either that ran on several."""
    mixed = [f"{side} ran on different machines: {d}"
             for side, meta in (("A", a), ("B", b)) for d in mixed_machine(meta)]
    return mixed + _differences({k: a.get(k) for k in MACHINE_METADATA}, {k: b.get(k) for k in MACHINE_METADATA})


def _differences(a: Mapping, b: Mapping, ignored: Sequence[str] = ()) -> list[str]:
    out = []
    for key in dict.fromkeys([*a, *b]):
        if any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignored):
            continue
        if a.get(key, "(none)") != b.get(key, "(none)"):
            out.append(f"{key}: {_show(a.get(key, '(none)'))} -> {_show(b.get(key, '(none)'))}")
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) and value == "(none)" else json.dumps(value)


# ---------------------------------------------------------------------------
# The comparison.

_NO_CHANGE = " " * (CHANGE_WIDTH + 2)    # keeps the values of a column aligned in a terminal


def _value(s: Side) -> str:
    """The mean as the table shows it: "-" where there is none, ``too_few`` where it means nothing."""
    if s.too_few:
        return s.too_few
    if not s.values:
        return "-"
    text = report.format_value(s.figure, s.mean)
    return text + (f" [n={len(s.values)}]" if len(s.values) < s.runs else "")


def mean_row(a: Side, b: Side, verdict: Verdict) -> list[str]:
    """``Hmean | throughput | 100.0k (   0.00%) | 150.0k *  50.00%*``: B's change only where both mean something."""
    both = a.usable and b.usable
    change = describe_change(a.figure, a.mean, b.mean, verdict) if both else _NO_CHANGE
    base = f"({0:{CHANGE_WIDTH - 1}.2f}%)" if a.usable else _NO_CHANGE
    return [mean_name(a.figure), a.figure.label, f"{_value(a)} {base}", f"{_value(b)} {change}"]


def spread_rows(a: Side, b: Side) -> list[list[str]]:
    """Stddev (the sample standard deviation) and CoeffVar of each side's repetitions, as
    mmtests prints both; none for a side of fewer than 2 runs."""
    if a.stdev is None and b.stdev is None:
        return []

    def stddev(s: Side) -> str:
        return "-" if s.stdev is None else report.format_value(s.figure, s.stdev)

    def coeffvar(s: Side) -> str:
        # of the arithmetic mean, as the report's ±% and its 10% warning: one spread, one number
        if s.stdev is None or not statistics.fmean(s.values):
            return "-"
        return f"{100 * s.stdev / statistics.fmean(s.values):.2f}%"

    return [["Stddev", a.figure.label, *(f"{stddev(s)} {_NO_CHANGE}" for s in (a, b))],
            ["CoeffVar", a.figure.label, *(f"{coeffvar(s)} {_NO_CHANGE}" for s in (a, b))]]


def comparison_rows(a: Results, b: Results, point: Any, policy: str) -> tuple[list[list[str]], list[str]]:
    """The table's rows (header, mean rows, then Stddev and CoeffVar rows, as mmtests
    orders them) for every figure either side has, and a line for each reason a
    difference could not be tested."""
    means, spreads = [], []
    changes = 0
    untested: dict[str, list[str]] = {}
    for sa, sb in _shown_sides(a, b, point, policy):
        verdict = _verdict(sa, sb)
        if verdict is not None:
            changes += 1
            if verdict.significant is None:
                untested.setdefault(verdict.reason, []).append(sa.figure.label)
        means.append(mean_row(sa, sb, verdict or Verdict(None)))
        spreads += spread_rows(sa, sb)
    spreads.sort(key=lambda row: row[0] != "Stddev")     # every Stddev row, then every CoeffVar row
    notes = [f"no t-test ({why}): {', '.join(labels) if len(labels) < changes else 'every change'}"
             for why, labels in untested.items()]
    return [["stat", "figure", "A", "B"], *means, *spreads], notes


def _shown_sides(a: Results, b: Results, point: Any, policy: str) -> list[tuple[Side, Side]]:
    """Both sides of every figure either side has (or has too few events for)."""
    sides = [(side(a, point, policy, fig), side(b, point, policy, fig)) for fig in FIGURES]
    return [(sa, sb) for sa, sb in sides if sa.values or sb.values or sa.too_few or sb.too_few]


def _verdict(sa: Side, sb: Side) -> Verdict | None:
    """The t-test of a change between usable sides; None where there is no change to test."""
    if sa.usable and sb.usable and sa.mean != sb.mean:
        return judge(sa.values, sb.values)
    return None


def render_comparison(a: Results, b: Results, names: tuple[str, str]) -> str:
    """Every (point, policy) both files ran, one table each, then what makes them less sure."""
    parts = []
    policies = [p for p in a.policies() if p in b.policies()]
    points = [p for p in a.points() if p in b.points()]
    for point in points:
        for policy in policies:
            parts += _comparison_table(a, b, point, policy)
    parts += _only_in(a, b, names)
    for name, res in zip(names, (a, b)):
        parts += [f"warning: {name}: {warning}" for warning in report.warnings(_compared(res, points, policies))]
    return "\n".join(parts).rstrip("\n")


def _only_in(a: Results, b: Results, names: tuple[str, str]) -> list[str]:
    """The policies one file ran and the other did not."""
    lines = []
    for name, res, other in ((names[0], a, b), (names[1], b, a)):
        only = [p for p in res.policies() if p not in other.policies()]
        if only:
            lines.append(f"only in {name}: {', '.join(only)}")
    return lines


def _comparison_table(a: Results, b: Results, point: Any, policy: str) -> list[str]:
    """One (point, policy): its title, its table and its notes."""
    title = policy if point is None else f"{policy}, {a.metadata.get('sweep_key')} = {point}"
    rows, notes = comparison_rows(a, b, point, policy)
    return [title, report.format_table(rows, left=(0, 1)), *notes, ""]


def _compared(results: Results, points: list[Any], policies: list[str]) -> Results:
    """The runs of ``results`` that the comparison covers."""
    return Results(results.metadata, [run for run in results.runs
                                      if run["policy"] in policies and run["point"] in points])


LEGEND = """\
Hmean where higher is better, Amean where lower is better, of the repetitions; (x%): B's
change from A, positive where B is better (mmtests' sign); *x%*: significant by Welch's
t-test at 95%; n/a (N waits): a repetition had too few events for the figure to mean anything
"""


def check_comparable(a: Results, b: Results, names: tuple[str, str], force: bool) -> list[str]:
    """Lines describing how the two differ; raises UsageError for a difference unless ``force``."""
    workload = workload_differences(a.metadata, b.metadata)
    machine = machine_differences(a.metadata, b.metadata)
    if not (workload or machine):
        return []
    if not force:
        what = []
        if workload:
            what.append(f"workload ({_few(workload)})")
        if machine:
            what.append(f"machine ({_few(machine)})")
        raise UsageError(f"{names[0]} and {names[1]} differ in {' and '.join(what)}; "
                         "pass --force to compare them anyway")
    return ([f"warning: the workloads differ: {d}" for d in workload]
            + [f"warning: the machines differ: {d}" for d in machine])


def _few(items: list[str], shown: int = 3) -> str:
    more = len(items) - shown
    return "; ".join(items[:shown]) + (f"; and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------
# CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="A", help="results.json (or its directory) to compare against")
    parser.add_argument("new", metavar="B", help="results.json (or its directory) to compare")
    parser.add_argument("--force", action="store_true",
                        help="compare results of different workloads or machines (the differences "
                             "are printed first)")


def _results_path(path: str) -> str:
    return os.path.join(path, "results.json") if os.path.isdir(path) else path


def command(args: argparse.Namespace) -> int:
    names = (args.base, args.new)
    a, b = load(_results_path(args.base)), load(_results_path(args.new))
    lines = check_comparable(a, b, names, args.force)
    if not any(p in b.policies() for p in a.policies()) or not any(p in b.points() for p in a.points()):
        raise UsageError(f"{names[0]} and {names[1]} have no policy and sweep point in common")
    for line in lines:
        print(line)
    print(f"A = {names[0]}\nB = {names[1]}\n{LEGEND}")
    print(render_comparison(a, b, names))
    return 0
