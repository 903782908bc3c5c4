"""``pcpd costs``: what one allocation or one free touches, per policy.

Every figure is measured, not looked up: each row is the difference of one
CPU's ``Counters`` snapshots around exactly one ``alloc`` or ``free`` call on
a freshly formatted small zone, so it counts what the policy code actually
wrote and read for the record size in use.

Rows are keyed by policy, memdesc type, order, operation and PCP outcome:

``alloc`` / ``hit``
    The PCP list already holds a block (one alloc+free primed it); the
    allocation pops the head: ``__rmqueue_pcplist()`` with a non-empty list.
``alloc`` / ``miss``
    The list is empty, so the allocation first refills it under one
    zone->lock acquisition (``rmqueue_bulk()``); the row includes preparing
    every refilled block, which is where a policy may move its tail work.
``free`` / ``hit``
    The block goes onto a list that already holds one and no drain follows
    (``free_frozen_page_commit()`` returning early).
``free`` / ``miss``
    The free that reaches the drain threshold: ``free_pcppages_bulk()`` runs
    (its cause, ``high`` or ``free_high``, is in ``drain_cause``).
``free`` / ``owner``
    Policies that route a free to the CPU owning the block's pageblock
    (pcp-buddy): the ``hit`` row is the freeing CPU's part (the message), and
    this row the owner's, freeing a block of its own pageblock onto its PCP
    with no drain following.  Like a hit, it charges exactly what it touches.
``bypass``
    Orders the PCP does not keep in the era (4-8 and 10; everything but
    order 0 in 4.18), and blocks a policy sends straight to the buddy (the
    compound policy's non-compound multi-page memory): ``rmqueue_buddy()``
    and ``free_one_page()``.  One row per operation; hit and miss do not apply.

A row is labelled with what happened, not what was intended: where an era's
PCP cannot hold a block (5.13's high of 378 is below one THP, so every THP
free drains), the hit row is absent and the miss row says so.

Each record also has ``struct_page_lines_written``/``_read`` (the sums of
``by_cause``), ``descriptor_lines``, ``free_memory_lines_written`` (list
links kept inside free blocks: the 8-byte page's buddy lists, memdesc Misc
PCP lists), ``slab_ops`` (slab allocs + frees; ``slab_shared`` counts trips
to the slab's shared part), ``zone_lock_acquisitions``, ``refill_pages``,
``drain_pages`` and ``drain_cause``.  Those are the charges the policy code
makes, per cause, each distinct line once per operation: a hit charges its
lines inline; a refill, a drain or a buddy allocation or free records the
lines each step touches (taken from a free list, put on the PCP, popped)
and charges each line once, to the cause that touched it first
(pcpd.model.lines.LineCharges).  Reads are every line loaded, stored to
as well or not.

Traced lines.  The consumer CPU runs over a ``TracedArena``
(``pcpd.model.linetrace``), which records the set of lines each operation
actually loaded and stored, so each record (unless ``traced=False``) also
has ``lines_touched``: every distinct struct page, descriptor and
free-memory line the operation touched, each once however often and by
however many causes; and ``traced``, the traced counts set against each
charged figure (``*_read_only``: lines loaded and never stored).  Every row
charges exactly what it touches (tests/test_traced_lines.py holds every row
to it).

Blocks freed on the measured CPU (0) are allocated by a second CPU and
handed over (``send``/``receive``), so CPU 0's PCP starts empty and fills
only with frees, as on a consumer CPU.  The PCP is sized as the kernel
sizes it for this machine's Normal zone (reference section 1.7, example A:
458752 managed pages, low watermark 7840, 2 CPUs), whatever the small
arena's own size; legacy and compound always model today's 64-byte struct
page, the memdesc policies the ``--record-bytes`` chosen (16 by default:
the buddy-embedded page of the January 2024 proposal, whose buddy state
still lives in the memmap; 8 moves the free-list links into free memory).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pcpd import core
from pcpd.errors import PcpdError
from pcpd.kernel import DEFAULT_ERA, ERAS, HIGH_BOUNDS_ERAS, MAX_PAGE_ORDER, MEMDESC_TYPES, PAGE_ORDERS
from pcpd.model import sizing
from pcpd.model.arena import RECORD_SIZES, Arena
from pcpd.model.linetrace import LineTrace, TracedArena
from pcpd.model.pagewords import NIL
from pcpd.model.stats import (
    ALLOC_BUDDY,
    ALLOC_HIT,
    ALLOC_REFILL,
    CAUSES,
    DATA_W,
    DESC_R,
    DESC_W,
    DRAIN_CAUSES,
    DRAIN_PAGES,
    DRAINS,
    FREE_BUDDY,
    INDEX,
    LINES_R,
    LINES_W,
    REFILL_PAGES,
    SLAB_ALLOC,
    SLAB_FREE,
    SLAB_SHARED,
)
from pcpd.policies import MEMDESC_DEFAULT_RECORD_BYTES, POLICIES, PROPOSAL
from pcpd.spec import ModelSpec
from workers.cpu import CpuAllocator, SharedLocks, create_arena, format_arena

COST_PAGES = 16384                 # 64 MiB: room for the deepest drain (8 THPs) and a refill
DEFAULT_MEMDESC_RECORD = MEMDESC_DEFAULT_RECORD_BYTES
REFERENCE_ZONE = (458752, 7840, 2)  # managed, low watermark, CPUs on the node (example A)
CONSUMER, PRODUCER = 0, 1

_SHORT = {"page_state": "page", "list_link": "link", "compound_prep": "prep",
          "tail_undo": "undo", "memdesc_set": "memdesc", "rmappable": "rmap", "buddy": "buddy"}


def model_spec(policy: str, era: str = DEFAULT_ERA,
               record_bytes: int = DEFAULT_MEMDESC_RECORD) -> ModelSpec:
    """The model ``pcpd costs`` (and ``bench/run.py``) measure one policy on.

    ``record_bytes`` applies to the policies that model it (the memdesc
    policies).  Raises ValueError for an unknown policy or era.
    """
    managed, low_wmark, cpus = REFERENCE_ZONE
    return ModelSpec.from_reference_zone(policy, era, record_bytes, pages=COST_PAGES, managed=managed,
                                         low_wmark=low_wmark, ncpus=cpus)


class _Model:
    """A freshly formatted zone and two CPUs sharing it; with a ``trace``, the
    consumer CPU runs over a TracedArena recording into it."""

    def __init__(self, arena: Arena, spec: ModelSpec, trace: LineTrace | None = None) -> None:
        format_arena(arena, spec)
        locks = SharedLocks.local()
        self.trace = trace
        mine = arena if trace is None else TracedArena(arena, trace)
        self.consumer = CpuAllocator(mine, spec, locks, CONSUMER)
        self.producer = CpuAllocator(arena, spec, locks, PRODUCER)

    def measure(self, op: Callable[[], object]) -> list[int]:
        """Run op on the consumer CPU: how much each of its counters rose, by index;
        ``traced()`` then says which lines it touched."""
        v = self.consumer.counters.v
        before = list(v)
        if self.trace is not None:
            self.trace.clear()
        op()
        return [after - b for after, b in zip(v, before)]

    def traced(self) -> dict[str, int] | None:
        """What the trace saw of the last measured operation (None untraced)."""
        return None if self.trace is None else _traced(self.trace)

    def hand_over(self, t: int, order: int) -> int:
        """A block allocated by the producer CPU, now the consumer's to free; NIL if none."""
        pfn = self.producer.policy.alloc(t, order)
        if pfn != NIL:
            self.producer.policy.send(pfn, order, t, CONSUMER)
            self.consumer.policy.receive(pfn, order, t)
        return pfn


