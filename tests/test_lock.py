"""pcpd.model.lock: zone->lock bookkeeping and its profile (uncontended and contended)."""

import threading
import time

import pytest

from pcpd.model.arena import (
    C_WAITING,
    H_LOCK_HOLDER_CPU,
    H_LOCK_HOLDER_PID,
    H_LOCK_LAST_CPU,
    H_LOCK_OP,
    Arena,
    Geometry,
)
from pcpd.model.lock import OP_DRAIN, OP_NONE, OP_REFILL, ZoneLock
from pcpd.model.stats import INDEX, LOCK_WAIT_BUCKETS, Counters, wait_bucket


@pytest.fixture
def arena():
    a = Arena.create(Geometry(512, 64, 2))
    a.header[H_LOCK_HOLDER_CPU] = a.header[H_LOCK_LAST_CPU] = -1
    yield a
    try:
        a.close()
    finally:
        a.unlink()


def make_locks(arena, raw=None):
    raw = raw or threading.Lock()
    counters = [Counters(), Counters()]
    return raw, counters, [ZoneLock(raw, arena, counters[cpu], cpu) for cpu in (0, 1)]


def test_uncontended_acquisitions_are_counted(arena):
    _, counters, (lock, _) = make_locks(arena)
    for hold in (0, 0.005, 0):
        with lock(OP_REFILL):
            time.sleep(hold)
    c = counters[0]
    assert c["lock_acquisitions"] == c["lock_uncontended"] == 3
    assert c["lock_contended"] == 0 and c["lock_wait_ns"] == 0
    assert c["lock_hold_max_ns"] >= 5_000_000          # the longest hold, timed
    assert c["lock_hold_ns"] > c["lock_hold_max_ns"]   # plus the two short ones


def test_holder_is_recorded_while_held(arena):
    _, _, (lock, _) = make_locks(arena)
    h = arena.header
    with lock(OP_DRAIN):
        assert h[H_LOCK_HOLDER_CPU] == 0
        assert h[H_LOCK_HOLDER_PID] == lock.pid
        assert h[H_LOCK_OP] == OP_DRAIN
    assert h[H_LOCK_HOLDER_CPU] == -1
    assert h[H_LOCK_HOLDER_PID] == 0
    assert h[H_LOCK_OP] == OP_NONE
    assert h[H_LOCK_LAST_CPU] == 0


def test_lock_is_released_when_the_body_raises(arena):
    raw, _, (lock, _) = make_locks(arena)
    with pytest.raises(RuntimeError):
        with lock(OP_REFILL):
            raise RuntimeError("boom")
    assert raw.acquire(False)
    raw.release()


def test_owner_switches_count_changes_of_cpu(arena):
    _, counters, (cpu0, cpu1) = make_locks(arena)
    for lock in (cpu0, cpu0, cpu1, cpu0, cpu1, cpu1):
        with lock(OP_REFILL):
            pass
    # the first acquisition has no previous owner; then 0->1, 1->0, 0->1
    assert counters[0]["lock_owner_switches"] + counters[1]["lock_owner_switches"] == 3


def test_contended_acquisition_records_wait_and_waiters(arena):
    raw, counters, (_, lock) = make_locks(arena)
    raw.acquire()                                  # another CPU holds zone->lock
    done = threading.Event()

    def take():
        with lock(OP_REFILL):
            pass
        done.set()

    t = threading.Thread(target=take)
    t.start()
    deadline = time.monotonic() + 10
    while arena.cpuctl[1, C_WAITING] != 1:       # the waiter announced itself
        assert time.monotonic() < deadline, "waiter never blocked"
        time.sleep(0.001)
    assert not done.is_set()
    raw.release()
    t.join(10)
    assert done.is_set()
    c = counters[1]
    assert c["lock_contended"] == 1 and c["lock_uncontended"] == 0
    assert c["lock_acquisitions"] == 1
    assert c["lock_waiters_max"] == 1
    assert c["lock_wait_ns"] == c["lock_wait_max_ns"] > 0
    buckets = [c[f"lock_wait_bucket_{i}"] for i in range(len(LOCK_WAIT_BUCKETS) + 1)]
    assert sum(buckets) == 1
    assert buckets.index(1) == wait_bucket(c["lock_wait_ns"])
    assert arena.cpuctl[1, C_WAITING] == 0


@pytest.mark.parametrize("ns, bucket", [
    (0, 0), (1024, 0), (1025, 1), (4096, 1), (2 ** 30, len(LOCK_WAIT_BUCKETS) - 1),
    (2 ** 30 + 1, len(LOCK_WAIT_BUCKETS)),
])
def test_wait_buckets(ns, bucket):
    assert wait_bucket(ns) == bucket


def test_counters_stay_local_until_folded(arena):
    _, counters, (lock, _) = make_locks(arena)
    with lock(OP_REFILL):
        pass
    assert not arena.stats.any()
    counters[0].fold(arena.stats[0])
    assert arena.stats[0, INDEX["lock_acquisitions"]] == 1
