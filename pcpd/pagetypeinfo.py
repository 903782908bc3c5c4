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
    parser = _Parser(source)
    n = 0
    for n, raw in enumerate(lines, 1):
        parser.feed(n, _text_line(raw, source, n))
    if not parser.info.zones:
        raise InputError(f"{source}:{max(n, 1)}: no zone rows, not a /proc/pagetypeinfo capture")
    return parser.info


def _text_line(raw: str, source: str, n: int) -> str:
    """``raw`` stripped; InputError where it is too long or not text."""
    if too_long(raw):
        raise InputError(f"{source}:{n}: a line too long for /proc/pagetypeinfo")
    line = raw.strip()
    if _BINARY.search(line):
        raise InputError(f"{source}:{n}: binary data, not a /proc/pagetypeinfo text")
    return line


# the section headers, each with the section its rows belong to
_HEADERS = (("free", _FREE_HEADER), ("blocks", _BLOCK_HEADER), ("mixed", _MIXED_HEADER))


@dataclass
class _Parser:
    """The capture read so far, and the section (and its header's columns) a row is in."""

    source: str
    info: PageTypeInfo = field(default_factory=PageTypeInfo)
    section: str = ""                   # "free", "blocks" or "mixed"
    columns: list[str] = field(default_factory=list)

    def feed(self, n: int, line: str) -> None:
        """Line ``n``, stripped: a blank, a header, a row of the current section, or an error."""
        if not line or self._header(line):
            return
        if self.section == "free" and (m := _FREE_ROW.fullmatch(line)):
            self._free_row(n, m)
        elif self.section in ("blocks", "mixed") and (m := _BLOCK_ROW.fullmatch(line)):
            self._block_row(n, m)
        else:
            raise InputError(f"{self.source}:{n}: unexpected {line[:60]!r}, not a /proc/pagetypeinfo line")

    def _header(self, line: str) -> bool:
        """Take a preamble or section header line; False if ``line`` is neither."""
        if m := _PREAMBLE.fullmatch(line):
            if m[1] == "Page block order":
                self.info.pageblock_order = int(m[2])
            return True
        for section, header in _HEADERS:
            if m := header.fullmatch(line):
                self.section, self.columns = section, m[1].split()
                return True
        return False

    def _free_row(self, n: int, m: re.Match[str]) -> None:
        """``Node 0, zone Normal, type Movable  29 142 ...``: free blocks per order."""
        zone = _zone(self.info, m)
        values = self._counts(n, m[4], "orders")
        zone.capped |= any(v.startswith(">") for v in values)
        if m[3] in zone.free:
            raise InputError(f"{self.source}:{n}: second {m[3]} row for Node {zone.node}, zone {zone.zone}")
        zone.free[m[3]] = [int(v.lstrip(">")) for v in values]

    def _block_row(self, n: int, m: re.Match[str]) -> None:
        """``Node 0, zone Normal  61 10660 ...``: pageblocks per type (mixed ones: checked, not kept)."""
        values = self._counts(n, m[3], "types")
        if self.section == "blocks":
            _zone(self.info, m).blocks = dict(zip(self.columns, map(int, values)))

    def _counts(self, n: int, text: str, unit: str) -> list[str]:
        """A row's counts, one under each column of its header."""
        values = text.split()
        if len(values) != len(self.columns):
            raise InputError(f"{self.source}:{n}: {len(values)} counts under {len(self.columns)} {unit}")
        return values


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
