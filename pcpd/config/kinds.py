"""Kinds: the rule one config key's value follows.

Every setting is declared once, as a dataclass field made by ``setting()``: its
TOML key, its *kind* (``Integer``, ``Choice``, ``Table``, ...), its default and a
one-line doc.  A kind loads a TOML value into the settings value (raising
``Invalid`` with a one-line problem), dumps it back to a JSON/TOML value,
describes itself for messages and translates itself into JSON Schema, so the
validator and ``pcpd config-schema`` read one declaration and cannot drift apart.

Nothing here knows which settings exist: that is ``pcpd.config.settings``.

Imports: the standard library only.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

__all__ = [
    "Invalid", "Kind", "FrozenMap", "show",
    "Integer", "Real", "Flag", "Choice", "Text", "ByteSize", "Scalar", "SettingPath",
    "Items", "Keyed", "Table", "Tables",
    "setting", "setting_fields", "numeric_paths", "with_value",
    "SIZE_PATTERN", "SIZE_UNITS",
]

SIZE_PATTERN = r"([0-9]+) ?(KiB|MiB|GiB|TiB)"
SIZE_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
# The TOML spec's integers are 64-bit; tomllib reads longer ones, which Python cannot print past
# 4300 digits (json.dumps, f-strings in workers): kinds without a maximum stop here.
LARGEST_INTEGER = 2**63 - 1
SHOWN_BITS = 128                # larger integers are named by size: messages stay short


class Invalid(Exception):
    """A problem at a key path; the public entry points add the file name (``ConfigError``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key, self.problem = key, problem


class Kind(Protocol):
    """What every kind offers; ``numeric`` kinds are the ones a sweep may vary."""

    @property
    def numeric(self) -> bool: ...

    def describe(self) -> str: ...

    def load(self, value: Any, where: str) -> Any: ...

    def dump(self, value: Any) -> Any: ...

    def schema(self) -> dict[str, Any]: ...


class FrozenMap(Mapping):
    """An immutable mapping that hashes and pickles: the weight tables of frozen settings.

    Iteration follows insertion order; the loader inserts keys in their declared
    order (anon before file, order 0 before order 9), whatever order a file used,
    so seeded random draws over the weights do not depend on how a file was written.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | Iterable = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def show(value: Any) -> str:
    """A value as a config file spells it, short enough for a one-line message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > SHOWN_BITS:
        return f"a {value.bit_length()}-bit integer"      # a file may hold 4,000 digits
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)      # quoted, newlines escaped
        return text if len(text) <= 40 else text[:36] + '..."'
    return _show_structure(value)


