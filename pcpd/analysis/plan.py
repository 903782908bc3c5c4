"""An experiment's plan: the settings as run, their points, and every run of them in order.

``plan_experiment`` turns a config and the command line's overrides into a
``Plan``: the sweep's points (each sweep value under every kernel era of
``experiment.eras``, the era being part of the point), the policies, the
repetitions and how long each run lasts (seconds and warm-up in real mode,
operations per virtual CPU in virtual mode).  ``plan_points`` lists every
run as a ``Point``, policies innermost so drift on a shared machine touches
each policy alike, repetition r seeded seed + r under every policy.

Imports: ``pcpd.config``, ``pcpd.errors``; ``pcpd.simulate.command`` only for
a virtual-mode plan (it imports this module through ``pcpd.simulate.output``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pcpd.config.load import replace_path, sweep_points
from pcpd.config.settings import Settings
from pcpd.errors import ConfigError, UsageError

VIRTUAL = "virtual"               # experiment.mode of runs in virtual time


@dataclass(frozen=True)
class Plan:
    """What an experiment runs: the settings as run, their points, and how to run each."""

    settings: Settings                            # overrides applied
    points: tuple[tuple[Any, Settings], ...]      # (point value or None, settings of that point)
    policies: tuple[str, ...]
    repeat: int
    duration: float                               # seconds per run, warm-up included (real mode)
    warmup: float
    ops: int = 0                                  # > 0: runs bounded by operations per worker (CPU)
    mode: str = "real"                            # "virtual": every run in virtual time
    eras: tuple[str, ...] = ()                    # kernel eras every sweep value runs under
    listen: str = ""                              # where each run serves /metrics ("" for nowhere)

    @property
    def runs(self) -> int:
        return len(self.points) * self.repeat * len(self.policies)

    @property
    def virtual(self) -> bool:
        return self.mode == VIRTUAL

    @property
    def point_key(self) -> str:
        """What a point's value names: the sweep key, ``kernel.era``, or both ("" for neither)."""
        keys = (["kernel.era"] if self.eras else []) + ([self.settings.sweep.key] if self.settings.sweep.key
                                                        else [])
        return ", ".join(keys)

    @property
    def point_values(self) -> list[Any]:
        """The points' values in run order (the sweep's values, or era-and-value labels)."""
        return [value for value, _ in self.points] if self.eras else list(self.settings.sweep.values)


def plan_experiment(settings: Settings, *, policies: tuple[str, ...] | None = None,
                    repeat: int | None = None, duration: float | None = None, ops: int = 0,
                    available_cpus: Collection[int] | None = None, mode: str | None = None,
                    eras: tuple[str, ...] | None = None, cpus: int | None = None,
                    listen: str = "") -> Plan:
    """The plan for ``settings`` with the command line's overrides (None: the config's).

    A virtual-mode plan needs ``settings`` loaded with every CPU number
    available (``pcpd.simulate.command.ANY_CPU``): its CPUs become the virtual
    CPUs (``cpus``, else ``simulate.cpus``, else the config's).  Raises
    ConfigError or UsageError when the runs would have no fixed length, or for
    an option the mode does not take.
    """
    exp = settings.experiment
    mode = mode or exp.mode
    eras = exp.eras if eras is None else eras
    experiment = dataclasses.replace(exp, policies=tuple(policies or exp.policies),
                                     repeat=repeat or exp.repeat, mode=mode, eras=tuple(eras))
    settings = dataclasses.replace(settings, experiment=experiment)
    if mode == VIRTUAL:
        settings, available_cpus = _virtual_settings(settings, duration, ops, cpus)
        duration, warmup, ops = 0.0, 0.0, settings.simulate.ops
    else:
        if cpus is not None:
            raise UsageError("--cpus: only a virtual-mode experiment (--mode virtual) has virtual CPUs")
        warmup = 0.0 if ops else exp.warmup
        duration = _real_duration(settings, duration, warmup, ops)
        settings = dataclasses.replace(settings, duration=duration)
    return Plan(settings, _points(settings, tuple(eras), available_cpus), experiment.policies,
                experiment.repeat, duration, warmup, ops, mode, tuple(eras), listen)


def _real_duration(settings: Settings, duration: float | None, warmup: float, ops: int) -> float:
    """A real-mode run's length: ``duration`` (None: the config's), longer than the warm-up,
    and some length unless ``ops`` bounds the run."""
    if duration is not None and not ops and duration <= warmup:
        raise UsageError(f"--duration {duration:g} must be longer than experiment.warmup "
                         f"({warmup:g} s in {settings.source})")
    duration = settings.duration if duration is None else duration
    if not ops and not duration:
        raise ConfigError(settings.source, "duration", "an experiment needs runs of a fixed length: "
                                                       "set duration > 0, or pass --duration or --ops")
    return duration


def _points(settings: Settings, eras: tuple[str, ...],
            available_cpus: Collection[int] | None) -> tuple[tuple[Any, Settings], ...]:
    """(value, settings) of every point: the sweep's values (or the one point), each under every era."""
    points = (sweep_points(settings, available_cpus=available_cpus) if settings.sweep.key
              else ((None, settings),))
    if not eras:
        return points
    return tuple((era if value is None else f"{era}, {value}",
                  replace_path(point, "kernel.era", era, available_cpus=available_cpus))
                 for value, point in points for era in eras)


def _virtual_settings(settings: Settings, duration: float | None, ops: int,
                      cpus: int | None) -> tuple[Settings, tuple[int, ...]]:
    """A virtual-mode plan's settings on its virtual CPUs, with ``ops`` per CPU; and those CPUs."""
    if duration is not None:
        raise UsageError("--duration: virtual-mode runs are bounded by operations (--ops, simulate.ops)")
    # imported here: it imports this module (through pcpd.simulate.output and the recorder)
    from pcpd.simulate.command import on_virtual_cpus

    settings = on_virtual_cpus(settings, cpus)
    if ops:
        settings = replace_path(settings, "simulate.ops", ops, available_cpus=settings.cpus)
    return settings, settings.cpus


@dataclass(frozen=True)
class Point:
    """One run of a plan: what ``run_once`` runs, here or as one task on a cluster."""

    settings: Settings            # the point's settings, seeded for the repetition
    policy: str
    value: Any                    # the point's value (``Plan.point_key``), or None without one
    repetition: int
    label: str                    # how progress lines name it


def plan_points(plan: Plan) -> list[Point]:
    """Every run of the plan, in the order a local experiment runs them and its results list them."""
    points = []
    key = plan.point_key
    for value, point_settings in plan.points:
        for repetition in range(plan.repeat):
            seeded = dataclasses.replace(point_settings, seed=point_settings.seed + repetition)
            for policy in plan.policies:
                label = f"{policy}, repetition {repetition + 1}/{plan.repeat}"
                if key:
                    label += f", {key} = {value}"
                points.append(Point(seeded, policy, value, repetition, label))
    return points

