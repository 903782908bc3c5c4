"""pcpd.replay.run: kmem trace replay under each policy.

The replay-* fixtures in tests/data/traces/ are real captures on the
project's machine (x86-64, 2 CPUs, kernel 6.18.44, perf 6.1, as root), of
a workload that allocates and frees inside the capture window:

    # work.py: touch a 1 MiB MAP_PRIVATE anonymous mapping and munmap it
    # (twice, or three times); touch a MADV_HUGEPAGE one (order-9 THPs);
    # write and read 16 KiB through a pipe, 16 or 64 times.
    EVENTS="-e kmem:mm_page_alloc -e kmem:mm_page_free -e kmem:mm_page_free_batched
            -e kmem:mm_page_pcpu_drain -e kmem:mm_page_alloc_zone_locked
            -e kmem:mm_page_alloc_extfrag"
    perf record $EVENTS -a -o y.data -- python3 work.py     # default PCP sizing
    perf script -i y.data | sed -n 2501,5500p | gzip -9n > replay-perf-6.18.txt.gz
    # a small PCP (high 266, no auto-tuning), so that 3500 lines hold refills
    # and drains; zoneinfo taken in the same second
    sysctl -w vm.percpu_pagelist_high_fraction=800
    cat /proc/zoneinfo > replay-zoneinfo-6.18-small-pcp.txt
    perf record $EVENTS -a -o z.data -- python3 work.py
    sysctl -w vm.percpu_pagelist_high_fraction=0
    perf script -i z.data | sed -n 12001,15500p | xz -9e > replay-perf-6.18-small-pcp.txt.xz

The expected counts below were computed once from these files.  Those of
the trace and of the replay's bookkeeping are the trace's own; the model's
figures (legacy only) pin today's model and change when it does.
"""

import gzip
import json
import lzma
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from pcpd import cli
from pcpd.errors import InputError, UsageError
from pcpd.model.sizing import PcpLimits
from pcpd.replay import run as R
from pcpd.replay.trace import MM_PAGE_ALLOC, MM_PAGE_FREE, MM_PAGE_FREE_BATCHED, TraceEvent, parse_lines
from pcpd.zoneinfo import compare_zones, read_zoneinfo
from workers.cpu import ModelSpec
from workers.policies import POLICIES, TYPES

DATA = Path(__file__).parent / "data" / "traces"
SMALL_PCP = DATA / "replay-perf-6.18-small-pcp.txt.xz"
SMALL_PCP_ZONEINFO = DATA / "replay-zoneinfo-6.18-small-pcp.txt"
DEFAULT_PCP = DATA / "replay-perf-6.18.txt.gz"
THIS_MACHINE = Path(__file__).parent / "data" / "zoneinfo" / "this-machine-6.18.txt"

FT = "            bash-2113  [{cpu:03d}] .....  {ts:.6f}: "
PERF = "            bash  2113 [{cpu:03d}]  {ts:.6f}: kmem:"
ANON = "GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP"


def alloc(pfn, order=0, gfp=ANON, cpu=0, ts=1.0, prefix=PERF):
    page = "(nil)" if pfn == 0 else f"0x{pfn:x}"
    return (prefix.format(cpu=cpu, ts=ts) + f"mm_page_alloc: page={page} pfn=0x{pfn:x} "
            f"order={order} migratetype=1 gfp_flags={gfp}")


def free(pfn, order=0, cpu=0, ts=1.0, event="mm_page_free", prefix=PERF):
    return prefix.format(cpu=cpu, ts=ts) + f"{event}: page=0x{pfn:x} pfn=0x{pfn:x} order={order}"


def batched(pfn, cpu=0, ts=1.0):
    return free(pfn, 0, cpu, ts, "mm_page_free_batched")


def decode_lines(lines, decay_interval=0.0):
    spool = R.OpSpool()
    decoded = R.decode(parse_lines(lines, "test"), spool, decay_interval)
    ops = list(spool)
    spool.close()
    return decoded, ops


# --- decoding: the rules of the module docstring ----------------------------------

