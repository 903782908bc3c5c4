"""The signals that control a run: SIGINT/SIGTERM stop it, SIGHUP reloads its config.

A terminal's ^C, timeout(1) and service managers signal the whole process
group, workers included; only the daemon acts on these signals, and it does
so from its main loop: a handler only raises a flag, so a signal at any
moment of start, run or shutdown cannot interrupt the daemon half-way
through creating, repairing or removing the arena.

The handlers live exactly as long as a run (``RunSignals`` restores what was
installed before), so a process that runs several daemons in sequence (an
experiment, a benchmark, the tests) has nothing to put back.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RunSignals:
    """Context manager: stop and reload requests recorded as flags while it is entered."""

    def __init__(self) -> None:
        self.stop = False             # SIGINT or SIGTERM arrived
        self.reload = False           # SIGHUP arrived and was not taken yet
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> RunSignals:
        handlers = {signal.SIGINT: self._on_stop, signal.SIGTERM: self._on_stop,
                    signal.SIGHUP: self._on_reload}
        for sig, handler in handlers.items():
            self._saved[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        wanted, self.reload = self.reload, False
        return wanted

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload = True


@contextlib.contextmanager
def held_from_children() -> Iterator[None]:
    """Processes started inside keep the group's signals blocked; this one gets them after.

    The forkserver, the resource tracker and every worker the forkserver forks
    inherit the blocked mask, so a group-wide ^C or SIGHUP never ends or
    interrupts them (the daemon stops and reloads them through the arena).
    Blocking rather than ignoring loses nothing here: a signal that arrives
    meanwhile reaches this process's handler, through another thread or, the
    block being this thread's, once it ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
