"""Result files: what one experiment measured, and the figures each run reports.

A results file is one JSON document::

    {"format": "pcpd-result", "version": 2,
     "metadata": {...},          # machine, Python, pcpd, the config as run, how it ran
     "runs": [RunRecord, ...]}   # one per (sweep point, repetition, policy)

``metadata`` always holds the keys in ``REQUIRED_METADATA``: ``kernel``
(uname), ``cpu_model``, ``cpu_count``, ``python``, ``pcpd_version``,
``config_hash`` (``settings_hash`` of the settings as run), ``seed`` (the base
seed: repetition r runs seed + r under every policy) and ``config`` (those
settings as a TOML-shaped dict).  ``MACHINE_METADATA`` names the keys that
identify the machine.  Runs may come from several machines (a sweep on a Dask
cluster): each run names its ``host``, ``hosts`` holds each host's
``environment()``, and a machine key the hosts differ on holds the list of
their values (``machine_metadata``, ``mixed_machine``).  An experiment's
file is rewritten as each run ends: until every run of its plan
(``runs_planned``) is in, ``incomplete`` is true.

Each run carries its ``figures`` (``FIGURES``, computed by ``figures()`` from
the counters of the measured window with ``pcpd.model.stats.derive``) and the raw ``counters`` they came from:
counters as the window's difference, gauges (``pcp_pages``, ...) and maxima
(``lock_wait_max_ns``, ...) as read at the window's end; maxima cover the
worker's life, not only the window.

Files are written through a temporary file and ``os.replace`` (or ``os.link``
when an existing file must not be overwritten), so a reader never sees half
a file.

Imports: the standard library, ``pcpd`` (its version), ``pcpd.model.stats``, ``pcpd.errors``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from pcpd import __version__, core
from pcpd.errors import InputError, UsageError
from pcpd.inputs import display_name, read_capped
from pcpd.model import stats
from pcpd.policies import policy_names

FORMAT = "pcpd-result"

# Format history (bump RESULT_VERSION for any change a version-1 reader would
# misread, and add the loader of the new version to _LOADERS):
#   1  pcpd 0.1: metadata (REQUIRED_METADATA), runs with policy, point,
#      repetition, seed, seconds, ops, exit_code, restarts, load_average,
#      figures, counters.
#   2  pcpd 0.1 with distributed sweeps: each run gains ``host`` (the hostname
#      of the machine that ran it) and metadata gains ``hosts`` (host ->
#      ``environment()`` of that host).  The MACHINE_METADATA keys hold the
#      value every host shares, or, where the hosts differ, the sorted list of
#      their values: a version-1 reader would take such a file for one
#      machine's (and its report code would fail on a list of CPU counts).
#      Optional keys added since, which a reader without them reads right by
#      ignoring them: each run's ``era`` (run_era), and ``eras``,
#      ``runs_planned`` and ``incomplete`` in metadata (an era axis folds the
#      era into each run's ``point``, so every reader keeps eras apart), and
#      ``core`` in metadata and each host's environment (pcpd.core: "compiled"
#      or "interpreted"; a file without it compares as a different machine).
RESULT_VERSION = 2

REQUIRED_METADATA = ("kernel", "cpu_model", "cpu_count", "python", "pcpd_version",
                     "config_hash", "seed", "config")
MACHINE_METADATA = ("cpu_model", "cpu_count", "kernel", "python", "core")
RUN_KEYS = ("policy", "point", "repetition", "seed", "seconds", "ops", "exit_code", "restarts",
            "load_average", "figures", "counters")
V2_RUN_KEYS = (*RUN_KEYS, "host")
# What a reader relies on in each run (grouping by policy and point hashes them); a file
# that breaks these is refused with one line rather than failing deep in a comparison.
RUN_FIELD_TYPES: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("policy", str, "a policy name"),
    ("point", (str, int, float, type(None)), "a sweep value or null"),
    ("repetition", int, "an integer"),
    ("seed", int, "an integer"),
    ("ops", int, "an integer"),
    ("exit_code", int, "an integer"),
    ("restarts", int, "an integer"),
    ("seconds", (int, float), "a number"),
    ("host", (str, type(None)), "a host name or null"),
    ("era", str, "a kernel era"),
)

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
    host: str | None           # hostname of the machine that ran it; None in a version-1 file
    # the kernel era it ran (kernel.era, or its point's in an era sweep); older files lack it:
    # their runs ran the config's kernel.era (run_era)
    era: NotRequired[str]
    # each CPU's PCP high, free_count, alloc_factor over the run (pcpd.model.tuning.TuningSeries;
    # docs/metrics.md); optional: older files and runs that did not sample lack it
    tuning: NotRequired[dict[str, Any]]


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
    Figure("zone_lock_hold_mean_seconds", "zone->lock hold", "seconds", "lower",
           "mean time zone->lock was held per acquisition (a refill, a drain, a buddy allocation or "
           "free); in the kernel a batch refill or drain holds it a few microseconds, about as long "
           "as a batch of PCP hits takes, and `python bench/run.py` gives the model's ratio of the "
           "two (zone_path_to_hit_ratio)"),
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
    fig for t in stats.MEMDESC_TYPES for fig in (
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

def window_counters(start: stats.Snapshot, end: stats.Snapshot) -> dict[str, int]:
    """The ``counters`` of a run record: increments over the window, gauges and maxima as at ``end``."""
    return end.since(start)


def figures(start: stats.Snapshot, end: stats.Snapshot, seconds: float, policy: str) -> dict[str, float | None]:
    """The figures (``FIGURES`` and ``TYPE_FIGURES``) of the window from ``start`` to ``end``.

    Each is ``pcpd.model.stats.derive``'s figure of the window under this
    file's key.  A ratio over nothing (no allocations, no acquisitions) is 0,
    as version 1 files have always stored it; a wait quantile without
    contended acquisitions, and the per-type figures of a policy without
    per-type PCPs, are None.
    """
    c = window_counters(start, end)
    fig = stats.derive(c, seconds, empty=0.0)
    out: dict[str, float | None] = {
        "throughput_ops_per_second": fig.ops_per_second,
        "pcp_hit_ratio": fig.pcp_hit_rate,
        "zone_lock_acquisitions_per_1k_ops": fig.lock_acquisitions_per_1k_ops,
        "zone_lock_contended_ratio": fig.lock_contended_ratio,
        "zone_lock_wait_p50_seconds": fig.lock_wait_p50_seconds,
        "zone_lock_wait_p99_seconds": fig.lock_wait_p99_seconds,
        "zone_lock_hold_mean_seconds": fig.lock_hold_mean_seconds,
        "struct_page_lines_per_op": fig.struct_page_lines_per_op,
        "descriptor_lines_per_op": fig.descriptor_lines_per_op,
        "slab_ops_per_op": fig.slab_ops_per_op,
        "pcp_pages": float(c["pcp_pages"]),
    }
    # only policies with one PCP per memdesc type have per-type lists to hold or strand pages on
    typed = policy in policy_names(typed_pcps=True)
    stranded = stats.stranded_by_type(start, end) if typed else {}
    out["stranded_pages"] = float(sum(pages for pages, _ in stranded.values())) if typed else None
    for t in stats.MEMDESC_TYPES:
        pages, refills = stranded.get(t, (None, None))
        out[f"pcp_pages_{t}"] = float(c[f"pcp_pages_type_{t}"]) if typed else None
        out[f"stranded_pages_{t}"] = None if pages is None else float(pages)
        out[f"refills_beside_stranded_{t}"] = (None if refills is None
                                               else stats.ratio(1000 * refills, fig.ops, 0.0))
    return out


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
        return [value for run in self.select(point, policy)
                if (value := run["figures"].get(key)) is not None]


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
        "core": "compiled" if core.running_compiled() else "interpreted",   # 2-4x apart in real time
    }


def host_name() -> str:
    """This machine's name as a run records it (``host``, and the keys of ``hosts``)."""
    return socket.gethostname()