def _traced(trace: LineTrace) -> dict[str, int]:
    """What the trace saw, by the charged figure each count stands against, and
    ``lines_touched``: every distinct line (a descriptor line the slab and the
    policy both touched is one line)."""
    read, written = trace.read, trace.written
    descs = trace.touched("descs") | trace.touched("slab")
    return {
        "struct_page_lines_written": len(written["memmap"]),
        "struct_page_lines_read": len(read["memmap"]),
        "struct_page_lines_read_only": len(read["memmap"] - written["memmap"]),
        "descriptor_lines_written": len(written["descs"]),
        "descriptor_lines_read": len(read["descs"]),
        "descriptor_lines_read_only": len(read["descs"] - written["descs"]),
        "free_memory_lines_written": len(written["freelinks"]),
        "free_memory_lines_read": len(read["freelinks"]),
        "free_memory_lines_read_only": len(read["freelinks"] - written["freelinks"]),
        "slab_lines": len(trace.touched("slab")),
        "lines_touched": len(trace.touched("memmap")) + len(descs) + len(trace.touched("freelinks")),
    }


def _alloc_outcome(d: list[int]) -> str:
    if d[ALLOC_HIT]:
        return "hit"
    if d[ALLOC_REFILL]:
        return "miss"
    if d[ALLOC_BUDDY]:
        return "bypass"
    raise PcpdError("an allocation failed on a fresh zone")   # the arena is sized to prevent it


def _drain_cause(d: list[int]) -> str | None:
    return next((c for c in DRAIN_CAUSES if d[DRAINS[c]]), None)


def _free_outcome(d: list[int]) -> str:
    if d[FREE_BUDDY]:
        return "bypass"
    return "miss" if _drain_cause(d) else "hit"


