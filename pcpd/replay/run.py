"""Pass 2 of a replay: the spooled operations through a fresh model of one policy.

One arena per policy, formatted for the replay's zone; one ``CpuAllocator``
per trace CPU that allocates or frees (slot = index of the CPU in their
sorted list); the start state (``pcpd.replay.start``: PCP high and lists,
the pre-capture pool, free pages, pageblocks); the operations in trace
order; then the conservation audit.  An allocation the model cannot serve
is counted by the model, and the trace's later free of that block is
skipped and counted here, as is a pre-capture free the pool has no block
for.

A ``decay_pcp_high()`` pass drains the excess in batch-sized chunks, each a
``free_pcppages_bulk()`` call the model counts as a drain; the kernel's
chunks follow each other on the kworker with no event between them, so the
trace counts one drain a pass.  ``decay_passes`` counts the passes that
drained (per CPU), the figure the trace's decay drains compare with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pcpd.daemon.audit import audit
from pcpd.model import sizing, stats
from pcpd.model.arena import Arena
from pcpd.model.pagewords import NIL
from pcpd.model.slab import format_slab
from pcpd.model.zone import format_zone
from pcpd.replay.spool import DECAY_ONE_CPU, OP_ALLOC, OP_FREE, OP_FREE_PRE, OpSpool
from pcpd.replay.start import SeedReport, StartPlan, seed
from pcpd.replay.zone import ZoneSetup
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks, format_arena
from workers.policies import PolicyOptions

MAX_CPU_SLOTS = 255                # page flags hold cpu + 1 in 8 bits (pcpd.model.memmap)


def model_spec(policy: str, zone: ZoneSetup, ncpus: int, record_bytes: int,
               options: PolicyOptions | None = None) -> ModelSpec:
    """The model of one policy: legacy and compound keep today's 64-byte struct page."""
    return ModelSpec.from_zoneinfo(policy, zone.era, record_bytes, pages=zone.pages, ncpus=ncpus,
                                   nsplit=zone.nsplit, limits=zone.limits,
                                   options=options or PolicyOptions())


@dataclass
class PolicyRun:
    """One policy's replay: summed counters and the conservation audit after it."""

    policy: str
    record_bytes: int
    snapshot: stats.Snapshot
    frees_skipped: int                 # frees of blocks the model failed to allocate
    audit_ok: bool
    audit_problems: list[str]
    pages_at_end: dict[str, int]       # buddy, pcp and allocated pages, from the audit
    start: SeedReport | None = None
    pre_capture_skipped: int = 0       # OP_FREE_PRE with no pool block (or --start empty)
    decay_passes: int = 0              # (CPU, decay tick) pairs that drained
    pcp_at_end: list[dict[str, int]] = field(default_factory=list)   # per CPU: high, count
    start_allocated_at_end: int = 0    # pages the start state allocated, still allocated
    memdesc_high: str = "shared"       # the budget typed PCPs ran under (PolicyOptions)


def replay_policy(spool: OpSpool, cpus: list[int], spec: ModelSpec,
                  watermarks: sizing.Watermarks | None = None,
                  start: StartPlan | None = None) -> PolicyRun:
    """Pass 2: run the spooled operations through a fresh model of ``spec``."""
    arena = Arena.create(spec.geometry(ring_slots=1))
    try:
        if watermarks is None:
            format_arena(arena, spec)
        else:
            format_zone(arena, watermarks.min, watermarks.low, watermarks.high, spec.memdesc)
            format_slab(arena)
        return _run(arena, spec, spool, cpus, start)
    finally:
        arena.close()
        arena.unlink()


def _run(arena: Arena, spec: ModelSpec, spool: OpSpool, cpus: list[int],
         start: StartPlan | None) -> PolicyRun:
    """The CPU models live in this frame only, so they are gone before the arena is closed."""
    locks = SharedLocks.local()                    # one zone->lock for every CPU, as in the kernel
    cpu_models = [CpuAllocator(arena, spec, locks, slot) for slot in range(len(cpus))]
    pool: dict[tuple[int, int, int], list[int]] = {}
    report = None
    if start is not None:
        pool, report = seed(arena, cpu_models, start)
    frees_skipped, pre_skipped, decay_passes = _drive(cpu_models, cpus, spool, pool)
    for model in cpu_models:
        model.policy.publish_gauges()
    per_cpu = np.array([m.counters.v for m in cpu_models], dtype=np.int64).reshape(
        len(cpu_models), stats.NR_STATS)
    snapshot = stats.Snapshot(per_cpu, np.zeros(stats.NR_STATS, np.int64))
    result = audit(arena)
    at_end = [{"cpu": cpu, "high": sum(p.high for p in m.policy.pcps), "count": m.policy.pcp_pages()}
              for cpu, m in zip(cpus, cpu_models)]
    held = sum(len(pfns) << order for (_, order, _), pfns in pool.items())
    held += report.filler_pages if report is not None else 0
    return PolicyRun(spec.policy, spec.record_bytes, snapshot, frees_skipped, result.ok,
                     result.describe_problems(),
                     {state: result.pages(state) for state in ("buddy", "pcp", "allocated")},
                     report, pre_skipped, decay_passes, at_end, held, spec.options.memdesc_high)


def _drive(cpu_models: list[CpuAllocator], cpus: list[int], spool: OpSpool,
           pool: dict[tuple[int, int, int], list[int]]) -> tuple[int, int, int]:
    """Every spooled operation on the model of its CPU: (frees skipped, pre-capture frees
    skipped, decay passes that drained); see the module docstring."""
    allocs = {cpu: m.policy.alloc for cpu, m in zip(cpus, cpu_models)}
    frees = {cpu: m.policy.free for cpu, m in zip(cpus, cpu_models)}
    slot_of = {cpu: slot for slot, cpu in enumerate(cpus)}
    policies = [m.policy for m in cpu_models]
    live: dict[int, int] = {}                          # block number -> model pfn (NIL: failed)
    frees_skipped = pre_skipped = decay_passes = 0
    for kind, cpu, order, t, block in spool:
        if kind == OP_ALLOC:
            live[block] = allocs[cpu](t, order)
        elif kind == OP_FREE:
            pfn = live.pop(block)
            if pfn != NIL:
                frees[cpu](pfn, order, t)
            else:
                frees_skipped += 1
        elif kind == OP_FREE_PRE:
            blocks = pool.get((slot_of[cpu], order, t))
            if blocks:
                frees[cpu](blocks.pop(), order, t)
            else:
                pre_skipped += 1
        elif block == DECAY_ONE_CPU:                  # OP_DECAY: a vmstat_update work
            slot = slot_of.get(cpu)
            if slot is not None:
                decay_passes += policies[slot].decay() > 0
        else:
            for policy in policies:
                decay_passes += policy.decay() > 0
    return frees_skipped, pre_skipped, decay_passes