def test_free_batched_pairs_in_either_order():
    lines = [
        alloc(0x100), free(0x100), batched(0x100),      # v4.15+: pass 1 frees, pass 2 batched
        alloc(0x200), batched(0x200), free(0x200),      # v3.3-v4.14: batched, then prepare
        alloc(0x300), batched(0x300),                   # v2.6.33 mm_pagevec_free alone
        alloc(0x400, 9, "GFP_TRANSHUGE"), free(0x400, 9), batched(0x400),   # order=0 printed
    ]
    d, ops = decode_lines(lines)
    assert (d.allocs, d.frees, d.batched_pairs, d.unknown_frees) == (4, 4, 3, 0)
    assert d.order_mismatches == 0
    assert [(kind, order) for kind, _, order, _, _ in ops] == [
        (R.OP_ALLOC, 0), (R.OP_FREE, 0), (R.OP_ALLOC, 0), (R.OP_FREE, 0),
        (R.OP_ALLOC, 0), (R.OP_FREE, 0), (R.OP_ALLOC, 9), (R.OP_FREE, 9)]
    assert d.live_pages == d.live_blocks == 0 and d.peak_live_pages == 512


def test_frees_of_pages_the_trace_never_allocated_are_counted():
    d, ops = decode_lines([free(0x10), batched(0x10), batched(0x20), free(0x30, 2)])
    assert (d.unknown_frees, d.batched_pairs, d.frees, ops) == (3, 1, 0, [])


def test_second_free_of_one_allocation_is_unknown():
    d, ops = decode_lines([alloc(0x10), free(0x10), free(0x10)])
    assert (d.frees, d.unknown_frees, len(ops)) == (1, 1, 2)


def test_pairing_forgets_a_free_once_the_page_is_allocated_again():
    # free(0x10) leaves a pending "free"; after the reallocation a batched
    # free of 0x10 must free the new block, not pair with the old free
    d, ops = decode_lines([alloc(0x10), free(0x10), alloc(0x10), batched(0x10)])
    assert (d.frees, d.batched_pairs, d.live_blocks) == (2, 0, 0)


def test_pairing_window_is_bounded():
    lines = [free(0x1000 + i) for i in range(R.PAIR_WINDOW + 10)] + [batched(0x1000)]
    d, _ = decode_lines(lines)
    assert d.batched_pairs == 0 and d.unknown_frees == R.PAIR_WINDOW + 11


def test_failed_lost_remote_and_mismatched():
    lines = [
        alloc(0, 9, "GFP_TRANSHUGE"),                  # page=(nil) pfn=0: failed
        alloc(0x10, cpu=0), alloc(0x10, cpu=1),        # the free of the first was lost
        alloc(0x20, cpu=0), free(0x20, cpu=1),         # remote free: on the freeing CPU
        alloc(0x40, 2, "GFP_KERNEL"), free(0x40, 0),   # split_page(): freed at order 2
    ]
    d, ops = decode_lines(lines)
    assert (d.failed_allocs, d.lost_frees, d.remote_frees, d.order_mismatches) == (1, 1, 1, 1)
    kernel = TYPES.index("kernel")
    assert ops == [                                    # kind, cpu, order, type, block number
        (R.OP_ALLOC, 0, 0, 0, 0), (R.OP_FREE, 0, 0, 0, 0), (R.OP_ALLOC, 1, 0, 0, 1),
        (R.OP_ALLOC, 0, 0, 0, 2), (R.OP_FREE, 1, 0, 0, 2),
        (R.OP_ALLOC, 0, 2, kernel, 3), (R.OP_FREE, 0, 2, kernel, 3)]
    assert d.cpus == [0, 1] and d.live_blocks == 1


def test_orders_the_model_cannot_make_are_counted():
    # arm64 with 64 KiB pages allocates up to order 13; pfns and CPUs beyond any real machine
    d, ops = decode_lines([alloc(0x10, 13), free(0x10, 13), alloc(1 << 70, 0, cpu=70000),
                           free(1 << 70, 0, cpu=70000)])
    assert (d.above_max_order, d.unknown_frees, d.allocs, d.frees) == (1, 1, 1, 1)
    assert ops == [(R.OP_ALLOC, 70000, 0, 0, 0), (R.OP_FREE, 70000, 0, 0, 0)]


