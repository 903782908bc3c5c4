"""pcpd simulate: virtual-time mode.  The discrete-event zone->lock, determinism (same seed, same
counts and virtual times) at 1, 2, 64 and 256 virtual CPUs, the cost model's calibration, cross-CPU
frees through the rings, era 6.7 against 5.14, the PCP tuning series, the metrics a run serves, the
files and the command line."""

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pcpd.analysis.results import load, tuning_problem
from pcpd.cli import main
from pcpd.config.load import load_settings, parse_settings, replace_path
from pcpd.config.settings import SimulateSettings
from pcpd.model.stats import INDEX, NAMES, NR_STATS
from pcpd.simulate import engine
from pcpd.simulate.clock import CpuClock, ZoneLockClock, quantile
from pcpd.simulate.costs import COST_KEYS, CostModel, potential_of
from pcpd.simulate.engine import TUNING_INTERVAL, Simulation, ring_slots_for
from workers.worker import CHUNK

ROOT = Path(__file__).resolve().parent.parent
PAGE_FAULT1 = ROOT / "configs" / "page-fault1.toml"


@pytest.fixture
def small_pf1(tmp_path):
    """The page-fault1 preset on a 256 MiB zone: its command-line runs start faster."""
    path = tmp_path / "page-fault1.toml"
    path.write_text(PAGE_FAULT1.read_text().replace('memory = "8GiB"', 'memory = "256MiB"'))
    return path


def config(n: int, *, memory: str = "64MiB", working_set: int = 64, burst: int = 64, era: str = "6.7",
           extra: str = "", simulate: str = "", seed: int = 1, types: str = "anon = 1"):
    """Settings for n virtual CPUs of a small order-0 map/unmap workload."""
    text = f"""
name = "sim"
seed = {seed}
[arena]
memory = "{memory}"
[kernel]
era = "{era}"
[[workload]]
name = "w"
types = {{ {types} }}
orders = {{ 0 = 1 }}
working_set = {working_set}
burst = {burst}
lifetime = "fifo"
{extra}
[simulate]
{simulate}
"""
    cpus = range(n)
    settings = parse_settings(text, "sim.toml", available_cpus=cpus)
    return replace_path(settings, "cpus", list(cpus), available_cpus=cpus)


def fingerprint(result):
    """Everything a run measured: counters per CPU, virtual times, every lock wait and hold."""
    return (result.snapshot.per_cpu.tolist(), result.finish_seconds, result.seconds, result.lock)


# --- the virtual zone->lock ------------------------------------------------------------

def _lock_clock(**costs):
    model = CostModel.from_settings(SimulateSettings(**costs))
    return ZoneLockClock(model, potential_of(model), lambda v: v[INDEX["lines_written_buddy"]])


def test_lock_is_fifo_with_exact_waits_holds_switches_and_waiters():
    lock = _lock_clock(lock_ns=10, lock_handoff_ns=100, locked_line_ns=1)
    a, b, c = (CpuClock(slot, [0] * NR_STATS) for slot in range(3))
    lock.acquire(a)                                  # a at 0: free, no wait
    a.v[INDEX["lines_written_buddy"]] += 5         # 5 lines under the lock
    lock.release(a)                                  # hold 10 + 5 = 15 ns
    assert a.now == 15_000 and lock.free_at == 15_000
    b.now = c.now = 4_000
    lock.acquire(b)                                  # b asks at 4 ns: waits 11, pays the handoff
    assert b.now == 15_000
    lock.release(b)                                  # hold 10 + 100
    lock.acquire(c)                                  # c asked at 4 ns too: 2 waiting then
    lock.release(c)
    assert lock.waits == [11_000, 121_000]
    assert lock.holds == [15_000, 110_000, 110_000]
    assert (lock.switches, lock.waiters_max, lock.inversions) == (2, 2, 0)
    assert c.v[INDEX["lock_waiters_max"]] == 2 and b.v[INDEX["lock_contended"]] == 1
    assert a.v[INDEX["lock_uncontended"]] == 1 and b.v[INDEX["lock_wait_ns"]] == 11
    figures = lock.figures(seconds=235e-9)
    assert figures.contended_ratio == pytest.approx(2 / 3)
    assert figures.wait_p50_seconds == pytest.approx(11e-9) and figures.wait_max_seconds == pytest.approx(121e-9)
    assert figures.busy_ratio == pytest.approx(1.0)


