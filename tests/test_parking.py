"""pcpd.daemon.parking: workers parked between operations, with real processes acknowledging."""

from __future__ import annotations

import multiprocessing
import time

import psutil
import pytest

from pcpd.daemon.parking import Parked
from pcpd.daemon.slots import Slot
from pcpd.model.arena import C_PAUSE_ACK, C_STOP, H_PAUSE_REQ, Arena, Geometry

FORK = multiprocessing.get_context("fork")     # children share the parent's mapping of the arena


def _worker(arena: Arena, index: int, acks: bool) -> None:
    """A worker's parking protocol: acknowledge each request, wait while it stands."""
    ctl = arena.cpuctl[index]
    while not ctl[C_STOP]:
        request = int(arena.header[H_PAUSE_REQ])
        if request and acks:
            ctl[C_PAUSE_ACK] = request
        time.sleep(0.001)


@pytest.fixture
def arena():
    a = Arena.create(Geometry(512, 64, 3, ring_slots=16))
    yield a
    try:
        a.close()
    finally:
        a.unlink()


@pytest.fixture
def workers(arena):
    """Start a worker per slot (``acks`` False: one that never parks); stop them all after."""
    slots: list[Slot] = []

    def start(*acks: bool) -> list[Slot]:
        for index, ack in enumerate(acks):
            process = FORK.Process(target=_worker, args=(arena, index, ack))
            process.start()
            slots.append(Slot(index, index, process=process, handle=psutil.Process(process.pid)))
        return slots

    yield start
    arena.cpuctl[:, C_STOP] = 1
    for slot in slots:
        if slot.process is not None:
            slot.process.join(10)
            if slot.process.exitcode is None:
                slot.process.kill()
                slot.process.join()


def test_every_worker_parks_and_is_released(arena, workers):
    slots = workers(True, True, True)
    with Parked(arena, slots, timeout=10.0) as parked:
        assert parked.ok and not parked.died
        request = int(arena.header[H_PAUSE_REQ])
        assert request and all(int(arena.cpuctl[s.index, C_PAUSE_ACK]) == request for s in slots)
    assert arena.header[H_PAUSE_REQ] == 0


def test_each_request_needs_a_fresh_acknowledgement(arena, workers):
    slots = workers(True, False)
    with Parked(arena, slots[:1]) as first:
        assert first.ok
        earlier = int(arena.header[H_PAUSE_REQ])
    arena.cpuctl[1, C_PAUSE_ACK] = earlier              # an old ack does not pass for a new one
    with Parked(arena, slots, timeout=0.3) as second:
        assert int(arena.header[H_PAUSE_REQ]) > earlier
        assert not second.ok and not second.died


def test_a_worker_that_never_parks_times_out(arena, workers):
    slots = workers(True, False)
    began = time.monotonic()
    with Parked(arena, slots, timeout=0.3) as parked:
        assert not parked.ok and not parked.died
    assert time.monotonic() - began >= 0.3
    assert arena.header[H_PAUSE_REQ] == 0


def test_a_dead_worker_ends_the_wait_at_once(arena, workers):
    slots = workers(True, False)
    slots[1].process.kill()
    slots[1].process.join()
    began = time.monotonic()
    with Parked(arena, slots, timeout=30.0) as parked:
        assert parked.died == [slots[1]] and not parked.ok
    assert time.monotonic() - began < 10.0


def test_workers_known_dead_are_not_waited_for(arena, workers):
    slots = workers(True, True, False)
    slots[2].process.kill()
    slots[2].process.join()
    with Parked(arena, slots, expect_dead=[slots[2]], timeout=10.0) as parked:
        assert parked.ok and not parked.died
    # a slot without a process (between lives) is not waited for either
    empty = Slot(2, 2)
    with Parked(arena, [*slots[:2], empty], timeout=10.0) as parked:
        assert parked.ok
