"""Pass 1 of a replay: trace events become model operations on the spool.

Operations
----------
``mm_page_alloc`` allocates on the CPU of the event with the memdesc type
and compoundness that ``pcpd.replay.trace.classify_gfp()`` infers from the GFP
flags (the table in that module).  The model's types other than ``kernel``
are compound, so a multi-page allocation without ``__GFP_COMP`` is replayed
as ``kernel`` (memdesc Misc: non-compound ``alloc_pages()``) whatever its
row; the migratetype follows the type (``workers.policies.MIGRATETYPE_OF``).
A failed allocation (``pfn`` -1) is counted and not replayed, and so is one
above ``MAX_PAGE_ORDER`` (10: x86 with 4 KiB pages), which the model cannot make.

``mm_page_free`` frees the block on the CPU of the event, which is the
kernel's rule: a remote free lands on the freeing CPU's PCP
(``__free_frozen_pages()``), so no hand-over is modelled.  The block is
freed at the order it was allocated at; a free whose order differs (the
pieces of a ``split_page()``) is counted.

``mm_page_free_batched`` prints ``order=0`` even for large folios and
follows the ``mm_page_free`` of the same page (v4.15+: the second pass of
``free_unref_page_list()``, now ``free_unref_folios()``) or precedes it
(v3.3-v4.14: ``free_hot_cold_page_list()`` traces before it frees).  The
first of the two frees the block; the second is its partner and is only
counted.  A batched free with no partner (v2.6.33 ``mm_pagevec_free``)
frees the block itself.  Partners are looked for among the last
``PAIR_WINDOW`` frees.

A free of a page the trace never allocated (allocated before the capture
started, or by ``alloc_pages_bulk()``, which has no ``mm_page_alloc``) is
counted and skipped.  An allocation of a page the trace shows live means
its free was lost: the old block is freed first and the loss counted.
Blocks still live at the end stay allocated.

``decay_pcp_high()`` runs on every CPU once per ``--decay-interval``
seconds of trace time (``sysctl_stat_interval``, 1 s), at most
``MAX_DECAY_TICKS`` times per gap between events; it only acts in era 6.7.
Traces whose timestamps are not seconds (a counter clock) want
``--decay-interval 0``.

``mm_page_alloc_zone_locked`` and ``mm_page_pcpu_drain`` are what the
kernel did, not requests: they are compared with the ``legacy`` model
(fidelity), as ``trace-pagealloc-postprocess.pl`` counts them.  A refill is
a run of ``percpu_refill=1`` events on one CPU, a drain a run of
``mm_page_pcpu_drain`` events; a run ends at the CPU's next other event
(``mm_page_alloc_extfrag`` does not end one: a claim inside a refill emits
it).  Before v5.19 ``percpu_refill`` means ``order == 0``, so high-order
PCP refills of 5.13-5.18 count as buddy allocations there.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pcpd.kernel import MAX_PAGE_ORDER
from pcpd.replay.spool import OP_ALLOC, OP_DECAY, OP_FREE, OpSpool
from pcpd.replay.trace import (
    MM_PAGE_ALLOC,
    MM_PAGE_ALLOC_EXTFRAG,
    MM_PAGE_ALLOC_ZONE_LOCKED,
    MM_PAGE_FREE,
    MM_PAGE_FREE_BATCHED,
    MM_PAGE_PCPU_DRAIN,
    TraceEvent,
    classify_gfp,
)
from workers.policies import T_KERNEL, TYPES

PAIR_WINDOW = 4096                 # frees remembered for mm_page_free_batched pairing
MAX_DECAY_TICKS = 32               # 0.875**32: high is back at high_min long before
DECAY_INTERVAL = 1.0               # sysctl_stat_interval (HZ)

# What a CPU's last event left it in: a run of refills or of drains, or neither.
NO_RUN, REFILL_RUN, DRAIN_RUN = 0, 1, 2


def replay_type(gfp_flags: str, order: int) -> int:
    """The memdesc type index (``workers.policies.TYPES``) an allocation replays as."""
    cls = classify_gfp(gfp_flags, order)
    if order and not cls.compound:
        return T_KERNEL
    return TYPES.index(cls.memdesc_type)


@dataclass
class TracePcp:
    """What the kernel's own PCP did, as the trace recorded it."""

    refill_blocks: int = 0        # mm_page_alloc_zone_locked percpu_refill=1
    refill_pages: int = 0
    refills: int = 0              # runs of them on one CPU
    buddy_blocks: int = 0         # mm_page_alloc_zone_locked percpu_refill=0
    drain_blocks: int = 0         # mm_page_pcpu_drain
    drain_pages: int = 0
    drains: int = 0               # runs of them on one CPU


