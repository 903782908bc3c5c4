"""Rules between keys: what no single key's kind can check.

CPUs that exist, knobs of one kernel era, struct page sizes a policy runs on,
which worker runs which workload, sweeps whose every point is valid.  They run
once every key has passed its own kind (``build_settings``), and each raises
``Invalid`` at the key a user would change.

Imports: the standard library, ``pcpd.errors``, ``pcpd.config`` (kinds, settings), and the
standard-library-only ``pcpd.kernel`` and ``pcpd.policies``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping, Sequence

from pcpd.config.kinds import Invalid, show, with_value
from pcpd.config.settings import (
    SETTINGS_TABLE,
    PcpSettings,
    Settings,
    SweepSettings,
    WorkloadSettings,
)
from pcpd.errors import ConfigError
from pcpd.kernel import HIGH_BOUNDS_ERAS, STRUCT_PAGE_BYTES
from pcpd.policies import POLICIES, policy_traits

__all__ = ["build_settings", "available_cpu_set", "worker_cpus", "assign_workloads"]

# Eras by the PCP sizing knobs they have (kernel.era must be one of pcpd.kernel.ERAS).
AUTO_TUNED_ERAS = HIGH_BOUNDS_ERAS                # high_min/high_max, decay_pcp_high
NO_HIGH_FRACTION_ERAS = ("4.18", "5.13")          # before vm.percpu_pagelist_high_fraction


def build_settings(data: Mapping, available: frozenset[int]) -> Settings:
    """Load ``data`` key by key, then check the rules between keys.  Raises Invalid."""
    settings = SETTINGS_TABLE.load(dict(data), "")
    for cpu in settings.cpus:
        if cpu not in available:
            raise Invalid("cpus", f"CPU {cpu} is not available to this process "
                                  f"(it may run on {_cpu_list(available)})")
    workers = worker_cpus(settings, available)
    _check_policy(settings)
    _check_pcp_era(settings.pcp, settings.kernel.era)
    _check_pcp_sizes(settings.pcp)
    _check_workloads(settings, workers)
    _check_sweep(settings, available)
    _check_experiment(settings)
    return settings


def available_cpu_set(available_cpus: Collection[int] | None) -> frozenset[int]:
    """``available_cpus``, or the CPUs this process may run on when it is None."""
    return frozenset(os.sched_getaffinity(0) if available_cpus is None else available_cpus)


def worker_cpus(settings: Settings, available_cpus: Collection[int] | None = None) -> tuple[int, ...]:
    """The CPUs that run a worker: ``settings.cpus``, or every CPU this process may run on."""
    return settings.cpus or tuple(sorted(available_cpu_set(available_cpus)))


def assign_workloads(settings: Settings,
                     available_cpus: Collection[int] | None = None) -> dict[int, WorkloadSettings]:
    """The workload each worker CPU runs, by CPU number (ascending)."""
    workers = worker_cpus(settings, available_cpus)
    try:
        owner = _assignment(settings.workloads, workers)
    except Invalid as bad:
        raise ConfigError(settings.source, bad.key, bad.problem) from None
    return {cpu: settings.workloads[index] for cpu, index in owner.items()}


def _cpu_list(cpus: Collection[int]) -> str:
    """CPUs as the kernel prints a cpulist: 0-3,8."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _check_policy(settings: Settings) -> None:
    """The policy ``pcpd run`` runs must model arena.record_bytes (its traits say which sizes);
    experiments run each policy on a size its traits allow whatever record_bytes says."""
    record_bytes, name = settings.arena.record_bytes, settings.policy.name
    traits = policy_traits(name)
    if record_bytes in traits.record_sizes:
        return
    if traits.record_sizes == (STRUCT_PAGE_BYTES,):
        runs_on = f"runs on today's {STRUCT_PAGE_BYTES}-byte struct page (compound_head in every tail page)"
    else:
        runs_on = f"runs on struct pages of {' or '.join(map(str, traits.record_sizes))} bytes"
    fits = [t for t in POLICIES.values() if record_bytes in t.record_sizes]
    kind = "a memdesc policy" if all(t.memdesc for t in fits) else "a policy that models it"
    names = " or ".join(f'"{t.name}"' for t in fits)
    raise Invalid("policy.name", f'"{name}" {runs_on}, but arena.record_bytes is {record_bytes}; '
                                 f"use {kind} ({names}) or record_bytes = {traits.default_record_bytes}")


