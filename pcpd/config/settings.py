"""Config files: TOML validated into frozen settings dataclasses.

Every setting is declared once, as a dataclass field made by ``setting()``: its
TOML key, its *kind* (the rule its value follows: ``Integer``, ``Choice``,
``Table``, ...), its default and a one-line doc.  The validator here and the
JSON Schema in ``pcpd.config.schema`` both read that declaration, so they cannot
drift apart.  Rules that tie several settings together (CPUs that exist, knobs
of one kernel era, which worker runs which workload) are the ``_check_*``
functions, run once every key has passed its own rule.

A config is data only: nothing in it is executed or imported.  Every problem
is a ``ConfigError`` whose message is one line: ``path: key.path: problem``.

Imports: the standard library and ``pcpd.errors`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, ClassVar

from pcpd.errors import ConfigError

__all__ = [
    "ArenaSettings", "KernelSettings", "PcpSettings", "PolicySettings", "CrossCpu", "Pressure",
    "WorkloadSettings", "ExporterSettings", "SweepSettings", "ExperimentSettings", "Settings",
    "DEFAULT_SETTINGS", "SOAK_WORKLOAD", "FrozenMap",
    "load_settings", "parse_settings", "settings_from_dict", "settings_to_dict", "settings_hash",
    "replace_path", "sweep_points", "sweepable_paths", "worker_cpus", "assign_workloads",
    "setting_fields", "add_arguments", "command",
]

PAGE_SIZE = 4096
PAGEBLOCK_NR_PAGES = 512                 # pageblock_nr_pages (pageblock_order 9)
MAX_PAGE_ORDER = 10                      # NR_PAGE_ORDERS = 11
STRUCT_PAGE_BYTES = 64                   # sizeof(struct page) today, x86-64
RECORD_BYTES = (8, 16, 32, 64)           # struct page size: the memdesc stages, then today's 64
ERAS = ("4.18", "5.13", "5.14", "6.7")
POLICIES = ("legacy", "compound", "memdesc-pcpdesc", "memdesc")
STRUCT_PAGE_POLICIES = ("legacy", "compound")   # need today's 64-byte struct page
MEMDESC_TYPES = ("anon", "file", "slab", "pagetable", "netpool", "kernel")
ORDER_KEYS = tuple(str(order) for order in range(MAX_PAGE_ORDER + 1))
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address; "" disables.
ADDRESS_PATTERN = (r"|(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):"
                   r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})")
SIZE_PATTERN = r"([0-9]+) ?(KiB|MiB|GiB|TiB)"
SIZE_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


class FrozenMap(Mapping):
    """An immutable mapping that hashes and pickles: the weight tables of frozen settings.

    Iteration follows insertion order; the loader inserts keys in their declared
    order (anon before file, order 0 before order 9), whatever order a file used,
    so seeded random draws over the weights do not depend on how a file was written.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | Iterable = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


# ---------------------------------------------------------------------------
# Kinds: the rule one key's value follows.  Each kind loads a TOML value into
# the settings value (raising _Invalid with a one-line problem), dumps it back
# to a JSON/TOML value, and describes itself for messages.  pcpd.config.schema
# translates each kind into JSON Schema.

