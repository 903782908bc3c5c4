"""pcpd.daemon.drains: when the daemon asks every PCP to drain (drain_all_pages)."""

from __future__ import annotations

import pytest

from pcpd.daemon.drains import DrainRequests
from pcpd.model.arena import C_DRAIN_REQ, H_DRAIN_SEQ, Arena, Geometry
from pcpd.model.zonewords import Z_FREE_PAGES, Z_WMARK_LOW


@pytest.fixture
def arena():
    a = Arena.create(Geometry(512, 64, 2, ring_slots=16))
    a.zone[Z_FREE_PAGES], a.zone[Z_WMARK_LOW] = 400, 100
    yield a
    try:
        a.close()
    finally:
        a.unlink()


def test_a_workers_request_is_served_once(arena):
    drains = DrainRequests(arena, 2)
    assert not drains.serve()
    arena.cpuctl[1, C_DRAIN_REQ] += 1
    assert drains.serve()
    assert arena.header[H_DRAIN_SEQ] == 1
    drains.last_ns = 0                               # a second later
    assert not drains.serve()                        # nothing new asked
    assert arena.header[H_DRAIN_SEQ] == 1


def test_drains_come_at_most_once_a_second(arena):
    drains = DrainRequests(arena, 2)
    arena.cpuctl[0, C_DRAIN_REQ] += 1
    assert drains.serve()
    arena.cpuctl[1, C_DRAIN_REQ] += 1
    assert not drains.serve()
    assert arena.header[H_DRAIN_SEQ] == 1


def test_the_low_watermark_asks_for_drains(arena):
    arena.zone[Z_FREE_PAGES] = 99
    drains = DrainRequests(arena, 2)
    assert drains.serve()
    drains.last_ns = 0
    assert drains.serve()                            # for as long as the zone stays short
    assert arena.header[H_DRAIN_SEQ] == 2


def test_bounded_runs_leave_the_watermark_to_the_workers(arena):
    arena.zone[Z_FREE_PAGES] = 99
    drains = DrainRequests(arena, 2, watch_watermark=False)
    assert not drains.serve()
    arena.cpuctl[0, C_DRAIN_REQ] += 1
    assert drains.serve()