def _check_pcp_era(pcp: PcpSettings, era: str) -> None:
    """Knobs the chosen kernel era does not have."""
    if pcp.high and era in AUTO_TUNED_ERAS:
        raise Invalid("pcp.high", "era 6.7 auto-tunes high between pcp.high_min and pcp.high_max; "
                                  "set those instead, or pick an earlier kernel.era")
    if era not in AUTO_TUNED_ERAS:
        for key in ("high_min", "high_max"):
            if getattr(pcp, key):
                raise Invalid(f"pcp.{key}", f'exists from era 6.7 (kernel.era is "{era}"); set pcp.high instead')
    if pcp.high_fraction and era in NO_HIGH_FRACTION_ERAS:
        raise Invalid("pcp.high_fraction", "vm.percpu_pagelist_high_fraction exists from era 5.14 "
                                           f'(kernel.era is "{era}")')


def _check_pcp_sizes(pcp: PcpSettings) -> None:
    """Sizes that contradict each other, whatever the era."""
    if pcp.high_fraction and (pcp.high or pcp.high_min or pcp.high_max):
        raise Invalid("pcp.high_fraction", "sizes high as managed pages / fraction (zone_highsize); "
                                           "leave pcp.high, high_min and high_max at 0 with it")
    if pcp.high_min and pcp.high_max and pcp.high_max < pcp.high_min:
        raise Invalid("pcp.high_max", f"must be >= pcp.high_min ({pcp.high_min}), got {pcp.high_max}")
    _check_batch(pcp)


def _check_batch(pcp: PcpSettings) -> None:
    """A list never drains below one batch, so its high (or high_min) holds at least one."""
    if not pcp.batch:
        return
    for key in ("high", "high_min"):
        value = getattr(pcp, key)
        if value and value < pcp.batch:
            raise Invalid(f"pcp.{key}", f"must be >= pcp.batch ({pcp.batch}): refills and drains "
                                        f"move batch pages at a time, got {value}")


def _check_workloads(settings: Settings, workers: tuple[int, ...]) -> None:
    first: dict[str, int] = {}          # name -> first workload with it: a file may hold thousands
    for index, workload in enumerate(settings.workloads):
        where = f"workload[{index}]"
        earlier = first.setdefault(workload.name, index)
        if earlier != index:
            raise Invalid(f"{where}.name", f'"{workload.name}" is already the name of workload[{earlier}]')
        _check_types(workload, where)
        _check_sizes(workload, where, settings.arena.pages)
        for cpu in workload.cross_cpu.targets:
            if cpu not in workers:
                raise Invalid(f"{where}.cross_cpu.targets",
                              f"CPU {cpu} is not a worker (workers: {_cpu_list(workers)})")
    for cpu, index in _assignment(settings.workloads, workers).items():
        cross = settings.workloads[index].cross_cpu
        if cross.fraction and cross.targets and not cross.targets_for(cpu, workers):
            raise Invalid(f"workload[{index}].cross_cpu.targets",
                          f"CPU {cpu} runs this workload and would hand frees only to itself")


def _check_types(workload: WorkloadSettings, where: str) -> None:
    """Tables keyed by memdesc type name only types the workload allocates."""
    for memdesc_type in workload.type_orders:
        if memdesc_type not in workload.types:
            raise Invalid(f"{where}.type_orders.{memdesc_type}", f'"{memdesc_type}" is not among {where}.types')
    for memdesc_type in workload.cross_cpu.types:
        if memdesc_type not in workload.types:
            raise Invalid(f"{where}.cross_cpu.types", f'"{memdesc_type}" is not among {where}.types')


