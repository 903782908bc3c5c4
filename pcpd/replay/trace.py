"""Streaming parser for the kernel's kmem page-allocator tracepoints.

Reads the text that ``perf script``, ``trace-cmd report`` and
``/sys/kernel/tracing/trace`` print for the events of
``include/trace/events/kmem.h`` and yields one :class:`TraceEvent` per
line, for every format era since v2.6.33:

===========================  ===========================================
event (canonical name)       also accepted as
===========================  ===========================================
``mm_page_alloc``
``mm_page_free``             ``mm_page_free_direct`` (v2.6.33 - v3.2)
``mm_page_free_batched``     ``mm_pagevec_free`` (v2.6.33 - v3.2)
``mm_page_alloc_zone_locked``
``mm_page_pcpu_drain``
``mm_page_alloc_extfrag``
===========================  ===========================================

and two context events that say which work a kworker runs, so that a drain
in ``vmstat_update()`` (``decay_pcp_high()``) can be told from one in
``drain_local_pages_wq()`` (``drain_all_pages()`` before v5.19):
``workqueue_execute_start`` and ``workqueue_execute_end`` (``work struct
0x...: function NAME``; ``function`` is absent from the end event before
v5.12 or so, and then stays "").  Their ``pfn`` and ``order`` are -1.

Line prefixes::

    ftrace     <comm>-<pid> [( <tgid>)] [<cpu>] [<irq-flags>] <sec.usec>: <event>: <fields>
    perf       <comm> <pid>[/<tid>] [<cpu>] <sec.usec>: [<period>] kmem:<event>: <fields>

The irq-flags column is absent on old kernels and in trace-cmd, four
characters (``d..1``) before about v5.13 and five (``.....``) after.
trace-cmd pads the event name; perf prefixes it with ``kmem:``.

The fields follow ``page=`` and ``pfn=`` in ``TP_printk`` order, which no
era changed.  ``pfn`` may be decimal (before v5.14) or hex, and ``page=``
anything: a raw vmemmap address, a hashed pointer (v4.15+), or ``0x...``
from perf and trace-cmd.  An ``mm_page_alloc`` whose page is null
(``(null)``, padded as in ``page= (null)``, perf's ``(nil)``, or zeros)
and whose pfn is 0 is a failed allocation and gets ``pfn == -1``.  perf
computes page= from the pfn, so a real pfn 0 would look the same there;
x86 never allocates pfn 0.  ``cold=`` (before
v4.15) is ignored.  ``fragmenting`` is recomputed as ``fallback_order <
pageblock_order``, as the kernel does, because perf's libtraceevent cannot
evaluate that expression and prints ``fallback_order`` in its place (seen
with perf 6.1 on a 6.18 kernel).  ``percpu_refill`` means ``order == 0`` before v5.19 and
``pcp_allowed_order(order) && mt < MIGRATE_PCPTYPES`` since.

:func:`parse_lines` never raises on a bad line.  Every line is either one
event or one count in a :class:`Skipped`, so ``events + sum(skipped)`` is
the number of lines read.  A line cut short inside its last value (a
truncated ``pfn`` or ``gfp_flags``) still parses: nothing in the line says
it was cut.

GFP inference
-------------
:func:`classify_gfp` guesses what an ``mm_page_alloc`` allocated from its
printed GFP flags.  Symbolic names (composites such as ``GFP_TRANSHUGE``,
and the spellings before v4.6: ``GFP_COMP`` for ``__GFP_COMP``,
``GFP_WAIT``, ``GFP_TEMPORARY``) and raw hex (``gfp_flags=0x140cca``,
printed by some 6.x tools) are both reduced to a bit mask in the
``include/linux/gfp_types.h`` layout of v4.15 or so to today
(``__GFP_MOVABLE`` 0x08, ``__GFP_RECLAIMABLE`` 0x10, ``__GFP_ZERO`` 0x100,
``__GFP_COMP`` 0x40000, ...; checked against the tracepoint format of the
6.18 kernel here).  Older kernels numbered the bits differently, so raw hex
from them decodes wrongly; the bits above ``__GFP_ACCOUNT`` depend on the
kernel config and are ignored, as are unknown names.

``compound`` is ``order > 0 and __GFP_COMP``, the test ``prep_new_page()``
uses before ``prep_compound_page()``.  ``migratetype`` is
``gfp_migratetype()``: 1 with ``__GFP_MOVABLE``, 2 with
``__GFP_RECLAIMABLE``, else 0.  The memdesc type is that of the first row
that matches (``+`` flag set, ``-`` flag clear):

===  ============================================================  =========
row  flags, order                                                  type
===  ============================================================  =========
1    +MOVABLE +WRITE                                               file
2    +MOVABLE +ZERO                                                anon
3    +MOVABLE +NOMEMALLOC                                          anon
4    +MOVABLE, and +NORETRY or -FS                                 file
5    +MOVABLE                                                      anon
6    +RECLAIMABLE                                                  slab
7    +ZERO, all of GFP_KERNEL, -HARDWALL, order <= 1               pagetable
8    +HIGH -DIRECT_RECLAIM, order <= 3                             netpool
9    +COMP +HARDWALL                                               file
10   +COMP                                                         slab
11   anything else, including an empty or unknown gfp_flags        kernel
===  ============================================================  =========

Why, and where each guess is weak:

1. Only page-cache writers set __GFP_WRITE (FGP_WRITE).
2. Anonymous faults zero-fill (vma_alloc_zeroed_movable_folio()); the page
   cache is filled by I/O instead.
3. GFP_TRANSHUGE(_LIGHT): THP and mTHP faults.  khugepaged collapsing file
   THPs and shmem huge pages look the same.
4. readahead_gfp_mask() adds NORETRY|NOWARN; filesystems and the
   block-device cache use NOFS mapping masks.
5. Plain GFP_HIGHUSER_MOVABLE: COW copies, swap-in, migration targets.
   Page cache created outside readahead looks the same and is miscounted
   as anon.
6. SLAB_RECLAIM_ACCOUNT caches (dentries, inodes).
7. GFP_PGTABLE_KERNEL / GFP_PGTABLE_USER (GFP_KERNEL[_ACCOUNT]|__GFP_ZERO;
   an x86 PGD is order 1 with PTI).  Other zeroed kernel pages, such as
   vmalloc'd stacks, look the same.
8. GFP_ATOMIC: page_pool and page_frag refills in network receive.  Atomic
   slab refills look the same (they are mostly skb heads).  GFP_NOWAIT
   lacks __GFP_HIGH and falls through to rows 9-11: on the 6.18 machine it
   came from slab refills and mmu_gather batch pages, not the network.
9. GFP_USER-based page cache that is not movable: the block-device cache
   (GFP_NOFS|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL).
10. Recent SLUB adds __GFP_COMP to every slab page, order 0 included (seen
    on 6.18), and so does kmalloc_large().  Drivers' compound buffers are
    miscounted as slab.
11. Non-compound alloc_pages(): pipe buffers, __get_free_pages(),
    multi-page buffers; also the order-0 slab pages of kernels whose SLUB
    set __GFP_COMP only above order 0.

The rows were checked against captures on a 6.18 kernel (see
tests/test_trace.py); on older kernels the flags that callers pass differ
and the guess is rougher.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple, TextIO

from pcpd.errors import InputError
from pcpd.inputs import MAX_LINE, bounded_lines, display_name, open_input, reason, too_long
from pcpd.kernel import MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE

MM_PAGE_ALLOC = "mm_page_alloc"
MM_PAGE_FREE = "mm_page_free"
MM_PAGE_FREE_BATCHED = "mm_page_free_batched"
MM_PAGE_ALLOC_ZONE_LOCKED = "mm_page_alloc_zone_locked"
MM_PAGE_PCPU_DRAIN = "mm_page_pcpu_drain"
MM_PAGE_ALLOC_EXTFRAG = "mm_page_alloc_extfrag"
EVENTS = (MM_PAGE_ALLOC, MM_PAGE_FREE, MM_PAGE_FREE_BATCHED,
          MM_PAGE_ALLOC_ZONE_LOCKED, MM_PAGE_PCPU_DRAIN, MM_PAGE_ALLOC_EXTFRAG)
WORKQUEUE_EXECUTE_START = "workqueue_execute_start"
WORKQUEUE_EXECUTE_END = "workqueue_execute_end"
CONTEXT_EVENTS = (WORKQUEUE_EXECUTE_START, WORKQUEUE_EXECUTE_END)

# v3.3 renamed the era-1 free events; the text stayed the same.
_CANONICAL = {name: name for name in EVENTS + CONTEXT_EVENTS}
_CANONICAL["mm_page_free_direct"] = MM_PAGE_FREE
_CANONICAL["mm_pagevec_free"] = MM_PAGE_FREE_BATCHED

# Reasons a line is skipped, as counted in Skipped.
SKIP_COMMENT = "header or comment"
SKIP_NOT_TRACE = "not a trace line"
SKIP_GARBAGE = "binary or garbage"
SKIP_LOST = "lost-events marker"
SKIP_OTHER_EVENT = "not a page-allocator event"
SKIP_UNKNOWN_EVENT = "unknown mm_page event"
SKIP_MALFORMED = "malformed fields"
SKIP_TRUNCATED = "truncated compressed file"
SKIP_TOO_LONG = f"line over {MAX_LINE // 1024} KiB"


class TraceEvent(NamedTuple):
    """One page-allocator tracepoint hit.  -1 (or "") marks a field the event lacks."""

    cpu: int
    timestamp: float            # seconds, as printed
    event: str                  # canonical name, one of EVENTS
    pfn: int                    # -1 for a failed allocation
    order: int                  # alloc_order for extfrag
    migratetype: int = -1       # alloc_migratetype for extfrag
    gfp_flags: str = ""         # mm_page_alloc only, as printed
    percpu_refill: int = -1     # mm_page_alloc_zone_locked only
    comm: str = ""
    pid: int = -1
    fallback_order: int = -1    # this and the rest: mm_page_alloc_extfrag only
    fallback_migratetype: int = -1
    fragmenting: int = -1
    change_ownership: int = -1
    function: str = ""          # workqueue_execute_start/end only: the work function


class Skipped(Counter):
    """Lines that gave no event, counted by reason (the SKIP_* strings).

    ``first[reason]`` is where that reason was first seen, as ``source:line``.
    ``perf_cmdline`` is the ``# cmdline :`` line of a ``perf script --header``
    header, the one header line that says how the trace was recorded
    (``-a``, ``-C``, or a command followed); "" without one.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first: dict[str, str] = {}
        self.perf_cmdline = ""

    def add(self, reason: str, source: str, lineno: int | None = None) -> None:
        self[reason] += 1
        if reason not in self.first:
            self.first[reason] = source if lineno is None else f"{source}:{lineno}"

    def summary(self) -> str:
        """One line, e.g. ``3 lines skipped: 2 malformed fields (first at t.txt:7), ...``."""
        if not self:
            return "no lines skipped"
        parts = ", ".join(f"{n} {reason} (first at {self.first.get(reason, '?')})"
                          for reason, n in self.most_common())
        return f"{self.total()} lines skipped: {parts}"


