"""pcpd.replay.trace: kmem page-allocator tracepoint parsing and GFP classification.

Fixtures in tests/data/traces/.  The 6.18 ones are real captures on the
project's machine (x86-64, 2 CPUs, kernel 6.18.44, perf 6.1, as root):

    EVENTS="-e kmem:mm_page_alloc -e kmem:mm_page_free -e kmem:mm_page_free_batched
            -e kmem:mm_page_pcpu_drain -e kmem:mm_page_alloc_zone_locked
            -e kmem:mm_page_alloc_extfrag"
    # work.py: touch a 4 MiB MAP_PRIVATE anonymous mmap; touch an 8 MiB one
    # after madvise(MADV_HUGEPAGE) (order-9 THPs; a plain mmap(-1, n) is
    # shared memory and gets none); create and delete 3000 small files;
    # write a 2 MiB file f.bin.
    perf record $EVENTS -a -o x.data -- sh -c 'python3 work.py;
        dd if=f.bin of=/dev/null bs=64k iflag=direct; dd if=f.bin of=/dev/null bs=64k'
    perf script -i x.data > x.txt
    sed -n 20401,20700p x.txt             > perf-6.18-thp.txt       # THP alloc + free
    sed -n 38001,39800p x.txt | gzip -9n  > perf-6.18-drain.txt.gz  # drains, batched frees
    # slab.py: create and delete 60000 empty files (reclaimable slab steals
    # whole pageblocks: mm_page_alloc_extfrag)
    perf record $EVENTS -a -o y.data -- python3 slab.py
    perf script -i y.data | sed -n 26301,27450p | xz -9e > perf-6.18-extfrag.txt.xz
    # ftrace, in a private instance so the global buffer is untouched
    cd /sys/kernel/tracing && mkdir instances/pcpd && cd instances/pcpd
    for e in <the six events>; do echo 1 > events/kmem/$e/enable; done
    echo 1 > tracing_on; python3 work.py; echo 0 > tracing_on
    (sed -n 1,12p trace; sed -n 19401,20400p trace) | xz -9e > ftrace-6.18.txt.xz
    cd ../.. && rmdir instances/pcpd

ftrace-2.6.33-era1.txt, ftrace-4.4-era2.txt and trace-cmd-5.15-era3.txt are
hand-made from the TP_printk formats and line prefixes of sections 7.4 and
7.5 of the kernel reference (page= is vmemmap + 64 * pfn; gfp names as the
kernels of those eras print them: GFP_COMP before v4.6, __GFP_COMP after).
The expected counts below were computed once and checked against grep.
"""

import gzip
import lzma
import os
import random
import re
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcpd.errors import InputError
from pcpd.inputs import MAX_LINE
from pcpd.replay import trace
from pcpd.replay.trace import (
    MM_PAGE_ALLOC,
    MM_PAGE_ALLOC_EXTFRAG,
    MM_PAGE_ALLOC_ZONE_LOCKED,
    MM_PAGE_FREE,
    MM_PAGE_FREE_BATCHED,
    MM_PAGE_PCPU_DRAIN,
    SKIP_COMMENT,
    SKIP_GARBAGE,
    SKIP_LOST,
    SKIP_MALFORMED,
    SKIP_NOT_TRACE,
    SKIP_OTHER_EVENT,
    SKIP_TOO_LONG,
    SKIP_TRUNCATED,
    SKIP_UNKNOWN_EVENT,
    GfpClass,
    Skipped,
    TraceEvent,
    classify_gfp,
    gfp_mask,
    open_trace,
    parse_lines,
    read_trace,
)

DATA = Path(__file__).parent / "data" / "traces"

ALLOC, FREE, BATCHED = MM_PAGE_ALLOC, MM_PAGE_FREE, MM_PAGE_FREE_BATCHED
LOCKED, DRAIN, EXTFRAG = MM_PAGE_ALLOC_ZONE_LOCKED, MM_PAGE_PCPU_DRAIN, MM_PAGE_ALLOC_EXTFRAG

