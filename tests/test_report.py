"""Tests for pcpd.analysis.report: summaries, cells, the comparison table, warnings, report.md, plots."""

from pathlib import Path

import pytest

from pcpd.analysis.report import (
    POLICIES_PNG,
    REPORT,
    SWEEP_PNG,
    Summary,
    baseline,
    cell,
    comparison_rows,
    format_ratio,
    format_table,
    format_value,
    render_report,
    render_tables,
    summarize,
    type_rows,
    warnings,
    write_report,
)
from pcpd.analysis.results import FIGURE_BY_KEY, FIGURE_KEYS, REQUIRED_METADATA, Results, machine_metadata

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THROUGHPUT = FIGURE_BY_KEY["throughput_ops_per_second"]


def run(policy: str, repetition: int, point=None, **figs) -> dict:
    return {"policy": policy, "point": point, "repetition": repetition, "seed": 1 + repetition,
            "seconds": 1.0, "ops": 100, "exit_code": 0, "restarts": 0, "load_average": 0.5,
            "figures": {key: figs.get(key) for key in FIGURE_KEYS}, "counters": {}}


def results(table: dict[str, list[dict]], sweep_key=None, **meta) -> Results:
    """Results from {policy: [figures of each repetition]}; a "point" key places a run on a sweep."""
    metadata = {key: "x" for key in REQUIRED_METADATA}
    metadata.update(cpu_count=2, seed=1, config_hash="abc", sweep_key=sweep_key, command="pcpd experiment x",
                    config={"name": "t", "workload": [{"types": {"anon": 1.0, "netpool": 1.0}}]})
    metadata.update(meta)
    runs = []
    for policy, reps in table.items():
        for i, figs in enumerate(reps):
            figs = dict(figs)
            runs.append(run(policy, i, figs.pop("point", None), **figs))
    return Results(metadata, runs)


TWO = results({
    "legacy": [{"throughput_ops_per_second": 100.0, "pcp_hit_ratio": 0.9},
               {"throughput_ops_per_second": 110.0, "pcp_hit_ratio": 0.9}],
    "memdesc": [{"throughput_ops_per_second": 150.0, "pcp_hit_ratio": 0.95, "stranded_pages": 7.0,
                 "pcp_pages_netpool": 7.0, "stranded_pages_netpool": 7.0,
                 "refills_beside_stranded_netpool": 1.0},
                {"throughput_ops_per_second": 150.0, "pcp_hit_ratio": 0.97, "stranded_pages": 9.0,
                 "pcp_pages_netpool": 9.0, "stranded_pages_netpool": 9.0,
                 "refills_beside_stranded_netpool": 2.0}],
})


def row(rows, label):
    return next(r for r in rows if r[0].startswith(label))


def test_summarize():
    assert summarize([]) is None
    assert summarize([4.0]) == Summary(4.0, 0.0, 1)
    s = summarize([1.0, 3.0])
    assert (s.mean, s.n) == (2.0, 2) and s.stdev == pytest.approx(2 ** 0.5)
    assert Summary(0.0, 1.0, 2).spread is None


@pytest.mark.parametrize("key, value, text", [
    ("throughput_ops_per_second", 412_345.0, "412.3k"),
    ("throughput_ops_per_second", 2_500_000.0, "2.50M"),
    ("throughput_ops_per_second", 999.4, "999"),
    ("pcp_hit_ratio", 0.9712, "97.1%"),
    ("zone_lock_wait_p99_seconds", 12.5e-6, "12.5 us"),
    ("zone_lock_wait_p99_seconds", 0.015, "15.0 ms"),
    ("zone_lock_hold_mean_seconds", 3.25e-6, "3.2 us"),        # per acquisition, beside the waits
    ("pcp_pages", 12345.0, "12,345"),
    ("struct_page_lines_per_op", 3.0856, "3.09"),
    ("struct_page_lines_per_op", 0.00412, "0.004"),
    ("zone_lock_acquisitions_per_1k_ops", 30.96, "31.0"),
    ("pcp_pages", None, "-"),
])
def test_format_value(key, value, text):
    assert format_value(FIGURE_BY_KEY[key], value) == text


