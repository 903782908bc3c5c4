"""The daemon of ``pcpd run``: owns the arena and supervises one worker per CPU.

The daemon creates the arena and zone, spawns a pinned worker per CPU, and
then only watches: worker liveness (exit codes, heartbeats), drain requests
(``drains``), periodic conservation audits (workers parked between
operations, ``parking``, while the page array is checked, ``audit``), status
lines (``console``), signals (``signals``).  ``Daemon.run()`` returns a
``RunReport`` (``report``) and prints nothing but the status lines.

Signals: SIGINT/SIGTERM stop the run (workers free what they hold and drain
every PCP; the final audit must find every page back in the buddy); SIGHUP
reloads the config file (``reload``), replacing workers one at a time so no
page is lost, or logs why the new file was rejected and keeps the old one
running.

A worker that dies is reaped within a tick (100 ms): the daemon takes over
zone->lock if the dead process held it, rebuilds the free lists from the page
array, parks the other workers, returns every page the dead slot owned (and
any page a half-finished operation orphaned) to the buddy (``recovery``),
audits, and starts a replacement.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcpd.config.rules import assign_workloads, available_cpu_set, worker_cpus
from pcpd.config.settings import Settings
from pcpd.daemon import audit, recovery
from pcpd.daemon.console import StatusLine
from pcpd.daemon.drains import DrainRequests
from pcpd.daemon.faults import FaultInjector
from pcpd.daemon.helpers import restart_helpers, start_helpers
from pcpd.daemon.parking import PAUSE_TIMEOUT, Parked
from pcpd.daemon.reload import load_reload, stop_for_reload
from pcpd.daemon.report import RunReport
from pcpd.daemon.signals import RunSignals
from pcpd.daemon.slots import Slot, WorkerSlots, exit_status
from pcpd.errors import ConfigError, WorkerLost
from pcpd.model import stats
from pcpd.model.arena import (
    C_RESTARTS,
    H_DAEMON_HEARTBEAT,
    H_LOCK_HOLDER_PID,
    H_RESTARTS,
    H_SHUTDOWN,
    H_SLAB_HOLDER_PID,
    Arena,
    remove_stale,
)
from pcpd.model.lock import ZoneLock
from pcpd.model.tuning import TuningSeries
from pcpd.model.zone import Zone
from pcpd.model.zonewords import Z_FREE_PAGES
from pcpd.sdnotify import Notifier
from pcpd.spec import ModelSpec
from workers.cpu import SharedLocks, create_arena
from workers.worker import STATE_DONE, STATE_EXITED, STATE_STOPPING, WorkerPlan

if TYPE_CHECKING:
    from pcpd.exporter import MetricsServer

TICK = 0.1
STOP_TIMEOUT = 60.0

log = logging.getLogger("pcpd.daemon")


@dataclass
class RunOptions:
    """What ``pcpd run`` adds to the config: overrides and supervision intervals."""

    config_path: str | None = None
    duration: float | None = None
    policy: str | None = None
    listen: str | None = None
    status_interval: float = 5.0
    audit_interval: float = 10.0
    pin: bool = True
    ops: int = 0                 # bound each worker to this many operations (deterministic)
    kill_interval: float = 0.0   # soak with faults: SIGKILL a worker this often (every other
                                 # one while it holds zone->lock)
    warmup: float = 0.0          # seconds before the measurement window opens
    quiet: bool = False          # no status lines (experiments)


class Every:
    """A periodic duty of the main loop, due an interval after it last ran."""

    def __init__(self, interval: float, start: float) -> None:
        self.interval = interval
        self.next = start + interval

    def due(self, now: float) -> bool:
        if now < self.next:
            return False
        self.next = now + self.interval
        return True


class Heartbeat:
    """The daemon's pulse in the header, from a thread: the main loop may block
    (a reload joins workers, a recovery parks them) without workers deciding
    the daemon died."""

    def __init__(self, arena: Arena, interval: float = 0.25) -> None:
        self.header = arena.header
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.done.is_set():
            self.header[H_DAEMON_HEARTBEAT] = time.monotonic_ns()
            self.done.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


class Daemon:
    """Owns the arena, the workers, the exporter and the signals of one run."""

    # set by run(), which every other method runs under
    arena: Arena
    locks: SharedLocks
    signals: RunSignals
    drains: DrainRequests
    workers: WorkerSlots
    status: StatusLine

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.options = options
        self.cpus = worker_cpus(settings)
        missing = sorted(set(self.cpus) - available_cpu_set(None)) if options.pin else []
        if missing:     # a pinned worker could never start there: it would be restarted forever
            raise ConfigError(settings.source, "cpus", f"CPU(s) {', '.join(map(str, missing))} not available "
                              "to this process (settings made for another machine?)")
        self.report = RunReport(workers=len(self.cpus))
        self._configure(settings, options.policy or settings.policy.name)
        # forkserver: workers start in milliseconds from a process that never had
        # threads, with the model modules already imported
        self.ctx = multiprocessing.get_context("forkserver")
        self.slots = [Slot(i, cpu) for i, cpu in enumerate(self.cpus)]
        self.counters = stats.Counters()          # the daemon's own buddy work (recovery)
        self.exporter: MetricsServer | None = None
        self.heartbeat: Heartbeat | None = None
        self.ready = False
        self.info_labels: dict[str, str] = {}
        self.notifier = Notifier()                # systemd's Type=notify; a no-op elsewhere

    def _configure(self, settings: Settings, policy: str) -> None:
        """Run ``settings`` under ``policy`` from now on (at start, and at each reload)."""
        self.settings, self.policy = settings, policy
        self.spec = ModelSpec.from_settings(settings, len(self.cpus), policy)
        self.report.name, self.report.policy, self.report.era = settings.name, policy, self.spec.era
        self.report.memdesc_high = settings.policy.memdesc_high

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> RunReport:
        """Run until the duration ends, every bounded worker is done, or SIGINT/SIGTERM.

        The signal handlers are this run's alone: the ones installed before
        are back when it returns.  Whatever happens, the workers are gone and
        the arena removed on return.
        """
        with contextlib.ExitStack() as stack:
            self.signals = stack.enter_context(RunSignals())
            self.locks = start_helpers(self.ctx)
            stack.callback(restart_helpers, self.locks, False)   # runs last: the locks' unregisters follow
            removed = remove_stale()
            if removed:
                log.info("removed %d stale segment(s) of dead pcpd runs: %s", len(removed), ", ".join(removed))
            self.arena = create_arena(self.spec)
            stack.callback(self._release_arena)
            self.drains = DrainRequests(self.arena, len(self.slots), watch_watermark=not self.options.ops)
            self._start_exporter(stack)
            self.workers = WorkerSlots(self.slots, self.ctx, self.arena, self.locks)
            stack.callback(self.workers.end)
            for slot in self.slots:
                self._spawn(slot)
            self.ready = True
            self.notifier.ready(f"{len(self.slots)} workers, policy {self.policy}")
            stack.callback(self.notifier.close)
            self.heartbeat = stack.enter_context(Heartbeat(self.arena))
            self._loop()
            self._stop()
        self.report.interrupted = self.signals.stop
        return self.report

    def _start_exporter(self, stack: contextlib.ExitStack) -> None:
        address = self.options.listen if self.options.listen is not None else self.settings.exporter.address
        if not address:
            return
        from pcpd.exporter import start_exporter  # only runs that serve metrics pay for it
        self.info_labels = self.info()                # updated in place by a reload
        self.exporter = start_exporter(self.arena, address, self.info_labels,
                                       self.settings.exporter.per_cpu,
                                       ready=lambda: self.ready, cpus=self.cpus)
        stack.callback(self.exporter.stop)
        log.info("metrics on http://%s/metrics", self.exporter.address)

    def info(self) -> dict[str, str]:
        return {"policy": self.policy, "era": self.spec.era,
                "record_bytes": str(self.spec.record_bytes), "config": self.settings.name, "mode": "real"}

    def _spawn(self, slot: Slot) -> None:
        plan = WorkerPlan(
            slot=slot.index, cpu=slot.cpu, spec=self.spec,
            workload=assign_workloads(self.settings)[slot.cpu], seed=self.settings.seed,
            workers=self.cpus, decay_interval=self.settings.pcp.decay_interval, pin=self.options.pin,
            max_ops=self.options.ops)
        self.workers.start(slot, plan)

    def _loop(self) -> None:
        opts = self.options
        start = time.monotonic()
        duration = opts.duration if opts.duration is not None else self.settings.duration
        audits, status = Every(opts.audit_interval, start), Every(opts.status_interval, start)
        self.status = StatusLine(start)
        window = self.report.measurement
        window.opened = start
        self._open_window(start, start)
        chaos = (FaultInjector(self.arena, self.slots, opts.kill_interval, self.settings.seed)
                 if opts.kill_interval else None)
        self.report.note_memory()
        tuning = self.report.tuning = TuningSeries(self.cpus)
        while not self.signals.stop:
            time.sleep(TICK)
            now = time.monotonic()
            self._supervise(now, chaos)
            self.notifier.watchdog(now)
            self._open_window(now, start)
            if tuning.due(now - start):
                tuning.sample(now - start, self.snapshot())
            if audits.due(now):
                self.audit_now()
            if status.due(now):
                self._show_status(now)
            if self._finished(now - start, duration):
                break
        window.end = self.snapshot()
        window.seconds = time.monotonic() - window.opened
        self.report.seconds = time.monotonic() - start
        tuning.sample(self.report.seconds, window.end)      # the state the run ended in

    def _open_window(self, now: float, start: float) -> None:
        """Open the measured window once the warm-up is over (at the start without one)."""
        window = self.report.measurement
        if window.start is None and now - start >= self.options.warmup:
            window.start, window.opened = self.snapshot(), now

    def _finished(self, elapsed: float, duration: float) -> bool:
        """The run's length is up: its duration (0: none), or every bounded worker done."""
        if duration and elapsed >= duration:
            return True
        return bool(self.options.ops) and all(state == STATE_DONE for state in self.workers.states())

    def _supervise(self, now: float, chaos: FaultInjector | None) -> None:
        """One tick's watching: dead and silent workers, faults, drain requests, a reload."""
        self.workers.kill_silent()
        dead = self.workers.dead()
        if dead:
            self._replace(dead)
        if chaos is not None:
            chaos.tick(now, self.report)
        self.drains.serve()
        if self.signals.take_reload():
            self._reload()

    def _show_status(self, now: float) -> None:
        self.report.note_memory()
        if self.options.quiet and not self.notifier.enabled:
            return
        line = self.status.render(now, self.snapshot(), int(self.arena.zone[Z_FREE_PAGES]), self.report)
        self.notifier.status(line)
        if not self.options.quiet:
            print(line, flush=True)

    def snapshot(self) -> stats.Snapshot:
        return stats.read_snapshot(self.arena)

    # -- supervision ----------------------------------------------------------------
    def _replace(self, dead: list[Slot], respawn: bool = True) -> None:
        """Recover dead workers' pages and, unless stopping, start their replacements."""
        for slot in dead:
            status = exit_status(slot.process) if slot.process is not None else "exited"
            log.warning("cpu%d: worker pid %d died (%s); recovering its pages", slot.cpu, slot.pid, status)
        reclaimed = self.recover(dead, replaced=respawn)      # may add workers that died meanwhile
        for slot in dead:
            log.warning("cpu%d: recovered %s", slot.cpu, reclaimed[slot.index])
            if respawn:
                slot.restarts += 1
                self.report.restarts += 1
                self.arena.cpuctl[slot.index, C_RESTARTS] = slot.restarts
                self.arena.header[H_RESTARTS] += 1
                self._spawn(slot)

    def recover(self, dead: list[Slot], replaced: bool = True) -> dict[int, recovery.Reclaimed]:
        """Take over locks the dead held, park the living, reclaim the dead slots' pages.

        Pages queued for a dead slot wait for its replacement; with none coming
        (``replaced`` False, at stop) they are reclaimed too.  A worker that
        dies while the others are being parked joins ``dead``.
        """
        arena = self.arena
        while True:
            pids = {slot.pid for slot in dead}
            recovery.take_over(arena, self.locks.zone, H_LOCK_HOLDER_PID, pids, "zone->lock",
                               rebuild_zone_lists=True)
            recovery.take_over(arena, self.locks.slab, H_SLAB_HOLDER_PID, pids, "the slab lock")
            with self.parked(expect_dead=dead) as parked:
                if parked.died:
                    dead += parked.died
                    continue
                if not parked.ok:
                    raise WorkerLost("workers did not park for recovery; the zone cannot be repaired safely")
                zone = Zone(arena, ZoneLock(self.locks.zone, arena, self.counters, cpu=-1),
                            self.counters)
                self.locks.slab.acquire()
                try:
                    with zone.lock:
                        out = {slot.index: recovery.reclaim_slot(arena, zone, slot.index, keep_inbox=replaced)
                               for slot in dead}
                finally:
                    self.locks.slab.release()
                for slot in dead:
                    self.workers.retire(slot)
                self._audit_parked()
                return out

    def parked(self, expect_dead: Sequence[Slot] = ()) -> Parked:
        return Parked(self.arena, self.slots, expect_dead)

    # -- audits --------------------------------------------------------------------
    def audit_now(self) -> audit.AuditResult | None:
        """A periodic audit, with every worker parked; skipped if one died meanwhile."""
        with self.parked() as parked:
            if parked.died:
                return None                           # its recovery comes first, next tick
            if not parked.ok:
                log.warning("audit skipped: workers did not park within %.0f s", PAUSE_TIMEOUT)
                return None
            return self._audit_parked()

    def _audit_parked(self) -> audit.AuditResult:
        result = audit.audit(self.arena)
        audit.publish(self.arena, result)
        self.report.audits += 1
        if not result.ok:
            self.report.audit_failures += 1
        return result

    # -- reload --------------------------------------------------------------------
    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            self._apply_reload()
        finally:
            self.notifier.ready()                 # a rejected file leaves the old config running

    def _apply_reload(self) -> None:
        accepted = load_reload(self.options.config_path, self.settings, self.policy, self.options.policy)
        if accepted is None:
            return
        self._configure(accepted.settings, accepted.policy)
        self.info_labels.update(self.info())
        for slot in self.slots:
            # one at a time, each draining first: no page is lost, every CPU keeps a worker
            if stop_for_reload(self.workers, slot):
                self.workers.retire(slot)
                self._spawn(slot)
            else:
                self._replace([slot])
        log.info("reloaded %s: policy %s, %d workload(s)", self.options.config_path, self.policy,
                 len(accepted.settings.workloads))

    # -- stop ------------------------------------------------------------------------
    def _stop(self) -> None:
        """Workers free what they hold and drain every PCP; the final audit decides the exit."""
        log.info("stopping: workers free what they hold and drain their PCPs")
        self.notifier.stopping()
        deadline = time.monotonic() + STOP_TIMEOUT
        self._wait_until_stopping(deadline)
        self.arena.header[H_SHUTDOWN] = 2
        self._join_workers(deadline)
        self.report.conclude(self._audit_parked(), self.snapshot())

    def _wait_until_stopping(self, deadline: float) -> None:
        """Phase 1: every worker stops and frees what it holds, while all of them still
        take the pages others send them."""
        self.arena.header[H_SHUTDOWN] = 1
        while time.monotonic() < deadline:
            failed = self.workers.dead(failed_only=True)
            if failed:
                self._replace(failed, respawn=False)
            if all(state in (STATE_STOPPING, STATE_EXITED) for state in self.workers.states(live_only=True)):
                return
            time.sleep(0.01)

    def _join_workers(self, deadline: float) -> None:
        """Phase 2: workers take their last pages, drain and exit; the failed ones are recovered."""
        # phase 2 parks nobody: let every worker finish before recovering any
        live = [slot for slot in self.slots if slot.process is not None]
        clean = [self.workers.join(slot, max(deadline - time.monotonic(), 1.0)) for slot in live]
        for slot in [slot for slot, ok in zip(live, clean) if ok]:
            self.workers.retire(slot)
        failed = [slot for slot, ok in zip(live, clean) if not ok]
        if failed:
            self._replace(failed, respawn=False)

    def _release_arena(self) -> None:
        self.arena.unlink()
        self.heartbeat = self.exporter = None         # their views pin the mapping
        self.arena.close()
