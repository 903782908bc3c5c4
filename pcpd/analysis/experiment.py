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

In virtual mode (``experiment.mode = "virtual"``, ``--mode virtual``) each
run is instead one run of ``pcpd simulate``'s engine on ``simulate.cpus``
virtual CPUs (``run_virtual``), bounded by ``simulate.ops`` operations per CPU
and measured whole: the same plan, records and files, labelled as ``pcpd
simulate`` labels them, and the same counts and virtual times for the same
seed on any machine.  ``experiment.eras`` adds the kernel era as an axis:
each sweep value runs under every era, the era being part of the point
(``Plan.point_key``), so reports and comparisons keep eras apart.

With ``--scheduler ADDRESS`` each run is one task on an existing Dask
cluster instead (``pcpd.analysis.cluster``); the runs come back as the same
records, and everything after that (files, report, exit status) is the same
code as for a local experiment.  Every run records the host it ran on.

Output, in ``--out DIR`` (default ``results/<config name>``): results.json,
results.csv, report.md with its plots, and experiment.log (the daemons' and
workers' logs and run summaries).  Existing results are kept unless
``--replace``.  results.json and results.csv are rewritten as each run ends
(``Recorder``); a ^C writes the finished runs and their report, marked
incomplete, and exits 130, and ``--resume DIR`` runs the rest of the same
plan.  ``--listen`` has each real-mode run's daemon serve /metrics.  The
terminal shows progress on stderr and the comparison table on stdout.

Imports: ``pcpd.config``, ``pcpd.daemon.supervisor``, ``pcpd.analysis.results``, ``pcpd.analysis.report``,
``pcpd.simulate`` (engine, costs); ``pcpd.simulate.output`` and ``command`` only where a virtual run or
its CLI options need them, and ``pcpd.analysis.cluster`` only for ``--scheduler`` (they import this module).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Collection
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
    load,
    machine_metadata,
    window_counters,
    write_atomic,
)
from pcpd.config.load import load_settings, replace_path, settings_hash, settings_to_dict, sweep_points
from pcpd.config.settings import ADDRESS_PATTERN, MODES, Settings
from pcpd.daemon.console import summary_text
from pcpd.daemon.supervisor import Daemon, RunOptions
from pcpd.errors import ConfigError, PcpdError, UsageError
from pcpd.kernel import ERAS
from pcpd.logs import configure_daemon_logging
from pcpd.model.stats import Snapshot
from pcpd.simulate.costs import CostModel
from pcpd.simulate.engine import Simulation, ring_slots_for

if TYPE_CHECKING:
    from pcpd.analysis.cluster import Cluster

# called as each run ends: (its index in the points run, its record, its host, that host's environment())
Finished = Callable[[int, RunRecord, str, dict[str, Any]], None]

VIRTUAL = "virtual"               # experiment.mode of runs in virtual time
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
LOG = "experiment.log"
NEVER = 1e9                       # seconds: status lines and mid-run audits off


@dataclass(frozen=True)
class Plan:
    """What an experiment runs: the settings as run, their points, and how to run each."""

    settings: Settings                            # overrides applied
    points: tuple[tuple[Any, Settings], ...]      # (point value or None, settings of that point)
    policies: tuple[str, ...]
    repeat: int
    duration: float                               # seconds per run, warm-up included (real mode)
    warmup: float
    ops: int = 0                                  # > 0: runs bounded by operations per worker (CPU)
    mode: str = "real"                            # "virtual": every run in virtual time
    eras: tuple[str, ...] = ()                    # kernel eras every sweep value runs under
    listen: str = ""                              # real mode: where each run's daemon serves /metrics

    @property
    def runs(self) -> int:
        return len(self.points) * self.repeat * len(self.policies)

    @property
    def virtual(self) -> bool:
        return self.mode == VIRTUAL

    @property
    def point_key(self) -> str:
        """What a point's value names: the sweep key, ``kernel.era``, or both ("" for neither)."""
        keys = (["kernel.era"] if self.eras else []) + ([self.settings.sweep.key] if self.settings.sweep.key
                                                        else [])
        return ", ".join(keys)

    @property
    def point_values(self) -> list[Any]:
        """The points' values in run order (the sweep's values, or era-and-value labels)."""
        return [value for value, _ in self.points] if self.eras else list(self.settings.sweep.values)


