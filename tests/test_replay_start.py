"""pcpd.replay.start: the model's state when the trace begins.

Two fixtures:

* ``replay_lines.thp_like()``: a THP workload written by hand in perf's
  format, with a zoneinfo whose CPUs show an auto-tuned ``high`` (25,088 and
  26,537; tests/data/traces/replay-zoneinfo-6.18-thp.txt is the bundle's
  zoneinfo-before with those two pagesets edited).  The kernel refills 32
  THPs in the first round and never drains: issue 11's THP case.
* tests/data/bundles/thp-6.18-a: a whole-system capture on the project's
  machine (2 CPUs, 6.18.44, perf 6.1), other sessions' work included::

      # thp.py ROUNDS: per round, 32 MAP_PRIVATE|MAP_ANONYMOUS mappings of 4 MiB,
      # MADV_HUGEPAGE on the aligned 2 MiB in each, every 4 KiB of it touched,
      # then all 32 unmapped
      python3 thp.py 2                                   # warms the PCP's high up
      pcpd capture -a -o thp-6.18-a -- taskset -c 0 python3 thp.py 2

  then trace.txt.gz cut to the lines inside the window and recompressed
  with xz -9e (metadata.json's note), which changes nothing the replay reads.
* tests/data/bundles/net-6.18-a and pagecache-6.18-a: whole-system captures
  the same way, on the same machine with two pcpd soaks running, of the
  loads in bench/capture/::

      pcpd capture -a -o net-6.18-a -- python3 bench/capture/net.py 256
      pcpd capture -a -o pagecache-6.18-a -- python3 bench/capture/pagecache.py 256 /tmp

  The network one allocates skbuff slabs (Unmovable, where the model's slab
  type is Reclaimable) and starts mid-way through CPU 0's alloc_factor ramp;
  the page-cache one has the kernel's vmstat_update() lower CPU 1's high
  0.35 s in, and a free-path drain follows.
"""

import pytest
from replay_lines import BUNDLE_NET, BUNDLE_PAGECACHE, BUNDLE_THP, THP_ZONEINFO, alloc, free, thp_like

from pcpd.daemon.audit import audit
from pcpd.kernel import MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE
from pcpd.model.arena import Arena
from pcpd.model.zonewords import Z_FREE_PAGES
from pcpd.pagetypeinfo import ZonePageTypes
from pcpd.replay.command import replay
from pcpd.replay.decode import decode
from pcpd.replay.spool import OpSpool
from pcpd.replay.start import _remainder_list, alloc_factor_at_start, build_plan, seed
from pcpd.replay.trace import parse_lines
from pcpd.spec import ModelSpec
from pcpd.zoneinfo import Pageset
from workers.cpu import CpuAllocator, SharedLocks, format_arena
from workers.policies import POLICIES, TYPES


@pytest.fixture(scope="module")
def thp_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("thp") / "thp-like.txt"
    path.write_text("\n".join(thp_like()) + "\n")
    return path


@pytest.fixture(scope="module")
def thp_runs(thp_trace):
    return {start: replay(thp_trace, policies=["legacy", "compound"], zoneinfo=str(THP_ZONEINFO),
                          start=start)
            for start in ("empty", "trace", "capture")}


def test_thp_trace_is_what_the_kernel_did(thp_runs):
    r = thp_runs["capture"]
    assert r["trace_pcp"]["refills"] == 16 and r["trace_pcp"]["refill_pages"] == 32 * 512
    assert r["trace_pcp"]["drains"] == 0
    assert r["scope"]["scope"] == "process"          # one task, no kernel thread


def test_seeding_high_removes_the_spurious_drains(thp_runs):
    # the kernel drained nothing; starting at high_min (10089) the model drains once
    # the 32 freed THPs (16384 pages) pass it, and refills what it drained
    empty = thp_runs["empty"]["policies"]["legacy"]
    assert empty["drains"] >= 5 and empty["refill_pages"] > 2 * 32 * 512
    # the lists alone (--start trace) do not help: high is what was missing
    assert thp_runs["trace"]["policies"]["legacy"]["drains"] >= 5
    seeded = thp_runs["capture"]["policies"]["legacy"]
    assert (seeded["refills"], seeded["refill_pages"], seeded["drains"]) == (16, 32 * 512, 0)
    fid = seeded["fidelity"]
    assert fid["refill_pages"]["model_per_trace"] == 1.0 and fid["drains"]["model"] == 0
    assert fid["basis"] == "pages"