def test_a_later_request_granted_first_is_counted_as_an_inversion():
    lock = _lock_clock()
    a, b = CpuClock(0, [0] * NR_STATS), CpuClock(1, [0] * NR_STATS)
    a.now, b.now = 500_000, 100_000
    lock.acquire(a)
    lock.release(a)
    lock.acquire(b)                                  # b asked earlier but was reached later
    lock.release(b)
    assert lock.inversions == 1


def test_taking_the_lock_twice_is_an_error():
    lock = _lock_clock()
    a, b = CpuClock(0, [0] * NR_STATS), CpuClock(1, [0] * NR_STATS)
    lock.acquire(a)
    with pytest.raises(RuntimeError, match="takes it twice"):
        lock.acquire(b)


def test_quantile_is_nearest_rank():
    assert quantile([], 0.5) is None
    assert quantile([1, 2, 3, 4], 0.5) == 2 and quantile([1, 2, 3, 4], 0.99) == 4


# --- the cost model --------------------------------------------------------------------

def test_an_order0_pcp_alloc_free_pair_costs_54_ns_as_page_bench01():
    # working set 1: alloc, free, alloc, ...; after the first refill every pair is two PCP hits
    runs = [Simulation(config(1, working_set=1, burst=1), "legacy", ops).run() for ops in (1024, 2048)]
    assert runs[0].snapshot.total("refills") == runs[1].snapshot.total("refills") == 1
    pair = (runs[1].seconds - runs[0].seconds) / 512
    assert pair == pytest.approx(54e-9, abs=1e-15)


def test_every_cost_has_a_source_and_a_setting():
    assert set(COST_KEYS) == {name for name in SimulateSettings.__dataclass_fields__ if name not in ("ops", "cpus")}
    model = CostModel.from_settings(SimulateSettings())
    assert set(model.as_ns()) == set(COST_KEYS)


# --- determinism and scale ---------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 64, 256])
def test_same_seed_same_counts_and_virtual_times(n):
    settings = config(n, working_set=24, burst=24, extra='cross_cpu = { fraction = 0.2 }')
    ops = 2 * CHUNK if n < 64 else CHUNK
    first, second = (Simulation(settings, "legacy", ops).run() for _ in range(2))
    assert fingerprint(first) == fingerprint(second)
    assert first.audit_ok, first.audit_summary
    # a step is one operation, except a free whose block went to another CPU (freed there, later)
    assert n * ops - first.snapshot.total("free_remote_out") <= first.snapshot.ops() <= n * ops
    assert first.lock.acquisitions == first.snapshot.total("lock_acquisitions") > 0
    assert first.lock.waiters_max <= n
    if n == 1:
        assert first.lock.contended == first.lock.owner_switches == 0
    else:
        assert first.snapshot.total("free_remote_out") > 0 and first.snapshot.total("free_remote_in") > 0
    if n >= 64:                                       # they all start at once: some of them wait
        assert first.lock.contended > 0 and first.lock.wait_p99_seconds > 0


# one worker of `pcpd run --ops` (test_experiment's config): a mix of types and orders, waves
ONE_WORKER = """
name = "one-worker"
cpus = [0]
[arena]
memory = "16MiB"
[[workload]]
name = "w"
types = { anon = 2, slab = 1, kernel = 1 }
orders = { 0 = 70, 1 = 20, 3 = 10 }
type_orders = { kernel = { 1 = 1 } }
working_set = 1024
burst = 8
pressure = { period = 5000, free_fraction = 0.5 }
"""
TIMED = ("_ns", "lock_wait_bucket_")


def test_one_virtual_cpu_counts_exactly_as_one_real_worker():
    """The same model, workload and housekeeping: only the clock differs from real mode."""
    from pcpd.analysis.experiment import run_once
    from pcpd.analysis.plan import plan_experiment
    from pcpd.simulate.output import run_record

    settings = parse_settings(ONE_WORKER, "one-worker.toml", available_cpus={0})
    real = run_once(settings, "legacy", plan_experiment(settings, ops=20_000, available_cpus={0}))
    # a real worker stops at the end of a CHUNK: 79 chunks for 20,000
    virtual = run_record(Simulation(settings, "legacy", 79 * CHUNK).run(), settings.seed)
    counts = [name for name in NAMES if not any(t in name for t in TIMED)]
    assert real["exit_code"] == virtual["exit_code"] == 0
    assert {n: real["counters"][n] for n in counts} == {n: virtual["counters"][n] for n in counts}


def test_another_seed_gives_other_streams():
    a, b = (Simulation(config(2, seed=seed, extra='cross_cpu = { fraction = 0.3 }'), "legacy", CHUNK).run()
            for seed in (1, 2))
    assert fingerprint(a) != fingerprint(b)


