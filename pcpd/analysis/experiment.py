"""``pcpd experiment CONFIG``: one seeded workload under several policies, side by side.

An experiment runs every point of its plan (``pcpd.analysis.plan``: every
sweep point, repetition and policy, policies innermost), each as one fresh
daemon over the config with only the policy and seed changed.  Each run's
first ``experiment.warmup`` seconds are left out: the figures come from the
counters at the start and the end of the measured window
(``pcpd.analysis.results.figures``).  With ``--ops N`` each worker instead
stops after N operations and the whole run is measured; one worker and one
seed then repeat their counts exactly.

In virtual mode (``experiment.mode = "virtual"``, ``--mode virtual``) each
run is instead one run of ``pcpd simulate``'s engine on ``simulate.cpus``
virtual CPUs (``run_virtual``), bounded by ``simulate.ops`` operations per CPU
and measured whole: the same plan, records and files, labelled as ``pcpd
simulate`` labels them, and the same counts and virtual times for the same
seed on any machine.  ``experiment.eras`` adds the kernel era as an axis
(``Plan.point_key``), so reports and comparisons keep eras apart.

With ``--scheduler ADDRESS`` each run is one task on an existing Dask
cluster instead (``pcpd.analysis.cluster``); the runs come back as the same
records, and everything after that (files, report, exit status) is the same
code as for a local experiment.  Every run records the host it ran on.

Output, in ``--out DIR`` (default ``results/<config name>``): results.json,
results.csv, report.md with its plots, and experiment.log (the daemons' and
workers' logs and run summaries).  Existing results are kept unless
``--replace``.  The ``Recorder`` (``pcpd.analysis.recorder``) rewrites
results.json and results.csv as each run ends; a ^C, or a run that fails,
writes the finished runs and their report, marked incomplete, and exits 130
(or 1), and ``--resume DIR`` runs the rest of the same plan.  ``--listen``
has each run serve /metrics while it runs, one after another on the same
address: a real run's daemon, a virtual run's simulator (``pcpd_info`` tells
them apart by ``mode``).  The terminal shows progress
(``pcpd.analysis.progress``) on stderr and the comparison table on stdout.

Imports: ``pcpd.config``, ``pcpd.daemon.supervisor``, ``pcpd.analysis`` (plan, progress, recorder,
results, report), ``pcpd.simulate`` (engine, output, command); ``pcpd.analysis.cluster`` only for
``--scheduler`` (it imports this module, and Dask).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from pcpd import argtypes
from pcpd.analysis import report
from pcpd.analysis.plan import VIRTUAL, Plan, Point, plan_experiment
from pcpd.analysis.progress import Progress
from pcpd.analysis.recorder import Recorder, experiment_metadata, output_names, previous_results
from pcpd.analysis.results import RunRecord, environment, figures, host_name, window_counters
from pcpd.config.load import load_settings
from pcpd.config.settings import MODES, Settings
from pcpd.daemon.console import summary_text
from pcpd.daemon.supervisor import Daemon, RunOptions
from pcpd.errors import PcpdError, UsageError
from pcpd.logs import configure_daemon_logging
from pcpd.model.stats import zero_snapshot
from pcpd.simulate.command import ANY_CPU, virtual_cpus
from pcpd.simulate.engine import Simulation
from pcpd.simulate.output import run_record

if TYPE_CHECKING:
    from pcpd.analysis.cluster import Cluster

# called as each run ends: (its index in the points run, its record, its host, that host's environment())
Finished = Callable[[int, RunRecord, str, dict[str, Any]], None]

LOG = "experiment.log"
NEVER = 1e9                       # seconds: status lines and mid-run audits off


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
    start = zero_snapshot(m.end) if plan.ops else m.start
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
                log_stream: TextIO | None = None, listen: str = "") -> RunRecord:
    """One run of ``settings`` under ``policy`` in virtual time: ``pcpd simulate``'s engine and record.

    The whole run is measured, as ``pcpd simulate`` measures it; its audit
    line goes to ``log_stream`` (or nowhere).  With ``listen`` the run serves
    its metrics there while it runs, as a real run's daemon does.
    """
    result = Simulation(settings, policy, listen=listen).run()
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
        return run_virtual(point.settings, point.policy, point.value, point.repetition, log_stream, plan.listen)
    return run_once(point.settings, point.policy, plan, point.value, point.repetition, log_stream)


def run_experiment(plan: Plan, progress: Progress | None, log_stream: TextIO | None, points: list[Point],
                   finished: Finished) -> None:
    """Every run of ``points``, one after another here, calling ``finished(i, record, host,
    environment)`` as the run of ``points[i]`` ends."""
    for i, point in enumerate(points):
        if progress:
            progress.start(point.label)
        run = run_point(point, plan, log_stream)
        finished(i, run, host_name(), environment())
        if progress:
            progress.finish(point.label, run)


# ---------------------------------------------------------------------------
# CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="TOML config to run")
    parser.add_argument("--policies", type=argtypes.policy_list, metavar="LIST",
                        help="comma-separated policies to run (default: the config's "
                             "experiment.policies), e.g. legacy,memdesc")
    parser.add_argument("--mode", choices=MODES,
                        help="real: a daemon on this machine's CPUs per run; virtual: each run in virtual "
                             "time on virtual CPUs (default: experiment.mode)")
    parser.add_argument("--eras", type=argtypes.era_list, metavar="LIST",
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
    parser.add_argument("--listen", type=argtypes.listen_address, metavar="HOST:PORT",
                        help="each run serves /metrics here while it runs: a real run's daemon, a "
                             "virtual run's simulator (default: none)")
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


def load_plan(args: argparse.Namespace) -> Plan:
    """The plan of ``args``: the config, read against this machine's CPUs in real mode only."""
    settings = load_settings(args.config, available_cpus=ANY_CPU)
    if (args.mode or settings.experiment.mode) != VIRTUAL:
        settings = load_settings(args.config)     # real runs use this machine's CPUs: check them
    return plan_experiment(settings, policies=args.policies, repeat=args.repeat, duration=args.duration,
                           ops=args.ops, mode=args.mode, eras=args.eras, cpus=args.cpus,
                           listen=args.listen or "")