FIXTURES = {
    "perf-6.18-thp.txt": ({ALLOC: 84, LOCKED: 97, FREE: 53, BATCHED: 66}, {}),
    "perf-6.18-drain.txt.gz": ({ALLOC: 517, LOCKED: 443, FREE: 430, BATCHED: 223, DRAIN: 187}, {}),
    "perf-6.18-extfrag.txt.xz": ({LOCKED: 1148, EXTFRAG: 2}, {}),
    "ftrace-6.18.txt.xz": ({ALLOC: 664, LOCKED: 49, FREE: 141, BATCHED: 146}, {SKIP_COMMENT: 12}),
    "ftrace-2.6.33-era1.txt": ({ALLOC: 5, LOCKED: 4, FREE: 1, BATCHED: 2, DRAIN: 2, EXTFRAG: 1},
                               {SKIP_COMMENT: 4}),
    "ftrace-4.4-era2.txt": ({ALLOC: 6, LOCKED: 2, FREE: 2, BATCHED: 1, DRAIN: 2, EXTFRAG: 1},
                            {SKIP_COMMENT: 11, SKIP_LOST: 1, SKIP_OTHER_EVENT: 1}),
    "trace-cmd-5.15-era3.txt": ({ALLOC: 4, LOCKED: 1, FREE: 1, BATCHED: 1, DRAIN: 1, EXTFRAG: 1},
                                {SKIP_COMMENT: 1}),
}


def parse_one(line: str) -> TraceEvent:
    skipped = Skipped()
    events = list(parse_lines([line], "test", skipped))
    assert not skipped, skipped.summary()
    assert len(events) == 1
    return events[0]


def skip_reason(line: str) -> str:
    skipped = Skipped()
    assert list(parse_lines([line], "test", skipped)) == []
    assert skipped.total() == 1
    return next(iter(skipped))


# --- fixtures ----------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_counts(name):
    events, skips = FIXTURES[name]
    skipped = Skipped()
    got = Counter(e.event for e in read_trace(DATA / name, skipped))
    assert got == Counter(events)
    assert skipped == Counter(skips)


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_line_is_an_event_or_a_skip(name):
    with open_trace(DATA / name) as f:
        n_lines = sum(1 for _ in f)
    skipped = Skipped()
    n_events = sum(1 for _ in read_trace(DATA / name, skipped))
    assert n_events + skipped.total() == n_lines


def test_perf_thp_fields():
    events = list(read_trace(DATA / "perf-6.18-thp.txt"))
    thp = [e for e in events if e.order == 9]
    assert [e.event for e in thp] == [LOCKED, LOCKED, ALLOC, ALLOC, LOCKED, LOCKED, ALLOC, ALLOC,
                                      FREE, FREE, FREE, FREE]
    assert thp[2] == TraceEvent(
        cpu=1, timestamp=305.074727, event=ALLOC, pfn=0x127800, order=9, migratetype=1,
        gfp_flags="GFP_TRANSHUGE|__GFP_NORETRY|__GFP_THISNODE", comm="python3", pid=5094)
    assert thp[0].percpu_refill == 1
    # each refill took 2 THPs (nr_pcp_alloc() at order 9); all 4 were used and freed
    assert {e.pfn for e in thp if e.event == FREE} == {e.pfn for e in thp if e.event == LOCKED}
    assert classify_gfp(thp[2].gfp_flags, 9) == GfpClass("anon", True, 1)


def test_perf_extfrag_fragmenting_is_recomputed():
    # perf 6.1 prints "fragmenting=10" (fallback_order) for this 6.18 kernel
    with lzma.open(DATA / "perf-6.18-extfrag.txt.xz", "rt") as f:
        assert "fragmenting=10 " in f.read()
    extfrag = [e for e in read_trace(DATA / "perf-6.18-extfrag.txt.xz") if e.event == EXTFRAG]
    assert extfrag[0] == TraceEvent(
        cpu=1, timestamp=317.975793, event=EXTFRAG, pfn=0x15dc00, order=0, migratetype=2,
        comm="python3", pid=5178, fallback_order=10, fallback_migratetype=1,
        fragmenting=0, change_ownership=1)


def test_ftrace_618_fields():
    events = list(read_trace(DATA / "ftrace-6.18.txt.xz"))
    locked = next(e for e in events if e.event == LOCKED and e.order == 9)
    assert locked == TraceEvent(
        cpu=1, timestamp=348.500972, event=LOCKED, pfn=0x111800, order=9, migratetype=1,
        percpu_refill=1, comm="python3", pid=5280)
    assert all(e.pfn > 0 and e.cpu in (0, 1) for e in events)


