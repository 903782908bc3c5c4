"""Read a /proc/zoneinfo capture and check its PCP values against pcpd.model.sizing.

``parse_zoneinfo()`` accepts the layouts ``zoneinfo_show_print()`` has
printed from 4.x to 6.18: with or without ``boost``, ``promo``, ``cma`` and
the 4.x ``scanned`` line, and with the ``high_min``/``high_max`` pageset
lines of 6.7+ or without them.  Anything else is an InputError
naming the file and line.

``compare_zones()`` asks each kernel era in ``pcpd.kernel.ERAS`` what it
would set for a populated zone, given the zone's ``managed`` pages, its
captured low watermark and the number of CPUs on its node, and reports
which eras reproduce the capture.

nsplit (CPUs on the zone's node): every zone lists a pageset for every
online CPU, remote nodes included, and zoneinfo does not say which node a
CPU belongs to.  With one node, nsplit is the number of ``cpu:`` blocks.
With several, CPUs are assumed to be spread evenly over the nodes that have
populated zones: nsplit = CPUs // nodes.  A memory-only node breaks that
assumption (its zones split over all CPUs) and shows up as a mismatch.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from pcpd.errors import InputError
from pcpd.inputs import (
    MAX_FILE_BYTES,
    MAX_LINE,
    bounded_lines,
    display_name,
    open_input,
    reason,
    too_big,
    too_long,
)
from pcpd.kernel import ERAS, HIGH_BOUNDS_ERAS
from pcpd.model.sizing import PcpLimits, pcp_limits

_NUM = r"(-?[0-9]{1,20})"  # %lu / %ld / %d; the bound keeps int() away from huge digit runs
_NODE_ZONE = re.compile(r"Node ([0-9]{1,6}), zone +(\S+)")
_ZONE_FIELD = re.compile(
    r"(pages free|boost|min|low|high|promo|scanned|spanned|present|managed|cma) +" + _NUM)
_PROTECTION = re.compile(r"protection: \(-?[0-9]+(, -?[0-9]+)*\)")
_CPU = re.compile(r"cpu: " + _NUM)
_PCP_FIELD = re.compile(r"(count|high|batch|high_min|high_max): +" + _NUM)
_THRESHOLD = re.compile(r"vm stats threshold: " + _NUM)
_ZONE_TAIL = re.compile(r"([a-z_]+): +" + _NUM)  # node_unreclaimable, start_pfn, ...
_COUNTER = re.compile(r"[a-z][a-z0-9_]* +-?[0-9]+")  # per-node and per-zone vmstat items
_BINARY = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")

_REQUIRED_FIELDS = ("pages free", "min", "low", "high", "spanned", "present", "managed")
_PCP_REQUIRED = ("count", "high", "batch")
_PCP_BOUNDS = ("high_min", "high_max")
_PCP_NAMES = ("cpu",) + _PCP_REQUIRED + _PCP_BOUNDS


@dataclass(frozen=True)
class Pageset:
    """One CPU's ``struct per_cpu_pages`` for a zone, as printed.

    ``high_min``/``high_max`` are None in pre-6.7 layouts.  In 6.7+ ``high``
    is the current auto-tuned value, 0 until the CPU first uses the zone.
    """

    cpu: int
    count: int
    high: int
    batch: int
    high_min: int | None = None
    high_max: int | None = None
    stat_threshold: int | None = None


@dataclass(frozen=True)
class ZoneWatermarks:
    """The watermark lines of one zone; ``promo`` and ``boost`` are None where not printed."""

    min: int
    low: int
    high: int
    promo: int | None = None
    boost: int | None = None


@dataclass(frozen=True)
class ZoneInfo:
    """One ``Node N, zone NAME`` block of /proc/zoneinfo.

    The captured pageset values (``batch``, ``high``, ``high_min``,
    ``high_max``) are the value every CPU shows, or None when the CPUs
    disagree or the layout lacks the line.
    """

    node: int
    zone: str
    pages_free: int
    spanned: int
    present: int
    managed: int
    watermarks: ZoneWatermarks
    pagesets: tuple[Pageset, ...]

    @property
    def populated(self) -> bool:
        """Whether the kernel printed pagesets, i.e. ``populated_zone()``."""
        return bool(self.pagesets)

    @property
    def cpus(self) -> int:
        return len(self.pagesets)

    @property
    def has_high_bounds(self) -> bool:
        """True for the 6.7+ layout, with ``high_min``/``high_max`` lines."""
        return any(p.high_min is not None for p in self.pagesets)

    @property
    def batch(self) -> int | None:
        return self._shared("batch")

    @property
    def high(self) -> int | None:
        return self._shared("high")

    @property
    def high_min(self) -> int | None:
        return self._shared("high_min")

    @property
    def high_max(self) -> int | None:
        return self._shared("high_max")

    def _shared(self, field: str) -> int | None:
        values = {getattr(p, field) for p in self.pagesets}
        return values.pop() if len(values) == 1 else None


class _ZoneBuilder:
    """Collects one zone's lines; ``finish()`` checks completeness."""

    def __init__(self, source: str, node: int, zone: str) -> None:
        self.source, self.node, self.zone = source, node, zone
        self.fields: dict[str, int] = {}
        self.section = "header"  # then "pagesets", then "tail"
        self.pagesets: list[tuple[int, dict[str, int]]] = []  # (line, fields)
        self.tail: dict[str, int] = {}

    def error(self, line: int, problem: str) -> InputError:
        return InputError(f"{self.source}:{line}: {problem}")

    def feed(self, n: int, text: str) -> None:
        if self.section == "header" and self._header_line(n, text):
            return
        if self.section == "pagesets" and self._pageset_line(n, text):
            return
        m = _ZONE_TAIL.fullmatch(text)
        if self.section != "header" and m and m[1] not in _PCP_NAMES:
            self._close_pageset()
            self.section = "tail"
            self._store(self.tail, m[1], int(m[2]), n)
            return
        raise self.error(n, f"unexpected {text[:60]!r} in the {self.section} of "
                            f"Node {self.node}, zone {self.zone}")

    def _header_line(self, n: int, text: str) -> bool:
        if m := _ZONE_FIELD.fullmatch(text):
            self._store(self.fields, m[1], int(m[2]), n)
        elif text == "pagesets":
            self.section = "pagesets"
        else:
            return bool(text == "per-node stats" or _PROTECTION.fullmatch(text)
                        or _COUNTER.fullmatch(text))
        return True

    def _pageset_line(self, n: int, text: str) -> bool:
        if m := _CPU.fullmatch(text):
            self._close_pageset()
            self.pagesets.append((n, {"cpu": int(m[1])}))
        elif self.pagesets and (m := _PCP_FIELD.fullmatch(text)):
            self._store(self.pagesets[-1][1], m[1], int(m[2]), n)
        elif self.pagesets and (m := _THRESHOLD.fullmatch(text)):
            self._store(self.pagesets[-1][1], "stat_threshold", int(m[1]), n)
        else:
            return False
        return True

    def _close_pageset(self) -> None:
        if not self.pagesets:
            return
        n, fields = self.pagesets[-1]
        wanted = _PCP_REQUIRED + (_PCP_BOUNDS if any(k in fields for k in _PCP_BOUNDS) else ())
        if missing := [k for k in wanted if k not in fields]:
            raise self.error(n, f"cpu {fields['cpu']} pageset of Node {self.node}, zone "
                                f"{self.zone} lacks {', '.join(missing)} (truncated?)")

    def _store(self, into: dict[str, int], key: str, value: int, n: int) -> None:
        if key in into:
            raise self.error(n, f"second {key!r} line in Node {self.node}, zone {self.zone}")
        into[key] = value

    def finish(self, n: int) -> ZoneInfo:
        """Build the zone; *n* is the line that ended it (next header or end of file)."""
        self._close_pageset()
        self._check_complete(n)
        pagesets = tuple(Pageset(**fields) for _, fields in self.pagesets)
        self._check_pagesets(n, pagesets)
        f = self.fields
        watermarks = ZoneWatermarks(f["min"], f["low"], f["high"], f.get("promo"), f.get("boost"))
        return ZoneInfo(self.node, self.zone, f["pages free"], f["spanned"],
                        f["present"], f["managed"], watermarks, pagesets)

    def _check_complete(self, n: int) -> None:
        """A zone cut short (a truncated capture) lacks one of these."""
        where = f"Node {self.node}, zone {self.zone}"
        if missing := [k for k in _REQUIRED_FIELDS if k not in self.fields]:
            raise self.error(n, f"{where} has no {', '.join(repr(k) for k in missing)} "
                                f"line (truncated?)")
        if self.fields["present"] and not self.pagesets:
            raise self.error(n, f"{where} has present {self.fields['present']} but no "
                                f"pagesets (truncated?)")
        if self.pagesets and "start_pfn" not in self.tail:
            raise self.error(n, f"{where} has no 'start_pfn:' line (truncated?)")

    def _check_pagesets(self, n: int, pagesets: tuple[Pageset, ...]) -> None:
        where = f"Node {self.node}, zone {self.zone}"
        if len({p.cpu for p in pagesets}) != len(pagesets):
            raise self.error(n, f"{where} lists a CPU twice")
        if len({p.high_min is None for p in pagesets}) > 1:
            raise self.error(n, f"{where} mixes pagesets with and without high_min/high_max")


