"""Logging from every pcpd process to one place, with the worker in every line.

Each worker life gets its own pipe.  The worker formats a record into one
line and writes it with a single ``send_bytes``; the daemon reads every pipe
in a thread of its own and writes the lines to its stderr handler.  A pipe
has no lock, so a worker killed while logging cannot wedge anyone else's
logging (a shared multiprocessing queue can: its writer lock dies with the
holder).  The worst a kill does is cut its own last line; the reader then
sees the pipe end and stops.
"""

from __future__ import annotations

import logging
import sys
import threading
from multiprocessing.connection import Connection

FORMAT = "%(asctime)s %(worker)s %(levelname)s %(message)s"
DATEFMT = "%H:%M:%S"


class _Tag(logging.Filter):
    """Give records that carry no worker tag the given one."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.tag
        return True


def configure_daemon_logging(stream=None) -> logging.Handler:
    """The daemon's root handler: one formatted line per record on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.addFilter(_Tag("daemon"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler


class _PipeHandler(logging.Handler):
    def __init__(self, conn: Connection, tag: str) -> None:
        super().__init__()
        self.conn = conn
        self.setFormatter(logging.Formatter(FORMAT, DATEFMT))
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