def test_trace_refills_and_drains_are_runs_per_cpu():
    def locked(pfn, cpu, refill=1, order=0):
        return (PERF.format(cpu=cpu, ts=1.0) + f"mm_page_alloc_zone_locked: page=0x{pfn:x} "
                f"pfn=0x{pfn:x} order={order} migratetype=1 percpu_refill={refill}")

    def drain(pfn, cpu, order=0):
        return (PERF.format(cpu=cpu, ts=1.0) + f"mm_page_pcpu_drain: page=0x{pfn:x} "
                f"pfn=0x{pfn:x} order={order} migratetype=1")

    extfrag = (PERF.format(cpu=0, ts=1.0) + "mm_page_alloc_extfrag: page=0x3 pfn=0x3 alloc_order=0 "
               "fallback_order=10 pageblock_order=9 alloc_migratetype=1 fallback_migratetype=0 "
               "fragmenting=0 change_ownership=1")
    lines = [locked(1, 0), locked(2, 1), extfrag, locked(3, 0), locked(4, 1), alloc(1, cpu=0),
             locked(5, 0), locked(0x200, 0, 0, 9), locked(6, 0),
             drain(7, 1), drain(0x400, 1, 9), free(4, cpu=1), drain(8, 1)]
    d, _ = decode_lines(lines)
    assert R.TracePcp(refill_blocks=6, refill_pages=6, refills=4, buddy_blocks=1,
                      drain_blocks=3, drain_pages=514, drains=2) == d.pcp


def test_decay_ticks_follow_trace_seconds():
    lines = [alloc(1, ts=1.0), alloc(2, ts=2.5), alloc(3, ts=2.9), alloc(4, ts=100.0)]
    d, ops = decode_lines(lines, decay_interval=1.0)
    assert d.decay_ticks == 1 + R.MAX_DECAY_TICKS
    assert [kind for kind, *_ in ops[:4]] == [R.OP_ALLOC, R.OP_DECAY, R.OP_ALLOC, R.OP_ALLOC]
    assert decode_lines(lines, decay_interval=0)[0].decay_ticks == 0


