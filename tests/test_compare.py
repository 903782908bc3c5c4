"""Tests for pcpd.analysis.compare: Welch's t-test, verdicts, which results may be compared, the command."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pcpd.analysis.compare import (
    SAMPLES,
    Verdict,
    check_comparable,
    comparison_rows,
    describe_change,
    flatten,
    judge,
    percent_change,
    regularized_beta,
    side,
    welch_t_test,
    workload_differences,
)
from pcpd.analysis.plan import Plan
from pcpd.analysis.recorder import experiment_metadata
from pcpd.analysis.results import FIGURE_BY_KEY, FIGURE_KEYS, Results, dump, machine_metadata
from pcpd.cli import main
from pcpd.config.settings import DEFAULT_SETTINGS
from pcpd.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT = FIGURE_BY_KEY["throughput_ops_per_second"]
LOCK = FIGURE_BY_KEY["zone_lock_acquisitions_per_1k_ops"]
P50 = FIGURE_BY_KEY["zone_lock_wait_p50_seconds"]


# --- statistics ------------------------------------------------------------

# (a, b, t, p): scipy.stats.ttest_ind(b, a, equal_var=False), computed once
WELCH = [
    ([1, 2, 3], [4, 5, 6], 3.6742346142, 0.0213116411288),
    ([10.1, 10.3, 9.9, 10.0], [10.2, 10.4, 10.6], 2.2630095274, 0.0865582454502),
    ([1, 1.1], [1.05, 1.2], 0.8320502943, 0.503837863742),
    ([100, 101, 102, 98, 99], [100.5, 101.5, 99], 0.3287979746, 0.755056059545),
    ([5, 5, 5], [6, 7, 8], 3.4641016151, 0.0741799002274),
    ([1e6, 1.1e6], [1.5e6, 1.6e6, 1.55e6], 8.6602540378, 0.0215222590052),
]


@pytest.mark.parametrize("a, b, t, p", WELCH)
def test_welch_matches_scipy(a, b, t, p):
    got_t, _, got_p = welch_t_test(a, b)
    assert got_t == pytest.approx(t, rel=1e-9)
    assert got_p == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("a, b, x, expected", [       # scipy.special.betainc
    (0.5, 0.5, 0.3, 0.36901011956554536),
    (2.5, 0.5, 0.9, 0.48958974456442755),
    (50, 0.5, 0.99, 0.3173043978741973),
    (0.7, 0.5, 0.0001, 0.0009035771992625275),
])
def test_regularized_beta(a, b, x, expected):
    assert regularized_beta(a, b, x) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("a, b, why", [
    ([1.0], [2.0, 3.0], "needs at least 2 runs on each side"),
    ([2.0, 2.0], [3.0, 3.0], "no spread in either set of runs"),
])
def test_welch_refuses_what_it_cannot_test(a, b, why):
    with pytest.raises(ValueError, match=why):
        welch_t_test(a, b)


def test_judge_never_turns_a_statistics_error_into_a_verdict():
    assert judge([1.0], [2.0]) == Verdict(None, reason="needs at least 2 runs on each side")
    assert judge([2.0, 2.0], [3.0, 3.0]) == Verdict(None, reason="no spread in either set of runs")


def test_judge_follows_the_t_test():
    clear = judge([100, 101, 99, 100], [150, 151, 149, 150])
    assert clear.significant is True and clear.p_value < 0.05
    noisy = judge([100, 140, 60], [110, 150, 70])
    assert noisy.significant is False and noisy.p_value > 0.05


@pytest.mark.parametrize("figure, a, b, change", [   # mmtests' pdiff and pndiff: positive is better
    (THROUGHPUT, 100.0, 150.0, 50.0),
    (THROUGHPUT, 100.0, 80.0, -20.0),
    (LOCK, 30.0, 20.0, 100 / 3),
    (LOCK, 20.0, 30.0, -50.0),
])
def test_percent_change_is_positive_where_b_is_better(figure, a, b, change):
    assert percent_change(figure, a, b) == pytest.approx(change)


@pytest.mark.parametrize("figure, a, b, verdict, text", [
    (THROUGHPUT, 100.0, 142.0, Verdict(True, 0.01), "*  42.00%*"),
    (THROUGHPUT, 142.0, 100.0, Verdict(False, 0.3), "( -29.58%)"),
    (LOCK, 30.0, 20.0, Verdict(True, 0.01), "*  33.33%*"),
    (LOCK, 20.0, 30.0, Verdict(None, None, "needs at least 2 runs on each side"), "( -50.00%)"),
    (LOCK, 100.0, 100.001, Verdict(False, 0.9), "(   0.00%)"),      # too small to print: not -0.00%
    (LOCK, 0.0, 5.0, Verdict(True, 0.01), "*  from 0*"),
    (LOCK, 0.0001, 5.0, Verdict(None, None, "no spread in either set of runs"), "( from ~0)"),
    (LOCK, 5.0, 5.0, Verdict(None), "(    same)"),
])
def test_describe_change(figure, a, b, verdict, text):
    assert describe_change(figure, a, b, verdict) == text


def test_a_wait_quantile_of_few_waits_means_nothing():
    waits = [f"lock_wait_bucket_{i}" for i in range(12)]
    assert SAMPLES[P50.key].counters == tuple(waits)
    few = Results(meta(), [run("legacy", 0, {"zone_lock_wait_p50_seconds": 9e-7}, dict.fromkeys(waits, 0)
                               | {"lock_wait_bucket_0": 3}),
                           run("legacy", 1, {"zone_lock_wait_p50_seconds": 2e-6}, dict.fromkeys(waits, 40))])
    assert side(few, None, "legacy", P50).too_few == "n/a (3 waits)"        # the fewest of any repetition
    enough = Results(meta(), few.runs[1:])
    assert side(enough, None, "legacy", P50).too_few == ""
    unknown = Results(meta(), [run("legacy", 0, {"zone_lock_wait_p50_seconds": 9e-7}, {})])
    assert side(unknown, None, "legacy", P50).too_few == ""               # no counters: nothing to judge by


# --- what may be compared -----------------------------------------------------

def config(**changes) -> dict:
    base = {"name": "t", "duration": 5.0, "policy": {"name": "legacy", "memdesc_high": "per-type"},
            "pcp": {"batch": 63}, "workload": [{"name": "w", "types": {"anon": 1.0}}],
            "experiment": {"repeat": 2}, "exporter": {"address": ""}}
    for path, value in changes.items():
        *tables, last = path.split("__")
        target = base
        for table in tables:
            target = target[table]
        target[last] = value
    return base


def meta(**changes) -> dict:
    return {"kernel": "Linux 6.18", "cpu_model": "AMD EPYC", "cpu_count": 2, "python": "CPython 3.11.7",
            "pcpd_version": "0.1.0", "config_hash": "h", "seed": 1, "warmup": 1.0, "ops": 0,
            "policies": ["legacy", "memdesc"], "repeat": 3, "duration": 5.0, "sweep_key": None,
            "sweep_values": [], "source": "t.toml", "command": "pcpd experiment t.toml",
            "config": config(), "hosts": {"vm": {"kernel": "Linux 6.18", "cpu_model": "AMD EPYC", "cpu_count": 2,
                                                 "python": "CPython 3.11.7", "pcpd_version": "0.1.0"}},
            **changes}


def test_flatten():
    assert flatten({"a": {"b": 1}, "w": [{"x": [1, 2]}], "e": []}) == {"a.b": 1, "w[0].x": [1, 2], "e": []}


def test_workload_differences_ignore_how_the_experiment_was_run():
    same = meta(config=config(name="renamed", policy__name="memdesc", experiment__repeat=5,
                              exporter__address="127.0.0.1:1"), repeat=5, policies=["memdesc"])
    assert workload_differences(meta(), same) == []
    assert workload_differences(meta(), meta(config=config(pcp__batch=127), ops=1000)) == [
        "pcp.batch: 63 -> 127", "ops: 0 -> 1000"]
    assert workload_differences(meta(), meta(config=config(policy__memdesc_high="split"))) == [
        'policy.memdesc_high: "per-type" -> "split"']


def test_runs_whose_free_high_batch_flag_differs_are_refused():
    # one machine's cache set PCPF_FREE_HIGH_BATCH, the other's did not: same config
    roomy = meta(pcp_cacheinfo=[{"cache_slice": 150 << 20, "free_high_batch": "auto", "flag": True}])
    bare = meta(pcp_cacheinfo=[{"cache_slice": 0, "free_high_batch": "auto", "flag": False}])
    assert check_comparable(Results(roomy), Results(roomy), ("a", "b"), force=False) == []
    with pytest.raises(UsageError) as err:
        check_comparable(Results(roomy), Results(bare), ("a.json", "b.json"), force=False)
    assert str(err.value).startswith("a.json and b.json differ in workload (pcp_cacheinfo: ")
    assert '"flag": true' in str(err.value) and '"flag": false' in str(err.value)


def test_an_experiment_records_the_flag_each_point_ran_with():
    # a slice of 4 batches of 63 pages: the flag is set at batch 63, not at batch 127
    pcp = dataclasses.replace(DEFAULT_SETTINGS.pcp, cache_slice=(4 * 63) << 12)
    points = tuple((batch, dataclasses.replace(DEFAULT_SETTINGS, pcp=dataclasses.replace(pcp, batch=batch)))
                   for batch in (63, 127))
    plan = Plan(points[0][1], points, ("legacy",), 1, 1.0, 0.0)
    assert experiment_metadata(plan)["pcp_cacheinfo"] == [
        {"cache_slice": (4 * 63) << 12, "free_high_batch": "auto", "flag": True},
        {"cache_slice": (4 * 63) << 12, "free_high_batch": "auto", "flag": False}]


def test_different_workloads_or_machines_are_refused_unless_forced():
    a = Results(meta())
    b = Results(meta(config=config(workload=[{"name": "w", "types": {"anon": 1.0, "file": 1.0}}]),
                     cpu_model="Intel Xeon"))
    with pytest.raises(UsageError) as err:
        check_comparable(a, b, ("a.json", "b.json"), force=False)
    assert str(err.value) == ('a.json and b.json differ in workload (workload[0].types.file: (none) -> 1.0) '
                              'and machine (cpu_model: "AMD EPYC" -> "Intel Xeon"); '
                              'pass --force to compare them anyway')
    assert check_comparable(a, b, ("a.json", "b.json"), force=True) == [
        "warning: the workloads differ: workload[0].types.file: (none) -> 1.0",
        'warning: the machines differ: cpu_model: "AMD EPYC" -> "Intel Xeon"']
    assert check_comparable(a, Results(meta()), ("a", "b"), force=False) == []


def test_a_file_that_ran_on_different_machines_is_refused_even_against_its_like():
    hosts = {"n1": meta()["hosts"]["vm"], "n2": {**meta()["hosts"]["vm"], "cpu_count": 64}}
    mixed = Results(meta(hosts=hosts, **machine_metadata(hosts)))
    assert mixed.metadata["cpu_count"] == [2, 64] and mixed.metadata["cpu_model"] == "AMD EPYC"
    with pytest.raises(UsageError) as err:
        check_comparable(mixed, Results(dict(mixed.metadata)), ("a.json", "b.json"), force=False)
    assert str(err.value) == ("a.json and b.json differ in machine (A ran on different machines: cpu_count: "
                              "2 on n1; 64 on n2; B ran on different machines: cpu_count: 2 on n1; 64 on n2); "
                              "pass --force to compare them anyway")
    with pytest.raises(UsageError, match=r"cpu_count: \[2, 64\] -> 2"):
        check_comparable(mixed, Results(meta()), ("a.json", "b.json"), force=False)
    assert check_comparable(Results(meta()), mixed, ("a", "b"), force=True)[0] == \
        "warning: the machines differ: B ran on different machines: cpu_count: 2 on n1; 64 on n2"


# --- the command --------------------------------------------------------------

def run(policy: str, repetition: int, figures: dict, counters: dict) -> dict:
    values = dict.fromkeys(FIGURE_KEYS)
    values.update(figures)
    return {"policy": policy, "point": None, "repetition": repetition, "seed": 1 + repetition, "seconds": 1.0,
            "ops": 100, "exit_code": 0, "restarts": 0, "load_average": 0.5, "figures": values,
            "counters": counters, "host": "vm"}


def results_file(path: Path, throughput: dict[str, list[float]], **metadata) -> str:
    runs = [run(policy, i, {"throughput_ops_per_second": value, "pcp_hit_ratio": 0.9,
                            "zone_lock_acquisitions_per_1k_ops": 30.0 + i}, {})
            for policy, values in throughput.items() for i, value in enumerate(values)]
    dump(Results(meta(**metadata), runs), str(path))
    return str(path)


def run_pcpd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcpd", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_compare_command_output(tmp_path):
    a = results_file(tmp_path / "a.json", {"legacy": [100e3, 101e3, 99e3], "memdesc": [150e3, 190e3, 110e3]})
    b = results_file(tmp_path / "b.json", {"legacy": [150e3, 151e3, 149e3], "memdesc": [140e3, 200e3, 100e3]})
    done = run_pcpd("compare", a, b)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"""\
