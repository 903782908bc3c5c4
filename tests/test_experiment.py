"""Tests for pcpd.analysis.experiment: rejections, a real short experiment, identical counts from one
seed; virtual mode and era axes; ^C, a failed run and --resume; metrics served during runs.
(The plan and the progress display: test_plan.py, test_progress.py.)"""

import argparse
import csv
import dataclasses
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pcpd.analysis import experiment as experiment_module
from pcpd.analysis.experiment import resume_line, run_once
from pcpd.analysis.plan import plan_experiment
from pcpd.analysis.report import format_ratio
from pcpd.analysis.results import FIGURE_KEYS, load
from pcpd.cli import main
from pcpd.config.load import load_settings, parse_settings, settings_hash
from pcpd.errors import PcpdError
from pcpd.model.stats import MEMDESC_TYPES

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "results" / "tiny.toml"
TWO_CPUS = frozenset({0, 1})


# --- rejections: one line on stderr, exit 2 --------------------------------------

TINY_TEXT = TINY.read_text()
BAD_CONFIGS = [
    ("unknown key", TINY_TEXT.replace("[arena]", "[arena]\nmemroy = 1"),
     "arena.memroy: unknown key (did you mean \"memory\"?)"),
    ("wrong type", TINY_TEXT.replace("duration = 1.0", 'duration = "1"'),
     "duration: expected a number >= 0"),
    ("unknown policy", TINY_TEXT.replace('"legacy", "memdesc"', '"legacy", "memdsc"'),
     "experiment.policies[1]: expected one of"),
    ("warm-up too long", TINY_TEXT.replace("warmup = 0.25", "warmup = 2.0"),
     "experiment.warmup: must be shorter than duration"),
    ("no duration", TINY_TEXT.replace("duration = 1.0", "duration = 0"),
     "duration: an experiment needs runs of a fixed length"),
    ("sweep without values", TINY_TEXT + '\n[sweep]\nkey = "pcp.batch"\n', "sweep.values: sweep.key is"),
    ("not TOML", "name = \n", "Invalid value"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in BAD_CONFIGS],
                         ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["experiment", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pcpd experiment: error: {path}: ")
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--duration", "-1"], "argument --duration: expected seconds > 0, got '-1'"),
    (["--policies", "legacy,lgacy"], "argument --policies: unknown policy 'lgacy'; choose from legacy, "
                                     "legacy-tailmask, compound, compound-lazy, compound-contig, pcp-buddy, "
                                     "pcp-buddy-spb, memdesc-pcpdesc, memdesc"),
    (["--policies", "legacy,legacy"], "argument --policies: policy 'legacy' is listed twice"),
    (["--eras", "5.14,6.7,5.14"], "argument --eras: kernel era '5.14' is listed twice"),
    (["--eras", ","], "argument --eras: expected kernel eras from 4.18, 5.13, 5.14, 6.7, got ','"),
    (["--repeat", "0"], "argument --repeat: expected a number >= 1, got '0'"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as done:                  # argparse exits itself
        main(["experiment", str(TINY), "--out", str(tmp_path), *args])
    assert done.value.code == 2
    assert capsys.readouterr().err == f"pcpd experiment: error: {message}\n"


def test_a_duration_within_the_warmup_is_a_one_line_error(tmp_path, capsys):
    assert main(["experiment", str(TINY), "--out", str(tmp_path), "--duration", "0.25"]) == 2
    assert capsys.readouterr().err == ("pcpd experiment: error: --duration 0.25 must be longer than "
                                       f"experiment.warmup (0.25 s in {TINY})\n")


def test_missing_config_is_a_one_line_error(tmp_path, capsys):
    assert main(["experiment", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == (f"pcpd experiment: error: {tmp_path / 'none.toml'}: "
                                       "cannot read: No such file or directory\n")


@pytest.mark.parametrize("name", ["results.json", "tuning.png"])
def test_existing_results_are_kept_without_replace(tmp_path, capsys, name):
    (tmp_path / name).write_text("earlier results")
    assert main(["experiment", str(TINY), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"pcpd experiment: error: {tmp_path / name} exists; "
                                       "pass --replace to overwrite it, or --out DIR\n")
    assert (tmp_path / name).read_text() == "earlier results"


# --- a real short experiment ---------------------------------------------------------

@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """`pcpd experiment` over two policies, two repetitions of 1 s, in a subprocess."""
    out = tmp_path_factory.mktemp("experiment")
    done = subprocess.run([sys.executable, "-m", "pcpd", "experiment", str(TINY), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return out, done


def test_experiment_writes_every_file(experiment):
    out, done = experiment
    assert done.returncode == 0, done.stderr
    for name in ("results.json", "results.csv", "report.md", "policies.png", "tuning.png", "experiment.log"):
        assert (out / name).stat().st_size > 0, name
    progress = done.stderr.splitlines()
    assert len(progress) == 4 and all(line.startswith("pcpd experiment: [") for line in progress)
    assert progress[0].startswith("pcpd experiment: [1/4] legacy, repetition 1/2: ")
    assert f"wrote {', '.join(str(out / name) for name in WRITTEN)}\n" in done.stdout


WRITTEN = ("results.json", "results.csv", "report.md", "policies.png", "tuning.png")


def test_results_record_every_run_and_how_it_ran(experiment):
    out, _ = experiment
    results = load(str(out / "results.json"))
    assert [(r["policy"], r["repetition"], r["seed"]) for r in results.runs] == [
        ("legacy", 0, 1), ("memdesc", 0, 1), ("legacy", 1, 2), ("memdesc", 1, 2)]
    meta = results.metadata
    assert meta["config"]["name"] == "tiny" and meta["seed"] == 1
    assert (meta["duration"], meta["warmup"], meta["repeat"]) == (1.0, 0.25, 2)
    assert meta["config_hash"] == settings_hash(load_settings(str(TINY)))
    assert meta["command"] == f"pcpd experiment {TINY}"
    for run in results.runs:
        assert run["exit_code"] == 0 and run["restarts"] == 0
        assert run["seconds"] > 0
        assert run["ops"] == run["counters"]["alloc_hit"] + run["counters"]["alloc_refill"] \
            + run["counters"]["alloc_buddy"] + run["counters"]["alloc_fail_no_memory"] \
            + sum(run["counters"][f"free_type_{t}"] for t in MEMDESC_TYPES)
        assert run["figures"]["throughput_ops_per_second"] == pytest.approx(run["ops"] / run["seconds"])
    memdesc = [run for run in results.runs if run["policy"] == "memdesc"]
    assert all(run["figures"]["descriptor_lines_per_op"] > 0 for run in memdesc)
    assert all(run["figures"]["stranded_pages"] is None for run in results.runs if run["policy"] == "legacy")


def test_csv_matches_json(experiment):
    out, _ = experiment
    results = load(str(out / "results.json"))
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results.runs)
    for row, run in zip(rows, results.runs):
        assert (row["policy"], int(row["repetition"]), int(row["ops"])) == \
            (run["policy"], run["repetition"], run["ops"])
        assert float(row["seconds"]) == run["seconds"]
        for key in FIGURE_KEYS:
            value = run["figures"][key]
            assert row[key] == ("" if value is None else repr(value)), key


def test_report_ratios_match_the_raw_figures(experiment):
    out, done = experiment
    results = load(str(out / "results.json"))
    report = (out / "report.md").read_text()
    for key, label in (("throughput_ops_per_second", "| throughput (ops/s) "),
                       ("zone_lock_acquisitions_per_1k_ops", "| zone->lock per 1k ops "),
                       ("struct_page_lines_per_op", "| struct page lines/op ")):
        legacy = results.values(None, "legacy", key)
        memdesc = results.values(None, "memdesc", key)
        ratio = (sum(memdesc) / len(memdesc)) / (sum(legacy) / len(legacy))
        line = next(line for line in report.splitlines() if line.startswith(label))
        assert line.rstrip(" |").endswith(f"({format_ratio(ratio)})"), line
        assert line in done.stdout                          # the terminal shows the same table
    assert "![policies](policies.png)" in report


# --- one seed, one worker, bounded by operations: the same counts --------------------

DETERMINISTIC = """
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
TIMED = ("_ns", "lock_wait_bucket_")                        # clock readings, not counts


def test_the_same_seed_gives_the_same_counts():
    settings = parse_settings(DETERMINISTIC, "one-worker.toml", available_cpus={0})
    plan = plan_experiment(settings, ops=20_000, available_cpus={0})
    handler = signal.getsignal(signal.SIGINT)
    first, second = (run_once(settings, "memdesc", plan) for _ in range(2))
    assert signal.getsignal(signal.SIGINT) is handler       # the daemon's handlers are gone
    assert first["ops"] >= 20_000 and first["exit_code"] == 0
    counts = {k: v for k, v in first["counters"].items() if not any(t in k for t in TIMED)}
    assert counts == {k: v for k, v in second["counters"].items() if not any(t in k for t in TIMED)}
    assert first["figures"]["struct_page_lines_per_op"] == second["figures"]["struct_page_lines_per_op"]
    other = run_once(dataclasses.replace(settings, seed=2), "memdesc", plan)
    assert other["counters"]["alloc_anon_order_0"] != first["counters"]["alloc_anon_order_0"]


# --- virtual mode and kernel eras ---------------------------------------------------------

VIRTUAL = ["--mode", "virtual", "--ops", "1000", "--eras", "5.14,6.7"]


def virtual_experiment(out: Path, *extra: str) -> int:
    return main(["experiment", str(TINY), *VIRTUAL, "--out", str(out), *extra])


def without_wall_clock(results) -> list[dict]:
    """The runs with the one figure that is this machine's, not the model's, left out."""
    runs = [dict(run, virtual=dict(run["virtual"])) for run in results.runs]
    for run in runs:
        del run["virtual"]["wall_seconds"]
    return runs


@pytest.fixture(scope="module")
def virtual(tmp_path_factory):
    """The tiny config's policies in virtual time under two eras, and the same experiment again."""
    first, second = tmp_path_factory.mktemp("virtual"), tmp_path_factory.mktemp("again")
    assert virtual_experiment(first) == 0
    assert virtual_experiment(second) == 0
    return first, second


def test_a_virtual_experiment_writes_labelled_results_per_era(virtual):
    out, _ = virtual
    results = load(str(out / "results.json"))
    meta = results.metadata
    assert meta["mode"] == "virtual" and meta["virtual"]["cpus"] == 2
    assert (meta["sweep_key"], meta["sweep_values"], meta["eras"]) == ("kernel.era", ["5.14", "6.7"],
                                                                      ["5.14", "6.7"])
    assert (meta["ops"], meta["runs_planned"], meta["incomplete"]) == (1000, 8, False)
    assert [(r["point"], r["era"], r["repetition"], r["policy"]) for r in results.runs] == [
        (era, era, rep, policy) for era in ("5.14", "6.7") for rep in (0, 1) for policy in ("legacy", "memdesc")]
    for run in results.runs:
        assert run["exit_code"] == 0 and run["virtual"]["cpus"] == 2
        assert run["seconds"] == pytest.approx(run["virtual"]["cpu_seconds_max"])
    # 6.7 sizes high from high_min/high_max and tunes it: fewer trips to the zone than 5.14
    locks = {era: results.values(era, "legacy", "zone_lock_acquisitions_per_1k_ops") for era in ("5.14", "6.7")}
    assert max(locks["6.7"]) < min(locks["5.14"])
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["kernel.era"], row["era"], row["mode"]) for row in rows] == \
        [(run["era"], run["era"], "virtual") for run in results.runs]
    report = (out / "report.md").read_text()
    assert "## kernel.era = 5.14" in report and "## kernel.era = 6.7" in report
    assert "## Virtual time" in report and "| legacy 6.7 #2 " in report
    assert "![sweep](sweep.png)" in report and (out / "sweep.png").stat().st_size > 0
    assert "![tuning](tuning.png)" in report and (out / "tuning.png").stat().st_size > 0
    assert all(len(run["tuning"]["seconds"]) > 1 for run in results.runs)       # sampled in virtual time


def test_a_virtual_experiment_repeats_its_counts_and_virtual_times(virtual, capsys):
    first, second = virtual
    a, b = load(str(first / "results.json")), load(str(second / "results.json"))
    assert without_wall_clock(a) == without_wall_clock(b)
    capsys.readouterr()
    assert main(["compare", str(first), str(second)]) == 0
    assert "kernel.era = 6.7" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--mode", "virtual", "--duration", "5"], "--duration: virtual-mode runs are bounded by operations"),
    (["--cpus", "4"], "--cpus: only a virtual-mode experiment (--mode virtual) has virtual CPUs"),
    (["--resume", "."], "--resume .: no results.json there: no experiment to resume"),
])
def test_options_the_mode_does_not_take_are_one_line_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", str(TINY), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pcpd experiment: error: {message}")


@pytest.mark.parametrize("text, message", [
    (TINY_TEXT + 'eras = ["5.15"]\n', "experiment.eras[0]: expected one of"),
    (TINY_TEXT + 'mode = "simulated"\n', "experiment.mode: expected one of"),
])
def test_bad_mode_or_eras_in_a_config_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["experiment", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_bad_eras_argument_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["experiment", str(TINY), "--out", str(tmp_path), "--eras", "6.7,5.15"])
    assert done.value.code == 2
    assert capsys.readouterr().err == ("pcpd experiment: error: argument --eras: unknown kernel era '5.15'; "
                                       "choose from 4.18, 5.13, 5.14, 6.7\n")


# --- ^C keeps the finished runs; --resume finishes them ---------------------------------------

def test_an_interrupted_experiment_keeps_its_runs_and_resumes_to_the_same_files(virtual, tmp_path, capsys,
                                                                                 monkeypatch):
    out = tmp_path / "interrupted"
    real_run_point, calls, interrupt_at = experiment_module.run_point, [], [3]

    def counted(point, plan, log_stream=None):
        """run_point, but a ^C as the ``interrupt_at``-th run starts."""
        calls.append(point.label)
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt
        return real_run_point(point, plan, log_stream)

    monkeypatch.setattr(experiment_module, "run_point", counted)
    assert virtual_experiment(out) == 130
    err = capsys.readouterr().err
    assert f"interrupted after 2 of 8 runs; wrote {out / 'results.json'}" in err
    assert err.rstrip().endswith(f"continue with: pcpd experiment {TINY} --mode virtual --eras 5.14,6.7 "
                                 f"--ops 1000 --resume {out}")
    partial = load(str(out / "results.json"))
    assert len(partial.runs) == 2 and partial.metadata["incomplete"] is True
    assert "- incomplete: the experiment was interrupted after 2 of its 8 runs" in (out / "report.md").read_text()
    assert len((out / "results.csv").read_text().splitlines()) == 3

    assert virtual_experiment(out, "--ops", "999", "--resume", str(out)) == 2      # another plan
    assert capsys.readouterr().err.startswith(f"pcpd experiment: error: --resume {out}: that experiment ran "
                                              "with another config_hash")
    calls.clear()
    interrupt_at[0] = 0
    assert virtual_experiment(out, "--resume", str(out)) == 0
    assert len(calls) == 6                                       # only the runs it lacked
    capsys.readouterr()
    whole, resumed = load(str(virtual[0] / "results.json")), load(str(out / "results.json"))
    assert without_wall_clock(resumed) == without_wall_clock(whole)
    assert {k: v for k, v in resumed.metadata.items() if k != "date"} == \
        {k: v for k, v in whole.metadata.items() if k != "date"}
    assert resumed.metadata["date"] == partial.metadata["date"]
    for name in ("report.md", "results.csv"):
        assert _steady(out / name) == _steady(virtual[0] / name), name
    assert virtual_experiment(out, "--resume", str(out)) == 2
    assert "that experiment finished all its 8 runs" in capsys.readouterr().err


def test_a_failed_run_keeps_the_finished_runs_and_their_report(tmp_path, capsys, monkeypatch):
    out, real_run_point, calls = tmp_path / "failed", experiment_module.run_point, []

    def failing(point, plan, log_stream=None):
        """run_point, but the second run cannot start."""
        calls.append(point.label)
        if len(calls) == 2:
            raise PcpdError("the daemon could not start")
        return real_run_point(point, plan, log_stream)

    monkeypatch.setattr(experiment_module, "run_point", failing)
    assert main(["experiment", str(TINY), "--mode", "virtual", "--ops", "1000", "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith(f"pcpd experiment: failed after 1 of 4 runs; wrote {out / 'results.json'}")
    assert err[-2].endswith(f"(incomplete); continue with: pcpd experiment {TINY} --mode virtual "
                            f"--ops 1000 --resume {out}")
    assert err[-1] == "pcpd experiment: failed: the daemon could not start"
    partial = load(str(out / "results.json"))
    assert len(partial.runs) == 1 and partial.metadata["incomplete"] is True
    assert partial.metadata["failure"] == "the daemon could not start"
    assert ("- incomplete: the experiment failed after 1 of its 4 runs: the daemon could not start;"
            in (out / "report.md").read_text())


def test_each_virtual_run_serves_its_metrics_on_the_one_address(tmp_path, monkeypatch):
    """--listen in virtual mode: every run serves its simulation's metrics, labelled virtual, on the
    same port one after another; scraped as each run's counters are final, they are its record's."""
    pages = []

    class Scraped(experiment_module.Simulation):
        def run(self, progress=None):
            def scrape(done: int, total: int) -> None:
                if done == total:
                    with urllib.request.urlopen(f"http://{self.exporter.address}/metrics", timeout=5) as answer:
                        pages.append(answer.read().decode())
            return super().run(scrape)

    monkeypatch.setattr(experiment_module, "Simulation", Scraped)
    out, port = tmp_path / "out", free_port()
    assert main(["experiment", str(TINY), "--mode", "virtual", "--ops", "1000", "--repeat", "1",
                 "--listen", f"127.0.0.1:{port}", "--out", str(out)]) == 0
    runs = load(str(out / "results.json")).runs
    assert [run["policy"] for run in runs] == ["legacy", "memdesc"] and len(pages) == 2
    for run, page in zip(runs, pages):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(page) for s in family.samples}
        (info,) = [dict(labels) for name, labels in samples if name == "pcpd_info"]
        assert (info["mode"], info["policy"], info["config"], info["era"]) == ("virtual", run["policy"], "tiny", "6.7")
        assert samples[("pcpd_pcp_refill_pages_total", ())] == run["counters"]["refill_pages"] > 0
        assert samples[("pcpd_virtual_time_seconds_total", ())] == run["seconds"]
    log = (out / "experiment.log").read_text()
    assert log.count(f"metrics on http://127.0.0.1:{port}/metrics") == 2


def test_the_resume_command_keeps_where_the_runs_ran_and_served_metrics():
    parser = argparse.ArgumentParser()
    experiment_module.add_arguments(parser)
    args = parser.parse_args([str(TINY), "--policies", "legacy", "--listen", "127.0.0.1:9464",
                              "--scheduler", "tcp://head:8786", "--out", "o", "--replace"])
    assert resume_line(args, "o") == (f"pcpd experiment {TINY} --policies legacy --resume o "
                                      "--listen 127.0.0.1:9464 --scheduler tcp://head:8786")


def _steady(path: Path) -> list[str]:
    """A file's lines without the date and this machine's wall-clock times."""
    lines = path.read_text().splitlines()
    if path.suffix == ".csv":
        column = lines[0].split(",").index("virtual_wall_seconds")
        return [",".join(cells[:column] + cells[column + 1:]) for cells in (line.split(",") for line in lines)]
    return [line for line in lines if not line.startswith(("| date ", "| wall-clock time here "))]


def test_sigint_during_a_real_experiment_keeps_the_finished_runs_while_each_run_serves_metrics(tmp_path):
    """The one end-to-end proof: a daemon per run serving /metrics at --listen, and ^C after a run."""
    out, port = tmp_path / "out", free_port()
    process = subprocess.Popen([sys.executable, "-m", "pcpd", "experiment", str(TINY), "--out", str(out),
                                "--listen", f"127.0.0.1:{port}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        metrics = scrape_until(f"http://127.0.0.1:{port}/metrics", 'policy="legacy"', deadline=60)
        assert 'mode="real"' in metrics and "pcpd_virtual_time_seconds" not in metrics
        first = process.stderr.readline()                    # the first run's progress line, when it ends
        assert first.startswith("pcpd experiment: [1/4] legacy, repetition 1/2: "), first
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stopped = process.stderr.read()
    assert "interrupted after" in stopped and f"--resume {out} --listen 127.0.0.1:{port}\n" in stopped
    results = load(str(out / "results.json"))
    assert results.metadata["incomplete"] is True and 1 <= len(results.runs) < 4
    assert results.runs[0]["policy"] == "legacy" and results.runs[0]["exit_code"] == 0
    assert "- incomplete: the experiment was interrupted" in (out / "report.md").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_until(url: str, needle: str, deadline: float) -> str:
    """The first page at ``url`` containing ``needle``, polled until ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                page = answer.read().decode()
            if needle in page:
                return page
        except OSError:
            pass                                             # no daemon serving yet, or between runs
        time.sleep(0.05)
    raise AssertionError(f"{url} served nothing with {needle!r} within {deadline} s")