@pytest.mark.parametrize("gfp, order, memdesc", [
    ("GFP_TRANSHUGE|__GFP_NORETRY|__GFP_THISNODE", 9, "anon"),
    (ANON, 0, "anon"),
    ("GFP_KERNEL|__GFP_ZERO", 1, "kernel"),      # an x86 PGD: pagetable row, not compound
    ("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP", 0, "pagetable"),
    ("GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 3, "slab"),
    ("GFP_ATOMIC|__GFP_NOWARN", 0, "netpool"),
    ("GFP_ATOMIC|__GFP_NOWARN", 2, "kernel"),
    ("GFP_HIGHUSER|__GFP_ACCOUNT", 0, "kernel"),  # pipe buffers
    ("GFP_KERNEL", 4, "kernel"),
])
def test_replay_type(gfp, order, memdesc):
    assert TYPES[R.replay_type(gfp, order)] == memdesc


def test_decode_memory_does_not_grow_with_trace_length():
    def events(n):
        for i in range(n):
            pfn = 0x100000 + (i // 2) % 5000
            if i % 2 == 0:
                yield TraceEvent(i % 4, i / 1000, MM_PAGE_ALLOC, pfn, 0, 1, ANON)
            else:
                yield TraceEvent(i % 4, i / 1000, MM_PAGE_FREE, pfn, 0)
            if i % 7 == 0:                             # a free of a page allocated before
                yield TraceEvent(i % 4, i / 1000, MM_PAGE_FREE_BATCHED, 0x900000 + i, 0)

    blocks = []

    def watched(stream):
        for count, event in enumerate(stream, 1):
            if count % 50_000 == 0:
                blocks.append(sys.getallocatedblocks())
            # tracemalloc slows every allocation; it watches a window in the middle
            if count == 100_000:
                tracemalloc.start()
            elif count == 130_000:
                watched.peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            yield event

    with R.OpSpool() as spool:
        d = R.decode(watched(events(200_000)), spool)
        assert spool.count == d.allocs + d.frees + d.decay_ticks
    assert d.allocs == 100_000 and d.unknown_frees == 28_572
    # what churns in the window: the pairing window (~140 B an entry) and the spool buffer
    assert watched.peak < R.PAIR_WINDOW * 200 + 2 * R._SPOOL_FLUSH + 256 * 1024
    assert max(blocks) - min(blocks) < 1000   # over the whole run, not just the window


# --- the zone ------------------------------------------------------------------------

def test_default_zone_is_one_gib_or_four_times_the_peak():
    d = R.Decoded(peak_live_pages=1000, nr_cpu_ids=4)
    assert R.default_zone(d, "6.7") == R.ZoneSetup(1 << 18, "6.7", 4, "default", 1 << 18)
    d.peak_live_pages = 100_000
    assert R.default_zone(d, "5.14").pages == 400_384          # rounded up to 1024 pages


def test_zoneinfo_zone_uses_the_captured_pcp():
    zone = R.zoneinfo_zone(str(SMALL_PCP_ZONEINFO), R.Decoded(), None)
    assert zone == R.ZoneSetup(
        pages=425984, era="6.7", nsplit=2, source=str(SMALL_PCP_ZONEINFO), managed=425984,
        limits=PcpLimits(63, 266, 266, 266), watermarks=zone.watermarks, node=0, captured=True)
    assert (zone.watermarks.min, zone.watermarks.low, zone.watermarks.high) == (5984, 7480, 8976)
    spec = R.model_spec("legacy", zone, 2, 16)
    assert spec.record_bytes == 64 and spec.limits() == PcpLimits(63, 266, 266, 266)
    assert R.model_spec("memdesc", zone, 2, 16).record_bytes == 16


def test_zoneinfo_zone_for_another_era_uses_that_eras_model():
    zone = R.zoneinfo_zone(str(THIS_MACHINE), R.Decoded(), "5.14")
    normal = next(c for c in compare_zones(read_zoneinfo(str(THIS_MACHINE)))
                  if c.zone.zone == "Normal")
    assert not zone.captured and zone.limits == dict(normal.models)["5.14"]
    assert R.model_spec("legacy", zone, 2, 16).limits() == zone.limits


def test_zoneinfo_without_normal_zone(tmp_path):
    text = THIS_MACHINE.read_text()
    dma_only = text[:text.index("Node 0, zone    DMA32")]
    (tmp_path / "zi").write_text(dma_only)
    with pytest.raises(InputError, match="no populated Normal zone"):
        R.zoneinfo_zone(str(tmp_path / "zi"), R.Decoded(), None)


# --- whole replays of the committed captures -------------------------------------------

@pytest.fixture(scope="module")
def small_pcp():
    return R.replay(SMALL_PCP, zoneinfo=str(SMALL_PCP_ZONEINFO))


def test_small_pcp_trace_counts(small_pcp):
    r = small_pcp
    assert r["lines"] == 3500 and r["skipped"] == {}
    assert {name: (e["count"], e["orders"]) for name, e in r["events"].items()} == {
        "mm_page_alloc": (922, {"0": 906, "1": 4, "2": 4, "3": 5, "4": 1, "9": 2}),
        "mm_page_free": (520, {"0": 518, "9": 2}),
        "mm_page_free_batched": (514, {"0": 514}),
        "mm_page_alloc_zone_locked": (955, {"0": 950, "4": 1, "9": 4}),
        "mm_page_pcpu_drain": (589, {"0": 585, "9": 4}),
        "mm_page_alloc_extfrag": (0, {}),
    }
    assert r["replay"] == {
        "cpus": [0, 1], "nr_cpu_ids": 2, "ops": 1441, "allocs": 922, "failed_allocs": 0,
        "above_max_order": 0, "frees": 519, "remote_frees": 0, "batched_pairs": 514, "unknown_frees": 1,
        "order_mismatches": 0, "lost_frees": 0, "live_blocks_at_end": 403,
        "live_pages_at_end": 469, "peak_live_pages": 1492, "decay_ticks": 0,
        "types": {"anon": {"0": 889, "9": 2}, "file": {"0": 10, "1": 4, "2": 4, "3": 5, "4": 1},
                  "pagetable": {"0": 2}, "kernel": {"0": 5}}}
    assert r["trace_pcp"] == {"refill_blocks": 954, "refill_pages": 2998, "refills": 14,
                              "buddy_blocks": 1, "drain_blocks": 589, "drain_pages": 2633,
                              "drains": 10}
    assert r["model"] == {
        "era": "6.7", "zone_source": str(SMALL_PCP_ZONEINFO), "node": 0, "managed": 425984,
        "arena_pages": 425984, "nsplit": 2, "pcp_from_capture": True, "batch": 63,
        "high": 266, "high_min": 266, "high_max": 266, "decay_interval": 1.0}


def test_small_pcp_legacy_figures_and_fidelity(small_pcp):
    legacy = small_pcp["policies"]["legacy"]
    assert {k: legacy[k] for k in ("ops", "alloc_hit", "alloc_refill", "alloc_buddy", "refills",
                                   "refill_pages", "drains", "drain_pages",
                                   "zone_lock_acquisitions", "slab_ops", "alloc_failures")} == {
        "ops": 1441, "alloc_hit": 901, "alloc_refill": 20, "alloc_buddy": 1, "refills": 20,
        "refill_pages": 3514, "drains": 10, "drain_pages": 2683, "zone_lock_acquisitions": 31,
        "slab_ops": 0, "alloc_failures": 0}
    # with the machine's own PCP limits the model drains as often as the kernel did
    assert legacy["fidelity"]["drains"] == {"trace": 10, "model": 10, "model_per_trace": 1.0}
    assert legacy["fidelity"]["refills"] == {"trace": 14, "model": 20,
                                             "model_per_trace": round(20 / 14, 4)}
    assert legacy["cachelines_saved_vs_legacy"] == 0.0


@pytest.mark.parametrize("fixture", ["small_pcp", "default_pcp"])
def test_every_policy_replays_the_same_operations(fixture, request):
    r = request.getfixturevalue(fixture)
    assert list(r["policies"]) == list(POLICIES)
    for name, f in r["policies"].items():
        assert f["audit_ok"], (name, f["audit_problems"])
        assert f["ops"] == r["replay"]["ops"] - r["replay"]["decay_ticks"]
        served = f["alloc_hit"] + f["alloc_refill"] + f["alloc_buddy"]
        assert f["allocs"] == served + f["alloc_failures"]
        # the page array agrees with the trace about what is still allocated
        assert f["pages_at_end"]["allocated"] == r["replay"]["live_pages_at_end"]
        assert f["cachelines_per_op"] == round(f["cachelines"] / f["ops"], 4)
        assert (f["slab_ops"] > 0) == (name.startswith("memdesc"))
    assert "fidelity" in r["policies"]["legacy"]
    assert not any("fidelity" in f for name, f in r["policies"].items() if name != "legacy")


@pytest.fixture(scope="module")
def default_pcp():
    return R.replay(DEFAULT_PCP)


def test_default_pcp_trace_counts(default_pcp):
    r = default_pcp
    assert r["lines"] == 3000
    assert {name: e["count"] for name, e in r["events"].items()} == {
        "mm_page_alloc": 1339, "mm_page_free": 888, "mm_page_free_batched": 771,
        "mm_page_alloc_zone_locked": 2, "mm_page_pcpu_drain": 0, "mm_page_alloc_extfrag": 0}
    rp = r["replay"]
    assert (rp["allocs"], rp["frees"], rp["batched_pairs"], rp["unknown_frees"],
            rp["live_pages_at_end"], rp["peak_live_pages"]) == (1339, 887, 771, 1, 531, 2054)
    assert rp["types"]["anon"] == {"0": 1204, "9": 3} and rp["types"]["kernel"] == {"0": 118}
    m = r["model"]
    assert (m["zone_source"], m["arena_pages"], m["era"], m["nsplit"], m["batch"],
            m["high_min"], m["high_max"]) == ("default", 1 << 18, "6.7", 2, 63, 643, 16384)


@pytest.mark.parametrize("name, counts", [
    # allocs, failed, frees, batched pairs, unknown frees, remote frees
    ("ftrace-2.6.33-era1.txt", (4, 1, 1, 0, 2, 0)),
    ("ftrace-4.4-era2.txt", (5, 1, 2, 1, 0, 0)),
    ("trace-cmd-5.15-era3.txt", (3, 1, 2, 0, 0, 1)),
    ("ftrace-6.18.txt.xz", (664, 0, 8, 132, 147, 0)),
    ("perf-6.18-thp.txt", (84, 0, 8, 47, 64, 0)),
    ("perf-6.18-drain.txt.gz", (517, 0, 233, 223, 197, 123)),
])
def test_every_era_replays(name, counts):
    r = R.replay(DATA / name, policies=["legacy"])
    rp = r["replay"]
    assert (rp["allocs"], rp["failed_allocs"], rp["frees"], rp["batched_pairs"],
            rp["unknown_frees"], rp["remote_frees"]) == counts
    assert r["policies"]["legacy"]["audit_ok"]


def test_compressed_and_plain_give_the_same_results(tmp_path):
    text = lzma.decompress(SMALL_PCP.read_bytes())
    (tmp_path / "t.txt").write_bytes(text)
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(text))
    results = [R.replay(path, policies=["legacy", "memdesc"]) for path in
               (tmp_path / "t.txt", tmp_path / "t.txt.gz", SMALL_PCP)]
    for r in results:
        del r["trace"]
    assert results[0] == results[1] == results[2]


def test_model_allocation_failures_are_counted_not_errors():
    # 24 order-7 blocks (3072 pages) live at once in a 2048-page zone
    lines = [alloc(0x100000 + 128 * i, 7, ANON) for i in range(24)]
    lines += [free(0x100000 + 128 * i, 7) for i in range(24)]
    with R.OpSpool() as spool:
        d = R.decode(parse_lines(lines, "test"), spool, 0)
        run = R.replay_policy(spool, d.cpus, ModelSpec(pages=2048, policy="legacy", ncpus=1))
    figures = R.policy_figures(run)
    assert figures["alloc_failures"] > 0
    assert figures["frees_skipped"] == figures["alloc_failures"]
    assert figures["frees"] + figures["frees_skipped"] == 24 and figures["audit_ok"]


# --- bad input ------------------------------------------------------------------------

def test_missing_file():
    with pytest.raises(InputError, match="nope.txt: cannot read trace"):
        R.replay("/nonexistent/nope.txt")


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 64, "no kmem page-allocator events"),
    (b"", "no kmem page-allocator events"),
    (b"PERFILE2" + bytes(64), "perf script"),
])
def test_unusable_files(tmp_path, content, message):
    (tmp_path / "t").write_bytes(content)
    with pytest.raises(InputError, match=message):
        R.replay(tmp_path / "t")


