"""Per-CPU statistics: counter names, the slot layout, snapshots and the figures.

Each worker counts into an array of machine integers (``Counters.v``) on its
hot path and folds the whole array into its own block of the shared arena at most every
100 ms (``fold``).  Readers (daemon, exporter, experiments) take a
``Snapshot`` with ``read_snapshot`` without any lock: a block is written by
one process only, and every value is one aligned 8-byte word, so a reader sees
each counter whole (at worst one fold old).

Block layout, one per CPU slot (``NR_STATS`` int64 words, padded to 64 B):

    [0, NR_STATS)   the counters below, in declaration order

Counters are cumulative for the life of the worker slot.  When a worker is
replaced, the daemon adds the dead worker's last block into the ``retired``
block (slot ``ncpus``) before the new worker starts from zero, so summed
counters never go backwards.  Gauges (``GAUGES``) are not retired.

Every figure derived from the counters (hit rate, lines per operation, lock
traffic, ...) is defined once, in ``derive``; the status line, the exporter,
experiment results, replay and the benchmarks all call it.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pcpd.kernel import MEMDESC_TYPES, MIGRATETYPE_NAMES, PAGE_ORDERS

if TYPE_CHECKING:                     # arena imports this module for the block size
    from pcpd.model.arena import Arena

ORDERS = PAGE_ORDERS
MIGRATETYPES = MIGRATETYPE_NAMES        # pagetypeinfo's labels, for the exporter

# Causes of struct-page cacheline touches.
CAUSES = (
    "page_state",     # head page flags/refcount/private on alloc and free (post_alloc_hook)
    "list_link",      # PCP list links (page->pcp_list) of the page and its list neighbour
    "compound_prep",  # prep_compound_page(): head and every tail
    "tail_undo",      # __free_pages_prepare(): every tail, free_tail_page_prepare()
    "memdesc_set",    # the memdesc word of every page in the block
    "rmappable",      # folio_prep_large_rmappable() / folio_unqueue_deferred_split()
    "buddy",          # buddy free lists, merge (__free_one_page) and split (expand)
)
DRAIN_CAUSES = ("high", "free_high", "decay", "drain_all", "exit")
ALLOC_FAIL_CAUSES = ("no_memory", "watermark")
LOCK_WAIT_BUCKETS = tuple(2 ** e for e in range(10, 31, 2))  # ns: 1 us .. 1 s, upper bounds

# The counter families, one counter per cause or bucket (derive() sums them):
LINES_WRITTEN_COUNTERS = tuple(f"lines_written_{c}" for c in CAUSES)
LINES_READ_COUNTERS = tuple(f"lines_read_{c}" for c in CAUSES)
DRAIN_COUNTERS = tuple(f"drains_{c}" for c in DRAIN_CAUSES)
DRAIN_PAGE_COUNTERS = tuple(f"drain_pages_{c}" for c in DRAIN_CAUSES)
ALLOC_FAIL_COUNTERS = tuple(f"alloc_fail_{c}" for c in ALLOC_FAIL_CAUSES)
# waits up to each LOCK_WAIT_BUCKETS bound, then the waits beyond the last
LOCK_WAIT_BUCKET_COUNTERS = tuple(f"lock_wait_bucket_{i}" for i in range(len(LOCK_WAIT_BUCKETS) + 1))


def _names() -> list[str]:
    """Every counter's name, in slot order: the one-off counters, then the families."""
    return _SCALARS + _by_cause_names() + _by_type_names() + list(LOCK_WAIT_BUCKET_COUNTERS)


_SCALARS = [
    "alloc_hit", "alloc_refill", "alloc_buddy",
    "free_pcp", "free_buddy", "free_remote_out", "free_remote_in",
    "refills", "refill_pages",
    "pcp_pages", "pcp_high", "pcp_batch",          # gauges
    "pcp_free_count", "pcp_alloc_factor",          # gauges: 6.7+ auto-tuning state
    "held_pages", "inflight_pages",                # gauges
    "slab_alloc", "slab_free", "slab_shared",
    "desc_lines_written", "desc_lines_read", "data_lines_written",
    "lock_acquisitions", "lock_uncontended", "lock_contended",
    "lock_wait_ns", "lock_wait_max_ns", "lock_hold_ns", "lock_hold_max_ns",
    "lock_owner_switches", "lock_waiters_max",
    "drain_all_requests_seen", "pressure_waves", "heartbeat_ns",
]