def test_old_eras_failed_allocations_and_renamed_events():
    era1 = list(read_trace(DATA / "ftrace-2.6.33-era1.txt"))
    assert [e.comm for e in era1 if e.pfn == -1] == ["firefox"]          # page=(null)
    assert [e.event for e in era1 if e.comm == "kswapd0"] == [BATCHED]   # mm_pagevec_free
    assert era1[0] == TraceEvent(
        cpu=0, timestamp=4415.246506, event=ALLOC, pfn=1155800, order=0, migratetype=0,
        gfp_flags="GFP_KERNEL", comm="gnome-terminal", pid=1567)
    era2 = list(read_trace(DATA / "ftrace-4.4-era2.txt"))
    failed = [e for e in era2 if e.pfn == -1]                            # page= (null)
    assert [(e.comm, e.order) for e in failed] == [("kworker/u16:2", 4)]
    era3 = list(read_trace(DATA / "trace-cmd-5.15-era3.txt"))
    assert [(e.pfn, e.gfp_flags) for e in era3 if e.pfn == -1] == [
        (-1, "GFP_TRANSHUGE_LIGHT|__GFP_THISNODE")]                     # page=(nil)


# --- every era's line format ------------------------------------------------

REFERENCE_EXAMPLES = [
    ("  gnome-terminal-1567  [000]  4415.246506: mm_page_alloc: page=ffffea0003db9f40 pfn=1155800 "
     "order=0 migratetype=0 gfp_flags=GFP_KERNEL",
     TraceEvent(0, 4415.246506, ALLOC, 1155800, 0, 0, "GFP_KERNEL", comm="gnome-terminal",
                pid=1567)),
    ("<idle>-0     [006] d.s.  1110.217281: mm_page_alloc_extfrag: page=ffffea0064142000 "
     "pfn=26235008 alloc_order=3 fallback_order=3 pageblock_order=9 alloc_migratetype=0 "
     "fallback_migratetype=2 fragmenting=1 change_ownership=1",
     TraceEvent(6, 1110.217281, EXTFRAG, 26235008, 3, 0, comm="<idle>", pid=0, fallback_order=3,
                fallback_migratetype=2, fragmenting=1, change_ownership=1)),
    ("    kworker/10:1-440     [010] .....   355.369905: mm_page_free: page=00000000dc8c03bd "
     "pfn=0x182190 order=2",
     TraceEvent(10, 355.369905, FREE, 0x182190, 2, comm="kworker/10:1", pid=440)),
]


@pytest.mark.parametrize("line, expected", REFERENCE_EXAMPLES)
def test_reference_example_lines(line, expected):
    assert parse_one(line) == expected


FT1 = "            bash-2113  [001]  4415.250001: "          # era 1: no irq-flags column
FT2 = "            bash-2113  [001] d..1  4415.250001: "     # 4-character flags
FT4 = "            bash-2113  [001] d..2.  4415.250001: "    # 5-character flags
PERF = "            bash  2113 [001]  4415.250001: kmem:"