# The line prefix: comm and pid (ftrace "comm-pid", perf "comm pid[/tid]"),
# ftrace's optional tgid column, [cpu], ftrace's optional irq-flags column
# (d..1 or .....), the timestamp, perf's sample period when it prints one,
# and the event name with perf's "kmem:".
#
# Written to match in time linear in the line, whatever the line: these
# patterns run on every line of a file anyone can hand in, and the plain
# spelling (\s*(.*?)(?:-|\s+)(\d+)..., kept in tests/test_trace.py as the
# reference) backtracks cubically over a run of blanks: 1000 spaces took 5 s,
# 4000 took 300 s.  They accept the same lines with the same groups:
# - leading blanks are atomic, and comm then ends before a "-" or before the
#   first blank of a run, never inside one (a later blank of the run has the
#   same continuation); the second branch is the one the plain pattern found
#   by giving back a leading blank: no comm, the pid right after the blanks
#   (comm is then None, read as "");
# - every blank or digit run that is followed by something it cannot match
#   is possessive (++), which changes no match, only the search.
_PREFIX = (r"(?>\s*)((?:.*?)(?=-|(?<!\s)\s)|(?<=\s)(?=\d))(?:-|\s++)?(\d++)(?:/\d++)?\s++"
           r"(?:\(\s*+[\d-]++\)\s++)?\[(\d++)\]\s++(?:[^\s:]{4,5}\s++)?(\d++(?:\.\d++)?):\s++"
           r"(?:\d++\s++)?(?:\w++:)?(\w++):")
