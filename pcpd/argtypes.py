"""argparse ``type=`` callables shared by the subcommands.

Each one turns a command-line word into a value or raises
``argparse.ArgumentTypeError`` with the message the user sees (argparse
prints it on one line and exits 2).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable

from pcpd.config.settings import ADDRESS_PATTERN
from pcpd.kernel import ERAS
from pcpd.policies import POLICIES


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    return _number(text, float, "seconds", "seconds", 0, inclusive=True)


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    return _number(text, float, "seconds", "seconds", 0, inclusive=False)


def count(text: str) -> int:
    """A whole number >= 0."""
    return _number(text, int, "a whole number", "a number", 0, inclusive=True)


def positive_count(text: str) -> int:
    """A whole number >= 1."""
    return _number(text, int, "a whole number", "a number", 1, inclusive=True)


def power_of_two(text: str) -> int:
    """A whole number >= 1 that is a power of two (perf's buffer pages)."""
    n = positive_count(text)
    if n & (n - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two, got {text!r}")
    return n


def listen_address(text: str) -> str:
    """--listen: HOST:PORT, as pcpd.exporter.parse_address takes it."""
    if not text or not re.fullmatch(ADDRESS_PATTERN, text):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (like 127.0.0.1:9464), got {text!r}")
    return text


def policy_list(text: str) -> tuple[str, ...]:
    """Comma-separated policy names, each known and listed once."""
    return _name_list(text, POLICIES, "policy", "policies")


def era_list(text: str) -> tuple[str, ...]:
    """Comma-separated kernel eras, each known and listed once."""
    return _name_list(text, ERAS, "kernel era", "kernel eras")


def _name_list(text: str, known: Iterable[str], noun: str, plural: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected {plural} from {', '.join(known)}, got {text!r}")
    for i, name in enumerate(names):
        if name not in known:
            raise argparse.ArgumentTypeError(f"unknown {noun} {name!r}; choose from {', '.join(known)}")
        if name in names[:i]:
            raise argparse.ArgumentTypeError(f"{noun} {name!r} is listed twice")
    return names


def _number(text: str, kind: type, what: str, noun: str, bound: float, inclusive: bool):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < bound or (value == bound and not inclusive):
        relation = ">=" if inclusive else ">"
        raise argparse.ArgumentTypeError(f"expected {noun} {relation} {bound}, got {text!r}")
    return value
