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
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pcpd import argtypes
from pcpd.errors import InputError, UsageError
from pcpd.inputs import display_name
from pcpd.kernel import DEFAULT_ERA, ERAS
from pcpd.model import sizing
from pcpd.model.arena import RECORD_SIZES
from pcpd.policies import MEMDESC_BUDGETS, MEMDESC_DEFAULT_RECORD_BYTES, POLICIES, PROPOSAL
from pcpd.replay.bundle import Bundle, is_bundle, open_bundle
from pcpd.replay.decode import DECAY_INTERVAL, Decoded, decode
from pcpd.replay.report import format_report, results_json
from pcpd.replay.run import MAX_CPU_SLOTS, PolicyRun, model_spec, replay_policy
from pcpd.replay.spool import OpSpool
from pcpd.replay.start import START_MODES, StartPlan, build_plan
from pcpd.replay.trace import Skipped, TraceEvent, read_trace
from pcpd.replay.zone import ZoneSetup, default_zone, zoneinfo_zone
from pcpd.zoneinfo import Pageset, read_zoneinfo
from workers.policies import PolicyOptions

DEFAULT_MEMDESC_RECORD = MEMDESC_DEFAULT_RECORD_BYTES


def replay(path: str | os.PathLike[str], policies: Iterable[str] = PROPOSAL,
           zoneinfo: str | None = None, era: str | None = None,
           record_bytes: int = DEFAULT_MEMDESC_RECORD,
           decay_interval: float = DECAY_INTERVAL, pagetypeinfo: str | None = None,
           start: str | None = None, zoneinfo_after: str | None = None,
           memdesc_high: str = MEMDESC_BUDGETS[0]) -> dict[str, Any]:
    """Replay the trace (or capture bundle) at ``path`` under each policy; the results.json object.

    A bundle (``pcpd.replay.bundle``) gives the zoneinfo, pagetypeinfo and
    zoneinfo-after that are not given here, the capture window and the
    scope.  ``start`` is one of ``pcpd.replay.start.START_MODES``; None:
    ``capture`` with a zoneinfo, else ``trace``.  ``memdesc_high`` is the budget
    the per-type PCPs run under (``policy.memdesc_high``).  Raises InputError for a
    trace that cannot be read or holds no page-allocator event, and for a
    bad bundle, zoneinfo or pagetypeinfo file.
    """
    policies = list(policies)
    check_arguments(policies, era, record_bytes)
    with ExitStack() as stack:
        bundle = open_bundle(path, stack) if is_bundle(path) else None
        if bundle is not None:
            zoneinfo = zoneinfo or bundle.zoneinfo_before
            pagetypeinfo = pagetypeinfo or (bundle.pagetypeinfo_before if zoneinfo == bundle.zoneinfo_before
                                            else None)
            zoneinfo_after = zoneinfo_after or bundle.zoneinfo_after
        mode = start or ("capture" if zoneinfo else "trace")
        if mode not in START_MODES:
            raise UsageError(f"start {mode!r} is not one of {', '.join(START_MODES)}")
        if mode == "capture" and not zoneinfo:
            raise UsageError("--start capture needs --zoneinfo (the capture taken when the trace began)")
        if pagetypeinfo and not zoneinfo:
            raise UsageError("--pagetypeinfo needs --zoneinfo (the zone whose pageblocks it counts)")
        source = display_name(path)
        skipped = Skipped()
        with OpSpool() as spool:
            events = read_trace(bundle.trace if bundle else path, skipped)
            if bundle is not None and bundle.window is not None:
                events = _inside(events, bundle.window, skipped, source)
            decoded = decode(events, spool, decay_interval)
            _check_decoded(source, decoded, skipped)
            scope = trace_scope(decoded, skipped, bundle)
            zone = (zoneinfo_zone(zoneinfo, decoded, era, pagetypeinfo) if zoneinfo
                    else default_zone(decoded, era or DEFAULT_ERA))
            plan = _start_plan(mode, decoded, zone, scope)
            runs: dict[str, PolicyRun] = {}
            for name in policies:
                spec = model_spec(name, zone, len(decoded.cpus), record_bytes,
                                  PolicyOptions(memdesc_high=memdesc_high,
                                                migratetypes=decoded.migratetypes))
                runs[name] = replay_policy(spool, decoded.cpus, spec, zone.watermarks, plan)
            ops = spool.count
        after = _pagesets(zoneinfo_after, zone) if zoneinfo_after else None
    return results_json(source=source, decoded=decoded, skipped=skipped, ops=ops, zone=zone,
                        limits=spec.limits(), cacheinfo=spec.cacheinfo(), decay_interval=decay_interval,
                        runs=runs,
                        scope=scope, plan=plan, after=after,
                        after_source=display_name(zoneinfo_after) if zoneinfo_after else None)


SKIP_WINDOW = "outside the capture window"


def _inside(events: Iterator[TraceEvent], window: tuple[float, float], skipped: Skipped,
            source: str) -> Iterator[TraceEvent]:
    """The events between the bundle's two snapshots; the others are counted skips.

    The start state is the first snapshot, so an event before it is already
    in it (and the capture's own start-up is before it too)."""
    first, last = window
    for e in events:
        if first <= e.timestamp <= last:
            yield e
        else:
            skipped.add(SKIP_WINDOW, source)


