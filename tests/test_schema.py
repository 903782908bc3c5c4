"""Tests for pcpd.config.schema: the JSON Schema agrees with the kinds' per-key rules."""

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcpd.config.load import settings_from_dict, settings_to_dict
from pcpd.config.schema import config_schema
from pcpd.config.settings import DEFAULT_SETTINGS, Settings, sweepable_paths
from pcpd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "configs").glob("*.toml"))
TWO_CPUS = frozenset({0, 1})
VALIDATOR = jsonschema.Draft202012Validator(config_schema())


def schema_accepts(data: dict) -> bool:
    return VALIDATOR.is_valid(data)


def config_accepts(data: dict) -> bool:
    try:
        settings_from_dict(data, "x.toml", available_cpus=TWO_CPUS)
    except ConfigError:
        return False
    return True


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(config_schema())
    assert config_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_every_preset_validates(path):
    VALIDATOR.validate(tomllib.loads(path.read_text()))


def test_defaults_validate_and_match_the_schema_defaults():
    data = settings_to_dict(DEFAULT_SETTINGS)
    VALIDATOR.validate(data)
    properties = config_schema()["properties"]
    assert {key: spec["default"] for key, spec in properties.items()} == data


def test_every_key_is_described():
    def walk(schema, where):
        for key, spec in schema.get("properties", {}).items():
            assert spec["description"], f"{where}{key}"
            walk(spec, f"{where}{key}.")
            walk(spec.get("items", {}), f"{where}{key}.")
    walk(config_schema(), "")
    assert "pcp.batch" in sweepable_paths()


BAD = [
    {"pcp": {"batch": True}},
    {"pcp": {"batch": 4096}},
    {"pcp": {"bach": 1}},
    {"pcp": {"high_fraction": 5}},
    {"arena": {"record_bytes": 48}},
    {"arena": {"memory": "1 GB"}},
    {"arena": {"memory": 1 << 20}},
    {"kernel": {"era": 6.7}},
    {"policy": {"name": "memdsc"}},
    {"workload": []},
    {"workload": [{"orders": {"11": 1}}]},
    {"workload": [{"types": {"anon": 0}}]},
    {"workload": [{"types": {}}]},
    {"workload": [{"lifetime": "LIFO"}]},
    {"workload": [{"pressure": {"free_fraction": 0}}]},
    {"workload": [{"cross_cpu": {"fraction": 2}}]},
    {"cpus": [0, 0]},
    {"exporter": {"address": "localhost"}},
    {"sweep": {"key": "policy.name"}},
    {"experiment": {"policies": []}},
    {"name": "two words"},
    {"source": "x.toml"},
]


@pytest.mark.parametrize("data", BAD, ids=lambda data: json.dumps(data))
def test_bad_config_fails_schema_and_check(data):
    assert not schema_accepts(data)
    assert not config_accepts(data)


GOOD = [
    {"pcp": {"high_fraction": 8}},
    {"arena": {"memory": "16MiB"}},
    {"arena": {"memory": 1 << 30}},
    {"exporter": {"address": ""}},
    {"exporter": {"address": "[::1]:9464"}},
    {"duration": 5, "sweep": {"key": "workload[0].burst", "values": [1, 2]}},
    {"duration": 5, "sweep": {"key": "arena.memory", "values": ["64MiB", "128MiB"]}},
    {"workload": [{"types": {"slab": 1}, "orders": {"0": 1, "3": 2}, "type_orders": {}}]},
]


@pytest.mark.parametrize("data", GOOD, ids=lambda data: json.dumps(data))
def test_good_config_passes_schema_and_check(data):
    assert schema_accepts(data)
    assert config_accepts(data)


def scalar_paths(data: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        if isinstance(value, dict):
            paths += scalar_paths(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            paths += scalar_paths(value[0], f"{prefix}{key}[0].")
        else:
            paths.append(prefix + key)
    return paths


KEYS = scalar_paths(settings_to_dict(Settings(workloads=(DEFAULT_SETTINGS.workloads[0],))))
VALUES = st.one_of(st.booleans(), st.integers(-3, 70_000), st.sampled_from([0, 1, 8, 64, 4095, 1 << 21]),
                   st.floats(-2, 5, allow_nan=False), st.sampled_from(["", "6.7", "2MiB", "memdesc", "a"]),
                   st.lists(st.integers(0, 2), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), VALUES)
def test_schema_never_rejects_what_check_accepts(key, value):
    data = copy.deepcopy(settings_to_dict(DEFAULT_SETTINGS))
    *tables, last = key.split(".")
    target = data
    for name in tables:
        target = target["workload"][0] if name == "workload[0]" else target[name]
    target[last] = value
    if config_accepts(data):
        assert schema_accepts(data), (key, value)


# Runs the real command line, so it needs every module cli.py dispatches to.
def test_config_schema_command_prints_the_schema():
    result = subprocess.run([sys.executable, "-m", "pcpd", "config-schema"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == config_schema()
