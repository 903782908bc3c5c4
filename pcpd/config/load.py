"""Loading configs: TOML files and dicts into validated ``Settings``, and back; ``pcpd check``.

A config is data only: nothing in it is executed or imported.  Every problem is
a ``ConfigError`` whose message is one line, ``path: key.path: problem``,
including files that are not files (directories, FIFOs), too large, not UTF-8,
or TOML that the parser cannot take (integers beyond Python's digit limit,
nesting deeper than its recursion limit, dotted keys long enough to make it
quadratic): the daemon's SIGHUP reload relies on that to keep the running config.

Imports: the standard library, ``pcpd.errors`` and ``pcpd.config`` (kinds, settings, rules).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import stat
import sys
import tomllib
from collections.abc import Collection, Mapping
from hashlib import sha256
from typing import Any

from pcpd.config.kinds import Invalid, with_value
from pcpd.config.rules import available_cpu_set, build_settings, worker_cpus
from pcpd.config.settings import SETTINGS_TABLE, Settings, SweepSettings
from pcpd.errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES", "load_settings", "parse_settings", "settings_from_dict", "settings_to_dict",
    "settings_hash", "replace_path", "sweep_points", "add_arguments", "command",
]

# Presets are a few KiB; the cap keeps a wrong path (a disk image, /dev/zero) from filling memory.
MAX_CONFIG_BYTES = 1 << 20

# tomllib spends time and memory quadratic in a dotted key's length (an 8,000-name key in a 16 KB
# file: 2.6 s, 260 MiB), so longer keys are refused before parsing; pcpd's deepest key has 4 names.
MAX_KEY_NAMES = 32
_KEY_NAME = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')"""
# The lookbehind tries a match only where a key can start, so the search stays linear: not inside a
# run of letters, after a dot (inside a shorter key) or at an escaped quote (inside a string).
DEEP_KEY = re.compile(rf"(?<![A-Za-z0-9_.\\-]){_KEY_NAME}(?:[ \t]*+\.[ \t]*+{_KEY_NAME}){{{MAX_KEY_NAMES},}}")

FILE_TYPES = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def load_settings(path: str, *, available_cpus: Collection[int] | None = None) -> Settings:
    """Read and validate the config file at ``path``.

    ``available_cpus`` defaults to ``os.sched_getaffinity(0)``.
    Raises ConfigError (one line, naming ``path``) for any problem.
    """
    data = _read_config(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, "", f"not UTF-8 text (bad byte at offset {err.start})") from None
    return parse_settings(text, path, available_cpus=available_cpus)


def _read_config(path: str) -> bytes:
    """The bytes of the regular file at ``path``, at most MAX_CONFIG_BYTES of them."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one forever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(path, "", f"cannot read: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = FILE_TYPES.get(stat.S_IFMT(mode), "not a file")
            raise ConfigError(path, "", f"cannot read: {what}, not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(path, "", f"cannot read: {err.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(path, "", f"cannot read: larger than {MAX_CONFIG_BYTES >> 20} MiB, "
                                    "the most a config file may hold")
    return data


def parse_settings(text: str, source: str, *, available_cpus: Collection[int] | None = None) -> Settings:
    """Validate TOML ``text``; ``source`` names it in errors and in ``Settings.source``."""
    if deep := DEEP_KEY.search(text):
        raise ConfigError(source, "", f"a dotted key of more than {MAX_KEY_NAMES} names "
                                      f"(at line {_line_of(text, deep.start())})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", str(err)) from None
    except ValueError as err:           # tomllib lets int()'s digit limit through
        raise ConfigError(source, "", _too_many_digits(text, err)) from None
    except RecursionError:              # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(source, "", "arrays or inline tables nested too deeply") from None
    return settings_from_dict(data, source, available_cpus=available_cpus)


def _too_many_digits(text: str, err: ValueError) -> str:
    """The digit-limit error as one line, with the line of the first such integer when one is found."""
    limit = sys.get_int_max_str_digits()
    if "integer string conversion" not in str(err):
        return f"cannot parse: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    where = ""
    # the lookbehind starts a match only where a number starts: long runs below the limit stay linear
    if long := re.search(rf"(?<![0-9_])[0-9](?:_?[0-9]){{{limit},}}", text):
        where = f" (at line {_line_of(text, long.start())})"
    return f"an integer with more than {limit} digits{where}"


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def settings_from_dict(data: Mapping, source: str, *,
                       available_cpus: Collection[int] | None = None) -> Settings:
    """Validate a TOML-shaped dict, such as ``settings_to_dict()`` or a results file's copy, gives."""
    try:
        settings = build_settings(data, available_cpu_set(available_cpus))
    except Invalid as bad:
        raise ConfigError(source, bad.key, bad.problem) from None
    return dataclasses.replace(settings, source=source)


def settings_to_dict(settings: Settings) -> dict:
    """The settings as a TOML-shaped, JSON-able dict that ``settings_from_dict`` takes back.

    Keys are TOML keys (``memory``, ``workload``); ``source`` is left out.
    """
    return SETTINGS_TABLE.dump(settings)


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
        data = with_value(settings_to_dict(settings), path, value)
        changed = build_settings(data, available_cpu_set(available_cpus))
    except Invalid as bad:
        raise ConfigError(settings.source, bad.key, bad.problem) from None
    return dataclasses.replace(changed, source=settings.source)


def sweep_points(settings: Settings, *,
                 available_cpus: Collection[int] | None = None) -> tuple[tuple[Any, Settings], ...]:
    """(value, settings of that run) for each sweep value; the runs' own sweep is empty."""
    base = dataclasses.replace(settings, sweep=SweepSettings())
    return tuple((value, replace_path(base, settings.sweep.key, value, available_cpus=available_cpus))
                 for value in settings.sweep.values)


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
