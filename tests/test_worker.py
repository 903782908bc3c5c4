"""workers.worker: the per-CPU loop, its housekeeping and its stop protocol, in-process.

Workers run in threads over a real arena (the daemon's part is played by
the test through the same header and control words), so each step of the
protocol can be watched: bounded runs park when done, a pause parks between
operations, a stop frees and drains everything, cross-CPU frees arrive.
"""

import threading
import time

import pytest

from pcpd.config.load import parse_settings
from pcpd.config.rules import assign_workloads
from pcpd.daemon.audit import audit
from pcpd.errors import ArenaError
from pcpd.model import rings
from pcpd.model.arena import (
    C_DRAIN_ACK,
    C_DRAIN_REQ,
    C_HEARTBEAT,
    C_PAUSE_ACK,
    C_STATE,
    C_STOP,
    H_DAEMON_HEARTBEAT,
    H_DRAIN_SEQ,
    H_PAUSE_REQ,
    H_SHUTDOWN,
)
from pcpd.model.stats import NAMES, NR_STATS, Snapshot
from pcpd.model.zonewords import Z_WMARK_LOW
from pcpd.policies import record_bytes_for
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.worker import (
    CHUNK,
    DAEMON_TIMEOUT_NS,
    STATE_DONE,
    STATE_EXITED,
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STOPPING,
    VIRTUAL_OPS_PER_S,
    Worker,
    WorkerPlan,
    _DecayClock,
)
from workers.workloads import BACKOFF_FRACTION

TIMED = ("lock_wait", "lock_hold", "heartbeat_ns", "drain_all_requests_seen")
DEADLINE = 20.0

CONFIG = """
cpus = [0, 1]
[arena]
memory = "16MiB"
[[workload]]
name = "rx"
cpus = [0]
types = { netpool = 1, anon = 1 }
orders = { 0 = 80, 1 = 20 }
working_set = 512
burst = 8
cross_cpu = { fraction = 0.5, targets = [1], types = ["netpool"] }
[[workload]]
name = "app"
cpus = [1]
types = { anon = 2, file = 1, kernel = 1 }
orders = { 0 = 90, 2 = 10 }
working_set = 256
"""
ONE_CPU = """
cpus = [0]
[arena]
memory = "16MiB"
[[workload]]
name = "mix"
types = { anon = 2, file = 1, slab = 1, kernel = 1 }
orders = { 0 = 80, 1 = 10, 3 = 10 }
working_set = 512
burst = 8
"""


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class Rig:
    """An arena and the daemon's side of the worker protocol."""

    def __init__(self, policy: str = "legacy", ncpus: int = 2, config: str | None = None) -> None:
        config = config or (CONFIG if ncpus == 2 else ONE_CPU)
        self.settings = parse_settings(config, "test.toml", available_cpus={0, 1})
        record_bytes = record_bytes_for(policy)
        self.spec = ModelSpec(pages=self.settings.arena.pages, policy=policy, record_bytes=record_bytes,
                              ncpus=ncpus)
        self.arena = create_arena(self.spec)
        self.locks = SharedLocks.local()
        self.workers: list[Worker] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def plan(self, slot: int, max_ops: int = 0, seed: int = 1, decay_interval: float = 1.0) -> WorkerPlan:
        workload = assign_workloads(self.settings, available_cpus={0, 1})[slot]
        return WorkerPlan(slot=slot, cpu=slot, spec=self.spec, workload=workload, seed=seed,
                          workers=tuple(range(self.spec.ncpus)), decay_interval=decay_interval,
                          pin=False, max_ops=max_ops)

    def worker(self, slot: int, **plan) -> Worker:
        self.workers.append(Worker(self.arena, self.plan(slot, **plan), self.locks))
        return self.workers[-1]

    def start(self, worker: Worker) -> None:
        def run() -> None:
            try:
                worker.run()
            except BaseException as err:      # reported by join_all
                self.errors.append(err)
        thread = threading.Thread(target=run, name=f"worker-{worker.plan.slot}")
        self.threads.append(thread)
        thread.start()

    def state(self, slot: int) -> int:
        return int(self.arena.cpuctl[slot, C_STATE])

    def shutdown(self) -> None:
        """The daemon's stop: 1 (stop, free here), then 2 once all stopped (drain, exit)."""
        h = self.arena.header
        h[H_SHUTDOWN] = 1
        wait_until(lambda: all(self.state(w.plan.slot) in (STATE_STOPPING, STATE_EXITED)
                               for w in self.workers), "every worker stopping")
        h[H_SHUTDOWN] = 2
        self.join_all()

    def join_all(self) -> None:
        for thread in self.threads:
            thread.join(DEADLINE)
            assert not thread.is_alive(), f"{thread.name} did not exit"
        if self.errors:
            raise self.errors[0]

    def block(self, slot: int) -> dict[str, int]:
        return {name: int(self.arena.stats[slot, i]) for i, name in enumerate(NAMES)}

    def close(self) -> None:
        h = self.arena.header
        h[H_SHUTDOWN] = 2                   # a failed test must not leave threads running
        for thread in self.threads:
            thread.join(DEADLINE)
        self.workers = []
        try:
            self.arena.close()
        except ArenaError:
            pass
        finally:
            self.arena.unlink()


