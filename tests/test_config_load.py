"""Tests for pcpd.config.load: presets, files, TOML bombs, round trips, sweeps, `pcpd check`."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pcpd.config import load
from pcpd.config.load import (
    MAX_CONFIG_BYTES,
    load_settings,
    parse_settings,
    replace_path,
    settings_from_dict,
    settings_hash,
    settings_to_dict,
    sweep_points,
)
from pcpd.config.rules import worker_cpus
from pcpd.config.settings import DEFAULT_SETTINGS
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
    for _, point in sweep_points(settings, available_cpus=TWO_CPUS):
        assert not point.sweep.key and not point.sweep.values


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_preset_opens_with_a_comment_header(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# {path.stem}: ")
    header = [line for line in lines[:lines.index("")]]
    assert all(line.startswith("#") for line in header)
    assert any(line.startswith("# Look at:") for line in lines)



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


def test_settings_hash_ignores_spelling_and_source():
    one = parse('seed = 7\n[arena]\nmemory = "1GiB"\n[[workload]]\ntypes = {file = 1, anon = 2}')
    two = parse_settings('[[workload]]\ntypes = {anon = 2.0, file = 1}\n[arena]\nmemory = 1073741824\n'
                         '[kernel]\nera = "6.7"', "elsewhere.toml", available_cpus=TWO_CPUS)
    two = replace_path(two, "seed", 7, available_cpus=TWO_CPUS)
    assert settings_hash(one) == settings_hash(two)
    assert len(settings_hash(one)) == 12 and int(settings_hash(one), 16) >= 0
    assert settings_hash(replace_path(one, "seed", 8, available_cpus=TWO_CPUS)) != settings_hash(one)



# --- malformed TOML: key "" and tomllib's message with its line ------------

BAD_TOML = [
    ("name = \"soak\nseed = 1", "x.toml: Illegal character '\\n' (at line 1, column 13)"),
    ("[pcp]\nbatch = = 3", "x.toml: Invalid value (at line 2, column 9)"),
]


@pytest.mark.parametrize("text, message", BAD_TOML)
def test_bad_toml_is_one_line_error(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    error = str(info.value)
    assert message in error
    assert error.startswith("x.toml: ") and "\n" not in error
    assert isinstance(info.value, UsageError)


# --- TOML bombs: what tomllib cannot take, or takes too long over ----------

DIGITS = "name = \"a\"\nseed = " + "1" * 5000
NESTED = "seed = " + "[" * 100_000 + "]" * 100_000
BOMBS = [
    (DIGITS, "an integer with more than 4300 digits (at line 2)"),
    ("seed = 1_" + "0" * 5000, "an integer with more than 4300 digits (at line 1)"),
    (NESTED, "arrays or inline tables nested too deeply"),
    ("seed = " + "{a = " * 5000 + "1" + "}" * 5000, "arrays or inline tables nested too deeply"),
    # tomllib's time and memory grow with the square of a dotted key's length: 1 MB would take >100 GB
    ("a" + ".a" * 200_000 + " = 1", "a dotted key of more than 32 names (at line 1)"),
    ('name = "a"\n"a"' + ' . "a"' * 200_000 + " = 1", "a dotted key of more than 32 names (at line 2)"),
    ("a" + ".a" * 32 + " = 1", "a dotted key of more than 32 names (at line 1)"),
]


@pytest.mark.parametrize("text, message", BOMBS, ids=lambda value: value[:20])
def test_toml_bomb_is_one_line_error(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == f"x.toml: {message}"


def test_dotted_keys_up_to_the_limit_reach_the_key_check():
    with pytest.raises(ConfigError, match=r"^x\.toml: a: unknown key; allowed keys: name,"):
        parse("a" + ".a" * 31 + " = 1")
    assert parse('[[workload]]\ntype_orders.slab.0 = 1\ntypes.slab = 1').workloads[0].type_orders["slab"] == {0: 1}


# --- files that are not config files ----------------------------------------

def test_load_settings_reports_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^.*nope\.toml: cannot read: No such file or directory$"):
        load_settings(str(tmp_path / "nope.toml"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match=r"binary\.toml: not UTF-8 text \(bad byte at offset 8\)$"):
        load_settings(str(binary))


def test_load_settings_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^.*: cannot read: a directory, not a regular file$"):
        load_settings(str(tmp_path))
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)            # no writer: opening it for reading used to wait forever
    with pytest.raises(ConfigError, match=r"fifo\.toml: cannot read: a FIFO, not a regular file$"):
        load_settings(str(fifo))
    with pytest.raises(ConfigError, match=r"^/dev/zero: cannot read: a character device, not a regular file$"):
        load_settings("/dev/zero")


def test_load_settings_caps_the_size_it_reads(tmp_path):
    line = b"# " + b"x" * 1021 + b"\n"                  # 1 KiB of comment
    fits = tmp_path / "fits.toml"
    fits.write_bytes(line * (MAX_CONFIG_BYTES // len(line)))
    assert load_settings(str(fits), available_cpus=TWO_CPUS) == DEFAULT_SETTINGS
    huge = tmp_path / "huge.toml"
    huge.write_bytes(line * (MAX_CONFIG_BYTES // len(line)) + b"#\n")
    with pytest.raises(ConfigError, match=r"huge\.toml: cannot read: larger than 1 MiB, the most a config "
                                          r"file may hold$"):
        load_settings(str(huge))


def test_load_settings_reports_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "secret.toml"
    path.write_text("seed = 1\n")
    path.chmod(0)
    if os.geteuid() == 0:       # root reads mode-0 files: fail the open as the kernel would for a user

        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(load.os, "open", denied)
    with pytest.raises(ConfigError, match=r"secret\.toml: cannot read: Permission denied$"):
        load_settings(str(path))


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
@example(0)                                   # the edges, always
@example(4095)
@example(4096)
@example(-1)
@example(True)
@example(63.0)
@settings(max_examples=30, deadline=None)     # each example validates a whole config
def test_replace_path_accepts_exactly_the_batch_range(value):
    accepted = type(value) is int and 0 <= value <= 4095
    try:
        replace_path(DEFAULT_SETTINGS, "pcp.batch", value, available_cpus=TWO_CPUS)
    except ConfigError as err:
        assert not accepted and err.key == "pcp.batch"
    else:
        assert accepted



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



def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def assert_one_line_exit_2(result: subprocess.CompletedProcess, command: str, message: str) -> None:
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"pcpd {command}: error: ") and result.stderr.endswith(f"{message}\n")


@pytest.mark.parametrize("kind", ["digits", "nested", "directory", "fifo", "huge", "binary"])
def test_check_refuses_hostile_files_with_one_line(tmp_path, kind):
    if kind == "directory":
        path, message = tmp_path, "cannot read: a directory, not a regular file"
    elif kind == "fifo":
        path, message = tmp_path / "fifo.toml", "cannot read: a FIFO, not a regular file"
        os.mkfifo(path)
    else:
        content, message = {
            "digits": (DIGITS, "an integer with more than 4300 digits (at line 2)"),
            "nested": (NESTED, "arrays or inline tables nested too deeply"),
            "huge": (b"#" * (MAX_CONFIG_BYTES + 1), "cannot read: larger than 1 MiB, the most a config file may hold"),
            "binary": (b"seed = 1 # \xfe\n", "not UTF-8 text (bad byte at offset 11)"),
        }[kind]
        path = write(tmp_path, f"{kind}.toml", content)
    result = run_pcpd("check", str(path))
    assert_one_line_exit_2(result, "check", f"{path}: {message}")


@pytest.mark.parametrize("command", ["run", "experiment"])
@pytest.mark.parametrize("content, message", [
    (DIGITS, "an integer with more than 4300 digits (at line 2)"),
    (NESTED, "arrays or inline tables nested too deeply"),
], ids=["digits", "nested"])
def test_run_and_experiment_refuse_toml_bombs_before_starting(tmp_path, command, content, message):
    path = write(tmp_path, "bomb.toml", content)
    result = run_pcpd(command, str(path), "--duration", "1")
    assert_one_line_exit_2(result, command, f"{path}: {message}")
