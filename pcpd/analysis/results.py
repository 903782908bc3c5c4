"""Result files: what one experiment measured, and the figures each run reports.

A results file is one JSON document::

    {"format": "pcpd-result", "version": 1,
     "metadata": {...},          # machine, Python, pcpd, the config as run, how it ran
     "runs": [RunRecord, ...]}   # one per (sweep point, repetition, policy)

``metadata`` always holds the keys in ``REQUIRED_METADATA``: ``kernel``
(uname), ``cpu_model``, ``cpu_count``, ``python``, ``pcpd_version``,
``config_hash`` (``settings_hash`` of the settings as run), ``seed`` (the base
seed: repetition r runs seed + r under every policy) and ``config`` (those
settings as a TOML-shaped dict).  ``MACHINE_METADATA`` names the keys that
identify the machine.

Each run carries its ``figures`` (``FIGURES``, computed by ``figures()`` from
the counters of the measured window) and the raw ``counters`` they came from:
counters as the window's difference, gauges (``pcp_pages``, ...) and maxima
(``lock_wait_max_ns``, ...) as read at the window's end; maxima cover the
worker's life, not only the window.

Files are written through a temporary file and ``os.replace`` (or ``os.link``
when an existing file must not be overwritten), so a reader never sees half
a file.

Imports: the standard library, numpy, ``pcpd`` (its version), ``pcpd.model.stats``, ``pcpd.errors``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from pcpd import __version__
from pcpd.errors import InputError, UsageError
from pcpd.model import stats as S

FORMAT = "pcpd-result"

# Format history (bump RESULT_VERSION for any change a version-1 reader would
# misread, and add the loader of the new version to _LOADERS):
#   1  pcpd 0.1: metadata (REQUIRED_METADATA), runs with policy, point,
#      repetition, seed, seconds, ops, exit_code, restarts, load_average,
#      figures, counters.
RESULT_VERSION = 1

REQUIRED_METADATA = ("kernel", "cpu_model", "cpu_count", "python", "pcpd_version",
                     "config_hash", "seed", "config")
MACHINE_METADATA = ("cpu_model", "cpu_count", "kernel", "python")
RUN_KEYS = ("policy", "point", "repetition", "seed", "seconds", "ops", "exit_code", "restarts",
            "load_average", "figures", "counters")

# The memdesc policy keeps one PCP per memdesc type; the others one per CPU
# (split only by migratetype and order, as today), so they have no per-type
# lists to hold or strand pages on.
TYPED_PCP_POLICIES = ("memdesc",)


class RunRecord(TypedDict):
    """One measured run, as stored in ``runs``."""

    policy: str
    point: int | float | str | None   # the sweep value, or None without a sweep
    repetition: int            # 0-based
    seed: int
    seconds: float             # the measured window
    ops: int                   # operations in the window
    exit_code: int             # 0: the final conservation audit passed and every PCP drained
    restarts: int              # workers replaced during the run
    load_average: float        # the machine's 1-minute load average as the run ended
    figures: dict[str, float | None]
    counters: dict[str, int]


@dataclass(frozen=True)
class Figure:
    """One figure a run reports: its key in ``figures``, and how to read it."""

    key: str
    label: str
    unit: str                  # "ops/s", "ratio", "seconds", "pages", or a per-op count
    better: str                # "higher", "lower", or "" where neither is better
    doc: str


FIGURES: tuple[Figure, ...] = (
    Figure("throughput_ops_per_second", "throughput", "ops/s", "higher",
           "allocations and frees per second in the measured window, all workers together"),
    Figure("pcp_hit_ratio", "PCP hit rate", "ratio", "higher",
           "allocations served from a PCP list that was not empty"),
    Figure("zone_lock_acquisitions_per_1k_ops", "zone->lock per 1k ops", "per 1k ops", "lower",
           "zone->lock acquisitions (refills, drains, buddy allocations) per 1,000 operations"),
    Figure("zone_lock_contended_ratio", "zone->lock contended", "ratio", "lower",
           "share of zone->lock acquisitions that had to wait"),
    Figure("zone_lock_wait_p50_seconds", "zone->lock wait p50", "seconds", "lower",
           "median wait of a contended acquisition, interpolated linearly within its "
           "histogram bucket (4x wide); none without contention"),
    Figure("zone_lock_wait_p99_seconds", "zone->lock wait p99", "seconds", "lower",
           "99th percentile wait of a contended acquisition, interpolated the same way"),
    Figure("struct_page_lines_per_op", "struct page lines/op", "lines/op", "lower",
           "struct page cachelines written or read per operation, every cause summed"),
    Figure("descriptor_lines_per_op", "descriptor lines/op", "lines/op", "lower",
           "memdesc descriptor cachelines written or read per operation (memdesc policies)"),
    Figure("slab_ops_per_op", "slab ops/op", "ops/op", "lower",
           "descriptor slab allocations and frees per operation (memdesc policies)"),
    Figure("pcp_pages", "pages on PCPs", "pages", "lower",
           "pages on every PCP list at the window's end: memory kept out of the buddy"),
    Figure("stranded_pages", "stranded pages", "pages", "lower",
           "pages on the PCP of a memdesc type on a CPU that allocated no memory of that type in "
           "the window, at the window's end, summed over CPUs and types: only a drain or a decay "
           "gives them back; only for policies with one PCP per type (memdesc)"),
)

TYPE_FIGURES: tuple[Figure, ...] = tuple(
    fig for t in S.MEMDESC_TYPES for fig in (
        Figure(f"pcp_pages_{t}", f"{t}: pages on PCPs", "pages", "lower",
               f"pages on the {t} PCP lists at the window's end (memdesc)"),
        Figure(f"stranded_pages_{t}", f"{t}: stranded", "pages", "lower",
               f"{t} pages stranded (see stranded pages)"),
        Figure(f"refills_beside_stranded_{t}", f"{t}: other refills there", "per 1k ops", "lower",
               f"refills from the buddy for other memdesc types, per 1,000 operations, on the CPUs "
               f"where {t} pages were stranded: zone->lock trips while {t} pages sat unused on the "
               "same CPU"),
    ))

FIGURE_KEYS = tuple(fig.key for fig in FIGURES + TYPE_FIGURES)
FIGURE_BY_KEY = {fig.key: fig for fig in FIGURES + TYPE_FIGURES}


# ---------------------------------------------------------------------------
# Figures from a measured window.

def window_counters(start: S.Snapshot, end: S.Snapshot) -> dict[str, int]:
    """Every counter over the window: differences, but gauges and maxima as at ``end``."""
    return {name: end.total(name) if name in S.GAUGES or name in S.MAXIMA
            else end.total(name) - start.total(name)
            for name in S.NAMES}


def figures(start: S.Snapshot, end: S.Snapshot, seconds: float, policy: str) -> dict[str, float | None]:
    """The figures (``FIGURES`` and ``TYPE_FIGURES``) of the window from ``start`` to ``end``.

    A ratio over nothing (no allocations, no acquisitions) is 0; a wait
    quantile without contended acquisitions, and the per-type figures of a
    policy without per-type PCPs, are None.
    """
    c = window_counters(start, end)
    ops = end.ops() - start.ops()
    allocs = end.allocs() - start.allocs()
    acquisitions = c["lock_acquisitions"]
    buckets = [c[f"lock_wait_bucket_{i}"] for i in range(len(S.LOCK_WAIT_BUCKETS) + 1)]
    struct_lines = sum(c[f"lines_written_{cause}"] + c[f"lines_read_{cause}"] for cause in S.CAUSES)
    out: dict[str, float | None] = {
        "throughput_ops_per_second": ops / seconds if seconds > 0 else 0.0,
        "pcp_hit_ratio": _ratio(c["alloc_hit"], allocs),
        "zone_lock_acquisitions_per_1k_ops": _ratio(1000 * acquisitions, ops),
        "zone_lock_contended_ratio": _ratio(c["lock_contended"], acquisitions),
        "zone_lock_wait_p50_seconds": wait_quantile(buckets, 0.5),
        "zone_lock_wait_p99_seconds": wait_quantile(buckets, 0.99),
        "struct_page_lines_per_op": _ratio(struct_lines, ops),
        "descriptor_lines_per_op": _ratio(c["desc_lines_written"] + c["desc_lines_read"], ops),
        "slab_ops_per_op": _ratio(c["slab_alloc"] + c["slab_free"], ops),
        "pcp_pages": float(c["pcp_pages"]),
    }
    typed = policy in TYPED_PCP_POLICIES
    stranded = stranded_by_type(start, end) if typed else {}
    out["stranded_pages"] = float(sum(pages for pages, _ in stranded.values())) if typed else None
    for t in S.MEMDESC_TYPES:
        pages, refills = stranded.get(t, (None, None))
        out[f"pcp_pages_{t}"] = float(c[f"pcp_pages_type_{t}"]) if typed else None
        out[f"stranded_pages_{t}"] = None if pages is None else float(pages)
        out[f"refills_beside_stranded_{t}"] = None if refills is None else _ratio(1000 * refills, ops)
    return out


def stranded_by_type(start: S.Snapshot, end: S.Snapshot) -> dict[str, tuple[int, int]]:
    """Per memdesc type t: (pages stranded, other types' refills on the CPUs stranding them).

    Stranded: on the t PCP, at the window's end, of a CPU that allocated no
    type-t memory in the window.  The refills are the window's refills of
    every other type on those CPUs.  A worker replaced during the window
    restarts its block from zero; where a counter went backwards, its window
    count is the new worker's alone.
    """
    window = np.where(end.per_cpu >= start.per_cpu, end.per_cpu - start.per_cpu, end.per_cpu)
    misses = window[:, S.ALLOC_MISS_TYPE:S.ALLOC_MISS_TYPE + len(S.MEMDESC_TYPES)]
    out = {}
    for t, name in enumerate(S.MEMDESC_TYPES):
        grid = S.alloc_index(t, 0)
        held = end.per_cpu[:, S.PCP_PAGES_TYPE + t]
        stranding = (window[:, grid:grid + len(S.ORDERS)].sum(axis=1) == 0) & (held > 0)
        refills = misses.sum(axis=1) - misses[:, t]
        out[name] = (int(held[stranding].sum()), int(refills[stranding].sum()))
    return out


def wait_quantile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile of the lock-wait histogram, in seconds; None if it is empty.

    Bucket i counts waits up to ``LOCK_WAIT_BUCKETS[i]`` ns (above the previous
    bound); the last bucket has no upper bound.  Within a bucket the waits are
    taken as evenly spread (as Prometheus' histogram_quantile does); in the
    last bucket the quantile is its lower bound.
    """
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = S.LOCK_WAIT_BUCKETS[i - 1] if i else 0
            if i == len(S.LOCK_WAIT_BUCKETS):
                return lower / 1e9
            upper = S.LOCK_WAIT_BUCKETS[i]
            return (lower + (upper - lower) * (rank - seen) / count) / 1e9
        seen += count
    return S.LOCK_WAIT_BUCKETS[-1] / 1e9          # unreachable: q <= 1


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


# ---------------------------------------------------------------------------
# The result set.

@dataclass
class Results:
    """An experiment's metadata and runs, in the order they ran."""

    metadata: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)

    def points(self) -> list[Any]:
        """Sweep values in first-run order; [None] without a sweep."""
        return list(dict.fromkeys(run["point"] for run in self.runs))

    def policies(self) -> list[str]:
        return list(dict.fromkeys(run["policy"] for run in self.runs))

    def select(self, point: Any, policy: str) -> list[RunRecord]:
        return [run for run in self.runs if run["point"] == point and run["policy"] == policy]

    def values(self, point: Any, policy: str, key: str) -> list[float]:
        """One figure of every repetition at (point, policy); runs without it left out."""
        return [run["figures"][key] for run in self.select(point, policy)
                if run["figures"].get(key) is not None]


