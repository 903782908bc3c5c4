"""``pcpd experiment CONFIG``: one seeded workload under several policies, side by side.

An experiment runs, for every sweep point, every repetition and every policy
(policies innermost, so drift on a shared machine touches each policy alike),
one fresh daemon over the config with only the policy changed.  Repetition r
runs seed + r under every policy, so policies are compared on the same
workload streams.  Each run's first ``experiment.warmup`` seconds are left out:
the figures come from the counters at the start and the end of the measured
window (``pcpd.analysis.results.figures``).  With ``--ops N`` each worker instead stops
after N operations and the whole run is measured; one worker and one seed
then repeat their counts exactly.

With ``--scheduler ADDRESS`` each run is one task on an existing Dask
cluster instead (``pcpd.analysis.cluster``); the runs come back as the same
records, and everything after that (files, report, exit status) is the same
code as for a local experiment.  Every run records the host it ran on.

Output, in ``--out DIR`` (default ``results/<config name>``): results.json,
results.csv, report.md with its plots, and experiment.log (the daemons' and
workers' logs and run summaries).  Existing results are kept unless
``--replace``.  The terminal shows progress on stderr and the comparison
table on stdout.

Imports: ``pcpd.config``, ``pcpd.daemon.supervisor``, ``pcpd.analysis.results``, ``pcpd.analysis.report``;
``pcpd.analysis.cluster`` only for ``--scheduler`` (it imports this module).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shlex
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from pcpd import argtypes
from pcpd.analysis import report
from pcpd.analysis.results import (
    Results,
    RunRecord,
    dump,
    dump_csv,
    environment,
    figures,
    host_name,
    machine_metadata,
    window_counters,
)
from pcpd.config.load import load_settings, settings_hash, settings_to_dict, sweep_points
from pcpd.config.settings import Settings
from pcpd.daemon.console import summary_text
from pcpd.daemon.supervisor import Daemon, RunOptions
from pcpd.errors import ConfigError, PcpdError, UsageError
from pcpd.logs import configure_daemon_logging
from pcpd.model.stats import Snapshot

if TYPE_CHECKING:
    from pcpd.analysis.cluster import Cluster

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
LOG = "experiment.log"
NEVER = 1e9                       # seconds: status lines and mid-run audits off


@dataclass(frozen=True)
class Plan:
    """What an experiment runs: the settings as run, their sweep points, and how to run each."""

    settings: Settings                            # overrides applied
    points: tuple[tuple[Any, Settings], ...]      # (sweep value or None, settings of that point)
    policies: tuple[str, ...]
    repeat: int
    duration: float                               # seconds per run, warm-up included
    warmup: float
    ops: int = 0                                  # > 0: runs bounded by operations per worker

    @property
    def runs(self) -> int:
        return len(self.points) * self.repeat * len(self.policies)


def plan_experiment(settings: Settings, *, policies: tuple[str, ...] | None = None,
                    repeat: int | None = None, duration: float | None = None, ops: int = 0,
                    available_cpus: Collection[int] | None = None) -> Plan:
    """The plan for ``settings`` with the command line's overrides (None: the config's).

    Raises ConfigError or UsageError when the runs would have no fixed length.
    """
    exp = settings.experiment
    policies = policies or exp.policies
    repeat = repeat or exp.repeat
    warmup = 0.0 if ops else exp.warmup
    if duration is not None and not ops and duration <= warmup:
        raise UsageError(f"--duration {duration:g} must be longer than experiment.warmup "
                         f"({warmup:g} s in {settings.source})")
    duration = settings.duration if duration is None else duration
    if not ops and not duration:
        raise ConfigError(settings.source, "duration", "an experiment needs runs of a fixed length: "
                                                       "set duration > 0, or pass --duration or --ops")
    settings = dataclasses.replace(
        settings, duration=duration,
        experiment=dataclasses.replace(exp, policies=tuple(policies), repeat=repeat))
    points = (sweep_points(settings, available_cpus=available_cpus) if settings.sweep.key
              else ((None, settings),))
    return Plan(settings, points, tuple(policies), repeat, duration, warmup, ops)


@dataclass(frozen=True)
class Point:
    """One run of a plan: what ``run_once`` runs, here or as one task on a cluster."""

    settings: Settings            # the sweep point's settings, seeded for the repetition
    policy: str
    value: Any                    # the sweep value, or None without a sweep
    repetition: int
    label: str                    # how progress lines name it


def plan_points(plan: Plan) -> list[Point]:
    """Every run of the plan, in the order a local experiment runs them and its results list them."""
    points = []
    key = plan.settings.sweep.key
    for value, point_settings in plan.points:
        for repetition in range(plan.repeat):
            seeded = dataclasses.replace(point_settings, seed=point_settings.seed + repetition)
            for policy in plan.policies:
                label = f"{policy}, repetition {repetition + 1}/{plan.repeat}"
                if key:
                    label += f", {key} = {value}"
                points.append(Point(seeded, policy, value, repetition, label))
    return points


# ---------------------------------------------------------------------------
# Running.

def run_once(settings: Settings, policy: str, plan: Plan, point: Any = None, repetition: int = 0,
             log_stream: TextIO | None = None) -> RunRecord:
    """One measured run of ``settings`` under ``policy``.

    The daemon's summary goes to ``log_stream`` (or nowhere).  Its signal
    handlers live only as long as the run; a SIGINT or SIGTERM during the run
    stops it and raises KeyboardInterrupt here.
    """
    options = RunOptions(duration=0.0 if plan.ops else plan.duration, policy=policy, listen="",
                         warmup=plan.warmup, quiet=True, status_interval=NEVER,
                         audit_interval=NEVER, ops=plan.ops)
    outcome = Daemon(settings, options).run()
    if log_stream is not None:
        print(summary_text(outcome), file=log_stream, flush=True)
    if outcome.interrupted:
        raise KeyboardInterrupt
    m = outcome.measurement
    if m.start is None or m.end is None:
        raise PcpdError(f"{policy}: the run ended before its measured window opened")
    # a bounded run is measured whole: workers may fold counters before the first snapshot
    start = _zero_snapshot(m.end) if plan.ops else m.start
    return RunRecord(
        policy=policy, point=point, repetition=repetition, seed=settings.seed,
        seconds=m.seconds, ops=m.end.ops() - start.ops(), exit_code=outcome.exit_code,
        restarts=outcome.restarts, load_average=os.getloadavg()[0],
        figures=figures(start, m.end, m.seconds, policy), counters=window_counters(start, m.end),
        host=host_name())


def run_point(point: Point, plan: Plan, log_stream: TextIO | None = None) -> RunRecord:
    """``run_once`` of one point of the plan: the one way a point runs, here or on a cluster node."""
    return run_once(point.settings, point.policy, plan, point.value, point.repetition, log_stream)


def _zero_snapshot(like: Snapshot) -> Snapshot:
    return Snapshot(np.zeros_like(like.per_cpu), np.zeros_like(like.retired))


def run_experiment(plan: Plan, progress: Progress | None = None,
                   log_stream: TextIO | None = None) -> list[RunRecord]:
    """Every run of the plan, one after another on this machine, in the order they ran."""
    runs = []
    for point in plan_points(plan):
        if progress:
            progress.start(point.label)
        run = run_point(point, plan, log_stream)
        runs.append(run)
        if progress:
            progress.finish(point.label, run)
    return runs


class Progress:
    """Progress on ``stream``: a bar redrawn with \\r on a terminal, one line per run elsewhere."""

    WIDTH = 24
    MAX_LINE = 150

    def __init__(self, total: int, stream: TextIO, clock=time.monotonic) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty()
        self.done = 0
        self.began = clock()
        self.drawn = 0                            # length of the line on screen

    def start(self, label: str) -> None:
        if self.tty:
            self._draw(f"running {label}")

    def finish(self, label: str, run: RunRecord) -> None:
        self.done += 1
        figs = run["figures"]
        outcome = (f"{figs['throughput_ops_per_second']:,.0f} ops/s, "
                   f"hit {figs['pcp_hit_ratio']:.1%}" + ("" if not run["exit_code"] else ", FAILED"))
        if self.tty:
            self._draw(f"{label}: {outcome}")
        else:
            print(f"pcpd experiment: [{self.done}/{self.total}] {label}: {outcome}",
                  file=self.stream, flush=True)

    def eta(self) -> float | None:
        """Seconds left, from the mean time of the runs so far; None before the first ends."""
        if not self.done:
            return None
        return (self.clock() - self.began) / self.done * (self.total - self.done)

    def _draw(self, text: str) -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        eta = self.eta()
        left = "" if eta is None else f" {int(eta) // 60}:{int(eta) % 60:02d} left"
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}{left}  {text}"
        line = line[:self.MAX_LINE]
        self.stream.write("\r" + line.ljust(self.drawn))      # blank what a longer line left
        self.stream.flush()
        self.drawn = len(line)

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def experiment_metadata(plan: Plan, command: str = "",
                        hosts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The results file's metadata: the machines that ran it, the settings as run, how they ran.

    ``hosts`` maps each host that ran a run to its ``environment()``; None: this machine alone.
    """
    settings = plan.settings
    hosts = {host_name(): environment()} if hosts is None else hosts
    return {
        **machine_metadata(hosts),
        "hosts": hosts,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "source": settings.source,
        "config_hash": settings_hash(settings),
        "seed": settings.seed,
        "policies": list(plan.policies),
        "repeat": plan.repeat,
        "duration": plan.duration,
        "warmup": plan.warmup,
        "ops": plan.ops,
        "sweep_key": settings.sweep.key or None,
        "sweep_values": list(settings.sweep.values),
        "config": settings_to_dict(settings),
    }