@pytest.fixture
def make_rig():
    made = []

    def make(*args, **kwargs) -> Rig:
        made.append(Rig(*args, **kwargs))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


def all_in_buddy(arena) -> bool:
    result = audit(arena)
    return result.ok and result.pages("buddy") == result.total


def test_bounded_worker_runs_its_ops_then_parks_until_stopped(make_rig):
    rig = make_rig(ncpus=1)
    worker = rig.worker(0, max_ops=3000)
    rig.start(worker)
    wait_until(lambda: rig.state(0) == STATE_DONE, "the worker to finish its ops")
    done_ops = -(-3000 // CHUNK) * CHUNK                  # whole chunks
    assert worker.ops == done_ops
    snap = Snapshot(rig.arena.stats[:1, :NR_STATS].copy(), rig.arena.stats[1, :NR_STATS].copy())
    assert snap.ops() == done_ops                        # published before DONE
    assert rig.block(0)["held_pages"] > 0
    assert audit(rig.arena).ok
    rig.shutdown()
    assert rig.state(0) == STATE_EXITED
    assert worker.ops == done_ops                        # parked: no operation after DONE
    assert all_in_buddy(rig.arena)
    block = rig.block(0)
    assert block["held_pages"] == block["pcp_pages"] == 0
    assert block["drains_exit"] > 0


@pytest.mark.parametrize("policy", ["legacy", "memdesc"])
def test_two_workers_hand_frees_across_and_stop_clean(make_rig, policy):
    rig = make_rig(policy)
    for slot in (0, 1):
        rig.start(rig.worker(slot, max_ops=6000))
    wait_until(lambda: all(rig.state(s) == STATE_DONE for s in (0, 1)), "both workers done")
    assert audit(rig.arena).ok
    rig.shutdown()
    assert all_in_buddy(rig.arena)
    rx, app = rig.block(0), rig.block(1)
    assert rx["free_remote_out"] > 0
    assert app["free_remote_in"] == rx["free_remote_out"]    # every hand-off arrived
    assert app["free_type_netpool"] == app["free_remote_in"]  # app never allocates netpool
    assert rx["free_remote_in"] == 0
    assert rings.Inbox(rig.arena, 1).pending() == 0


def test_pause_parks_between_operations(make_rig):
    rig = make_rig(ncpus=1)
    worker = rig.worker(0)
    rig.start(worker)
    wait_until(lambda: worker.ops > 2 * CHUNK, "the worker to run")
    h, ctl = rig.arena.header, rig.arena.cpuctl[0]
    h[H_PAUSE_REQ] = 5
    wait_until(lambda: ctl[C_PAUSE_ACK] == 5, "the pause ack")
    assert rig.state(0) == STATE_PAUSED
    ops = worker.ops
    beat = int(ctl[C_HEARTBEAT])
    result = audit(rig.arena)                       # a quiescent page array
    assert result.ok
    assert result.pages("allocated") == worker.workload.held_pages
    wait_until(lambda: int(ctl[C_HEARTBEAT]) > beat, "a heartbeat while parked")
    assert worker.ops == ops
    h[H_PAUSE_REQ] = 0
    wait_until(lambda: worker.ops > ops, "the worker to resume")
    assert rig.state(0) == STATE_RUNNING
    ctl[C_STOP] = 1                               # a reload's stop: this worker only
    rig.join_all()
    assert rig.state(0) == STATE_EXITED
    assert all_in_buddy(rig.arena)


@pytest.mark.parametrize("policy", ["legacy", "memdesc-pcpdesc"])
def test_a_bounded_worker_repeats_its_counts(make_rig, policy):
    counts = []
    for _ in range(2):
        rig = make_rig(policy, ncpus=1)
        rig.start(rig.worker(0, max_ops=20000, seed=9, decay_interval=0.02))
        wait_until(lambda rig=rig: rig.state(0) == STATE_DONE, "the worker to finish")
        rig.shutdown()
        counts.append({k: v for k, v in rig.block(0).items() if not k.startswith(TIMED)})
    assert counts[0] == counts[1]
    assert counts[0]["drains_decay"] > 0                 # decay ran on the op clock


def test_decay_clock_follows_operations_in_bounded_runs(make_rig):
    rig = make_rig(ncpus=1)
    clock = _DecayClock(rig.plan(0, max_ops=10, decay_interval=0.01))
    every = int(0.01 * VIRTUAL_OPS_PER_S)
    assert [clock.due(ops) for ops in (every - 1, every, every + 1, 2 * every - 1, 2 * every + 5)] == \
        [False, True, False, False, True]
    assert not clock.due(3 * every)                      # next is 2 * every + 5 + every


def test_decay_clock_follows_time_in_open_runs(make_rig):
    rig = make_rig(ncpus=1)
    clock = _DecayClock(rig.plan(0, decay_interval=1000.0))
    assert not clock.due(10**9)                          # ops do not matter
    clock.next = time.monotonic_ns()
    assert clock.due(0)


def run_steps(worker: Worker, n: int) -> None:
    for _ in range(n):
        worker.workload.step(worker.policy)


def test_a_bounded_worker_drains_itself_when_short(make_rig):
    rig = make_rig(ncpus=1)
    worker = rig.worker(0, max_ops=1000)
    run_steps(worker, 2000)
    worker.workload.release_all(worker.policy)           # frees onto the PCP
    assert worker.policy.pcp_pages() > 0
    worker.workload.drain_wanted = True
    worker.check_watermark()
    assert worker.policy.pcp_pages() == 0
    assert worker.cpu.counters["drains_drain_all"] > 0
    assert int(rig.arena.cpuctl[0, C_DRAIN_REQ]) == 0


def test_an_open_worker_asks_the_daemon_to_drain(make_rig):
    rig = make_rig(ncpus=1)
    worker = rig.worker(0)
    run_steps(worker, 2000)
    worker.workload.release_all(worker.policy)
    pcp = worker.policy.pcp_pages()
    worker.workload.drain_wanted = True
    worker.check_watermark()
    assert int(rig.arena.cpuctl[0, C_DRAIN_REQ]) == 1
    assert worker.policy.pcp_pages() == pcp
    rig.arena.header[H_DRAIN_SEQ] += 1                 # the daemon's drain_all_pages()
    assert worker.housekeeping()
    assert worker.policy.pcp_pages() == 0
    assert int(rig.arena.cpuctl[0, C_DRAIN_ACK]) == int(rig.arena.header[H_DRAIN_SEQ])
    assert rig.block(0)["drain_all_requests_seen"] == 1
    assert worker.housekeeping()                         # once per request
    assert rig.block(0)["drain_all_requests_seen"] == 1


def test_below_the_low_watermark_a_worker_backs_off(make_rig):
    config = ONE_CPU.replace('memory = "16MiB"', 'memory = "2MiB"').replace(
        "working_set = 512", "working_set = 500")
    rig = make_rig(ncpus=1, config=config)
    worker = rig.worker(0)
    zone = worker.cpu.zone
    for _ in range(5000):
        worker.workload.step(worker.policy)
        if zone.free_pages < zone.watermark(Z_WMARK_LOW):
            break
    else:
        pytest.fail("the zone never fell below its low watermark")
    held = len(worker.workload.held)
    worker.check_watermark()
    assert worker.cpu.counters["alloc_fail_watermark"] == 1
    assert len(worker.workload.held) == held - int(held / BACKOFF_FRACTION + 0.999)
    assert int(rig.arena.cpuctl[0, C_DRAIN_REQ]) == 1
    assert not worker.workload.drain_wanted


def test_received_blocks_are_freed_onto_the_receivers_pcp(make_rig):
    rig = make_rig()
    worker = rig.worker(1)
    sender = CpuAllocator(rig.arena, rig.spec, rig.locks, 0)
    outbox = rings.Outbox(rig.arena, 0)
    sent = []
    for order in (0, 0, 1, 2):
        pfn = sender.policy.alloc(4, order)              # netpool
        sender.policy.send(pfn, order, 4, 1)
        assert outbox.push(1, rings.encode(pfn, 4, order))
        sent.append((pfn, order))
    assert audit(rig.arena).pages("inflight") == 1 + 1 + 2 + 4
    worker.receive()
    assert worker.cpu.counters["free_remote_in"] == 4
    result = audit(rig.arena)
    assert result.ok and result.pages("inflight") == 0
    pcp = result.blocks["pcp"]
    on_pcp = {(p, o) for p, o, c in zip(pcp.pfn.tolist(), pcp.order.tolist(), pcp.cpu.tolist()) if c == 1}
    assert set(sent) <= on_pcp
    assert rings.Inbox(rig.arena, 1).pending() == 0


def test_a_worker_notices_a_dead_daemon(make_rig):
    rig = make_rig(ncpus=1)
    worker = rig.worker(0)
    assert worker.daemon_alive()
    worker.seen_daemon = time.monotonic_ns() - DAEMON_TIMEOUT_NS - 1
    assert not worker.daemon_alive()
    assert not worker.housekeeping()
    rig.arena.header[H_DAEMON_HEARTBEAT] = time.monotonic_ns()   # it beats again
    assert worker.daemon_alive()