ERA_LINES = [
    # era 1 (v2.6.33 - v3.2): decimal pfn, raw page pointer, old free names
    (FT1 + "mm_page_free_direct: page=ffffea0004000000 pfn=1048576 order=1",
     dict(event=FREE, pfn=1048576, order=1, comm="bash", pid=2113, cpu=1, timestamp=4415.250001)),
    (FT1 + "mm_pagevec_free: page=ffffea0004000040 pfn=1048577 order=0 cold=1",
     dict(event=BATCHED, pfn=1048577, order=0)),
    (FT1 + "mm_page_alloc: page=ffffea0004000000 pfn=1048576 order=0 migratetype=1 "
     "gfp_flags=GFP_HIGHUSER_MOVABLE", dict(event=ALLOC, pfn=1048576, migratetype=1,
                                            gfp_flags="GFP_HIGHUSER_MOVABLE")),
    (FT1 + "mm_page_alloc_zone_locked: page=ffffea0004000000 pfn=1048576 order=3 migratetype=0 "
     "percpu_refill=0", dict(event=LOCKED, order=3, percpu_refill=0)),
    (FT1 + "mm_page_pcpu_drain: page=ffffea0004000000 pfn=1048576 order=0 migratetype=2",
     dict(event=DRAIN, migratetype=2)),
    (FT1 + "mm_page_alloc: page=(null) pfn=0 order=9 migratetype=1 gfp_flags=GFP_TRANSHUGE",
     dict(event=ALLOC, pfn=-1, order=9)),
    # era 2 (v3.3 - v4.14): renamed free events, flags column
    (FT2 + "mm_page_free: page=ffffea0004000000 pfn=1048576 order=9",
     dict(event=FREE, order=9, comm="bash", pid=2113, cpu=1, timestamp=4415.250001)),
    (FT2 + "mm_page_free_batched: page=ffffea0004000000 pfn=1048576 order=0 cold=0",
     dict(event=BATCHED, pfn=1048576)),
    (FT2 + "mm_page_alloc: page= (null) pfn=0 order=2 migratetype=0 gfp_flags=GFP_ATOMIC",
     dict(event=ALLOC, pfn=-1, gfp_flags="GFP_ATOMIC")),
    (FT2 + "mm_page_alloc: page=          (null) pfn=0 order=2 migratetype=0 gfp_flags=GFP_ATOMIC",
     dict(event=ALLOC, pfn=-1)),
    # v4.15 - v5.13: hashed page, decimal pfn, no cold=
    (FT2 + "mm_page_free_batched: page=000000007c2e9a0d pfn=1048576 order=0",
     dict(event=BATCHED, pfn=1048576)),
    # era 3/4 (v5.14+): hex pfn, 5-character flags
    (FT4 + "mm_page_alloc: page=00000000d2be5665 pfn=0x100000 order=0 migratetype=1 "
     "gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP",
     dict(event=ALLOC, pfn=0x100000, gfp_flags="GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP")),
    (FT4 + "mm_page_alloc: page=0000000000000000 pfn=0x0 order=0 migratetype=0 gfp_flags=none",
     dict(event=ALLOC, pfn=-1, gfp_flags="none")),
    (FT4 + "mm_page_alloc: page=00000000d2be5665 pfn=0x100000 order=0 migratetype=1 "
     "gfp_flags=0x140cca", dict(gfp_flags="0x140cca")),
    (FT4 + "mm_page_alloc_zone_locked: page=00000000d2be5665 pfn=0x100000 order=9 migratetype=4 "
     "percpu_refill=1", dict(event=LOCKED, order=9, migratetype=4, percpu_refill=1)),
    (FT4 + "mm_page_pcpu_drain: page=00000000d2be5665 pfn=0x1ffe00 order=9 migratetype=1",
     dict(event=DRAIN, pfn=0x1ffe00, order=9)),
    (FT4 + "mm_page_alloc_extfrag: page=00000000d2be5665 pfn=0x100000 alloc_order=0 "
     "fallback_order=2 pageblock_order=9 alloc_migratetype=0 fallback_migratetype=1 "
     "fragmenting=1 change_ownership=0",
     dict(event=EXTFRAG, fallback_order=2, fallback_migratetype=1, fragmenting=1,
          change_ownership=0)),
    # perf script: kmem: prefix, page= from the pfn, (nil) for NULL
    (PERF + "mm_page_free: page=0x105bb5 pfn=0x105bb5 order=0",
     dict(event=FREE, pfn=0x105bb5, comm="bash", pid=2113, cpu=1, timestamp=4415.250001)),
    (PERF + "mm_page_alloc: page=(nil) pfn=0x0 order=9 migratetype=1 gfp_flags=GFP_TRANSHUGE",
     dict(event=ALLOC, pfn=-1)),
    ("   bash  2113/2114 [001]  4415.250001:          1 kmem:mm_page_free: "
     "page=0x1 pfn=0x1 order=0",
     dict(event=FREE, pid=2113)),                                   # pid/tid and a period
    ("  Web Content  4321 [001]  4415.250001: kmem:mm_page_free: page=0x1 pfn=0x1 order=0",
     dict(comm="Web Content", pid=4321)),
    # ftrace with options/record-tgid; trace-cmd padding; a counter clock
    ("      bash-2113    (   2100) [001] .....  4415.250001: mm_page_free: page=00000000d2be5665 "
     "pfn=0x1 order=0", dict(comm="bash", pid=2113)),
    ("systemd-journal-402 [002]   355.369004: mm_page_free:              page=0xffffea0006086400 "
     "pfn=0x182190 order=2", dict(comm="systemd-journal", pid=402, cpu=2)),
    ("      bash-2113  [001] ....  81234567890: mm_page_free: page=ffffea0004000000 pfn=1 order=0",
     dict(timestamp=81234567890.0)),
    # Windows line ending
    (FT4 + "mm_page_free: page=00000000d2be5665 pfn=0x1 order=3\r\n", dict(order=3)),
]


@pytest.mark.parametrize("line, fields", ERA_LINES)
def test_era_lines(line, fields):
    event = parse_one(line)
    for name, value in fields.items():
        assert getattr(event, name) == value, name


# --- bad input -----------------------------------------------------------------

GOOD = FT4 + ("mm_page_alloc: page=00000000d2be5665 pfn=0x100000 order=0 migratetype=1 "
              "gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP")