Row = tuple[str, str, list[int], dict[str, int] | None]   # op, PCP outcome, counter increases, traced


def _alloc_rows(arena: Arena, spec: ModelSpec, t: int, order: int, traced: bool) -> list[Row]:
    model = _Model(arena, spec, LineTrace() if traced else None)
    alloc = model.consumer.policy.alloc
    d = model.measure(lambda: alloc(t, order))
    rows = [("alloc", _alloc_outcome(d), d, model.traced())]
    if rows[0][1] == "bypass":
        return rows
    model = _Model(arena, spec, LineTrace() if traced else None)
    alloc, free = model.consumer.policy.alloc, model.consumer.policy.free
    free(alloc(t, order), order, t)                    # prime: the list now holds a block
    d = model.measure(lambda: alloc(t, order))
    if _alloc_outcome(d) == "hit":
        rows.append(("alloc", "hit", d, model.traced()))
    return rows


def _free_rows(arena: Arena, spec: ModelSpec, t: int, order: int, traced: bool) -> list[Row]:
    """Free handed-over blocks until one drains: the second free is the hit.

    A policy that sends the frees to another CPU's PCP (pcp-buddy: the
    pageblock's owner, which is the producer here) leaves the freeing CPU's
    PCP empty, so it never drains there: it gets its hit row and no miss row.
    """
    model = _Model(arena, spec, LineTrace() if traced else None)
    free = model.consumer.policy.free
    rows = []
    nth = 0
    while nth < COST_PAGES and (pfn := model.hand_over(t, order)) != NIL:
        d = model.measure(lambda: free(pfn, order, t))
        outcome = _free_outcome(d)
        if outcome != "hit" or nth == 1:               # the first free met an empty list
            rows.append(("free", outcome, d, model.traced()))
        if outcome != "hit":
            break
        if nth == 1 and not model.consumer.policy.pcp_pages():     # routed to the owner
            rows += _owner_free_row(arena, spec, t, order, traced)
            break
        nth += 1
    return rows


def _owner_free_row(arena: Arena, spec: ModelSpec, t: int, order: int, traced: bool) -> list[Row]:
    """The owner's side of a routed free: the measured CPU allocates two blocks (its
    own pageblock's) and frees them; the second free is the row, unless it drains."""
    model = _Model(arena, spec, LineTrace() if traced else None)
    policy = model.consumer.policy
    first, second = policy.alloc(t, order), policy.alloc(t, order)
    policy.free(first, order, t)
    d = model.measure(lambda: policy.free(second, order, t))
    return [("free", "owner", d, model.traced())] if _free_outcome(d) == "hit" else []


def _record(spec: ModelSpec, t: int, order: int, op: str, pcp: str,
            d: list[int], seen: dict[str, int] | None) -> dict[str, Any]:
    written = {c: d[LINES_W[c]] for c in CAUSES}
    read = {c: d[LINES_R[c]] for c in CAUSES}
    record = {
        "policy": spec.policy, "memdesc": MEMDESC_TYPES[t], "order": order, "pcp": pcp, "op": op,
        "era": spec.era, "record_bytes": spec.record_bytes,
        "struct_page_lines_written": sum(written.values()),
        "struct_page_lines_read": sum(read.values()),
        "descriptor_lines": d[DESC_W] + d[DESC_R],
        "descriptor_lines_written": d[DESC_W],
        "descriptor_lines_read": d[DESC_R],
        "free_memory_lines_written": d[DATA_W],
        "slab_ops": d[SLAB_ALLOC] + d[SLAB_FREE],
        "slab_shared": d[SLAB_SHARED],
        "zone_lock_acquisitions": d[INDEX["lock_acquisitions"]],
        "refill_pages": d[REFILL_PAGES],
        "drain_pages": sum(d[DRAIN_PAGES[c]] for c in DRAIN_CAUSES),
        "drain_cause": _drain_cause(d),
        "by_cause": {"written": written, "read": read},
    }
    if seen is not None:
        record["lines_touched"] = seen["lines_touched"]
        record["traced"] = seen
    return record


def cost_table(era: str = DEFAULT_ERA, record_bytes: int = DEFAULT_MEMDESC_RECORD,
               policies: Iterable[str] = PROPOSAL, types: Iterable[str] = MEMDESC_TYPES,
               orders: Iterable[int] = PAGE_ORDERS, traced: bool = True) -> list[dict[str, Any]]:
    """Measure every (policy, memdesc type, order): alloc and free, hit and miss.

    Rows come in policy, type, order order, each group as alloc miss, alloc
    hit, free hit, free miss (or alloc bypass, free bypass).  Identical
    arguments give identical rows.  ``traced`` runs the measured CPU over a
    TracedArena and adds ``lines_touched`` and ``traced`` to each row; the
    charged figures are the same either way.
    """
    sizing.check_era(era)
    if record_bytes not in RECORD_SIZES:
        raise ValueError(f"record size {record_bytes} is not one of {RECORD_SIZES}")
    type_ids, order_list = [MEMDESC_TYPES.index(name) for name in types], list(orders)
    rows = []
    for policy in policies:
        rows += _policy_rows(model_spec(policy, era, record_bytes), type_ids, order_list, traced)
    return rows


