"""Tests for pcpd.config.kinds: each key's own rule, its one-line rejections and its spellings."""

import pytest

from pcpd.config.kinds import FrozenMap, Integer, Real, show
from pcpd.config.load import parse_settings
from pcpd.errors import ConfigError, UsageError

TWO_CPUS = frozenset({0, 1})


def parse(text: str):
    return parse_settings(text, "x.toml", available_cpus=TWO_CPUS)


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

BAD_KEYS = [
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
    ("[pcp]\nfree_high_batch = 1", 'pcp.free_high_batch: expected one of "auto", "on", "off", got 1'),
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
    ("[policy]\nname = \"memdsc\"", 'policy.name: expected one of "legacy", "legacy-tailmask", "compound", '
                                    '"compound-lazy", "compound-contig", "pcp-buddy", "pcp-buddy-spb", '
                                    '"memdesc-pcpdesc", "memdesc", got "memdsc" (did you mean "memdesc"?)'),
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
    # arena size
    ("[arena]\nmemory = \"1MiB\"", "arena.memory: expected a multiple of 2MiB (whole 512-page pageblocks) "
                                   'from 2MiB to 64GiB, got "1MiB"'),
    ("[arena]\nmemory = \"3MiB\"", 'arena.memory: expected a multiple of 2MiB'),
    ("[arena]\nmemory = 1048576", "arena.memory: expected a multiple of 2MiB"),
    ("[arena]\nmemory = \"1 GB\"", 'arena.memory: expected a size: bytes as an integer, or a string like'),
    # CPUs
    ("cpus = [1, 1]", "cpus: lists 1 twice"),
    # sweeps
    ("duration = 5\n[sweep]\nkey = \"pcp.bach\"\nvalues = [1]",
     'sweep.key: expected "" or the key of a numeric setting, like "pcp.batch" or "workload.working_set", '
     'got "pcp.bach" (did you mean "pcp.batch"?)'),
    ("duration = 5\n[sweep]\nkey = \"policy.name\"\nvalues = [\"memdesc\"]",
     'sweep.key: expected "" or the key of a numeric setting'),
    ("duration = 5\n[sweep]\nkey = \"experiment.repeat\"\nvalues = [1]",
     'sweep.key: expected "" or the key of a numeric setting'),
    ("duration = 5\n[sweep]\nkey = \"workload.burst\"\nvalues = [true]",
     "sweep.values[0]: expected a number or a size string, got true"),
    # exporter
    ("[exporter]\naddress = \"localhost\"", 'exporter.address: expected host:port (like "127.0.0.1:9464"), '
                                           'or "" to disable, got "localhost"'),
    ("[exporter]\naddress = \"[::1]:65536\"", "exporter.address: expected host:port"),
    # values are shown on one line, whatever they hold
    ("name = \"two\\nlines\"", 'name: expected a name of letters, digits, "_", "." and "-", got "two\\nlines"'),
]


@pytest.mark.parametrize("text, message", BAD_KEYS, ids=[f"{i}:{m[:40]}" for i, (_, m) in enumerate(BAD_KEYS)])
def test_bad_key_is_one_line_error(text, message):
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


# --- hostile values: integers beyond 64 bits, which tomllib reads from hex of any length

HUGE = "0x" + "f" * 300                # 1200 bits: beyond any float, 362 decimal digits


@pytest.mark.parametrize("text, message", [
    (f"seed = 0x{'f' * 4000}", "seed: expected an integer >= 0 that fits in 64 bits, as TOML's integers do, "
                               "got a 16000-bit integer"),
    ("seed = 9223372036854775808", "seed: expected an integer >= 0 that fits in 64 bits"),
    (f"duration = {HUGE}", "duration: expected a number >= 0, got a 1200-bit integer"),
    (f"[pcp]\nbatch = {HUGE}", "pcp.batch: expected an integer in 0..4095, got a 1200-bit integer"),
    (f"[[workload]]\ntypes = {{anon = {HUGE}}}", "workload[0].types.anon: expected a number > 0, got a 1200-bit"),
    (f"duration = 5\n[sweep]\nkey = \"duration\"\nvalues = [{HUGE}]",
     "sweep.values[0]: duration = a 1200-bit integer fails: duration: expected a number >= 0"),
])
def test_huge_integers_are_one_short_line(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value) and len(str(info.value)) < 160


def test_largest_toml_integer_is_accepted():
    assert parse("seed = 9223372036854775807").seed == 2**63 - 1
    assert Integer(0).load(2**63 - 1, "seed") == 2**63 - 1
    assert Real(0).load(2**63, "duration") == float(2**63)


def test_show_keeps_values_short():
    assert show(2**128 - 1) == "340282366920938463463374607431768211455"
    assert show(2**128) == "a 129-bit integer"
    assert show("x" * 100) == '"' + "x" * 35 + '..."'
    assert show(True) == "true" and show([]) == "an empty array" and show({}) == "a table"