def test_seeded_start_is_reported(thp_runs):
    start = thp_runs["capture"]["start"]
    assert start["mode"] == "capture"
    cpu0 = start["cpus"][0]
    assert (cpu0["cpu"], cpu0["high_captured"], cpu0["high_model"]) == (0, 25088, 25088)
    # count 3000, none of it shown by the trace (the THP list was empty: refilled at once)
    assert (cpu0["count_captured"], cpu0["from_trace"], cpu0["beyond_trace"]) == (3000, 0, 3000)
    assert cpu0["count_model"] == 3000
    assert start["free_pages"]["model"] <= start["free_pages"]["capture"]
    assert any("pagetypeinfo" in u for u in start["unknown"])
    assert thp_runs["empty"]["start"]["mode"] == "empty"


def test_compound_saving_moves_with_the_start_state(thp_runs):
    # issue 11: the spurious drains made compound look worse than it is on THP traces
    saved = {s: r["policies"]["compound"]["cachelines_saved_vs_legacy"] for s, r in thp_runs.items()}
    assert saved["capture"] > saved["empty"]


# --- a whole-system capture ----------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle_runs():
    return {start: replay(BUNDLE_THP, policies=["legacy", "compound", "memdesc"], start=start)
            for start in ("empty", "capture")}


def test_whole_system_capture_is_reproduced(bundle_runs):
    r = bundle_runs["capture"]
    assert r["scope"] == {"scope": "system", "evidence": "pcpd capture -a"}
    assert r["skipped"] == {}                # the fixture holds only the window's lines
    fid = r["policies"]["legacy"]["fidelity"]
    assert fid["basis"] == "counts"
    for row in ("refills", "refill_pages", "drains", "drain_pages"):
        assert 0.8 <= fid[row]["model_per_trace"] <= 1.2, (row, fid[row])
    assert fid["drains_free"]["trace"] == 10 and fid["drains_decay"]["trace"] == 0
    # measured: 17/17 refills, 17408/17408 pages, 10/10 drains, 15939 of 15969 pages
    assert (fid["refills"]["model"], fid["drains"]["model"]) == (17, 10)
    for policy, f in r["policies"].items():
        assert f["audit_ok"], (policy, f["audit_problems"])
        assert f["pages_at_end"]["allocated"] == (r["replay"]["live_pages_at_end"]
                                                  + f["start_allocated_at_end"])


def test_pages_beyond_the_trace_go_on_a_list_the_kernel_did_not_refill():
    pages = (199, 27, 83) + (0,) * 11
    refilled = (True, True) + (False,) * 12
    # an order-0 list the model keeps first; with slab Unmovable it keeps no Reclaimable
    # list, and the lowest order left takes them (movable first): they must still count
    assert _remainder_list(pages, refilled, {0, 1, 2}) == 2
    assert _remainder_list(pages, refilled, {0, 1}) == 4
    assert _remainder_list(pages, (False,) * 14, {0, 1}) == 0           # the one used most
    assert _remainder_list(pages, (True,) * 14, {0, 1, 2}) == -1


@pytest.mark.parametrize("first_refill, frees, factor", [
    (63, 0, 0), (252, 0, 2), (252, 1, 4), (126, 3, 5),      # 1 << 3 = 8: capped at 5
    (None, 0, None), (0, 0, None),                          # no order-0 refill in the trace
    (63, 1, None),                                          # 0 after a free: anything below 2
    (100, 0, None), (20, 0, None), (189, 0, None),          # cut by high or by the trace's start
])
def test_alloc_factor_from_the_first_refill(first_refill, frees, factor):
    assert alloc_factor_at_start(first_refill, frees, batch=63, scale_max=5) == factor


