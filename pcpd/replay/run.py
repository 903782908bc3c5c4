"""``pcpd replay``: replay a kernel kmem allocation trace under each policy.

Given the text of the kmem page-allocator tracepoints (``perf script``,
``trace-cmd report`` or the ftrace ``trace`` file, any era that
``pcpd.replay.trace`` reads, plain, gzip or xz), answer: what would each policy
have done, and touched, on this machine's own allocation stream?

Two passes, neither holding the trace:

1. ``decode()`` parses the trace once and turns its events into model
   operations, spooled to an anonymous temporary file (15 bytes an
   operation; parsing a line costs more than replaying it, so the trace is
   parsed once whatever the number of policies).  It also counts
   what the trace itself recorded: events by name and order, and the PCP
   refills and drains (``TracePcp``).
2. ``replay_policy()`` runs the spooled operations through one fresh model
   per policy: one arena, one ``CpuAllocator`` per trace CPU (slot = index
   of the CPU in the sorted list of CPUs that allocate or free).

Memory grows with the live allocations of the trace (a dict of live blocks
in each pass), never with its length.

Operations
----------
``mm_page_alloc`` allocates on the CPU of the event with the memdesc type
and compoundness that ``pcpd.replay.trace.classify_gfp()`` infers from the GFP
flags (the table in that module).  The model's types other than ``kernel``
are compound, so a multi-page allocation without ``__GFP_COMP`` is replayed
as ``kernel`` (memdesc Misc: non-compound ``alloc_pages()``) whatever its
row; the migratetype follows the type (``workers.policies.MIGRATETYPE_OF``).
A failed allocation (``pfn`` -1) is counted and not replayed, and so is one
above ``MAX_ORDER`` (10: x86 with 4 KiB pages), which the model cannot make.

``mm_page_free`` frees the block on the CPU of the event, which is the
kernel's rule: a remote free lands on the freeing CPU's PCP
(``__free_frozen_pages()``), so no hand-over is modelled.  The block is
freed at the order it was allocated at; a free whose order differs (the
pieces of a ``split_page()``) is counted.

``mm_page_free_batched`` prints ``order=0`` even for large folios and
follows the ``mm_page_free`` of the same page (v4.15+: the second pass of
``free_unref_page_list()``, now ``free_unref_folios()``) or precedes it
(v3.3-v4.14: ``free_hot_cold_page_list()`` traces before it frees).  The
first of the two frees the block; the second is its partner and is only
counted.  A batched free with no partner (v2.6.33 ``mm_pagevec_free``)
frees the block itself.  Partners are looked for among the last
``PAIR_WINDOW`` frees.

A free of a page the trace never allocated (allocated before the capture
started, or by ``alloc_pages_bulk()``, which has no ``mm_page_alloc``) is
counted and skipped.  An allocation of a page the trace shows live means
its free was lost: the old block is freed first and the loss counted.
Blocks still live at the end stay allocated.

``decay_pcp_high()`` runs on every CPU once per ``--decay-interval``
seconds of trace time (``sysctl_stat_interval``, 1 s), at most
``MAX_DECAY_TICKS`` times per gap between events; it only acts in era 6.7.
Traces whose timestamps are not seconds (a counter clock) want
``--decay-interval 0``.

``mm_page_alloc_zone_locked`` and ``mm_page_pcpu_drain`` are what the
kernel did, not requests: they are compared with the ``legacy`` model
(fidelity), as ``trace-pagealloc-postprocess.pl`` counts them.  A refill is
a run of ``percpu_refill=1`` events on one CPU, a drain a run of
``mm_page_pcpu_drain`` events; a run ends at the CPU's next other event
(``mm_page_alloc_extfrag`` does not end one: a claim inside a refill emits
it).  Before v5.19 ``percpu_refill`` means ``order == 0``, so high-order
PCP refills of 5.13-5.18 count as buddy allocations there.

The zone
--------
The model has one zone.  With ``--zoneinfo`` it is the capture's first
populated Normal zone: its managed pages (at most ``MAX_ARENA_PAGES``, or
the trace's need if larger), watermarks and era, and the PCP batch and
high limits the capture shows (the era model's values where the CPUs
disagree or another era is asked for).  Without it the zone is
``DEFAULT_PAGES`` (1 GiB), or four times the trace's peak live pages if
that is larger, sized as the kernel sizes such a zone, with nsplit the
highest CPU number seen plus one.  Every policy starts with empty PCPs: the
PCP contents at the start of the capture are unknown.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pcpd import argtypes
from pcpd.daemon.audit import audit
from pcpd.errors import InputError, UsageError
from pcpd.model import sizing
from pcpd.model import stats as S
from pcpd.model.arena import RECORD_SIZES, Arena
from pcpd.model.memmap import NIL
from pcpd.model.slab import format_slab
from pcpd.model.zone import format_zone
from pcpd.replay.trace import (
    EVENTS,
    MM_PAGE_ALLOC,
    MM_PAGE_ALLOC_EXTFRAG,
    MM_PAGE_ALLOC_ZONE_LOCKED,
    MM_PAGE_FREE,
    MM_PAGE_PCPU_DRAIN,
    Skipped,
    TraceEvent,
    classify_gfp,
    read_trace,
)
from pcpd.zoneinfo import ZoneComparison, compare_zones, read_zoneinfo
from workers.cpu import MEMDESC_POLICIES, CpuAllocator, ModelSpec, SharedLocks, format_arena
from workers.policies import POLICIES, T_KERNEL, TYPES

DEFAULT_PAGES = 1 << 18            # 1 GiB of 4 KiB pages
MAX_ARENA_PAGES = 1 << 20          # 4 GiB: about 216 MiB of model per policy
DEFAULT_MEMDESC_RECORD = 16
PAIR_WINDOW = 4096                 # frees remembered for mm_page_free_batched pairing
MAX_DECAY_TICKS = 32               # 0.875**32: high is back at high_min long before
DECAY_INTERVAL = 1.0               # sysctl_stat_interval (HZ)

MAX_CPU_SLOTS = 255                # page flags hold cpu + 1 in 8 bits (pcpd.model.memmap)

OP_ALLOC, OP_FREE, OP_DECAY = range(3)
_OP = struct.Struct("<BIBBq")      # kind, cpu, order, memdesc type, block number
_SPOOL_FLUSH = 1 << 16
_READ_OPS = 1 << 16
_REFILL_RUN, _DRAIN_RUN = 1, 2


def replay_type(gfp_flags: str, order: int) -> int:
    """The memdesc type index (``workers.policies.TYPES``) an allocation replays as."""
    cls = classify_gfp(gfp_flags, order)
    if order and not cls.compound:
        return T_KERNEL
    return TYPES.index(cls.memdesc_type)


class OpSpool:
    """Model operations on an anonymous temporary file: written once, read per policy."""

    def __init__(self) -> None:
        self._file: BinaryIO = tempfile.TemporaryFile(prefix="pcpd-replay-")
        self._buf = bytearray()
        self.count = 0

    def add(self, kind: int, cpu: int, order: int, t: int, block: int) -> None:
        self._buf += _OP.pack(kind, cpu, order, t, block)
        self.count += 1
        if len(self._buf) >= _SPOOL_FLUSH:
            self._file.write(self._buf)
            self._buf.clear()

    def __iter__(self) -> Iterator[tuple[int, int, int, int, int]]:
        """Every operation in order; the spool stays readable for the next pass."""
        if self._buf:
            self._file.write(self._buf)
            self._buf.clear()
        self._file.seek(0)
        while chunk := self._file.read(_OP.size * _READ_OPS):
            yield from _OP.iter_unpack(chunk)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> OpSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class TracePcp:
    """What the kernel's own PCP did, as the trace recorded it."""

    refill_blocks: int = 0        # mm_page_alloc_zone_locked percpu_refill=1
    refill_pages: int = 0
    refills: int = 0              # runs of them on one CPU
    buddy_blocks: int = 0         # mm_page_alloc_zone_locked percpu_refill=0
    drain_blocks: int = 0         # mm_page_pcpu_drain
    drain_pages: int = 0
    drains: int = 0               # runs of them on one CPU