def parse_zoneinfo(text: str, source: str) -> list[ZoneInfo]:
    """Parse the text of /proc/zoneinfo; *source* names it in error messages.

    Returns every zone, populated or not, in file order.  Raises InputError
    ``source:LINE: problem`` for binary, garbled or truncated input.
    """
    return parse_zoneinfo_lines(text.split("\n"), source)


def parse_zoneinfo_lines(lines: Iterable[str], source: str) -> list[ZoneInfo]:
    """``parse_zoneinfo`` of the lines that ``text.split("\\n")`` gives, one at a time.

    A line of more than ``pcpd.inputs.MAX_LINE`` characters is refused
    before it is looked at: no zoneinfo line comes near it.
    """
    zones: list[ZoneInfo] = []
    current: _ZoneBuilder | None = None
    n = 0
    for n, raw in enumerate(lines, 1):
        if too_long(raw):
            raise InputError(f"{source}:{n}: a line of more than {MAX_LINE} characters, "
                             f"not a /proc/zoneinfo text")
        line = raw.rstrip("\r")
        if _BINARY.search(line):
            raise InputError(f"{source}:{n}: binary data, not a /proc/zoneinfo text")
        stripped = line.strip()
        if not stripped:
            continue
        if m := _NODE_ZONE.fullmatch(stripped):
            if current:
                zones.append(current.finish(n))
            current = _ZoneBuilder(source, int(m[1]), m[2])
        elif current is None:
            raise InputError(f"{source}:{n}: expected 'Node N, zone NAME', got {stripped[:60]!r}")
        else:
            current.feed(n, stripped)
    if current is None:
        raise InputError(f"{source}:1: empty, expected 'Node N, zone NAME'")
    zones.append(current.finish(n))
    return zones