@pytest.fixture(scope="module")
def captures():
    return {bundle.name: replay(bundle, policies=["legacy"]) for bundle in (BUNDLE_NET, BUNDLE_PAGECACHE)}


@pytest.mark.parametrize("name", ["net-6.18-a", "pagecache-6.18-a"])
def test_more_whole_system_captures_are_reproduced(captures, name):
    fid = captures[name]["policies"]["legacy"]["fidelity"]
    for row in ("refills", "refill_pages", "drains", "drain_pages"):
        assert 0.8 <= fid[row]["model_per_trace"] <= 1.2, (row, fid[row])
    assert captures[name]["policies"]["legacy"]["audit_ok"]


def test_a_capture_that_starts_mid_ramp_seeds_alloc_factor(captures):
    """CPU 0's first refill in the window is 252 blocks (batch << 2) after one free: the
    kernel's alloc_factor was at least 4 when the window opened.  From 0 the model refilled
    1.34x the kernel's pages (measured); with the factor and the skbuff slabs Unmovable it
    takes 3163 of 3163."""
    r = captures["net-6.18-a"]
    assert [c.get("alloc_factor") for c in r["start"]["cpus"]] == [4, None]
    assert r["replay"]["migratetypes"]["slab"] == "Unmovable"
    fid = r["policies"]["legacy"]["fidelity"]
    assert (fid["refills"]["model"], fid["refill_pages"]["model"]) == (32, 3163)


def test_decay_runs_at_the_traces_vmstat_update(captures):
    """vmstat_update() on CPU 1 lowers high from 60071 (decay_pcp_high()), and the next free
    drains 940 pages; a decay every trace second never came in the 0.35 s window."""
    r = captures["pagecache-6.18-a"]
    assert r["model"]["decay_work"] >= 1
    fid = r["policies"]["legacy"]["fidelity"]
    assert (fid["drains_free"]["trace"], fid["drains_free"]["model"]) == (1, 1)
    cpu1 = r["end_state"]["cpus"][1]          # captured 60071 at the start, 53728 at the end
    assert cpu1["high"]["capture"] == 53728 and abs(cpu1["high"]["model"] - 53728) <= 63


def test_whole_system_capture_without_a_start_state_is_not(bundle_runs):
    fid = bundle_runs["empty"]["policies"]["legacy"]["fidelity"]
    assert fid["refills"]["model_per_trace"] > 2          # 53 refills for the kernel's 17
    assert fid["drain_pages"]["model_per_trace"] < 0.5


def test_end_state_matches_the_zoneinfo_after(bundle_runs):
    end = bundle_runs["capture"]["end_state"]
    assert end["zoneinfo"].endswith("zoneinfo-after.txt")
    for cpu in end["cpus"]:
        assert cpu["high"]["model"] == cpu["high"]["capture"]
        assert abs(cpu["count"]["model"] - cpu["count"]["capture"]) <= 64
    assert "end state" in format_text(bundle_runs["capture"])


def test_pre_capture_frees_are_replayed(bundle_runs):
    r = bundle_runs["capture"]
    assert r["replay"]["pre_capture_frees"] == 4531 and r["replay"]["split_frees"] == 0
    assert r["start"]["pool"] == {"blocks": 4531, "unplaced": 0}
    assert r["policies"]["legacy"]["pre_capture_skipped"] == 0
    # --start empty replays today's model: no pool, so they are skipped
    assert bundle_runs["empty"]["policies"]["legacy"]["pre_capture_skipped"] == 4531


def format_text(results):
    from pcpd.replay.report import format_report
    return format_report(results)


# --- seed(), on its own --------------------------------------------------------------------