@dataclass
class Decoded:
    """What ``decode()`` learned from the trace; the same for every policy."""

    events: Counter = field(default_factory=Counter)   # (event, order) -> count
    cpus: list[int] = field(default_factory=list)      # CPUs that allocate or free, sorted
    nr_cpu_ids: int = 0                                # highest CPU in any event + 1
    allocs: int = 0
    failed_allocs: int = 0
    frees: int = 0
    above_max_order: int = 0      # allocations the model cannot make (not x86 with 4 KiB pages)
    remote_frees: int = 0         # freed on another CPU than the allocating one
    batched_pairs: int = 0        # mm_page_free_batched and mm_page_free of one free
    unknown_frees: int = 0        # pages the trace never allocated
    order_mismatches: int = 0
    lost_frees: int = 0           # live pages allocated again
    live_blocks: int = 0          # at the end of the trace
    live_pages: int = 0
    peak_live_pages: int = 0
    decay_ticks: int = 0
    types: Counter = field(default_factory=Counter)    # (type index, order) -> allocations
    pcp: TracePcp = field(default_factory=TracePcp)


def decode(events: Iterable[TraceEvent], spool: OpSpool,
           decay_interval: float = DECAY_INTERVAL) -> Decoded:
    """Pass 1: turn trace events into model operations on ``spool``.

    See the module docstring for the rules.  Holds the live blocks of the
    trace, the last PAIR_WINDOW frees and one word per CPU.
    """
    d = Decoded()
    pcp = d.pcp
    live: dict[int, tuple[int, int, int, int]] = {}   # pfn -> (order, type, cpu, block no.)
    pending: OrderedDict[int, str] = OrderedDict()    # freed pfn -> event that freed it
    run: dict[int, int] = {}                          # cpu -> the run it is in
    cpus: set[int] = set()
    add, count = spool.add, d.events
    next_tick = None
    for e in events:
        ev, cpu, pfn, order = e.event, e.cpu, e.pfn, e.order
        count[ev, order] += 1
        if cpu >= d.nr_cpu_ids:
            d.nr_cpu_ids = cpu + 1
        if decay_interval > 0:
            if next_tick is None:
                next_tick = e.timestamp + decay_interval
            elif e.timestamp >= next_tick:
                ticks = int((e.timestamp - next_tick) // decay_interval) + 1
                next_tick += ticks * decay_interval
                for _ in range(min(ticks, MAX_DECAY_TICKS)):
                    add(OP_DECAY, 0, 0, 0, 0)
                    d.decay_ticks += 1
        if ev == MM_PAGE_ALLOC_ZONE_LOCKED:
            if e.percpu_refill == 1:
                pcp.refill_blocks += 1
                pcp.refill_pages += 1 << order
                if run.get(cpu) != _REFILL_RUN:
                    pcp.refills += 1
                    run[cpu] = _REFILL_RUN
            else:
                pcp.buddy_blocks += 1
                run[cpu] = 0
            continue
        if ev == MM_PAGE_PCPU_DRAIN:
            pcp.drain_blocks += 1
            pcp.drain_pages += 1 << order
            if run.get(cpu) != _DRAIN_RUN:
                pcp.drains += 1
                run[cpu] = _DRAIN_RUN
            continue
        if ev == MM_PAGE_ALLOC_EXTFRAG:
            continue
        run[cpu] = 0
        if ev == MM_PAGE_ALLOC:
            if pfn < 0:
                d.failed_allocs += 1
                continue
            if order > sizing.MAX_ORDER:
                d.above_max_order += 1
                continue
            pending.pop(pfn, None)
            old = live.get(pfn)
            if old is not None:                       # its free never reached the trace
                d.lost_frees += 1
                add(OP_FREE, old[2], old[0], old[1], old[3])
                d.live_pages -= 1 << old[0]
            t = replay_type(e.gfp_flags, order)
            live[pfn] = (order, t, cpu, d.allocs)
            add(OP_ALLOC, cpu, order, t, d.allocs)
            cpus.add(cpu)
            d.allocs += 1
            d.types[t, order] += 1
            d.live_pages += 1 << order
            if d.live_pages > d.peak_live_pages:
                d.peak_live_pages = d.live_pages
            continue
        # MM_PAGE_FREE or MM_PAGE_FREE_BATCHED
        partner = pending.get(pfn)
        if partner is not None and partner != ev:
            del pending[pfn]
            d.batched_pairs += 1
            continue
        block = live.pop(pfn, None)
        if block is None:
            d.unknown_frees += 1
        else:
            a_order, t, a_cpu, number = block
            if ev == MM_PAGE_FREE and order != a_order:
                d.order_mismatches += 1
            add(OP_FREE, cpu, a_order, t, number)
            cpus.add(cpu)
            d.frees += 1
            d.remote_frees += a_cpu != cpu
            d.live_pages -= 1 << a_order
        pending[pfn] = ev
        pending.move_to_end(pfn)
        if len(pending) > PAIR_WINDOW:
            pending.popitem(last=False)
    d.cpus = sorted(cpus)
    d.live_blocks = len(live)
    return d


# --- the zone -------------------------------------------------------------------

@dataclass(frozen=True)
class ZoneSetup:
    """The modelled zone: size, era, PCP limits and where they came from."""

    pages: int                         # arena pages
    era: str
    nsplit: int
    source: str                        # "default" or the zoneinfo file
    managed: int                       # the zone's own size (== pages unless capped)
    limits: sizing.PcpLimits | None = None       # None: as the kernel sizes ``pages``
    watermarks: sizing.Watermarks | None = None  # None: as the kernel sets them for ``pages``
    node: int | None = None
    captured: bool = False             # limits read from the capture's pagesets


def trace_pages(decoded: Decoded) -> int:
    """Arena pages the trace needs: four times its peak live pages, at least 1 GiB."""
    need = max(DEFAULT_PAGES, 4 * decoded.peak_live_pages)
    return -(-need // 1024) * 1024


def default_zone(decoded: Decoded, era: str) -> ZoneSetup:
    pages = trace_pages(decoded)
    return ZoneSetup(pages, era, max(decoded.nr_cpu_ids, 1), "default", pages)


def zoneinfo_zone(path: str, decoded: Decoded, era: str | None) -> ZoneSetup:
    """The zone of a /proc/zoneinfo capture (see the module docstring)."""
    comparisons = compare_zones(read_zoneinfo(path))
    c = next((c for c in comparisons if c.zone.zone == "Normal"), None)
    if c is None:
        raise InputError(f"{path}: no populated Normal zone to model")
    era = era or c.era
    z = c.zone
    limits, captured = _captured_limits(c) if era == c.era else (None, False)
    if limits is None:
        limits = dict(c.models)[era]
    wm = z.watermarks
    managed = max(z.managed // 512 * 512, 512)
    pages = min(managed, max(MAX_ARENA_PAGES, trace_pages(decoded)))
    return ZoneSetup(pages, era, c.nsplit, path, z.managed, limits,
                     sizing.Watermarks(wm.min, wm.low, wm.high, wm.promo or wm.high),
                     z.node, captured)


def _captured_limits(c: ZoneComparison) -> tuple[sizing.PcpLimits | None, bool]:
    """The PCP limits every CPU of the capture shows, or (None, False)."""
    z = c.zone
    if z.has_high_bounds:                  # 6.7+: high is auto-tuned state, not a limit
        if None in (z.batch, z.high_min, z.high_max):
            return None, False
        return sizing.PcpLimits(z.batch, z.high_min, z.high_min, z.high_max), True
    if None in (z.batch, z.high):
        return None, False
    return sizing.PcpLimits(z.batch, z.high, z.high, z.high), True


def model_spec(policy: str, zone: ZoneSetup, ncpus: int, record_bytes: int) -> ModelSpec:
    """The model of one policy: legacy and compound keep today's 64-byte struct page."""
    limits = zone.limits or sizing.PcpLimits(0, 0, 0, 0)
    tuned = zone.era == "6.7"
    return ModelSpec(
        pages=zone.pages, record_bytes=record_bytes if policy in MEMDESC_POLICIES else 64,
        policy=policy, era=zone.era, ncpus=max(ncpus, 1), nsplit=zone.nsplit,
        batch=limits.batch, high=0 if tuned else limits.high,
        high_min=limits.high_min if tuned else 0, high_max=limits.high_max if tuned else 0)


# --- pass 2 ----------------------------------------------------------------------

@dataclass
class PolicyRun:
    """One policy's replay: summed counters and the conservation audit after it."""

    policy: str
    record_bytes: int
    snapshot: S.Snapshot
    frees_skipped: int                 # frees of blocks the model failed to allocate
    audit_ok: bool
    audit_problems: list[str]
    pages_at_end: dict[str, int]       # buddy, pcp and allocated pages, from the audit


def replay_policy(spool: OpSpool, cpus: list[int], spec: ModelSpec,
                  watermarks: sizing.Watermarks | None = None) -> PolicyRun:
    """Pass 2: run the spooled operations through a fresh model of ``spec``."""
    arena = Arena.create(spec.geometry(ring_slots=1))
    try:
        if watermarks is None:
            format_arena(arena, spec)
        else:
            format_zone(arena, watermarks.min, watermarks.low, watermarks.high, spec.memdesc)
            format_slab(arena)
        return _run(arena, spec, spool, cpus)
    finally:
        arena.close()
        arena.unlink()


def _run(arena: Arena, spec: ModelSpec, spool: OpSpool, cpus: list[int]) -> PolicyRun:
    """The replay loop; the CPU models die with this frame, before the arena is closed."""
    locks = SharedLocks.local()
    cpu_models = [CpuAllocator(arena, spec, locks, slot) for slot in range(len(cpus))]
    allocs = {cpu: m.policy.alloc for cpu, m in zip(cpus, cpu_models)}
    frees = {cpu: m.policy.free for cpu, m in zip(cpus, cpu_models)}
    policies = [m.policy for m in cpu_models]
    live: dict[int, int] = {}                          # block number -> model pfn (NIL: failed)
    frees_skipped = 0
    for kind, cpu, order, t, block in spool:
        if kind == OP_ALLOC:
            live[block] = allocs[cpu](t, order)
        elif kind == OP_FREE:
            pfn = live.pop(block)
            if pfn != NIL:
                frees[cpu](pfn, order, t)
            else:
                frees_skipped += 1
        else:
            for policy in policies:
                policy.decay()
    for policy in policies:
        policy.publish_gauges()
    per_cpu = np.array([m.counters.v for m in cpu_models], dtype=np.int64).reshape(
        len(cpu_models), S.NR_STATS)
    snapshot = S.Snapshot(per_cpu, np.zeros(S.NR_STATS, np.int64))
    result = audit(arena)
    return PolicyRun(spec.policy, spec.record_bytes, snapshot, frees_skipped, result.ok,
                     result.describe_problems(),
                     {state: result.pages(state) for state in ("buddy", "pcp", "allocated")})


# --- figures -----------------------------------------------------------------------

def policy_figures(run: PolicyRun) -> dict[str, Any]:
    """The per-policy figures of results.json (see docs/replay.md)."""
    snap = run.snapshot
    total = snap.total
    allocs, frees = _allocs_attempted(snap), snap.frees()
    ops = allocs + frees
    written = sum(total(f"lines_written_{c}") for c in S.CAUSES)
    read = sum(total(f"lines_read_{c}") for c in S.CAUSES)
    desc = total("desc_lines_written") + total("desc_lines_read")
    data = total("data_lines_written")
    lines = written + read + desc + data
    return {
        "record_bytes": run.record_bytes,
        "ops": ops, "allocs": allocs, "frees": frees,
        "alloc_hit": total("alloc_hit"), "alloc_refill": total("alloc_refill"),
        "alloc_buddy": total("alloc_buddy"),
        "pcp_hit_rate": _ratio(total("alloc_hit"), allocs),
        "free_pcp": total("free_pcp"), "free_buddy": total("free_buddy"),
        "refills": total("refills"), "refill_pages": total("refill_pages"),
        "drains": sum(total(f"drains_{c}") for c in S.DRAIN_CAUSES),
        "drain_pages": sum(total(f"drain_pages_{c}") for c in S.DRAIN_CAUSES),
        "drains_by_cause": {c: total(f"drains_{c}") for c in S.DRAIN_CAUSES
                            if total(f"drains_{c}")},
        "zone_lock_acquisitions": total("lock_acquisitions"),
        "cachelines": lines,
        "cachelines_per_op": _ratio(lines, ops),
        "struct_page_lines_written": written, "struct_page_lines_read": read,
        "descriptor_lines": desc, "free_memory_lines": data,
        "lines_by_cause": {c: total(f"lines_written_{c}") + total(f"lines_read_{c}")
                           for c in S.CAUSES},
        "slab_ops": total("slab_alloc") + total("slab_free"),
        "slab_shared": total("slab_shared"),
        "alloc_failures": sum(total(f"alloc_fail_{c}") for c in S.ALLOC_FAIL_CAUSES),
        "frees_skipped": run.frees_skipped,
        "pages_at_end": run.pages_at_end,
        "audit_ok": run.audit_ok,
        "audit_problems": run.audit_problems,
    }


def _allocs_attempted(snap: S.Snapshot) -> int:
    return sum(snap.total(f"alloc_{t}_order_{o}") for t in S.MEMDESC_TYPES for o in S.ORDERS)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def fidelity(trace: TracePcp, figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The legacy model's refills and drains beside the trace's own."""
    pairs = {"refills": trace.refills, "refill_pages": trace.refill_pages,
             "drains": trace.drains, "drain_pages": trace.drain_pages}
    return {name: {"trace": n, "model": figures[name], "model_per_trace": _ratio(figures[name], n)}
            for name, n in pairs.items()}


# --- the whole replay ----------------------------------------------------------------

def replay(path: str | os.PathLike, policies: Iterable[str] = tuple(POLICIES),
           zoneinfo: str | None = None, era: str | None = None,
           record_bytes: int = DEFAULT_MEMDESC_RECORD,
           decay_interval: float = DECAY_INTERVAL) -> dict[str, Any]:
    """Replay the trace at ``path`` under each policy; the results.json object.

    Raises InputError for a trace that cannot be read or holds no
    page-allocator event, and for a bad zoneinfo file.
    """
    policies = list(policies)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise UsageError(f"unknown policy {unknown[0]!r}; expected one of {', '.join(POLICIES)}")
    if era is not None:
        sizing.check_era(era)
    if record_bytes not in RECORD_SIZES:
        raise UsageError(f"record size {record_bytes} is not one of {RECORD_SIZES}")
    if not policies:
        raise UsageError("no policy to replay")
    source = os.fspath(path)
    skipped = Skipped()
    with OpSpool() as spool:
        decoded = decode(read_trace(path, skipped), spool, decay_interval)
        if not decoded.events:
            raise InputError(f"{source}: no kmem page-allocator events ({skipped.summary()})")
        if len(decoded.cpus) > MAX_CPU_SLOTS:
            raise UsageError(f"{source}: {len(decoded.cpus)} CPUs allocate or free, the model "
                             f"holds {MAX_CPU_SLOTS}; keep fewer (perf script --cpu LIST)")
        zone = (zoneinfo_zone(zoneinfo, decoded, era) if zoneinfo
                else default_zone(decoded, era or "6.7"))
        runs = {}
        for name in policies:
            spec = model_spec(name, zone, len(decoded.cpus), record_bytes)
            runs[name] = replay_policy(spool, decoded.cpus, spec, zone.watermarks)
        ops = spool.count
    limits = spec.limits()
    results = {
        "trace": source,
        "lines": sum(decoded.events.values()) + skipped.total(),
        "events": _events_json(decoded.events),
        "skipped": dict(skipped.most_common()),
        "replay": _replay_json(decoded, ops),
        "trace_pcp": asdict(decoded.pcp),
        "model": _model_json(zone, limits, decay_interval),
        "policies": {},
    }
    for name, run in runs.items():
        figures = policy_figures(run)
        if name == "legacy":
            figures["fidelity"] = fidelity(decoded.pcp, figures)
        results["policies"][name] = figures
    _add_savings(results["policies"])
    return results


def _events_json(events: Counter) -> dict[str, dict[str, Any]]:
    out = {}
    for name in EVENTS:
        orders = sorted((order, n) for (ev, order), n in events.items() if ev == name)
        out[name] = {"count": sum(n for _, n in orders),
                     "orders": {str(order): n for order, n in orders}}
    return out


def _replay_json(d: Decoded, ops: int) -> dict[str, Any]:
    types: dict[str, dict[str, int]] = {}
    for (t, order), n in sorted(d.types.items()):
        types.setdefault(TYPES[t], {})[str(order)] = n
    return {
        "cpus": d.cpus, "nr_cpu_ids": d.nr_cpu_ids, "ops": ops,
        "allocs": d.allocs, "failed_allocs": d.failed_allocs,
        "above_max_order": d.above_max_order, "frees": d.frees,
        "remote_frees": d.remote_frees, "batched_pairs": d.batched_pairs,
        "unknown_frees": d.unknown_frees, "order_mismatches": d.order_mismatches,
        "lost_frees": d.lost_frees, "live_blocks_at_end": d.live_blocks,
        "live_pages_at_end": d.live_pages, "peak_live_pages": d.peak_live_pages,
        "decay_ticks": d.decay_ticks, "types": types,
    }


def _model_json(zone: ZoneSetup, limits: sizing.PcpLimits, decay_interval: float) -> dict[str, Any]:
    return {
        "era": zone.era, "zone_source": zone.source, "node": zone.node,
        "managed": zone.managed, "arena_pages": zone.pages, "nsplit": zone.nsplit,
        "pcp_from_capture": zone.captured,
        "batch": limits.batch, "high": limits.high,
        "high_min": limits.high_min, "high_max": limits.high_max,
        "decay_interval": decay_interval,
    }


def _add_savings(policies: dict[str, dict[str, Any]]) -> None:
    """cachelines_saved_vs_legacy: 1 - lines / legacy lines (None without legacy)."""
    base = policies.get("legacy", {}).get("cachelines")
    for figures in policies.values():
        figures["cachelines_saved_vs_legacy"] = (
            round(1 - figures["cachelines"] / base, 4) if base else None)


# --- the report ------------------------------------------------------------------------

def format_report(results: dict[str, Any]) -> str:
    """The terminal report: what was read, the model, one row per policy, fidelity."""
    r, m = results["replay"], results["model"]
    events = ", ".join(f"{name} {e['count']}" for name, e in results["events"].items()
                       if e["count"])
    head = f"{results['trace']}: {results['lines']} lines; {events}"
    if skipped := results["skipped"]:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items())
        head += f"; skipped {sum(skipped.values())} ({reasons})"
    out = [head]
    cpus = f"{len(r['cpus'])} CPUs ({_cpu_list(r['cpus'])})" if r["cpus"] else "no CPU"
    out.append(f"replayed on {cpus}: {r['allocs']} allocs ({r['failed_allocs']} failed in the "
               f"trace), {r['frees']} frees ({r['remote_frees']} remote), {r['batched_pairs']} "
               f"batched pairs; unknown frees {r['unknown_frees']}, order mismatches "
               f"{r['order_mismatches']}, lost frees {r['lost_frees']}; live at end "
               f"{r['live_pages_at_end']} pages (peak {r['peak_live_pages']})")
    if r["types"]:
        out.append("allocations by inferred type: " + ", ".join(
            f"{t} {sum(orders.values())}" for t, orders in r["types"].items()))
    zone = (f"Normal zone of {m['zone_source']} (node {m['node']}, managed {m['managed']})"
            if m["zone_source"] != "default" else "default zone")
    high = (f"high {m['high_min']}..{m['high_max']}" if m["era"] == "6.7" else f"high {m['high']}")
    decay = f"decay every {m['decay_interval']:g} s" if m["decay_interval"] > 0 else "no decay"
    out.append(f"model: era {m['era']}, {zone}, arena {m['arena_pages']} pages, nsplit "
               f"{m['nsplit']}, batch {m['batch']}, {high}"
               f"{' (captured)' if m['pcp_from_capture'] else ''}, {decay}")
    out.append("")
    head = (f"{'policy':<16} {'rec':>3} {'ops':>8} {'hit%':>6} {'refills':>7} {'refill pg':>9} "
            f"{'drains':>6} {'drain pg':>8} {'lock':>6} {'lines/op':>8} {'saved':>6} "
            f"{'slab ops':>8} {'fails':>5}")
    out.append(head)
    for name, f in results["policies"].items():
        saved = f["cachelines_saved_vs_legacy"]
        out.append(
            f"{name:<16} {f['record_bytes']:>3} {f['ops']:>8} {_pct(f['pcp_hit_rate']):>6} "
            f"{f['refills']:>7} {f['refill_pages']:>9} {f['drains']:>6} {f['drain_pages']:>8} "
            f"{f['zone_lock_acquisitions']:>6} {_num(f['cachelines_per_op']):>8} "
            f"{_pct(saved):>6} {f['slab_ops']:>8} {f['alloc_failures']:>5}"
            + ("" if f["audit_ok"] else "  AUDIT VIOLATED"))
    legacy = results["policies"].get("legacy")
    if legacy:
        out += ["", "legacy fidelity (what the trace recorded vs the model):",
                f"  {'':<13} {'trace':>8} {'model':>8} {'model/trace':>11}"]
        for name, row in legacy["fidelity"].items():
            out.append(f"  {name.replace('_', ' '):<13} {row['trace']:>8} {row['model']:>8} "
                       f"{_num(row['model_per_trace']):>11}")
    return "\n".join(out)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus)) if len(cpus) <= 8 else f"{cpus[0]}..{cpus[-1]}"


# --- the command -----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", metavar="TRACE",
                        help="kmem tracepoint text from perf script, trace-cmd report or "
                             "/sys/kernel/tracing/trace (.gz and .xz read directly)")
    parser.add_argument("--policies", type=argtypes.policy_list, default=list(POLICIES),
                        metavar="P[,P...]",
                        help=f"policies to replay (default {','.join(POLICIES)})")
    parser.add_argument("--zoneinfo", metavar="FILE",
                        help="a /proc/zoneinfo capture of the traced machine: model its Normal "
                             "zone, PCP limits and era")
    parser.add_argument("--era", choices=sizing.ERAS,
                        help="kernel era of the model (default: the zoneinfo's, else 6.7)")
    parser.add_argument("--record-bytes", type=int, choices=RECORD_SIZES,
                        default=DEFAULT_MEMDESC_RECORD,
                        help="struct page size for the memdesc policies (default 16); "
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