@dataclass
class Decoded:
    """What ``decode()`` learned from the trace; the same for every policy."""

    events: Counter = field(default_factory=Counter)   # (event, order) -> count
    cpus: list[int] = field(default_factory=list)      # CPUs that allocate or free, sorted
    nr_cpu_ids: int = 0                                # highest CPU in any event + 1
    allocs: int = 0
    failed_allocs: int = 0
    frees: int = 0
    above_max_order: int = 0      # allocations the model cannot make (not x86 with 4 KiB pages)
    remote_frees: int = 0         # freed on another CPU than the allocating one
    batched_pairs: int = 0        # mm_page_free_batched and mm_page_free of one free
    unknown_frees: int = 0        # pages the trace never allocated
    order_mismatches: int = 0
    lost_frees: int = 0           # live pages allocated again
    live_blocks: int = 0          # at the end of the trace
    live_pages: int = 0
    peak_live_pages: int = 0
    decay_ticks: int = 0
    types: Counter = field(default_factory=Counter)    # (type index, order) -> allocations
    pcp: TracePcp = field(default_factory=TracePcp)


def decode(events: Iterable[TraceEvent], spool: OpSpool,
           decay_interval: float = DECAY_INTERVAL) -> Decoded:
    """Pass 1: turn trace events into model operations on ``spool``.

    See the module docstring for the rules.  Holds the live blocks of the
    trace, the last PAIR_WINDOW frees and one word per CPU.
    """
    decoder = Decoder(spool, decay_interval)
    for event in events:
        decoder.feed(event)
    return decoder.finish()


# A live block of the trace: its order, memdesc type, allocating CPU and block number.
LiveBlock = tuple[int, int, int, int]