_HEAD = re.compile(_PREFIX).match
# Every era prints page= and pfn= first, then the event's own fields in
# TP_printk order.  page= may be blank ("page= (null)"); pfn is hex
# (v5.14+) or decimal.  The second branch is "page= pfn=...", an empty page
# (None here) that the plain pattern found by backtracking.
_PAGE_PFN = (r"\s++page=(?>\s*)(?:(\S++)\s++|(?<=\s))pfn=(?:0x([0-9a-fA-F]++)|(\d++))\s++")
_FIELDS = {
    MM_PAGE_ALLOC: r"order=(\d+)\s+migratetype=(-?\d+)\s+gfp_flags=(\S+)",
    MM_PAGE_FREE: r"order=(\d+)(?!\S)",
    MM_PAGE_FREE_BATCHED: r"order=(\d+)(?!\S)",                  # then cold= before v4.15
    MM_PAGE_ALLOC_ZONE_LOCKED: r"order=(\d+)\s+migratetype=(-?\d+)\s+percpu_refill=(\d+)(?!\S)",
    MM_PAGE_PCPU_DRAIN: r"order=(\d+)\s+migratetype=(-?\d+)(?!\S)",
    MM_PAGE_ALLOC_EXTFRAG: (r"alloc_order=(\d+)\s+fallback_order=(\d+)\s+pageblock_order=(\d+)\s+"
                            r"alloc_migratetype=(-?\d+)\s+fallback_migratetype=(-?\d+)\s+"
                            r"fragmenting=-?\d+\s+change_ownership=(\d+)(?!\S)"),
}
_MATCH = {event: re.compile(_PREFIX + _PAGE_PFN + fields).match
          for event, fields in _FIELDS.items()}