def plan_experiment(settings: Settings, *, policies: tuple[str, ...] | None = None,
                    repeat: int | None = None, duration: float | None = None, ops: int = 0,
                    available_cpus: Collection[int] | None = None, mode: str | None = None,
                    eras: tuple[str, ...] | None = None, cpus: int | None = None,
                    listen: str = "") -> Plan:
    """The plan for ``settings`` with the command line's overrides (None: the config's).

    A virtual-mode plan needs ``settings`` loaded with every CPU number
    available (``pcpd.simulate.command.ANY_CPU``): its CPUs become the virtual
    CPUs (``cpus``, else ``simulate.cpus``, else the config's).  Raises
    ConfigError or UsageError when the runs would have no fixed length, or for
    an option the mode does not take.
    """
    exp = settings.experiment
    mode = mode or exp.mode
    eras = exp.eras if eras is None else eras
    experiment = dataclasses.replace(exp, policies=tuple(policies or exp.policies),
                                     repeat=repeat or exp.repeat, mode=mode, eras=tuple(eras))
    settings = dataclasses.replace(settings, experiment=experiment)
    if mode == VIRTUAL:
        settings, available_cpus = _virtual_settings(settings, duration, ops, cpus, listen)
        duration, warmup, ops = 0.0, 0.0, settings.simulate.ops
    else:
        if cpus is not None:
            raise UsageError("--cpus: only a virtual-mode experiment (--mode virtual) has virtual CPUs")
        warmup = 0.0 if ops else exp.warmup
        if duration is not None and not ops and duration <= warmup:
            raise UsageError(f"--duration {duration:g} must be longer than experiment.warmup "
                             f"({warmup:g} s in {settings.source})")
        duration = settings.duration if duration is None else duration
        if not ops and not duration:
            raise ConfigError(settings.source, "duration", "an experiment needs runs of a fixed length: "
                                                           "set duration > 0, or pass --duration or --ops")
        settings = dataclasses.replace(settings, duration=duration)
    points = (sweep_points(settings, available_cpus=available_cpus) if settings.sweep.key
              else ((None, settings),))
    if eras:
        points = tuple((era if value is None else f"{era}, {value}",
                        replace_path(point, "kernel.era", era, available_cpus=available_cpus))
                       for value, point in points for era in eras)
    return Plan(settings, points, experiment.policies, experiment.repeat, duration, warmup, ops,
                mode, tuple(eras), listen)


def _virtual_settings(settings: Settings, duration: float | None, ops: int, cpus: int | None,
                      listen: str) -> tuple[Settings, tuple[int, ...]]:
    """A virtual-mode plan's settings on its virtual CPUs, with ``ops`` per CPU; and those CPUs."""
    if duration is not None:
        raise UsageError("--duration: virtual-mode runs are bounded by operations (--ops, simulate.ops)")
    if listen:
        raise UsageError("--listen: virtual-mode runs have no daemon to serve metrics")
    # imported here: it imports this module (through pcpd.simulate.output)
    from pcpd.simulate.command import on_virtual_cpus

    settings = on_virtual_cpus(settings, cpus)
    if ops:
        settings = replace_path(settings, "simulate.ops", ops, available_cpus=settings.cpus)
    return settings, settings.cpus


@dataclass(frozen=True)
class Point:
    """One run of a plan: what ``run_once`` runs, here or as one task on a cluster."""

    settings: Settings            # the point's settings, seeded for the repetition
    policy: str
    value: Any                    # the point's value (``Plan.point_key``), or None without one
    repetition: int
    label: str                    # how progress lines name it


