"""Per-CPU statistics: counter names, the slot layout, and snapshots.

Each worker counts into a plain Python list (``Counters.v``) on its hot path
and folds the whole list into its own block of the shared arena at most every
100 ms (``fold``).  Readers (daemon, exporter, experiments) read the blocks
without any lock: a block is written by one process only, and every value is
one aligned 8-byte word, so a reader sees each counter whole (at worst one
fold old).

Block layout, one per CPU slot (``NR_STATS`` int64 words, padded to 64 B):

    [0, NR_STATS)   the counters below, in declaration order

Counters are cumulative for the life of the worker slot.  When a worker is
replaced, the daemon adds the dead worker's last block into the ``retired``
block (slot ``ncpus``) before the new worker starts from zero, so summed
counters never go backwards.  Gauges (``GAUGES``) are not retired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MEMDESC_TYPES = ("anon", "file", "slab", "pagetable", "netpool", "kernel")
ORDERS = range(11)
MIGRATETYPES = ("Unmovable", "Movable", "Reclaimable")

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


def _names() -> list[str]:
    names = [
        "alloc_hit", "alloc_refill", "alloc_buddy",
        "free_pcp", "free_buddy", "free_remote_out", "free_remote_in",
        "refills", "refill_pages",
        "pcp_pages", "pcp_high", "pcp_batch",          # gauges
        "held_pages", "inflight_pages",                # gauges
        "slab_alloc", "slab_free", "slab_shared",
        "desc_lines_written", "desc_lines_read", "data_lines_written",
        "lock_acquisitions", "lock_uncontended", "lock_contended",
        "lock_wait_ns", "lock_wait_max_ns", "lock_hold_ns", "lock_hold_max_ns",
        "lock_owner_switches", "lock_waiters_max",
        "drain_all_requests_seen", "pressure_waves", "heartbeat_ns",
    ]
    names += [f"lines_written_{c}" for c in CAUSES]
    names += [f"lines_read_{c}" for c in CAUSES]
    names += [f"drains_{c}" for c in DRAIN_CAUSES]
    names += [f"drain_pages_{c}" for c in DRAIN_CAUSES]
    names += [f"alloc_fail_{c}" for c in ALLOC_FAIL_CAUSES]
    names += [f"alloc_miss_type_{t}" for t in MEMDESC_TYPES]
    names += [f"free_type_{t}" for t in MEMDESC_TYPES]
    names += [f"pcp_pages_type_{t}" for t in MEMDESC_TYPES]   # gauges
    names += [f"alloc_{t}_order_{o}" for t in MEMDESC_TYPES for o in ORDERS]
    names += [f"lock_wait_bucket_{i}" for i in range(len(LOCK_WAIT_BUCKETS) + 1)]
    return names


NAMES: tuple[str, ...] = tuple(_names())
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
NR_STATS = len(NAMES)
BLOCK_WORDS = (NR_STATS + 7) // 8 * 8            # one block is a whole number of cachelines
GAUGES = frozenset(
    ["pcp_pages", "pcp_high", "pcp_batch", "held_pages", "inflight_pages", "heartbeat_ns"]
    + [f"pcp_pages_type_{t}" for t in MEMDESC_TYPES]
)
MAXIMA = frozenset(["lock_wait_max_ns", "lock_hold_max_ns", "lock_waiters_max"])
# operations: allocations attempted (failures included) plus frees
OPS_COUNTERS = tuple([f"alloc_{t}_order_{o}" for t in MEMDESC_TYPES for o in ORDERS]
                     + [f"free_type_{t}" for t in MEMDESC_TYPES])

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


class Counters:
    """One process's local counters: a plain list, cheap to bump on the hot path."""

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = [0] * NR_STATS

    def snapshot(self) -> list[int]:
        return list(self.v)

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
        i = INDEX[name]
        if name in MAXIMA:
            return int(max(self.per_cpu[:, i].max(initial=0), self.retired[i]))
        live = int(self.per_cpu[:, i].sum())
        return live if name in GAUGES else live + int(self.retired[i])

    def cpu(self, slot: int, name: str) -> int:
        return int(self.per_cpu[slot, INDEX[name]])

    def totals(self) -> dict[str, int]:
        return {n: self.total(n) for n in NAMES}

    def since(self, earlier: Snapshot) -> dict[str, int]:
        """Counter increments from ``earlier`` to this snapshot (gauges as they are now)."""
        return {n: (self.total(n) if n in GAUGES or n in MAXIMA else self.total(n) - earlier.total(n))
                for n in NAMES}

    def allocs(self) -> int:
        return sum(self.total(n) for n in ("alloc_hit", "alloc_refill", "alloc_buddy"))

    def frees(self) -> int:
        return sum(self.total(f"free_type_{t}") for t in MEMDESC_TYPES)

    def ops(self) -> int:
        """Operations: allocations attempted (failures included) plus frees."""
        return sum(self.total(n) for n in OPS_COUNTERS)


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
