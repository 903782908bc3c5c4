"""JSON Schema of pcpd config files, translated from pcpd.config.settings's declarations.

Each setting's kind (``pcpd.config.settings.Integer``, ``Choice``, ``Table``, ...) maps to
one JSON Schema fragment, so editors and CI linters check the same per-key rules
as ``pcpd check``.  Rules between keys (CPUs that exist, knobs of one kernel
era, which worker runs which workload) are not expressed here: a file the
schema accepts can still fail ``pcpd check``.

Imports: pcpd.config.settings.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pcpd.config.settings import (
    SIZE_PATTERN,
    ByteSize,
    Choice,
    Flag,
    Integer,
    Items,
    Keyed,
    Real,
    Scalar,
    SettingPath,
    Settings,
    Table,
    Tables,
    Text,
    setting_fields,
    sweepable_paths,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict:
    """The JSON Schema (draft 2020-12) that every valid config file, read as TOML, satisfies."""
    return {
        "$schema": DRAFT,
        "title": "pcpd config",
        "description": "A pcpd config file (TOML). Rules between keys are checked by `pcpd check`.",
        **_kind_schema(Table(Settings)),
    }


def _kind_schema(kind: Any) -> dict:
    match kind:
        case Integer(minimum=low, maximum=high, skip_to=skip_to):
            schema: dict[str, Any] = {"type": "integer", "minimum": low}
            if high is not None:
                schema["maximum"] = high
            if skip_to is not None:
                schema["anyOf"] = [{"const": low}, {"minimum": skip_to}]
            return schema
        case Real(minimum=low, maximum=high, above=above):
            schema = {"type": "number"}
            if low is not None:
                schema["exclusiveMinimum" if above else "minimum"] = low
            if high is not None:
                schema["maximum"] = high
            return schema
        case Flag():
            return {"type": "boolean"}
        case Choice(values=values):
            return {"enum": list(values)}
        case Text(pattern=pattern):
            return {"type": "string", "pattern": f"^(?:{pattern})$"}
        case ByteSize(minimum=low, maximum=high, multiple=multiple):
            return {"anyOf": [
                {"type": "integer", "minimum": low, "maximum": high, "multipleOf": multiple},
                {"type": "string", "pattern": f"^{SIZE_PATTERN}$"},
            ]}
        case Scalar():
            return {"type": ["number", "string"]}
        case SettingPath():
            return {"type": "string", "anyOf": [
                {"enum": ["", *sweepable_paths()]},
                {"pattern": r"^workload\[[0-9]+\]\.(?:%s)$" % "|".join(
                    path.removeprefix("workload.").replace(".", r"\.")
                    for path in sweepable_paths() if path.startswith("workload."))},
            ]}
        case Items(item=item, unique=unique, nonempty=nonempty):
            schema = {"type": "array", "items": _kind_schema(item)}
            if unique:
                schema["uniqueItems"] = True
            if nonempty:
                schema["minItems"] = 1
            return schema
        case Keyed(keys=keys, value=value, nonempty=nonempty):
            schema = {"type": "object", "propertyNames": {"enum": list(keys)},
                      "additionalProperties": _kind_schema(value)}
            if nonempty:
                schema["minProperties"] = 1
            return schema
        case Table(cls=cls):
            return {"type": "object", "additionalProperties": False, "properties": {
                key: {"description": field.metadata["doc"],
                      "default": field.metadata["kind"].dump(field.default),
                      **_kind_schema(field.metadata["kind"])}
                for key, field in setting_fields(cls)}}
        case Tables(cls=cls):
            return {"type": "array", "minItems": 1, "items": _kind_schema(Table(cls))}
    raise TypeError(f"no JSON Schema for {kind!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`pcpd config-schema` takes no arguments."""


def command(args: argparse.Namespace) -> int:
    """Print the schema as indented JSON."""
    print(json.dumps(config_schema(), indent=2))
    return 0