class _Invalid(Exception):
    """A problem at a key path; the public entry points add the file name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key, self.problem = key, problem


def _show(value: Any) -> str:
    """A value as a config file spells it, short enough for a one-line message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)      # quoted, newlines escaped
        return text if len(text) <= 40 else text[:36] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return f"a {type(value).__name__} value"              # TOML dates and times


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _format_bytes(n: int) -> str:
    for unit, size in reversed(SIZE_UNITS.items()):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _cpu_list(cpus: Collection[int]) -> str:
    """CPUs as the kernel prints a cpulist: 0-3,8."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class Integer:
    """A whole number (never a boolean) in minimum..maximum.

    With ``skip_to``, the values are ``minimum`` or >= ``skip_to`` (a sysctl
    whose small values the kernel rejects).
    """

    minimum: int
    maximum: int | None = None
    skip_to: int | None = None
    numeric: ClassVar[bool] = True

    def describe(self) -> str:
        if self.skip_to is not None:
            return f"{self.minimum} or an integer >= {self.skip_to}"
        if self.maximum is None:
            return f"an integer >= {self.minimum}"
        return f"an integer in {self.minimum}..{self.maximum}"

    def load(self, value: Any, where: str) -> int:
        if type(value) is int and self._allows(value):
            return value
        raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}")

    def _allows(self, value: int) -> bool:
        if self.skip_to is not None and self.minimum < value < self.skip_to:
            return False
        return self.minimum <= value and (self.maximum is None or value <= self.maximum)

    def dump(self, value: int) -> int:
        return value


@dataclass(frozen=True)
class Real:
    """A finite number, integer or float, loaded as a float.  ``above``: minimum excluded."""

    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    numeric: ClassVar[bool] = True

    def describe(self) -> str:
        low = "" if self.minimum is None else f"{'>' if self.above else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        if low and high and not self.above:
            return f"a number in {self.minimum:g}..{self.maximum:g}"
        return "a number " + " and ".join(part for part in (low, high) if part)

    def load(self, value: Any, where: str) -> float:
        if type(value) in (int, float) and math.isfinite(value) and self._allows(value):
            return float(value)
        raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}")

    def _allows(self, value: float) -> bool:
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def dump(self, value: float) -> float:
        return value


@dataclass(frozen=True)
class Flag:
    """true or false."""

    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "true or false"

    def load(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}")

    def dump(self, value: bool) -> bool:
        return value


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings or integers."""

    values: tuple

    @property
    def numeric(self) -> bool:
        return all(type(v) is int for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(map(_show, self.values))

    def load(self, value: Any, where: str) -> Any:
        if any(type(value) is type(v) and value == v for v in self.values):
            return value
        hint = ""
        if isinstance(value, str):
            hint = _suggest(value, [v for v in self.values if isinstance(v, str)])
        elif type(value) is float and repr(value) in self.values:
            hint = f' (write it as a string: "{value!r}")'         # era = 6.7
        raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}{hint}")

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Text:
    """A string matching ``pattern`` (the whole string)."""

    pattern: str
    what: str
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return self.what

    def load(self, value: Any, where: str) -> str:
        if isinstance(value, str) and re.fullmatch(self.pattern, value):
            return value
        raise _Invalid(where, f"expected {self.what}, got {_show(value)}")

    def dump(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class ByteSize:
    """A size in bytes: an integer, or a string like "512MiB"; a multiple of ``multiple``."""

    minimum: int
    maximum: int
    multiple: int
    why: str                                   # why sizes are multiples of ``multiple``
    numeric: ClassVar[bool] = True

    def describe(self) -> str:
        return 'a size: bytes as an integer, or a string like "512MiB" or "1GiB"'

    def load(self, value: Any, where: str) -> int:
        if type(value) is int:
            size = value
        elif isinstance(value, str) and (match := re.fullmatch(SIZE_PATTERN, value)):
            size = int(match[1]) * SIZE_UNITS[match[2]]
        else:
            raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}")
        if self.minimum <= size <= self.maximum and size % self.multiple == 0:
            return size
        raise _Invalid(where, f"expected a multiple of {_format_bytes(self.multiple)} ({self.why}) "
                              f"from {_format_bytes(self.minimum)} to {_format_bytes(self.maximum)}, "
                              f"got {_show(value)}")

    def dump(self, value: int) -> int:
        return value


