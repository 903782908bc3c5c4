"""Logging from every pcpd process to one place, with the worker in every line.

Each worker life gets its own pipe.  The worker formats a record into one
line and writes it with a single ``send_bytes``; the daemon reads every pipe
in a thread of its own and writes the lines to its stderr handler.  A pipe
has no lock, so a worker killed while logging cannot wedge anyone else's
logging (a shared multiprocessing queue can: its writer lock dies with the
holder).  The worst a kill does is cut its own last line; the reader then
sees the pipe end and stops.

Under systemd, when stderr is the journal (``$JOURNAL_STREAM`` names its
device and inode), each line starts with its syslog priority (``<3>`` for an
error, sd-daemon(3)) and no time, which journald adds; elsewhere each line
starts with the local date and time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from multiprocessing.connection import Connection

FORMAT = "%(asctime)s %(worker)s %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
JOURNAL_FORMAT = "<%(priority)d>%(worker)s %(levelname)s %(message)s"
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def to_journal(fd: int = 2) -> bool:
    """Whether ``fd`` is the stream systemd connected to the journal."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def formatter(fd: int = 2) -> logging.Formatter:
    """Lines for the journal (priority, no time) or for a terminal or file (date and time)."""
    if to_journal(fd):
        return logging.Formatter(JOURNAL_FORMAT)
    return logging.Formatter(FORMAT, DATEFMT)


class _Tag(logging.Filter):
    """Give records that carry no worker tag the given one."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.tag
        record.priority = PRIORITIES.get(record.levelno, 6)
        return True


def configure_daemon_logging(stream=None) -> logging.Handler:
    """The daemon's root handler: one formatted line per record on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    try:
        fd = handler.stream.fileno()
    except (AttributeError, OSError, ValueError):   # an in-memory stream is never the journal
        fd = -1
    handler.setFormatter(formatter(fd))
    handler.addFilter(_Tag("daemon"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler


class _PipeHandler(logging.Handler):
    def __init__(self, conn: Connection, tag: str) -> None:
        super().__init__()
        self.conn = conn
        self.setFormatter(formatter())     # the worker's fd 2 is the daemon's: same answer
        self.addFilter(_Tag(tag))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send_bytes(self.format(record).encode())
        except OSError:                    # the daemon is gone; nobody to tell
            pass


def configure_worker_logging(conn: Connection | None, tag: str) -> None:
    """In a worker: every record goes down this worker's pipe."""
    root = logging.getLogger()
    root.handlers[:] = [_PipeHandler(conn, tag)] if conn is not None else []
    root.setLevel(logging.INFO)


class LogReader:
    """Daemon side of one worker's pipe: a thread copying its lines to stderr."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.thread = threading.Thread(target=self._copy, name=f"log-{name}", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        out = logging.getLogger().handlers
        while True:
            try:
                line = self.conn.recv_bytes().decode(errors="replace")
            except (EOFError, OSError):
                break
            for handler in out:
                stream = getattr(handler, "stream", None)
                if stream is not None:
                    handler.acquire()             # lines from many threads stay whole
                    try:
                        stream.write(line + "\n")
                        stream.flush()
                    finally:
                        handler.release()
        self.conn.close()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
