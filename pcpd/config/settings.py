"""The settings: what one run of pcpd needs, as frozen dataclasses with their defaults.

Each field is a config key declared by ``setting()`` (``pcpd.config.kinds``);
field order is TOML and schema order.  ``DEFAULT_SETTINGS`` is the soak mix, the
config ``pcpd run`` uses without a file.  Loading files is ``pcpd.config.load``;
the rules between keys are ``pcpd.config.rules``.

Imports: the standard library, ``pcpd.config.kinds``, and the standard-library-only
``pcpd.kernel`` (the kernel's constants) and ``pcpd.policies`` (the policy registry).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pcpd.config.kinds import (
    ByteSize,
    Choice,
    Flag,
    FrozenMap,
    Integer,
    Items,
    Keyed,
    Real,
    Scalar,
    SettingPath,
    Table,
    Tables,
    Text,
    numeric_paths,
    setting,
)
from pcpd.kernel import (
    DECAY_DRAINS,
    DEFAULT_ERA,
    ERAS,
    MAX_PAGE_ORDER,
    MEMDESC_TYPES,
    MIN_PERCPU_PAGELIST_HIGH_FRACTION,
    PAGE_SIZE,
    PAGEBLOCK_NR_PAGES,
    PCP_BATCH_SCALE_MAX,
    RECORD_BYTES,
    STRUCT_PAGE_BYTES,
)
from pcpd.policies import BASELINE, MEMDESC_BUDGETS, PROPOSAL, policy_names

__all__ = [
    "ArenaSettings", "KernelSettings", "PcpSettings", "PolicySettings", "CrossCpu", "Pressure",
    "WorkloadSettings", "ExporterSettings", "SweepSettings", "ExperimentSettings", "SimulateSettings",
    "Settings",
    "DEFAULT_SETTINGS", "SOAK_WORKLOAD", "SETTINGS_TABLE", "FREE_HIGH_BATCH_MODES", "sweepable_paths",
]

POLICIES = policy_names()               # the registry's, in its order
MODES = ("real", "virtual")             # how pcpd experiment runs a point
# PCPF_FREE_HIGH_BATCH: from the cache slice (zone_pcp_update_cacheinfo()), or forced
FREE_HIGH_BATCH_MODES = ("auto", "on", "off")
MAX_VIRTUAL_CPUS = 1024                 # pcpd.simulate.engine's: ncpus^2 rings must fit its budget
ORDER_KEYS = tuple(str(order) for order in range(MAX_PAGE_ORDER + 1))
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address; "" disables.
ADDRESS_PATTERN = (r"|(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):"
                   r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})")


@functools.cache
def sweepable_paths() -> tuple[str, ...]:
    """The dotted keys a sweep may vary: every numeric setting outside [sweep] and [experiment]."""
    return tuple(numeric_paths(Settings))


NAME = Text(NAME_PATTERN, 'a name of letters, digits, "_", "." and "-"')
CPU_NUMBER = Integer(0, 4095)
WEIGHT = Real(0, above=True)
ORDER_WEIGHTS = Keyed(ORDER_KEYS, f"weights for orders 0..{MAX_PAGE_ORDER}", WEIGHT, int_keys=True)


@dataclass(frozen=True)
class ArenaSettings:
    """The shared struct-page array: the memory it describes and the size of each record."""

    memory_bytes: int = setting(
        ByteSize(PAGEBLOCK_NR_PAGES * PAGE_SIZE, 1 << 36, PAGEBLOCK_NR_PAGES * PAGE_SIZE,
                 f"whole {PAGEBLOCK_NR_PAGES}-page pageblocks"),
        1 << 30, "memory the zone manages, in bytes or as a string like \"1GiB\"", key="memory")
    record_bytes: int = setting(
        Choice(RECORD_BYTES), STRUCT_PAGE_BYTES,
        "bytes per struct page record: 64 today, 32/16/8 for the memdesc stages")

    @property
    def pages(self) -> int:
        """Base pages in the zone: a whole number of pageblocks, at least one."""
        return self.memory_bytes // PAGE_SIZE


@dataclass(frozen=True)
class KernelSettings:
    """Which kernel's PCP sizing and behaviour to follow."""

    era: str = setting(Choice(ERAS), DEFAULT_ERA,
                       "kernel era: 4.18 (batch <= 31, order-0 PCP), 5.13 (high-order lists), "
                       "5.14 (high from the low watermark), 6.7 (high_min/high_max auto-tuning)")
    nsplit: int = setting(Integer(0, 8192), 0,
                          "CPUs sharing the zone when sizing high (zone_highsize); 0 = number of workers")