# ---------------------------------------------------------------------------
# Machine facts.

def environment(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Facts about this machine and interpreter that results depend on."""
    uname = platform.uname()
    return {
        "kernel": f"{uname.system} {uname.release}",
        "cpu_model": cpu_model(cpuinfo),
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pcpd_version": __version__,
    }


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The first ``model name`` of a /proc/cpuinfo; ``platform.processor()`` elsewhere."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------
# Files.

def dumps(results: Results) -> str:
    """The results file's text."""
    document = {"format": FORMAT, "version": RESULT_VERSION,
                "metadata": results.metadata, "runs": results.runs}
    return json.dumps(document, indent=1, allow_nan=False) + "\n"


def dump(results: Results, path: str, *, replace: bool = False) -> None:
    """Write ``results`` to ``path``; an existing file is kept unless ``replace``."""
    write_atomic(path, dumps(results).encode(), replace=replace)


def load(path: str) -> Results:
    """Read a results file of any supported version.  Raises InputError naming ``path``."""
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a JSON document ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f'{path}: not a pcpd results file (no "format": "{FORMAT}")')
    version = document.get("version")
    loader = _LOADERS.get(version) if type(version) is int else None
    if loader is None:
        newer = " (written by a newer pcpd?)" if type(version) is int and version > RESULT_VERSION else ""
        supported = ", ".join(map(str, _LOADERS))
        raise InputError(f"{path}: results format version {json.dumps(version)} is not supported"
                         f"{newer}; this pcpd reads version {supported}")
    return loader(document, path)


