"""Tests for pcpd.analysis.plan: plans for every preset, the command line's overrides, era axes,
virtual CPUs, and the points in the order they run."""

from pathlib import Path

import pytest

from pcpd.analysis.plan import plan_experiment, plan_points
from pcpd.analysis.recorder import experiment_metadata
from pcpd.config.load import load_settings, parse_settings, settings_hash

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "configs").glob("*.toml"))
TINY = ROOT / "tests" / "data" / "results" / "tiny.toml"
TINY_TEXT = TINY.read_text()
TWO_CPUS = frozenset({0, 1})


@pytest.mark.parametrize("path", PRESETS, ids=lambda path: path.stem)
def test_every_preset_plans_an_experiment(path):
    settings = load_settings(str(path), available_cpus=TWO_CPUS)
    plan = plan_experiment(settings, duration=None if settings.duration else 5.0, available_cpus=TWO_CPUS)
    points = (len(settings.sweep.values) or 1) * (len(settings.experiment.eras) or 1)
    assert plan.runs == points * settings.experiment.repeat * len(settings.experiment.policies)
    assert plan.warmup < plan.duration
    for _value, point in plan.points:
        assert not point.sweep.key


def test_overrides_reach_the_settings_as_run():
    settings = load_settings(str(TINY), available_cpus=TWO_CPUS)
    plan = plan_experiment(settings, policies=("memdesc",), repeat=5, duration=3.0, available_cpus=TWO_CPUS)
    assert (plan.policies, plan.repeat, plan.duration, plan.warmup) == (("memdesc",), 5, 3.0, 0.25)
    assert plan.settings.duration == 3.0 and plan.settings.experiment.repeat == 5
    assert settings_hash(plan.settings) != settings_hash(settings)
    bounded = plan_experiment(settings, ops=1000, available_cpus=TWO_CPUS)
    assert (bounded.ops, bounded.warmup) == (1000, 0.0)


def test_eras_and_a_sweep_make_one_point_of_each_pair():
    text = TINY_TEXT + '\n[sweep]\nkey = "pcp.batch"\nvalues = [31, 63]\n'
    settings = parse_settings(text, "sweep.toml", available_cpus=TWO_CPUS)
    plan = plan_experiment(settings, eras=("6.7", "5.14"), available_cpus=TWO_CPUS)
    assert plan.point_key == "kernel.era, pcp.batch"
    assert [(value, point.kernel.era, point.pcp.batch) for value, point in plan.points] == [
        ("6.7, 31", "6.7", 31), ("5.14, 31", "5.14", 31), ("6.7, 63", "6.7", 63), ("5.14, 63", "5.14", 63)]
    assert plan.runs == 4 * 2 * 2


def test_virtual_cpus_come_from_the_option_then_simulate_cpus_then_the_config():
    text = TINY_TEXT.replace("cpus = [0, 1]", "cpus = [0, 1, 2]") + "\n[simulate]\ncpus = 8\n"
    settings = parse_settings(text, "virtual.toml", available_cpus=range(4096))
    assert plan_experiment(settings, mode="virtual").settings.cpus == tuple(range(8))
    plan = plan_experiment(settings, mode="virtual", cpus=4, ops=300)
    assert (plan.settings.cpus, plan.ops, plan.duration, plan.warmup) == (tuple(range(4)), 300, 0.0, 0.0)
    assert experiment_metadata(plan)["virtual"]["cpus"] == 4
    own = parse_settings(text.replace("cpus = 8", "cpus = 0"), "virtual.toml", available_cpus=range(4096))
    assert plan_experiment(own, mode="virtual").settings.cpus == (0, 1, 2)


def test_points_run_policies_innermost_and_seed_each_repetition():
    text = TINY_TEXT + '\n[sweep]\nkey = "pcp.batch"\nvalues = [31, 63]\n'
    settings = parse_settings(text, "sweep.toml", available_cpus=TWO_CPUS)
    plan = plan_experiment(settings, policies=("legacy", "memdesc"), repeat=2, available_cpus=TWO_CPUS)
    points = plan_points(plan)
    assert [(p.value, p.repetition, p.policy, p.settings.seed, p.settings.pcp.batch) for p in points] == [
        (value, rep, policy, settings.seed + rep, value)
        for value in (31, 63) for rep in (0, 1) for policy in ("legacy", "memdesc")]
    assert points[-1].label == "memdesc, repetition 2/2, pcp.batch = 63"