def read_zoneinfo(path: str) -> list[ZoneInfo]:
    """Read and parse a zoneinfo file (``-``: standard input); an unreadable file is an InputError.

    The file is opened and read as ``pcpd.inputs`` reads files: a regular
    file or ``-``, a line at a time, at most ``MAX_FILE_BYTES`` of it.
    """
    name = display_name(path)
    # Undecodable bytes become U+FFFD, which the parser reports with its line;
    # newline="\n": lines end at "\n" only, as text.split("\n") ends them.
    f = io.TextIOWrapper(open_input(path), encoding="utf-8", errors="replace", newline="\n")
    try:
        with f:
            return parse_zoneinfo_lines(_split_lines(f, name), name)
    except OSError as err:
        raise InputError(f"{name}: cannot read: {reason(err)}") from None


def _split_lines(f: TextIO, source: str) -> Iterator[str]:
    """The lines of ``f`` as ``f.read().split("\\n")`` would give them, within MAX_FILE_BYTES."""
    size = 0
    for line in bounded_lines(f):
        size += len(line)
        if size > MAX_FILE_BYTES:
            raise too_big(source, MAX_FILE_BYTES)
        if line[-1] != "\n":          # the last line, or one cut at MAX_LINE (refused)
            yield line
            return
        yield line[:-1]
    yield ""