class Decoder:
    """The state of pass 1 between events, and one handler per event."""

    def __init__(self, spool: OpSpool, decay_interval: float = DECAY_INTERVAL) -> None:
        self.decoded = Decoded()
        self.spool = spool
        self.decay_interval = decay_interval
        self.next_tick: float | None = None
        self.live: dict[int, LiveBlock] = {}              # pfn -> block
        self.pending: OrderedDict[int, str] = OrderedDict()  # freed pfn -> event that freed it
        self.run: dict[int, int] = {}                       # cpu -> the run it is in
        self.cpus: set[int] = set()
        self.handlers: dict[str, Callable[[TraceEvent], None]] = {
            MM_PAGE_ALLOC: self.alloc,
            MM_PAGE_FREE: self.free,
            MM_PAGE_FREE_BATCHED: self.free,
            MM_PAGE_ALLOC_ZONE_LOCKED: self.zone_locked,
            MM_PAGE_PCPU_DRAIN: self.pcpu_drain,
            MM_PAGE_ALLOC_EXTFRAG: self.extfrag,
        }

    def feed(self, e: TraceEvent) -> None:
        d = self.decoded
        d.events[e.event, e.order] += 1
        if e.cpu >= d.nr_cpu_ids:
            d.nr_cpu_ids = e.cpu + 1
        if self.decay_interval > 0:
            self.tick(e.timestamp)
        self.handlers[e.event](e)

    def finish(self) -> Decoded:
        d = self.decoded
        d.cpus = sorted(self.cpus)
        d.live_blocks = len(self.live)
        return d

    def tick(self, timestamp: float) -> None:
        """Spool the decay passes due by ``timestamp`` (at most MAX_DECAY_TICKS of them)."""
        if self.next_tick is None:
            self.next_tick = timestamp + self.decay_interval
        elif timestamp >= self.next_tick:
            ticks = int((timestamp - self.next_tick) // self.decay_interval) + 1
            self.next_tick += ticks * self.decay_interval
            for _ in range(min(ticks, MAX_DECAY_TICKS)):
                self.spool.add(OP_DECAY, 0, 0, 0, 0)
                self.decoded.decay_ticks += 1

    # --- what the kernel's PCP did: counted, not replayed

    def zone_locked(self, e: TraceEvent) -> None:
        pcp = self.decoded.pcp
        if e.percpu_refill == 1:
            pcp.refill_blocks += 1
            pcp.refill_pages += 1 << e.order
            if self.run.get(e.cpu) != REFILL_RUN:
                pcp.refills += 1
                self.run[e.cpu] = REFILL_RUN
        else:
            pcp.buddy_blocks += 1
            self.run[e.cpu] = NO_RUN

    def pcpu_drain(self, e: TraceEvent) -> None:
        pcp = self.decoded.pcp
        pcp.drain_blocks += 1
        pcp.drain_pages += 1 << e.order
        if self.run.get(e.cpu) != DRAIN_RUN:
            pcp.drains += 1
            self.run[e.cpu] = DRAIN_RUN

    def extfrag(self, e: TraceEvent) -> None:
        """Only counted; it ends no run (a claim inside a refill emits it)."""

    # --- requests: replayed

    def alloc(self, e: TraceEvent) -> None:
        d = self.decoded
        self.run[e.cpu] = NO_RUN
        if e.pfn < 0:
            d.failed_allocs += 1
            return
        if e.order > MAX_PAGE_ORDER:
            d.above_max_order += 1
            return
        self.pending.pop(e.pfn, None)
        old = self.live.get(e.pfn)
        if old is not None:                       # its free never reached the trace
            self.lose(old)
        t = replay_type(e.gfp_flags, e.order)
        self.live[e.pfn] = (e.order, t, e.cpu, d.allocs)
        self.spool.add(OP_ALLOC, e.cpu, e.order, t, d.allocs)
        self.cpus.add(e.cpu)
        d.allocs += 1
        d.types[t, e.order] += 1
        d.live_pages += 1 << e.order
        if d.live_pages > d.peak_live_pages:
            d.peak_live_pages = d.live_pages

    def lose(self, block: LiveBlock) -> None:
        """Free, on its own CPU, a live block whose free the trace lost."""
        order, t, cpu, number = block
        self.decoded.lost_frees += 1
        self.spool.add(OP_FREE, cpu, order, t, number)
        self.decoded.live_pages -= 1 << order

    def free(self, e: TraceEvent) -> None:
        """mm_page_free and mm_page_free_batched: the first of a pair frees the block."""
        d = self.decoded
        self.run[e.cpu] = NO_RUN
        partner = self.pending.get(e.pfn)
        if partner is not None and partner != e.event:
            del self.pending[e.pfn]
            d.batched_pairs += 1
            return
        block = self.live.pop(e.pfn, None)
        if block is None:
            d.unknown_frees += 1
        else:
            self.free_block(e, block)
        self.pending[e.pfn] = e.event
        self.pending.move_to_end(e.pfn)
        if len(self.pending) > PAIR_WINDOW:
            self.pending.popitem(last=False)

    def free_block(self, e: TraceEvent, block: LiveBlock) -> None:
        d = self.decoded
        order, t, cpu, number = block
        if e.event == MM_PAGE_FREE and e.order != order:
            d.order_mismatches += 1
        self.spool.add(OP_FREE, e.cpu, order, t, number)
        self.cpus.add(e.cpu)
        d.frees += 1
        d.remote_frees += cpu != e.cpu
        d.live_pages -= 1 << order