def machine_metadata(hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The metadata's machine keys for runs made on ``hosts`` (host -> ``environment()``).

    A key every host agrees on holds that value; a key they differ on holds
    the sorted list of their values, so that the file never passes for one
    machine's (``mixed_machine``).
    """
    out: dict[str, Any] = {}
    for key in ("kernel", "cpu_model", "cpu_count", "python", "pcpd_version"):    # environment()'s order
        distinct = [json.loads(v) for v in dict.fromkeys(json.dumps(env.get(key)) for env in hosts.values())]
        values = sorted(distinct, key=lambda v: (type(v).__name__, v))   # 2 before 16; one None at most
        out[key] = values[0] if len(values) == 1 else values
    return out


def mixed_machine(metadata: Mapping[str, Any]) -> list[str]:
    """``key: value on host, ...; value on host`` for each machine key the runs' hosts differ on."""
    hosts = metadata.get("hosts") or {}
    out = []
    for key in MACHINE_METADATA:
        if not isinstance(metadata.get(key), list):
            continue
        by_value: dict[str, list[str]] = {}
        for host, env in sorted(hosts.items()):
            by_value.setdefault(json.dumps(env.get(key)), []).append(host)
        out.append(f"{key}: " + "; ".join(f"{value} on {', '.join(names)}" for value, names in by_value.items()))
    return out


def host_cpu_count(metadata: Mapping[str, Any], host: str | None) -> int | None:
    """The CPU count of the machine that ran a run on ``host``; None where it is not known."""
    env = (metadata.get("hosts") or {}).get(host)
    count = env.get("cpu_count") if env else metadata.get("cpu_count")
    return count if isinstance(count, int) else None


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
    """Read a results file of any supported version.  Raises InputError naming ``path``.

    The file is read as ``pcpd.inputs`` reads files: a regular file or ``-``
    (standard input), at most ``MAX_FILE_BYTES`` of it.
    """
    data = read_capped(path)
    path = display_name(path)
    try:
        document = json.loads(data)
    except ValueError as err:       # bad JSON or UTF-8, or an integer past Python's digit limit
        raise InputError(f"{path}: not a JSON document ({err})") from None
    except RecursionError:
        raise InputError(f"{path}: not a JSON document (nested too deeply)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f'{path}: not a pcpd results file (no "format": "{FORMAT}")')
    version = document.get("version")
    loader = _LOADERS.get(version) if type(version) is int else None
    if loader is None:
        newer = " (written by a newer pcpd?)" if type(version) is int and version > RESULT_VERSION else ""
        supported = ", ".join(map(str, _LOADERS))
        raise InputError(f"{path}: results format version {json.dumps(version)} is not supported"
                         f"{newer}; this pcpd reads version{'s' if len(_LOADERS) > 1 else ''} {supported}")
    return loader(document, path)


def _load_v1(document: dict, path: str) -> Results:
    """A version-1 file as version 2 reads it: every run's host unknown, no ``hosts``."""
    results = _checked(document, path, RUN_KEYS)
    for run in results.runs:
        run["host"] = None
    results.metadata["hosts"] = {}
    return results


def _load_v2(document: dict, path: str) -> Results:
    results = _checked(document, path, V2_RUN_KEYS)
    hosts = results.metadata.get("hosts")
    if not isinstance(hosts, dict) or not all(isinstance(env, dict) for env in hosts.values()):
        raise InputError(f"{path}: metadata: hosts: expected an object of objects")
    return results


def _checked(document: dict, path: str, run_keys: tuple[str, ...]) -> Results:
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
        for key in run_keys:
            if key not in run:
                raise InputError(f"{path}: runs[{i}]: missing key {key!r}")
        if not isinstance(run["figures"], dict) or not isinstance(run["counters"], dict):
            raise InputError(f"{path}: runs[{i}]: figures and counters must be objects")
        for key, kinds, expected in RUN_FIELD_TYPES:
            if key in run and (not isinstance(run[key], kinds) or isinstance(run[key], bool)):
                raise InputError(f"{path}: runs[{i}].{key}: expected {expected}")
        problem = tuning_problem(run["tuning"]) if "tuning" in run else None
        if problem:
            raise InputError(f"{path}: runs[{i}].tuning: {problem}")
    return Results(metadata, runs)


def tuning_problem(tuning: object) -> str | None:
    """What makes a run's ``tuning`` series unreadable; None when it is well formed:
    ``seconds`` and ``cpus`` arrays, and per ``stats.TUNING_KEYS`` one array per CPU
    holding one integer per entry of ``seconds``."""
    if not isinstance(tuning, dict):
        return "expected an object"
    seconds, cpus = tuning.get("seconds"), tuning.get("cpus")
    if not _numbers(seconds, (int, float)):
        return "seconds: expected an array of numbers"
    if not _numbers(cpus, int):
        return "cpus: expected an array of CPU numbers"
    assert isinstance(seconds, list) and isinstance(cpus, list)       # for mypy: _numbers() said so
    for key in stats.TUNING_KEYS:
        if not _per_cpu_series(tuning.get(key), len(cpus), len(seconds)):
            return f"{key}: expected, per CPU in cpus, an array of {len(seconds)} integers"
    return None


def _numbers(values: object, kinds: type | tuple[type, ...]) -> bool:
    """An array of numbers of ``kinds`` (JSON's true and false are no numbers)."""
    return isinstance(values, list) and all(isinstance(v, kinds) and not isinstance(v, bool) for v in values)


def _per_cpu_series(rows: object, cpus: int, samples: int) -> bool:
    """One array of ``samples`` integers for each of ``cpus`` CPUs."""
    return isinstance(rows, list) and len(rows) == cpus and all(_numbers(r, int) and len(r) == samples
                                                                for r in rows)


_LOADERS = {1: _load_v1, 2: _load_v2}


def csv_header(results: Results) -> list[str]:
    sweep_key = results.metadata.get("sweep_key") or "point"
    return ["policy", sweep_key, "repetition", "seed", "seconds", "ops", "exit_code", "restarts",
            "load_average", "host", "era", *FIGURE_KEYS]


def run_era(results: Results, run: RunRecord) -> str:
    """The kernel era ``run`` ran: its own ``era``, else (an older file) the config's."""
    return run.get("era") or str(results.metadata["config"].get("kernel", {}).get("era", ""))


def csv_rows(results: Results) -> Iterable[list[Any]]:
    """One row per run: the run's fields, then every figure ("" where it has none)."""
    for run in results.runs:
        figs = run["figures"]
        yield [run["policy"], "" if run["point"] is None else run["point"], run["repetition"],
               run["seed"], run["seconds"], run["ops"], run["exit_code"], run["restarts"],
               run["load_average"], run.get("host") or "", run_era(results, run),
               *("" if figs.get(key) is None else figs[key] for key in FIGURE_KEYS)]


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

