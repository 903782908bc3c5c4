"""Opening the files pcpd reads: kmem traces, zoneinfo captures and results files.

These files come from the user, or from whoever could write where the user
points pcpd, so neither their kind nor their size can stall or exhaust it:

* Only regular files are opened, and ``-``, standard input.  A FIFO without
  a writer would block the open (and the command) forever, a device such as
  /dev/zero never ends, and a directory is a mistake: each is refused with a
  one-line InputError (exit 2).  The path is checked with ``os.stat`` before
  it is opened, and the file it opened is checked again with ``fstat``, so a
  path swapped between the two cannot slip a FIFO in; the open itself is
  non-blocking for the same reason.
* Text is read a line at a time with a bounded ``readline``: a line of more
  than ``MAX_LINE`` characters is cut there and the rest of it read and
  dropped in pieces (``bounded_lines``), so memory stays bounded whatever
  the input.  What a cut line means is the reader's decision: a trace counts
  it as a skipped line, a zoneinfo capture is refused.
* A file that is read whole (results JSON, a zoneinfo capture) is refused
  past ``MAX_FILE_BYTES``.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import Protocol

from pcpd.errors import InputError

STDIN = "-"
STDIN_NAME = "<stdin>"
MAX_LINE = 64 * 1024              # characters; kmem trace and zoneinfo lines are under 300
MAX_FILE_BYTES = 64 * 1024 * 1024  # results hold ~6.5 KiB a run: some 10,000 runs
READ_CHUNK = 1 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def display_name(path: str | os.PathLike[str]) -> str:
    """How messages and reports name ``path``: ``<stdin>`` for ``-``."""
    name = os.fspath(path)
    return STDIN_NAME if name == STDIN else name


def open_input(path: str | os.PathLike[str], action: str = "cannot read") -> io.BufferedReader:
    """Open a regular file (or ``-``, standard input) for reading in binary.

    ``action`` starts the reason of the InputError raised for a file that
    cannot be opened or is not a regular file: ``PATH: ACTION: why``.
    """
    name = display_name(path)
    if os.fspath(path) == STDIN:
        # fd 0 itself, left open: whatever sys.stdin has become, and peekable
        return open(0, "rb", closefd=False)
    try:
        _refuse_special(name, action, os.stat(path).st_mode)
        # O_NONBLOCK: if a FIFO replaced the file since the stat, the open still returns
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise InputError(f"{name}: {action}: {reason(err)}") from None
    try:
        _refuse_special(name, action, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _refuse_special(name: str, action: str, mode: int) -> None:
    for test, kind in _KINDS:
        if test(mode):
            raise InputError(f"{name}: {action}: {kind}, not a regular file "
                             f"(give a file, or {STDIN} for standard input)")
    if not stat.S_ISREG(mode):
        raise InputError(f"{name}: {action}: not a regular file")


def read_capped(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES,
                action: str = "cannot read") -> bytes:
    """The whole content of a file read by ``open_input``; InputError past ``limit`` bytes."""
    name = display_name(path)
    chunks: list[bytes] = []
    size = 0
    f = open_input(path, action)
    try:
        # in pieces: one read(limit + 1) would allocate the whole limit for any file
        while size <= limit and (chunk := f.read(min(READ_CHUNK, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise InputError(f"{name}: {action}: {reason(err)}") from None
    finally:
        f.close()
    if size > limit:
        raise too_big(name, limit)
    return b"".join(chunks)


def too_big(name: str, limit: int = MAX_FILE_BYTES) -> InputError:
    """The error for a file past ``limit`` bytes."""
    size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
    return InputError(f"{name}: larger than {size}, more than pcpd reads of such a file")


class LineReader(Protocol):
    """What ``bounded_lines`` reads: a text stream's ``readline``."""

    def readline(self, size: int = -1, /) -> str: ...


def bounded_lines(f: LineReader, limit: int = MAX_LINE) -> Iterator[str]:
    """The lines of ``f``, each with its newline, holding at most one line of ``limit`` characters.

    A line longer than ``limit`` characters (newline not counted) is yielded
    cut to ``limit + 1`` characters and without its newline, which is how
    ``too_long`` tells it apart; the rest of it is read and dropped when the
    next line is asked for, so a reader that refuses the cut line stops
    there, even on an endless line.
    """
    readline = f.readline
    size = limit + 1                   # room for the newline
    while line := readline(size):
        yield line
        if len(line) == size and line[-1] != "\n":
            while (rest := readline(size)) and rest[-1] != "\n":
                pass


def too_long(line: str, limit: int = MAX_LINE) -> bool:
    """Whether ``line`` (newline not counted) is longer than ``limit`` characters."""
    return len(line) > limit and len(line.rstrip("\r\n")) > limit


def reason(err: BaseException) -> str:
    """The one-line reason of an I/O error: its strerror, else its text, else its type."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