def _load_v1(document: dict, path: str) -> Results:
    metadata, runs = document.get("metadata"), document.get("runs")
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: metadata: expected an object")
    for key in REQUIRED_METADATA:
        if key not in metadata:
            raise InputError(f"{path}: metadata: missing key {key!r}")
    if not isinstance(runs, list):
        raise InputError(f"{path}: runs: expected an array")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise InputError(f"{path}: runs[{i}]: expected an object")
        for key in RUN_KEYS:
            if key not in run:
                raise InputError(f"{path}: runs[{i}]: missing key {key!r}")
        if not isinstance(run["figures"], dict) or not isinstance(run["counters"], dict):
            raise InputError(f"{path}: runs[{i}]: figures and counters must be objects")
    return Results(metadata, runs)


_LOADERS = {1: _load_v1}


def csv_header(results: Results) -> list[str]:
    sweep_key = results.metadata.get("sweep_key") or "point"
    return ["policy", sweep_key, "repetition", "seed", "seconds", "ops", "exit_code", "restarts",
            "load_average", *FIGURE_KEYS]


def csv_rows(results: Results) -> Iterable[list[Any]]:
    """One row per run: the run's fields, then every figure ("" where it has none)."""
    for run in results.runs:
        figs = run["figures"]
        yield [run["policy"], "" if run["point"] is None else run["point"], run["repetition"],
               run["seed"], run["seconds"], run["ops"], run["exit_code"], run["restarts"],
               run["load_average"], *("" if figs.get(key) is None else figs[key] for key in FIGURE_KEYS)]


def dump_csv(results: Results, path: str, *, replace: bool = False) -> None:
    """Write one CSV row per run (``csv_rows``); floats keep their full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header(results))
    writer.writerows(csv_rows(results))
    write_atomic(path, buffer.getvalue().encode(), replace=replace)


def write_atomic(path: str, data: bytes, *, replace: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    With ``replace``, ``os.replace`` puts it in place; without, ``os.link``
    does, so an existing file is never overwritten (UsageError).
    """
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UsageError(f"{path} exists; pass --replace to overwrite it") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