def _show_structure(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return f"a {type(value).__name__} value"              # TOML dates and times


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:       # an integer beyond any float: tomllib reads 0xfff... of any length
        return False


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
        if type(value) is int and self.maximum is None and value > LARGEST_INTEGER:
            raise Invalid(where, f"expected {self.describe()} that fits in 64 bits, as TOML's integers do, "
                                 f"got {show(value)}")
        if type(value) is int and self._allows(value):
            return value
        raise Invalid(where, f"expected {self.describe()}, got {show(value)}")

    def _allows(self, value: int) -> bool:
        if self.skip_to is not None and self.minimum < value < self.skip_to:
            return False
        return self.minimum <= value and (self.maximum is None or value <= self.maximum)

    def dump(self, value: int) -> int:
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.skip_to is not None:
            schema["anyOf"] = [{"const": self.minimum}, {"minimum": self.skip_to}]
        return schema


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
        if type(value) in (int, float) and _finite(value) and self._allows(value):
            return float(value)
        raise Invalid(where, f"expected {self.describe()}, got {show(value)}")

    def _allows(self, value: float) -> bool:
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def dump(self, value: float) -> float:
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            schema["exclusiveMinimum" if self.above else "minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


@dataclass(frozen=True)
class Flag:
    """true or false."""

    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "true or false"

    def load(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        raise Invalid(where, f"expected {self.describe()}, got {show(value)}")

    def dump(self, value: bool) -> bool:
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings or integers; ``aliases`` are (old value, value)
    pairs an older config may still hold (loaded as the value, never dumped)."""

    values: tuple
    aliases: tuple = ()

    @property
    def numeric(self) -> bool:
        return all(type(v) is int for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(map(show, self.values))

    def load(self, value: Any, where: str) -> Any:
        if any(type(value) is type(v) and value == v for v in self.values):
            return value
        for was, now in self.aliases:
            if type(value) is type(was) and value == was:
                return now
        hint = ""
        if isinstance(value, str):
            hint = _suggest(value, [v for v in self.values if isinstance(v, str)])
        elif type(value) is float and repr(value) in self.values:
            hint = f' (write it as a string: "{value!r}")'         # era = 6.7
        raise Invalid(where, f"expected {self.describe()}, got {show(value)}{hint}")

    def dump(self, value: Any) -> Any:
        return value

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.values) + [was for was, _ in self.aliases]}


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
        raise Invalid(where, f"expected {self.what}, got {show(value)}")

    def dump(self, value: str) -> str:
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^(?:{self.pattern})$"}


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
            raise Invalid(where, f"expected {self.describe()}, got {show(value)}")
        if self.minimum <= size <= self.maximum and size % self.multiple == 0:
            return size
        raise Invalid(where, f"expected a multiple of {_format_bytes(self.multiple)} ({self.why}) "
                             f"from {_format_bytes(self.minimum)} to {_format_bytes(self.maximum)}, "
                             f"got {show(value)}")

    def dump(self, value: int) -> int:
        return value

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [
            {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "multipleOf": self.multiple},
            {"type": "string", "pattern": f"^{SIZE_PATTERN}$"},
        ]}


@dataclass(frozen=True)
class Scalar:
    """A number or a string: a value of whatever setting a sweep varies."""

    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "a number or a size string"

    def load(self, value: Any, where: str) -> int | float | str:
        if type(value) in (int, str) or (type(value) is float and math.isfinite(value)):
            return value
        raise Invalid(where, f"expected {self.describe()}, got {show(value)}")

    def dump(self, value: Any) -> Any:
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": ["number", "string"]}


@dataclass(frozen=True)
class SettingPath:
    """"" or the dotted key of a numeric setting, one of ``paths()``.

    ``paths`` is called, not stored, because the settings it lists are declared
    after the key that uses this kind.  ``INDEXED.KEY`` means that key of every
    table of the ``INDEXED`` array; ``INDEXED[N].KEY`` that of one.
    """

    what: str
    paths: Callable[[], Sequence[str]]
    indexed: str                               # the array of tables whose entries a path may index

    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return self.what

    def load(self, value: Any, where: str) -> str:
        if isinstance(value, str) and (value == "" or self._unindexed(value) in self.paths()):
            return value
        hint = _suggest(value, self.paths()) if isinstance(value, str) else ""
        raise Invalid(where, f"expected {self.describe()}, got {show(value)}{hint}")

    def _unindexed(self, path: str) -> str:
        """workload[1].burst -> workload.burst."""
        return re.sub(rf"^{re.escape(self.indexed)}\[[0-9]+\]\.", f"{self.indexed}.", path)

    def dump(self, value: str) -> str:
        return value

    def schema(self) -> dict[str, Any]:
        prefix = f"{self.indexed}."
        keys = "|".join(path.removeprefix(prefix).replace(".", r"\.")
                        for path in self.paths() if path.startswith(prefix))
        return {"type": "string", "anyOf": [
            {"enum": ["", *self.paths()]},
            {"pattern": rf"^{re.escape(self.indexed)}\[[0-9]+\]\.(?:{keys})$"},
        ]}


@dataclass(frozen=True)
class Items:
    """An array of values of one kind, loaded as a tuple."""

    item: Kind
    what: str                                  # plural noun: "CPU numbers"
    unique: bool = False
    nonempty: bool = False
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return f"{'a non-empty' if self.nonempty else 'an'} array of {self.what}"

    def load(self, value: Any, where: str) -> tuple:
        if not isinstance(value, list) or (self.nonempty and not value):
            raise Invalid(where, f"expected {self.describe()}, got {show(value)}")
        items = tuple(self.item.load(v, f"{where}[{i}]") for i, v in enumerate(value))
        if self.unique:
            for i, v in enumerate(items):
                if v in items[:i]:
                    raise Invalid(where, f"lists {show(v)} twice")
        return items

    def dump(self, value: tuple) -> list:
        return [self.item.dump(v) for v in value]

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.schema()}
        if self.unique:
            schema["uniqueItems"] = True
        if self.nonempty:
            schema["minItems"] = 1
        return schema


@dataclass(frozen=True)
class Keyed:
    """A table whose keys come from a fixed set, each mapped to a value of one kind.

    ``int_keys``: TOML keys are strings ("0", "9"); the loaded keys are ints.
    """

    keys: tuple[str, ...]
    what: str                                  # "weights for orders 0..10"
    value: Kind
    int_keys: bool = False
    nonempty: bool = True
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return self.what

    def load(self, value: Any, where: str) -> FrozenMap:
        if not isinstance(value, dict):
            raise Invalid(where, f"expected a table of {self.what}, got {show(value)}")
        for key in value:
            if key not in self.keys:
                hint = "" if self.int_keys else _suggest(key, self.keys)
                raise Invalid(where, f"expected {self.what}, got key {show(key)}{hint}")
        if self.nonempty and not value:
            raise Invalid(where, f"expected {self.what}, got an empty table")
        return FrozenMap((int(key) if self.int_keys else key, self.value.load(value[key], _join(where, key)))
                         for key in self.keys if key in value)

    def dump(self, value: Mapping) -> dict:
        return {str(key): self.value.dump(v) for key, v in value.items()}

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "propertyNames": {"enum": list(self.keys)},
                                  "additionalProperties": self.value.schema()}
        if self.nonempty:
            schema["minProperties"] = 1
        return schema


@dataclass(frozen=True)
class Table:
    """A TOML table holding the settings of one dataclass (see ``setting_fields``)."""

    cls: type
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "a table"

    def load(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid(where, f"expected a table, got {show(value)}")
        fields = dict(setting_fields(self.cls))
        loaded = {}
        for key, item in value.items():
            if key not in fields:
                raise Invalid(_join(where, key), f"unknown key{_suggest(key, list(fields))}; "
                                                 f"allowed keys: {', '.join(fields)}")
            field = fields[key]
            loaded[field.name] = field.metadata["kind"].load(item, _join(where, key))
        return self.cls(**loaded)

    def dump(self, value: Any) -> dict:
        return {key: field.metadata["kind"].dump(getattr(value, field.name))
                for key, field in setting_fields(self.cls)}

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "properties": {
            key: {"description": field.metadata["doc"],
                  "default": field.metadata["kind"].dump(field.default),
                  **field.metadata["kind"].schema()}
            for key, field in setting_fields(self.cls)}}


@dataclass(frozen=True)
class Tables:
    """A TOML array of tables (``[[workload]]``), loaded as a tuple of dataclasses."""

    cls: type
    numeric: ClassVar[bool] = False

    def describe(self) -> str:
        return "a non-empty array of tables"

    def load(self, value: Any, where: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise Invalid(where, f"expected one or more [[{where}]] tables, got {show(value)}")
        return tuple(Table(self.cls).load(v, f"{where}[{i}]") for i, v in enumerate(value))

    def dump(self, value: tuple) -> list:
        return [Table(self.cls).dump(v) for v in value]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": Table(self.cls).schema()}


def setting(kind: Kind, default: Any, doc: str, *, key: str | None = None, sweepable: bool = True) -> Any:
    """Declare one config key: its kind, default and doc, read by the validator and the JSON Schema.

    ``key`` is the TOML key when it differs from the field name; ``sweepable=False``
    keeps a table's keys out of ``numeric_paths()``.
    """
    return dataclasses.field(default=default, metadata={
        "kind": kind, "doc": doc, "key": key, "sweepable": sweepable})


def setting_fields(cls: type) -> Iterator[tuple[str, dataclasses.Field]]:
    """(TOML key, field) for each config key of a settings class, in declaration order."""
    for field in dataclasses.fields(cls):
        if "kind" in field.metadata:
            yield field.metadata["key"] or field.name, field


def numeric_paths(cls: type, prefix: str = "") -> Iterator[str]:
    """The dotted keys of the numeric settings of ``cls``, its tables' included, unless not sweepable."""
    for key, field in setting_fields(cls):
        kind = field.metadata["kind"]
        if not field.metadata["sweepable"]:
            continue
        if isinstance(kind, (Table, Tables)):
            yield from numeric_paths(kind.cls, f"{prefix}{key}.")
        elif kind.numeric:
            yield prefix + key


def with_value(data: dict, path: str, value: Any) -> dict:
    """Set ``path`` in the TOML-shaped ``data`` (in place), as ``SettingPath`` reads it.

    A segment naming an array of tables without an index (``workload.burst``)
    reaches every table in it.  Raises Invalid when ``path`` leads nowhere.
    """
    *tables, last = path.split(".")
    targets: list = [data]
    for segment in tables:
        match = re.fullmatch(r"([a-z_]+)(?:\[([0-9]+)\])?", segment)
        name, index = (match[1], match[2]) if match else (segment, None)
        targets = [child for table in targets for child in _children(table, name, index, path)]
    for table in targets:
        if not isinstance(table, dict) or last not in table:
            raise Invalid(path, "no such setting")
        table[last] = value
    return data


def _children(table: Any, name: str, index: str | None, path: str) -> list:
    """The tables ``name`` or ``name[index]`` reaches inside ``table``."""
    child = table.get(name) if isinstance(table, dict) else None
    if isinstance(child, list) and index is None:
        return list(child)
    if isinstance(child, list) and index is not None and int(index) < len(child):
        return [child[int(index)]]
    if isinstance(child, dict) and index is None:
        return [child]
    raise Invalid(path, "no such setting")
