"""``pcpd run``: the daemon that owns the arena and supervises one worker per CPU.

The daemon creates the arena and zone, spawns a pinned worker per CPU, and
then only watches: worker liveness (exit codes, heartbeats), drain requests,
the low watermark, periodic conservation audits (workers parked between
operations while the page array is checked), status lines, signals.

Signals: SIGINT/SIGTERM stop the run (workers free what they hold and drain
every PCP; the final audit must find every page back in the buddy); SIGHUP
reloads the config file, replacing workers one at a time so no page is lost,
or logs why the new file was rejected and keeps the old one running.

A worker that dies is reaped within a tick (100 ms): the daemon takes over
zone->lock if the dead process held it, rebuilds the free lists from the page
array, parks the other workers, returns every page the dead slot owned (and
any page a half-finished operation orphaned) to the buddy, audits, and
starts a replacement.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import psutil

from pcpd import argtypes
from pcpd.config.settings import DEFAULT_SETTINGS, Settings, assign_workloads, load_settings, worker_cpus
from pcpd.daemon import audit as AU
from pcpd.daemon import recovery
from pcpd.daemon.faults import FaultInjector
from pcpd.errors import ConfigError, WorkerLost
from pcpd.logs import LogReader, configure_daemon_logging
from pcpd.model import arena as A
from pcpd.model import stats as S
from pcpd.model.lock import OP_NAMES, ZoneLock
from pcpd.model.zone import Z_FREE_PAGES, Z_WMARK_LOW, Zone
from workers.cpu import MEMDESC_POLICIES, ModelSpec, SharedLocks, create_arena
from workers.policies import POLICIES
from workers.worker import STATE_DONE, STATE_EXITED, STATE_STOPPING, WorkerPlan, worker_main

TICK = 0.1
HEARTBEAT_TIMEOUT_NS = 5_000_000_000   # a worker silent this long is killed and replaced
PAUSE_TIMEOUT = 10.0
STOP_TIMEOUT = 60.0
DRAIN_MIN_INTERVAL_NS = 1_000_000_000
LOCK_TAKEOVER_TIMEOUT = 5.0            # unrecorded holder: a live one never holds it this long

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


@dataclass
class Measurement:
    """Counters at the start and end of the measured window of a run."""

    start: S.Snapshot | None = None
    end: S.Snapshot | None = None
    seconds: float = 0.0


@dataclass
class Slot:
    """A worker slot: its CPU, the current process and the reader of its log pipe."""

    index: int
    cpu: int
    process: multiprocessing.process.BaseProcess | None = None
    handle: psutil.Process | None = None          # knows the process's start time: no pid reuse
    log_reader: LogReader | None = None
    restarts: int = 0
    started_ns: int = 0


@dataclass
class Summary:
    seconds: float = 0.0
    ops: int = 0
    restarts: int = 0
    audits: int = 0
    audit_failures: int = 0
    kills: int = 0
    kills_holding_lock: int = 0
    private_start: int = 0       # daemon RSS less resident shared pages (the arena)
    private_peak: int = 0
    private_end: int = 0
    final_audit: str = ""
    pages_lost: int = 0
    totals: dict = field(default_factory=dict)


class Daemon:
    """Owns the arena, the workers, the exporter and the signals of one run."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.settings = settings
        self.options = options
        self.policy = options.policy or settings.policy.name
        self.cpus = worker_cpus(settings)
        self.spec = ModelSpec.from_settings(settings, len(self.cpus), self.policy)
        # forkserver: workers start in milliseconds from a process that never had
        # threads, with the model modules already imported
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["workers.worker"])
        with _group_signals_ignored():
            # the forkserver and the resource tracker start here and keep ignoring
            # the group's SIGINT/SIGTERM/SIGHUP (as do workers they fork): those
            # signals are the daemon's to act on
            self.locks = SharedLocks(self.ctx.Lock(), self.ctx.Lock())
            multiprocessing.forkserver.ensure_running()
        self.arena: A.Arena | None = None
        self.slots = [Slot(i, cpu) for i, cpu in enumerate(self.cpus)]
        self.counters = S.Counters()          # the daemon's own buddy work (recovery)
        self.stop_requested = False
        self.reload_requested = False
        self.summary = Summary()
        self.exporter = None
        self.ready = False
        self._drain_reqs = [0] * len(self.cpus)
        self._last_drain_ns = 0
        self._last_status: tuple[float, S.Snapshot | None] = (0.0, None)
        self.measurement = Measurement()
        self.info_labels: dict[str, str] = {}
        self._heartbeat: _Heartbeat | None = None

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        removed = A.remove_stale()
        if removed:
            log.info("removed %d stale segment(s) of dead pcpd runs: %s", len(removed), ", ".join(removed))
        self.arena = create_arena(self.spec)
        try:
            self._start_exporter()
            for slot in self.slots:
                self._spawn(slot)
            self.ready = True
            self._heartbeat = _Heartbeat(self.arena)
            self._loop()
            return self._stop()
        finally:
            self._teardown()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def _on_reload(self, signum, frame) -> None:
        self.reload_requested = True

    def _start_exporter(self) -> None:
        address = self.options.listen if self.options.listen is not None else self.settings.exporter.address
        if not address:
            return
        from pcpd.exporter import start_exporter  # only runs that serve metrics pay for it
        self.info_labels = self.info()                # updated in place by a reload
        self.exporter = start_exporter(self.arena, address, self.info_labels,
                                       self.settings.exporter.per_cpu,
                                       ready=lambda: self.ready, cpus=self.cpus)
        log.info("metrics on http://%s/metrics", self.exporter.address)

    def info(self) -> dict[str, str]:
        return {"policy": self.policy, "era": self.spec.era,
                "record_bytes": str(self.spec.record_bytes), "config": self.settings.name}

    def _spawn(self, slot: Slot) -> None:
        plan = WorkerPlan(
            slot=slot.index, cpu=slot.cpu, spec=self.spec,
            workload=assign_workloads(self.settings)[slot.cpu], seed=self.settings.seed,
            workers=self.cpus, decay_interval=self.settings.pcp.decay_interval, pin=self.options.pin,
            max_ops=self.options.ops)
        reader, writer = self.ctx.Pipe(duplex=False)     # one log pipe per worker life
        ctl = self.arena.cpuctl[slot.index]
        ctl[A.C_STATE] = 0
        ctl[A.C_HEARTBEAT] = time.monotonic_ns()
        slot.process = self.ctx.Process(target=worker_main, name=f"pcpd-cpu{slot.cpu}",
                                        args=(self.arena.name, plan, self.locks, writer))
        slot.process.start()
        slot.handle = psutil.Process(slot.process.pid)
        writer.close()                               # the worker holds the only write end
        slot.log_reader = LogReader(reader, f"cpu{slot.cpu}")
        slot.started_ns = time.monotonic_ns()

    def _loop(self) -> None:
        start = time.monotonic()
        opts = self.options
        duration = opts.duration if opts.duration is not None else self.settings.duration
        next_status = start + opts.status_interval
        next_audit = start + opts.audit_interval
        self._last_status = (start, None)
        m = self.measurement
        window_start = start
        if not opts.warmup:
            m.start = self.snapshot()
        chaos = (FaultInjector(self.arena, self.slots, opts.kill_interval, self.settings.seed)
                 if opts.kill_interval else None)
        self._sample_memory()
        while not self.stop_requested:
            time.sleep(TICK)
            now = time.monotonic()
            self._reap()
            if chaos is not None:
                chaos.tick(now, self.summary)
            self._serve_drain_requests()
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            if m.start is None and now - start >= opts.warmup:
                m.start, window_start = self.snapshot(), now
            if now >= next_audit:
                next_audit = now + opts.audit_interval
                self.audit_now()
            if now >= next_status:
                next_status = now + opts.status_interval
                self._sample_memory()
                if not opts.quiet:
                    print(self.status_line(now), flush=True)
            if duration and now - start >= duration:
                break
            if opts.ops and self._all_done():
                break
        m.end = self.snapshot()
        m.seconds = time.monotonic() - window_start
        self.summary.seconds = time.monotonic() - start

    def _sample_memory(self) -> None:
        """The daemon's own memory: RSS less the shared pages it maps (the arena,
        whose residency grows as audits touch more of it, and is no leak)."""
        info = psutil.Process().memory_info()
        private = info.rss - info.shared
        s = self.summary
        s.private_start = s.private_start or private
        s.private_peak = max(s.private_peak, private)
        s.private_end = private

    def _all_done(self) -> bool:
        return all(int(self.arena.cpuctl[s.index, A.C_STATE]) == STATE_DONE for s in self.slots)

    # -- supervision ----------------------------------------------------------------
    def _reap(self) -> None:
        now = time.monotonic_ns()
        for slot in self.slots:
            proc = slot.process
            if proc is None:
                continue
            silent = now - int(self.arena.cpuctl[slot.index, A.C_HEARTBEAT])
            if not _exited(slot) and silent > HEARTBEAT_TIMEOUT_NS \
                    and now - slot.started_ns > HEARTBEAT_TIMEOUT_NS:
                ctl, h = self.arena.cpuctl[slot.index], self.arena.header
                log.error("cpu%d: no heartbeat for %.1f s (state %d, waiting %d; zone->lock holder "
                          "pid %d, %s); killing pid %d", slot.cpu, silent / 1e9, ctl[A.C_STATE],
                          ctl[A.C_WAITING], h[A.H_LOCK_HOLDER_PID], OP_NAMES[int(h[A.H_LOCK_OP])],
                          proc.pid)
                os.kill(proc.pid, signal.SIGUSR1)      # its stack to stderr (faulthandler)
                time.sleep(0.2)
                proc.kill()
                proc.join(1.0)
        dead = [s for s in self.slots if s.process is not None and _exited(s)]
        if dead:
            self._replace(dead)

    def _replace(self, dead: list[Slot], respawn: bool = True) -> None:
        """Recover dead workers' pages and, unless stopping, start their replacements."""
        for slot in dead:
            log.warning("cpu%d: worker pid %d died (%s); recovering its pages", slot.cpu,
                        slot.process.pid, _exit_status(slot.process))
        reclaimed = self.recover(dead, replaced=respawn)      # may add workers that died meanwhile
        for slot in dead:
            log.warning("cpu%d: recovered %s", slot.cpu, reclaimed[slot.index])
            if respawn:
                slot.restarts += 1
                self.summary.restarts += 1
                self.arena.cpuctl[slot.index, A.C_RESTARTS] = slot.restarts
                self.arena.header[A.H_RESTARTS] += 1
                self._spawn(slot)

    def _retire(self, slot: Slot) -> None:
        """Fold the dead worker's counters into the retired block; stop its log reader."""
        S.retire(self.arena.stats[self.arena.geometry.ncpus], self.arena.stats[slot.index])
        ctl = self.arena.cpuctl[slot.index]
        ctl[A.C_PID] = 0
        ctl[A.C_WAITING] = 0
        ctl[A.C_STATE] = STATE_EXITED
        if slot.log_reader is not None:
            slot.log_reader.join(1.0)                 # ends at the pipe's end
            slot.log_reader = None
        slot.process = slot.handle = None

    def recover(self, dead: list[Slot], replaced: bool = True) -> dict[int, recovery.Reclaimed]:
        """Take over locks the dead held, park the living, reclaim the dead slots' pages.

        Pages queued for a dead slot wait for its replacement; with none coming
        (``replaced`` False, at stop) they are reclaimed too.  A worker that
        dies while the others are being parked joins ``dead``.
        """
        arena = self.arena
        while True:
            pids = {slot.process.pid for slot in dead}
            self._take_over(self.locks.zone, A.H_LOCK_HOLDER_PID, pids, "zone->lock")
            self._take_over(self.locks.slab, A.H_SLAB_HOLDER_PID, pids, "the slab lock")
            with self.parked(expect_dead=dead) as parked:
                if parked.died:
                    dead += parked.died
                    continue
                if not parked.ok:
                    raise WorkerLost("workers did not park for recovery; the zone cannot be repaired safely")
                zone = Zone(arena, ZoneLock(self.locks.zone, arena, self.counters, cpu=-1),
                            self.counters)
                with self.locks.slab, zone.lock:
                    out = {slot.index: recovery.reclaim_slot(arena, zone, slot.index, keep_inbox=replaced)
                           for slot in dead}
                for slot in dead:
                    self._retire(slot)
                self._audit_parked()
                return out

    def _take_over(self, lock, holder_word: int, dead_pids: set[int], what: str) -> None:
        """Make sure no dead process holds a lock; repair what it protected if one did."""
        header = self.arena.header
        holder = int(header[holder_word])
        if holder in dead_pids or (holder and not _alive(holder)) \
                or not lock.acquire(timeout=LOCK_TAKEOVER_TIMEOUT):
            # held by a dead worker (recorded, or killed before it could record itself)
            log.error("%s was held by a dead worker (pid %s, %s); repairing what it protects",
                      what, holder or "unrecorded", OP_NAMES[int(header[A.H_LOCK_OP])])
        if lock is self.locks.zone:
            recovery.rebuild_zone(self.arena)         # lists a killed holder left half-linked
            header[A.H_LOCK_HOLDER_CPU] = -1
        header[holder_word] = 0
        lock.release()

    def parked(self, expect_dead: list[Slot] = ()) -> _Parked:
        return _Parked(self, expect_dead)

    def _serve_drain_requests(self) -> None:
        """drain_all_pages() when a worker ran short, or the zone fell below its low watermark."""
        arena = self.arena
        wanted = False
        for slot in self.slots:
            req = int(arena.cpuctl[slot.index, A.C_DRAIN_REQ])
            if req != self._drain_reqs[slot.index]:
                self._drain_reqs[slot.index] = req
                wanted = True
        if int(arena.zone[Z_FREE_PAGES]) < int(arena.zone[Z_WMARK_LOW]) and not self.options.ops:
            wanted = True                             # (bounded runs stay deterministic)
        now = time.monotonic_ns()
        if wanted and now - self._last_drain_ns >= DRAIN_MIN_INTERVAL_NS:
            self._last_drain_ns = now
            arena.header[A.H_DRAIN_SEQ] += 1

    # -- audits --------------------------------------------------------------------
    def audit_now(self) -> AU.AuditResult | None:
        """A periodic audit, with every worker parked; skipped if one died meanwhile."""
        with self.parked() as parked:
            if parked.died:
                return None                           # its recovery comes first, next tick
            if not parked.ok:
                log.warning("audit skipped: workers did not park within %.0f s", PAUSE_TIMEOUT)
                return None
            return self._audit_parked()

    def _audit_parked(self) -> AU.AuditResult:
        result = AU.audit(self.arena)
        h = self.arena.header
        h[A.H_AUDIT_RUNS] += 1
        h[A.H_AUDIT_OK] = int(result.ok)
        self.summary.audits += 1
        if not result.ok:
            h[A.H_AUDIT_FAILURES] += 1
            self.summary.audit_failures += 1
            log.error("CONSERVATION VIOLATED: %s", result.summary())
            for problem in result.describe_problems():
                log.error("  %s", problem)
        return result

    # -- reload --------------------------------------------------------------------
    def _reload(self) -> None:
        path = self.options.config_path
        if path is None:
            log.warning("SIGHUP: running the built-in config; nothing to reload")
            return
        try:
            new = load_settings(path)
            problem = _reload_problem(self.settings, new, self.policy, self.options.policy)
        except ConfigError as err:
            problem = str(err)
        if problem:
            log.error("reload rejected, the running config stays: %s", problem)
            return
        self.settings = new
        if not self.options.policy:
            self.policy = new.policy.name
        self.spec = ModelSpec.from_settings(new, len(self.cpus), self.policy)
        self.info_labels.update(self.info())
        for slot in self.slots:
            self._restart_gracefully(slot)
        log.info("reloaded %s: policy %s, %d workload(s)", path, self.policy, len(new.workloads))

    def _restart_gracefully(self, slot: Slot) -> None:
        ctl = self.arena.cpuctl[slot.index]
        ctl[A.C_STOP] = 1
        slot.process.join(STOP_TIMEOUT)
        if slot.process.exitcode is None:
            log.error("cpu%d: did not stop for the reload; killing it", slot.cpu)
            slot.process.kill()
            slot.process.join()
            self._replace([slot])
            return
        if slot.process.exitcode != 0:
            self._replace([slot])
            return
        self._retire(slot)
        self._spawn(slot)

    # -- status and stop -------------------------------------------------------------
    def snapshot(self) -> S.Snapshot:
        n = self.arena.geometry.ncpus
        data = self.arena.stats[:, :S.NR_STATS].copy()
        return S.Snapshot(data[:n], data[n])

    def status_line(self, now: float) -> str:
        """The last interval: throughput, hit rate, contention, lines per op, free pages."""
        snap = self.snapshot()
        then, earlier = self._last_status
        self._last_status = (now, snap)
        d = snap.since(earlier) if earlier is not None else snap.totals()
        allocs = d["alloc_hit"] + d["alloc_refill"] + d["alloc_buddy"]
        ops = sum(d[n] for n in S.OPS_COUNTERS)
        acq, contended = d["lock_acquisitions"], d["lock_contended"]
        lines = sum(d[f"lines_written_{c}"] + d[f"lines_read_{c}"] for c in S.CAUSES)
        return (f"pcpd: {ops / max(now - then, 1e-9):,.0f} ops/s  hit {_share(d['alloc_hit'], allocs)}  "
                f"zone-lock contended {_share(contended, acq)} "
                f"(wait {d['lock_wait_ns'] / max(contended, 1) / 1e3:.1f} us)  "
                f"{lines / max(ops, 1):.2f} lines/op  "
                f"free {int(self.arena.zone[Z_FREE_PAGES])} pages  "
                f"daemon {self.summary.private_end / 2**20:.1f} MiB  restarts {self.summary.restarts}")

    def _stop(self) -> int:
        arena = self.arena
        log.info("stopping: workers free what they hold and drain their PCPs")
        arena.header[A.H_SHUTDOWN] = 1
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            self._reap_during_stop()
            states = [int(arena.cpuctl[s.index, A.C_STATE]) for s in self.slots if s.process]
            if all(st in (STATE_STOPPING, STATE_EXITED) for st in states):
                break
            time.sleep(0.01)
        arena.header[A.H_SHUTDOWN] = 2
        # phase 2 parks nobody: let every worker finish before recovering any
        live = [slot for slot in self.slots if slot.process is not None]
        for slot in live:
            slot.process.join(max(deadline - time.monotonic(), 1.0))
            if slot.process.exitcode is None:
                log.error("cpu%d: did not exit; killing it", slot.cpu)
                slot.process.kill()
                slot.process.join()
        dead = [slot for slot in live if slot.process.exitcode != 0]
        for slot in live:
            if slot not in dead:
                self._retire(slot)
        if dead:
            self._replace(dead, respawn=False)
        result = self._audit_parked()
        s = self.summary
        s.final_audit = result.summary()
        s.pages_lost = len(result.orphans)
        snap = self.snapshot()
        s.ops = snap.ops()
        s.totals = snap.totals()
        drained_everything = result.pages("buddy") == result.total
        print(self.summary_text(result, drained_everything), flush=True)
        return 0 if result.ok and drained_everything else 1

    def _reap_during_stop(self) -> None:
        dead = [s for s in self.slots
                if s.process is not None and _exited(s) and s.process.exitcode != 0]
        if dead:
            self._replace(dead, respawn=False)

    def summary_text(self, result: AU.AuditResult, drained: bool) -> str:
        s = self.summary
        snap = self.snapshot()
        allocs = snap.allocs()
        hit = snap.total("alloc_hit") / allocs if allocs else 0.0
        return "\n".join([
            f"pcpd run {self.settings.name}: policy {self.policy}, era {self.spec.era}, "
            f"{len(self.cpus)} worker(s), {s.seconds:.1f} s",
            f"  operations {s.ops:,} ({s.ops / max(s.seconds, 1e-9):,.0f}/s), PCP hit rate {hit:.1%}",
            f"  zone->lock acquisitions {snap.total('lock_acquisitions'):,}, "
            f"contended {snap.total('lock_contended'):,}",
            f"  restarts {s.restarts}, kills {s.kills} ({s.kills_holding_lock} holding zone->lock), "
            f"audits {s.audits} ({s.audit_failures} failed)",
            f"  daemon memory (RSS less the shared arena) start {s.private_start / 2**20:.1f} MiB, "
            f"peak {s.private_peak / 2**20:.1f} MiB, end {s.private_end / 2**20:.1f} MiB",
            f"  final {result.summary()}; every PCP drained: {'yes' if drained else 'NO'}; "
            f"pages lost {s.pages_lost}",
        ])

    def _teardown(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for slot in self.slots:
            if slot.process is not None and slot.process.exitcode is None:
                slot.process.kill()
                slot.process.join()
            if slot.log_reader is not None:
                slot.log_reader.join(1.0)
        if self.exporter is not None:
            self.exporter.stop()
        if self.arena is not None:
            self.arena.unlink()
            self._heartbeat = self.exporter = None
            self.arena.close()


class _Heartbeat:
    """The daemon's pulse in the header, from a thread: the main loop may block
    (a reload joins workers, a recovery parks them) without workers deciding
    the daemon died."""

    def __init__(self, arena: A.Arena, interval: float = 0.25) -> None:
        self.header = arena.header
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.done.is_set():
            self.header[A.H_DAEMON_HEARTBEAT] = time.monotonic_ns()
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


class _Parked:
    """Context manager: every live worker parked between operations, then resumed.

    Waiting stops early when a worker dies (``died``): nobody else may be
    able to park before its recovery (it may hold zone->lock).
    """

    _seq = 0

    def __init__(self, daemon: Daemon, expect_dead: list[Slot]) -> None:
        self.daemon = daemon
        self.expect_dead = list(expect_dead)
        self.ok = False
        self.died: list[Slot] = []

    def __enter__(self) -> _Parked:
        arena = self.daemon.arena
        _Parked._seq += 1
        seq = _Parked._seq
        arena.header[A.H_PAUSE_REQ] = seq
        deadline = time.monotonic() + PAUSE_TIMEOUT
        while time.monotonic() < deadline:
            waiting = False
            for slot in self.daemon.slots:
                if slot.process is None or slot in self.expect_dead:
                    continue
                if _exited(slot):
                    self.died.append(slot)
                elif int(arena.cpuctl[slot.index, A.C_PAUSE_ACK]) != seq:
                    waiting = True
            if self.died:
                return self
            if not waiting:
                self.ok = True
                return self
            time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.arena.header[A.H_PAUSE_REQ] = 0


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _alive(pid: int) -> bool:
    """A process that can still run: not gone, not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _exited(slot: Slot) -> bool:
    """The slot's worker is dead, even before the forkserver reported its status.

    The process itself decides, not ``exitcode`` (with its forkserver gone a
    running worker's exit code reads 255); psutil's handle remembers the start
    time, so a reused pid does not pass for the worker.
    """
    try:
        return not slot.handle.is_running() or slot.handle.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextlib.contextmanager
def _group_signals_ignored():
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = [signal.signal(sig, signal.SIG_IGN) for sig in signals]
    try:
        yield
    finally:
        for sig, handler in zip(signals, saved):
            signal.signal(sig, handler)


def _exit_status(proc: multiprocessing.process.BaseProcess) -> str:
    proc.join(0.5)
    return f"exit code {proc.exitcode}" if proc.exitcode is not None else "exited"


def _reload_problem(old: Settings, new: Settings, policy: str, forced_policy: str | None) -> str:
    """Why a new config cannot replace the running one in place, or ''."""
    if old.arena != new.arena:
        return "arena settings changed (memory or record_bytes): that needs a restart"
    if old.cpus != new.cpus:
        return "cpus changed: that needs a restart"
    new_policy = forced_policy or new.policy.name
    if (policy in MEMDESC_POLICIES) != (new_policy in MEMDESC_POLICIES):
        return f"policy {policy} -> {new_policy} changes what the page array holds: that needs a restart"
    return ""


# -- CLI --------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", nargs="?",
                        help="TOML config (default: the built-in soak mix)")
    parser.add_argument("--duration", type=argtypes.seconds, metavar="SECONDS",
                        help="stop after this long (default: the config's; 0 = until signalled)")
    parser.add_argument("--policy", choices=tuple(POLICIES),
                        help="override the config's policy")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help='metrics address (default: the config\'s exporter.address; "" disables)')
    parser.add_argument("--status-interval", type=argtypes.seconds, default=5.0, metavar="SECONDS")
    parser.add_argument("--audit-interval", type=argtypes.seconds, default=10.0, metavar="SECONDS")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin workers to their CPUs")
    parser.add_argument("--kill-interval", type=argtypes.seconds, default=0.0, metavar="SECONDS",
                        help="soak with faults: SIGKILL a worker this often, every other one "
                             "while it holds zone->lock, and report what recovery saved")
    parser.add_argument("--ops", type=argtypes.count, default=0, metavar="N",
                        help="each worker stops after N operations; decay follows the op count, "
                             "so one worker and one seed repeat their counts exactly")


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else DEFAULT_SETTINGS
    options = RunOptions(config_path=args.config, duration=args.duration, policy=args.policy,
                         listen=args.listen, status_interval=args.status_interval,
                         audit_interval=args.audit_interval, pin=args.pin, ops=args.ops,
                         kill_interval=args.kill_interval)
    configure_daemon_logging()
    return Daemon(settings, options).run()