def trace_scope(decoded: Decoded, skipped: Skipped, bundle: Bundle | None) -> dict[str, str]:
    """Whether the trace saw every task ("system") or one command ("process"), and why we think so.

    The capture's metadata says it; else perf's header (``perf script
    --header``: the record command line); else the events: a whole-system
    trace has events of kernel threads, the idle task or perf itself, which
    a per-process one cannot have (pcpd.replay.decode)."""
    if bundle is not None:
        return ({"scope": "system", "evidence": "pcpd capture -a"} if bundle.system_wide
                else {"scope": "process", "evidence": "pcpd capture without -a"})
    cmdline = skipped.perf_cmdline.split()
    if "record" in cmdline:
        flags = cmdline[cmdline.index("record") + 1:]
        flags = flags[:flags.index("--")] if "--" in flags else flags
        if any(f in ("-a", "--all-cpus", "-C", "--cpu") or (f.startswith("-") and not f.startswith("--")
                                                            and f[1:].isalpha() and "a" in f[1:])
               for f in flags):
            return {"scope": "system", "evidence": "perf record -a (the trace's header)"}
        return {"scope": "process", "evidence": "perf record without -a (the trace's header)"}
    if decoded.system_only_events:
        return {"scope": "system",
                "evidence": f"{decoded.system_only_events} events of tasks a per-process trace "
                            f"does not record (first: {decoded.system_only_example})"}
    return {"scope": "process",
            "evidence": "no event of a kernel thread, the idle task or perf: perf record without "
                        "-a, a trace of some tasks, or a short window of a whole-system one"}


def _pagesets(path: str, zone: ZoneSetup) -> dict[int, Pageset]:
    """The pagesets of the modelled zone in a second zoneinfo capture (the end state)."""
    for z in read_zoneinfo(path):
        if z.node == (zone.node if zone.node is not None else z.node) and z.zone == "Normal" \
                and z.populated:
            return {p.cpu: p for p in z.pagesets}
    raise InputError(f"{display_name(path)}: no populated Normal zone to compare the end with")


def _start_plan(mode: str, decoded: Decoded, zone: ZoneSetup, scope: dict[str, str]) -> StartPlan:
    """The start state of ``mode``: the capture's pagesets, free pages and pageblocks only
    under ``capture``; the trace's own evidence under ``capture`` and ``trace``."""
    capture = mode == "capture"
    # under --start trace the zoneinfo still sizes the zone and the PCP limits; only the
    # state it shows (high, count, free pages, pageblocks) is left out
    return build_plan(mode, decoded, pagesets=zone.pagesets if capture else None,
                      high_is_state=zone.high_is_state, free_pages=zone.free_pages if capture else None,
                      managed=zone.managed, pagetypes=zone.pagetypes if capture else None,
                      per_process=scope["scope"] == "process", zoneinfo_given=zone.pagesets is not None)


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
                             "standard input), or a bundle from pcpd capture (directory or tar)")
    parser.add_argument("--policies", type=argtypes.policy_list, default=list(PROPOSAL),
                        metavar="P[,P...]",
                        help=f"policies to replay (default {','.join(PROPOSAL)})")
    parser.add_argument("--zoneinfo", metavar="FILE",
                        help="a /proc/zoneinfo capture of the traced machine: model its Normal "
                             "zone, PCP limits and era")
    parser.add_argument("--pagetypeinfo", metavar="FILE",
                        help="a /proc/pagetypeinfo capture taken with the zoneinfo: the zone's "
                             "pageblocks and free pages per migratetype")
    parser.add_argument("--start", choices=START_MODES,
                        help="the model's start state: capture (the zoneinfo's high and count per "
                             "CPU, free pages and pageblocks, plus what the trace shows; the default "
                             "with --zoneinfo), trace (only what the trace shows; the default "
                             "without), empty (high at high_min, empty PCPs, all free)")
    parser.add_argument("--zoneinfo-after", metavar="FILE",
                        help="a /proc/zoneinfo capture taken when the trace ended: compare the "
                             "model's per-CPU high and count at the end with it")
    parser.add_argument("--era", choices=ERAS,
                        help=f"kernel era of the model (default: the zoneinfo's, else {DEFAULT_ERA})")
    parser.add_argument("--record-bytes", type=int, choices=RECORD_SIZES,
                        default=DEFAULT_MEMDESC_RECORD,
                        help=f"struct page size for the memdesc policies (default {DEFAULT_MEMDESC_RECORD}); "
                             "legacy and compound always use 64")
    parser.add_argument("--decay-interval", type=argtypes.seconds, default=DECAY_INTERVAL,
                        metavar="SECONDS",
                        help="trace seconds between decay_pcp_high() passes (default 1; 0: none)")
    parser.add_argument("--memdesc-high", choices=MEMDESC_BUDGETS, default=MEMDESC_BUDGETS[0],
                        help="the budget of the per-type PCPs of the memdesc policy, as "
                             "policy.memdesc_high (default shared: one count and high per CPU)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/results.json")


def command(args: argparse.Namespace) -> int:
    results = replay(args.trace, args.policies, args.zoneinfo, args.era, args.record_bytes,
                     args.decay_interval, args.pagetypeinfo, args.start, args.zoneinfo_after,
                     args.memdesc_high)
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
