"""Tests for pcpd.config.settings: presets, round trips, one-line rejections, sweeps, `pcpd check`."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcpd.config.settings import (
    DEFAULT_SETTINGS,
    SOAK_WORKLOAD,
    CrossCpu,
    FrozenMap,
    assign_workloads,
    load_settings,
    parse_settings,
    replace_path,
    settings_from_dict,
    settings_hash,
    settings_to_dict,
    sweep_points,
    worker_cpus,
)
from pcpd.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "configs").glob("*.toml"))
TWO_CPUS = frozenset({0, 1})


def parse(text: str):
    return parse_settings(text, "x.toml", available_cpus=TWO_CPUS)


def load_preset(name: str):
    return load_settings(str(ROOT / "configs" / f"{name}.toml"), available_cpus=TWO_CPUS)


# --- presets --------------------------------------------------------------

def test_every_named_preset_exists():
    assert {path.stem for path in PRESETS} >= {
        "soak", "thp-storm", "slab-churn", "net-rx", "page-cache", "pressure-waves",
        "batch-sweep", "outstanding-sweep", "memdesc-stranding"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_preset_loads_on_two_cpus(path):
    settings = load_settings(str(path), available_cpus=TWO_CPUS)
    assert settings.name == path.stem
    assert settings.source == str(path)
    assert set(worker_cpus(settings, TWO_CPUS)) <= TWO_CPUS
    for value, point in sweep_points(settings, available_cpus=TWO_CPUS):
        assert not point.sweep.key and not point.sweep.values


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_preset_opens_with_a_comment_header(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# {path.stem}: ")
    header = [line for line in lines[:lines.index("")]]
    assert all(line.startswith("#") for line in header)
    assert any(line.startswith("# Look at:") for line in lines)


def test_soak_preset_is_the_default():
    assert load_preset("soak") == DEFAULT_SETTINGS
    assert DEFAULT_SETTINGS.workloads == (SOAK_WORKLOAD,)


def test_default_is_the_soak_mix():
    soak = DEFAULT_SETTINGS.workloads[0]
    assert set(soak.types) == {"anon", "file", "slab", "pagetable", "netpool", "kernel"}
    assert set(soak.orders_for("anon")) == set(soak.orders_for("file")) == {0, 2, 4, 9}
    assert set(soak.orders_for("slab")) == {0, 1, 2, 3}
    assert set(soak.orders_for("pagetable")) == {0}
    assert set(soak.orders_for("netpool")) == {0, 1}
    assert set(soak.orders_for("kernel")) == {1, 2, 3}
    assert soak.cross_cpu.fraction > 0 and soak.cross_cpu.types == ("netpool",)
    assert soak.pressure.period > 0


# --- round trips and hashing ----------------------------------------------

@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_settings_round_trip_through_json(path):
    settings = load_settings(str(path), available_cpus=TWO_CPUS)
    data = json.loads(json.dumps(settings_to_dict(settings)))
    assert settings_from_dict(data, "copy", available_cpus=TWO_CPUS) == settings


def test_defaults_round_trip():
    data = settings_to_dict(DEFAULT_SETTINGS)
    assert "source" not in data and "workload" in data and data["arena"]["memory"] == 1 << 30
    assert settings_from_dict(data, "<dict>", available_cpus=TWO_CPUS) == DEFAULT_SETTINGS
    assert parse("") == DEFAULT_SETTINGS


def test_settings_pickle_and_hash():
    settings = load_preset("memdesc-stranding")
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert hash(settings) == hash(load_preset("memdesc-stranding"))


def test_settings_hash_ignores_spelling_and_source():
    one = parse('seed = 7\n[arena]\nmemory = "1GiB"\n[[workload]]\ntypes = {file = 1, anon = 2}')
    two = parse_settings('[[workload]]\ntypes = {anon = 2.0, file = 1}\n[arena]\nmemory = 1073741824\n'
                         '[kernel]\nera = "6.7"', "elsewhere.toml", available_cpus=TWO_CPUS)
    two = replace_path(two, "seed", 7, available_cpus=TWO_CPUS)
    assert settings_hash(one) == settings_hash(two)
    assert len(settings_hash(one)) == 12 and int(settings_hash(one), 16) >= 0
    assert settings_hash(replace_path(one, "seed", 8, available_cpus=TWO_CPUS)) != settings_hash(one)


def test_weights_follow_declared_order_whatever_the_file_order():
    settings = parse('[[workload]]\ntypes = {kernel = 1, anon = 2}\norders = {9 = 1, 0 = 3}')
    assert list(settings.workloads[0].types) == ["anon", "kernel"]
    assert list(settings.workloads[0].orders) == [0, 9]
    assert isinstance(settings.workloads[0].types, FrozenMap)


def test_memory_spellings():
    assert parse('[arena]\nmemory = "64MiB"').arena.pages == 16384
    assert parse('[arena]\nmemory = "16MiB"').arena.pages == 4096
    assert parse('[arena]\nmemory = 33554432').arena.memory_bytes == 32 << 20


# --- rejections: (config text, expected part of the one-line message) ------

BAD = [
    # malformed TOML: key "" and tomllib's message with its line
    ("name = \"soak\nseed = 1", "x.toml: Illegal character '\\n' (at line 1, column 13)"),
    ("[pcp]\nbatch = = 3", "x.toml: Invalid value (at line 2, column 9)"),
    # unknown keys, with the closest one suggested and the allowed ones listed
    ("sead = 1", 'x.toml: sead: unknown key (did you mean "seed"?); allowed keys: name, seed, duration'),
    ("[pcp]\nbach = 1", 'x.toml: pcp.bach: unknown key (did you mean "batch"?); allowed keys: batch, high,'),
    ("[pcpd]\nbatch = 1", 'x.toml: pcpd: unknown key (did you mean "pcp"?)'),
    ("[[workload]]\nworkingset = 1", 'workload[0].workingset: unknown key (did you mean "working_set"?)'),
    ("[[workload]]\n[workload.pressure]\nperoid = 5", "workload[0].pressure.peroid: unknown key"),
    ("source = \"a.toml\"", "x.toml: source: unknown key; allowed keys:"),
    # wrong types: a boolean is not an integer
    ("[pcp]\nbatch = true", "x.toml: pcp.batch: expected an integer in 0..4095, got true"),
    ("seed = \"1\"", 'x.toml: seed: expected an integer >= 0, got "1"'),
    ("[[workload]]\nworking_set = 1.5", "workload[0].working_set: expected an integer >= 1, got 1.5"),
    ("[pcp]\nfree_high_batch = 1", "pcp.free_high_batch: expected true or false, got 1"),
    ("[pcp]\ndecay_interval = false", "pcp.decay_interval: expected a number > 0, got false"),
    ("name = 1", "name: expected a name of letters, digits"),
    ("pcp = 1", "x.toml: pcp: expected a table, got 1"),
    ("seed = 1979-05-27", "seed: expected an integer >= 0, got a date value"),
    ("cpus = 0", "cpus: expected an array of CPU numbers, got 0"),
    ("workload = {name = \"a\"}", "workload: expected one or more [[workload]] tables, got a table"),
    ("workload = []", "workload: expected one or more [[workload]] tables, got an empty array"),
    # out-of-range numbers
    ("[pcp]\nbatch = 4096", "pcp.batch: expected an integer in 0..4095, got 4096"),
    ("[pcp]\nscale_max = 7", "pcp.scale_max: expected an integer in 0..6, got 7"),
    ("[pcp]\nhigh_fraction = 5", "pcp.high_fraction: expected 0 or an integer >= 8, got 5"),
    ("[pcp]\ndecay_interval = 0", "pcp.decay_interval: expected a number > 0, got 0"),
    ("[pcp]\ndecay_interval = nan", "pcp.decay_interval: expected a number > 0, got nan"),
    ("duration = -1", "duration: expected a number >= 0, got -1"),
    ("seed = -1", "seed: expected an integer >= 0, got -1"),
    ("[[workload]]\nburst = 0", "workload[0].burst: expected an integer >= 1, got 0"),
    ("[[workload]]\nrate = -5.0", "workload[0].rate: expected a number >= 0, got -5.0"),
    ("[[workload]]\npressure = {free_fraction = 0}",
     "workload[0].pressure.free_fraction: expected a number > 0 and <= 1, got 0"),
    ("[[workload]]\ncross_cpu = {fraction = 1.5}",
     "workload[0].cross_cpu.fraction: expected a number in 0..1, got 1.5"),
    ("[experiment]\nrepeat = 0", "experiment.repeat: expected an integer in 1..1000, got 0"),
    ("cpus = [-1]", "cpus[0]: expected an integer in 0..4095, got -1"),
    # choices
    ("[arena]\nrecord_bytes = 48", "x.toml: arena.record_bytes: expected one of 8, 16, 32, 64, got 48"),
    ("[kernel]\nera = 6.7", 'kernel.era: expected one of "4.18", "5.13", "5.14", "6.7", got 6.7 '
                            '(write it as a string: "6.7")'),
    ("[kernel]\nera = \"6.8\"", 'got "6.8" (did you mean "6.7"?)'),
    ("[policy]\nname = \"memdsc\"", 'policy.name: expected one of "legacy", "compound", "memdesc-pcpdesc", '
                                    '"memdesc", got "memdsc" (did you mean "memdesc"?)'),
    ("[[workload]]\nlifetime = \"LIFO\"", 'workload[0].lifetime: expected one of "random", "fifo", "lifo"'),
    ("[experiment]\npolicies = []", "experiment.policies: expected a non-empty array of policy names"),
    ("[experiment]\npolicies = [\"memdesc\", \"memdesc\"]", 'experiment.policies: lists "memdesc" twice'),
    # weight tables
    ("[[workload]]\ncpus = [0]\n[[workload]]\nname = \"b\"\ncpus = [1]\norders = {11 = 1}",
     "x.toml: workload[1].orders: expected weights for orders 0..10, got key \"11\""),
    ("[[workload]]\ntypes = {anno = 1}", 'workload[0].types: expected weights for memdesc types anon, file, '
                                         'slab, pagetable, netpool, kernel, got key "anno" (did you mean "anon"?)'),
    ("[[workload]]\ntypes = {anon = 0}", "workload[0].types.anon: expected a number > 0, got 0"),
    ("[[workload]]\ntypes = {}", "workload[0].types: expected weights for memdesc types"),
    ("[[workload]]\ntype_orders = {slab = {0 = 1}}", 'workload[0].type_orders.slab: "slab" is not among '
                                                     "workload[0].types"),
    ("[[workload]]\ncross_cpu = {fraction = 0.1, types = [\"netpool\"]}",
     'workload[0].cross_cpu.types: "netpool" is not among workload[0].types'),
    # arena size
    ("[arena]\nmemory = \"1MiB\"", "arena.memory: expected a multiple of 2MiB (whole 512-page pageblocks) "
                                   'from 2MiB to 64GiB, got "1MiB"'),
    ("[arena]\nmemory = \"3MiB\"", 'arena.memory: expected a multiple of 2MiB'),
    ("[arena]\nmemory = 1048576", "arena.memory: expected a multiple of 2MiB"),
    ("[arena]\nmemory = \"1 GB\"", 'arena.memory: expected a size: bytes as an integer, or a string like'),
    ("[arena]\nmemory = \"2MiB\"\n[[workload]]\norders = {10 = 1}\nworking_set = 8",
     "workload[0].orders: order 10 blocks are 1024 pages, more than the arena's 512"),
    ("[arena]\nmemory = \"2MiB\"\n[[workload]]\nworking_set = 513",
     "workload[0].working_set: 513 pages is more than the arena's 512"),
    # CPUs
    ("cpus = [0, 1, 2]", "x.toml: cpus: CPU 2 is not available to this process (it may run on 0-1)"),
    ("cpus = [1, 1]", "cpus: lists 1 twice"),
    ("[[workload]]\ncpus = [5]", "workload[0].cpus: CPU 5 is not a worker (workers: 0-1)"),
    ("cpus = [0]\n[[workload]]\ncpus = [1]", "workload[0].cpus: CPU 1 is not a worker (workers: 0)"),
    ("[[workload]]\nname = \"a\"\ncpus = [0]\n[[workload]]\nname = \"b\"\ncpus = [0, 1]",
     "workload[1].cpus: CPU 0 already runs workload[0]; a worker runs one workload"),
    ("[[workload]]\nname = \"a\"\n[[workload]]\nname = \"b\"",
     "workload[1].cpus: only one workload may leave cpus empty"),
    ("[[workload]]\ncpus = [0]", "x.toml: workload: worker CPU 1 runs no workload"),
    ("[[workload]]\nname = \"a\"\ncpus = [0, 1]\n[[workload]]\nname = \"b\"",
     "workload[1].cpus: is empty, so it runs on the workers no other workload names, but the others"),
    ("[[workload]]\nname = \"a\"\ncpus = [0]\n[[workload]]\nname = \"a\"\ncpus = [1]",
     'workload[1].name: "a" is already the name of workload[0]'),
    ("[[workload]]\ncross_cpu = {fraction = 0.5, targets = [3]}",
     "workload[0].cross_cpu.targets: CPU 3 is not a worker (workers: 0-1)"),
    ("[[workload]]\nname = \"a\"\ncpus = [0]\ncross_cpu = {fraction = 0.5, targets = [0]}\n"
     "[[workload]]\nname = \"b\"\ncpus = [1]",
     "workload[0].cross_cpu.targets: CPU 0 runs this workload and would hand frees only to itself"),
    # PCP knobs and kernel eras
    ("[pcp]\nhigh_min = 100\nhigh_max = 50", "pcp.high_max: must be >= pcp.high_min (100), got 50"),
    ("[pcp]\nhigh = 500", "pcp.high: era 6.7 auto-tunes high between pcp.high_min and pcp.high_max"),
    ("[kernel]\nera = \"5.14\"\n[pcp]\nhigh_min = 500", 'pcp.high_min: exists from era 6.7 (kernel.era is "5.14")'),
    ("[kernel]\nera = \"5.13\"\n[pcp]\nhigh_fraction = 8",
     'pcp.high_fraction: vm.percpu_pagelist_high_fraction exists from era 5.14 (kernel.era is "5.13")'),
    ("[pcp]\nhigh_fraction = 8\nhigh_max = 4000", "pcp.high_fraction: sizes high as managed pages / fraction"),
    ("[kernel]\nera = \"5.13\"\n[pcp]\nbatch = 63\nhigh = 31", "pcp.high: must be >= pcp.batch (63)"),
    # policies and struct page sizes
    ("[arena]\nrecord_bytes = 32", "x.toml: policy.name: \"legacy\" runs on today's 64-byte struct page "
                                   "(compound_head in every tail page), but arena.record_bytes is 32"),
    ("[arena]\nrecord_bytes = 16\n[policy]\nname = \"compound\"", 'policy.name: "compound" runs on today\'s'),
    # sweeps and experiments
    ("duration = 5\n[sweep]\nkey = \"pcp.bach\"\nvalues = [1]",
     'sweep.key: expected "" or the key of a numeric setting, like "pcp.batch" or "workload.working_set", '
     'got "pcp.bach" (did you mean "pcp.batch"?)'),
    ("duration = 5\n[sweep]\nkey = \"policy.name\"\nvalues = [\"memdesc\"]",
     'sweep.key: expected "" or the key of a numeric setting'),
    ("duration = 5\n[sweep]\nkey = \"experiment.repeat\"\nvalues = [1]",
     'sweep.key: expected "" or the key of a numeric setting'),
    ("duration = 5\n[sweep]\nvalues = [1]", "sweep.values: given without a sweep.key to vary"),
    ("duration = 5\n[sweep]\nkey = \"pcp.batch\"", 'sweep.values: sweep.key is "pcp.batch" but there are no values'),
    ("[sweep]\nkey = \"pcp.batch\"\nvalues = [63]", "duration: a sweep runs once per value, so it needs a duration > 0"),
    ("duration = 5\n[sweep]\nkey = \"pcp.batch\"\nvalues = [63, 5000]",
     "sweep.values[1]: pcp.batch = 5000 fails: pcp.batch: expected an integer in 0..4095, got 5000"),
    ("duration = 5\n[sweep]\nkey = \"workload[2].burst\"\nvalues = [1]",
     'sweep.key: "workload[2].burst" names a workload that does not exist (the config has 1)'),
    ("duration = 5\n[sweep]\nkey = \"workload.burst\"\nvalues = [true]",
     "sweep.values[0]: expected a number or a size string, got true"),
    ("duration = 2\n[experiment]\nwarmup = 2", "experiment.warmup: must be shorter than duration (2 s), got 2"),
    # exporter
    ("[exporter]\naddress = \"localhost\"", 'exporter.address: expected host:port (like "127.0.0.1:9464"), '
                                           'or "" to disable, got "localhost"'),
    ("[exporter]\naddress = \"[::1]:65536\"", "exporter.address: expected host:port"),
    # values are shown on one line, whatever they hold
    ("name = \"two\\nlines\"", 'name: expected a name of letters, digits, "_", "." and "-", got "two\\nlines"'),
]


@pytest.mark.parametrize("text, message", BAD, ids=[f"{i}:{m[:40]}" for i, (_, m) in enumerate(BAD)])
def test_bad_config_is_one_line_error(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    error = str(info.value)
    assert message in error
    assert error.startswith("x.toml: ") and "\n" not in error
    assert isinstance(info.value, UsageError)


def test_error_names_key_and_problem_separately():
    with pytest.raises(ConfigError) as info:
        parse("[arena]\nrecord_bytes = 48")
    assert (info.value.path, info.value.key) == ("x.toml", "arena.record_bytes")
    assert info.value.problem == "expected one of 8, 16, 32, 64, got 48"


def test_good_edge_values():
    settings = parse('[pcp]\nhigh_fraction = 8\n[exporter]\naddress = ""\n[arena]\nmemory = "2MiB"\n'
                     '[[workload]]\nworking_set = 512\ntype_orders = {}')
    assert settings.pcp.high_fraction == 8 and settings.exporter.address == ""
    for address in ("0.0.0.0:9464", "[::1]:0", "pcpd-host.example:65535"):
        assert parse(f'[exporter]\naddress = "{address}"').exporter.address == address
    assert parse('[kernel]\nera = "5.14"\n[pcp]\nbatch = 63\nhigh = 63').pcp.high == 63
    assert parse("[pcp]\nhigh_min = 500\nhigh_max = 500").pcp.high_max == 500


def test_load_settings_reports_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^.*nope\.toml: cannot read: No such file or directory$"):
        load_settings(str(tmp_path / "nope.toml"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match=r"binary\.toml: not UTF-8 text \(bad byte at offset 8\)$"):
        load_settings(str(binary))


def test_cpus_default_to_this_process_affinity():
    settings = parse_settings("", "x.toml")
    assert worker_cpus(settings) == tuple(sorted(os.sched_getaffinity(0)))


# --- replace_path and sweeps ----------------------------------------------

def test_replace_path_validates_like_a_file():
    settings = load_preset("net-rx")
    changed = replace_path(settings, "pcp.batch", 255, available_cpus=TWO_CPUS)
    assert changed.pcp.batch == 255 and settings.pcp.batch == 0
    assert changed.source == settings.source
    with pytest.raises(ConfigError, match=r"net-rx\.toml: pcp\.batch: expected an integer in 0\.\.4095, got 5000$"):
        replace_path(settings, "pcp.batch", 5000, available_cpus=TWO_CPUS)
    with pytest.raises(ConfigError, match=r"pcp\.nope: no such setting$"):
        replace_path(settings, "pcp.nope", 1, available_cpus=TWO_CPUS)
    with pytest.raises(ConfigError, match=r'policy\.name: "legacy" runs on today'):
        replace_path(load_preset("memdesc-stranding"), "policy.name", "legacy", available_cpus=TWO_CPUS)


def test_replace_path_reaches_every_or_one_workload():
    settings = load_preset("net-rx")
    every = replace_path(settings, "workload.working_set", 100, available_cpus=TWO_CPUS)
    assert [w.working_set for w in every.workloads] == [100, 100]
    one = replace_path(settings, "workload[1].working_set", 100, available_cpus=TWO_CPUS)
    assert [w.working_set for w in one.workloads] == [2048, 100]
    memory = replace_path(settings, "arena.memory", "64MiB", available_cpus=TWO_CPUS)
    assert memory.arena.pages == 16384


def test_sweep_points_clear_the_sweep():
    settings = load_preset("batch-sweep")
    points = sweep_points(settings, available_cpus=TWO_CPUS)
    assert [value for value, _ in points] == [63, 127, 255, 511, 1023, 2047, 4095]
    assert [point.pcp.batch for _, point in points] == [63, 127, 255, 511, 1023, 2047, 4095]
    assert all(point.sweep.key == "" and point.duration == settings.duration for _, point in points)
    outstanding = sweep_points(load_preset("outstanding-sweep"), available_cpus=TWO_CPUS)
    assert [point.workloads[0].working_set for _, point in outstanding] == [256, 1024, 4096, 16384, 65536]


@given(st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(), st.text(max_size=4)))
def test_replace_path_accepts_exactly_the_batch_range(value):
    accepted = type(value) is int and 0 <= value <= 4095
    try:
        replace_path(DEFAULT_SETTINGS, "pcp.batch", value, available_cpus=TWO_CPUS)
    except ConfigError as err:
        assert not accepted and err.key == "pcp.batch"
    else:
        assert accepted


# --- workers and workloads ------------------------------------------------

def test_assign_workloads():
    settings = load_preset("net-rx")
    assignment = assign_workloads(settings, TWO_CPUS)
    assert {cpu: w.name for cpu, w in assignment.items()} == {0: "rx", 1: "app"}
    assert {cpu: w.name for cpu, w in assign_workloads(DEFAULT_SETTINGS, {0, 1, 2, 3}).items()} == \
        {0: "soak", 1: "soak", 2: "soak", 3: "soak"}
    two = parse('cpus = [0, 1]\n[[workload]]\nname = "a"\ncpus = [1]\n[[workload]]\nname = "rest"')
    assert {cpu: w.name for cpu, w in assign_workloads(two, TWO_CPUS).items()} == {0: "rest", 1: "a"}


def test_cross_cpu_targets_exclude_the_freeing_cpu():
    assert CrossCpu(fraction=0.5).targets_for(1, (0, 1, 2)) == (0, 2)
    assert CrossCpu(fraction=0.5, targets=(1, 2)).targets_for(1, (0, 1, 2)) == (2,)
    assert CrossCpu(fraction=0.5).targets_for(0, (0,)) == ()   # one worker: frees stay local


# --- `pcpd check` -----------------------------------------------------------
# These run the real command line, so they need every module cli.py dispatches to.

def run_pcpd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcpd", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_check_ok_prints_one_summary_line():
    result = run_pcpd("check", "configs/net-rx.toml")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "configs/net-rx.toml: ok (policy legacy, era 6.7, 2 workers, 2 workloads)\n"
    result = run_pcpd("check", "configs/memdesc-stranding.toml")
    assert result.stdout == "configs/memdesc-stranding.toml: ok (policy memdesc, era 6.7, 2 workers, 2 workloads)\n"


@pytest.mark.parametrize("text, message", [
    ("[arena]\nrecord_bytes = 48\n", "arena.record_bytes: expected one of 8, 16, 32, 64, got 48"),
    ("[pcp\n", "Expected ']' at the end of a table declaration (at line 1, column 5)"),
])
def test_check_bad_config_exits_2_with_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_pcpd("check", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"pcpd check: error: {path}: {message}\n"


def test_check_missing_file_exits_2(tmp_path):
    result = run_pcpd("check", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"pcpd check: error: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


def test_experiments_may_list_struct_page_policies_with_small_records():
    """Experiments run legacy and compound on 64-byte pages whatever record_bytes says."""
    settings = parse('[arena]\nrecord_bytes = 8\n[policy]\nname = "memdesc"')
    assert settings.arena.record_bytes == 8
    assert "legacy" in settings.experiment.policies
