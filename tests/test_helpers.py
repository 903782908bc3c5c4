"""Tests for pcpd.daemon.helpers: the CPython privates it reads, and the daemon without them.

The relaunch itself, end to end, is tests/test_faults.py -k forkserver.
"""

import logging
import multiprocessing
from multiprocessing import resource_tracker

from pcpd.daemon import helpers
from workers.cpu import SharedLocks


def test_this_python_has_every_private_the_relaunch_bookkeeping_reads():
    ctx = multiprocessing.get_context("forkserver")
    lock = ctx.Lock()                                 # starts the resource tracker
    assert helpers.tracker_pid() not in (helpers.UNKNOWN, None), "ResourceTracker._pid is gone"
    assert helpers.forkserver_pid() != helpers.UNKNOWN, "ForkServer._forkserver_pid is gone"
    name = helpers.semaphore_name(lock)
    assert isinstance(name, str) and name, "multiprocessing Lock._semlock.name is gone"


def test_without_them_the_daemon_relaunches_helpers_and_warns_once(monkeypatch, caplog):
    class Bare:                                       # a tracker of a CPython without _pid
        pass

    monkeypatch.setattr(resource_tracker, "_resource_tracker", Bare())
    monkeypatch.setattr(helpers, "_missing_logged", set())
    ctx = multiprocessing.get_context("forkserver")
    locks = SharedLocks(ctx.Lock(), ctx.Lock())
    with caplog.at_level(logging.WARNING, logger="pcpd.daemon"):
        assert helpers.restart_helpers(locks, forkserver=False) is False
        assert helpers.restart_helpers(locks, forkserver=False) is False
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "_resource_tracker._pid" in warnings[0]


def test_a_thread_lock_has_no_semaphore_and_no_warning(monkeypatch, caplog):
    monkeypatch.setattr(helpers, "_missing_logged", set())
    with caplog.at_level(logging.WARNING, logger="pcpd.daemon"):
        assert helpers.semaphore_name(SharedLocks.local().zone) is None
    assert not caplog.records