def _by_cause_names() -> list[str]:
    """Cacheline touches, drains and allocation failures, one counter per cause."""
    return [*LINES_WRITTEN_COUNTERS, *LINES_READ_COUNTERS, *DRAIN_COUNTERS, *DRAIN_PAGE_COUNTERS,
            *ALLOC_FAIL_COUNTERS]


def _by_type_names() -> list[str]:
    """Refills, frees and PCP pages per memdesc type, then allocations per type and order."""
    return ([f"alloc_miss_type_{t}" for t in MEMDESC_TYPES]
            + [f"free_type_{t}" for t in MEMDESC_TYPES]
            + [f"pcp_pages_type_{t}" for t in MEMDESC_TYPES]     # gauges
            + [f"alloc_{t}_order_{o}" for t in MEMDESC_TYPES for o in ORDERS])


NAMES: tuple[str, ...] = tuple(_names())
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
NR_STATS = len(NAMES)
BLOCK_WORDS = (NR_STATS + 7) // 8 * 8            # one block is a whole number of cachelines
GAUGES = frozenset(
    ["pcp_pages", "pcp_high", "pcp_batch", "pcp_free_count", "pcp_alloc_factor",
     "held_pages", "inflight_pages", "heartbeat_ns"]
    + [f"pcp_pages_type_{t}" for t in MEMDESC_TYPES]
)
# A CPU's PCP auto-tuning state, one value per CPU however many PCPs it has
# (the memdesc policy keeps one per type): high and free_count add up (the
# CPU's capacity, its recent frees), alloc_factor is the largest (how far the
# most refill-starved PCP of the CPU scales its batch).  Before 6.7 the
# free_count slot is free_factor, a shift (nr_pcp_free(): batch << free_factor):
# the largest is published, as for alloc_factor (0 before 5.14, which has none).
# The daemon samples these over a run; the exporter shows them per CPU.
TUNING_GAUGES = ("pcp_high", "pcp_free_count", "pcp_alloc_factor")
TUNING_KEYS = tuple(name.removeprefix("pcp_") for name in TUNING_GAUGES)   # as a run record names them
MAXIMA = frozenset(["lock_wait_max_ns", "lock_hold_max_ns", "lock_waiters_max"])
# The counts every figure is built from, each a sum of these counters:
# allocations attempted (failures included: the type x order grid counts before the attempt),
ALLOC_COUNTERS = tuple(f"alloc_{t}_order_{o}" for t in MEMDESC_TYPES for o in ORDERS)
# allocations that got memory: a PCP hit, a PCP refill then the list, or the buddy directly,
SERVED_COUNTERS = ("alloc_hit", "alloc_refill", "alloc_buddy")
# frees, and operations: allocations attempted plus frees.
FREE_COUNTERS = tuple(f"free_type_{t}" for t in MEMDESC_TYPES)
OPS_COUNTERS = ALLOC_COUNTERS + FREE_COUNTERS

# Hot-path indices, imported by name where a lookup per operation would cost.
ALLOC_HIT = INDEX["alloc_hit"]
ALLOC_REFILL = INDEX["alloc_refill"]
ALLOC_BUDDY = INDEX["alloc_buddy"]
FREE_PCP = INDEX["free_pcp"]
FREE_BUDDY = INDEX["free_buddy"]
REFILLS = INDEX["refills"]
REFILL_PAGES = INDEX["refill_pages"]
SLAB_ALLOC = INDEX["slab_alloc"]
SLAB_FREE = INDEX["slab_free"]
SLAB_SHARED = INDEX["slab_shared"]
DESC_W = INDEX["desc_lines_written"]
DESC_R = INDEX["desc_lines_read"]
DATA_W = INDEX["data_lines_written"]
LINES_W = {c: INDEX[f"lines_written_{c}"] for c in CAUSES}
LINES_R = {c: INDEX[f"lines_read_{c}"] for c in CAUSES}
DRAINS = {c: INDEX[f"drains_{c}"] for c in DRAIN_CAUSES}
DRAIN_PAGES = {c: INDEX[f"drain_pages_{c}"] for c in DRAIN_CAUSES}
ALLOC_FAIL = {c: INDEX[f"alloc_fail_{c}"] for c in ALLOC_FAIL_CAUSES}
ALLOC_MISS_TYPE = INDEX["alloc_miss_type_anon"]
FREE_TYPE = INDEX["free_type_anon"]
PCP_PAGES_TYPE = INDEX["pcp_pages_type_anon"]
ALLOC_GRID = INDEX["alloc_anon_order_0"]          # + 11 * type + order
LOCK_WAIT_BUCKET = INDEX["lock_wait_bucket_0"]
# zone->lock's counters (pcpd.model.lock records them; pcpd.simulate.clock in virtual time)
LOCK_ACQUISITIONS = INDEX["lock_acquisitions"]
LOCK_UNCONTENDED = INDEX["lock_uncontended"]
LOCK_CONTENDED = INDEX["lock_contended"]
LOCK_WAIT_NS = INDEX["lock_wait_ns"]
LOCK_WAIT_MAX_NS = INDEX["lock_wait_max_ns"]
LOCK_HOLD_NS = INDEX["lock_hold_ns"]
LOCK_HOLD_MAX_NS = INDEX["lock_hold_max_ns"]
LOCK_OWNER_SWITCHES = INDEX["lock_owner_switches"]
LOCK_WAITERS_MAX = INDEX["lock_waiters_max"]