@dataclass(frozen=True)
class PcpSettings:
    """Per-CPU page list knobs; 0 means computed as the kernel does."""

    batch: int = setting(Integer(0, 4095), 0, "pages per refill/drain chunk; 0 = zone_batchsize()")
    high: int = setting(Integer(0, 2**31 - 1), 0, "drain threshold for eras before 6.7; 0 = computed")
    high_min: int = setting(Integer(0, 2**31 - 1), 0, "6.7: lower bound of auto-tuned high; 0 = computed")
    high_max: int = setting(Integer(0, 2**31 - 1), 0, "6.7: upper bound of auto-tuned high; 0 = computed")
    high_fraction: int = setting(Integer(0, skip_to=MIN_PERCPU_PAGELIST_HIGH_FRACTION), 0,
                                 "vm.percpu_pagelist_high_fraction (5.14+): 0 = auto, else >= 8")
    scale_max: int = setting(Integer(0, 6), PCP_BATCH_SCALE_MAX, "CONFIG_PCP_BATCH_SCALE_MAX (6.7+)")
    decay_interval: float = setting(Real(0, above=True), 1.0,
                                    "seconds between decay_pcp_high() ticks (6.7+)")
    free_high_batch: str = setting(Choice(FREE_HIGH_BATCH_MODES, ((True, "on"), (False, "auto"))), "auto",
                                   "PCPF_FREE_HIGH_BATCH: auto = set as zone_pcp_update_cacheinfo() does, "
                                   "when cache_slice is over 3 * batch pages; on/off = forced (6.7+); "
                                   "older files' true loads as on, false as auto")
    cache_slice: int = setting(ByteSize(0, 1 << 40, 1, "any number of bytes"), 0,
                               "the per-CPU share of the last-level cache (cacheinfo's "
                               "per_cpu_data_slice_size); 0 = this machine's, from "
                               "/sys/devices/system/cpu/cpu0/cache (0 there without cache information)")
    decay_drain: str = setting(Choice(DECAY_DRAINS), "batched",
                               "how decay_pcp_high() frees the excess: batched = batch-sized chunks "
                               "(fc4b909c368f: v6.19, 6.12.y and 6.18.y stable), one-call = one "
                               "free_pcppages_bulk() (6.7 until then)")
    enabled: bool = setting(Flag(), True, "false: the boot pageset (high 0, batch 1), so every "
                                          "allocation and free goes to the buddy under zone->lock")


@dataclass(frozen=True)
class PolicySettings:
    """Which PCP design runs, and the choices each design leaves open."""

    name: str = setting(Choice(POLICIES), BASELINE,
                        "legacy (today), compound (only compound memory on PCP lists), "
                        "memdesc-pcpdesc (memdescs without descriptor caching), "
                        "memdesc (one PCP per memdesc type keeping the descriptor)")
    noncompound_free: str = setting(Choice(("buddy", "convert")), "buddy",
                                    "compound policy: free non-compound blocks to the buddy, "
                                    "or convert them to compound and keep them on the PCP")
    noncompound_alloc: str = setting(Choice(("buddy", "pcp")), "buddy",
                                     "compound policy: allocate non-compound blocks from the buddy, "
                                     "or take a compound block off the PCP and undo it")
    memdesc_high: str = setting(Choice(MEMDESC_BUDGETS), "shared",
                                "memdesc policy: the types' lists share one count and high per CPU, "
                                "as legacy's lists do (shared); each type's PCP sized like the "
                                "zone's, up to 6x the pages (per-type); or the zone's high split "
                                "between the types (split)")


@dataclass(frozen=True)
class CrossCpu:
    """Frees handed to another worker, as when one CPU frees what another allocated."""

    fraction: float = setting(Real(0, 1), 0.0, "share of frees handed to another worker")
    targets: tuple[int, ...] = setting(Items(CPU_NUMBER, "CPU numbers", unique=True), (),
                                       "CPUs to hand frees to; [] = every other worker")
    types: tuple[str, ...] = setting(Items(Choice(MEMDESC_TYPES), "memdesc types", unique=True), (),
                                     "memdesc types whose frees may be handed over; [] = every type")

    def targets_for(self, cpu: int, workers: Sequence[int]) -> tuple[int, ...]:
        """The CPUs that a worker on ``cpu`` hands frees to; never ``cpu`` itself."""
        return tuple(target for target in (self.targets or workers) if target != cpu)


@dataclass(frozen=True)
class Pressure:
    """Waves that free a share of the held pages at once, as reclaim does."""

    period: int = setting(Integer(0), 0, "operations between waves; 0 = no waves")
    free_fraction: float = setting(Real(0, 1, above=True), 0.5, "share of held pages a wave frees")


