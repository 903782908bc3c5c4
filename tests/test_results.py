"""Tests for pcpd.analysis.results: figures from two snapshots, the file format, CSV, old files."""

import csv
import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest

from pcpd.analysis.results import (
    FIGURE_KEYS,
    FORMAT,
    REQUIRED_METADATA,
    RESULT_VERSION,
    Results,
    cpu_model,
    csv_header,
    csv_rows,
    dump,
    dump_csv,
    dumps,
    environment,
    figures,
    load,
    machine_metadata,
    mixed_machine,
    window_counters,
)
from pcpd.errors import InputError, UsageError
from pcpd.model import stats

DATA = Path(__file__).resolve().parent / "data" / "results"
TYPE = {name: i for i, name in enumerate(stats.MEMDESC_TYPES)}


def snapshot(per_cpu: list[dict[str, int]], retired: dict[str, int] | None = None) -> stats.Snapshot:
    """Two (or more) workers' blocks filled by hand, as if each had folded its counters."""
    blocks = np.zeros((len(per_cpu), stats.NR_STATS), dtype=np.int64)
    for cpu, values in enumerate(per_cpu):
        for name, value in values.items():
            blocks[cpu, stats.INDEX[name]] = value
    spare = np.zeros(stats.NR_STATS, dtype=np.int64)
    for name, value in (retired or {}).items():
        spare[stats.INDEX[name]] = value
    return stats.Snapshot(blocks, spare)


def metadata(**extra) -> dict:
    meta = {key: "x" for key in REQUIRED_METADATA}
    meta.update(cpu_count=2, seed=1, config={"name": "t", "workload": [{"types": {"anon": 1.0}}]}, hosts={})
    meta.update(extra)
    return meta


def run(policy: str = "legacy", repetition: int = 0, **figs) -> dict:
    return {"policy": policy, "point": None, "repetition": repetition, "seed": 1 + repetition,
            "seconds": 1.0, "ops": 100, "exit_code": 0, "restarts": 0, "load_average": 0.5,
            "figures": {key: figs.get(key) for key in FIGURE_KEYS}, "counters": {"alloc_hit": 1}, "host": "h"}


# --- figures ----------------------------------------------------------------

START = snapshot([
    {"alloc_anon_order_0": 100, "free_type_anon": 50, "alloc_hit": 90, "alloc_refill": 10,
     "lock_acquisitions": 10, "lock_contended": 2, "pcp_pages": 500},
    {"alloc_file_order_0": 100, "free_type_file": 100, "alloc_hit": 100,
     "lock_acquisitions": 5, "pcp_pages": 500},
])
END = snapshot([
    {"alloc_anon_order_0": 700, "free_type_anon": 650, "alloc_hit": 640, "alloc_refill": 50,
     "alloc_buddy": 10, "lock_acquisitions": 40, "lock_contended": 8, "pcp_pages": 64,
     "lines_written_page_state": 1000, "lines_read_buddy": 200, "desc_lines_written": 300,
     "desc_lines_read": 100, "slab_alloc": 30, "slab_free": 20, "lock_wait_bucket_0": 6,
     "lock_wait_max_ns": 999, "lock_hold_ns": 100_000},
    {"alloc_file_order_0": 500, "free_type_file": 500, "alloc_hit": 400,
     "lock_acquisitions": 25, "pcp_pages": 36, "lines_written_compound_prep": 150},
])


def test_figures_are_differences_over_the_window():
    figs = figures(START, END, 2.0, "legacy")
    ops = (700 + 650 + 500 + 500) - (100 + 50 + 100 + 100)        # 2000
    allocs = (640 + 50 + 10 + 400) - (90 + 10 + 100)               # 900
    assert figs["throughput_ops_per_second"] == ops / 2.0
    assert figs["pcp_hit_ratio"] == (640 + 400 - 90 - 100) / allocs
    assert figs["zone_lock_acquisitions_per_1k_ops"] == 1000 * (65 - 15) / ops
    assert figs["zone_lock_contended_ratio"] == (8 - 2) / (65 - 15)
    assert figs["struct_page_lines_per_op"] == (1000 + 200 + 150) / ops
    assert figs["descriptor_lines_per_op"] == 400 / ops
    assert figs["slab_ops_per_op"] == 50 / ops
    assert figs["pcp_pages"] == 100                                 # a gauge: as at the end