# "work struct 0xffff888627d2b5e0: function vmstat_update" (ftrace prints the
# pointer hashed, without 0x); the end event lacks "function" on old kernels.
_WORK = r"\s++work struct\s++(?:0x)?[0-9a-fA-F]++:?(?:\s++function\s++(\S++))?\s*+$"
_MATCH.update({event: re.compile(_PREFIX + _WORK).match for event in CONTEXT_EVENTS})
# How %p printed a NULL page: kernel "(null)" (padded to "page= (null)" on
# some kernels), glibc "(nil)" in perf, or zeros.
_NULL_PAGES = frozenset({"(null)", "(nil)", "0", "0x0", "00000000", "0000000000000000"})
_new_event = tuple.__new__     # TraceEvent(...) without the keyword-argument machinery


def parse_lines(lines: Iterable[str], source: str,
                skipped: Skipped | None = None) -> Iterator[TraceEvent]:
    """Yield a TraceEvent for every page-allocator tracepoint line in ``lines``.

    Never raises on content: a line that is not such an event is counted in
    ``skipped`` (pass one in to read the counts) under one of the SKIP_*
    reasons, with ``source`` naming where it came from.  Holds one line at a
    time, so memory does not grow with the length of the trace; a line of
    more than ``MAX_LINE`` characters is skipped unread (SKIP_TOO_LONG).
    """
    if skipped is None:
        skipped = Skipped()
    for lineno, line in enumerate(lines, 1):
        event, m = _match(line)
        if m is None:
            skipped.add(event, source, lineno)      # event is the reason here
            if event is SKIP_COMMENT and line.startswith("# cmdline"):
                skipped.perf_cmdline = line.partition(":")[2].strip()
            continue
        if event in CONTEXT_EVENTS:
            comm, pid, cpu, ts, _, function = m.groups()
            yield TraceEvent(int(cpu), float(ts), event, -1, -1, comm=comm or "", pid=int(pid),
                             function=function or "")
            continue
        comm, pid, cpu, ts, _, page, hexpfn, decpfn, *fields = m.groups()
        pfn = int(hexpfn, 16) if hexpfn else int(decpfn)
        if pfn == 0 and event is MM_PAGE_ALLOC and page in _NULL_PAGES:
            pfn = -1          # failed allocation
        order, mt, gfp, refill, fallback_order, fallback_mt, fragmenting, ownership = (
            _EVENT_FIELDS[event](fields))
        yield _new_event(TraceEvent, (int(cpu), float(ts), event, pfn, order, mt, gfp, refill,
                                      comm or "", int(pid), fallback_order, fallback_mt,
                                      fragmenting, ownership, ""))