def plan_points(plan: Plan) -> list[Point]:
    """Every run of the plan, in the order a local experiment runs them and its results list them."""
    points = []
    key = plan.point_key
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
    options = RunOptions(duration=0.0 if plan.ops else plan.duration, policy=policy, listen=plan.listen,
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
    record = RunRecord(
        policy=policy, point=point, repetition=repetition, seed=settings.seed,
        seconds=m.seconds, ops=m.end.ops() - start.ops(), exit_code=outcome.exit_code,
        restarts=outcome.restarts, load_average=os.getloadavg()[0],
        figures=figures(start, m.end, m.seconds, policy), counters=window_counters(start, m.end),
        host=host_name(), era=settings.kernel.era)
    if outcome.tuning is not None:          # each CPU's PCP tuning, sampled by the daemon
        record["tuning"] = outcome.tuning.record()
    return record


def run_virtual(settings: Settings, policy: str, point: Any = None, repetition: int = 0,
                log_stream: TextIO | None = None) -> RunRecord:
    """One run of ``settings`` under ``policy`` in virtual time: ``pcpd simulate``'s engine and record.

    The whole run is measured, as ``pcpd simulate`` measures it; its audit
    line goes to ``log_stream`` (or nowhere).
    """
    # imported here: it imports this module
    from pcpd.simulate.output import run_record

    result = Simulation(settings, policy).run()
    if log_stream is not None:
        print(f"{policy}, seed {settings.seed}, era {settings.kernel.era}: {result.ops:,} ops on "
              f"{len(result.cpus)} virtual CPUs in {result.wall_seconds:.1f} s; {result.audit_summary}",
              file=log_stream, flush=True)
    record = run_record(result, settings.seed)
    record["point"], record["repetition"], record["era"] = point, repetition, settings.kernel.era
    return record


def run_point(point: Point, plan: Plan, log_stream: TextIO | None = None) -> RunRecord:
    """One point of the plan, in the plan's mode: the one way a point runs, here or on a cluster node."""
    if plan.virtual:
        return run_virtual(point.settings, point.policy, point.value, point.repetition, log_stream)
    return run_once(point.settings, point.policy, plan, point.value, point.repetition, log_stream)


def _zero_snapshot(like: Snapshot) -> Snapshot:
    return Snapshot(np.zeros_like(like.per_cpu), np.zeros_like(like.retired))


def run_experiment(plan: Plan, progress: Progress | None = None, log_stream: TextIO | None = None,
                   points: list[Point] | None = None,
                   finished: Finished | None = None) -> list[RunRecord]:
    """Every run of ``points`` (default: the plan's), one after another here, in the order they ran.

    ``finished(i, record, host, environment)`` is called as the run of
    ``points[i]`` ends.
    """
    runs = []
    for i, point in enumerate(plan_points(plan) if points is None else points):
        if progress:
            progress.start(point.label)
        run = run_point(point, plan, log_stream)
        runs.append(run)
        if finished:
            finished(i, run, host_name(), environment())
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
    A virtual-mode plan adds ``mode`` and ``virtual`` (its CPUs, ring size and
    cost model), as ``pcpd simulate`` writes them; a real-mode plan has no
    ``mode`` (absent: real, for every reader).
    """
    settings = plan.settings
    hosts = {host_name(): environment()} if hosts is None else hosts
    meta = {
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
        "sweep_key": plan.point_key or None,
        "sweep_values": plan.point_values,
        "eras": list(plan.eras),
        "runs_planned": plan.runs,
        "incomplete": False,
        "config": settings_to_dict(settings),
    }
    if plan.virtual:
        cpus = len(settings.cpus)
        meta["mode"] = VIRTUAL
        meta["virtual"] = {"cpus": cpus, "ring_slots": ring_slots_for(cpus),
                           "costs": CostModel.from_settings(settings.simulate).as_ns()}
    return meta


# What must match for --resume to continue an experiment: its config as run, and how it runs.
PLAN_METADATA = ("config_hash", "seed", "policies", "repeat", "duration", "warmup", "ops", "sweep_key",
                 "sweep_values", "eras", "mode", "virtual", "runs_planned")


def run_key(point: Any, repetition: int, policy: str) -> str:
    """What identifies a run of a plan in its results: its point, repetition and policy."""
    return json.dumps([point, repetition, policy])


class Recorder:
    """An experiment's files in ``out``, rewritten whole (atomically) as each run ends.

    results.json and results.csv follow every run, so that a ^C, a crash or a
    lost machine keeps the runs already finished; report.md and its plot are
    written at the end, or at a ^C.  Until every run of the plan is in,
    ``metadata.incomplete`` is true and the report says so; ``--resume``
    continues from the runs in the file.
    """

    def __init__(self, plan: Plan, out: str, metadata: dict[str, Any], *, replace: bool,
                 previous: Results | None = None) -> None:
        self.plan, self.out, self.metadata, self.replace = plan, out, metadata, replace
        self.points = plan_points(plan)
        self.records: dict[int, RunRecord] = {}
        self.hosts: dict[str, dict[str, Any]] = {}
        if previous is not None:
            index = {run_key(p.value, p.repetition, p.policy): i for i, p in enumerate(self.points)}
            for run in previous.runs:
                i = index.get(run_key(run["point"], run["repetition"], run["policy"]))
                if i is not None:
                    self.records[i] = run
            self.hosts = {host: env for host, env in previous.metadata["hosts"].items()
                          if any(run.get("host") == host for run in self.records.values())}

    def pending(self) -> list[int]:
        """The indices in ``plan_points`` of the runs not yet finished, in plan order."""
        return [i for i in range(len(self.points)) if i not in self.records]

    def add(self, i: int, record: RunRecord, host: str, env: dict[str, Any]) -> None:
        """Keep the run of point ``i`` and rewrite results.json and results.csv."""
        self.records[i] = record
        self.hosts[host] = env
        self.write(report_too=False)

    def results(self) -> Results:
        meta = dict(self.metadata, **machine_metadata(self.hosts), hosts=self.hosts,
                    incomplete=len(self.records) < len(self.points))
        return Results(meta, [self.records[i] for i in sorted(self.records)])

    def write(self, *, report_too: bool = True) -> list[str]:
        """Write the files (results.json and results.csv only, unless ``report_too``); the paths."""
        results = self.results()
        paths = [os.path.join(self.out, name) for name in output_names(self.plan)]
        replace, self.replace = self.replace, True      # ours from the first write on
        if self.plan.virtual:
            # imported here: it imports this module, and only virtual runs need it
            from pcpd.simulate import output

            if report_too:
                return output.write_all(results, self.out, replace=replace)
            dump(results, paths[0], replace=replace)
            write_atomic(paths[1], output.csv_text(results).encode(), replace=replace)
            return paths[:2]
        dump(results, paths[0], replace=replace)
        dump_csv(results, paths[1], replace=replace)
        if report_too:
            report.write_report(results, self.out, replace=replace)
            return paths
        return paths[:2]


def previous_results(out: str, metadata: dict[str, Any]) -> Results:
    """The interrupted experiment in ``out``, checked to be this plan's.  Raises UsageError."""
    path = os.path.join(out, RESULTS_JSON)
    if not os.path.exists(path):
        raise UsageError(f"--resume {out}: no {RESULTS_JSON} there: no experiment to resume")
    previous = load(path)
    for key in PLAN_METADATA:
        was, now = previous.metadata.get(key), json.loads(json.dumps(metadata.get(key)))
        if was != now:
            raise UsageError(f"--resume {out}: that experiment ran with another {key} ({json.dumps(was)}, "
                             f"now {json.dumps(now)}): resume it with its own config and options")
    if not previous.metadata.get("incomplete"):
        raise UsageError(f"--resume {out}: that experiment finished all its {len(previous.runs)} runs")
    return previous


# ---------------------------------------------------------------------------
# CLI

def era_list(text: str) -> tuple[str, ...]:
    """--eras: comma-separated kernel eras, each once."""
    eras = tuple(era.strip() for era in text.split(","))
    for i, era in enumerate(eras):
        if era not in ERAS:
            raise argparse.ArgumentTypeError(f"unknown kernel era {era!r}; choose from {', '.join(ERAS)}")
        if era in eras[:i]:
            raise argparse.ArgumentTypeError(f"era {era!r} is listed twice")
    return eras


def listen_address(text: str) -> str:
    """--listen: HOST:PORT, as exporter.address takes it."""
    if not text or not re.fullmatch(ADDRESS_PATTERN, text):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (like 127.0.0.1:9464), got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # imported here: it imports this module (through pcpd.simulate.output)
    from pcpd.simulate.command import virtual_cpus

    parser.add_argument("config", metavar="CONFIG", help="TOML config to run")
    parser.add_argument("--policies", type=argtypes.policy_list, metavar="LIST",
                        help="comma-separated policies to run (default: the config's "
                             "experiment.policies), e.g. legacy,memdesc")
    parser.add_argument("--mode", choices=MODES,
                        help="real: a daemon on this machine's CPUs per run; virtual: each run in virtual "
                             "time on virtual CPUs (default: experiment.mode)")
    parser.add_argument("--eras", type=era_list, metavar="LIST",
                        help="comma-separated kernel eras to run every point under, e.g. 5.14,6.7 "
                             "(default: experiment.eras, else kernel.era alone)")
    parser.add_argument("--cpus", type=virtual_cpus, metavar="N",
                        help="virtual mode: virtual CPUs 0..N-1 (default: simulate.cpus, else the config's cpus)")
    parser.add_argument("--duration", type=argtypes.positive_seconds, metavar="SECONDS",
                        help="real mode: seconds per run, warm-up included (default: the config's duration)")
    parser.add_argument("--repeat", type=argtypes.positive_count, metavar="N",
                        help="repetitions per policy and sweep point (default: experiment.repeat)")
    parser.add_argument("--ops", type=argtypes.positive_count, default=0, metavar="N",
                        help="bound each worker by N operations instead of time, with no warm-up; "
                             "one worker and one seed then repeat their counts exactly (virtual mode: "
                             "operations per virtual CPU, default simulate.ops)")
    parser.add_argument("--out", metavar="DIR",
                        help="directory for the results (default: results/<config name>)")
    parser.add_argument("--replace", action="store_true", help="overwrite results already in DIR")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue the interrupted experiment in DIR (same config and options), "
                             "running only the runs its results lack")
    parser.add_argument("--listen", type=listen_address, metavar="HOST:PORT",
                        help="real mode: each run's daemon serves /metrics here while it runs "
                             "(default: none)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run each point as one task on this Dask scheduler's workers, e.g. "
                             "tcp://HOST:8786 (workers started with --resources pcpd-node=1, which "
                             "virtual-mode runs do not need; needs pcpd's cluster extra: dask[distributed])")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this experiment (output options left out)."""
    words = ["pcpd", "experiment", args.config]
    if args.policies:
        words += ["--policies", ",".join(args.policies)]
    if args.mode:
        words += ["--mode", args.mode]
    if args.eras:
        words += ["--eras", ",".join(args.eras)]
    if args.cpus:
        words += ["--cpus", str(args.cpus)]
    if args.duration is not None:
        words += ["--duration", f"{args.duration:g}"]
    if args.repeat:
        words += ["--repeat", str(args.repeat)]
    if args.ops:
        words += ["--ops", str(args.ops)]
    return shlex.join(words)


def output_names(plan: Plan) -> list[str]:
    plot = report.SWEEP_PNG if plan.point_key else report.POLICIES_PNG
    return [RESULTS_JSON, RESULTS_CSV, report.REPORT, plot]


def load_plan(args: argparse.Namespace) -> Plan:
    """The plan of ``args``: the config, read against this machine's CPUs in real mode only."""
    # imported here: it imports this module (through pcpd.simulate.output)
    from pcpd.simulate.command import ANY_CPU

    settings = load_settings(args.config, available_cpus=ANY_CPU)
    if (args.mode or settings.experiment.mode) != VIRTUAL:
        settings = load_settings(args.config)     # real runs use this machine's CPUs: check them
    return plan_experiment(settings, policies=args.policies, repeat=args.repeat, duration=args.duration,
                           ops=args.ops, mode=args.mode, eras=args.eras, cpus=args.cpus,
                           listen=args.listen or "")