def test_bad_arguments():
    with pytest.raises(UsageError, match="unknown policy 'slub'"):
        R.replay(DEFAULT_PCP, policies=["slub"])
    with pytest.raises(UsageError, match="record size 24"):
        R.replay(DEFAULT_PCP, record_bytes=24)
    with pytest.raises(ValueError, match="unknown kernel era"):
        R.replay(DEFAULT_PCP, era="3.10")


def test_too_many_cpus(tmp_path):
    lines = [alloc(0x10 + cpu, cpu=cpu) for cpu in range(R.MAX_CPU_SLOTS + 1)]
    (tmp_path / "t").write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match="256 CPUs allocate or free, the model holds 255"):
        R.replay(tmp_path / "t")


def test_lines_not_understood_are_counted(tmp_path):
    malformed = free(0x10).replace("order=0", "order=x")
    lines = ["# tracer: nop", alloc(0x10), "garbage", free(0x10), malformed]
    (tmp_path / "t").write_text("\n".join(lines) + "\n")
    r = R.replay(tmp_path / "t", policies=["legacy"])
    assert r["skipped"] == {"header or comment": 1, "not a trace line": 1, "malformed fields": 1}
    assert r["lines"] == 5 and r["replay"]["frees"] == 1


# --- the command ----------------------------------------------------------------------