@dataclass(frozen=True)
class ZoneComparison:
    """What each era predicts for one populated zone, and which eras match.

    ``era`` is the era reported for the zone: the newest era that matches
    every populated zone of the file when it matches this one, else this
    zone's newest match, else the closest era with the capture's layout.
    ``mismatches`` explains how ``era``'s model differs; it is
    empty exactly when ``match`` is true.  The closest era has the fewest
    mismatched fields, then the smallest relative error.
    """

    zone: ZoneInfo
    nsplit: int
    models: tuple[tuple[str, PcpLimits], ...]
    eras: tuple[str, ...]
    era: str
    mismatches: tuple[str, ...]

    @property
    def match(self) -> bool:
        return not self.mismatches

    @property
    def model(self) -> PcpLimits:
        return dict(self.models)[self.era]


def compare_zones(zones: Sequence[ZoneInfo]) -> list[ZoneComparison]:
    """Compare every populated zone with each era's sizing (see the module docstring)."""
    populated = [z for z in zones if z.populated]
    nodes = len({z.node for z in populated})
    checked = [_check_zone(zone, max(1, zone.cpus // nodes)) for zone in populated]
    file_era = _file_era(checked)
    return [_comparison(zone, nsplit, models, problems, file_era)
            for zone, nsplit, models, problems in checked]


_Checked = tuple[ZoneInfo, int, dict[str, PcpLimits], dict[str, list[str]]]


def _matching_eras(problems: dict[str, list[str]]) -> tuple[str, ...]:
    """The eras whose model reproduces a zone, oldest first."""
    return tuple(era for era in ERAS if not problems[era])


def _file_era(checked: list[_Checked]) -> str | None:
    """The newest era that reproduces every populated zone of the file, if any does."""
    common = set(ERAS)
    for _, _, _, problems in checked:
        common &= set(_matching_eras(problems))
    return max(common, key=ERAS.index, default=None)


def _comparison(zone: ZoneInfo, nsplit: int, models: dict[str, PcpLimits],
                problems: dict[str, list[str]], file_era: str | None) -> ZoneComparison:
    eras = _matching_eras(problems)
    era = _reported_era(zone, eras, file_era, models, problems)
    return ZoneComparison(zone, nsplit, tuple(models.items()), eras, era, tuple(problems[era]))


def _check_zone(zone: ZoneInfo, nsplit: int) -> _Checked:
    """Each era's model of ``zone``, and how the capture differs from it."""
    models = {era: pcp_limits(era, zone.managed, zone.watermarks.low, nsplit) for era in ERAS}
    problems = {era: _mismatches(zone, era, models[era]) for era in ERAS}
    return zone, nsplit, models, problems


def _reported_era(zone: ZoneInfo, eras: tuple[str, ...], file_era: str | None,
                  models: dict[str, PcpLimits], problems: dict[str, list[str]]) -> str:
    """The file's era if it matches this zone, else the zone's newest match, else the closest."""
    if file_era in eras:
        return file_era
    if eras:
        return eras[-1]
    # the eras whose layout the file has, newest first
    layout = [e for e in reversed(ERAS) if (e in HIGH_BOUNDS_ERAS) == zone.has_high_bounds]
    return min(layout, key=lambda e: (len(problems[e]), _distance(zone, e, models[e])))


def _mismatches(zone: ZoneInfo, era: str, model: PcpLimits) -> list[str]:
    if zone.has_high_bounds != (era in HIGH_BOUNDS_ERAS):
        return ["high_min/high_max lines: a 6.7+ layout" if zone.has_high_bounds
                else "no high_min/high_max lines: a pre-6.7 layout"]
    problems = [_differs(zone, f, getattr(model, f)) for f in _fields(era)]
    if era in HIGH_BOUNDS_ERAS:
        problems += _auto_tuning_mismatches(zone, model, any(problems))
    return [p for p in problems if p]


def _auto_tuning_mismatches(zone: ZoneInfo, model: PcpLimits, differs: bool) -> list[str]:
    """6.7+: pcp->high is state, 0 until first use, then kept in [high_min, high_max]."""
    problems = []
    outside = [p for p in zone.pagesets
               if p.high and not model.high_min <= p.high <= model.high_max]
    if outside:
        problems.append(f"high {_values_on(zone, outside, 'high')} outside the model's "
                        f"[{model.high_min}, {model.high_max}]")
    if (differs or problems) and zone.high_min is not None and zone.high_min == zone.high_max:
        problems.append("high_min == high_max: vm.percpu_pagelist_high_fraction is set")
    return problems


def _fields(era: str) -> tuple[str, ...]:
    return ("batch", "high_min", "high_max") if era in HIGH_BOUNDS_ERAS else ("batch", "high")


def _distance(zone: ZoneInfo, era: str, model: PcpLimits) -> float:
    """How far the capture is from *model*: relative error summed over CPUs and fields."""
    return sum(abs(getattr(p, f) - getattr(model, f)) / max(getattr(model, f), 1)
               for p in zone.pagesets for f in _fields(era))


def _differs(zone: ZoneInfo, field: str, expected: int) -> str:
    wrong = [p for p in zone.pagesets if getattr(p, field) != expected]
    if not wrong:
        return ""
    return f"{field} {_values_on(zone, wrong, field)}, model {expected}"


def _values_on(zone: ZoneInfo, pagesets: list[Pageset], field: str) -> str:
    """``"378 on all 8 CPUs"`` or ``"0 on CPUs 0-1, 4 on CPU 3"``."""
    by_value: dict[int, list[int]] = {}
    for p in pagesets:
        by_value.setdefault(getattr(p, field), []).append(p.cpu)
    parts = []
    for value, cpus in by_value.items():
        where = f"all {len(cpus)} CPUs" if len(cpus) == zone.cpus > 1 else _cpu_list(cpus)
        parts.append(f"{value} on {where}")
    return ", ".join(parts)


def _cpu_list(cpus: list[int]) -> str:
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    text = ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"CPU{'s' if len(cpus) > 1 else ''} {text}"


def comparison_to_json(c: ZoneComparison) -> dict[str, Any]:
    """The ``--json`` object of one zone.

    ``captured.high`` is None when the CPUs show different values (6.7+
    auto-tuning); ``pagesets`` has every CPU's row.  ``high_min``/``high_max``
    appear in ``captured`` for 6.7+ layouts and in ``model`` for era 6.7.
    """
    z, model = c.zone, c.model
    captured: dict[str, Any] = {"batch": z.batch, "high": z.high}
    if z.has_high_bounds:
        captured.update(high_min=z.high_min, high_max=z.high_max)
    model_json: dict[str, Any] = {"batch": model.batch, "high": model.high}
    if c.era in HIGH_BOUNDS_ERAS:
        model_json.update(high_min=model.high_min, high_max=model.high_max)
    wm = {k: v for k, v in asdict(z.watermarks).items() if v is not None}
    return {
        "node": z.node, "zone": z.zone, "managed": z.managed, "present": z.present,
        "spanned": z.spanned, "pages_free": z.pages_free, "watermarks": wm,
        "cpus": z.cpus, "nsplit": c.nsplit, "captured": captured, "model": model_json,
        "era": c.era, "eras": list(c.eras), "match": c.match, "mismatches": list(c.mismatches),
        "pagesets": [{k: v for k, v in asdict(p).items() if v is not None} for p in z.pagesets],
    }


def format_report(source: str, zones: Sequence[ZoneInfo],
                  comparisons: Sequence[ZoneComparison]) -> str:
    """The text report: one table per populated zone, every era's model beside the capture."""
    out = [_report_header(source, zones, comparisons)]
    for c in comparisons:
        out += [""] + _zone_table(c)
    unpopulated = [f"Node {z.node} {z.zone}" for z in zones if not z.populated]
    if unpopulated:
        out += ["", f"unpopulated: {', '.join(unpopulated)}"]
    if not all(c.match for c in comparisons):
        out += ["", "note: pagesets are sized at the last zone_pcp_update() (CPU hotplug, "
                    "watermark or sysctl change); managed pages can drift after it."]
    return "\n".join(out)


def _report_header(source: str, zones: Sequence[ZoneInfo], comparisons: Sequence[ZoneComparison]) -> str:
    """``FILE: 5 zones on 1 node, 2 populated; pageset layout ...``."""
    nodes = len({z.node for z in zones})
    layout = ("6.7+ (high_min/high_max)" if any(z.has_high_bounds for z in zones)
              else "pre-6.7 (no high_min/high_max)")
    return (f"{source}: {len(zones)} zones on {nodes} node{'s' if nodes > 1 else ''}, "
            f"{len(comparisons)} populated; pageset layout {layout}")


def _zone_table(c: ZoneComparison) -> list[str]:
    z, wm = c.zone, c.zone.watermarks
    marks = f"min {wm.min}, low {wm.low}, high {wm.high}"
    if wm.promo is not None:
        marks += f", promo {wm.promo}"
    lines = [f"Node {z.node}, zone {z.zone}: managed {z.managed}; {marks}; "
             f"{z.cpus} CPUs, nsplit {c.nsplit}"]
    row = "  {:<11} {:>7} {:>13} {:>9} {:>9}  {}"
    lines.append(row.format("", "batch", "high", "high_min", "high_max", "").rstrip())

    def spread(field: str) -> str:
        values = [getattr(p, field) for p in z.pagesets]
        if values[0] is None:
            return "-"
        lo, hi = min(values), max(values)
        return str(lo) if lo == hi else f"{lo}..{hi}"

    lines.append(row.format("captured", spread("batch"), spread("high"), spread("high_min"),
                            spread("high_max"), "").rstrip())
    for era, m in c.models:
        bounds = (m.high_min, m.high_max) if era in HIGH_BOUNDS_ERAS else ("-", "-")
        if era == c.era:
            tag = "<- match" if c.match else "<- closest"
        else:
            tag = "also matches" if era in c.eras else ""
        lines.append(row.format(f"model {era}", m.batch, m.high, *bounds, tag).rstrip())
    if c.match:
        lines.append(f"  era {c.era}: the model reproduces the capture")
    else:
        lines.append(f"  no era reproduces the capture; closest is {c.era}:")
        lines += [f"  ! {problem}" for problem in c.mismatches]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="a /proc/zoneinfo capture (or /proc/zoneinfo; - for standard input)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of populated zones")


def command(args: argparse.Namespace) -> int:
    zones = read_zoneinfo(args.file)
    comparisons = compare_zones(zones)
    if args.json:
        print(json.dumps([comparison_to_json(c) for c in comparisons], indent=2))
    else:
        print(format_report(display_name(args.file), zones, comparisons))
    return 0
