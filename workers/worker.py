"""The per-CPU worker process: pin, attach, run the workload, fold statistics.

A worker owns one CPU slot of the arena.  Its loop runs ``CHUNK`` operations,
takes the pages other CPUs freed to it, and every ``FOLD_NS`` does its
housekeeping: publish counters into its stats block, heartbeat, honour drain
and pause requests, decay its PCP high, watch the low watermark, and notice a
dead daemon.  Nothing on the per-operation path touches shared statistics,
takes a lock other than zone->lock inside a refill or drain, or logs.

Stopping: the daemon sets H_SHUTDOWN to 1 (stop, free what you hold, here)
and, once every worker has stopped, to 2 (take what is still in your inbox,
drain every PCP, exit), so no page is sent to a worker that is gone.  A
single worker stops the same way when its C_STOP word is set (reload).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import time
from dataclasses import dataclass

import psutil

from pcpd.config.settings import WorkloadSettings
from pcpd.logs import configure_worker_logging
from pcpd.model import rings
from pcpd.model.arena import (
    C_CPU,
    C_DRAIN_ACK,
    C_DRAIN_REQ,
    C_HEARTBEAT,
    C_PAUSE_ACK,
    C_PID,
    C_STATE,
    C_STOP,
    H_CREATOR,
    H_DAEMON_HEARTBEAT,
    H_DRAIN_SEQ,
    H_PAUSE_REQ,
    H_SHUTDOWN,
    Arena,
)
from pcpd.model.stats import ALLOC_FAIL, INDEX
from pcpd.model.zonewords import Z_WMARK_LOW
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks
from workers.workloads import BACKOFF_FRACTION, Workload

# C_STATE values (0: not started yet)
STATE_RUNNING, STATE_PAUSED, STATE_STOPPING, STATE_EXITED, STATE_DONE = range(2, 7)
CHUNK = 256                      # operations between cheap checks
FOLD_NS = 100_000_000            # housekeeping (and stats fold) every 100 ms
VIRTUAL_OPS_PER_S = 100_000      # the op clock of deterministic runs
DAEMON_TIMEOUT_NS = 15_000_000_000   # a daemon silent this long is presumed dead
PARK_SLEEP = 0.002

_LOW_WMARK_EVENTS = ALLOC_FAIL["watermark"]


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, picklable for a spawned process."""

    slot: int
    cpu: int
    spec: ModelSpec
    workload: WorkloadSettings
    seed: int
    workers: tuple[int, ...]             # CPU numbers of every worker, by slot
    decay_interval: float = 1.0
    pin: bool = True
    max_ops: int = 0                     # stop after this many operations; 0 = until told

    @property
    def deterministic(self) -> bool:
        """Bounded by operations: every decision follows the op count, not the clock.

        Decay ticks come every ``decay_interval * VIRTUAL_OPS_PER_S`` operations
        and a worker's own drain requests drain its PCPs at once, so one worker
        with one seed repeats its counts exactly.
        """
        return self.max_ops > 0


def worker_main(arena_name: str, plan: WorkerPlan, locks: SharedLocks, log_conn) -> None:
    """Process entry point (multiprocessing target).

    SIGINT, SIGTERM and SIGHUP sent to the whole process group (a terminal's
    ^C, timeout(1), a service manager) are the daemon's to act on: it stops
    or reloads the workers through the arena.  SIGKILL still ends a worker.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1)           # the daemon asks a stuck worker where it is
    configure_worker_logging(log_conn, f"cpu{plan.cpu}")
    log = logging.getLogger("pcpd.worker")
    if plan.pin:
        psutil.Process().cpu_affinity([plan.cpu])
    arena = Arena.attach(arena_name)
    try:
        Worker(arena, plan, locks).run()
    except Exception:
        log.exception("worker failed")
        raise
    finally:
        arena.close()


class _DecayClock:
    """When decay_pcp_high() is due: every decay_interval seconds, or ops in bounded runs."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.by_ops = plan.deterministic
        self.every = (int(plan.decay_interval * VIRTUAL_OPS_PER_S) if self.by_ops
                      else int(plan.decay_interval * 1e9))
        self.next = self.every if self.by_ops else time.monotonic_ns() + self.every

    def due(self, ops: int) -> bool:
        now = ops if self.by_ops else time.monotonic_ns()
        if now < self.next:
            return False
        self.next = now + self.every
        return True