TIMES = {"heartbeat_ns", "lock_wait_ns", "lock_wait_max_ns", "lock_hold_ns", "lock_hold_max_ns"}


def test_counts_do_not_depend_on_the_cost_model_on_one_cpu_but_times_do():
    one = Simulation(config(1), "legacy", CHUNK).run()
    slower = Simulation(config(1, simulate="line_ns = 10.0\nlocked_line_ns = 100.0"), "legacy", CHUNK).run()
    counts = [name for name in NAMES if name not in TIMES]
    assert [one.snapshot.total(n) for n in counts] == [slower.snapshot.total(n) for n in counts]
    assert slower.seconds > one.seconds
    assert slower.snapshot.total("lock_hold_ns") > one.snapshot.total("lock_hold_ns")


def test_a_memdesc_policy_runs_with_its_descriptors():
    settings = config(4, types="anon = 1, slab = 1, netpool = 1", extra="cross_cpu = { fraction = 0.3 }")
    result = Simulation(settings, "memdesc", 2 * CHUNK).run()
    assert result.audit_ok, result.audit_summary
    assert result.snapshot.total("desc_lines_written") > 0 and result.snapshot.total("slab_alloc") > 0


def test_a_run_samples_every_cpus_pcp_tuning_in_virtual_time():
    settings = config(3, era="6.7", working_set=2048, burst=256, extra='cross_cpu = { fraction = 0.3 }')
    first, second = (Simulation(settings, "legacy", 8 * CHUNK).run() for _ in range(2))
    series = first.tuning.record()
    assert series == second.tuning.record()                                  # same seed, same series
    assert tuning_problem(series) is None and series["cpus"] == [0, 1, 2]
    seconds = series["seconds"]
    assert len(seconds) >= 10 and seconds[0] >= TUNING_INTERVAL and seconds[-1] == round(first.seconds, 8)
    assert all(later - earlier >= TUNING_INTERVAL * 0.999 for earlier, later in zip(seconds, seconds[1:-1]))
    # the last sample is the state the run ended in: the gauges of its final counters
    for key in ("high", "free_count", "alloc_factor"):
        assert [row[-1] for row in series[key]] == first.snapshot.per_cpu[:, INDEX[f"pcp_{key}"]].tolist()
    assert any(len(set(row)) > 1 for row in series["high"]), "6.7 tunes high as the run goes"


def test_rings_shrink_with_many_cpus():
    assert ring_slots_for(2) == 1024 and 56 <= ring_slots_for(256) < 1024
    assert ring_slots_for(1024) == 56


# --- the metrics a run serves --------------------------------------------------------------