def test_only_typed_policies_have_per_type_figures():
    # CPU 1 allocates only file memory and holds 12 anon pages on its anon PCP: stranded
    end = snapshot([{"alloc_anon_order_0": 10, "pcp_pages_type_anon": 3},
                    {"alloc_file_order_0": 10, "pcp_pages_type_anon": 12, "alloc_miss_type_file": 4}])
    start = snapshot([{}, {}])
    figs = figures(start, end, 1.0, "memdesc-pcpdesc")
    assert figs["stranded_pages"] is None
    assert all(figs[f"pcp_pages_{t}"] is None and figs[f"stranded_pages_{t}"] is None
               and figs[f"refills_beside_stranded_{t}"] is None for t in stats.MEMDESC_TYPES)
    typed = figures(start, end, 1.0, "memdesc")
    assert typed["pcp_pages_anon"] == 15
    assert typed["stranded_pages"] == typed["stranded_pages_anon"] == 12
    assert typed["refills_beside_stranded_anon"] == 1000 * 4 / 20
    assert typed["stranded_pages_file"] == 0 and typed["pcp_pages_file"] == 0


def test_figures_are_the_stats_definitions_of_the_window():
    figs = figures(START, END, 2.0, "legacy")
    one = stats.derive(END.since(START), 2.0)
    assert figs["pcp_hit_ratio"] == one.pcp_hit_rate
    assert figs["zone_lock_acquisitions_per_1k_ops"] == one.lock_acquisitions_per_1k_ops
    assert figs["struct_page_lines_per_op"] == one.struct_page_lines_per_op
    assert figs["zone_lock_wait_p50_seconds"] == one.lock_wait_p50_seconds == 512e-9
    assert figs["zone_lock_hold_mean_seconds"] == one.lock_hold_mean_seconds == 100_000e-9 / (65 - 15)


def test_an_empty_window_gives_zero_ratios_and_no_wait_quantiles():
    figs = figures(START, START, 1.0, "legacy")
    assert figs["throughput_ops_per_second"] == 0
    assert figs["pcp_hit_ratio"] == figs["zone_lock_contended_ratio"] == 0
    assert figs["zone_lock_wait_p50_seconds"] is None and figs["zone_lock_wait_p99_seconds"] is None


def test_window_counters_take_gauges_and_maxima_at_the_end():
    counters = window_counters(START, END)
    assert counters["alloc_hit"] == 850
    assert counters["pcp_pages"] == 100
    assert counters["lock_wait_max_ns"] == 999
    assert set(counters) == set(stats.NAMES)


def test_stranded_pages_become_figures():
    start = snapshot([{}, {}, {}])
    end = snapshot([
        {"alloc_netpool_order_0": 10, "pcp_pages_type_netpool": 40, "alloc_miss_type_anon": 5},
        {"alloc_anon_order_0": 10, "pcp_pages_type_netpool": 70, "alloc_miss_type_anon": 2},
        {"alloc_anon_order_0": 10, "pcp_pages_type_netpool": 30},
    ])
    figs = figures(start, end, 1.0, "memdesc")
    assert figs["stranded_pages"] == 100 and figs["stranded_pages_netpool"] == 100
    assert figs["refills_beside_stranded_netpool"] == 1000 * 2 / 30     # per 1k of the 30 ops
    assert figs["pcp_pages_netpool"] == 140


# --- files ------------------------------------------------------------------

def test_round_trip(tmp_path):
    results = Results(metadata(), [run(throughput_ops_per_second=5.0), run("memdesc", pcp_pages=3.0)])
    path = str(tmp_path / "r.json")
    dump(results, path)
    loaded = load(path)
    assert loaded.metadata == results.metadata
    assert loaded.runs == results.runs
    document = json.loads(Path(path).read_text())
    assert (document["format"], document["version"]) == (FORMAT, RESULT_VERSION)


