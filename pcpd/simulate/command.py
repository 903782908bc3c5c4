"""``pcpd simulate CONFIG --cpus N``: the config's workload on N virtual CPUs, in virtual time.

The config is the one ``pcpd run`` takes; ``--cpus N`` makes its CPUs the
virtual CPUs 0..N-1 (whatever this machine has: nothing is pinned, nothing
checked against this machine's CPUs), and its ``[simulate]`` table gives the
operations per CPU and the cost model.  One run per policy (``--policy``, a
comma-separated list, default the config's ``policy.name``), each on a fresh
zone with the same seed.  Output, in ``--out DIR`` (default
``results/<name>-virtual-<N>cpus-<era>``): results.json, results.csv,
report.md, policies.png and tuning.png in the formats of ``pcpd experiment``, labelled
``mode = "virtual"``; a short summary goes to stdout.  ``--listen HOST:PORT``
serves each run's metrics there while it runs (the runs one after another, on
the same address), labelled ``mode="virtual"`` as the files are.

Bad input is one line on stderr and exit 2, before anything runs; a run whose
final audit fails exits 1 after writing its files.

Imports: ``pcpd.config``, ``pcpd.analysis``, ``pcpd.simulate``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from pcpd import argtypes
from pcpd.analysis import report
from pcpd.analysis.results import Results
from pcpd.config.load import load_settings, replace_path
from pcpd.config.settings import Settings
from pcpd.errors import PcpdError, UsageError
from pcpd.kernel import ERAS
from pcpd.simulate import output
from pcpd.simulate.engine import MAX_VIRTUAL_CPUS, Simulation, SimulationResult

# A config may name any CPU numbers a real config may (0..4095): they are virtual here.
ANY_CPU = range(4096)


def virtual_cpus(text: str) -> int:
    """--cpus: a whole number of virtual CPUs, 1..MAX_VIRTUAL_CPUS."""
    n = argtypes.positive_count(text)
    if n > MAX_VIRTUAL_CPUS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_VIRTUAL_CPUS} virtual CPUs, got {text!r}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="TOML config (the one pcpd run takes)")
    parser.add_argument("--cpus", type=virtual_cpus, metavar="N",
                        help=f"virtual CPUs 0..N-1, 1..{MAX_VIRTUAL_CPUS}, independent of this machine "
                             "(default: the config's simulate.cpus, else the CPUs the config names)")
    parser.add_argument("--ops", "--duration-ops", dest="ops", type=argtypes.positive_count, metavar="K",
                        help="operations per virtual CPU (default: the config's simulate.ops)")
    parser.add_argument("--policy", type=argtypes.policy_list, metavar="P[,P...]",
                        help="policy, or comma-separated policies run one after another "
                             "(default: the config's policy.name)")
    parser.add_argument("--era", choices=ERAS, help="kernel era (default: the config's kernel.era)")
    parser.add_argument("--seed", type=argtypes.count, metavar="S", help="seed (default: the config's seed)")
    parser.add_argument("--out", metavar="DIR",
                        help="directory for the results (default: results/<name>-virtual-<N>cpus-<era>)")
    parser.add_argument("--replace", action="store_true", help="overwrite results already in DIR")
    parser.add_argument("--listen", type=argtypes.listen_address, metavar="HOST:PORT",
                        help="serve each run's /metrics here while it runs (default: none)")


def on_virtual_cpus(settings: Settings, cpus: int | None = None) -> Settings:
    """The settings on their virtual CPUs: 0..cpus-1, else 0..simulate.cpus-1, else the config's ``cpus``.

    ``settings`` must have been loaded with every CPU number available
    (``ANY_CPU``).  Raises ConfigError for a config these CPUs make invalid
    (a workload naming a CPU beyond them), UsageError when no CPU count is known.
    """
    count = cpus or settings.simulate.cpus
    if count:
        virtual = range(count)
        return replace_path(settings, "cpus", list(virtual), available_cpus=virtual)
    if not settings.cpus:
        raise UsageError(f"{settings.source} names no cpus: pass --cpus N or set simulate.cpus (virtual "
                         "CPUs do not come from this machine)")
    if len(settings.cpus) > MAX_VIRTUAL_CPUS:
        raise UsageError(f"{settings.source} names {len(settings.cpus)} cpus; virtual time runs at most "
                         f"{MAX_VIRTUAL_CPUS}")
    return settings


def settings_for(args: argparse.Namespace) -> Settings:
    """The config as it runs: virtual CPUs, era and seed from the command line, validated.

    Raises ConfigError (one line) for a config these choices make invalid,
    UsageError when no CPU count is known.
    """
    settings = on_virtual_cpus(load_settings(args.config, available_cpus=ANY_CPU), args.cpus)
    virtual = settings.cpus
    if args.era is not None:
        settings = replace_path(settings, "kernel.era", args.era, available_cpus=virtual)
    if args.seed is not None:
        settings = replace_path(settings, "seed", args.seed, available_cpus=virtual)
    if args.ops is not None:
        settings = replace_path(settings, "simulate.ops", args.ops, available_cpus=virtual)
    return settings


def command_line(args: argparse.Namespace, settings: Settings, policies: tuple[str, ...]) -> str:
    """The command that reproduces these runs (output options left out)."""
    words = ["pcpd", "simulate", args.config, "--cpus", str(len(settings.cpus)),
             "--ops", str(settings.simulate.ops), "--policy", ",".join(policies),
             "--era", settings.kernel.era, "--seed", str(settings.seed)]
    return shlex.join(words)


class _Progress:
    """Operations done, redrawn on one stderr line at a terminal; nothing elsewhere but where
    the run serves its metrics, as it starts."""

    def __init__(self, simulation: Simulation) -> None:
        self.simulation = simulation
        self.label = simulation.policy_name
        self.tty = sys.stderr.isatty()
        self.began = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        exporter = self.simulation.exporter
        if done == 0 and exporter is not None:
            print(f"pcpd simulate: {self.label}: metrics on http://{exporter.address}/metrics",
                  file=sys.stderr, flush=True)
        if self.tty:
            print(f"\rpcpd simulate: {self.label}: {done:,}/{total:,} ops, "
                  f"{time.monotonic() - self.began:.0f} s", end="", file=sys.stderr, flush=True)

    def close(self, result: SimulationResult) -> None:
        end = "\r" if self.tty else ""
        print(f"{end}pcpd simulate: {self.label}: {result.ops:,} ops on {len(result.cpus)} virtual CPUs "
              f"in {result.wall_seconds:.1f} s", file=sys.stderr, flush=True)


def command(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    policies = args.policy or (settings.policy.name,)
    out = args.out or os.path.join(
        "results", f"{settings.name}-virtual-{len(settings.cpus)}cpus-{settings.kernel.era}")
    paths = [os.path.join(out, name) for name in output.OUTPUTS]
    existing = [path for path in paths if os.path.lexists(path)]
    if existing and not args.replace:
        raise UsageError(f"{existing[0]} exists; pass --replace to overwrite it, or --out DIR")
    simulations = [Simulation(settings, policy, listen=args.listen or "")   # model errors before running
                   for policy in policies]
    if settings.sweep.key:
        print(f"pcpd simulate: note: the config's sweep of {settings.sweep.key} is not run; this runs "
              f"the config's own {settings.sweep.key}", file=sys.stderr)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create the directory: {err.strerror}") from None
    runs = []
    for simulation in simulations:
        progress = _Progress(simulation)
        result = simulation.run(progress)
        progress.close(result)
        runs.append(output.run_record(result, settings.seed))
    meta = output.metadata(settings, policies, settings.simulate.ops, simulations[0].ring_slots,
                           command_line(args, settings, policies))
    results = Results(meta, runs)
    written = output.write_all(results, out, replace=args.replace)
    print(report.render_tables(results))
    print()
    print("\n".join(output.summary_lines(results)))
    print(f"\nwrote {', '.join(written)}")
    failed = sum(1 for run in runs if run["exit_code"])
    if failed:
        raise PcpdError(f"{failed} of {len(runs)} runs failed their final audit")
    return 0