def scrape(address: str) -> dict[tuple[str, frozenset], float]:
    """/metrics at ``address``: every sample's value by (name, labels)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def served(settings, policy: str, ops: int):
    """A run serving its metrics on a free port, scraped at every progress report: (result, pages)."""
    simulation = Simulation(settings, policy, ops, listen="127.0.0.1:0")
    pages: list[tuple[int, dict]] = []
    result = simulation.run(lambda done, total: pages.append((done, scrape(simulation.exporter.address))))
    assert simulation.exporter is None                  # stopped before the arena went
    return result, pages


@pytest.fixture
def fold_at_every_check(monkeypatch):
    """Fold and report at every CHECK_EVERY steps, so a short run folds many times mid-run."""
    monkeypatch.setattr(engine, "FOLD_NS", 0)
    monkeypatch.setattr(engine, "REPORT_EVERY", engine.CHECK_EVERY)


def test_a_run_serves_its_counters_labelled_virtual_and_they_end_as_its_results(fold_at_every_check):
    settings = config(3, working_set=48, burst=48, extra='cross_cpu = { fraction = 0.3 }')
    result, pages = served(settings, "legacy", 4 * CHUNK * 4)
    total = 3 * 4 * CHUNK * 4
    assert [done for done, _ in pages] == [0, 4096, 8192, total]
    info = [dict(labels) for name, labels in pages[-1][1] if name == "pcpd_info"]
    assert info == [{"policy": "legacy", "era": "6.7", "record_bytes": "64", "config": "sim", "mode": "virtual"}]
    ops = [page[("pcpd_allocations_total", frozenset({("memdesc", "anon"), ("order", "0")}))]
           + page[("pcpd_frees_total", frozenset({("memdesc", "anon")}))] for _, page in pages]
    clock = [page[("pcpd_virtual_time_seconds_total", frozenset())] for _, page in pages]
    assert ops[0] == clock[0] == 0 and ops == sorted(ops) and clock == sorted(clock)
    assert 0 < ops[1] < ops[-1] == result.ops and 0 < clock[1] < clock[-1] == result.seconds
    end, totals = pages[-1][1], result.snapshot.totals()
    assert end[("pcpd_pcp_refill_pages_total", frozenset())] == totals["refill_pages"] > 0
    assert end[("pcpd_zone_lock_acquisitions_total", frozenset())] == result.lock.acquisitions
    assert end[("pcpd_remote_frees_total", frozenset({("direction", "in")}))] == totals["free_remote_in"] > 0
    assert end[("pcpd_pcp_pages", frozenset())] == totals["pcp_pages"] > 0
    assert end[("pcpd_held_pages", frozenset())] == totals["held_pages"] > 0
    # one process runs every virtual CPU: counted once, not once per CPU
    assert end[("pcpd_workers", frozenset())] == 1


def test_serving_metrics_changes_no_count_or_virtual_time(fold_at_every_check):
    settings = config(4, working_set=32, burst=32, extra='cross_cpu = { fraction = 0.3 }')
    quiet = Simulation(settings, "memdesc", 3 * CHUNK * 4).run()
    loud, pages = served(settings, "memdesc", 3 * CHUNK * 4)
    assert len(pages) == 4                              # it folded mid-run
    assert fingerprint(loud) == fingerprint(quiet)
    assert loud.tuning.record() == quiet.tuning.record()


def test_per_cpu_metrics_name_the_virtual_cpus(fold_at_every_check):
    settings = replace_path(config(2, working_set=32, burst=32), "exporter.per_cpu", True, available_cpus=range(2))
    result, pages = served(settings, "legacy", CHUNK * 16)
    end = pages[-1][1]
    for slot, cpu in enumerate(("0", "1")):
        allocs = end[("pcpd_allocations_total", frozenset({("cpu", cpu), ("memdesc", "anon"), ("order", "0")}))]
        assert allocs == result.snapshot.per_cpu[slot, INDEX["alloc_anon_order_0"]] > 0
    assert end[("pcpd_workers", frozenset({("cpu", "0")}))] == 1
    assert end[("pcpd_workers", frozenset({("cpu", "1")}))] == 0


# --- era 6.7 against 5.14 (the auto-tuning series' direction) ------------------------------

def _eras(region: int):
    runs = {}
    for era in ("5.14", "6.7"):
        # 16 CPUs on 256 MiB: batch 15, 5.14's high 60, 6.7's high_max 512
        settings = config(16, memory="256MiB", working_set=region, burst=region, era=era,
                          simulate="alloc_caller_ns = 1000.0\nfree_caller_ns = 200.0")
        runs[era] = Simulation(settings, "legacy", 6 * region).run()
    return runs["5.14"], runs["6.7"]


def test_era_67_takes_fewer_pages_and_locks_and_holds_more_on_pcps():
    """page_fault1 with a region 6.7's high_max can keep: the direction the auto-tuning series reported."""
    old, new = _eras(128)
    assert (old.limits.high, new.limits.high_min, new.limits.high_max) == (60, 60, 512)
    a, b = old.snapshot.totals(), new.snapshot.totals()
    assert b["refill_pages"] < a["refill_pages"]
    assert b["lock_acquisitions"] * 4 < a["lock_acquisitions"]
    assert b["drains_high"] * 4 < a["drains_high"] and a["drains_free_high"] == b["drains_free_high"] == 0
    assert new.pcp_pages_mean > 2 * old.pcp_pages_mean
    assert new.seconds < old.seconds


def test_era_67_overfetches_a_region_larger_than_high_max():
    """Why pages from the zone can rise in 6.7: alloc_factor's growing refills fetch more than the
    rest of the map phase uses, and the unmap's drains take those unused pages back first (list tails)."""
    old, new = _eras(512)
    a, b = old.snapshot.totals(), new.snapshot.totals()
    assert b["refill_pages"] > a["refill_pages"]
    assert b["lock_acquisitions"] * 4 < a["lock_acquisitions"]


# --- files and the command line ----------------------------------------------------------

