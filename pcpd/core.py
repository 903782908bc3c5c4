"""The compiled core: the modules Cython compiles, and which build this process runs.

``setup.py`` compiles each module in ``COMPILED`` from its own ``.py`` file,
with the C types of the ``.pxd`` file beside it (a ``.pxd`` declares types
only: every rule stays in the ``.py``).  A process runs the interpreted
source of all of them instead when

- ``PCPD_PURE_PYTHON`` is set (the cacheline tracer needs it: its recording
  views are Python objects, and the compiled classes hold typed memoryviews);
- a module's compiled file is missing (no C compiler at install);
- a module's ``.py`` or ``.pxd``, or the ``.pxd`` of a module it cimports, is
  newer than its compiled file: an edit not rebuilt yet runs as edited.

It says why on stderr, once a process, unless asked by ``PCPD_PURE_PYTHON``.

All or none: a compiled module's typed attributes accept only the compiled
classes of the others.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

COMPILED = ("pcpd.model.lines", "pcpd.model.memmap", "pcpd.model.lock", "pcpd.model.zone", "pcpd.model.slab",
            "workers.pcp", "workers.policies.base", "workers.policies.struct_page", "workers.policies.memdesc",
            "workers.policies.tailmask", "workers.policies.compound_variants", "workers.policies.pcp_buddy",
            "workers.policies.pcp_buddy_spb")

PURE_ENV = "PCPD_PURE_PYTHON"
R = TypeVar("R")
# an install copies a module's .py and compiled file within moments of each
# other, in either order: only an edit this much later counts as one
_EDIT_SLACK_S = 2.0

_ROOT = Path(__file__).resolve().parent.parent


def _source(name: str) -> Path:
    return _ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _compiled_file(name: str) -> Path | None:
    source = _source(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def _build_inputs(name: str) -> list[Path]:
    """The files a module's build depends on, as Cython tracks them: its .py, its .pxd,
    and the .pxd of every core module that .pxd cimports, and theirs."""
    inputs, seen, todo = [_source(name)], set(), [name]
    while todo:
        module = todo.pop()
        pxd = _source(module).with_suffix(".pxd")
        if module in seen or not pxd.exists():
            continue
        seen.add(module)
        inputs.append(pxd)
        todo += [m for m in re.findall(r"^from ([\w.]+) cimport", pxd.read_text(), re.M) if m in COMPILED]
    return inputs


def why_interpreted() -> str | None:
    """Why this process runs the interpreted core, or None when it runs the compiled one."""
    if os.environ.get(PURE_ENV):
        return f"{PURE_ENV} is set"
    for name in COMPILED:
        built = _compiled_file(name)
        if built is None:
            return f"{name} is not compiled"
        # a build older than a .pxd it cimports holds that module's old class layout
        for edited in _build_inputs(name):
            if edited.stat().st_mtime > built.stat().st_mtime + _EDIT_SLACK_S:
                return f"{edited.relative_to(_ROOT)} is newer than the build of {name} (rebuild: pip install -e .)"
    return None


class _Interpreted(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` source of a compiled module ahead of its compiled file."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


def choose() -> None:
    """Pick the build for this process, before any core module is imported."""
    reason = why_interpreted()
    if reason is None or any(isinstance(f, _Interpreted) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Interpreted())
    if not os.environ.get(PURE_ENV):                # asked for: nothing to say
        print(f"pcpd: running the interpreted core, 2-4x slower: {reason}", file=sys.stderr)


def call_interpreted(fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` on the interpreted core: here when this process runs it, else in
    a fresh interpreter started for the call (the cacheline tracer needs it)."""
    if not running_compiled():
        return fn(*args)
    saved = os.environ.get(PURE_ENV)
    os.environ[PURE_ENV] = "1"              # the child's pcpd.core.choose() reads it
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(fn, args)
    finally:
        if saved is None:
            del os.environ[PURE_ENV]
        else:
            os.environ[PURE_ENV] = saved


def running_compiled() -> bool:
    """Whether this process runs the compiled core (``choose()`` made it so)."""
    return not any(isinstance(f, _Interpreted) for f in sys.meta_path)