@dataclass(frozen=True)
class Scalar:
    """A number or a string: a value of whatever setting a sweep varies."""

    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "a number or a size string"

    def load(self, value: Any, where: str) -> int | float | str:
        if type(value) in (int, str) or (type(value) is float and math.isfinite(value)):
            return value
        raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}")

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class SettingPath:
    """"" or the dotted key of a numeric setting (``sweepable_paths()``).

    ``workload.KEY`` means that key of every workload; ``workload[N].KEY`` one of them.
    """

    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return '"" or the key of a numeric setting, like "pcp.batch" or "workload.working_set"'

    def load(self, value: Any, where: str) -> str:
        if isinstance(value, str) and (value == "" or _unindexed(value) in sweepable_paths()):
            return value
        hint = _suggest(value, sweepable_paths()) if isinstance(value, str) else ""
        raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}{hint}")

    def dump(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class Items:
    """An array of values of one kind, loaded as a tuple."""

    item: Any
    what: str                                  # plural noun: "CPU numbers"
    unique: bool = False
    nonempty: bool = False
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return f"{'a non-empty' if self.nonempty else 'an'} array of {self.what}"

    def load(self, value: Any, where: str) -> tuple:
        if not isinstance(value, list) or (self.nonempty and not value):
            raise _Invalid(where, f"expected {self.describe()}, got {_show(value)}")
        items = tuple(self.item.load(v, f"{where}[{i}]") for i, v in enumerate(value))
        if self.unique:
            for i, v in enumerate(items):
                if v in items[:i]:
                    raise _Invalid(where, f"lists {_show(v)} twice")
        return items

    def dump(self, value: tuple) -> list:
        return [self.item.dump(v) for v in value]


@dataclass(frozen=True)
class Keyed:
    """A table whose keys come from a fixed set, each mapped to a value of one kind.

    ``int_keys``: TOML keys are strings ("0", "9"); the loaded keys are ints.
    """

    keys: tuple[str, ...]
    what: str                                  # "weights for orders 0..10"
    value: Any
    int_keys: bool = False
    nonempty: bool = True
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return self.what

    def load(self, value: Any, where: str) -> FrozenMap:
        if not isinstance(value, dict):
            raise _Invalid(where, f"expected a table of {self.what}, got {_show(value)}")
        for key in value:
            if key not in self.keys:
                hint = "" if self.int_keys else _suggest(key, self.keys)
                raise _Invalid(where, f"expected {self.what}, got key {_show(key)}{hint}")
        if self.nonempty and not value:
            raise _Invalid(where, f"expected {self.what}, got an empty table")
        return FrozenMap((int(key) if self.int_keys else key, self.value.load(value[key], _join(where, key)))
                         for key in self.keys if key in value)

    def dump(self, value: Mapping) -> dict:
        return {str(key): self.value.dump(v) for key, v in value.items()}


@dataclass(frozen=True)
class Table:
    """A TOML table holding the settings of one dataclass (see ``setting_fields``)."""

    cls: type
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "a table"

    def load(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _Invalid(where, f"expected a table, got {_show(value)}")
        fields = dict(setting_fields(self.cls))
        loaded = {}
        for key, item in value.items():
            if key not in fields:
                raise _Invalid(_join(where, key), f"unknown key{_suggest(key, list(fields))}; "
                                                  f"allowed keys: {', '.join(fields)}")
            field = fields[key]
            loaded[field.name] = field.metadata["kind"].load(item, _join(where, key))
        return self.cls(**loaded)

    def dump(self, value: Any) -> dict:
        return {key: field.metadata["kind"].dump(getattr(value, field.name))
                for key, field in setting_fields(self.cls)}


@dataclass(frozen=True)
class Tables:
    """A TOML array of tables (``[[workload]]``), loaded as a tuple of dataclasses."""

    cls: type
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "a non-empty array of tables"

    def load(self, value: Any, where: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise _Invalid(where, f"expected one or more [[{where}]] tables, got {_show(value)}")
        return tuple(Table(self.cls).load(v, f"{where}[{i}]") for i, v in enumerate(value))

    def dump(self, value: tuple) -> list:
        return [Table(self.cls).dump(v) for v in value]


def setting(kind: Any, default: Any, doc: str, *, key: str | None = None, sweepable: bool = True) -> Any:
    """Declare one config key: its kind, default and doc, read by the validator and pcpd.config.schema.

    ``key`` is the TOML key when it differs from the field name; ``sweepable=False``
    keeps a table's keys out of ``sweepable_paths()``.
    """
    return dataclasses.field(default=default, metadata={
        "kind": kind, "doc": doc, "key": key, "sweepable": sweepable})


def setting_fields(cls: type) -> Iterator[tuple[str, dataclasses.Field]]:
    """(TOML key, field) for each config key of a settings class, in declaration order."""
    for field in dataclasses.fields(cls):
        if "kind" in field.metadata:
            yield field.metadata["key"] or field.name, field


NAME = Text(NAME_PATTERN, 'a name of letters, digits, "_", "." and "-"')
CPU_NUMBER = Integer(0, 4095)
WEIGHT = Real(0, above=True)
ORDER_WEIGHTS = Keyed(ORDER_KEYS, f"weights for orders 0..{MAX_PAGE_ORDER}", WEIGHT, int_keys=True)


# ---------------------------------------------------------------------------
# The settings.  Field order is TOML and schema order.

@dataclass(frozen=True)
class ArenaSettings:
    """The shared struct-page array: the memory it describes and the size of each record."""

    memory_bytes: int = setting(
        ByteSize(PAGEBLOCK_NR_PAGES * PAGE_SIZE, 1 << 36, PAGEBLOCK_NR_PAGES * PAGE_SIZE,
                 "whole 512-page pageblocks"),
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

    era: str = setting(Choice(ERAS), "6.7",
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
    high_fraction: int = setting(Integer(0, skip_to=8), 0,
                                 "vm.percpu_pagelist_high_fraction (5.14+): 0 = auto, else >= 8")
    scale_max: int = setting(Integer(0, 6), 5, "CONFIG_PCP_BATCH_SCALE_MAX (6.7+)")
    decay_interval: float = setting(Real(0, above=True), 1.0,
                                    "seconds between decay_pcp_high() ticks (6.7+)")
    free_high_batch: bool = setting(Flag(), False,
                                    "PCPF_FREE_HIGH_BATCH: the CPU's LLC slice is larger than 3 * batch")
    enabled: bool = setting(Flag(), True, "false: the boot pageset (high 0, batch 1), so every "
                                          "allocation and free goes to the buddy under zone->lock")


@dataclass(frozen=True)
class PolicySettings:
    """Which PCP design runs, and the choices each design leaves open."""

    name: str = setting(Choice(POLICIES), "legacy",
                        "legacy (today), compound (only compound memory on PCP lists), "
                        "memdesc-pcpdesc (memdescs without descriptor caching), "
                        "memdesc (one PCP per memdesc type keeping the descriptor)")
    noncompound_free: str = setting(Choice(("buddy", "convert")), "buddy",
                                    "compound policy: free non-compound blocks to the buddy, "
                                    "or convert them to compound and keep them on the PCP")
    noncompound_alloc: str = setting(Choice(("buddy", "pcp")), "buddy",
                                     "compound policy: allocate non-compound blocks from the buddy, "
                                     "or take a compound block off the PCP and undo it")
    memdesc_high: str = setting(Choice(("per-type", "split")), "per-type",
                                "memdesc policy: each type's PCP sized like the zone's (per-type), "
                                "or the zone's high split between the types (split)")


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

    key: str = setting(SettingPath(), "", "dotted key of a numeric setting; \"\" = no sweep")
    values: tuple = setting(Items(Scalar(), "numbers or size strings"), (), "values the key takes in turn")


@dataclass(frozen=True)
class ExperimentSettings:
    """How ``pcpd experiment`` compares policies."""

    policies: tuple[str, ...] = setting(Items(Choice(POLICIES), "policy names", unique=True, nonempty=True),
                                        POLICIES, "policies to run, in order")
    repeat: int = setting(Integer(1, 1000), 3, "runs per policy (and per sweep value)")
    warmup: float = setting(Real(0), 1.0, "seconds at the start of each run left out of the results")


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
    source: str = dataclasses.field(default="<built-in>", compare=False)   # not a key: provenance


DEFAULT_SETTINGS = Settings()
_SETTINGS = Table(Settings)


# ---------------------------------------------------------------------------
# Loading.

def load_settings(path: str, *, available_cpus: Collection[int] | None = None) -> Settings:
    """Read and validate the config file at ``path``.

    ``available_cpus`` defaults to ``os.sched_getaffinity(0)``.
    Raises ConfigError (one line, naming ``path``) for any problem.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError(path, "", f"cannot read: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, "", f"not UTF-8 text (bad byte at offset {err.start})") from None
    return parse_settings(text, path, available_cpus=available_cpus)


def parse_settings(text: str, source: str, *, available_cpus: Collection[int] | None = None) -> Settings:
    """Validate TOML ``text``; ``source`` names it in errors and in ``Settings.source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", str(err)) from None
    return settings_from_dict(data, source, available_cpus=available_cpus)


def settings_from_dict(data: Mapping, source: str, *,
                       available_cpus: Collection[int] | None = None) -> Settings:
    """Validate a TOML-shaped dict, such as ``settings_to_dict()`` or a results file's copy, gives."""
    try:
        settings = _build(data, _available(available_cpus))
    except _Invalid as bad:
        raise ConfigError(source, bad.key, bad.problem) from None
    return dataclasses.replace(settings, source=source)


def settings_to_dict(settings: Settings) -> dict:
    """The settings as a TOML-shaped, JSON-able dict that ``settings_from_dict`` takes back.

    Keys are TOML keys (``memory``, ``workload``); ``source`` is left out.
    """
    return _SETTINGS.dump(settings)


def settings_hash(settings: Settings) -> str:
    """First 12 hex digits of the sha256 of the settings' canonical JSON.

    Equal settings hash equally however their files were written (key order,
    "1GiB" or 1073741824) and wherever they were loaded from.
    """
    canonical = json.dumps(settings_to_dict(settings), sort_keys=True, separators=(",", ":"))
    return sha256(canonical.encode()).hexdigest()[:12]


def replace_path(settings: Settings, path: str, value: Any, *,
                 available_cpus: Collection[int] | None = None) -> Settings:
    """The settings with the key at dotted ``path`` set to ``value``, validated like a file.

    ``path`` uses TOML keys: "pcp.batch", "arena.memory", "workload.working_set"
    (every workload) or "workload[1].working_set" (one).
    """
    try:
        data = _with_value(settings_to_dict(settings), path, value)
        changed = _build(data, _available(available_cpus))
    except _Invalid as bad:
        raise ConfigError(settings.source, bad.key, bad.problem) from None
    return dataclasses.replace(changed, source=settings.source)


def sweep_points(settings: Settings, *,
                 available_cpus: Collection[int] | None = None) -> tuple[tuple[Any, Settings], ...]:
    """(value, settings of that run) for each sweep value; the runs' own sweep is empty."""
    base = dataclasses.replace(settings, sweep=SweepSettings())
    return tuple((value, replace_path(base, settings.sweep.key, value, available_cpus=available_cpus))
                 for value in settings.sweep.values)


@functools.cache
def sweepable_paths() -> tuple[str, ...]:
    """The dotted keys a sweep may vary: every numeric setting outside [sweep] and [experiment]."""
    return tuple(_numeric_paths(Settings, ""))


def _numeric_paths(cls: type, prefix: str) -> Iterator[str]:
    for key, field in setting_fields(cls):
        kind = field.metadata["kind"]
        if not field.metadata["sweepable"]:
            continue
        if isinstance(kind, (Table, Tables)):
            yield from _numeric_paths(kind.cls, f"{prefix}{key}.")
        elif kind.numeric:
            yield prefix + key


def _unindexed(path: str) -> str:
    """workload[1].burst -> workload.burst."""
    return re.sub(r"^workload\[[0-9]+\]\.", "workload.", path)


def worker_cpus(settings: Settings, available_cpus: Collection[int] | None = None) -> tuple[int, ...]:
    """The CPUs that run a worker: ``settings.cpus``, or every CPU this process may run on."""
    return settings.cpus or tuple(sorted(_available(available_cpus)))


def assign_workloads(settings: Settings,
                     available_cpus: Collection[int] | None = None) -> dict[int, WorkloadSettings]:
    """The workload each worker CPU runs, by CPU number (ascending)."""
    workers = worker_cpus(settings, available_cpus)
    try:
        owner = _assignment(settings.workloads, workers)
    except _Invalid as bad:
        raise ConfigError(settings.source, bad.key, bad.problem) from None
    return {cpu: settings.workloads[index] for cpu, index in owner.items()}


def _available(available_cpus: Collection[int] | None) -> frozenset[int]:
    return frozenset(os.sched_getaffinity(0) if available_cpus is None else available_cpus)


def _with_value(data: dict, path: str, value: Any) -> dict:
    """Set ``path`` in the TOML-shaped ``data`` (in place); a bare ``workload`` means every workload."""
    *tables, last = path.split(".")
    targets = [data]
    for segment in tables:
        match = re.fullmatch(r"([a-z_]+)(?:\[([0-9]+)\])?", segment)
        name, index = (match[1], match[2]) if match else (segment, None)
        children = []
        for table in targets:
            child = table.get(name)
            if isinstance(child, list) and index is None:
                children.extend(child)
            elif isinstance(child, list) and int(index) < len(child):
                children.append(child[int(index)])
            elif isinstance(child, dict) and index is None:
                children.append(child)
            else:
                raise _Invalid(path, "no such setting")
        targets = children
    for table in targets:
        if last not in table:
            raise _Invalid(path, "no such setting")
        table[last] = value
    return data


def _build(data: Mapping, available: frozenset[int]) -> Settings:
    """Load ``data`` key by key, then check the rules between keys.  Raises _Invalid."""
    settings = _SETTINGS.load(dict(data), "")
    for cpu in settings.cpus:
        if cpu not in available:
            raise _Invalid("cpus", f"CPU {cpu} is not available to this process "
                                   f"(it may run on {_cpu_list(available)})")
    workers = worker_cpus(settings, available)
    _check_policy(settings)
    _check_pcp(settings.pcp, settings.kernel.era)
    _check_workloads(settings, workers)
    _check_sweep(settings, available)
    _check_experiment(settings)
    return settings


# ---------------------------------------------------------------------------
# Rules between keys.  Each raises _Invalid at the key a user would change.

def _check_policy(settings: Settings) -> None:
    record_bytes = settings.arena.record_bytes
    if record_bytes == STRUCT_PAGE_BYTES:
        return
    why = (f"runs on today's {STRUCT_PAGE_BYTES}-byte struct page (compound_head in every tail page), "
           f"but arena.record_bytes is {record_bytes}; use a memdesc policy (\"memdesc-pcpdesc\" or "
           f"\"memdesc\") or record_bytes = {STRUCT_PAGE_BYTES}")
    # experiments run legacy and compound on 64-byte pages whatever record_bytes says
    if settings.policy.name in STRUCT_PAGE_POLICIES:
        raise _Invalid("policy.name", f'"{settings.policy.name}" {why}')


def _check_pcp(pcp: PcpSettings, era: str) -> None:
    if pcp.high and era == "6.7":
        raise _Invalid("pcp.high", "era 6.7 auto-tunes high between pcp.high_min and pcp.high_max; "
                                   "set those instead, or pick an earlier kernel.era")
    for key in ("high_min", "high_max"):
        if getattr(pcp, key) and era != "6.7":
            raise _Invalid(f"pcp.{key}", f'exists from era 6.7 (kernel.era is "{era}"); set pcp.high instead')
    if pcp.high_fraction and era in ("4.18", "5.13"):
        raise _Invalid("pcp.high_fraction", "vm.percpu_pagelist_high_fraction exists from era 5.14 "
                                            f'(kernel.era is "{era}")')
    if pcp.high_fraction and (pcp.high or pcp.high_min or pcp.high_max):
        raise _Invalid("pcp.high_fraction", "sizes high as managed pages / fraction (zone_highsize); "
                                            "leave pcp.high, high_min and high_max at 0 with it")
    if pcp.high_min and pcp.high_max and pcp.high_max < pcp.high_min:
        raise _Invalid("pcp.high_max", f"must be >= pcp.high_min ({pcp.high_min}), got {pcp.high_max}")
    for key in ("high", "high_min"):
        value = getattr(pcp, key)
        if pcp.batch and value and value < pcp.batch:
            raise _Invalid(f"pcp.{key}", f"must be >= pcp.batch ({pcp.batch}): refills and drains "
                                         f"move batch pages at a time, got {value}")


def _check_workloads(settings: Settings, workers: tuple[int, ...]) -> None:
    pages = settings.arena.pages
    for index, workload in enumerate(settings.workloads):
        where = f"workload[{index}]"
        for earlier in range(index):
            if settings.workloads[earlier].name == workload.name:
                raise _Invalid(f"{where}.name", f'"{workload.name}" is already the name of workload[{earlier}]')
        for memdesc_type in workload.type_orders:
            if memdesc_type not in workload.types:
                raise _Invalid(f"{where}.type_orders.{memdesc_type}",
                               f'"{memdesc_type}" is not among {where}.types')
        for memdesc_type in workload.cross_cpu.types:
            if memdesc_type not in workload.types:
                raise _Invalid(f"{where}.cross_cpu.types", f'"{memdesc_type}" is not among {where}.types')
        for memdesc_type in workload.types:
            for order in workload.orders_for(memdesc_type):
                if 1 << order > pages:
                    raise _Invalid(f"{where}.orders", f"order {order} blocks are {1 << order} pages, more "
                                                      f"than the arena's {pages} (arena.memory)")
        if workload.working_set > pages:
            raise _Invalid(f"{where}.working_set", f"{workload.working_set} pages is more than the "
                                                   f"arena's {pages} (arena.memory)")
        for cpu in workload.cross_cpu.targets:
            if cpu not in workers:
                raise _Invalid(f"{where}.cross_cpu.targets",
                               f"CPU {cpu} is not a worker (workers: {_cpu_list(workers)})")
    for cpu, index in _assignment(settings.workloads, workers).items():
        cross = settings.workloads[index].cross_cpu
        if cross.fraction and cross.targets and not cross.targets_for(cpu, workers):
            raise _Invalid(f"workload[{index}].cross_cpu.targets",
                           f"CPU {cpu} runs this workload and would hand frees only to itself")


def _assignment(workloads: Sequence[WorkloadSettings], workers: tuple[int, ...]) -> dict[int, int]:
    """Worker CPU -> index of the workload it runs; the workload with cpus = [] takes the rest."""
    owner: dict[int, int] = {}
    rest = None
    for index, workload in enumerate(workloads):
        where = f"workload[{index}].cpus"
        if not workload.cpus:
            if rest is not None:
                raise _Invalid(where, "only one workload may leave cpus empty (it runs on every worker "
                                      f"the others do not name); workload[{rest}] already does")
            rest = index
        for cpu in workload.cpus:
            if cpu not in workers:
                raise _Invalid(where, f"CPU {cpu} is not a worker (workers: {_cpu_list(workers)})")
            if cpu in owner:
                raise _Invalid(where, f"CPU {cpu} already runs workload[{owner[cpu]}]; "
                                      "a worker runs one workload")
            owner[cpu] = index
    idle = [cpu for cpu in workers if cpu not in owner]
    if rest is not None and not idle:
        raise _Invalid(f"workload[{rest}].cpus", "is empty, so it runs on the workers no other workload "
                                                 "names, but the others name them all")
    if rest is None and idle:
        raise _Invalid("workload", f"worker CPU {idle[0]} runs no workload; add it to a workload's cpus "
                                   "or leave one workload's cpus empty")
    owner.update(dict.fromkeys(idle, rest))
    return dict(sorted(owner.items()))


def _check_sweep(settings: Settings, available: frozenset[int]) -> None:
    sweep = settings.sweep
    if not sweep.key:
        if sweep.values:
            raise _Invalid("sweep.values", "given without a sweep.key to vary")
        return
    if not sweep.values:
        raise _Invalid("sweep.values", f"sweep.key is {_show(sweep.key)} but there are no values")
    if not settings.duration:
        raise _Invalid("duration", "a sweep runs once per value, so it needs a duration > 0")
    base = dataclasses.replace(settings, sweep=SweepSettings())
    for i, value in enumerate(sweep.values):
        try:
            data = _with_value(settings_to_dict(base), sweep.key, value)
        except _Invalid:        # SettingPath checked the name: the workload index is out of range
            raise _Invalid("sweep.key", f"{_show(sweep.key)} names a workload that does not exist "
                                        f"(the config has {len(settings.workloads)})") from None
        try:
            _build(data, available)
        except _Invalid as bad:
            raise _Invalid(f"sweep.values[{i}]", f"{sweep.key} = {_show(value)} fails: "
                                                 f"{bad.key}: {bad.problem}") from None


def _check_experiment(settings: Settings) -> None:
    warmup, duration = settings.experiment.warmup, settings.duration
    if duration and warmup >= duration:
        raise _Invalid("experiment.warmup", f"must be shorter than duration ({duration:g} s), got {warmup:g}")


# ---------------------------------------------------------------------------
# `pcpd check CONFIG`

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="TOML config file to validate")


def command(args: argparse.Namespace) -> int:
    """Validate ``args.config`` and print one summary line; errors raise ConfigError."""
    settings = load_settings(args.config)
    workers, workloads = len(worker_cpus(settings)), len(settings.workloads)
    print(f"{args.config}: ok (policy {settings.policy.name}, era {settings.kernel.era}, "
          f"{workers} worker{'s' * (workers != 1)}, {workloads} workload{'s' * (workloads != 1)})")
    return 0