def command(args: argparse.Namespace) -> int:
    plan = load_plan(args)
    if args.resume and args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise UsageError(f"--out {args.out} and --resume {args.resume} name different directories")
    out = args.resume or args.out or os.path.join("results", plan.settings.name)
    metadata = experiment_metadata(plan, command_line(args))      # its hosts: those that run the runs
    previous = previous_results(out, metadata) if args.resume else None
    if previous is None:
        paths = [os.path.join(out, name) for name in output_names(plan)]
        existing = [path for path in paths if os.path.lexists(path)]
        if existing and not args.replace:
            raise UsageError(f"{existing[0]} exists; pass --replace to overwrite it, or --out DIR")
    else:
        metadata.update(date=previous.metadata.get("date"), command=previous.metadata.get("command", ""))
    recorder = Recorder(plan, out, metadata, replace=args.replace or previous is not None, previous=previous)
    cluster = None
    if args.scheduler:
        # imported here: it imports this module, and only a cluster run needs it (and Dask)
        from pcpd.analysis.cluster import connect
        # a bad or unreachable address stops us before anything runs
        cluster = connect(args.scheduler, whole_nodes=not plan.virtual)
    try:
        with cluster or contextlib.nullcontext():
            try:
                os.makedirs(out, exist_ok=True)
            except OSError as err:
                raise UsageError(f"--out {out}: cannot create the directory: {err.strerror}") from None
            _run_logged(plan, recorder, os.path.join(out, LOG), cluster, append=previous is not None)
    except KeyboardInterrupt:
        return _interrupted(recorder, command_line(args), out)
    written = recorder.write()
    results = recorder.results()
    print(report.render_tables(results))
    for warning in report.warnings(results):
        print(f"warning: {warning}")
    print(f"\nwrote {', '.join(written)}")
    failed = sum(1 for run in results.runs if run["exit_code"])
    if failed:
        raise PcpdError(f"{failed} of {len(results.runs)} runs failed their final audit; "
                        f"see {os.path.join(out, LOG)}")
    return 0


