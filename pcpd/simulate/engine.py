"""The virtual-time runner: N CPUs' seeded op streams in one process, on one zone.

Every virtual CPU is what a real worker is, minus the process: a
``CpuAllocator`` (its counters, zone handle, descriptor slab and policy over
the one shared arena) driven by the same seeded ``Workload`` as ``pcpd run``
gives that CPU number.  Cross-CPU frees go through the arena's rings
(``pcpd.model.rings``) exactly as between worker processes: the rings are
plain shared memory and need no second process, so a page handed over is
marked in flight in the page array, can find its ring full (and is then
freed where it is), and is freed onto the receiver's PCP when the receiver
next takes its inbox.  Only zone->lock changes: each CPU's ``ZoneLock`` is
replaced by a ``VirtualZoneLock`` (``pcpd.simulate.clock``).

The discrete-event clock: the CPU with the earliest clock (ties: the lower
slot) runs its next operation, which advances its clock by the cost model
(``pcpd.simulate.costs``) and by any wait for zone->lock.  After every
``CHUNK`` operations a CPU does what a worker does between chunks in a
bounded (``--ops``) run (``workers.worker``): it takes its inbox, backs off
below the low watermark, drains its own PCPs when a shortage asked for
``drain_all_pages`` (a bounded real run does the same, without waiting for the
daemon), and runs ``decay_pcp_high`` when ``pcp.decay_interval`` seconds of its
virtual time have passed.  Nothing depends on this machine: not its CPU count,
not its speed, not the wall clock; the same seed and config give the same
counts and the same virtual times.

Every ``TUNING_INTERVAL`` of virtual time, before the first operation at or
after it, every CPU's PCP tuning (high, free_count, alloc_factor) goes into a
``TuningSeries``: the daemon's once-a-second series, scaled to runs that last
milliseconds; the last sample is the state the run ended in.

When every CPU has done its operations each one folds its counters into its
stats block in the arena, as a worker's ``fold`` does, and the run's counters
are read from there (the measured window is the whole run, as for ``pcpd run
--ops``).  Then each CPU frees what it holds, takes its inbox and drains its
PCPs, and the page array is audited: every page must be back in the buddy.

With ``listen`` the run serves /metrics (``pcpd.exporter``) over its arena
from its start until its counters are final, before the exit drains: its
``pcpd_info`` says ``mode="virtual"``, and ``pcpd_virtual_time_seconds_total``
is the virtual time simulated so far.  The CPUs fold their counters into the
arena every ``FOLD_NS`` of wall-clock time (longer where a fold of many CPUs
takes longer: ``FOLD_SPACING``), looked at every ``CHECK_EVERY`` steps, never
per operation: folding writes gauges and copies counters, so the
counts and virtual times are the same with and without it.  There is no
process per virtual CPU: this one process stands in the first CPU slot, so the
worker families count it once (docs/metrics.md).

Imports: ``pcpd.config``, ``pcpd.model``, ``pcpd.spec``, ``pcpd.daemon`` (audit, report),
``workers`` (cpu, workloads, worker), ``pcpd.simulate`` (costs, clock); ``pcpd.exporter`` for a
run that serves metrics.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pcpd.config.rules import assign_workloads, worker_cpus
from pcpd.config.settings import MAX_VIRTUAL_CPUS, Settings, WorkloadSettings
from pcpd.daemon.audit import audit
from pcpd.model import rings
from pcpd.model.arena import C_PID, RING_HEADER, Arena
from pcpd.model.sizing import PcpLimits
from pcpd.model.stats import ALLOC_FAIL, INDEX, NR_STATS, TUNING_GAUGES, Snapshot, read_snapshot
from pcpd.model.tuning import TuningSeries
from pcpd.model.zonewords import Z_WMARK_LOW
from pcpd.simulate.clock import CpuClock, LockFigures, VirtualZoneLock, ZoneLockClock
from pcpd.simulate.costs import PS_PER_NS, CostModel, line_counter, potential_of
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks, create_arena
from workers.policies import Policy
from workers.worker import CHUNK, FOLD_NS
from workers.workloads import BACKOFF_FRACTION, Workload

if TYPE_CHECKING:
    from pcpd.exporter import MetricsServer

__all__ = ["MAX_VIRTUAL_CPUS", "MODE", "Simulation", "SimulationResult", "ring_slots_for", "simulate"]

log = logging.getLogger(__name__)

MODE = "virtual"                 # pcpd_info's mode label, and the results' metadata.mode

# The rings are ncpus x ncpus (src, dst) pairs; above about 90 CPUs their slots shrink so all
# of them fit this budget (a real run has 1024 slots a ring and one ring per pair of workers).
RING_BUDGET_BYTES = 64 << 20
MIN_RING_SLOTS = 56
PS_PER_SECOND = PS_PER_NS * 10**9
# Virtual seconds between PCP tuning samples (the daemon's: 1 s).  The presets' runs at simulate.ops
# on 4 CPUs, with their caller costs, last 0.4 to 10 ms of virtual time: 40 to 1,000 samples, a long
# run's thinned to at most TUNING_SAMPLES as the daemon's are.
TUNING_INTERVAL = 10e-6
# Steps between looks at the wall clock (is a fold due?) and progress reports: a few ms of a run.
CHECK_EVERY = 1 << 12
REPORT_EVERY = 1 << 16
# A fold reads every ring (ncpus^2 of them: 0.65 s at 1,024 CPUs here), so the next one waits at
# least this many times as long as the last took: folding costs at most a tenth of the run.
FOLD_SPACING = 10

_LOW_WMARK_EVENTS = ALLOC_FAIL["watermark"]
_REMOTE_OUT = INDEX["free_remote_out"]
_REMOTE_IN = INDEX["free_remote_in"]
_TUNING_COLUMNS = [INDEX[name] for name in TUNING_GAUGES]
_HELD, _INFLIGHT = INDEX["held_pages"], INDEX["inflight_pages"]
_WAVES, _HEARTBEAT = INDEX["pressure_waves"], INDEX["heartbeat_ns"]


def ring_slots_for(ncpus: int) -> int:
    """Slots per cross-CPU ring: 1024 as in real runs, fewer where ncpus^2 rings would not fit."""
    fits = RING_BUDGET_BYTES // (ncpus * ncpus * 8) - RING_HEADER
    return max(MIN_RING_SLOTS, min(1024, fits))


class VirtualCpu:
    """One virtual CPU: a real worker's allocator and workload, with a virtual clock."""

    def __init__(self, slot: int, cpu: int, arena: Arena, spec: ModelSpec, locks: SharedLocks,
                 lock_clock: ZoneLockClock, workload: WorkloadSettings, seed: int,
                 cpus: tuple[int, ...], slot_of: dict[int, int]) -> None:
        self.slot, self.cpu = slot, cpu
        self.alloc = CpuAllocator(arena, spec, locks, slot)
        self.policy: Policy = self.alloc.policy
        self.v = self.alloc.counters.v
        self.clock = CpuClock(slot, self.v)
        lock = VirtualZoneLock(lock_clock, self.clock, arena, self.alloc.counters)
        self.alloc.zone_lock = self.alloc.zone.lock = lock
        self.outbox = rings.Outbox(arena, slot)
        self.inbox = rings.Inbox(arena, slot)
        self.workload = Workload(workload, seed, cpu, cpus, slot_of, self.send)
        self.ops = 0
        self.finished_at = 0                         # ps: its clock after its last operation
        self.next_decay = 0
        self.pcp_pages = 0                           # as last sampled (see Simulation._sample)
        self.pcp_high = 0

    def send(self, pfn: int, order: int, t: int, dst: int) -> bool:
        """The workload's hand-over: push onto ring (this CPU, dst), as Worker._send does."""
        if self.outbox.push(dst, rings.encode(pfn, t, order)):
            self.v[_REMOTE_OUT] += 1
            return True
        return False

    def receive(self) -> None:
        """Free what other CPUs handed over onto this CPU's PCP (Worker.receive)."""
        policy = self.policy
        taken = self.inbox.take(lambda pfn, t, order: policy.receive(pfn, order, t))
        for pfn, t, order in taken:
            policy.free(pfn, order, t)
        self.v[_REMOTE_IN] += len(taken)

    def fold(self, block: np.ndarray) -> None:
        """Worker.fold: gauges into the counters, then every counter into the CPU's stats block;
        its heartbeat is its virtual clock."""
        v, workload = self.v, self.workload
        self.policy.publish_gauges()
        v[_HELD] = workload.held_pages
        v[_INFLIGHT] = self.outbox.queued_pages()
        v[_WAVES] = workload.waves
        v[_HEARTBEAT] = self.clock.now // PS_PER_NS
        self.alloc.counters.fold(block)

    def check_watermark(self) -> None:
        """Worker.check_watermark of a bounded run: below the low watermark back off as
        reclaim would; a shortage's drain_all_pages drains this CPU's PCPs at once."""
        zone, workload = self.alloc.zone, self.workload
        if zone.free_pages < zone.watermark(Z_WMARK_LOW):
            self.v[_LOW_WMARK_EVENTS] += 1
            workload.drain_wanted = True
            workload.free_some(self.policy, 1 / BACKOFF_FRACTION)
        if workload.drain_wanted:
            workload.drain_wanted = False
            self.policy.drain_all("drain_all")


