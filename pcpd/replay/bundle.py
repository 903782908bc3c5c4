"""Capture bundles: one trace with the zone state around it, as ``pcpd capture`` writes it.

A bundle is a directory, or a tar file (plain, gzip or xz) of the same
members at its top level:

==========================  ==================================================
``metadata.json``           ``{"format": "pcpd-capture", "version": 1, ...}``:
                            ``system_wide`` (``perf record -a``), ``command``,
                            ``window`` (the trace clock's seconds at the two
                            snapshots), ``clock``, ``events``, ``kernel``,
                            ``exit_status``, ``created``, ``pcpd``
``trace.txt.gz``            ``perf script`` text (``.txt``, ``.txt.xz`` also read)
``zoneinfo-before.txt``     /proc/zoneinfo when the window began
``zoneinfo-after.txt``      ... and when it ended
``pagetypeinfo-before.txt`` /proc/pagetypeinfo, likewise (optional: root only)
``pagetypeinfo-after.txt``
==========================  ==================================================

``pcpd replay BUNDLE`` reads the trace and takes the zoneinfo and
pagetypeinfo from the bundle (``--zoneinfo`` and ``--pagetypeinfo`` still
override), replays only the events inside the window (the capture records
with ``perf record -k CLOCK_MONOTONIC`` and takes the snapshots on the same
clock, so the start state is the one the first replayed event saw), knows
whether the trace is whole-system from the metadata, and compares the
model's PCPs at the end with ``zoneinfo-after.txt``.

A tar is read member by member into a private temporary directory: only
the names above, only regular files, each within ``MAX_MEMBER_BYTES``; a
member that is a link, a directory or a path is refused.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pcpd.errors import InputError
from pcpd.inputs import display_name, open_input, read_capped, reason

FORMAT = "pcpd-capture"
VERSION = 1
METADATA = "metadata.json"
TRACES = ("trace.txt.gz", "trace.txt.xz", "trace.txt")
ZONEINFO_BEFORE, ZONEINFO_AFTER = "zoneinfo-before.txt", "zoneinfo-after.txt"
PAGETYPEINFO_BEFORE, PAGETYPEINFO_AFTER = "pagetypeinfo-before.txt", "pagetypeinfo-after.txt"
MEMBERS = (METADATA, *TRACES, ZONEINFO_BEFORE, ZONEINFO_AFTER, PAGETYPEINFO_BEFORE,
           PAGETYPEINFO_AFTER)
TAR_COMPRESSIONS: tuple[tuple[bytes, Literal["r:gz", "r:xz"]], ...] = (
    (b"\x1f\x8b", "r:gz"), (b"\xfd7zXZ\x00", "r:xz"))
TAR_BLOCK, USTAR_OFFSET = 512, 257     # a tar header's size, and where its "ustar" magic sits
MAX_METADATA_BYTES = 1 << 20
MAX_MEMBER_BYTES = 16 << 30        # a trace member; the others are a few KiB


@dataclass(frozen=True)
class Bundle:
    """A bundle's files (paths on disk) and what its metadata says."""

    source: str                        # the bundle as named on the command line
    trace: str
    zoneinfo_before: str | None
    zoneinfo_after: str | None
    pagetypeinfo_before: str | None
    pagetypeinfo_after: str | None
    system_wide: bool
    window: tuple[float, float] | None
    metadata: dict[str, Any]


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a bundle: a directory, or a tar file.  Never raises."""
    name = os.fspath(path)
    if name == "-":
        return False
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        return True
    if not stat.S_ISREG(mode):
        return False
    # a tar whose first member is one of a bundle's (a run of zero bytes reads as an empty tar)
    try:
        with open_input(name) as f, tarfile.open(fileobj=f, mode=_tar_mode(f)) as tar:
            first = tar.next()
            return first is not None and first.name.removeprefix("./") in MEMBERS
    except (InputError, OSError, EOFError, tarfile.TarError, ValueError, lzma.LZMAError, zlib.error):
        return False


def _tar_mode(raw: io.BufferedReader) -> Literal["r:", "r:gz", "r:xz"]:
    """tarfile's mode for ``raw``, chosen by its first bytes.

    Not ``r:*``: that tries every decompressor first, and the xz one reads a
    large file of zeros to its end before it gives up (seconds per 8 MiB).
    """
    head = raw.peek(TAR_BLOCK)[:TAR_BLOCK]
    for magic, mode in TAR_COMPRESSIONS:
        if head.startswith(magic):
            return mode
    if head[USTAR_OFFSET:USTAR_OFFSET + 5] != b"ustar":
        raise tarfile.ReadError("not a tar file")
    return "r:"


def open_bundle(path: str | os.PathLike[str], stack: ExitStack) -> Bundle:
    """The bundle at ``path``; a tar is unpacked into a directory ``stack`` removes.

    Raises InputError (one line, naming the bundle) for a directory that is
    not a bundle, a damaged tar, or metadata that is not a pcpd capture's.
    """
    name = display_name(path)
    if os.path.isdir(path):
        root = Path(path)
    else:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pcpd-bundle-"))
        _unpack(name, path, Path(tmp))
        root = Path(tmp)
    meta_path = root / METADATA
    if not meta_path.is_file():
        raise InputError(f"{name}: a directory or tar without {METADATA}: not a regular file, nor "
                         f"a capture bundle (pcpd capture writes one)")
    metadata = _metadata(name, read_capped(meta_path, MAX_METADATA_BYTES))
    trace = next((root / t for t in TRACES if (root / t).is_file()), None)
    if trace is None:
        raise InputError(f"{name}: the bundle has no trace ({' or '.join(TRACES)})")

    def member(file: str) -> str | None:
        return str(root / file) if (root / file).is_file() else None

    return Bundle(name, str(trace), member(ZONEINFO_BEFORE), member(ZONEINFO_AFTER),
                  member(PAGETYPEINFO_BEFORE), member(PAGETYPEINFO_AFTER),
                  metadata["system_wide"], _window(name, metadata.get("window")), metadata)


def _metadata(name: str, raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{name}: {METADATA} is not JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{name}: {METADATA} is not a pcpd capture's (format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise InputError(f"{name}: capture bundle version {meta.get('version')!r}; this pcpd "
                         f"reads version {VERSION}")
    if not isinstance(meta.get("system_wide"), bool):
        raise InputError(f"{name}: {METADATA}: system_wide must be true or false")
    return meta


def _window(name: str, window: Any) -> tuple[float, float] | None:
    if window is None:
        return None
    if (not isinstance(window, dict) or not all(isinstance(window.get(k), (int, float))
                                                and not isinstance(window.get(k), bool)
                                                for k in ("start", "end"))
            or window["start"] > window["end"]):
        raise InputError(f"{name}: {METADATA}: window must be {{\"start\": S, \"end\": E}} "
                         f"with S <= E")
    return float(window["start"]), float(window["end"])


def _unpack(name: str, path: str | os.PathLike[str], into: Path) -> None:
    """The known members of a tar into ``into``: regular files only, nothing else."""
    try:
        with (open_input(path, "cannot read bundle") as raw,
              tarfile.open(fileobj=raw, mode=_tar_mode(raw)) as tar):
            for info in tar:
                base = info.name.removeprefix("./")
                if base not in MEMBERS:
                    continue                        # ignored, whatever it is
                if not info.isreg():
                    raise InputError(f"{name}: member {info.name!r} is not a regular file")
                if info.size > MAX_MEMBER_BYTES:
                    raise InputError(f"{name}: member {info.name!r} is larger than "
                                     f"{MAX_MEMBER_BYTES >> 30} GiB")
                src = tar.extractfile(info)
                if src is None:
                    raise InputError(f"{name}: member {info.name!r} cannot be read")
                with src, open(into / base, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InputError(f"{name}: cannot read bundle: {reason(err)}") from None