def _decoded(lines):
    with OpSpool() as spool:
        return decode(parse_lines(lines, "test"), spool, 0)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_seed_is_conserved_for_every_policy(policy):
    lines = [alloc(0x1000 + i) for i in range(40)] + [free(0x9000), free(0x9200, 2, cpu=1)]
    decoded = _decoded(lines)
    pagesets = {0: Pageset(0, 500, 1200, 63, 600, 4000), 1: Pageset(1, 80, 0, 63, 600, 4000)}
    pagetypes = ZonePageTypes(0, "Normal", free={"Unmovable": [4, 0, 0, 1], "Movable": [0] * 10 + [20],
                                                "Reclaimable": [0, 2]},
                              blocks={"Unmovable": 10, "Movable": 52, "Reclaimable": 2, "HighAtomic": 0})
    plan = build_plan("capture", decoded, pagesets=pagesets, high_is_state=True, free_pages=21000,
                      managed=32768, pagetypes=pagetypes)
    spec = ModelSpec(pages=32768, policy=policy, ncpus=2)
    arena = Arena.create(spec.geometry(ring_slots=1))
    try:
        format_arena(arena, spec)
        locks = SharedLocks.local()
        models = [CpuAllocator(arena, spec, locks, slot) for slot in range(2)]
        pool, report = seed(arena, models, plan)
        result = audit(arena)
        assert result.ok, result.describe_problems()
        # 40 pages the trace shows on CPU 0's movable order-0 list, 460 more up to the count
        assert models[0].policy.pcp_pages() == 500 and models[1].policy.pcp_pages() == 80
        assert [p.high for p in models[0].policy.pcps][0] == 1200
        assert all(p.high == 0 for p in models[1].policy.pcps)     # 0: not used yet, boot value
        assert int(arena.zone[Z_FREE_PAGES]) == report.free_pages == 21000
        assert sorted((k, len(v)) for k, v in pool.items()) == [
            ((0, 0, TYPES.index("anon")), 1), ((1, 2, TYPES.index("anon")), 1)]
        assert report.pageblocks["Unmovable"] >= 10 and report.pageblocks["Reclaimable"] >= 2
        assert (arena.pageblock == MIGRATE_UNMOVABLE).sum() + (arena.pageblock == MIGRATE_MOVABLE).sum() \
            + report.pageblocks["Reclaimable"] == 64
        assert sum(models[0].counters.v) == 0 and sum(models[1].counters.v) == 0
        for (slot, order, t), pfns in pool.items():    # the trace's pre-capture frees
            for pfn in pfns:
                models[slot].policy.free(pfn, order, t)
        del models
        assert audit(arena).ok
    finally:
        arena.close()
        arena.unlink()


def _seeded(plan, pages, policy="legacy"):
    """seed() on a fresh two-CPU arena: (pool, report, pageblock migratetypes, PCP pages per CPU)."""
    spec = ModelSpec(pages=pages, policy=policy, ncpus=2)
    arena = Arena.create(spec.geometry(ring_slots=1))
    models: list[CpuAllocator] = []
    try:
        format_arena(arena, spec)
        models += [CpuAllocator(arena, spec, SharedLocks.local(), slot) for slot in range(2)]
        pool, report = seed(arena, models, plan)
        assert audit(arena).ok
        return pool, report, arena.pageblock.tolist(), [m.policy.pcp_pages() for m in models]
    finally:
        models.clear()
        arena.close()
        arena.unlink()


SEED_LINES = [alloc(0x1000 + i) for i in range(40)] + [free(0x9000), free(0x9200, 2, cpu=1)]
SEED_PAGETYPES = ZonePageTypes(0, "Normal", free={"Unmovable": [4, 0, 0, 1], "Movable": [0] * 10 + [20],
                                                  "Reclaimable": [0, 2]},
                               blocks={"Unmovable": 10, "Movable": 52, "Reclaimable": 2, "HighAtomic": 0})