def _check_sizes(workload: WorkloadSettings, where: str, pages: int) -> None:
    """Blocks and working sets that fit the arena."""
    for memdesc_type in workload.types:
        for order in workload.orders_for(memdesc_type):
            if 1 << order > pages:
                raise Invalid(f"{where}.orders", f"order {order} blocks are {1 << order} pages, more "
                                                 f"than the arena's {pages} (arena.memory)")
    if workload.working_set > pages:
        raise Invalid(f"{where}.working_set", f"{workload.working_set} pages is more than the "
                                              f"arena's {pages} (arena.memory)")


def _assignment(workloads: Sequence[WorkloadSettings], workers: tuple[int, ...]) -> dict[int, int]:
    """Worker CPU -> index of the workload it runs; the workload with cpus = [] takes the rest."""
    owner, rest = _named_owners(workloads, workers)
    idle = [cpu for cpu in workers if cpu not in owner]
    if rest is not None and not idle:
        raise Invalid(f"workload[{rest}].cpus", "is empty, so it runs on the workers no other workload "
                                                "names, but the others name them all")
    if idle:
        if rest is None:
            raise Invalid("workload", f"worker CPU {idle[0]} runs no workload; add it to a workload's cpus "
                                      "or leave one workload's cpus empty")
        owner.update(dict.fromkeys(idle, rest))
    return dict(sorted(owner.items()))


def _named_owners(workloads: Sequence[WorkloadSettings],
                  workers: tuple[int, ...]) -> tuple[dict[int, int], int | None]:
    """(worker CPU -> index of the workload naming it, index of the one workload naming none)."""
    owner: dict[int, int] = {}
    rest = None
    for index, workload in enumerate(workloads):
        where = f"workload[{index}].cpus"
        if not workload.cpus:
            if rest is not None:
                raise Invalid(where, "only one workload may leave cpus empty (it runs on every worker "
                                     f"the others do not name); workload[{rest}] already does")
            rest = index
        for cpu in workload.cpus:
            if cpu not in workers:
                raise Invalid(where, f"CPU {cpu} is not a worker (workers: {_cpu_list(workers)})")
            if cpu in owner:
                raise Invalid(where, f"CPU {cpu} already runs workload[{owner[cpu]}]; "
                                     "a worker runs one workload")
            owner[cpu] = index
    return owner, rest


def _check_sweep(settings: Settings, available: frozenset[int]) -> None:
    sweep = settings.sweep
    if not sweep.key:
        if sweep.values:
            raise Invalid("sweep.values", "given without a sweep.key to vary")
        return
    if not sweep.values:
        raise Invalid("sweep.values", f"sweep.key is {show(sweep.key)} but there are no values")
    if not settings.duration:
        raise Invalid("duration", "a sweep runs once per value, so it needs a duration > 0")
    base = dataclasses.replace(settings, sweep=SweepSettings())
    for i, value in enumerate(sweep.values):
        try:
            data = with_value(SETTINGS_TABLE.dump(base), sweep.key, value)
        except Invalid:        # SettingPath checked the name: the workload index is out of range
            raise Invalid("sweep.key", f"{show(sweep.key)} names a workload that does not exist "
                                       f"(the config has {len(settings.workloads)})") from None
        try:
            build_settings(data, available)
        except Invalid as bad:
            raise Invalid(f"sweep.values[{i}]", f"{sweep.key} = {show(value)} fails: "
                                                f"{bad.key}: {bad.problem}") from None


def _check_experiment(settings: Settings) -> None:
    warmup, duration = settings.experiment.warmup, settings.duration
    if duration and warmup >= duration:
        raise Invalid("experiment.warmup", f"must be shorter than duration ({duration:g} s), got {warmup:g}")
