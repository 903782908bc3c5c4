"""pcpd.replay.command: whole replays of the committed captures, bad input, the subcommand.

The captures are described in tests/replay_lines.py.  The expected counts
below were computed once from these files.  Those of the trace and of the
replay's bookkeeping are the trace's own; the model's figures (legacy only)
pin today's model and change when it does.
"""

import gzip
import json
import lzma
import subprocess
import sys

import pytest
from replay_lines import DATA, DEFAULT_PCP, SMALL_PCP, SMALL_PCP_ZONEINFO, THIS_MACHINE, alloc, free

from pcpd import cli
from pcpd.errors import InputError, UsageError
from pcpd.policies import PROPOSAL
from pcpd.replay.command import replay
from pcpd.replay.run import MAX_CPU_SLOTS
from workers.policies import POLICIES


@pytest.fixture(scope="module")
def small_pcp():
    # the window is cut from the middle of a longer capture, and the zoneinfo was taken
    # before that capture began: its counts are not the window's start (README), so the
    # start state is the trace's own
    return replay(SMALL_PCP, policies=list(POLICIES), zoneinfo=str(SMALL_PCP_ZONEINFO), start="trace")


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
        "cpus": [0, 1], "nr_cpu_ids": 2, "ops": 1442, "allocs": 922, "failed_allocs": 0,
        "above_max_order": 0, "frees": 519, "remote_frees": 0, "batched_pairs": 514, "unknown_frees": 1,
        "pre_capture_frees": 1, "split_frees": 0,
        "order_mismatches": 0, "lost_frees": 0, "live_blocks_at_end": 403,
        "live_pages_at_end": 469, "peak_live_pages": 1492, "decay_ticks": 0, "decay_work": 0,
        "types": {"anon": {"0": 889, "9": 2}, "file": {"0": 10, "1": 4, "2": 4, "3": 5, "4": 1},
                  "pagetable": {"0": 2}, "kernel": {"0": 5}},
        "migratetypes": {"anon": "Movable", "file": "Movable", "slab": "Reclaimable",
                         "pagetable": "Unmovable", "netpool": "Unmovable", "kernel": "Unmovable"}}
    assert r["trace_pcp"] == {"refill_blocks": 954, "refill_pages": 2998, "refills": 14,
                              "buddy_blocks": 1, "drain_blocks": 589, "drain_pages": 2633,
                              "drains": 10, "drains_by_cause": {"free": 10},
                              "drain_pages_by_cause": {"free": 2633}}
    # a whole-system capture: perf's own allocations are in the window
    assert r["scope"]["scope"] == "system" and "(first: perf)" in r["scope"]["evidence"]
    assert r["model"] == {
        "era": "6.7", "zone_source": str(SMALL_PCP_ZONEINFO), "node": 0, "managed": 425984,
        "arena_pages": 425984, "nsplit": 2, "pcp_from_capture": True, "batch": 63,
        "high": 266, "high_min": 266, "high_max": 266, "decay_interval": 1.0, "decay_work": 0,
        "pcp_cacheinfo": {"cache_slice": 0, "free_high_batch": "auto", "flag": False}}


LEGACY_KEYS = ("ops", "alloc_hit", "alloc_refill", "alloc_buddy", "refills", "refill_pages",
               "drains", "drain_pages", "zone_lock_acquisitions", "slab_ops", "alloc_failures")


def test_small_pcp_legacy_figures_and_fidelity(small_pcp):
    legacy = small_pcp["policies"]["legacy"]
    assert {k: legacy[k] for k in LEGACY_KEYS} == {
        "ops": 1442, "alloc_hit": 910, "alloc_refill": 11, "alloc_buddy": 1, "refills": 11,
        "refill_pages": 2916, "drains": 8, "drain_pages": 2573, "zone_lock_acquisitions": 20,
        "slab_ops": 0, "alloc_failures": 0}
    # with the machine's own PCP limits and the lists the trace shows, pages within 3%
    fid = legacy["fidelity"]
    assert fid["drain_pages"] == {"trace": 2633, "model": 2573, "model_per_trace": 0.9772}
    assert fid["refill_pages"] == {"trace": 2998, "model": 2916, "model_per_trace": 0.9726}
    assert fid["drains"] == {"trace": 10, "model": 8, "model_per_trace": 0.8}
    assert fid["refills"] == {"trace": 14, "model": 11, "model_per_trace": round(11 / 14, 4)}
    assert fid["drains_free"]["trace"] == 10 and fid["basis"] == "counts"
    assert legacy["cachelines_saved_vs_legacy"] == 0.0
    assert small_pcp["start"]["cpus"][0]["pages_seeded"] == 177


def test_start_empty_is_the_model_before_start_states():
    # the figures this trace gave before the start state existed (the README's until then)
    legacy = replay(SMALL_PCP, policies=["legacy"], zoneinfo=str(SMALL_PCP_ZONEINFO),
                    start="empty")["policies"]["legacy"]
    assert {k: legacy[k] for k in LEGACY_KEYS} == {
        "ops": 1441, "alloc_hit": 901, "alloc_refill": 20, "alloc_buddy": 1, "refills": 20,
        "refill_pages": 3514, "drains": 10, "drain_pages": 2683, "zone_lock_acquisitions": 31,
        "slab_ops": 0, "alloc_failures": 0}
    assert legacy["pre_capture_skipped"] == 1


