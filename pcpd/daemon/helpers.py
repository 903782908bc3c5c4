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

import multiprocessing.context
import multiprocessing.forkserver
from multiprocessing import resource_tracker
from typing import Any

from pcpd.daemon.signals import held_from_children
from workers.cpu import SharedLocks


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
    """
    tracker = _tracker()
    before = tracker._pid                                           # noqa: SLF001
    with held_from_children():
        resource_tracker.ensure_running()
    relaunched = tracker._pid != before                             # noqa: SLF001
    if relaunched:
        for lock in (locks.zone, locks.slab):
            name = getattr(getattr(lock, "_semlock", None), "name", None)
            if name is not None:
                resource_tracker.register(name, "semaphore")
    if forkserver:
        server = _forkserver()
        before = server._forkserver_pid                             # noqa: SLF001
        with held_from_children():
            multiprocessing.forkserver.ensure_running()
        relaunched |= server._forkserver_pid != before              # noqa: SLF001
    return relaunched


def _tracker() -> Any:
    """The process-wide ResourceTracker, typed for its ``_pid`` (CPython 3.8-3.13)."""
    return resource_tracker._resource_tracker                       # noqa: SLF001


def _forkserver() -> Any:
    """The process-wide ForkServer, typed for its ``_forkserver_pid``."""
    return multiprocessing.forkserver._forkserver                   # noqa: SLF001
