"""JSON Schema of pcpd config files, translated from the settings' declarations.

Each setting's kind (``pcpd.config.kinds.Integer``, ``Choice``, ``Table``, ...)
gives its own JSON Schema fragment (``schema()``), so editors and CI linters
check the same per-key rules as ``pcpd check``.  Rules between keys (CPUs that
exist, knobs of one kernel era, which worker runs which workload) are not
expressed here: a file the schema accepts can still fail ``pcpd check``.

Imports: ``pcpd.config.settings``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pcpd.config.settings import SETTINGS_TABLE

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every valid config file, read as TOML, satisfies."""
    return {
        "$schema": DRAFT,
        "title": "pcpd config",
        "description": "A pcpd config file (TOML). Rules between keys are checked by `pcpd check`.",
        **SETTINGS_TABLE.schema(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`pcpd config-schema` takes no arguments."""


def command(args: argparse.Namespace) -> int:
    """Print the schema as indented JSON."""
    print(json.dumps(config_schema(), indent=2))
    return 0