A = {a}
B = {b}
Hmean where higher is better, Amean where lower is better, of the repetitions; (x%): B's
change from A, positive where B is better (mmtests' sign); *x%*: significant by Welch's
t-test at 95%; n/a (N waits): a repetition had too few events for the figure to mean anything

legacy
| stat     | figure                |                 A |                 B |
|----------|-----------------------|------------------:|------------------:|
| Hmean    | throughput            | 100.0k (   0.00%) | 150.0k *  50.01%* |
| Hmean    | PCP hit rate          |  90.0% (   0.00%) |  90.0% (    same) |
| Amean    | zone->lock per 1k ops |   31.0 (   0.00%) |   31.0 (    same) |
| Stddev   | throughput            |   1.0k            |   1.0k            |
| Stddev   | PCP hit rate          |   0.0%            |   0.0%            |
| Stddev   | zone->lock per 1k ops |   1.00            |   1.00            |
| CoeffVar | throughput            |  1.00%            |  0.67%            |
| CoeffVar | PCP hit rate          |  0.00%            |  0.00%            |
| CoeffVar | zone->lock per 1k ops |  3.23%            |  3.23%            |

memdesc
| stat     | figure                |                 A |                 B |
|----------|-----------------------|------------------:|------------------:|
| Hmean    | throughput            | 142.7k (   0.00%) | 135.5k (  -5.07%) |
| Hmean    | PCP hit rate          |  90.0% (   0.00%) |  90.0% (    same) |
| Amean    | zone->lock per 1k ops |   31.0 (   0.00%) |   31.0 (    same) |
| Stddev   | throughput            |  40.0k            |  50.3k            |
| Stddev   | PCP hit rate          |   0.0%            |   0.0%            |
| Stddev   | zone->lock per 1k ops |   1.00            |   1.00            |
| CoeffVar | throughput            | 26.67%            | 34.32%            |
| CoeffVar | PCP hit rate          |  0.00%            |  0.00%            |
| CoeffVar | zone->lock per 1k ops |  3.23%            |  3.23%            |

warning: {a}: memdesc: standard deviation >= 10% of the mean in throughput (27%)
warning: {b}: memdesc: standard deviation >= 10% of the mean in throughput (34%)
"""


def test_identical_runs_with_a_handful_of_waits_are_never_a_ratio(tmp_path, capsys):
    """Two runs of one workload: p50 of 3 waits 0.9 us against 10.5 ms, a window without acquisitions."""
    waits = {f"lock_wait_bucket_{i}": 0 for i in range(12)}
    paths = []
    for name, p50, bucket in (("a", 9e-7, 0), ("b", 10.5e-3, 7)):
        counters = {"lock_acquisitions": 0, **waits, f"lock_wait_bucket_{bucket}": 3}
        figures = {"throughput_ops_per_second": 1e5, "zone_lock_contended_ratio": 0.0,
                   "zone_lock_wait_p50_seconds": p50, "zone_lock_wait_p99_seconds": p50 * 2}
        dump(Results(meta(), [run("legacy", 0, figures, counters)]), str(tmp_path / name))
        paths.append(str(tmp_path / name))
    assert main(["compare", *paths]) == 0
    rows = {line.split("|")[2].strip(): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| Amean") or line.startswith("| Hmean")}
    assert [cell.strip() for cell in rows["zone->lock wait p50"].split("|")[3:5]] == ["n/a (3 waits)"] * 2
    assert rows["zone->lock wait p99"].count("n/a (3 waits)") == 2
    assert rows["zone->lock contended"].count("n/a (0 acquisitions)") == 2
    assert "%" not in "".join(rows[label] for label in ("zone->lock wait p50", "zone->lock wait p99",
                                                           "zone->lock contended"))
    assert rows["throughput"].endswith(" 100.0k (    same) |")


def test_compare_refuses_different_machines_with_one_line(tmp_path, capsys):
    a = results_file(tmp_path / "a.json", {"legacy": [1.0, 2.0]})
    b = results_file(tmp_path / "b.json", {"legacy": [1.0, 2.0]}, cpu_count=64)
    assert main(["compare", a, b]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"pcpd compare: error: {a} and {b} differ in machine (cpu_count: 2 -> 64); "
                            "pass --force to compare them anyway\n")
    assert main(["compare", "--force", a, b]) == 0
    assert capsys.readouterr().out.startswith("warning: the machines differ: cpu_count: 2 -> 64\n")


def test_compare_accepts_a_results_directory(tmp_path, capsys):
    a = results_file(tmp_path / "results.json", {"legacy": [1.0, 2.0]})
    assert main(["compare", str(tmp_path), a]) == 0
    assert "| throughput" in capsys.readouterr().out


def test_compare_rejects_bad_files_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "pcpd-result", "version": 7}')
    good = results_file(tmp_path / "a.json", {"legacy": [1.0]})
    assert main(["compare", str(bad), good]) == 2
    assert capsys.readouterr().err == (f"pcpd compare: error: {bad}: results format version 7 is not "
                                       "supported (written by a newer pcpd?); this pcpd reads versions 1, 2\n")


def test_one_run_a_side_gets_a_change_but_no_mark(tmp_path, capsys):
    a = results_file(tmp_path / "a.json", {"legacy": [100e3]})
    b = results_file(tmp_path / "b.json", {"legacy": [200e3]})
    assert main(["compare", a, b]) == 0
    out = capsys.readouterr().out
    assert "| Hmean | throughput            | 100.0k (   0.00%) | 200.0k ( 100.00%) |" in out
    assert "no t-test (needs at least 2 runs on each side): every change\n" in out
    assert "Stddev" not in out and "*" not in out.split("legacy")[1]


def test_an_untested_change_is_named_under_its_table():
    a = Results(meta(), [run("legacy", i, {"throughput_ops_per_second": v, "pcp_hit_ratio": 0.9}, {})
                         for i, v in enumerate([100.0, 110.0])])
    b = Results(meta(), [run("legacy", i, {"throughput_ops_per_second": v, "pcp_hit_ratio": 0.95}, {})
                         for i, v in enumerate([100.0, 112.0])])
    rows, notes = comparison_rows(a, b, None, "legacy")
    assert notes == ["no t-test (no spread in either set of runs): PCP hit rate"]
    assert rows[2] == ["Hmean", "PCP hit rate", "90.0% (   0.00%)", "95.0% (   5.56%)"]
    assert [row[0] for row in rows[1:]] == ["Hmean"] * 2 + ["Stddev"] * 2 + ["CoeffVar"] * 2


def test_a_checked_in_file_compared_with_itself_is_the_same(capsys):
    old = str(ROOT / "tests" / "data" / "results" / "v1-tiny.json")
    assert main(["compare", old, old]) == 0
    out = capsys.readouterr().out
    means = [line for line in out.splitlines() if line.startswith(("| Hmean", "| Amean"))]
    assert len(means) == 21 and not any("*" in line for line in means)
    assert all(line.endswith("(    same) |") or line.count("n/a (") == 2 for line in means)
    assert any("n/a (" in line for line in means)        # v1-tiny's windows hold a handful of waits