def _interrupted(recorder: Recorder, command: str, out: str) -> int:
    """^C: the runs finished so far and their report, marked incomplete; exit 130."""
    done, total = len(recorder.records), len(recorder.points)
    line = f"pcpd experiment: interrupted after {done} of {total} runs"
    if done:
        written = recorder.write()
        line += (f"; wrote {', '.join(written)} (incomplete); continue with: "
                 f"{command} {shlex.join(['--resume', out])}")
    print(line, file=sys.stderr, flush=True)
    return 130


def _run_logged(plan: Plan, recorder: Recorder, log_path: str, cluster: Cluster | None = None, *,
                append: bool = False) -> None:
    """Run the plan's unfinished runs, here or on ``cluster``, into ``recorder`` as each ends, with
    every daemon's and worker's log lines in ``log_path``."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pending = recorder.pending()
    points = [recorder.points[i] for i in pending]
    progress = Progress(len(points), sys.stderr)

    def finished(i: int, record: RunRecord, host: str, env: dict[str, Any]) -> None:
        recorder.add(pending[i], record, host, env)

    with open(log_path, "a" if append else "w", encoding="utf-8") as log_stream:
        configure_daemon_logging(log_stream)
        try:
            if cluster is not None:
                cluster.run(plan, points, progress, log_stream, finished)
            else:
                run_experiment(plan, progress, log_stream, points, finished)
        finally:
            progress.close()
            root.handlers[:] = handlers
            root.setLevel(level)
