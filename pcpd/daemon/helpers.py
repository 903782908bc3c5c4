"""multiprocessing's helper processes: the forkserver and the resource tracker.

Both are children of the daemon that a soak may kill (``kill -9`` of the
forkserver or of the tracker is part of the fault drill).  multiprocessing
relaunches either lazily, on its next use, which has two flaws: the new one
would start with the group's signals deliverable, and a new tracker knows
none of the semaphores registered with the old one, so each unregister at
exit would print a ``KeyError`` traceback from the tracker.  The daemon
therefore relaunches them itself, before each worker start and at its stop.
"""

from __future__ import annotations

import logging
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.synchronize
from multiprocessing import resource_tracker
from typing import Any

from pcpd.daemon.signals import held_from_children
from workers.cpu import SharedLocks

log = logging.getLogger("pcpd.daemon")


def start_helpers(ctx: multiprocessing.context.ForkServerContext) -> SharedLocks:
    """Start the forkserver and create the cross-process locks (whose semaphores the
    resource tracker removes once this process is gone)."""
    ctx.set_forkserver_preload(["workers.worker"])
    # the resource tracker and the forkserver start here and keep the group's
    # SIGINT/SIGTERM/SIGHUP away (as do the workers forked later): those signals
    # are the daemon's to act on.  The tracker first, alone: once started it
    # unblocks SIGINT and SIGTERM in the thread that started it.
    with held_from_children():
        resource_tracker.ensure_running()
    with held_from_children():
        locks = SharedLocks(ctx.Lock(), ctx.Lock())
        multiprocessing.forkserver.ensure_running()
    return locks


def restart_helpers(locks: SharedLocks, forkserver: bool = True) -> bool:
    """Relaunch a helper that died, as ``start_helpers`` launched it; True if one was.

    A new tracker is told the lock semaphores' names again, so it unregisters
    them quietly at exit (and unlinks them should the daemon be SIGKILLed).
    Where this CPython lacks the private attributes that tell a relaunch
    (``UNKNOWN``), the helpers are still relaunched, without that bookkeeping.
    """
    before = tracker_pid()
    with held_from_children():
        resource_tracker.ensure_running()
    relaunched = _relaunched(before, tracker_pid())
    if relaunched:
        for lock in (locks.zone, locks.slab):
            name = semaphore_name(lock)
            if name is not None:
                resource_tracker.register(name, "semaphore")
    if forkserver:
        before = forkserver_pid()
        with held_from_children():
            multiprocessing.forkserver.ensure_running()
        relaunched |= _relaunched(before, forkserver_pid())
    return relaunched


# The CPython privates the bookkeeping reads (3.8-3.13), one accessor each;
# tests/test_helpers.py fails when a supported CPython lacks one.
UNKNOWN = -1                      # a pid this CPython does not tell
_missing_logged: set[str] = set()


def tracker_pid() -> int | None:
    """The resource tracker's pid (None before it first starts), or UNKNOWN."""
    return _private(resource_tracker, "_resource_tracker", "_pid")


def forkserver_pid() -> int | None:
    """The forkserver's pid (None before it first starts), or UNKNOWN."""
    return _private(multiprocessing.forkserver, "_forkserver", "_forkserver_pid")


def semaphore_name(lock: Any) -> str | None:
    """The name of a multiprocessing lock's POSIX semaphore; None for a thread lock
    (or where this CPython does not tell it)."""
    if not isinstance(lock, multiprocessing.synchronize.SemLock):
        return None
    semlock = getattr(lock, "_semlock", None)
    if semlock is None:
        _log_missing("multiprocessing.synchronize.Lock._semlock")
        return None
    return getattr(semlock, "name", None)


def _private(module: Any, holder: str, attr: str) -> Any:
    obj = getattr(module, holder, None)
    if obj is None or not hasattr(obj, attr):
        _log_missing(f"{module.__name__}.{holder}.{attr}")
        return UNKNOWN
    return getattr(obj, attr)


def _relaunched(before: int | None, after: int | None) -> bool:
    return UNKNOWN not in (before, after) and after != before


def _log_missing(name: str) -> None:
    if name not in _missing_logged:
        _missing_logged.add(name)
        log.warning("this Python has no %s: a relaunched forkserver or resource tracker goes "
                    "unnoticed (the lock semaphores are not registered with a new tracker)", name)