class Counters:
    """One process's local counters, cheap to bump on the hot path: machine integers,
    which the compiled core increments in place (a list's would be a new int
    object per increment)."""

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = array("q", bytes(8 * NR_STATS))

    def reset(self) -> None:
        """Every counter zero, in place: the CPU's zone, lock and policy hold this array."""
        self.v[:] = array("q", bytes(8 * NR_STATS))

    def fold(self, block: np.ndarray) -> None:
        """Publish every counter into this worker's shared block (one vector store)."""
        block[:NR_STATS] = self.v

    def __getitem__(self, name: str) -> int:
        return self.v[INDEX[name]]


@dataclass(frozen=True)
class Snapshot:
    """Counters of several CPU slots read at one moment; ``per_cpu[i]`` is slot i."""

    per_cpu: np.ndarray          # shape (ncpus, NR_STATS)
    retired: np.ndarray          # shape (NR_STATS,): totals of workers that were replaced

    def total(self, name: str) -> int:
        """A counter over every slot: live blocks plus the retired block; gauges only the
        live blocks (a dead worker holds nothing); maxima the largest of any block."""
        i = INDEX[name]
        if name in MAXIMA:
            return int(max(self.per_cpu[:, i].max(initial=0), self.retired[i]))
        live = int(self.per_cpu[:, i].sum())
        return live if name in GAUGES else live + int(self.retired[i])

    def cpu(self, slot: int, name: str) -> int:
        """One counter of one live slot."""
        return int(self.per_cpu[slot, INDEX[name]])

    def totals(self) -> dict[str, int]:
        """Every counter summed over the slots (see ``total``)."""
        return {n: self.total(n) for n in NAMES}

    def since(self, earlier: Snapshot) -> dict[str, int]:
        """Counter increments from ``earlier`` to this snapshot (gauges and maxima as they are now)."""
        return {n: (self.total(n) if n in GAUGES or n in MAXIMA else self.total(n) - earlier.total(n))
                for n in NAMES}

    def ops(self) -> int:
        """Operations (``OPS_COUNTERS``): allocations attempted plus frees."""
        return sum(self.total(n) for n in OPS_COUNTERS)


def zero_snapshot(like: Snapshot) -> Snapshot:
    """Every counter zero, in ``like``'s shape: the start of a window that is the whole run."""
    return Snapshot(np.zeros_like(like.per_cpu), np.zeros_like(like.retired))


def read_snapshot(arena: Arena) -> Snapshot:
    """Every worker's stats block and the retired block of ``arena``, as they are now.

    One vector copy of the whole stats region, so later folds do not change
    the snapshot; the blocks are not read under any lock (see the module
    docstring), so two workers' blocks may be up to one fold apart.
    """
    ncpus = arena.geometry.ncpus
    blocks = np.array(arena.stats[:, :NR_STATS], dtype=np.int64)
    return Snapshot(per_cpu=blocks[:ncpus], retired=blocks[ncpus])


# ---------------------------------------------------------------------------
# Figures: every number derived from the counters, defined once.

