"""The cost model of virtual-time mode: what each operation costs its CPU's clock.

An operation's cost is read off the counters it bumped, so every policy is
priced by what it did, never by its name:

* outside zone->lock, a linear *potential* of the CPU's counters: ``alloc_ns``
  (+ ``alloc_caller_ns``, the caller's own work) per allocation attempted,
  ``free_ns`` (+ ``free_caller_ns``) per free, ``line_ns`` per struct page,
  descriptor or free-memory cacheline charged (every ``lines_*`` cause,
  ``desc_lines_*``, ``data_lines_written``), ``slab_ns`` per descriptor slab
  allocation or free, ``remote_ns`` per block handed to or taken from another
  CPU.  A step (one workload operation, or a housekeeping pass) costs the
  potential's increase over the step, less what zone->lock holds priced;
* under zone->lock (``pcpd.simulate.clock``), each hold costs ``lock_ns``,
  plus ``lock_handoff_ns`` when another CPU held it last, plus
  ``locked_line_ns`` per line the buddy work charged while it was held.  The
  per-page cost of a refill (``rmqueue_bulk``) or a drain
  (``free_pcppages_bulk``) is therefore the lines it charges per page (free
  list unlink and link, buddy checks, merges; each line once per refill or
  drain, however many steps touch it: about 3 a page for order 0 under
  ``legacy``) at the price of a line that is usually cold.

Times are kept in integer picoseconds, so sums are exact and a run's virtual
times do not depend on float rounding order.

``COST_SOURCES`` says where each default comes from; docs/simulate.md has the
same table for users.  Where no published figure gives a constant directly,
the entry says how the value was estimated.

Imports: the standard library, ``pcpd.config.settings``, ``pcpd.model.stats``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from pcpd.config.settings import SimulateSettings
from pcpd.model.stats import CAUSES, FREE_COUNTERS, INDEX, NR_STATS, SERVED_COUNTERS

__all__ = ["CostModel", "COST_SOURCES", "COST_KEYS", "PS_PER_NS", "line_counter", "potential_of"]

PS_PER_NS = 1000

# Every counter that charges a cacheline: struct page lines by cause, descriptor lines,
# and list links kept in free memory (8-byte pages, memdesc Misc lists).
LINE_COUNTERS: tuple[str, ...] = (
    *(f"lines_written_{c}" for c in CAUSES), *(f"lines_read_{c}" for c in CAUSES),
    "desc_lines_written", "desc_lines_read", "data_lines_written",
)
# Allocations attempted: served (hit, refill then hit, straight from the buddy) or failed.
ALLOC_COUNTERS: tuple[str, ...] = (*SERVED_COUNTERS, "alloc_fail_no_memory")
FREE_COUNTERS: tuple[str, ...] = FREE_COUNTERS
SLAB_COUNTERS: tuple[str, ...] = ("slab_alloc", "slab_free")
REMOTE_COUNTERS: tuple[str, ...] = ("free_remote_out", "free_remote_in")

# key -> (what it is, where the default comes from).  One line each in docs/simulate.md.
COST_SOURCES: dict[str, tuple[str, str]] = {
    "alloc_ns": (
        "one allocation, beyond its lines",
        "page_bench01 (Brouer's prototype-kernel) single order-0 alloc_page()+__free_page() through the "
        "PCP: about 54 ns a pair (issue 13; published runs: 115-159 cycles on an i7-11850H at 2.5 GHz, "
        "Tosatti 2023; 185 cycles on Broadwell, Wang 2017); 54 ns less the pair's 4 lines at line_ns, "
        "split evenly"),
    "free_ns": ("one free, beyond its lines", "as alloc_ns"),
    "alloc_caller_ns": (
        "the caller's work per allocation, outside the allocator",
        "0 by default: back-to-back allocations, as page_bench01 makes them; a workload preset sets "
        "what its caller does (configs/page-fault1.toml: a minor anonymous fault and clear_page())"),
    "free_caller_ns": ("the caller's work per free, outside the allocator", "as alloc_caller_ns"),
    "line_ns": (
        "a cacheline the CPU touches outside zone->lock",
        "estimate: lines of the CPU's own recently used pages are L1/L2 hits or streamed stores; "
        "prep_compound_page()'s 511 tails (32 KiB) at ~25 GB/s of store bandwidth is ~1.3 us, ~2.5 ns "
        "a line; 2 ns"),
    "slab_ns": (
        "one descriptor slab allocation or free",
        "SLUB fastpath alloc+free: 42-43 cycles, 10.5 ns a pair on an i7-4790K (Lameter / Brouer, "
        "slub bulk alloc commit messages): ~5 ns each"),
    "remote_ns": (
        "a block handed to another CPU, or taken from one",
        "estimate: one ring entry's line moves between cores (see lock_handoff_ns) but is "
        "batched with its neighbours: a quarter of a handoff"),
    "lock_ns": (
        "zone->lock held, per acquisition",
        "estimate: spin_lock_irqsave() + spin_unlock_irqrestore() uncontended, a LOCK-prefixed "
        "atomic and a store plus the irq save/restore (local_irq_save/restore: 37 cycles, 9.4 ns on "
        "an i7-4790K, Brouer): 20 ns"),
    "lock_handoff_ns": (
        "zone->lock held, extra when the last holder was another CPU",
        "estimate: core-to-core cache line transfer is 50-100 ns within a socket and 100-200 ns "
        "across sockets on the 2-socket Xeons the 6.7 series was measured on; the lock word and the "
        "free_area heads move: 100 ns"),
    "locked_line_ns": (
        "zone->lock held, per line the buddy work charges",
        "will-it-scale page_fault1 at full load on a 2-socket Broadwell (88 CPUs), v4.16: 9.0M faults/s "
        "with zone->lock the bottleneck (Aaron Lu, 'mm/free_pcppages_bulk: prefetch buddy while not "
        "holding lock', 2018: the time under zone->lock is mostly struct page cache misses): at most "
        "111 ns of hold per page refilled and drained; the model charges 3.04 buddy lines a page for "
        "the two, each line once per refill or drain (legacy, order 0, measured on page-fault1.toml "
        "on 4 CPUs): 36 ns a line"),
}
COST_KEYS: tuple[str, ...] = tuple(COST_SOURCES)


def _ps(ns: float) -> int:
    return round(ns * PS_PER_NS)


@dataclass(frozen=True)
class CostModel:
    """The cost constants of one run, in integer picoseconds (``from_settings``)."""

    alloc: int
    free: int
    alloc_caller: int
    free_caller: int
    line: int
    slab: int
    remote: int
    lock: int
    lock_handoff: int
    locked_line: int

    @classmethod
    def from_settings(cls, s: SimulateSettings) -> CostModel:
        return cls(alloc=_ps(s.alloc_ns), free=_ps(s.free_ns), alloc_caller=_ps(s.alloc_caller_ns),
                   free_caller=_ps(s.free_caller_ns), line=_ps(s.line_ns), slab=_ps(s.slab_ns),
                   remote=_ps(s.remote_ns), lock=_ps(s.lock_ns), lock_handoff=_ps(s.lock_handoff_ns),
                   locked_line=_ps(s.locked_line_ns))

    def as_ns(self) -> dict[str, float]:
        """The constants as the config spells them (``alloc_ns``, ...), for results metadata."""
        return {f"{f.name}_ns": getattr(self, f.name) / PS_PER_NS for f in fields(self)}


def _summer(names: Sequence[str]) -> Callable[[Sequence[int]], int]:
    """A function summing the named counters of a ``Counters.v`` (itemgetter: one C call)."""
    getter = operator.itemgetter(*(INDEX[n] for n in names))
    return lambda v: sum(getter(v))


def line_counter() -> Callable[[Sequence[int]], int]:
    """Cachelines charged so far by one CPU (every cause, descriptors, free memory)."""
    return _summer(LINE_COUNTERS)


def potential_of(costs: CostModel) -> Callable[[Sequence[int]], int]:
    """The cost potential (ps) of a ``Counters.v``: its increase over a step is the
    step's cost outside zone->lock (before the lock's own pricing is taken out).

    One weighted sum over every counter that costs: it runs once per operation.
    """
    weighted = [(n, costs.alloc + costs.alloc_caller) for n in ALLOC_COUNTERS]
    weighted += [(n, costs.free + costs.free_caller) for n in FREE_COUNTERS]
    weighted += [(n, costs.line) for n in LINE_COUNTERS]
    weighted += [(n, costs.slab) for n in SLAB_COUNTERS]
    weighted += [(n, costs.remote) for n in REMOTE_COUNTERS]
    weights = np.zeros(NR_STATS, dtype=np.int64)
    for n, w in weighted:
        weights[INDEX[n]] += w
    # one integer dot product over the counters' machine integers (no Python int per counter)
    return lambda v: int(weights.dot(np.asarray(v, dtype=np.int64)))