def test_cell_shows_mean_spread_and_ratio():
    assert cell(THROUGHPUT, Summary(100_000.0, 2_000.0, 3), 1.5) == "100.0k ±2% (1.50x)"
    assert cell(THROUGHPUT, Summary(100_000.0, 0.0, 1), None) == "100.0k"
    assert cell(THROUGHPUT, None, None) == "-"
    assert cell(THROUGHPUT, Summary(100_000.0, 0.0, 1), 2.0, runs=2) == "100.0k [n=1] (2.00x)"


@pytest.mark.parametrize("value, text", [(0.5, "0.50x"), (12.345, "12.3x"), (16087.1, "16,087x"),
                                         (0.0175, "0.018x"), (0.0, "0.00x"), (None, "")])
def test_format_ratio(value, text):
    assert format_ratio(value) == text


def test_ratios_are_against_legacy_and_match_the_raw_figures():
    rows = comparison_rows(TWO, None)
    assert rows[0] == ["figure", "legacy (base)", "memdesc"]
    assert row(rows, "throughput")[2].endswith(f"({150 / 105:.2f}x)")
    assert row(rows, "throughput")[1] == "105 ±7%"
    assert row(rows, "PCP hit rate")[2] == f"96.0% ±1% ({0.96 / 0.9:.2f}x)"
    assert row(rows, "stranded pages") == ["stranded pages", "-", "8 ±18%"]


def test_baseline_is_legacy_or_the_first_policy():
    assert baseline(TWO) == "legacy"
    only = results({"memdesc-pcpdesc": [{"pcp_pages": 1.0}], "memdesc": [{"pcp_pages": 2.0}]})
    assert baseline(only) == "memdesc-pcpdesc"
    assert row(comparison_rows(only, None), "pages on PCPs")[2] == "2 (2.00x)"


def test_type_rows_cover_the_workload_types_of_typed_policies():
    rows = type_rows(TWO, None)
    assert rows[0] == ["memdesc type", "memdesc: on PCPs", "memdesc: stranded",
                       "memdesc: other refills/1k ops there"]
    assert [r[0] for r in rows[1:]] == ["anon", "netpool"]
    assert rows[2] == ["netpool", "8 ±18%", "8 ±18%", "1.50 ±47%"]
    assert type_rows(results({"legacy": [{}]}), None) is None


def test_format_table_aligns_columns():
    text = format_table([["figure", "a"], ["long label", "1"], ["x", "22"]])
    assert text.splitlines() == [
        "| figure     |  a |",
        "|------------|---:|",
        "| long label |  1 |",
        "| x          | 22 |",
    ]


def test_warnings_name_wide_spreads_few_runs_failures_and_restarts():
    noisy = results({"legacy": [{"throughput_ops_per_second": 100.0}, {"throughput_ops_per_second": 140.0}]})
    noisy.runs[1]["exit_code"] = 1
    noisy.runs[0]["restarts"] = 2
    found = warnings(noisy)
    assert any("repetition 2: the run failed (exit 1" in w for w in found)
    assert any("repetition 1: 2 worker(s) died" in w for w in found)
    assert any(w.startswith("2 repetition(s) per policy: fewer than 3") for w in found)
    assert any(w.startswith("legacy: standard deviation >= 10% of the mean in throughput (24%)")
               for w in found)
    steady = results({"legacy": [{"throughput_ops_per_second": 100.0}] * 3})
    assert warnings(steady) == []
    steady.runs[2]["load_average"] = 6.75
    assert warnings(steady) == [
        "1 of 3 runs ended with a 1-minute load average above 3 (up to 6.8 on 2 CPUs): other processes "
        "competed for the CPUs, so throughput and zone->lock waits and hold times are pessimistic; the "
        "per-operation figures are not affected"]