def test_capture_start_flags_a_zoneinfo_older_than_the_trace():
    r = replay(SMALL_PCP, policies=["legacy"], zoneinfo=str(SMALL_PCP_ZONEINFO))
    assert r["start"]["mode"] == "capture"
    assert any("whether the capture is from the trace's start: CPU 0,1" in u
               for u in r["start"]["unknown"])


@pytest.mark.parametrize("fixture", ["small_pcp", "default_pcp"])
def test_every_policy_replays_the_same_operations(fixture, request):
    r = request.getfixturevalue(fixture)
    # every registered policy on one, the default set (the proposal's four) on the other
    assert list(r["policies"]) == list(POLICIES if fixture == "small_pcp" else PROPOSAL)
    for name, f in r["policies"].items():
        assert f["audit_ok"], (name, f["audit_problems"])
        assert f["ops"] == r["replay"]["ops"] - r["replay"]["decay_ticks"]
        served = f["alloc_hit"] + f["alloc_refill"] + f["alloc_buddy"]
        assert f["allocs"] == served + f["alloc_failures"]
        # the page array agrees with the trace about what is still allocated
        assert f["pages_at_end"]["allocated"] == (r["replay"]["live_pages_at_end"]
                                                  + f["start_allocated_at_end"])
        assert f["cachelines_per_op"] == round(f["cachelines"] / f["ops"], 4)
        assert (f["slab_ops"] > 0) == (name.startswith("memdesc"))
    assert "fidelity" in r["policies"]["legacy"]
    assert not any("fidelity" in f for name, f in r["policies"].items() if name != "legacy")


@pytest.fixture(scope="module")
def default_pcp():
    return replay(DEFAULT_PCP)


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
    r = replay(DATA / name, policies=["legacy"])
    rp = r["replay"]
    assert (rp["allocs"], rp["failed_allocs"], rp["frees"], rp["batched_pairs"],
            rp["unknown_frees"], rp["remote_frees"]) == counts
    assert r["policies"]["legacy"]["audit_ok"]


def test_compressed_and_plain_give_the_same_results(tmp_path):
    text = lzma.decompress(SMALL_PCP.read_bytes())
    (tmp_path / "t.txt").write_bytes(text)
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(text))
    results = [replay(path, policies=["legacy", "memdesc"]) for path in
               (tmp_path / "t.txt", tmp_path / "t.txt.gz", SMALL_PCP)]
    for r in results:
        del r["trace"]
    assert results[0] == results[1] == results[2]


# --- bad input ------------------------------------------------------------------------

def test_missing_file():
    with pytest.raises(InputError, match="nope.txt: cannot read trace"):
        replay("/nonexistent/nope.txt")


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 64, "no kmem page-allocator events"),
    (b"", "no kmem page-allocator events"),
    (b"PERFILE2" + bytes(64), "perf script"),
])
def test_unusable_files(tmp_path, content, message):
    (tmp_path / "t").write_bytes(content)
    with pytest.raises(InputError, match=message):
        replay(tmp_path / "t")


def test_bad_arguments():
    with pytest.raises(UsageError, match="unknown policy 'slub'"):
        replay(DEFAULT_PCP, policies=["slub"])
    with pytest.raises(UsageError, match="record size 24"):
        replay(DEFAULT_PCP, record_bytes=24)
    with pytest.raises(ValueError, match="unknown kernel era"):
        replay(DEFAULT_PCP, era="3.10")


def test_too_many_cpus(tmp_path):
    lines = [alloc(0x10 + cpu, cpu=cpu) for cpu in range(MAX_CPU_SLOTS + 1)]
    (tmp_path / "t").write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match="256 CPUs allocate or free, the model holds 255"):
        replay(tmp_path / "t")


def test_lines_not_understood_are_counted(tmp_path):
    malformed = free(0x10).replace("order=0", "order=x")
    lines = ["# tracer: nop", alloc(0x10), "garbage", free(0x10), malformed]
    (tmp_path / "t").write_text("\n".join(lines) + "\n")
    r = replay(tmp_path / "t", policies=["legacy"])
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
    for name in PROPOSAL:
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


def test_subprocess_replay_from_stdin():
    args = [sys.executable, "-m", "pcpd", "replay", "--policies", "legacy"]
    # a pipe: gzip is recognised by peeking at it, as on a file
    piped = subprocess.run(args + ["-"], input=DEFAULT_PCP.read_bytes(), capture_output=True,
                           timeout=120)
    assert piped.returncode == 0, piped.stderr
    from_file = subprocess.run(args + [str(DEFAULT_PCP)], capture_output=True, text=True, timeout=120)
    assert piped.stdout.decode() == from_file.stdout.replace(str(DEFAULT_PCP), "<stdin>")
    assert piped.stdout.startswith(b"<stdin>: 3000 lines;")


def test_zoneinfo_after_compares_the_end_state(capsys):
    rc = cli.main(["replay", str(DEFAULT_PCP), "--policies", "legacy", "--zoneinfo", str(THIS_MACHINE),
                   "--zoneinfo-after", str(THIS_MACHINE)])
    out = capsys.readouterr().out
    assert rc == 0 and "end state (legacy vs" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("CPU0 "))
    assert len(row.split()) == 5


def test_zoneinfo_after_without_a_normal_zone_is_one_line(tmp_path, capsys):
    (tmp_path / "zi").write_text(THIS_MACHINE.read_text().split("Node 0, zone    DMA32")[0])
    rc = cli.main(["replay", str(DEFAULT_PCP), "--policies", "legacy", "--zoneinfo-after",
                   str(tmp_path / "zi")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no populated Normal zone" in err