@dataclass(frozen=True)
class Figures:
    """What a set of counters (a run's totals, or a window's increments) amounts to.

    Built by ``derive``, the one place each figure is defined.  Counts are
    ints.  A ratio over nothing (no operations, no allocations, no
    acquisitions, no time) takes the ``empty`` value given to ``derive``; the
    wait quantiles are None whenever no acquisition waited.
    """

    ops: int                     # allocations attempted (failures included) + frees
    allocs: int                  # allocations attempted
    allocs_served: int           # allocations that got memory (SERVED_COUNTERS)
    frees: int
    alloc_failures: int          # shortages by cause: failed allocations and low-watermark events
    drains: int                  # PCP drains of every cause
    drain_pages: int
    struct_page_lines_written: int
    struct_page_lines_read: int
    struct_page_lines: int       # written + read, every cause
    lines_by_cause: dict[str, int]   # struct page lines written + read, per cause
    descriptor_lines: int        # memdesc descriptor lines written + read
    free_memory_lines: int       # list links kept inside free pages (written)
    cachelines: int              # struct page + descriptor + free memory lines
    slab_ops: int                # descriptor slab allocations + frees
    ops_per_second: float | None
    pcp_hit_rate: float | None
    lock_acquisitions_per_1k_ops: float | None
    lock_contended_ratio: float | None
    lock_wait_mean_seconds: float | None   # per contended acquisition
    # zone->lock held per acquisition (refill, drain, buddy alloc/free): set against a
    # PCP-hit operation's time it says how the model's lock hold compares to the kernel's
    lock_hold_mean_seconds: float | None
    lock_wait_p50_seconds: float | None
    lock_wait_p99_seconds: float | None
    struct_page_lines_per_op: float | None
    descriptor_lines_per_op: float | None
    cachelines_per_op: float | None
    slab_ops_per_op: float | None


def derive(counters: Mapping[str, int], seconds: float | None = None, *,
           empty: float | None = None) -> Figures:
    """The figures of ``counters`` (every name in ``NAMES``), over ``seconds`` of time.

    ``counters`` is ``Snapshot.totals()`` for a whole run or
    ``Snapshot.since(earlier)`` for a window.  ``empty`` is what a ratio over
    nothing becomes: None (undefined) by default; results files store 0.
    """
    c = counters
    ops = _sum(c, OPS_COUNTERS)
    served = _sum(c, SERVED_COUNTERS)
    acquisitions, contended = c["lock_acquisitions"], c["lock_contended"]
    by_cause = {cause: c[f"lines_written_{cause}"] + c[f"lines_read_{cause}"] for cause in CAUSES}
    written = _sum(c, LINES_WRITTEN_COUNTERS)
    read = _sum(c, LINES_READ_COUNTERS)
    struct_lines = sum(by_cause.values())
    desc_lines = c["desc_lines_written"] + c["desc_lines_read"]
    free_memory_lines = c["data_lines_written"]
    lines = written + read + desc_lines + free_memory_lines
    slab_ops = c["slab_alloc"] + c["slab_free"]
    buckets = [c[n] for n in LOCK_WAIT_BUCKET_COUNTERS]
    return Figures(
        ops=ops,
        allocs=_sum(c, ALLOC_COUNTERS),
        allocs_served=served,
        frees=_sum(c, FREE_COUNTERS),
        alloc_failures=_sum(c, ALLOC_FAIL_COUNTERS),
        drains=_sum(c, DRAIN_COUNTERS),
        drain_pages=_sum(c, DRAIN_PAGE_COUNTERS),
        struct_page_lines_written=written,
        struct_page_lines_read=read,
        struct_page_lines=struct_lines,
        lines_by_cause=by_cause,
        descriptor_lines=desc_lines,
        free_memory_lines=free_memory_lines,
        cachelines=lines,
        slab_ops=slab_ops,
        ops_per_second=_per_second(ops, seconds, empty),
        # PCP hit rate: hits over the allocations that got memory, not over those
        # attempted.  A failed allocation never reached a PCP list in a state that
        # could serve it, and the kernel's own allocation counters (pgalloc_*,
        # numa_hit) count only pages handed out, failures apart (allocstall,
        # compact_fail).  It is what produced every published table (README,
        # docs/experiments.md) and the replay tables, where no allocation failed.
        pcp_hit_rate=ratio(c["alloc_hit"], served, empty),
        # 1000 * n / ops, in this order, as results files have always computed it
        lock_acquisitions_per_1k_ops=ratio(1000 * acquisitions, ops, empty),
        lock_contended_ratio=ratio(contended, acquisitions, empty),
        lock_wait_mean_seconds=_mean_seconds(c["lock_wait_ns"], contended, empty),
        lock_hold_mean_seconds=_mean_seconds(c["lock_hold_ns"], acquisitions, empty),
        lock_wait_p50_seconds=wait_quantile(buckets, 0.5),
        lock_wait_p99_seconds=wait_quantile(buckets, 0.99),
        struct_page_lines_per_op=ratio(struct_lines, ops, empty),
        descriptor_lines_per_op=ratio(desc_lines, ops, empty),
        cachelines_per_op=ratio(lines, ops, empty),
        slab_ops_per_op=ratio(slab_ops, ops, empty),
    )


def _sum(counters: Mapping[str, int], names: Sequence[str]) -> int:
    return sum(counters[n] for n in names)


