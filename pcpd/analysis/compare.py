"""``pcpd compare A B``: how B's figures differ from A's, run by run.

For every (sweep point, policy) both files ran, each figure gets the ratio of
B's mean to A's ("1.42x faster", "1.20x lower (better)") and Welch's
two-sample t-test at 95% over the repetitions: "not significant" where the
repetitions do not support a difference.  Where the test cannot be made
(fewer than two runs on a side, no spread in either), the ratio is printed
with "no test" and the reason, never a verdict.

Results from different workloads (the config as run, outside the
``[experiment]`` and ``[exporter]`` tables) or different machines
(``pcpd.analysis.results.MACHINE_METADATA``) are refused unless ``--force``; forced,
the differences are printed first.  A file whose runs ran on machines that differ
(a sweep on a cluster of unlike nodes) is a machine difference in itself,
even against a file mixed the same way: which point ran where may differ.

Imports: the standard library, ``pcpd.analysis.results``, ``pcpd.analysis.report``.
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
from pcpd.analysis.results import FIGURES, MACHINE_METADATA, Figure, Results, load, mixed_machine
from pcpd.errors import UsageError

ALPHA = 0.05                      # two-sided: a 95% test
# keys of the config as run that do not change what a run measures ([simulate] only matters to
# virtual-time runs, whose cost model is compared as the ``virtual`` metadata)
IGNORED_CONFIG = ("name", "policy.name", "experiment.", "exporter.", "simulate.")
# how a run is measured, beside its config: real or virtual time (absent: real), and a
# virtual run's CPUs and cost model (pcpd simulate)
MEASUREMENT_METADATA = ("warmup", "ops", "mode", "virtual")


@dataclass(frozen=True)
class Verdict:
    """B against A for one figure: the ratio of the means and the t-test's answer.

    ``significant`` is None where no test was made; ``reason`` then says why.
    """

    ratio: float | None
    significant: bool | None
    p_value: float | None = None
    reason: str = ""


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
    """The ratio of B's mean to A's, and whether the runs support a difference."""
    if not a or not b:
        return Verdict(None, None, reason="no values on " + ("either side" if not (a or b) else
                                                               "one side"))
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    ratio = mean_b / mean_a if mean_a else None
    try:
        _, _, p = welch_t_test(a, b)
    except ValueError as why:
        if mean_a == mean_b and len(set(a) | set(b)) == 1:
            return Verdict(ratio, False, reason="identical runs")
        return Verdict(ratio, None, reason=str(why))
    return Verdict(ratio, p < ALPHA, p)


def describe_change(figure: Figure, a_mean: float | None, b_mean: float | None, verdict: Verdict) -> str:
    """"1.42x faster", "1.20x lower (better)", with the test's answer where it has one."""
    if a_mean is None or b_mean is None:
        return f"only in {'A' if b_mean is None else 'B'}"
    if a_mean == b_mean:
        text = "same"
    elif not a_mean or not b_mean:
        text = "up from 0" if not a_mean else "down to 0"
    else:
        up = b_mean > a_mean
        factor = b_mean / a_mean if up else a_mean / b_mean
        if figure.unit == "ops/s":
            text = f"{factor:.2f}x {'faster' if up else 'slower'}"
        else:
            text = f"{factor:.2f}x {'higher' if up else 'lower'}"
            if figure.better:
                text += " (better)" if up == (figure.better == "higher") else " (worse)"
    if verdict.significant is None:
        return f"{text}; no test: {verdict.reason}" if verdict.reason else text
    if not verdict.significant and a_mean != b_mean:
        return f"{text}, not significant"
    return text


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

def comparison_rows(a: Results, b: Results, point: Any, policy: str) -> list[list[str]]:
    """Header row, then one row per figure either side has: A's cell, B's cell, the change."""
    rows = [["figure", "A", "B", "change (B against A)"]]
    for fig in FIGURES:
        va, vb = a.values(point, policy, fig.key), b.values(point, policy, fig.key)
        sa, sb = report.summarize(va), report.summarize(vb)
        if sa is None and sb is None:
            continue
        change = describe_change(fig, sa.mean if sa else None, sb.mean if sb else None, judge(va, vb))
        cells = (report.cell(fig, sa, None, len(a.select(point, policy))),
                 report.cell(fig, sb, None, len(b.select(point, policy))))
        rows.append([fig.label, *cells, change])
    return rows


def render_comparison(a: Results, b: Results, names: tuple[str, str]) -> str:
    """Every (point, policy) both files ran, one table each, then what makes them less sure."""
    parts = []
    policies = [p for p in a.policies() if p in b.policies()]
    points = [p for p in a.points() if p in b.points()]
    key = a.metadata.get("sweep_key")
    for point in points:
        for policy in policies:
            title = policy if point is None else f"{policy}, {key} = {point}"
            parts += [title, report.format_table(comparison_rows(a, b, point, policy), left=(0, 3)), ""]
    for name, res, other in ((names[0], a, b), (names[1], b, a)):
        only = [p for p in res.policies() if p not in other.policies()]
        if only:
            parts.append(f"only in {name}: {', '.join(only)}")
    for name, res in zip(names, (a, b)):
        compared = Results(res.metadata, [run for run in res.runs if run["policy"] in policies
                                          and run["point"] in points])
        for warning in report.warnings(compared):
            parts.append(f"warning: {name}: {warning}")
    return "\n".join(parts).rstrip("\n")


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
    print(f"A = {names[0]}\nB = {names[1]}\nmean ±stdev of the repetitions; "
          "changes tested with Welch's t-test at 95%\n")
    print(render_comparison(a, b, names))
    return 0