@pytest.mark.parametrize("line, reason", [
    ("", SKIP_COMMENT),
    ("# tracer: nop", SKIP_COMMENT),
    ("cpus=2", SKIP_COMMENT),
    ("CPU:1 [LOST 4052 EVENTS]", SKIP_LOST),
    ("hello world", SKIP_NOT_TRACE),
    ("\x00\x01\x02ELF\x7f", SKIP_GARBAGE),
    ("PERFILE2\ufffd\ufffd", SKIP_GARBAGE),
    (FT4 + "sched_switch: prev_comm=bash prev_pid=1 ==> next_comm=swapper", SKIP_OTHER_EVENT),
    (PERF + "kmalloc: call_site=0 ptr=0 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_KERNEL",
     SKIP_OTHER_EVENT),
    (FT4 + "mm_page_alloc_highatomic: page=0 pfn=0x1 order=0", SKIP_UNKNOWN_EVENT),
    (FT4 + "mm_page_free: page=00000000d2be5665 pfn=0xZZ order=0", SKIP_MALFORMED),
    (FT4 + "mm_page_free: page=00000000d2be5665 pfn=0x1 order=-1", SKIP_MALFORMED),
    (FT4 + "mm_page_free: page=00000000d2be5665 pfn=0x1 order=2x", SKIP_MALFORMED),
    (FT4 + "mm_page_alloc: page=00000000d2be5665 pfn=0x1 order=0 migratetype=1", SKIP_MALFORMED),
    (GOOD.replace("pfn=", "pnf="), SKIP_MALFORMED),
])
def test_skip_reasons(line, reason):
    assert skip_reason(line) == reason


def test_truncated_lines_never_raise():
    # Every prefix of a good line: an event (cut inside the last value) or a skip.
    cut_inside_last_value = len(GOOD) - len("GFP_HIGHUSER_MOVABLE|__GFP_COMP") + 1
    for end in range(len(GOOD)):
        skipped = Skipped()
        events = list(parse_lines([GOOD[:end]], "test", skipped))
        assert len(events) + skipped.total() == 1
        assert bool(events) == (end >= cut_inside_last_value), end


def test_binary_garbage_is_counted(tmp_path):
    path = tmp_path / "garbage.txt"
    blob = random.Random(1).randbytes(200_000)
    path.write_bytes(blob.replace(b"\x1f\x8b", b"").replace(b"\xfd7zXZ", b""))
    skipped = Skipped()
    assert list(read_trace(path, skipped)) == []
    with open_trace(path) as f:
        assert skipped.total() == sum(1 for _ in f)
    assert skipped[SKIP_GARBAGE] > 0.9 * skipped.total()
    assert skipped.first[SKIP_GARBAGE].startswith(f"{path}:")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=20))
def test_arbitrary_text_never_raises(lines):
    skipped = Skipped()
    n_events = sum(1 for _ in parse_lines(lines, "hypothesis", skipped))
    assert n_events + skipped.total() == len(lines)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD)), st.text(max_size=20))
def test_damaged_lines_never_raise(at, junk):
    skipped = Skipped()
    n_events = sum(1 for _ in parse_lines([GOOD[:at] + junk + GOOD[at:]], "hypothesis", skipped))
    assert n_events + skipped.total() == 1


def test_skipped_summary():
    skipped = Skipped()
    list(parse_lines(["# header", GOOD, "junk", "junk"], "t.txt", skipped))
    assert skipped.first == {SKIP_COMMENT: "t.txt:1", SKIP_NOT_TRACE: "t.txt:3"}
    assert skipped.summary() == ("3 lines skipped: 2 not a trace line (first at t.txt:3), "
                                 "1 header or comment (first at t.txt:1)")
    assert Skipped().summary() == "no lines skipped"


# --- files ----------------------------------------------------------------------

def test_compression_is_recognised_by_content(tmp_path):
    text = (DATA / "perf-6.18-thp.txt").read_bytes()
    (tmp_path / "a.log").write_bytes(gzip.compress(text))
    (tmp_path / "b.gz").write_bytes(lzma.compress(text))
    plain = list(read_trace(DATA / "perf-6.18-thp.txt"))
    assert list(read_trace(tmp_path / "a.log")) == plain
    assert list(read_trace(tmp_path / "b.gz")) == plain


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_truncated_compressed_file_counts_a_skip(tmp_path, compress):
    data = compress((DATA / "perf-6.18-thp.txt").read_bytes())
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) // 2])
    skipped = Skipped()
    events = list(read_trace(path, skipped))
    assert 0 < len(events) < 300
    assert skipped[SKIP_TRUNCATED] == 1