@dataclass(frozen=True)
class WorkloadSettings:
    """What a worker allocates and frees.

    Each allocation draws a memdesc type from ``types``, then an order from
    ``orders_for(type)``.
    """

    name: str = setting(NAME, "soak", "workload name, unique within the config")
    cpus: tuple[int, ...] = setting(Items(CPU_NUMBER, "CPU numbers", unique=True), (),
                                    "workers running this workload; [] = every worker no other "
                                    "workload names")
    types: Mapping[str, float] = setting(
        Keyed(MEMDESC_TYPES, "weights for memdesc types " + ", ".join(MEMDESC_TYPES), WEIGHT),
        FrozenMap({"anon": 1.0}), "memdesc type -> weight")
    orders: Mapping[int, float] = setting(ORDER_WEIGHTS, FrozenMap({0: 1.0}),
                                          "order -> weight, for types without their own type_orders")
    working_set: int = setting(Integer(1), 4096, "pages a worker aims to hold")
    lifetime: str = setting(Choice(("random", "fifo", "lifo")), "random",
                            "which held block a free picks")
    burst: int = setting(Integer(1), 1, "operations come in runs of this many allocs, then as many frees")
    pressure: Pressure = setting(Table(Pressure), Pressure(), "pressure waves")
    cross_cpu: CrossCpu = setting(Table(CrossCpu), CrossCpu(), "frees handed to other workers")
    rate: float = setting(Real(0), 0.0, "operations per second per worker; 0 = flat out")
    type_orders: Mapping[str, Mapping[int, float]] = setting(
        Keyed(MEMDESC_TYPES, "order weights per memdesc type (" + ", ".join(MEMDESC_TYPES) + ")",
              ORDER_WEIGHTS, nonempty=False),
        FrozenMap(), "memdesc type -> its own order weights, overriding orders")

    def orders_for(self, memdesc_type: str) -> Mapping[int, float]:
        """The order weights that allocations of ``memdesc_type`` draw from."""
        return self.type_orders.get(memdesc_type, self.orders)


@dataclass(frozen=True)
class ExporterSettings:
    """The Prometheus endpoint."""

    address: str = setting(Text(ADDRESS_PATTERN, 'host:port (like "127.0.0.1:9464"), or "" to disable'),
                           "127.0.0.1:9464", "host:port to serve /metrics on; \"\" disables")
    per_cpu: bool = setting(Flag(), False, "add a cpu label to every series")


@dataclass(frozen=True)
class SweepSettings:
    """One numeric setting varied over a list of values, one run each."""

    key: str = setting(
        SettingPath('"" or the key of a numeric setting, like "pcp.batch" or "workload.working_set"',
                    sweepable_paths, indexed="workload"),
        "", "dotted key of a numeric setting; \"\" = no sweep")
    values: tuple = setting(Items(Scalar(), "numbers or size strings"), (), "values the key takes in turn")


@dataclass(frozen=True)
class ExperimentSettings:
    """How ``pcpd experiment`` compares policies."""

    policies: tuple[str, ...] = setting(Items(Choice(POLICIES), "policy names", unique=True, nonempty=True),
                                        PROPOSAL, "policies to run, in order")
    repeat: int = setting(Integer(1, 1000), 3, "runs per policy (and per sweep value)")
    warmup: float = setting(Real(0), 1.0, "seconds at the start of each run left out of the results "
                                          "(real mode)")
    mode: str = setting(Choice(MODES), "real",
                        "real: a daemon on this machine's CPUs per run; virtual: the run in virtual time "
                        "on simulate.cpus virtual CPUs (pcpd simulate's engine)")
    eras: tuple[str, ...] = setting(Items(Choice(ERAS), "kernel eras", unique=True), (),
                                    "kernel eras every point runs under, in order, on the same seeded "
                                    "workload; [] = kernel.era alone")


# Cost constants of virtual-time mode, in nanoseconds.  Their sources are in
# pcpd.simulate.costs (COST_SOURCES) and docs/simulate.md; only positive base
# costs let every operation advance its CPU's clock.
NANOSECONDS = Real(0, 1e6)


