"""The whole replay, from trace file to results.json, and the ``pcpd replay`` subcommand.

``replay()`` checks its arguments, decodes the trace once onto a spool
(``pcpd.replay.decode``), sets up the zone (``pcpd.replay.zone``), runs the
spool through each policy's model (``pcpd.replay.run``) and returns the
results.json object (``pcpd.replay.report``).  The trace may be ``-``,
standard input; files are read as ``pcpd.inputs`` reads them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pcpd import argtypes
from pcpd.errors import InputError, UsageError
from pcpd.inputs import display_name
from pcpd.kernel import DEFAULT_ERA, ERAS
from pcpd.model import sizing
from pcpd.model.arena import RECORD_SIZES
from pcpd.policies import MEMDESC_DEFAULT_RECORD_BYTES, POLICIES
from pcpd.replay.decode import DECAY_INTERVAL, Decoded, decode
from pcpd.replay.report import format_report, results_json
from pcpd.replay.run import MAX_CPU_SLOTS, PolicyRun, model_spec, replay_policy
from pcpd.replay.spool import OpSpool
from pcpd.replay.trace import Skipped, read_trace
from pcpd.replay.zone import default_zone, zoneinfo_zone

DEFAULT_MEMDESC_RECORD = MEMDESC_DEFAULT_RECORD_BYTES


def replay(path: str | os.PathLike[str], policies: Iterable[str] = tuple(POLICIES),
           zoneinfo: str | None = None, era: str | None = None,
           record_bytes: int = DEFAULT_MEMDESC_RECORD,
           decay_interval: float = DECAY_INTERVAL) -> dict[str, Any]:
    """Replay the trace at ``path`` under each policy; the results.json object.

    Raises InputError for a trace that cannot be read or holds no
    page-allocator event, and for a bad zoneinfo file.
    """
    policies = list(policies)
    check_arguments(policies, era, record_bytes)
    source = display_name(path)
    skipped = Skipped()
    with OpSpool() as spool:
        decoded = decode(read_trace(path, skipped), spool, decay_interval)
        _check_decoded(source, decoded, skipped)
        zone = (zoneinfo_zone(zoneinfo, decoded, era) if zoneinfo
                else default_zone(decoded, era or DEFAULT_ERA))
        runs: dict[str, PolicyRun] = {}
        for name in policies:
            spec = model_spec(name, zone, len(decoded.cpus), record_bytes)
            runs[name] = replay_policy(spool, decoded.cpus, spec, zone.watermarks)
        ops = spool.count
    return results_json(source=source, decoded=decoded, skipped=skipped, ops=ops, zone=zone,
                        limits=spec.limits(), decay_interval=decay_interval, runs=runs)


def check_arguments(policies: list[str], era: str | None, record_bytes: int) -> None:
    """UsageError for a policy, era or record size the model does not have."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise UsageError(f"unknown policy {unknown[0]!r}; expected one of {', '.join(POLICIES)}")
    if era is not None:
        sizing.check_era(era)
    if record_bytes not in RECORD_SIZES:
        raise UsageError(f"record size {record_bytes} is not one of {RECORD_SIZES}")
    if not policies:
        raise UsageError("no policy to replay")


def _check_decoded(source: str, decoded: Decoded, skipped: Skipped) -> None:
    if not decoded.events:
        raise InputError(f"{source}: no kmem page-allocator events ({skipped.summary()})")
    if len(decoded.cpus) > MAX_CPU_SLOTS:
        raise UsageError(f"{source}: {len(decoded.cpus)} CPUs allocate or free, the model "
                         f"holds {MAX_CPU_SLOTS}; keep fewer (perf script --cpu LIST)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", metavar="TRACE",
                        help="kmem tracepoint text from perf script, trace-cmd report or "
                             "/sys/kernel/tracing/trace (.gz and .xz read directly; - for "
                             "standard input)")
    parser.add_argument("--policies", type=argtypes.policy_list, default=list(POLICIES),
                        metavar="P[,P...]",
                        help=f"policies to replay (default {','.join(POLICIES)})")
    parser.add_argument("--zoneinfo", metavar="FILE",
                        help="a /proc/zoneinfo capture of the traced machine: model its Normal "
                             "zone, PCP limits and era")
    parser.add_argument("--era", choices=ERAS,
                        help=f"kernel era of the model (default: the zoneinfo's, else {DEFAULT_ERA})")
    parser.add_argument("--record-bytes", type=int, choices=RECORD_SIZES,
                        default=DEFAULT_MEMDESC_RECORD,
                        help=f"struct page size for the memdesc policies (default {DEFAULT_MEMDESC_RECORD}); "
                             "legacy and compound always use 64")
    parser.add_argument("--decay-interval", type=argtypes.seconds, default=DECAY_INTERVAL,
                        metavar="SECONDS",
                        help="trace seconds between decay_pcp_high() passes (default 1; 0: none)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/results.json")


def command(args: argparse.Namespace) -> int:
    results = replay(args.trace, args.policies, args.zoneinfo, args.era, args.record_bytes,
                     args.decay_interval)
    print(format_report(results))
    if args.out:
        path = Path(args.out) / "results.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
        print(f"\nwrote {path}")
    return 0 if all(f["audit_ok"] for f in results["policies"].values()) else 1
