"""Read a /proc/pagetypeinfo capture: free blocks and pageblocks per migratetype.

``pagetypeinfo_show()`` (mm/vmstat.c) prints, for every populated zone:

* ``Free pages count per migrate type at order  0 ... 10``, then one row per
  zone and migratetype: the number of free blocks on
  ``free_area[order].free_list[mt]``.  Since v5.6
  (``pagetypeinfo_showfree_print()``) a count stops at 100000 and prints as
  ``>100000``; such a count is read as 100000 and the zone marked ``capped``.
* ``Number of blocks type  Unmovable Movable ...``, then one row per zone:
  pageblocks of each migratetype (``pagetypeinfo_showblockcount()``).
* With CONFIG_PAGE_OWNER, ``Number of mixed blocks ...``: not needed here,
  its rows are read and ignored.

The migratetype columns are named by the header (``Unmovable``, ``Movable``,
``Reclaimable``, ``HighAtomic``, ``CMA``, ``Isolate``), so any kernel's set
of types reads.  Anything else is an InputError naming the file and line.
The file is read as ``pcpd.inputs`` reads files (a regular file or ``-``,
bounded lines, at most ``MAX_FILE_BYTES``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pcpd.errors import InputError
from pcpd.inputs import MAX_FILE_BYTES, bounded_lines, display_name, open_input, reason, too_big, too_long

OVERFLOW = 100_000                  # pagetypeinfo_showfree_print() stops counting here

_FREE_HEADER = re.compile(r"Free pages count per migrate type at order((?:\s+[0-9]{1,2})+)")
_FREE_ROW = re.compile(r"Node\s+([0-9]{1,6}),\s+zone\s+(\S+),\s+type\s+(\S+)((?:\s+>?[0-9]{1,20})+)")
_BLOCK_HEADER = re.compile(r"Number of blocks type((?:\s+[A-Za-z]+)+)")
_MIXED_HEADER = re.compile(r"Number of mixed blocks((?:\s+[A-Za-z]+)+)")
_BLOCK_ROW = re.compile(r"Node\s+([0-9]{1,6}),\s+zone\s+(\S+)((?:\s+[0-9]{1,20})+)")
_PREAMBLE = re.compile(r"(Page block order|Pages per block):\s+([0-9]{1,3})")
_BINARY = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


@dataclass
class ZonePageTypes:
    """One zone's rows: free blocks per migratetype and order, pageblocks per migratetype."""

    node: int
    zone: str
    free: dict[str, list[int]] = field(default_factory=dict)    # type -> blocks per order
    blocks: dict[str, int] = field(default_factory=dict)        # type -> pageblocks
    capped: bool = False                # a free count printed as ">100000"

    def free_pages(self, mtype: str) -> int:
        return sum(n << order for order, n in enumerate(self.free.get(mtype, ())))


@dataclass
class PageTypeInfo:
    """The whole capture: pageblock order and every zone's rows, by (node, zone name)."""

    pageblock_order: int | None = None
    zones: dict[tuple[int, str], ZonePageTypes] = field(default_factory=dict)

    def zone(self, node: int, name: str) -> ZonePageTypes | None:
        return self.zones.get((node, name))


def parse_pagetypeinfo_lines(lines: Iterable[str], source: str) -> PageTypeInfo:
    """Parse the lines of /proc/pagetypeinfo; InputError ``source:LINE: problem``."""
    info = PageTypeInfo()
    section = ""                        # "free", "blocks" or "mixed"
    columns: list[str] = []
    n = 0
    for n, raw in enumerate(lines, 1):
        if too_long(raw):
            raise InputError(f"{source}:{n}: a line too long for /proc/pagetypeinfo")
        line = raw.strip()
        if _BINARY.search(line):
            raise InputError(f"{source}:{n}: binary data, not a /proc/pagetypeinfo text")
        if not line:
            continue
        if m := _PREAMBLE.fullmatch(line):
            if m[1] == "Page block order":
                info.pageblock_order = int(m[2])
        elif m := _FREE_HEADER.fullmatch(line):
            section, columns = "free", m[1].split()
        elif m := _BLOCK_HEADER.fullmatch(line):
            section, columns = "blocks", m[1].split()
        elif m := _MIXED_HEADER.fullmatch(line):
            section, columns = "mixed", m[1].split()
        elif section == "free" and (m := _FREE_ROW.fullmatch(line)):
            zone = _zone(info, m)
            values = m[4].split()
            if len(values) != len(columns):
                raise InputError(f"{source}:{n}: {len(values)} counts under {len(columns)} orders")
            zone.capped |= any(v.startswith(">") for v in values)
            if m[3] in zone.free:
                raise InputError(f"{source}:{n}: second {m[3]} row for Node {zone.node}, zone {zone.zone}")
            zone.free[m[3]] = [int(v.lstrip(">")) for v in values]
        elif section in ("blocks", "mixed") and (m := _BLOCK_ROW.fullmatch(line)):
            values = m[3].split()
            if len(values) != len(columns):
                raise InputError(f"{source}:{n}: {len(values)} counts under {len(columns)} types")
            if section == "blocks":
                _zone(info, m).blocks = dict(zip(columns, map(int, values)))
        else:
            raise InputError(f"{source}:{n}: unexpected {line[:60]!r}, not a /proc/pagetypeinfo line")
    if not info.zones:
        raise InputError(f"{source}:{max(n, 1)}: no zone rows, not a /proc/pagetypeinfo capture")
    return info


def _zone(info: PageTypeInfo, m: re.Match[str]) -> ZonePageTypes:
    key = (int(m[1]), m[2])
    if key not in info.zones:
        info.zones[key] = ZonePageTypes(*key)
    return info.zones[key]


def read_pagetypeinfo(path: str) -> PageTypeInfo:
    """Read and parse a pagetypeinfo file (``-``: standard input)."""
    name = display_name(path)
    f = io.TextIOWrapper(open_input(path), encoding="utf-8", errors="replace", newline="\n")
    try:
        with f:
            return parse_pagetypeinfo_lines(_capped_lines(f, name), name)
    except OSError as err:
        raise InputError(f"{name}: cannot read: {reason(err)}") from None


def _capped_lines(f: io.TextIOWrapper, source: str) -> Iterable[str]:
    size = 0
    for line in bounded_lines(f):
        size += len(line)
        if size > MAX_FILE_BYTES:
            raise too_big(source, MAX_FILE_BYTES)
        yield line