def _per_second(n: int, seconds: float | None, empty: float | None) -> float | None:
    """n over ``seconds`` of time; ``empty`` when no time (or none known) went by."""
    return n / seconds if seconds is not None and seconds > 0 else empty


def _mean_seconds(ns: int, n: int, empty: float | None) -> float | None:
    """``ns`` nanoseconds over ``n`` events, in seconds; ``empty`` when there were none."""
    return ns / n / 1e9 if n else empty


def ratio(part: float, whole: float, empty: float | None = None) -> float | None:
    """part / whole; ``empty`` when ``whole`` is 0 (a share of nothing is undefined)."""
    return part / whole if whole else empty


def wait_quantile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile of the lock-wait histogram, in seconds; None if it is empty.

    Bucket i counts waits up to ``LOCK_WAIT_BUCKETS[i]`` ns (above the previous
    bound); the last bucket has no upper bound.  Within a bucket the waits are
    taken as evenly spread (as Prometheus' histogram_quantile does); in the
    last bucket the quantile is its lower bound.  ``q`` is in [0, 1].
    """
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    i = seen = 0
    # the first non-empty bucket that reaches the rank: rank <= total, so one does
    while not buckets[i] or seen + buckets[i] < rank:
        seen += buckets[i]
        i += 1
    lower = LOCK_WAIT_BUCKETS[i - 1] if i else 0
    if i == len(LOCK_WAIT_BUCKETS):
        return lower / 1e9
    upper = LOCK_WAIT_BUCKETS[i]
    return (lower + (upper - lower) * (rank - seen) / buckets[i]) / 1e9


def stranded_by_type(start: Snapshot, end: Snapshot) -> dict[str, tuple[int, int]]:
    """Per memdesc type t: (pages stranded, other types' refills on the CPUs stranding them).

    Stranded: on the t PCP, at the window's end, of a CPU that allocated no
    type-t memory in the window.  The refills are the window's refills of
    every other type on those CPUs.  A worker replaced during the window
    restarts its block from zero; where a counter went backwards, its window
    count is the new worker's alone.
    """
    window = np.where(end.per_cpu >= start.per_cpu, end.per_cpu - start.per_cpu, end.per_cpu)
    misses = window[:, ALLOC_MISS_TYPE:ALLOC_MISS_TYPE + len(MEMDESC_TYPES)]
    out = {}
    for t, name in enumerate(MEMDESC_TYPES):
        grid = alloc_index(t, 0)
        held = end.per_cpu[:, PCP_PAGES_TYPE + t]
        stranding = (window[:, grid:grid + len(ORDERS)].sum(axis=1) == 0) & (held > 0)
        refills = misses.sum(axis=1) - misses[:, t]
        out[name] = (int(held[stranding].sum()), int(refills[stranding].sum()))
    return out


@dataclass(frozen=True)
class TypedHolding:
    """What per-type PCPs hold: pages on each memdesc type's PCPs, and of those the stranded."""

    by_type: dict[str, int]
    stranded: dict[str, int]        # held by a CPU that allocated none of the type (stranded_by_type)

    @property
    def stranded_pages(self) -> int:
        return sum(self.stranded.values())


def typed_holding(start: Snapshot | None, end: Snapshot) -> TypedHolding:
    """The per-type PCPs' pages at ``end``, stranded since ``start`` (None: the counters' start)."""
    stranded = stranded_by_type(zero_snapshot(end) if start is None else start, end)
    return TypedHolding({t: end.total(f"pcp_pages_type_{t}") for t in MEMDESC_TYPES},
                        {t: pages for t, (pages, _) in stranded.items()})


# ---------------------------------------------------------------------------
# Maintenance and hot-path helpers.

def retire(retired: np.ndarray, block: np.ndarray) -> None:
    """Fold a dead worker's block into the retired totals and zero the block."""
    for i, name in enumerate(NAMES):
        if name in MAXIMA:
            retired[i] = max(int(retired[i]), int(block[i]))
        elif name not in GAUGES:
            retired[i] += block[i]
    block[:] = 0


def alloc_index(t: int, order: int) -> int:
    """Counter index of allocations of memdesc type t and this order."""
    return ALLOC_GRID + 11 * t + order


def wait_bucket(ns: int) -> int:
    """Index of the lock-wait histogram bucket for a wait of ``ns`` nanoseconds."""
    for i, upper in enumerate(LOCK_WAIT_BUCKETS):
        if ns <= upper:
            return i
    return len(LOCK_WAIT_BUCKETS)