def test_corrupt_compressed_file_raises_input_error(tmp_path):
    data = bytearray(gzip.compress((DATA / "perf-6.18-thp.txt").read_bytes()))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path = tmp_path / "bad.gz"
    path.write_bytes(data)
    with pytest.raises(InputError, match="bad.gz"):
        list(read_trace(path))


@pytest.mark.parametrize("content, message", [
    (b"PERFILE2" + bytes(100), "perf script"),
    (b"\x17\x08\x44tracing6\x00" + bytes(100), "trace-cmd report"),
    (b"\x28\xb5\x2f\xfd" + bytes(100), "zstd"),
    (gzip.compress(b"PERFILE2" + bytes(100), mtime=0), "perf script"),
    (b"\x1f\x8b\x08\x00 not really gzip", "cannot read trace"),
])
def test_recordings_and_broken_headers_are_refused(tmp_path, content, message):
    path = tmp_path / "trace.dat"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        open_trace(path)
    assert str(path) in str(err.value)


def test_missing_or_unreadable_file_names_it(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'nope.txt'}: cannot read trace"):
        read_trace(tmp_path / "nope.txt")      # at once, not on first next()
    with pytest.raises(InputError, match=str(tmp_path)):
        open_trace(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    skipped = Skipped()
    assert list(read_trace(tmp_path / "empty", skipped)) == []
    assert not skipped


def test_undecodable_bytes_are_replaced(tmp_path):
    line = GOOD.replace("bash", "b\xe9sh").encode("latin-1")
    (tmp_path / "t").write_bytes(line + b"\n")
    (event,) = read_trace(tmp_path / "t")
    assert event.comm == "b\ufffdsh"


# --- streaming --------------------------------------------------------------------

def test_streams_without_holding_events():
    produced = 0

    def synthetic(n):
        nonlocal produced
        for i in range(n):
            produced += 1
            yield (f"         python3  {i % 30000:5d} [{i % 64:03d}] {i / 1000:12.6f}: "
                   f"kmem:mm_page_alloc: page=0x{i:x} pfn=0x{0x100000 + i:x} order={i % 4} "
                   f"migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP\n")

    events = parse_lines(synthetic(80_000), "synthetic")
    assert isinstance(events, Iterator) and iter(events) is events
    assert produced == 0                      # nothing is read until asked
    blocks, order_sum, peak = [], 0, 0
    for count, event in enumerate(events, 1):
        assert produced == count              # one line read per event, none ahead
        order_sum += event.order
        if count % 20_000 == 0:
            blocks.append(sys.getallocatedblocks())
        # tracemalloc slows every allocation ~8x, so it watches a 5k-line
        # window; keeping those events alone would take ~1.2 MB.
        if count == 40_000:
            tracemalloc.start()
        elif count == 45_000:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert count == 80_000 and order_sum == 120_000
    assert peak < 256 * 1024
    assert max(blocks) - min(blocks) < 1000   # over the whole run, not just the window


# --- GFP flags ----------------------------------------------------------------------

def test_gfp_mask_forms_agree():
    assert gfp_mask("0x140cca") == gfp_mask("GFP_HIGHUSER_MOVABLE|__GFP_COMP") == 0x140cca
    assert gfp_mask("0x152c4a") == gfp_mask(
        "GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL")
    assert gfp_mask("GFP_KERNEL|GFP_COMP") == gfp_mask("GFP_KERNEL|__GFP_COMP")   # before v4.6
    assert gfp_mask("GFP_TEMPORARY") == gfp_mask("GFP_KERNEL|__GFP_RECLAIMABLE")
    assert gfp_mask("GFP_KERNEL|0x1000000") == gfp_mask("GFP_KERNEL") | 0x1000000
    assert gfp_mask("none") == gfp_mask("") == gfp_mask("__GFP_BOGUS|0xZZ") == 0
    assert gfp_mask("GFP_TRANSHUGE") & 0x80000 and gfp_mask("GFP_TRANSHUGE") & 0x400


@pytest.mark.parametrize("gfp, order, expected", [
    # row 1-5: movable
    ("GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_COMP", 0, ("file", False, 1)),
    ("GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 9,
     ("file", True, 1)),
    ("GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP", 0, ("anon", False, 1)),
    ("GFP_HIGHUSER_MOVABLE|GFP_ZERO", 0, ("anon", False, 1)),
    ("GFP_TRANSHUGE|__GFP_NORETRY|__GFP_THISNODE", 9, ("anon", True, 1)),
    ("GFP_TRANSHUGE_LIGHT", 4, ("anon", True, 1)),
    ("GFP_HIGHUSER_MOVABLE|GFP_NOWARN|GFP_NORETRY|GFP_COMP|GFP_NOMEMALLOC|GFP_NO_KSWAPD", 9,
     ("anon", True, 1)),
    ("GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL",
     2, ("file", True, 1)),
    ("0x152c4a", 0, ("file", False, 1)),
    ("GFP_NOFS|__GFP_MOVABLE|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL", 0, ("file", False, 1)),
    ("GFP_HIGHUSER_MOVABLE|__GFP_COMP", 0, ("anon", False, 1)),
    ("0x140cca", 0, ("anon", False, 1)),
    # row 6: reclaimable
    ("__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC", 2,
     ("slab", True, 2)),
    ("GFP_TEMPORARY", 0, ("slab", False, 2)),
    # row 7: page tables
    ("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP", 0, ("pagetable", False, 0)),
    ("GFP_KERNEL|__GFP_ZERO", 1, ("pagetable", False, 0)),
    ("GFP_KERNEL|GFP_REPEAT|GFP_ZERO|GFP_NOTRACK", 0, ("pagetable", False, 0)),
    ("GFP_KERNEL|__GFP_ZERO", 2, ("kernel", False, 0)),
    # row 8: atomic network refills
    ("GFP_ATOMIC|__GFP_NOWARN", 0, ("netpool", False, 0)),
    ("GFP_ATOMIC|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC", 3, ("netpool", True, 0)),
    ("GFP_ATOMIC|__GFP_COMP", 4, ("slab", True, 0)),
    # rows 9-11
    ("GFP_NOFS|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL", 0, ("file", False, 0)),
    ("GFP_NOWAIT|__GFP_COMP", 0, ("slab", False, 0)),
    ("GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 1, ("slab", True, 0)),
    ("GFP_KERNEL|__GFP_COMP", 5, ("slab", True, 0)),
    ("GFP_NOWAIT", 0, ("kernel", False, 0)),
    ("GFP_HIGHUSER|__GFP_ACCOUNT", 0, ("kernel", False, 0)),
    ("GFP_KERNEL", 2, ("kernel", False, 0)),
    ("", 0, ("kernel", False, 0)),
    ("__GFP_SOMETHING_NEW", 0, ("kernel", False, 0)),
])
def test_classify_gfp(gfp, order, expected):
    assert classify_gfp(gfp, order) == GfpClass(*expected)


def test_classified_migratetype_matches_the_trace():
    # The kernel prints gfp_migratetype(gfp) as migratetype= (no CMA here).
    for name in FIXTURES:
        for event in read_trace(DATA / name):
            if event.event == ALLOC:
                assert classify_gfp(event.gfp_flags, event.order).migratetype == event.migratetype


# --- hostile input -----------------------------------------------------------

# The line patterns as first written: plain, and cubic over a run of blanks.
# The module's patterns must accept exactly the lines these accept, with the
# same groups (an empty comm or page read as "").
REFERENCE_PREFIX = (r"\s*(.*?)(?:-|\s+)(\d+)(?:/\d+)?\s+(?:\(\s*[\d-]+\)\s+)?"
                    r"\[(\d+)\]\s+(?:[^\s:]{4,5}\s+)?(\d+(?:\.\d+)?):\s+(?:\d+\s+)?(?:\w+:)?(\w+):")
REFERENCE_PAGE_PFN = r"\s+page=\s*(\S*)\s+pfn=(?:0x([0-9a-fA-F]+)|(\d+))\s+"
REFERENCE = {event: re.compile(REFERENCE_PREFIX + REFERENCE_PAGE_PFN + fields).match
             for event, fields in trace._FIELDS.items()}
PIECES = [" ", "  ", "\t", "-", "/", "(", ")", "[", "]", ":", ".", "=", "0", "1", "12", "0x1f", "a",
          "bash", "kmem:", "page=", "pfn=", "(null)", "order=", "[000]", "1.5:", "d..1", "mm_page_free:",
          "mm_page_alloc:", "order=0", "migratetype=1", "gfp_flags=GFP_KERNEL"]


def _groups(m):
    return None if m is None else tuple("" if g is None else g for g in m.groups())


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.sampled_from(sorted(REFERENCE)))
def test_line_patterns_match_as_the_reference_does(pieces, event):
    line = "".join(pieces)
    assert _groups(trace._MATCH[event](line)) == _groups(REFERENCE[event](line))


@pytest.mark.parametrize("line", [
    "            bash-2113  [000] .....  1.000000: mm_page_free: page=0x1 pfn=0x1 order=0",
    "  2113 [001]  2.5: kmem:mm_page_free: page=0x1 pfn=0x1 order=0",      # no comm
    "bash 1 [000] 1.0: kmem:mm_page_free: page= pfn=5 order=0",            # blank page
    "  web content 99/100 [003] 7.25: 1 kmem:mm_page_pcpu_drain: page=0x2 pfn=2 order=1 migratetype=0",
])
def test_reference_lines_match_alike(line):
    for event in REFERENCE:
        assert _groups(trace._MATCH[event](line)) == _groups(REFERENCE[event](line))


@pytest.mark.parametrize("line, reason", [
    (" " * 60_000 + "x", SKIP_NOT_TRACE),                   # cubic for the reference pattern
    ("a" + " " * 60_000 + "x", SKIP_NOT_TRACE),
    ("a -1" * 15_000, SKIP_NOT_TRACE),
    ("bash 1 [000] 1.0: kmem:mm_page_free: page=" + " " * 60_000 + "x", SKIP_MALFORMED),
])
def test_long_runs_of_blanks_are_read_in_linear_time(line, reason):
    assert skip_reason(line) == reason


def test_over_long_lines_are_skipped_and_counted(tmp_path):
    good = "            bash-2113  [000] .....  1.000000: mm_page_free: page=0x1 pfn=0x1 order=0\n"
    path = tmp_path / "t"
    path.write_text(good + "x" * MAX_LINE + "\n" + "y" * (MAX_LINE + 1) + "\n" + good
                    + "mm_page_free " * 100_000)
    skipped = Skipped()
    assert len(list(read_trace(path, skipped))) == 2        # MAX_LINE x's: read, not a trace line
    assert skipped == {SKIP_NOT_TRACE: 1, SKIP_TOO_LONG: 2}
    assert skipped.first[SKIP_TOO_LONG] == f"{path}:3"
    assert SKIP_TOO_LONG == "line over 64 KiB"


def test_an_endless_line_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "zeros.gz"
    path.write_bytes(gzip.compress(b"\0" * (16 << 20), 1))
    skipped = Skipped()
    tracemalloc.start()
    try:
        assert list(read_trace(path, skipped)) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert skipped == {SKIP_TOO_LONG: 1}
    assert peak < 2 << 20                                   # 16 MiB line, a few hundred KiB held


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory")])
def test_only_regular_files_are_opened(tmp_path, make, kind):
    make(tmp_path / "t")
    with pytest.raises(InputError, match=f"^{tmp_path / 't'}: cannot read trace: {kind}, not a regular"):
        read_trace(tmp_path / "t")
    with pytest.raises(InputError, match="^/dev/zero: cannot read trace: a character device"):
        read_trace("/dev/zero")



# --- context events and perf's header -------------------------------------------------------

@pytest.mark.parametrize("line, function", [
    (" kworker/1:0-vir 11775 [001]  3747.872984: workqueue:workqueue_execute_start: "
     "work struct 0xffff888627d2b5e0: function vmstat_update", "vmstat_update"),
    ("     kworker/0:1-15022   [000] .....  3747.928996: workqueue_execute_start: "
     "work struct 00000000a6f4c3b2: function drain_local_pages_wq", "drain_local_pages_wq"),
    ("     kworker/0:1-15022   [000] .....  3747.928999: workqueue_execute_end: "
     "work struct 00000000a6f4c3b2", ""),                       # before v5.12: no function
])
def test_workqueue_events_name_the_work(line, function):
    skipped = trace.Skipped()
    events = list(parse_lines([line], "t", skipped))
    assert not skipped and len(events) == 1
    e = events[0]
    assert e.event in trace.CONTEXT_EVENTS and e.function == function
    assert (e.pfn, e.order) == (-1, -1) and e.comm.startswith("kworker/")


def test_other_workqueue_events_are_skipped():
    line = (" kworker/1:0-vir 11775 [001]  3747.872984: workqueue:workqueue_queue_work: "
            "work struct=0xffff888627d2b5e0 function=vmstat_update workqueue=mm_percpu_wq")
    skipped = trace.Skipped()
    assert list(parse_lines([line], "t", skipped)) == []
    assert skipped == {trace.SKIP_OTHER_EVENT: 1}


def test_perf_header_command_line_is_kept():
    lines = ["# ========", "# cmdline : /usr/bin/perf record -a -o k.data -e kmem:mm_page_alloc",
             "# ========"]
    skipped = trace.Skipped()
    assert list(parse_lines(lines, "t", skipped)) == []
    assert skipped.perf_cmdline == "/usr/bin/perf record -a -o k.data -e kmem:mm_page_alloc"
