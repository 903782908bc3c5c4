"""The ``pcpd`` command line: one subcommand per concept module.

Each subcommand lives in the module that owns its concept and exposes
``add_arguments(parser)`` and ``command(args) -> int``.  This module only
dispatches and turns pcpd's errors into exit codes: 2 for a user mistake
(one line on stderr, no traceback), 1 for a failed run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from pcpd import __version__
from pcpd.errors import PcpdError, UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pcpd.daemon.command", "run per-CPU workers against one shared zone (the main job)"),
    "check": ("pcpd.config.load", "validate a config file without running it"),
    "config-schema": ("pcpd.config.schema", "print the JSON Schema of config files"),
    "costs": ("pcpd.analysis.costs", "per-operation cacheline cost table for every policy"),
    "policies": ("pcpd.policies", "list the PCP policies and their traits"),
    "zoneinfo": ("pcpd.zoneinfo", "compare a /proc/zoneinfo capture with the PCP sizing model"),
    "experiment": ("pcpd.analysis.experiment", "run one workload under several policies and report"),
    "kernel-exporter": ("pcpd.kernel_exporter", "serve this machine's real PCP state as Prometheus metrics"),
    "compare": ("pcpd.analysis.compare", "compare two results files"),
    "replay": ("pcpd.replay.command", "replay a kernel kmem allocation trace under each policy"),
    "capture": ("pcpd.replay.capture", "record a kmem trace and the zone state around it, for replay"),
    "simulate": ("pcpd.simulate.command", "run a config on N virtual CPUs in virtual time (deterministic)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 itself; keep it one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the selected subcommand's module is imported (start-up cost)."""
    parser = _Parser(prog="pcpd", description="Measure Linux per-CPU page (PCP) allocator designs "
                                              "under load: see the README.")
    parser.add_argument("--version", action="version", version=f"pcpd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # parsing imports the subcommand's modules: the slowest part of a start, where ^C lands most
    try:
        parser, args = _parse(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return 130
    if not args.command:
        parser.print_help()
        return 2
    return _run(args)


def _parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser of the subcommand ``argv`` names, and ``argv`` parsed (exits 2 on a mistake)."""
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    return parser, parser.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    """The subcommand's exit code: 2 for a user mistake, 1 for a failed run, 130 for ^C,
    0 when the reader of stdout went away."""
    try:
        return importlib.import_module(args._module).command(args)
    except UsageError as err:
        print(f"pcpd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except PcpdError as err:
        print(f"pcpd {args.command}: failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """After a broken pipe, stdout still holds what did not get through, and Python flushes
    it again at exit ("Exception ignored ... BrokenPipeError", exit 120): point its file
    descriptor at /dev/null first, the signal module docs' recipe ("Note on SIGPIPE").  A
    stdout with no descriptor (captured in a test) has nothing to flush there."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):     # io.UnsupportedOperation is both
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