# ---------------------------------------------------------------------------
# CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="TOML config to run")
    parser.add_argument("--policies", type=argtypes.policy_list, metavar="LIST",
                        help="comma-separated policies to run (default: the config's "
                             "experiment.policies), e.g. legacy,memdesc")
    parser.add_argument("--duration", type=argtypes.positive_seconds, metavar="SECONDS",
                        help="seconds per run, warm-up included (default: the config's duration)")
    parser.add_argument("--repeat", type=argtypes.positive_count, metavar="N",
                        help="repetitions per policy and sweep point (default: experiment.repeat)")
    parser.add_argument("--ops", type=argtypes.positive_count, default=0, metavar="N",
                        help="bound each worker by N operations instead of time, with no warm-up; "
                             "one worker and one seed then repeat their counts exactly")
    parser.add_argument("--out", metavar="DIR",
                        help="directory for the results (default: results/<config name>)")
    parser.add_argument("--replace", action="store_true", help="overwrite results already in DIR")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run each point as one task on this Dask scheduler's workers, e.g. "
                             "tcp://HOST:8786 (workers started with --resources pcpd-node=1; "
                             "needs pcpd's cluster extra: dask[distributed])")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this experiment (output options left out)."""
    words = ["pcpd", "experiment", args.config]
    if args.policies:
        words += ["--policies", ",".join(args.policies)]
    if args.duration is not None:
        words += ["--duration", f"{args.duration:g}"]
    if args.repeat:
        words += ["--repeat", str(args.repeat)]
    if args.ops:
        words += ["--ops", str(args.ops)]
    return shlex.join(words)


def output_names(plan: Plan) -> list[str]:
    plot = report.SWEEP_PNG if plan.settings.sweep.key else report.POLICIES_PNG
    return [RESULTS_JSON, RESULTS_CSV, report.REPORT, plot]


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    plan = plan_experiment(settings, policies=args.policies, repeat=args.repeat,
                           duration=args.duration, ops=args.ops)
    out = args.out or os.path.join("results", settings.name)
    paths = [os.path.join(out, name) for name in output_names(plan)]
    existing = [path for path in paths if os.path.lexists(path)]
    if existing and not args.replace:
        raise UsageError(f"{existing[0]} exists; pass --replace to overwrite it, or --out DIR")
    cluster = None
    if args.scheduler:
        # imported here: it imports this module, and only a cluster run needs it (and Dask)
        from pcpd.analysis.cluster import connect
        cluster = connect(args.scheduler)        # a bad or unreachable address stops us before anything runs
    with cluster or contextlib.nullcontext():
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--out {out}: cannot create the directory: {err.strerror}") from None
        runs, hosts = _run_logged(plan, os.path.join(out, LOG), cluster)
    results = Results(experiment_metadata(plan, command_line(args), hosts), runs)
    dump(results, paths[0], replace=args.replace)
    dump_csv(results, paths[1], replace=args.replace)
    report.write_report(results, out, replace=args.replace)
    print(report.render_tables(results))
    for warning in report.warnings(results):
        print(f"warning: {warning}")
    print(f"\nwrote {', '.join(paths)}")
    failed = sum(1 for run in runs if run["exit_code"])
    if failed:
        raise PcpdError(f"{failed} of {len(runs)} runs failed their final audit; "
                        f"see {os.path.join(out, LOG)}")
    return 0


def _run_logged(plan: Plan, log_path: str,
                cluster: Cluster | None = None) -> tuple[list[RunRecord], dict[str, dict[str, Any]]]:
    """Run the plan, here or on ``cluster``, with every daemon's and worker's log lines in ``log_path``.

    Returns the runs in plan order and the ``environment()`` of each host that ran one.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    progress = Progress(plan.runs, sys.stderr)
    with open(log_path, "w", encoding="utf-8") as log_stream:
        configure_daemon_logging(log_stream)
        try:
            if cluster is not None:
                return cluster.run(plan, plan_points(plan), progress, log_stream)
            return run_experiment(plan, progress, log_stream), {host_name(): environment()}
        finally:
            progress.close()
            root.handlers[:] = handlers
            root.setLevel(level)