def test_runs_from_several_hosts_are_judged_by_their_own_machine_and_placed_in_the_report():
    two_cpus = {"kernel": "x", "cpu_model": "x", "cpu_count": 2, "python": "x", "pcpd_version": "x"}
    hosts = {"small": two_cpus, "big": {**two_cpus, "cpu_count": 64}}
    spread = results({"legacy": [{"throughput_ops_per_second": 100.0}] * 3}, hosts=hosts,
                     **machine_metadata(hosts))
    for run, host, load in zip(spread.runs, ("small", "big", "big"), (6.0, 6.0, 70.0)):
        run.update(host=host, load_average=load)
    found = warnings(spread)
    assert found[0] == ("the runs ran on different machines (cpu_count: 64 on big; 2 on small): every mean "
                        "mixes their figures, and `pcpd compare` refuses this file without --force")
    assert found[1].startswith("2 of 3 runs ended with a 1-minute load average above their machine's CPU "
                               "count + 1 (up to 70.0): ")
    lines = [" ".join(line.split()) for line in render_report(spread, []).splitlines()]   # widths aside
    assert "| machine | several: see Where the runs ran |" in lines
    assert "| ran on | big (2 runs), small (1 run) |" in lines
    placed = lines.index("## Where the runs ran")
    assert lines[placed + 2:placed + 7:2] == ["| point | policy | repetition | host | machine |",
                                              "| - | legacy | 1 | small | x, 2 CPUs, x |",
                                              "| - | legacy | 3 | big | x, 64 CPUs, x |"]


def test_render_tables_has_one_table_per_sweep_point():
    sweep = results({"legacy": [{"point": 63, "pcp_pages": 1.0}, {"point": 127, "pcp_pages": 2.0}]},
                    sweep_key="pcp.batch")
    text = render_tables(sweep)
    assert "\npcp.batch = 63\n" in text and "\npcp.batch = 127\n" in text


def test_report_md_has_the_command_table_definitions_and_plots():
    text = render_report(TWO, [POLICIES_PNG])
    assert text.startswith("# pcpd experiment: t\n")
    assert "```\npcpd experiment x\n```" in text
    assert format_table(comparison_rows(TWO, None)) in text
    assert format_table(type_rows(TWO, None)) in text
    assert "![policies](policies.png)" in text
    assert "- **stranded pages** (lower is better): pages on the PCP of a memdesc type on a CPU" in text
    assert "- **Per memdesc type** (memdesc): " in text


def test_write_report_writes_markdown_and_a_png(tmp_path):
    written = write_report(TWO, str(tmp_path))
    assert [Path(p).name for p in written] == [REPORT, POLICIES_PNG]
    assert (tmp_path / POLICIES_PNG).read_bytes().startswith(PNG_SIGNATURE)
    (tmp_path / REPORT).write_text("an older report")
    with pytest.raises(ValueError, match="exists; pass --replace"):
        write_report(TWO, str(tmp_path))
    assert (tmp_path / REPORT).read_text() == "an older report"
    write_report(TWO, str(tmp_path), replace=True)
    assert (tmp_path / REPORT).read_text() == render_report(TWO, [POLICIES_PNG])


def test_sweeps_plot_against_the_sweep_value(tmp_path):
    sweep = results({p: [{"point": v, "throughput_ops_per_second": 10.0 * v} for v in (63, 1023)]
                     for p in ("legacy", "memdesc")}, sweep_key="pcp.batch")
    written = write_report(sweep, str(tmp_path))
    assert [Path(p).name for p in written] == [REPORT, SWEEP_PNG]
    assert (tmp_path / SWEEP_PNG).read_bytes().startswith(PNG_SIGNATURE)
    assert "## pcp.batch = 1023" in (tmp_path / REPORT).read_text()