def _policy_rows(spec: ModelSpec, types: list[int], orders: list[int],
                 traced: bool) -> list[dict[str, Any]]:
    arena = create_arena(spec)
    try:
        rows = []
        for t in types:
            for order in orders:
                measured = (_alloc_rows(arena, spec, t, order, traced)
                            + _free_rows(arena, spec, t, order, traced))
                rows += [_record(spec, t, order, *row) for row in measured]
        return rows
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


def _causes(counts: dict[str, int]) -> str:
    return " ".join(f"{_SHORT[c]} {n}" for c, n in counts.items() if n)


def format_table(rows: Sequence[dict[str, Any]], era: str, record_bytes: int) -> str:
    """The text report: a header saying what was modelled, then one line per row."""
    limits = sizing.pcp_limits(era, *REFERENCE_ZONE)
    high = (f"high {limits.high_min}..{limits.high_max}" if era in HIGH_BOUNDS_ERAS
            else f"high {limits.high}")
    out = [
        f"era {era}: PCP batch {limits.batch}, {high} (Normal zone of {REFERENCE_ZONE[0]} pages, "
        f"{REFERENCE_ZONE[2]} CPUs); arena {COST_PAGES} pages",
        f"struct page: 64 B for legacy and compound, {record_bytes} B for the memdesc policies",
        "W/R: struct page cachelines written/read; desc: descriptor lines; free: lines of free "
        "memory (list links); slab: slab alloc+free; lock: zone->lock acquisitions "
        "(all as charged: each line once per operation, to the cause that touched it first)",
        "touched: distinct lines the operation touched (struct page, descriptor, free memory; "
        "each line once), traced from the accessors",
        "",
        f"{'policy':<16} {'memdesc':<9} {'ord':>3} {'op':<5} {'pcp':<6} {'rec':>3} "
        f"{'W':>5} {'W KiB':>6} {'R':>5} {'desc':>4} {'free':>4} {'slab':>4} {'lock':>4} {'touched':>7}  "
        f"written by cause / read by cause",
    ]
    for r in rows:
        causes = _causes(r["by_cause"]["written"])
        read = _causes(r["by_cause"]["read"])
        if read:
            causes += f" / {read}"
        out.append(
            f"{r['policy']:<16} {r['memdesc']:<9} {r['order']:>3} {r['op']:<5} {r['pcp']:<6} "
            f"{r['record_bytes']:>3} {r['struct_page_lines_written']:>5} "
            f"{r['struct_page_lines_written'] * 64 / 1024:>6.1f} {r['struct_page_lines_read']:>5} "
            f"{r['descriptor_lines']:>4} {r['free_memory_lines_written']:>4} {r['slab_ops']:>4} "
            f"{r['zone_lock_acquisitions']:>4} {r.get('lines_touched', '-'):>7}  {causes}".rstrip())
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of records, one per line")
    parser.add_argument("--era", choices=ERAS, default=DEFAULT_ERA,
                        help=f"kernel era whose PCP rules and sizing apply (default {DEFAULT_ERA})")
    parser.add_argument("--record-bytes", type=int, choices=RECORD_SIZES,
                        default=DEFAULT_MEMDESC_RECORD,
                        help=f"struct page size for the memdesc policies (default {DEFAULT_MEMDESC_RECORD}); "
                             "legacy and compound always use 64")
    parser.add_argument("--policy", action="append", choices=list(POLICIES),
                        help="only this policy (repeatable; default all)")
    parser.add_argument("--memdesc", action="append", choices=MEMDESC_TYPES,
                        help="only this memdesc type (repeatable; default all)")
    parser.add_argument("--order", action="append", type=int,
                        choices=PAGE_ORDERS, metavar=f"{{0..{MAX_PAGE_ORDER}}}",
                        help="only this order (repeatable; default all)")


def command(args: argparse.Namespace) -> int:
    rows = core.call_interpreted(cost_table, args.era, args.record_bytes, args.policy or PROPOSAL,
                                 args.memdesc or MEMDESC_TYPES, args.order or PAGE_ORDERS)
    if args.json:
        print("[" + ",\n".join(json.dumps(r) for r in rows) + "]")
    else:
        print(format_table(rows, args.era, args.record_bytes))
    return 0