def test_simulate_writes_labelled_results_that_compare(tmp_path, capsys, small_pf1):
    out = tmp_path / "a"
    argv = ["simulate", str(small_pf1), "--cpus", "3", "--ops", "512", "--policy", "legacy,memdesc"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "legacy, era 6.7: 3 virtual CPUs, 1,536 ops" in text and "zone->lock:" in text
    results = load(str(out / "results.json"))
    assert results.metadata["mode"] == "virtual" and results.metadata["virtual"]["cpus"] == 3
    assert results.metadata["config"]["cpus"] == [0, 1, 2]
    assert [run["policy"] for run in results.runs] == ["legacy", "memdesc"]
    assert results.runs[0]["virtual"]["lock_acquisitions"] == results.runs[0]["counters"]["lock_acquisitions"]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "mode" in header and "virtual_lock_wait_p99_seconds" in header
    report = (out / "report.md").read_text()
    assert "| mode " in report and "## Virtual time" in report and "simulate.locked_line_ns" in report
    assert (out / "policies.png").stat().st_size > 0
    assert "![tuning](tuning.png)" in report and (out / "tuning.png").stat().st_size > 0
    assert f"{out / 'policies.png'}, {out / 'tuning.png'}" in text                  # the "wrote" line
    assert all(tuning_problem(run["tuning"]) is None for run in results.runs)
    # the same command again, each run serving its metrics: the same figures, which compare as the same
    assert main([*argv, "--out", str(tmp_path / "b"), "--listen", "127.0.0.1:0"]) == 0
    err = capsys.readouterr().err
    assert "legacy: metrics on http://127.0.0.1:" in err and "memdesc: metrics on http://127.0.0.1:" in err
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [run["counters"] for run in again["runs"]] == [run["counters"] for run in results.runs]
    assert [run["tuning"] for run in again["runs"]] == [run["tuning"] for run in results.runs]
    capsys.readouterr()
    assert main(["compare", str(out), str(tmp_path / "b")]) == 0
    assert main([*argv, "--out", str(out)]) == 2                     # exists, no --replace
    assert "pass --replace" in capsys.readouterr().err
    for name in ("results.json", "results.csv", "report.md", "policies.png"):
        (out / name).unlink()
    assert main([*argv, "--out", str(out)]) == 2                     # an old tuning.png is kept too
    assert capsys.readouterr().err.startswith(f"pcpd simulate: error: {out / 'tuning.png'} exists")


def test_compare_refuses_another_cost_model_and_real_results(tmp_path, capsys, small_pf1):
    slow = tmp_path / "slow.toml"
    slow.write_text(small_pf1.read_text().replace("free_caller_ns = 200.0", "free_caller_ns = 900.0"))
    for name, path in (("a", small_pf1), ("b", slow)):
        assert main(["simulate", str(path), "--cpus", "2", "--ops", "256", "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "virtual" in capsys.readouterr().err
    real = load(str(ROOT / "tests" / "data" / "results" / "v2-tiny.json"))
    assert "mode" not in real.metadata


BAD = [
    (["--cpus", "0"], "--cpus: expected a number >= 1"),
    (["--cpus", "5000"], "--cpus: expected at most 1024 virtual CPUs"),
    (["--era", "9.9"], "--era: invalid choice"),
    (["--ops", "-1"], "--duration-ops: expected a number >= 1"),
    (["--policy", "nope"], "--policy: unknown policy 'nope'"),
    (["--listen", "9464"], "--listen: expected HOST:PORT (like 127.0.0.1:9464), got '9464'"),
    ([], "names no cpus: pass --cpus N"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_arguments_are_one_line_and_exit_2(extra, message, capsys, tmp_path):
    try:
        code = main(["simulate", str(PAGE_FAULT1), *extra, "--out", str(tmp_path)])
    except SystemExit as exit:                        # argparse's own
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_configs_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(PAGE_FAULT1.read_text().replace("alloc_caller_ns = 1000.0", "alloc_caller_ns = -1"))
    assert main(["simulate", str(bad), "--cpus", "2"]) == 2
    assert "simulate.alloc_caller_ns: expected a number in 0..1e+06, got -1" in capsys.readouterr().err
    named = tmp_path / "named.toml"
    named.write_text((ROOT / "configs" / "net-rx.toml").read_text())
    assert main(["simulate", str(named), "--cpus", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cross_cpu.targets: CPU 1 is not a worker (workers: 0)" in err and err.count("\n") == 1


def test_a_config_naming_cpus_runs_them_without_cpus_flag(tmp_path, capsys):
    net_rx = load_settings(str(ROOT / "configs" / "net-rx.toml"), available_cpus=range(4096))
    assert net_rx.cpus == (0, 1)
    # 8192: at 4096 CPU 1, whose steps cost little, ends before CPU 0's pages reach it
    assert main(["simulate", str(ROOT / "configs" / "net-rx.toml"), "--ops", "8192",
                 "--out", str(tmp_path)]) == 0
    run = load(str(tmp_path / "results.json")).runs[0]
    assert run["virtual"]["cpus"] == 2 and run["counters"]["free_remote_in"] > 0