def _match(line: str) -> tuple[str, re.Match[str] | None]:
    """(event, its match), or (why the line is skipped, None)."""
    if too_long(line):
        return SKIP_TOO_LONG, None
    # Find the event by name first: one str.find instead of a regex search,
    # and it picks the one pattern that can match.
    i = line.find("mm_page")
    if i < 0:
        i = line.find("workqueue_execute_")
    event = _CANONICAL.get(line[i:line.find(":", i)]) if i >= 0 else None
    if event is not None and (m := _MATCH[event](line)):
        return event, m
    event, reason = _identify(line)
    if event is not None and (m := _MATCH[event](line)):
        return event, m
    return reason, None


# Each event's own fields, in TraceEvent order: order, migratetype,
# gfp_flags, percpu_refill, then the extfrag ones (fallback_order,
# fallback_migratetype, fragmenting, change_ownership); -1 or "" where the
# event has none.
_EventFields = tuple[int, int, str, int, int, int, int, int]


def _alloc_fields(fields: list[str]) -> _EventFields:
    order, mt, gfp = fields
    return int(order), int(mt), gfp, -1, -1, -1, -1, -1


def _free_fields(fields: list[str]) -> _EventFields:
    order, = fields
    return int(order), -1, "", -1, -1, -1, -1, -1


def _zone_locked_fields(fields: list[str]) -> _EventFields:
    order, mt, refill = fields
    return int(order), int(mt), "", int(refill), -1, -1, -1, -1


def _drain_fields(fields: list[str]) -> _EventFields:
    order, mt = fields
    return int(order), int(mt), "", -1, -1, -1, -1, -1


def _extfrag_fields(fields: list[str]) -> _EventFields:
    order, fallback_order, pageblock_order, mt, fallback_mt, ownership = fields
    # fragmenting as the kernel computes it (see the module docstring)
    fragmenting = int(int(fallback_order) < int(pageblock_order))
    return (int(order), int(mt), "", -1, int(fallback_order), int(fallback_mt), fragmenting,
            int(ownership))


_EVENT_FIELDS = {
    MM_PAGE_ALLOC: _alloc_fields,
    MM_PAGE_FREE: _free_fields,
    MM_PAGE_FREE_BATCHED: _free_fields,
    MM_PAGE_ALLOC_ZONE_LOCKED: _zone_locked_fields,
    MM_PAGE_PCPU_DRAIN: _drain_fields,
    MM_PAGE_ALLOC_EXTFRAG: _extfrag_fields,
}


def _identify(line: str) -> tuple[str | None, str]:
    """The slow path: (None, why it was skipped), or (event, SKIP_MALFORMED)
    for a page-allocator event whose name the fast path missed."""
    m = _HEAD(line)
    if m is None:
        return None, _junk_reason(line)
    name = m.group(5)
    event = _CANONICAL.get(name)
    if event is not None:
        return event, SKIP_MALFORMED
    return None, SKIP_UNKNOWN_EVENT if name.startswith("mm_page") else SKIP_OTHER_EVENT


def _junk_reason(line: str) -> str:
    """Why a line without a tracepoint prefix was skipped."""
    text = line.strip()
    if not text or text.startswith("#") or text.startswith("cpus="):
        return SKIP_COMMENT          # ftrace header, trace-cmd's "cpus=N"
    if "\ufffd" in text or not text.replace("\t", " ").isprintable():
        return SKIP_GARBAGE          # undecodable bytes or control characters
    if "EVENTS" in text and ("LOST" in text or "DROPPED" in text):
        return SKIP_LOST             # ftrace "[LOST n EVENTS]", trace-cmd "[n EVENTS DROPPED]"
    return SKIP_NOT_TRACE