@dataclass(frozen=True)
class SimulateSettings:
    """``pcpd simulate``: virtual CPUs interleaved by a discrete-event clock, and its cost model."""

    ops: int = setting(Integer(1, 10**9), 10_000, "operations per virtual CPU (--ops overrides)")
    cpus: int = setting(Integer(0, MAX_VIRTUAL_CPUS), 0,
                        "virtual CPUs 0..N-1 (--cpus overrides); 0 = the CPUs the config names")
    alloc_ns: float = setting(Real(0, 1e6, above=True), 23.0,
                              "fixed cost of one allocation, beyond the cachelines it charges")
    free_ns: float = setting(Real(0, 1e6, above=True), 23.0,
                             "fixed cost of one free, beyond the cachelines it charges")
    alloc_caller_ns: float = setting(NANOSECONDS, 0.0,
                                     "the caller's own work per allocation, outside the allocator (a page "
                                     "fault and clearing the page); 0: back-to-back allocations, as page_bench")
    free_caller_ns: float = setting(NANOSECONDS, 0.0,
                                    "the caller's own work per free, outside the allocator (an munmap's "
                                    "share of unmapping and TLB flushing); 0: back-to-back frees")
    line_ns: float = setting(NANOSECONDS, 2.0,
                             "per struct page, descriptor or free-memory cacheline an operation charges "
                             "outside zone->lock")
    slab_ns: float = setting(NANOSECONDS, 5.0, "per descriptor slab allocation or free (memdesc policies)")
    remote_ns: float = setting(NANOSECONDS, 25.0, "per block handed to another CPU, and per block taken "
                                                  "from one (cross-CPU frees)")
    lock_ns: float = setting(NANOSECONDS, 20.0, "zone->lock held: spin_lock + spin_unlock, per acquisition")
    lock_handoff_ns: float = setting(NANOSECONDS, 100.0,
                                     "zone->lock held: extra when the previous holder was another CPU "
                                     "(the lock's and the free lists' lines move between cores)")
    locked_line_ns: float = setting(NANOSECONDS, 36.0,
                                    "zone->lock held: per struct page or free-memory line the buddy work "
                                    "charges (free-list links, buddy checks, merges): the per-page cost of "
                                    "refills and drains")


# The soak mix: everything at once.  THP-sized folios are rare but dominate the
# pages held; slab, netpool and non-compound "kernel" blocks keep orders 1-3 busy.
SOAK_WORKLOAD = WorkloadSettings(
    name="soak",
    types=FrozenMap({"anon": 30.0, "file": 25.0, "slab": 20.0, "pagetable": 8.0,
                     "netpool": 12.0, "kernel": 5.0}),
    orders=FrozenMap({0: 70.0, 2: 16.0, 4: 10.0, 9: 4.0}),
    type_orders=FrozenMap({
        "slab": FrozenMap({0: 50.0, 1: 25.0, 2: 15.0, 3: 10.0}),
        "pagetable": FrozenMap({0: 1.0}),
        "netpool": FrozenMap({0: 70.0, 1: 30.0}),
        "kernel": FrozenMap({1: 50.0, 2: 30.0, 3: 20.0}),
    }),
    working_set=4096,
    burst=4,
    pressure=Pressure(period=50_000, free_fraction=0.5),
    cross_cpu=CrossCpu(fraction=0.25, types=("netpool",)),
)


@dataclass(frozen=True)
class Settings:
    """Everything one run of pcpd needs.  ``DEFAULT_SETTINGS`` is the soak mix."""

    name: str = setting(NAME, "soak", "name of this config, used in results")
    seed: int = setting(Integer(0), 1, "random seed; each worker derives its own")
    duration: float = setting(Real(0), 0.0, "seconds to run; 0 = until signalled")
    cpus: tuple[int, ...] = setting(Items(CPU_NUMBER, "CPU numbers", unique=True), (),
                                    "CPUs that run a worker; [] = every CPU this process may run on")
    arena: ArenaSettings = setting(Table(ArenaSettings), ArenaSettings(), "the struct page array")
    kernel: KernelSettings = setting(Table(KernelSettings), KernelSettings(), "kernel era")
    pcp: PcpSettings = setting(Table(PcpSettings), PcpSettings(), "per-CPU page list knobs")
    policy: PolicySettings = setting(Table(PolicySettings), PolicySettings(), "PCP design")
    workloads: tuple[WorkloadSettings, ...] = setting(Tables(WorkloadSettings), (SOAK_WORKLOAD,),
                                                      "workloads, one [[workload]] section each",
                                                      key="workload")
    exporter: ExporterSettings = setting(Table(ExporterSettings), ExporterSettings(), "Prometheus endpoint")
    sweep: SweepSettings = setting(Table(SweepSettings), SweepSettings(), "parameter sweep",
                                   sweepable=False)
    experiment: ExperimentSettings = setting(Table(ExperimentSettings), ExperimentSettings(),
                                             "policy comparison", sweepable=False)
    simulate: SimulateSettings = setting(Table(SimulateSettings), SimulateSettings(),
                                         "virtual-time mode (pcpd simulate): operations and cost model",
                                         sweepable=False)
    source: str = dataclasses.field(default="<built-in>", compare=False)   # not a key: provenance


DEFAULT_SETTINGS = Settings()
SETTINGS_TABLE = Table(Settings)     # the whole file: what loading and dumping start from
