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

import logging
import logging.handlers
import os
import signal
import time
from dataclasses import dataclass

import psutil

from pcpd import arena as A
from pcpd import rings
from pcpd import stats as S
from pcpd.config import WorkloadSettings
from pcpd.zone import Z_WMARK_LOW
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks
from workers.workloads import BACKOFF_FRACTION, Workload

STATE_STARTING, STATE_RUNNING, STATE_PAUSED, STATE_STOPPING, STATE_EXITED = range(1, 6)
STATE_NAMES = {0: "none", 1: "starting", 2: "running", 3: "paused", 4: "stopping", 5: "exited"}
CHUNK = 256                      # operations between cheap checks
FOLD_NS = 100_000_000            # housekeeping (and stats fold) every 100 ms
PARK_SLEEP = 0.002

_LOW_WMARK_EVENTS = S.ALLOC_FAIL["watermark"]


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


def worker_main(arena_name: str, plan: WorkerPlan, locks: SharedLocks, log_queue) -> None:
    """Process entry point (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the daemon handles ^C for the group
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _log_to(log_queue, plan)
    log = logging.getLogger("pcpd.worker")
    if plan.pin:
        psutil.Process().cpu_affinity([plan.cpu])
    arena = A.Arena.attach(arena_name)
    try:
        Worker(arena, plan, locks).run()
    except Exception:
        log.exception("worker failed")
        raise
    finally:
        arena.close()


def _log_to(log_queue, plan: WorkerPlan) -> None:
    root = logging.getLogger()
    root.handlers[:] = []
    if log_queue is not None:
        handler = logging.handlers.QueueHandler(log_queue)
        handler.addFilter(_WorkerTag(plan))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


class _WorkerTag(logging.Filter):
    def __init__(self, plan: WorkerPlan) -> None:
        super().__init__()
        self.tag = f"cpu{plan.cpu}"

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.tag
        return True


class Worker:
    """One CPU slot's allocator, workload and housekeeping."""

    def __init__(self, arena: A.Arena, plan: WorkerPlan, locks: SharedLocks) -> None:
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
        self.ppid = os.getppid()
        self.log = logging.getLogger("pcpd.worker")
        self.ops = 0

    def _send(self, pfn: int, order: int, t: int, dst: int) -> bool:
        if self.outbox.push(dst, rings.encode(pfn, t, order)):
            self.v[S.INDEX["free_remote_out"]] += 1
            return True
        return False

    # -- the loop -----------------------------------------------------------------
    def run(self) -> None:
        ctl, header = self.ctl, self.header
        ctl[A.C_PID] = os.getpid()
        ctl[A.C_CPU] = self.plan.cpu
        ctl[A.C_STOP] = 0
        ctl[A.C_DRAIN_ACK] = header[A.H_DRAIN_SEQ]
        ctl[A.C_STATE] = STATE_RUNNING
        self.log.info("started: policy %s, workload %s, seed %d", self.plan.spec.policy,
                      self.plan.workload.name, self.plan.seed)
        step, policy = self.workload.step, self.policy
        rate = self.plan.workload.rate
        start = time.monotonic()
        next_fold = time.monotonic_ns()
        next_decay = next_fold + int(self.plan.decay_interval * 1e9)
        while not (header[A.H_SHUTDOWN] or ctl[A.C_STOP]):
            for _ in range(CHUNK):
                step(policy)
            self.ops += CHUNK
            if self.inbox.pending():
                self.receive()
            now = time.monotonic_ns()
            if now >= next_fold:
                next_fold = now + FOLD_NS
                if now >= next_decay:
                    next_decay = now + int(self.plan.decay_interval * 1e9)
                    policy.decay()
                if not self.housekeeping():
                    return                          # the daemon is gone: leave at once
            if rate:                                # open loop: hold the schedule
                ahead = self.ops / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        self.stop()

    def receive(self) -> None:
        """Free what other CPUs handed over: onto this CPU's PCP, as the kernel does."""
        policy = self.policy
        n = 0
        for entry in self.inbox.take():
            pfn, t, order = rings.decode(entry)
            policy.receive(pfn, order, t)
            policy.free(pfn, order, t)
            n += 1
        self.v[S.INDEX["free_remote_in"]] += n

    def housekeeping(self) -> bool:
        """Fold stats, heartbeat, drains, pauses; False when the daemon has died."""
        if os.getppid() != self.ppid:
            return False
        ctl, header, v = self.ctl, self.header, self.v
        if header[A.H_DRAIN_SEQ] != ctl[A.C_DRAIN_ACK]:     # drain_all_pages()
            ctl[A.C_DRAIN_ACK] = header[A.H_DRAIN_SEQ]
            self.policy.drain_all("drain_all")
            v[S.INDEX["drain_all_requests_seen"]] += 1
        zone = self.cpu.zone
        if zone.free_pages < zone.watermark(Z_WMARK_LOW):   # short of memory: back off
            v[_LOW_WMARK_EVENTS] += 1
            self.workload.drain_wanted = True
            self.workload.free_some(self.policy, 1 / BACKOFF_FRACTION)
        if self.workload.drain_wanted:
            self.workload.drain_wanted = False
            ctl[A.C_DRAIN_REQ] += 1
        self.fold()
        pause = int(header[A.H_PAUSE_REQ])
        if pause and pause != ctl[A.C_PAUSE_ACK]:
            self.park(pause)
        return True

    def fold(self) -> None:
        v = self.v
        self.policy.publish_gauges()
        v[S.INDEX["held_pages"]] = self.workload.held_pages
        v[S.INDEX["pressure_waves"]] = self.workload.waves
        now = time.monotonic_ns()
        v[S.INDEX["heartbeat_ns"]] = now
        self.cpu.counters.fold(self.block)
        self.ctl[A.C_HEARTBEAT] = now

    def park(self, pause: int) -> None:
        """Hold still between operations while the daemon audits or recovers."""
        ctl, header = self.ctl, self.header
        ctl[A.C_STATE] = STATE_PAUSED
        ctl[A.C_PAUSE_ACK] = pause
        while header[A.H_PAUSE_REQ] == pause and not header[A.H_SHUTDOWN]:
            if os.getppid() != self.ppid:
                break
            ctl[A.C_HEARTBEAT] = time.monotonic_ns()
            time.sleep(PARK_SLEEP)
        ctl[A.C_STATE] = STATE_RUNNING

    def stop(self) -> None:
        """Free what is held, wait for the others (shutdown), drain, exit."""
        ctl, header = self.ctl, self.header
        self.workload.release_all(self.policy)
        ctl[A.C_STATE] = STATE_STOPPING
        self.fold()
        if header[A.H_SHUTDOWN]:
            while header[A.H_SHUTDOWN] == 1 and os.getppid() == self.ppid:
                ctl[A.C_HEARTBEAT] = time.monotonic_ns()
                pause = int(header[A.H_PAUSE_REQ])
                if pause and pause != ctl[A.C_PAUSE_ACK]:
                    self.park(pause)
                time.sleep(PARK_SLEEP)
        self.receive()
        pages = self.cpu.release()
        self.fold()
        ctl[A.C_STATE] = STATE_EXITED
        self.log.info("stopped after %d ops; drained %d pages", self.ops, pages)
