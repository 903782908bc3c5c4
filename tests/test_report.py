"""Tests for pcpd.analysis.report: summaries, cells, the comparison table, warnings, report.md, plots."""

from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer

from pcpd.analysis.report import (
    PLOTTED,
    POLICIES_PNG,
    REPORT,
    SWEEP_PNG,
    TUNING_PNG,
    Summary,
    axis_unit,
    baseline,
    cell,
    comparison_rows,
    draw_policies,
    draw_sweep,
    draw_tuning,
    format_ratio,
    format_table,
    format_value,
    policies_line,
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


def test_an_incomplete_experiment_says_whether_it_was_interrupted_or_failed_and_why():
    stopped = results({"legacy": [{}]}, incomplete=True, runs_planned=4)
    assert warnings(stopped)[0] == ("incomplete: the experiment was interrupted after 1 of its 4 runs; "
                                    "`pcpd experiment ... --resume DIR` runs the rest")
    stopped.metadata["failure"] = "the daemon for memdesc did not start"
    assert warnings(stopped)[0] == ("incomplete: the experiment failed after 1 of its 4 runs: the daemon for "
                                    "memdesc did not start; `pcpd experiment ... --resume DIR` runs the rest")


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


def test_every_table_names_the_budget_and_the_compound_reading_that_ran():
    three = results({"legacy": [{}], "compound-lazy": [{}], "memdesc": [{}]},
                    policies=["legacy", "compound-lazy", "memdesc"],
                    config={"name": "t", "workload": [], "policy": {"memdesc_high": "split"}})
    named = "Policies: legacy; compound-lazy (lazy prep at first allocation); memdesc (budget split)."
    assert named in render_tables(three).splitlines()
    text = render_report(three, [])
    assert named in text.splitlines()
    assert "| legacy, compound-lazy (lazy prep at first allocation), memdesc (budget split) " in text
    assert policies_line(results({"legacy": [{}]}), None) is None       # nothing to qualify
    swept = results({"memdesc": [{"point": "shared"}, {"point": "per-type"}]},
                    sweep_key="policy.memdesc_high", policies=["memdesc"],
                    config={"name": "t", "workload": [], "policy": {"memdesc_high": "shared"}})
    lines = render_tables(swept).splitlines()
    assert lines[lines.index("policy.memdesc_high = per-type") + 1] == "Policies: memdesc (budget per-type)."
    assert "| memdesc (budget swept) " in render_report(swept, [])


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


# ---------------------------------------------------------------------------
# Plots a reader can read: the matplotlib objects, not the pixels.

def panel(fig, key: str):
    return fig.axes[PLOTTED.index(key)]


def error_bars(ax) -> list[tuple[float, float, float]]:
    """(x, bottom, top) of every error bar drawn on ``ax``."""
    out = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for segment in container.lines[2][0].get_segments():
                (x, low), (_, high) = segment
                out.append((float(x), float(low), float(high)))
    return out


LINES = "struct_page_lines_per_op"
P99 = "zone_lock_wait_p99_seconds"
DWARFED = results({"legacy": [{LINES: 309.0, "throughput_ops_per_second": 100.0}],
                   "compound": [{LINES: 5.4, "throughput_ops_per_second": 110.0}],
                   "memdesc": [{LINES: 1.9, "throughput_ops_per_second": 105.0}]})


def test_a_policy_that_dwarfs_the_others_puts_the_panel_on_a_log_axis_with_every_value_written():
    fig = draw_policies(DWARFED)
    lines = panel(fig, LINES)
    assert lines.get_yscale() == "log"
    assert [t.get_text() for t in lines.texts] == ["309", "5.40", "1.90"]
    assert [bar.get_height() for bar in lines.patches] == [309.0, 5.4, 1.9]
    throughput = panel(fig, "throughput_ops_per_second")
    assert throughput.get_yscale() == "linear"
    assert [t.get_text() for t in throughput.texts] == ["100", "110", "105"]


def test_error_bars_only_where_repetitions_are_several_and_never_below_zero():
    assert all(not error_bars(ax) for ax in draw_policies(DWARFED).axes)
    mixed = results({"legacy": [{LINES: 1.0}, {LINES: 9.0}], "memdesc": [{LINES: 2.0}]})
    fig = draw_policies(mixed)
    ((x, low, high),) = error_bars(panel(fig, LINES))       # legacy only: memdesc ran once
    stdev = 32 ** 0.5
    assert x == 0 and low == 0.0 and high == pytest.approx(5.0 + stdev)
    assert fig.get_suptitle().endswith("mean, ±1 stdev")
    assert draw_policies(DWARFED).get_suptitle().endswith(": mean")


@pytest.mark.parametrize("key, values, factor, unit", [
    (P99, [0.016, 0.002], 1e3, "ms"),
    (P99, [16e-6], 1e6, "µs"),
    (P99, [2e-8], 1e9, "ns"),
    (P99, [1.5], 1.0, "s"),
    ("throughput_ops_per_second", [2_500_000.0, 900_000.0], 1e-6, "M ops/s"),
    ("throughput_ops_per_second", [41_000.0], 1e-3, "k ops/s"),
    ("throughput_ops_per_second", [9.0], 1.0, "ops/s"),
    ("pcp_hit_ratio", [0.97], 100.0, "%"),
    ("pcp_pages", [120_000.0], 1e-3, "k pages"),
    (LINES, [3.1], 1.0, "lines/op"),
])
def test_axis_units_scale_to_the_values(key, values, factor, unit):
    assert axis_unit(FIGURE_BY_KEY[key], values) == (factor, unit)


def test_a_panel_is_drawn_in_its_scaled_unit():
    fig = draw_policies(results({"legacy": [{P99: 0.016}], "memdesc": [{P99: 0.004}]}))
    ax = panel(fig, P99)
    assert ax.get_ylabel() == "ms"
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([16.0, 4.0])
    assert [t.get_text() for t in ax.texts] == ["16.0 ms", "4.0 ms"]


SWEEP = results({p: [{"point": v, "throughput_ops_per_second": 10.0 * v,
                      "zone_lock_acquisitions_per_1k_ops": 0.0 if v == 1023 else 3.0,
                      P99: None if v == 1023 else 2e-6} for v in (63, 127, 1023)]
                 for p in ("legacy", "memdesc")}, sweep_key="pcp.batch")


def test_sweeps_are_ticked_at_the_swept_values():
    ax = panel(draw_sweep(SWEEP), "throughput_ops_per_second")
    assert ax.get_xscale() == "log"                         # 1023 / 63 >= 16
    assert list(ax.get_xticks()) == [63, 127, 1023]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["63", "127", "1023"]
    assert list(ax.get_xticks(minor=True)) == []
    assert ax.get_xlabel() == "pcp.batch" and ax.get_ylabel() == "k ops/s"


def test_a_sweep_point_without_zone_lock_acquisitions_is_warned_about_not_left_blank():
    found = warnings(SWEEP)
    for policy in ("legacy", "memdesc"):
        assert any(w.startswith(f"{policy} at pcp.batch = 1023: no zone->lock acquisition in the measured "
                                "window") for w in found)
    assert not any("pcp.batch = 63: no zone->lock" in w for w in found)
    ax = panel(draw_sweep(SWEEP), P99)
    assert [t.get_text() for t in ax.texts] == [
        "no zone->lock acquisition in the window:\nlegacy at 1023\nmemdesc at 1023"]
    assert "- memdesc at pcp.batch = 1023: no zone->lock acquisition" in render_report(SWEEP, [])


def tuning(cpus: list[int], seconds: list[float], high: list[list[int]]) -> dict:
    return {"interval": 1.0, "cpus": cpus, "seconds": seconds, "high": high,
            "free_count": [[v // 2 for v in row] for row in high], "alloc_factor": [[0] * len(seconds)] * len(cpus)}


def test_runs_with_tuning_series_plot_high_and_free_count_per_cpu(tmp_path):
    tuned = results({"legacy": [{}, {}], "memdesc": [{}]})
    tuned.runs[1]["tuning"] = tuning([0, 1], [1.0, 2.0, 3.0], [[3548, 3600, 3700], [3548, 4000, 4096]])
    tuned.runs[2]["tuning"] = tuning([0, 1], [1.0, 2.0], [[600, 700], [800, 900]])
    fig = draw_tuning(tuned)
    assert len(fig.axes) == 4                               # high and free_count, per policy
    high, free_count = fig.axes[0], fig.axes[1]
    assert high.get_title() == "legacy, repetition 2: high: pages it may hold"
    assert [list(line.get_ydata()) for line in high.lines] == [[3548, 3600, 3700], [3548, 4000, 4096]]
    assert [list(line.get_xdata()) for line in high.lines] == [[1.0, 2.0, 3.0]] * 2
    assert [list(line.get_ydata()) for line in free_count.lines] == [[1774, 1800, 1850], [1774, 2000, 2048]]
    assert [t.get_text() for t in high.get_legend().get_texts()] == ["cpu 0", "cpu 1"]
    assert fig.axes[2].get_title() == "memdesc, repetition 1: high: pages it may hold"
    written = write_report(tuned, str(tmp_path))
    assert [Path(p).name for p in written] == [REPORT, POLICIES_PNG, TUNING_PNG]
    assert (tmp_path / TUNING_PNG).read_bytes().startswith(PNG_SIGNATURE)
    text = (tmp_path / REPORT).read_text()
    assert "![tuning](tuning.png)" in text and "- **PCP auto-tuning** (tuning.png): " in text
    assert "PCP auto-tuning" not in render_report(TWO, [POLICIES_PNG])
    assert draw_tuning(TWO) is None


def test_the_tuning_plot_and_its_definition_say_who_sampled_and_how_often():
    real = results({"legacy": [{}]}, warmup=2.0, duration=10.0)
    real.runs[0]["tuning"] = tuning([0], [1.0, 2.0], [[600, 700]])
    virtual = results({"legacy": [{}]}, mode="virtual", virtual={"cpus": 4}, warmup=0.0, ops=1000)
    virtual.runs[0]["tuning"] = tuning([0], [1e-5, 2e-5], [[600, 700]])
    daemon, simulation = (render_report(r, [POLICIES_PNG, TUNING_PNG]) for r in (real, virtual))
    assert "as the daemon sampled them once a second over the first run of each policy, warm-up included" \
        in daemon
    assert "each run starts its workers, waits the warm-up" in daemon
    assert "daemon" not in simulation and "warm-up included" not in simulation
    assert ("as the simulation sampled them every 10 us of virtual time over the whole of the first run of "
            "each policy, which has no warm-up") in simulation
    assert "each virtual run's window is the whole run, cold PCPs included" in simulation
    assert draw_tuning(real).texts[0].get_text().endswith("(sampled by the daemon)")
    fig = draw_tuning(virtual)
    assert fig.texts[0].get_text().endswith("(sampled every 10 us of virtual time)")
    assert fig.axes[0].get_xlabel() == "virtual seconds since the run started"


def test_each_tuning_row_names_the_free_count_slot_as_its_own_era_has_it():
    """Under experiment.eras a 5.14 run's slot is free_factor, a shift, whatever the config's kernel.era."""
    swept = results({"legacy": [{"point": "5.14"}], "memdesc": [{"point": "6.7"}]}, sweep_key="kernel.era",
                    config={"name": "t", "kernel": {"era": "6.7"}, "workload": [{"types": {"anon": 1.0}}]})
    for run in swept.runs:
        run["era"] = run["point"]
        run["tuning"] = tuning([0], [1.0, 2.0], [[600, 700]])
    axes = draw_tuning(swept).axes
    assert (axes[1].get_title(), axes[1].get_ylabel()) == ("legacy at kernel.era = 5.14, repetition 1: free_factor",
                                                           "shift")
    assert (axes[3].get_title(), axes[3].get_ylabel()) == (
        "memdesc at kernel.era = 6.7, repetition 1: free_count: recent frees", "pages")