def test_command_writes_results(tmp_path, capsys):
    out = tmp_path / "out" / "run1"
    rc = cli.main(["replay", str(DEFAULT_PCP), "--policies", "legacy,memdesc",
                   "--zoneinfo", str(THIS_MACHINE), "--record-bytes", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert {"trace", "lines", "events", "skipped", "replay", "trace_pcp", "model",
            "policies"} <= results.keys()
    assert list(results["policies"]) == ["legacy", "memdesc"]
    assert results["policies"]["memdesc"]["record_bytes"] == 8
    assert results["model"]["managed"] == 393216 and results["model"]["pcp_from_capture"]
    assert results["model"]["high_min"] == 3548 and results["model"]["high_max"] == 24576
    for key in ("pcp_hit_rate", "refills", "drains", "zone_lock_acquisitions",
                "cachelines_per_op", "slab_ops"):
        assert key in results["policies"]["memdesc"]
    assert "legacy fidelity" in printed and f"wrote {out / 'results.json'}" in printed


def test_command_rejects_unknown_policy(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", str(DEFAULT_PCP), "--policies", "legacy,slub"])
    assert exc.value.code == 2
    assert "unknown policy 'slub'" in capsys.readouterr().err


def test_command_cannot_write_out(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    rc = cli.main(["replay", str(DEFAULT_PCP), "--policies", "legacy",
                   "--out", str(tmp_path / "file")])
    assert rc == 2
    assert "cannot write" in capsys.readouterr().err


def test_subprocess_replay(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pcpd", "replay", str(DEFAULT_PCP),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    header = next(line for line in proc.stdout.splitlines() if line.startswith("policy"))
    assert "hit%" in header and "lines/op" in header and "slab ops" in header
    for name in POLICIES:
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines())
    assert json.loads((tmp_path / "results.json").read_text())["replay"]["allocs"] == 1339


def test_subprocess_bad_file(tmp_path):
    (tmp_path / "bad.txt").write_bytes(bytes(range(256)) * 16)
    proc = subprocess.run([sys.executable, "-m", "pcpd", "replay", str(tmp_path / "bad.txt")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"pcpd replay: error: {tmp_path / 'bad.txt'}: no kmem")