# Binary recordings that must be turned into text first.
_RECORDINGS = {
    b"PERFILE2": "a binary perf.data recording; convert it with 'perf script -i FILE'",
    b"\x17\x08\x44tracing": ("a binary trace-cmd recording; "
                            "convert it with 'trace-cmd report -i FILE'"),
    b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it first (gzip and xz are read directly)",
}


def open_trace(path: str | os.PathLike[str]) -> TextIO:
    """Open a trace as text: plain, gzip or xz (recognised by content).

    ``-`` is standard input.  Undecodable bytes become U+FFFD.  Raises
    InputError naming ``path`` if it is not a regular file (pcpd.inputs),
    cannot be opened, is corrupt at the start, or is a binary recording.
    """
    name = display_name(path)
    raw = open_input(path, "cannot read trace")
    try:
        stream = _decompressed(raw)
        magic = stream.peek(16)[:16]
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as err:
        raw.close()
        raise InputError(f"{name}: cannot read trace: {reason(err)}") from None
    for prefix, what in _RECORDINGS.items():
        if magic.startswith(prefix):
            stream.close()
            raise InputError(f"{name}: {what}")
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")


def _decompressed(raw: io.BufferedReader) -> io.BufferedReader | _GzipReader | _XzReader:
    """``raw`` itself, or a reader of its gzip or xz content that closes ``raw`` with it."""
    magic = raw.peek(6)[:6]
    if magic.startswith(b"\x1f\x8b"):
        return _GzipReader(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return _XzReader(raw)
    return raw


class _GzipReader(gzip.GzipFile):
    """gzip.GzipFile leaves a file object it was given open; this one closes it."""

    def __init__(self, source: io.BufferedReader) -> None:
        super().__init__(fileobj=source, mode="rb")
        self.source = source

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.source.close()


class _XzReader(lzma.LZMAFile):
    """lzma.LZMAFile leaves a file object it was given open; this one closes it."""

    def __init__(self, source: io.BufferedReader) -> None:
        super().__init__(source, "rb")
        self.source = source

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.source.close()


def read_trace(path: str | os.PathLike[str], skipped: Skipped | None = None) -> Iterator[TraceEvent]:
    """open_trace() + parse_lines(): the events of the trace file at ``path``.

    Errors opening the file are raised here, at once.  A compressed file that
    ends early counts one SKIP_TRUNCATED after its last whole line; one that
    is corrupt in the middle raises InputError naming ``path``.  Lines are
    read with a bounded readline (pcpd.inputs.bounded_lines), so an endless
    line costs no more memory than MAX_LINE.  The file is closed when the
    iterator is exhausted or discarded.
    """
    if skipped is None:
        skipped = Skipped()
    source = display_name(path)
    return parse_lines(_read_lines(open_trace(path), source, skipped), source, skipped)


def _read_lines(f: TextIO, source: str, skipped: Skipped) -> Iterator[str]:
    with f:
        try:
            yield from bounded_lines(f)
        except EOFError:     # gzip/xz stream cut short, e.g. an interrupted 'perf script | gzip'
            skipped.add(SKIP_TRUNCATED, source)
        except (OSError, lzma.LZMAError, zlib.error) as err:
            raise InputError(f"{source}: cannot read trace: {reason(err)}") from None


# --- GFP flags -------------------------------------------------------------

# include/linux/gfp_types.h, layout of about v4.15 on (0x200 was ___GFP_ATOMIC until v6.4)
__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000
__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM

GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM | __GFP_NOWARN
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_TRANSHUGE_LIGHT = (GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC
                       | __GFP_NOWARN) & ~__GFP_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | __GFP_DIRECT_RECLAIM

# The names the tracepoint prints (include/trace/events/mmflags.h) for the
# bits above, plus the names of older kernels, mapped to their meaning in
# this layout.  Before v4.6 single bits printed without the leading "__"
# (GFP_COMP) and a zero mask printed as GFP_NOWAIT; gfp_mask() tries
# "__" + name for those.
_GFP_NAMES = {name: value for name, value in globals().items()
              if name.startswith(("GFP_", "__GFP_")) and isinstance(value, int)}
_GFP_NAMES.update({
    "GFP_DMA": __GFP_DMA,
    "GFP_DMA32": __GFP_DMA32,
    "GFP_TEMPORARY": GFP_KERNEL | __GFP_RECLAIMABLE,    # removed in v4.14
    "GFP_IOFS": __GFP_IO | __GFP_FS,                    # removed in v4.4
    "__GFP_WAIT": __GFP_DIRECT_RECLAIM,                 # before v4.4
    "__GFP_REPEAT": __GFP_RETRY_MAYFAIL,                # before v4.13
    "__GFP_KMEMCG": __GFP_ACCOUNT,                      # v3.8 - v3.18
})

class GfpClass(NamedTuple):
    memdesc_type: str       # one of pcpd.kernel.MEMDESC_TYPES
    compound: bool          # prep_compound_page() runs
    migratetype: int        # 0 unmovable, 1 movable, 2 reclaimable


@lru_cache(maxsize=4096)
def gfp_mask(gfp_flags: str) -> int:
    """The bit mask of a printed gfp_flags value: symbolic, raw hex, or "none".

    Unknown names count as no bits.
    """
    mask = 0
    for name in gfp_flags.strip().split("|"):
        if name[:2] in ("0x", "0X"):
            try:
                mask |= int(name, 16)
            except ValueError:
                pass
        else:
            mask |= _GFP_NAMES.get(name) or _GFP_NAMES.get("__" + name, 0)
    return mask


@lru_cache(maxsize=4096)
def classify_gfp(gfp_flags: str, order: int) -> GfpClass:
    """Guess memdesc type, compoundness and migratetype of an allocation.

    See the table in the module docstring for the rules and their limits.
    """
    mask = gfp_mask(gfp_flags)
    # prep_new_page(): only order > 0 with __GFP_COMP gets tail pages.
    compound = order > 0 and bool(mask & __GFP_COMP)
    return GfpClass(_memdesc_type(mask, order), compound, _gfp_migratetype(mask))


def _gfp_migratetype(mask: int) -> int:
    # gfp_migratetype(); both bits set is a kernel bug it warns about: say movable.
    if mask & __GFP_MOVABLE:
        return MIGRATE_MOVABLE
    return MIGRATE_RECLAIMABLE if mask & __GFP_RECLAIMABLE else MIGRATE_UNMOVABLE


class _GfpRow(NamedTuple):
    """A row of the module docstring's table: every bit of ``set``, none of ``clear``."""

    set: int
    clear: int
    max_order: int
    memdesc_type: str


_ANY_ORDER = 1 << 30
# The table of the module docstring, in its order; the first row that matches wins.
_GFP_ROWS = (
    _GfpRow(__GFP_MOVABLE | __GFP_WRITE, 0, _ANY_ORDER, "file"),                    # 1
    _GfpRow(__GFP_MOVABLE | __GFP_ZERO, 0, _ANY_ORDER, "anon"),                     # 2
    _GfpRow(__GFP_MOVABLE | __GFP_NOMEMALLOC, 0, _ANY_ORDER, "anon"),               # 3
    _GfpRow(__GFP_MOVABLE | __GFP_NORETRY, 0, _ANY_ORDER, "file"),                  # 4
    _GfpRow(__GFP_MOVABLE, __GFP_FS, _ANY_ORDER, "file"),                           # 4
    _GfpRow(__GFP_MOVABLE, 0, _ANY_ORDER, "anon"),                                  # 5
    _GfpRow(__GFP_RECLAIMABLE, 0, _ANY_ORDER, "slab"),                              # 6
    _GfpRow(__GFP_ZERO | GFP_KERNEL, __GFP_HARDWALL, 1, "pagetable"),               # 7
    _GfpRow(__GFP_HIGH, __GFP_DIRECT_RECLAIM, 3, "netpool"),                        # 8
    _GfpRow(__GFP_COMP | __GFP_HARDWALL, 0, _ANY_ORDER, "file"),                    # 9
    _GfpRow(__GFP_COMP, 0, _ANY_ORDER, "slab"),                                     # 10
)


def _memdesc_type(mask: int, order: int) -> str:
    for row in _GFP_ROWS:
        if mask & row.set == row.set and not mask & row.clear and order <= row.max_order:
            return row.memdesc_type
    return "kernel"                                                                 # 11
