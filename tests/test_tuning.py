"""PCP auto-tuning over a run: the daemon's TuningSeries, its run record, and a real daemon's samples."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pcpd.analysis.results import Results, dumps, load, tuning_problem
from pcpd.config.load import load_settings
from pcpd.daemon.supervisor import Daemon, RunOptions
from pcpd.errors import InputError
from pcpd.model.stats import INDEX, NR_STATS, TUNING_KEYS, Snapshot
from pcpd.model.tuning import TUNING_SAMPLES, TuningSeries

NET_RX = Path(__file__).parent / "data" / "configs" / "net-rx-small.toml"
V2 = Path(__file__).parent / "data" / "results" / "v2-tiny.json"


def snapshot(*cpus: tuple[int, int, int]) -> Snapshot:
    """Per CPU (high, free_count, alloc_factor)."""
    rows = np.zeros((len(cpus), NR_STATS), dtype=np.int64)
    for row, (high, free_count, alloc_factor) in zip(rows, cpus):
        row[INDEX["pcp_high"]], row[INDEX["pcp_free_count"]], row[INDEX["pcp_alloc_factor"]] = \
            high, free_count, alloc_factor
    return Snapshot(rows, np.zeros(NR_STATS, dtype=np.int64))


def test_a_series_records_each_cpus_gauges_per_sample():
    series = TuningSeries([4, 7])
    assert not series.due(0.9) and series.due(1.0)
    series.sample(1.0, snapshot((3548, 0, 0), (3548, 63, 1)))
    series.sample(2.0004, snapshot((3700, 5, 2), (4096, 0, 0)))
    assert not series.due(2.9) and series.due(3.0004)
    assert series.record() == {"interval": 1.0, "cpus": [4, 7], "seconds": [1.0, 2.0],
                               "high": [[3548, 3700], [3548, 4096]],
                               "free_count": [[0, 5], [63, 0]],
                               "alloc_factor": [[0, 2], [1, 0]]}
    assert tuning_problem(series.record()) is None


def test_a_full_series_keeps_every_other_sample_and_doubles_its_interval():
    series = TuningSeries([0])
    for t in range(1, TUNING_SAMPLES + 2):
        series.sample(float(t), snapshot((t, 0, 0)))
    record = series.record()
    assert record["interval"] == 2.0
    assert len(record["seconds"]) == TUNING_SAMPLES // 2 + 1
    assert record["seconds"][:3] == [2.0, 4.0, 6.0] and record["seconds"][-2:] == [512.0, 513.0]
    assert record["high"][0] == [int(t) for t in record["seconds"]]


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.update(seconds="1"), "seconds: expected an array of numbers"),
    (lambda t: t.update(cpus=[0, True]), "cpus: expected an array of CPU numbers"),
    (lambda t: t.pop("alloc_factor"), "alloc_factor: expected, per CPU in cpus, an array of 2 integers"),
    (lambda t: t["high"][1].pop(), "high: expected, per CPU in cpus, an array of 2 integers"),
    (lambda t: t["free_count"].pop(), "free_count: expected, per CPU in cpus, an array of 2 integers"),
    (lambda t: t["high"][0].__setitem__(0, 1.5), "high: expected, per CPU in cpus, an array of 2 integers"),
])
def test_a_results_file_with_a_malformed_tuning_series_is_refused_in_one_line(tmp_path, edit, problem):
    series = TuningSeries([0, 1])
    series.sample(1.0, snapshot((1, 2, 3), (4, 5, 6)))
    series.sample(2.0, snapshot((1, 2, 3), (4, 5, 6)))
    results = load(str(V2))
    results.runs[0]["tuning"] = series.record()
    good = tmp_path / "good.json"
    good.write_text(dumps(results))
    assert load(str(good)).runs[0]["tuning"] == series.record()
    document = json.loads(dumps(results))
    edit(document["runs"][0]["tuning"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    with pytest.raises(InputError) as err:
        load(str(bad))
    assert str(err.value) == f"{bad}: runs[0].tuning: {problem}"


def test_older_files_without_tuning_still_load():
    results = load(str(V2))
    assert isinstance(results, Results) and all("tuning" not in run for run in results.runs)


def test_the_daemon_samples_every_cpus_tuning_once_a_second():
    settings = load_settings(str(NET_RX))
    report = Daemon(settings, RunOptions(duration=2.3, quiet=True, listen="", audit_interval=60.0,
                                         status_interval=60.0)).run()
    assert report.exit_code == 0 and not glob.glob(f"/dev/shm/pcpd-{os.getpid()}-*")
    record = report.tuning.record()
    assert tuning_problem(record) is None
    assert record["cpus"] == [0, 1]
    # ticks of the supervision loop at least 1 s apart from 1 s in, then the state the run ended in
    *ticks, last = record["seconds"]
    assert ticks and ticks[0] >= 1.0 and all(b - a >= 1.0 for a, b in zip(ticks, ticks[1:]))
    assert last >= max(2.3, ticks[-1])
    # era 6.7 boots high at 0; by the first sample every CPU has refilled and nr_pcp_high() clamped it
    assert all(high[0] > 0 for high in record["high"])
    # the same gauges the workers last folded, read from the end-of-window snapshot
    end = report.measurement.end
    for key, name in zip(TUNING_KEYS, ("pcp_high", "pcp_free_count", "pcp_alloc_factor")):
        assert [row[-1] for row in record[key]] == [end.cpu(slot, name) for slot in range(2)]