class Worker:
    """One CPU slot's allocator, workload and housekeeping."""

    def __init__(self, arena: Arena, plan: WorkerPlan, locks: SharedLocks) -> None:
        self.arena = arena
        self.plan = plan
        self.header = arena.header
        self.ctl = arena.cpuctl[plan.slot]
        self.block = arena.stats[plan.slot]
        self.cpu = CpuAllocator(arena, plan.spec, locks, plan.slot)
        self.policy = self.cpu.policy
        self.v = self.cpu.counters.v
        self.outbox = rings.Outbox(arena, plan.slot)
        self.inbox = rings.Inbox(arena, plan.slot)
        slot_of = {cpu: slot for slot, cpu in enumerate(plan.workers)}
        self.workload = Workload(plan.workload, plan.seed, plan.cpu, plan.workers, slot_of,
                                 self._send)
        try:
            self.daemon: psutil.Process | None = psutil.Process(int(self.header[H_CREATOR]))
        except psutil.NoSuchProcess:
            self.daemon = None                      # gone already: the first check leaves
        self.seen_daemon = time.monotonic_ns()
        self.log = logging.getLogger("pcpd.worker")
        self.ops = 0

    def _send(self, pfn: int, order: int, t: int, dst: int) -> bool:
        if self.outbox.push(dst, rings.encode(pfn, t, order)):
            self.v[INDEX["free_remote_out"]] += 1
            return True
        return False

    # -- the loop -----------------------------------------------------------------
    def run(self) -> None:
        ctl, header, plan = self.ctl, self.header, self.plan
        ctl[C_PID] = os.getpid()
        ctl[C_CPU] = plan.cpu
        ctl[C_STOP] = 0
        ctl[C_DRAIN_ACK] = header[H_DRAIN_SEQ]
        ctl[C_STATE] = STATE_RUNNING
        self.log.info("started: policy %s, workload %s, seed %d", plan.spec.policy,
                      plan.workload.name, plan.seed)
        step, policy = self.workload.step, self.policy
        rate = plan.workload.rate
        start = time.monotonic()
        next_fold = time.monotonic_ns()
        decay = _DecayClock(plan)
        while not (header[H_SHUTDOWN] or ctl[C_STOP]):
            for _ in range(CHUNK):
                step(policy)
            self.ops += CHUNK
            if self.inbox.pending():
                self.receive()
            self.check_watermark()
            if decay.due(self.ops):
                policy.decay()
            now = time.monotonic_ns()
            if now >= next_fold:
                next_fold = now + FOLD_NS
                if not self.housekeeping():
                    return                          # the daemon is gone: leave at once
            if plan.max_ops and self.ops >= plan.max_ops:
                self.park_until_stop()
                break
            if rate and not self.pace(rate, start):
                return
        self.stop()

    def pace(self, rate: float, start: float) -> bool:
        """Open loop: hold the schedule, in slices short enough to keep housekeeping
        (heartbeat, pauses) on time however low the rate; False if the daemon died."""
        while not (self.header[H_SHUTDOWN] or self.ctl[C_STOP]):
            ahead = self.ops / rate - (time.monotonic() - start)
            if ahead <= 0:
                break
            time.sleep(min(ahead, FOLD_NS / 1e9))
            if not self.housekeeping():
                return False
        return True

    def check_watermark(self) -> None:
        """Short of memory (below the low watermark): back off as reclaim would."""
        zone = self.cpu.zone
        if zone.free_pages < zone.watermark(Z_WMARK_LOW):
            self.v[_LOW_WMARK_EVENTS] += 1
            self.workload.drain_wanted = True
            self.workload.free_some(self.policy, 1 / BACKOFF_FRACTION)
        if self.workload.drain_wanted:
            self.workload.drain_wanted = False
            if self.plan.deterministic:             # no waiting on the daemon's timing
                self.policy.drain_all("drain_all")
            else:
                self.ctl[C_DRAIN_REQ] += 1

    def park_until_stop(self) -> None:
        """A bounded run is done: publish, then wait (parkable) for the daemon's stop."""
        header, ctl = self.header, self.ctl
        self.fold()
        ctl[C_STATE] = STATE_DONE
        while not (header[H_SHUTDOWN] or ctl[C_STOP]):
            if not self.housekeeping():
                return
            time.sleep(PARK_SLEEP * 5)

    def receive(self) -> None:
        """Free what other CPUs handed over: onto this CPU's PCP, as the kernel does."""
        policy = self.policy
        taken = self.inbox.take(lambda pfn, t, order: policy.receive(pfn, order, t))
        for pfn, t, order in taken:
            policy.free(pfn, order, t)
        self.v[INDEX["free_remote_in"]] += len(taken)

    def housekeeping(self) -> bool:
        """Fold stats, heartbeat, drains, pauses; False when the daemon has died."""
        if not self.daemon_alive():
            self.log.error("the daemon is gone; exiting")
            return False
        ctl, header = self.ctl, self.header
        if header[H_DRAIN_SEQ] != ctl[C_DRAIN_ACK]:     # drain_all_pages()
            ctl[C_DRAIN_ACK] = header[H_DRAIN_SEQ]
            self.policy.drain_all("drain_all")
            self.v[INDEX["drain_all_requests_seen"]] += 1
        self.fold()
        pause = int(header[H_PAUSE_REQ])
        if pause and pause != ctl[C_PAUSE_ACK]:
            self.park(pause)
        return True

    def daemon_alive(self) -> bool:
        """The daemon process exists and its heartbeat thread still beats.

        Either sign is enough to leave: the daemon's pid gone (or a zombie),
        or its heartbeat silent for DAEMON_TIMEOUT_NS.
        """
        try:
            if self.daemon is None or not self.daemon.is_running() \
                    or self.daemon.status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
        beat = int(self.header[H_DAEMON_HEARTBEAT])
        now = time.monotonic_ns()
        if beat > self.seen_daemon:
            self.seen_daemon = beat
        return now - self.seen_daemon < DAEMON_TIMEOUT_NS

    def fold(self) -> None:
        v = self.v
        self.policy.publish_gauges()
        v[INDEX["held_pages"]] = self.workload.held_pages
        v[INDEX["inflight_pages"]] = self.outbox.queued_pages()
        v[INDEX["pressure_waves"]] = self.workload.waves
        now = time.monotonic_ns()
        v[INDEX["heartbeat_ns"]] = now
        self.cpu.counters.fold(self.block)
        self.ctl[C_HEARTBEAT] = now

    def park(self, pause: int) -> None:
        """Hold still between operations while the daemon audits or recovers."""
        ctl, header = self.ctl, self.header
        was = int(ctl[C_STATE])
        ctl[C_STATE] = STATE_PAUSED
        ctl[C_PAUSE_ACK] = pause
        while header[H_PAUSE_REQ] == pause:
            if not self.daemon_alive():
                break
            ctl[C_HEARTBEAT] = time.monotonic_ns()
            time.sleep(PARK_SLEEP)
        ctl[C_STATE] = was

    def stop(self) -> None:
        """Free what is held, wait for the others (shutdown), drain, exit."""
        ctl, header = self.ctl, self.header
        self.workload.release_all(self.policy)
        ctl[C_STATE] = STATE_STOPPING
        self.fold()
        if header[H_SHUTDOWN]:
            while header[H_SHUTDOWN] == 1 and self.daemon_alive():
                ctl[C_HEARTBEAT] = time.monotonic_ns()
                pause = int(header[H_PAUSE_REQ])
                if pause and pause != ctl[C_PAUSE_ACK]:
                    self.park(pause)
                time.sleep(PARK_SLEEP)
        self.receive()
        pages = self.cpu.release()
        self.fold()
        ctl[C_STATE] = STATE_EXITED
        self.log.info("stopped after %d ops; drained %d pages", self.ops, pages)