def test_seed_lays_out_regions_pool_filler_and_free_pages():
    pagesets = {0: Pageset(0, 500, 1200, 63, 600, 4000), 1: Pageset(1, 80, 0, 63, 600, 4000)}
    plan = build_plan("capture", _decoded(SEED_LINES), pagesets=pagesets, high_is_state=True,
                      free_pages=21000, managed=32768, pagetypes=SEED_PAGETYPES)
    anon = TYPES.index("anon")
    # Unmovable, Reclaimable, Movable regions as the capture's pageblocks; the pool blocks
    # after the PCP pages in the Movable region, largest first; free pages split as captured
    pool, report, pageblocks, _ = _seeded(plan, 32768)
    assert pageblocks == [MIGRATE_UNMOVABLE] * 10 + [MIGRATE_RECLAIMABLE] * 2 + [MIGRATE_MOVABLE] * 52
    assert sorted(pool.items()) == [((0, 0, anon), [6728]), ((1, 2, anon), [6144])]
    assert (report.filler_pages, report.pool_unplaced, report.pcp_unplaced_blocks) == (11183, 0, 0)
    assert report.free_by_type == {"Unmovable": 12, "Reclaimable": 4, "Movable": 20984}
    # an arena of 4 pageblocks: Unmovable keeps its share and Movable one MAX_ORDER block
    pool, report, pageblocks, _ = _seeded(plan, 2048)
    assert pageblocks == [MIGRATE_UNMOVABLE] * 2 + [MIGRATE_MOVABLE] * 2
    assert sorted(pool.items()) == [((0, 0, anon), [1608]), ((1, 2, anon), [1024])]
    assert (report.filler_pages, report.free_pages, report.free_by_type["Movable"]) == (1024, 439, 439)
    assert [c["high_model"] for c in report.pcp] == [128, 0]       # high clamped to the small zone


def test_seed_counts_what_the_arena_had_no_room_for():
    pagesets = {0: Pageset(0, 3000, 1200, 63, 600, 4000), 1: Pageset(1, 80, 0, 63, 600, 4000)}
    plan = build_plan("capture", _decoded(SEED_LINES), pagesets=pagesets, high_is_state=True,
                      managed=32768)
    pool, report, pageblocks, pcp_pages = _seeded(plan, 2048)
    assert pageblocks == [MIGRATE_MOVABLE] * 4 and pcp_pages == [2044, 0]
    assert sorted(pool.items()) == [((1, 2, TYPES.index("anon")), [0])]     # largest block first
    assert (report.pool_unplaced, report.pcp_unplaced_blocks, report.free_pages) == (1, 1036, 0)


def test_plan_names_what_it_could_not_tell():
    decoded = _decoded(SEED_LINES)
    plan = build_plan("capture", decoded, pagesets={0: Pageset(0, 5000, 1200, 63, 600, 600)},
                      per_process=True, zoneinfo_given=True)
    assert plan.cpus[0].remainder == 4960 and plan.cpus[0].remainder_pindex == 1
    assert plan.cpus[1].count is None and plan.cpus[0].high is None     # high not state
    assert [u.split(":")[0].split(" (")[0] for u in plan.unknown] == [
        "the pagesets of CPU 1",
        "auto-tuned pcp->high",
        "whether the capture is from the trace's start",
        "which lists held the captured count beyond what the trace shows",
        "when the kernel refilled each list",
        "other tasks' use of the PCP lists",
        "the zone's free pages, not taken from the zoneinfo",
        "pageblock migratetypes",
        "free_count and the PCPF flags of every CPU",
        "the free lists' per-order shape"]
    assert "CPU 0 held more than high" in plan.unknown[2]
    trace = build_plan("trace", decoded)
    assert trace.unknown[0].startswith("pcp->high and pcp->count of every CPU, not taken from a "
                                       "capture (no zoneinfo): high starts at high_min")
    assert len(trace.unknown) == 6 and all(c.count is None for c in trace.cpus)
    assert build_plan("empty", decoded).unknown[0].endswith("(--start empty)")


def test_start_empty_is_the_old_model(thp_trace):
    r = replay(thp_trace, policies=["legacy"], start="empty")
    assert r["start"] == {"mode": "empty", "unknown": r["start"]["unknown"]}
    assert r["policies"]["legacy"]["pcp_at_end"][0]["cpu"] == 0


def test_start_arguments_are_checked(thp_trace):
    from pcpd.errors import UsageError
    with pytest.raises(UsageError, match="--start capture needs --zoneinfo"):
        replay(thp_trace, policies=["legacy"], start="capture")
    with pytest.raises(UsageError, match="start 'full' is not one of"):
        replay(thp_trace, policies=["legacy"], start="full")
    with pytest.raises(UsageError, match="--pagetypeinfo needs --zoneinfo"):
        replay(thp_trace, policies=["legacy"], pagetypeinfo="x")