def test_dump_refuses_to_overwrite_without_replace(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("keep me")
    with pytest.raises(UsageError, match="exists; pass --replace"):
        dump(Results(metadata(), []), str(path))
    assert path.read_text() == "keep me"
    dump(Results(metadata(), []), str(path), replace=True)
    assert load(str(path)).runs == []
    assert os.listdir(tmp_path) == ["r.json"]                # no temporary file left behind


@pytest.mark.parametrize("document, message", [
    ({"format": FORMAT, "version": 99, "metadata": {}, "runs": []},
     'results format version 99 is not supported (written by a newer pcpd?); this pcpd reads versions 1, 2'),
    ({"format": FORMAT, "version": "1", "metadata": {}, "runs": []},
     'results format version "1" is not supported; this pcpd reads versions 1, 2'),
    ({"format": "pyperf", "version": 1}, 'not a pcpd results file (no "format": "pcpd-result")'),
    ([1, 2], 'not a pcpd results file (no "format": "pcpd-result")'),
    ({"format": FORMAT, "version": 1, "metadata": {"kernel": "x"}, "runs": []},
     "metadata: missing key 'cpu_model'"),
    ({"format": FORMAT, "version": 1, "metadata": metadata(), "runs": [{"policy": "legacy"}]},
     "runs[0]: missing key 'point'"),
    ({"format": FORMAT, "version": 1, "metadata": metadata(), "runs": {}}, "runs: expected an array"),
    ({"format": FORMAT, "version": 2, "metadata": metadata(),
      "runs": [{k: v for k, v in run().items() if k != "host"}]}, "runs[0]: missing key 'host'"),
    ({"format": FORMAT, "version": 2, "metadata": metadata(hosts="vm"), "runs": []},
     "metadata: hosts: expected an object of objects"),
    ({"format": FORMAT, "version": 2, "metadata": metadata(), "runs": [{**run(), "policy": None}]},
     "runs[0].policy: expected a policy name"),
    ({"format": FORMAT, "version": 2, "metadata": metadata(), "runs": [{**run(), "point": []}]},
     "runs[0].point: expected a sweep value or null"),
    ({"format": FORMAT, "version": 2, "metadata": metadata(), "runs": [{**run(), "repetition": True}]},
     "runs[0].repetition: expected an integer"),
    ({"format": FORMAT, "version": 2, "metadata": metadata(), "runs": [{**run(), "era": 6.7}]},
     "runs[0].era: expected a kernel era"),
])
def test_load_names_the_file_and_the_problem(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError) as err:
        load(str(path))
    assert str(err.value) == f"{path}: {message}"


def test_load_rejects_non_json_and_missing_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{")
    with pytest.raises(InputError, match=f"^{path}: not a JSON document"):
        load(str(path))
    with pytest.raises(InputError, match="cannot read: No such file or directory"):
        load(str(tmp_path / "missing.json"))


def test_csv_has_one_row_per_run_with_every_figure(tmp_path):
    results = Results(metadata(sweep_key="pcp.batch"),
                      [run(throughput_ops_per_second=1234.5678901234, pcp_hit_ratio=0.1)])
    results.runs[0]["point"] = 63
    path = tmp_path / "r.csv"
    dump_csv(results, str(path))
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == csv_header(results)
    assert rows[0][:3] == ["policy", "pcp.batch", "repetition"]
    row = dict(zip(rows[0], rows[1]))
    assert float(row["throughput_ops_per_second"]) == 1234.5678901234      # full precision
    assert row["pcp.batch"] == "63" and row["stranded_pages"] == ""
    assert len(list(csv_rows(results))) == 1


def test_csv_names_each_runs_era_and_the_configs_for_older_runs(tmp_path):
    meta = metadata(config={"name": "t", "kernel": {"era": "5.14"}})
    results = Results(meta, [{**run(), "era": "6.7"}, run(repetition=1)])     # the second: an older file's
    path = tmp_path / "r.csv"
    dump_csv(results, str(path))
    with open(path, newline="") as f:
        assert [row["era"] for row in csv.DictReader(f)] == ["6.7", "5.14"]


def test_environment_names_the_machine(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n")
    env = environment(str(cpuinfo))
    assert env["cpu_model"] == "AMD EPYC 9B14"
    assert env["kernel"].startswith(os.uname().sysname)
    assert env["cpu_count"] == os.cpu_count()
    assert cpu_model(str(tmp_path / "none")) == (platform.processor() or "unknown")


# --- files written by earlier pcpd versions ------------------------------------

# Figures added after the checked-in files were written: absent there, so reports show "-".
LATER_FIGURES = {"zone_lock_hold_mean_seconds"}


@pytest.mark.parametrize("path", sorted(DATA.glob("v*.json")), ids=lambda p: p.name)
def test_checked_in_results_still_load(path):
    results = load(str(path))
    assert results.policies() == ["legacy", "memdesc"]
    assert results.points() == [None]
    for record in results.runs:
        assert set(FIGURE_KEYS) - LATER_FIGURES <= set(record["figures"])
        assert record["exit_code"] == 0
    assert all(results.values(None, "legacy", key) == [] for key in LATER_FIGURES)
    assert len(results.values(None, "memdesc", "throughput_ops_per_second")) == 2
    if json.loads(path.read_text())["version"] == RESULT_VERSION:
        assert dumps(results) == path.read_text()          # and the writer still writes it so


def test_a_version_1_file_reads_as_runs_of_an_unknown_host():
    results = load(str(DATA / "v1-tiny.json"))
    assert {run["host"] for run in results.runs} == {None}
    assert results.metadata["hosts"] == {}
    assert mixed_machine(results.metadata) == []


def test_machine_metadata_keeps_what_every_host_shares_and_lists_what_differs():
    env = {"kernel": "k", "cpu_model": "m", "cpu_count": 2, "python": "p", "pcpd_version": "v"}
    assert machine_metadata({"a": env, "b": dict(env)}) == env
    mixed = {"a": env, "b": {**env, "cpu_count": 16, "kernel": "j"}}
    assert machine_metadata(mixed) == {**env, "cpu_count": [2, 16], "kernel": ["j", "k"]}
    assert mixed_machine({**machine_metadata(mixed), "hosts": mixed}) == [
        'cpu_count: 2 on a; 16 on b', 'kernel: "k" on a; "j" on b']