def resume_line(args: argparse.Namespace, out: str) -> str:
    """The command that runs the rest of this experiment: its own, how it ran, and ``--resume``."""
    words = ["--resume", out]
    if args.listen:
        words += ["--listen", args.listen]
    if args.scheduler:
        words += ["--scheduler", args.scheduler]
    return f"{command_line(args)} {shlex.join(words)}"


def command(args: argparse.Namespace) -> int:
    plan = load_plan(args)
    out = _out_directory(args, plan)
    recorder = _recorder(args, plan, out)
    cluster = _connect(args.scheduler, plan) if args.scheduler else None
    try:
        with cluster or contextlib.nullcontext():
            _make_directory(out)
            _run_logged(plan, recorder, os.path.join(out, LOG), cluster, append=bool(args.resume))
    except KeyboardInterrupt:
        _stopped(recorder, "interrupted", resume_line(args, out))
        return 130
    except PcpdError as err:
        if recorder.records:        # a run failed: keep the finished ones and their report, as ^C does
            recorder.metadata["failure"] = str(err)
            _stopped(recorder, "failed", resume_line(args, out))
        raise
    _finish(recorder, out)
    return 0


def _out_directory(args: argparse.Namespace, plan: Plan) -> str:
    """Where the experiment writes: --resume's directory, --out, else results/NAME."""
    if args.resume and args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise UsageError(f"--out {args.out} and --resume {args.resume} name different directories")
    return args.resume or args.out or os.path.join("results", plan.settings.name)


def _recorder(args: argparse.Namespace, plan: Plan, out: str) -> Recorder:
    """The recorder of a new experiment (refusing to overwrite files without --replace), or of the
    one --resume continues, with that one's date and command."""
    metadata = experiment_metadata(plan, command_line(args))      # its hosts: those that run the runs
    previous = previous_results(out, metadata) if args.resume else None
    if previous is None:
        paths = [os.path.join(out, name) for name in output_names(plan)]
        existing = [path for path in paths if os.path.lexists(path)]
        if existing and not args.replace:
            raise UsageError(f"{existing[0]} exists; pass --replace to overwrite it, or --out DIR")
    else:
        metadata.update(date=previous.metadata.get("date"), command=previous.metadata.get("command", ""))
    return Recorder(plan, out, metadata, replace=args.replace or previous is not None, previous=previous)


def _connect(scheduler: str, plan: Plan) -> Cluster:
    """The cluster at ``scheduler``: a bad or unreachable address stops us before anything runs."""
    # imported here: it imports this module, and only a cluster run needs it (and Dask)
    from pcpd.analysis.cluster import connect

    return connect(scheduler, whole_nodes=not plan.virtual)


def _make_directory(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create the directory: {err.strerror}") from None


def _finish(recorder: Recorder, out: str) -> None:
    """Write the results and report, show the tables and warnings; PcpdError if a run failed its audit."""
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


def _stopped(recorder: Recorder, how: str, resume: str) -> None:
    """An experiment stopped early: the runs finished so far and their report, marked incomplete."""
    done, total = len(recorder.records), len(recorder.points)
    line = f"pcpd experiment: {how} after {done} of {total} runs"
    if done:
        written = recorder.write()
        line += f"; wrote {', '.join(written)} (incomplete); continue with: {resume}"
    print(line, file=sys.stderr, flush=True)


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
