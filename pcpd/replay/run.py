"""Pass 2 of a replay: the spooled operations through a fresh model of one policy.

One arena per policy, formatted for the replay's zone; one ``CpuAllocator``
per trace CPU that allocates or frees (slot = index of the CPU in their
sorted list); the operations in trace order; then the conservation audit.
An allocation the model cannot serve is counted by the model, and the
trace's later free of that block is skipped and counted here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcpd.daemon.audit import audit
from pcpd.model import sizing, stats
from pcpd.model.arena import Arena
from pcpd.model.memmap import NIL
from pcpd.model.slab import format_slab
from pcpd.model.zone import format_zone
from pcpd.replay.spool import OP_ALLOC, OP_FREE, OpSpool
from pcpd.replay.zone import ZoneSetup
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks, format_arena

MAX_CPU_SLOTS = 255                # page flags hold cpu + 1 in 8 bits (pcpd.model.memmap)


def model_spec(policy: str, zone: ZoneSetup, ncpus: int, record_bytes: int) -> ModelSpec:
    """The model of one policy: legacy and compound keep today's 64-byte struct page."""
    return ModelSpec.from_zoneinfo(policy, zone.era, record_bytes, pages=zone.pages, ncpus=ncpus,
                                   nsplit=zone.nsplit, limits=zone.limits)


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
    """The CPU models live in this frame only, so they are gone before the arena is closed."""
    locks = SharedLocks.local()                    # one zone->lock for every CPU, as in the kernel
    cpu_models = [CpuAllocator(arena, spec, locks, slot) for slot in range(len(cpus))]
    frees_skipped = _drive(cpu_models, cpus, spool)
    for model in cpu_models:
        model.policy.publish_gauges()
    per_cpu = np.array([m.counters.v for m in cpu_models], dtype=np.int64).reshape(
        len(cpu_models), stats.NR_STATS)
    snapshot = stats.Snapshot(per_cpu, np.zeros(stats.NR_STATS, np.int64))
    result = audit(arena)
    return PolicyRun(spec.policy, spec.record_bytes, snapshot, frees_skipped, result.ok,
                     result.describe_problems(),
                     {state: result.pages(state) for state in ("buddy", "pcp", "allocated")})


def _drive(cpu_models: list[CpuAllocator], cpus: list[int], spool: OpSpool) -> int:
    """Every spooled operation on the model of its CPU; the frees skipped (see the module docstring)."""
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
    return frees_skipped