@dataclass(frozen=True)
class SimulationResult:
    """What one virtual-time run measured."""

    policy: str
    era: str
    cpus: tuple[int, ...]              # the virtual CPU numbers, by slot
    ops_per_cpu: int                   # workload steps each CPU ran (a step is one operation, or a
                                       # pressure wave's frees; counted operations may differ a little)
    limits: PcpLimits                  # the PCP sizing the zone gave each CPU
    snapshot: Snapshot               # every CPU's counters when the last one finished
    seconds: float                     # virtual: when the last CPU finished
    finish_seconds: tuple[float, ...]  # each CPU's clock after its last operation, by slot
    lock: LockFigures
    pcp_pages_mean: float              # total pages on PCPs, time-weighted over the run
    pcp_pages_peak: int
    pcp_high_mean: float               # sum of every CPU's pcp->high, time-weighted
    tuning: TuningSeries               # each CPU's PCP tuning over the run, in virtual seconds
    audit_ok: bool                     # after the exit drains: every page back in the buddy
    audit_summary: str
    ring_slots: int
    wall_seconds: float

    @property
    def ops(self) -> int:
        return self.snapshot.ops()

    @property
    def exit_code(self) -> int:
        return 0 if self.audit_ok else 1


class Simulation:
    """One run: build the model for ``settings`` (its ``cpus`` are the virtual CPUs), run, audit.

    ``listen`` ("host:port", "" for none): serve the run's metrics there while it runs
    (``exporter`` is the server meanwhile, None otherwise).
    """

    def __init__(self, settings: Settings, policy: str | None = None, ops: int | None = None,
                 listen: str = "") -> None:
        self.settings = settings
        self.listen = listen
        self.exporter: MetricsServer | None = None
        self._virtual_seconds = 0.0                  # as of the last fold, for the exporter
        self.policy_name = policy or settings.policy.name
        self.ops_per_cpu = ops or settings.simulate.ops
        # the CPUs are virtual: never this machine's, so they are all "available"
        self.cpus = worker_cpus(settings, settings.cpus)
        if not 1 <= len(self.cpus) <= MAX_VIRTUAL_CPUS:
            raise ValueError(f"{len(self.cpus)} virtual CPUs; pcpd simulate runs 1..{MAX_VIRTUAL_CPUS}")
        self.spec = ModelSpec.from_settings(settings, len(self.cpus), self.policy_name)
        self.costs = CostModel.from_settings(settings.simulate)
        self.ring_slots = ring_slots_for(len(self.cpus))

    def run(self, progress: Callable[[int, int], None] | None = None) -> SimulationResult:
        """Run every CPU's operations; ``progress(done, total)`` is called at the start (once
        metrics are served), now and then, and once the counters are final."""
        began = time.perf_counter()
        arena = create_arena(self.spec, self.ring_slots)
        try:
            return self._run(arena, progress, began)
        finally:
            self._stop_exporter()
            arena.close()
            arena.unlink()

    def info(self) -> dict[str, str]:
        """The labels of ``pcpd_info``: the daemon's (``Daemon.info``), in mode "virtual"."""
        return {"policy": self.policy_name, "era": self.spec.era, "record_bytes": str(self.spec.record_bytes),
                "config": self.settings.name, "mode": MODE}

    def _start_exporter(self, arena: Arena) -> None:
        """Serve ``arena``'s metrics at ``listen``.  This process runs every virtual CPU: it
        stands in the first slot, so the worker families report its CPU time once."""
        # imported here: only runs that serve metrics pay for it (as in the daemon)
        from pcpd.exporter import start_exporter

        arena.cpuctl[0, C_PID] = os.getpid()
        self.exporter = start_exporter(arena, self.listen, self.info(), self.settings.exporter.per_cpu,
                                       cpus=self.cpus, virtual_time=lambda: self._virtual_seconds)
        log.info("%s: metrics on http://%s/metrics", self.policy_name, self.exporter.address)

    def _stop_exporter(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None

    def _run(self, arena: Arena, progress: Callable[[int, int], None] | None,
             began: float) -> SimulationResult:
        settings, cpus = self.settings, self.cpus
        potential = potential_of(self.costs)
        self.lock_clock = lock_clock = ZoneLockClock(self.costs, potential, line_counter())
        locks = SharedLocks.local()
        assignment = assign_workloads(settings, cpus)
        slot_of = {cpu: slot for slot, cpu in enumerate(cpus)}
        self.vcpus = vcpus = [VirtualCpu(slot, cpu, arena, self.spec, locks, lock_clock, assignment[cpu],
                                         settings.seed, cpus, slot_of) for slot, cpu in enumerate(cpus)]
        decay_ps = round(settings.pcp.decay_interval * PS_PER_SECOND)
        for vcpu in vcpus:
            vcpu.next_decay = decay_ps
        self._pcp_total = self._high_total = 0
        self._pcp_area = self._high_area = 0                 # page-picoseconds
        self._pcp_peak = 0
        self._last_sample = 0
        self.tuning = TuningSeries(cpus, TUNING_INTERVAL)
        self._gauges = Snapshot(np.zeros((len(cpus), NR_STATS), dtype=np.int64), np.zeros(NR_STATS, dtype=np.int64))
        self._arena = arena
        self._next_fold = 0
        if self.listen:
            self._start_exporter(arena)
        total = self.ops_per_cpu * len(vcpus)
        if progress is not None:
            progress(0, total)
        self._loop(potential, decay_ps, progress)
        end = max(v.finished_at for v in vcpus)
        seconds = end / PS_PER_SECOND
        self._sample_until(end)
        self._fold(end)                                    # the counters are final
        snapshot = read_snapshot(arena)
        if progress is not None:
            progress(total, total)
        self._stop_exporter()                              # before the exit drains change the zone
        self.tuning.sample(seconds, snapshot)              # the state the run ended in, as the daemon's
        lock = lock_clock.figures(seconds)
        end_ps = max(self._last_sample, 1)
        pcp_pages_mean, pcp_high_mean = self._pcp_area / end_ps, self._high_area / end_ps
        ok, summary = self._exit(arena)
        return SimulationResult(
            policy=self.policy_name, era=self.spec.era, cpus=cpus, ops_per_cpu=self.ops_per_cpu,
            limits=self.spec.limits(), snapshot=snapshot, seconds=seconds,
            finish_seconds=tuple(v.finished_at / PS_PER_SECOND for v in vcpus), lock=lock,
            tuning=self.tuning, audit_ok=ok, audit_summary=summary, ring_slots=self.ring_slots,
            pcp_pages_mean=pcp_pages_mean, pcp_pages_peak=self._pcp_peak, pcp_high_mean=pcp_high_mean,
            wall_seconds=time.perf_counter() - began)

    # -- the discrete-event loop ----------------------------------------------------
    def _loop(self, potential: Callable[[Sequence[int]], int], decay_ps: int,
              progress: Callable[[int, int], None] | None) -> None:
        vcpus, lock_clock, max_ops = self.vcpus, self.lock_clock, self.ops_per_cpu
        heap = [(0, slot) for slot in range(len(vcpus))]       # (clock in ps, slot): sorted, a heap
        heapreplace, heappop = heapq.heapreplace, heapq.heappop
        total, done, check_mask = max_ops * len(vcpus), 0, CHECK_EVERY - 1
        steps = [(v, v.workload.step, v.policy, v.clock) for v in vcpus]
        next_tuning = round(self.tuning.next * PS_PER_SECOND)
        while heap:
            now, slot = heap[0]
            if now >= next_tuning:                       # every CPU as of now: before this step
                self._sample_tuning(now)
                next_tuning = round(self.tuning.next * PS_PER_SECOND)
            vcpu, step, policy, clock = steps[slot]
            lock_clock.floor = clock.now = now
            step(policy)
            vcpu.ops += 1
            if vcpu.ops % CHUNK == 0:
                self._housekeeping(vcpu, now, decay_ps)
            p = potential(clock.v)
            clock.now += p - clock.mark
            clock.mark = p
            if vcpu.ops >= max_ops:
                vcpu.finished_at = clock.now
                heappop(heap)
            else:
                heapreplace(heap, (clock.now, slot))
            done += 1
            if not done & check_mask and heap:
                self._checkpoint(heap[0][0], done, total, progress)

    def _checkpoint(self, now: int, done: int, total: int,
                    progress: Callable[[int, int], None] | None) -> None:
        """Every CHECK_EVERY steps: fold the counters for the exporter once FOLD_NS of
        wall-clock time has passed since the last fold, and report progress now and then."""
        if self.exporter is not None and time.monotonic_ns() >= self._next_fold:
            self._fold(now)
        if progress is not None and done % REPORT_EVERY == 0:
            progress(done, total)

    def _fold(self, now: int) -> None:
        """Every CPU's counters into its stats block (``VirtualCpu.fold``), as of virtual time
        ``now`` (ps): every step that starts before it has run."""
        began, stats = time.monotonic_ns(), self._arena.stats
        for vcpu in self.vcpus:
            vcpu.fold(stats[vcpu.slot])
        self._virtual_seconds = now / PS_PER_SECOND
        done = time.monotonic_ns()
        self._next_fold = done + max(FOLD_NS, FOLD_SPACING * (done - began))

    def _housekeeping(self, vcpu: VirtualCpu, now: int, decay_ps: int) -> None:
        """What a worker does between chunks (``Worker.run``), then a PCP sample."""
        if vcpu.inbox.pending():
            vcpu.receive()
        vcpu.check_watermark()
        if vcpu.clock.now >= vcpu.next_decay:              # decay_pcp_high(), every decay_interval
            vcpu.next_decay = vcpu.clock.now + decay_ps
            vcpu.policy.decay()
        self._sample(vcpu, now)

    def _sample_until(self, now: int) -> None:
        """Account the totals as they stand up to ``now`` (ps; never earlier than the last)."""
        if now > self._last_sample:
            span = now - self._last_sample
            self._pcp_area += self._pcp_total * span
            self._high_area += self._high_total * span
            self._last_sample = now

    def _sample(self, vcpu: VirtualCpu, now: int) -> None:
        """This CPU's PCP pages and high as of ``now``, into the time-weighted totals.

        Steps run in start-time order, so ``now`` never goes back; each CPU's
        figure is as of its last sample (every CHUNK of its operations).
        """
        self._sample_until(now)
        policy = vcpu.policy
        pages, high = policy.pcp_pages(), sum(p.high for p in policy.pcps)
        self._pcp_total += pages - vcpu.pcp_pages
        self._high_total += high - vcpu.pcp_high
        vcpu.pcp_pages, vcpu.pcp_high = pages, high
        self._pcp_peak = max(self._pcp_peak, self._pcp_total)

    def _sample_tuning(self, now: int) -> None:
        """Every CPU's PCP tuning as of ``now`` (ps) into the series: the gauges a worker's fold
        publishes (``Policy.publish_gauges``, free on the virtual clock), read as the daemon reads
        them (``TuningSeries.sample``).  A CPU's PCPs change only in its own steps, and every step
        before ``now`` has run."""
        per_cpu = self._gauges.per_cpu
        for vcpu in self.vcpus:
            vcpu.policy.publish_gauges()
            per_cpu[vcpu.slot, _TUNING_COLUMNS] = [vcpu.v[i] for i in _TUNING_COLUMNS]
        self.tuning.sample(now / PS_PER_SECOND, self._gauges)

    # -- the end ----------------------------------------------------------------------
    def _exit(self, arena: Arena) -> tuple[bool, str]:
        """Worker.stop for every CPU: free what is held, take the inbox, drain; then audit."""
        for vcpu in self.vcpus:
            vcpu.workload.release_all(vcpu.policy)
        for vcpu in self.vcpus:
            vcpu.receive()
            vcpu.alloc.release()
        result = audit(arena)
        drained = all(v.policy.pcp_pages() == 0 for v in self.vcpus)
        back = result.pages("buddy") == arena.pages
        ok = result.ok and drained and back
        summary = result.summary() if ok else "; ".join(
            [result.summary(), *result.describe_problems(4)]
            + ([] if drained else ["a PCP was not drained"])
            + ([] if back else [f"{result.pages('buddy')} of {arena.pages} pages back in the buddy"]))
        return ok, summary


def simulate(settings: Settings, policy: str | None = None, ops: int | None = None,
             progress: Callable[[int, int], None] | None = None, listen: str = "") -> SimulationResult:
    """One virtual-time run of ``settings`` (its ``cpus`` are the virtual CPUs) under ``policy``."""
    return Simulation(settings, policy, ops, listen).run(progress)
