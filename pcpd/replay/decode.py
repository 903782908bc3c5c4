"""Pass 1 of a replay: trace events become model operations on the spool.

Operations
----------
``mm_page_alloc`` allocates on the CPU of the event with the memdesc type
and compoundness that ``pcpd.replay.trace.classify_gfp()`` infers from the GFP
flags (the table in that module).  The model's types other than ``kernel``
are compound, so a multi-page allocation without ``__GFP_COMP`` is replayed
as ``kernel`` (memdesc Misc: non-compound ``alloc_pages()``) whatever its
row.  The model allocates a type from one migratetype; a replay takes each
type's from the trace (``Decoded.migratetypes``: the one its allocations
asked for most), not the model's default ``workers.policies.MIGRATETYPE_OF``.
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

A free of a page the trace never allocated is one of two things.  Inside a
live block (a piece of a ``split_page()`` or a split THP freed on its own)
it is counted (``split_frees``) and skipped: the head's free releases the
whole block.  Otherwise the page was allocated before the capture started
(or by ``alloc_pages_bulk()``, which has no ``mm_page_alloc``, or by a task a
per-process trace does not follow), and the kernel put it on this CPU's PCP
all the same: it is replayed (``OP_FREE_PRE``) as the free of a block the
model allocates before the first operation (``pcpd.replay.start``: the
pre-capture pool), of the order the event prints and of the memdesc type
that the trace's own allocations of that order and migratetype mostly have
(``pre_capture_frees``).  An allocation of a page the trace shows live means
its free was lost: the old block is freed first and the loss counted.
Blocks still live at the end stay allocated.

What the PCP lists held when the trace began
--------------------------------------------
Per CPU and PCP list (order and migratetype, ``order_to_pindex()``), pass 1
keeps the pages the trace put on the list (frees, refills) less those it
took off (allocations, drains).  The kernel refills a list only when it is
empty (``rmqueue_pcplist()`` -> ``rmqueue_bulk()``), so at a list's first
refill the pages it held at the start are exactly minus that balance
(``StartLists.anchor``); a list never refilled held at least minus the
lowest balance.  ``pcpd.replay.start`` seeds the model's lists with these
pages.  The inference is exact for a whole-system trace with the refill and
drain events; a per-process trace misses other tasks' use of the lists.
A free goes to the list of its block's migratetype (the allocation's, or
what the trace showed for its pageblock, else movable), as
``free_frozen_pages()`` uses the pageblock's.

``decay_pcp_high()`` runs where the kernel ran it: on a CPU's
``vmstat_update()`` work (``refresh_cpu_vm_stats()``), when the trace has
the workqueue events (``pcpd capture`` records them).  A trace without them
decays every CPU once per ``--decay-interval`` seconds of trace time
(``sysctl_stat_interval``, 1 s), at most ``MAX_DECAY_TICKS`` times per gap
between events; the first ``vmstat_update`` ends these ticks.  Decay only
acts in era 6.7.  Traces whose timestamps are not seconds (a counter clock)
want ``--decay-interval 0``, which turns both off.

``mm_page_alloc_zone_locked`` and ``mm_page_pcpu_drain`` are what the
kernel did, not requests: they are compared with the ``legacy`` model
(fidelity), as ``trace-pagealloc-postprocess.pl`` counts them.  A refill is
a run of ``percpu_refill=1`` events on one CPU for one list (order and
migratetype: a change of either starts another refill), a drain a run of
``mm_page_pcpu_drain`` events; a run ends at the CPU's next other event
(``mm_page_alloc_extfrag`` does not end one: a claim inside a refill emits
it).  Before v5.19 ``percpu_refill`` means ``order == 0``, so high-order
PCP refills of 5.13-5.18 count as buddy allocations there.

Each drain is tagged with its cause (``TracePcp.drains_by_cause``):

``free``
    the free path: ``free_frozen_page_commit()`` drains right after a free
    on the same CPU by the same task, and ``free_pcppages_bulk()`` starts
    at the freed page's list, so the first block drained has the freed
    block's order and list.  The model's ``high`` and ``free_high`` drains.
``decay``
    ``decay_pcp_high()``, from ``vmstat_update()`` on the CPU's kworker:
    the kworker's work function when the trace has
    ``workqueue_execute_start``, else any other drain of a kworker.
``drain_all``
    ``drain_all_pages()``: a drain that follows no free, outside a kworker
    (since v5.19 the caller, such as direct reclaim, compaction or memory
    hotplug, drains every CPU's PCP itself, so these land on its CPU), or
    in ``drain_local_pages_wq()`` before v5.19.
``other``
    a kworker running some other function.

Whole-system or per-process
---------------------------
``perf record`` without ``-a`` follows one command and its children, so the
trace lacks every other task's use of the same PCPs.  Some tasks only a
whole-system capture records: kernel threads (kworkers, ksoftirqd,
kswapd), the idle task (pid 0: interrupts taken while idle), and perf
itself (``perf record -a`` sees the allocations of its own buffer writes;
a per-process ``perf record`` enables its events at the workload's exec).
``system_only_events`` counts their events, and ``pcpd.replay.command``
decides the scope from it, unless the capture's metadata or perf's header
says.  A window cut from a whole-system trace can lack all three, and
then reads as per-process.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pcpd.kernel import (
    HPAGE_PMD_ORDER,
    MAX_PAGE_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    NR_PCP_LISTS,
    PAGE_ALLOC_COSTLY_ORDER,
    PAGEBLOCK_ORDER,
)
from pcpd.model.sizing import order_to_pindex
from pcpd.replay.spool import DECAY_ALL_CPUS, DECAY_ONE_CPU, OP_ALLOC, OP_DECAY, OP_FREE, OP_FREE_PRE, OpSpool
from pcpd.replay.trace import (
    MM_PAGE_ALLOC,
    MM_PAGE_ALLOC_EXTFRAG,
    MM_PAGE_ALLOC_ZONE_LOCKED,
    MM_PAGE_FREE,
    MM_PAGE_FREE_BATCHED,
    MM_PAGE_PCPU_DRAIN,
    WORKQUEUE_EXECUTE_END,
    WORKQUEUE_EXECUTE_START,
    TraceEvent,
    classify_gfp,
)
from workers.policies import MIGRATETYPE_OF, T_ANON, T_KERNEL, T_SLAB, TYPES

PAIR_WINDOW = 4096                 # frees remembered for mm_page_free_batched pairing
MAX_DECAY_TICKS = 32               # 0.875**32: high is back at high_min long before
DECAY_INTERVAL = 1.0               # sysctl_stat_interval (HZ)

# What a CPU's last event left it in: a run of refills or of drains, or neither.
NO_RUN, REFILL_RUN, DRAIN_RUN = 0, 1, 2

# Why the kernel drained (see the module docstring), and the model's causes
# (pcpd.model.stats.DRAIN_CAUSES) each one is compared with.
DRAIN_FREE, DRAIN_DECAY, DRAIN_ALL, DRAIN_OTHER = "free", "decay", "drain_all", "other"
TRACE_DRAIN_CAUSES = (DRAIN_FREE, DRAIN_DECAY, DRAIN_ALL, DRAIN_OTHER)
MODEL_CAUSES = {DRAIN_FREE: ("high", "free_high"), DRAIN_DECAY: ("decay",),
                DRAIN_ALL: ("drain_all",), DRAIN_OTHER: ()}
# kworker functions that drain PCPs: vmstat_update() -> refresh_cpu_vm_stats()
# -> decay_pcp_high(); drain_local_pages_wq() was drain_all_pages()'s work
# until v5.19 drained remote PCPs directly.
VMSTAT_UPDATE = "vmstat_update"
WORK_CAUSES = {VMSTAT_UPDATE: DRAIN_DECAY, "drain_local_pages_wq": DRAIN_ALL}
# Tasks only a whole-system capture records (comm prefixes; pid 0 too, and perf itself).
KERNEL_THREADS = ("kworker/", "ksoftirqd/", "kswapd", "kcompactd", "khugepaged", "rcu",
                  "migration/", "kthreadd", "cpuhp/", "irq/", "<idle>", "swapper")
RECORDER = "perf"
MAX_PAGEBLOCKS = 1 << 22           # pageblock migratetypes remembered (16 TiB of 4 KiB pages)
MAX_COMMS = 1 << 16                # comms whose kind is remembered
# The memdesc type a list's pages get when the trace allocated nothing from it.
DEFAULT_TYPE_OF_MT = {0: T_KERNEL, MIGRATE_MOVABLE: T_ANON, MIGRATE_RECLAIMABLE: T_SLAB}


def _pcp_list(order: int, mt: int) -> int:
    if not (0 <= order <= PAGE_ALLOC_COSTLY_ORDER or order == HPAGE_PMD_ORDER) or mt < 0:
        return -1
    return order_to_pindex(order, mt if mt < MIGRATE_PCPTYPES else MIGRATE_MOVABLE)


# every (order, migratetype) a trace prints, looked up once per event
_PCP_LIST = {(order, mt): _pcp_list(order, mt)
             for order in range(MAX_PAGE_ORDER + 1) for mt in range(-1, 8)}


def pcp_list(order: int, mt: int) -> int:
    """The PCP list (``order_to_pindex()``, 6.x orders) a block of ``order`` and
    migratetype ``mt`` is on, or -1 for one no PCP keeps (``pcp_allowed_order()``;
    MIGRATE_HIGHATOMIC and above go to the movable list, as ``free_frozen_pages()`` does)."""
    return _PCP_LIST.get((order, mt), -1)


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
    drains_by_cause: dict[str, int] = field(default_factory=dict)       # TRACE_DRAIN_CAUSES
    drain_pages_by_cause: dict[str, int] = field(default_factory=dict)


@dataclass
class StartLists:
    """One CPU's PCP lists at the start of the trace, as the trace reveals them.

    Indexed by pindex (``order_to_pindex()``); pages.  See the module docstring.
    """

    balance: list[int] = field(default_factory=lambda: [0] * NR_PCP_LISTS)
    low: list[int] = field(default_factory=lambda: [0] * NR_PCP_LISTS)
    anchor: list[int | None] = field(default_factory=lambda: [None] * NR_PCP_LISTS)
    # The CPU's first order-0 refill (blocks), and the frees onto its lists before it: each
    # free halves pcp->alloc_factor, which only an order-0 refill raises (nr_pcp_alloc()).
    frees_before_refill: int = 0
    first_refill: int | None = None
    in_first_refill: bool = False

    def refill_run(self, order: int) -> None:
        """A run of refill events begins on this CPU."""
        self.in_first_refill = order == 0 and self.first_refill is None
        if self.in_first_refill:
            self.first_refill = 0

    def refill_block(self) -> None:
        if self.in_first_refill:
            self.first_refill = (self.first_refill or 0) + 1

    def freed(self) -> None:
        if self.first_refill is None:
            self.frees_before_refill += 1

    def add(self, pindex: int, pages: int) -> None:
        b = self.balance[pindex] + pages
        self.balance[pindex] = b
        if b < self.low[pindex]:
            self.low[pindex] = b

    def refill(self, pindex: int) -> None:
        """A refill begins: the list is empty now."""
        if self.anchor[pindex] is None:
            self.anchor[pindex] = max(0, -self.balance[pindex])

    def pages(self) -> list[int]:
        """Pages each list held at the start: exact where anchored, else a lower bound."""
        return [a if a is not None else -low for a, low in zip(self.anchor, self.low)]


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
    unknown_frees: int = 0        # pages the trace never allocated, of which
    pre_capture_frees: int = 0    # ... replayed from the pre-capture pool,
    split_frees: int = 0          # ... pieces of a live block, skipped (and above MAX_ORDER)
    order_mismatches: int = 0
    lost_frees: int = 0           # live pages allocated again
    live_blocks: int = 0          # at the end of the trace
    live_pages: int = 0
    peak_live_pages: int = 0
    decay_ticks: int = 0          # decay passes spooled: ticks and ...
    decay_work: int = 0           # ... vmstat_update works, one CPU each
    types: Counter = field(default_factory=Counter)    # (type index, order) -> allocations
    pcp: TracePcp = field(default_factory=TracePcp)
    context_events: Counter = field(default_factory=Counter)   # workqueue event -> count
    system_only_events: int = 0                        # kernel threads, pid 0, perf (see above)
    system_only_example: str = ""                      # the first such comm
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    start_lists: dict[int, StartLists] = field(default_factory=dict)   # cpu -> its lists
    pool: Counter = field(default_factory=Counter)     # (cpu, order, type) -> pre-capture blocks
    list_types: dict[tuple[int, int], int] = field(default_factory=dict)  # (order, mt) -> type
    migratetypes: tuple[int, ...] = MIGRATETYPE_OF    # type -> the migratetype it allocates from

    @property
    def start_pages(self) -> int:
        """Pages the start state holds before the first operation: the pre-capture pool and
        the PCP pages the trace shows (``pcpd.replay.start``)."""
        pool = sum(n << order for (_, order, _), n in self.pool.items())
        return pool + sum(sum(lists.pages()) for lists in self.start_lists.values())

    def list_type(self, order: int, mt: int) -> int:
        """The memdesc type (``TYPES`` index) that the trace allocated most from a list."""
        return self.list_types.get((order, mt), DEFAULT_TYPE_OF_MT.get(mt, T_ANON))


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


# A live block of the trace: its order, memdesc type, allocating CPU, block number and
# the migratetype its allocation asked for (the list it came from and will go back to).
LiveBlock = tuple[int, int, int, int, int]


class Decoder:
    """The state of pass 1 between events, and one handler per event."""

    def __init__(self, spool: OpSpool, decay_interval: float = DECAY_INTERVAL) -> None:
        self.decoded = Decoded()
        self.spool = spool
        self.decay_interval = decay_interval
        self.next_tick: float | None = None
        self.decay_on_work = False
        self.live: dict[int, LiveBlock] = {}              # pfn -> block
        self.pending: OrderedDict[int, str] = OrderedDict()  # freed pfn -> event that freed it
        self.run: dict[int, int] = {}                       # cpu -> the run it is in
        self.refilling: dict[int, tuple[int, int]] = {}     # cpu -> (order, mt) its refill run fills
        self.cpus: set[int] = set()
        # cpu -> (pid, pindex) of its last event if that was a free, for a drain's cause
        self.last_free: dict[int, tuple[int, int] | None] = {}
        self.work: dict[int, str] = {}                      # cpu -> kworker function running
        self.drain_cause: dict[int, str] = {}               # cpu -> cause of its drain run
        self.pageblock_mt: dict[int, int] = {}              # pageblock -> migratetype seen
        self.type_counts: Counter = Counter()               # (order, mt, type) -> allocations
        self.system_only: dict[str, bool] = {}              # comm -> a task only -a records
        self.handlers: dict[str, Callable[[TraceEvent], None]] = {
            MM_PAGE_ALLOC: self.alloc,
            MM_PAGE_FREE: self.free,
            MM_PAGE_FREE_BATCHED: self.free,
            MM_PAGE_ALLOC_ZONE_LOCKED: self.zone_locked,
            MM_PAGE_PCPU_DRAIN: self.pcpu_drain,
            MM_PAGE_ALLOC_EXTFRAG: self.extfrag,
        }
        self.context_handlers: dict[str, Callable[[TraceEvent], None]] = {
            WORKQUEUE_EXECUTE_START: self.work_start,
            WORKQUEUE_EXECUTE_END: self.work_end,
        }

    def feed(self, e: TraceEvent) -> None:
        d = self.decoded
        if d.first_timestamp is None:
            d.first_timestamp = e.timestamp
        d.last_timestamp = e.timestamp
        system_only = self.system_only.get(e.comm)
        if system_only is None:                       # once per comm: a handful in a trace
            system_only = e.comm.startswith(KERNEL_THREADS) or e.comm == RECORDER
            if len(self.system_only) < MAX_COMMS:
                self.system_only[e.comm] = system_only
        if system_only or e.pid == 0:
            if not d.system_only_events:
                d.system_only_example = e.comm or f"pid {e.pid}"
            d.system_only_events += 1
        if e.cpu >= d.nr_cpu_ids:
            d.nr_cpu_ids = e.cpu + 1
        if self.decay_interval > 0 and not self.decay_on_work:
            self.tick(e.timestamp)
        handler = self.handlers.get(e.event)
        if handler is None:
            d.context_events[e.event] += 1
            self.context_handlers[e.event](e)
            return
        d.events[e.event, e.order] += 1
        handler(e)

    def finish(self) -> Decoded:
        d = self.decoded
        d.cpus = sorted(self.cpus)
        d.live_blocks = len(self.live)
        d.list_types = self.best_types()
        d.migratetypes = self.type_migratetypes()
        return d

    def type_migratetypes(self) -> tuple[int, ...]:
        """Each memdesc type's migratetype: the one most of the trace's PCP allocations of
        that type asked for (the model's default where none did, or on a tie).

        The kernel takes it from the GFP flags, so a slab cache without
        SLAB_RECLAIM_ACCOUNT (kmalloc, skbuff) is Unmovable and a dentry cache
        Reclaimable, where the model gives each memdesc type one migratetype
        (``MIGRATETYPE_OF``: slab Reclaimable).  A network trace's skbuff slabs
        replayed as Reclaimable refilled an empty list where the kernel's
        Unmovable one held 472 pages: 1.34x the kernel's refill pages."""
        counts: dict[int, Counter] = {}
        for (_, mt, t), n in self.type_counts.items():
            counts.setdefault(t, Counter())[mt if mt < MIGRATE_PCPTYPES else MIGRATE_MOVABLE] += n
        return tuple(max(counts[t], key=lambda mt: (counts[t][mt], mt == MIGRATETYPE_OF[t]))
                     if t in counts else MIGRATETYPE_OF[t] for t in range(len(TYPES)))

    def best_types(self) -> dict[tuple[int, int], int]:
        best: dict[tuple[int, int], tuple[int, int]] = {}
        for (order, mt, t), n in self.type_counts.items():
            if n > best.get((order, mt), (0, 0))[0]:
                best[order, mt] = (n, t)
        return {key: t for key, (_, t) in best.items()}

    def lists(self, cpu: int) -> StartLists:
        lists = self.decoded.start_lists.get(cpu)
        if lists is None:
            lists = self.decoded.start_lists[cpu] = StartLists()
        return lists

    def learn_pageblock(self, pfn: int, mt: int, sure: bool) -> None:
        """Remember a pageblock's migratetype: a drain prints it (``sure``), an allocation
        shows the list it came from."""
        if 0 <= mt < MIGRATE_PCPTYPES and (sure or (pfn >> PAGEBLOCK_ORDER) not in self.pageblock_mt):
            if len(self.pageblock_mt) < MAX_PAGEBLOCKS:
                self.pageblock_mt[pfn >> PAGEBLOCK_ORDER] = mt

    def tick(self, timestamp: float) -> None:
        """Spool the decay passes due by ``timestamp`` (at most MAX_DECAY_TICKS of them)."""
        if self.next_tick is None:
            self.next_tick = timestamp + self.decay_interval
        elif timestamp >= self.next_tick:
            ticks = int((timestamp - self.next_tick) // self.decay_interval) + 1
            self.next_tick += ticks * self.decay_interval
            for _ in range(min(ticks, MAX_DECAY_TICKS)):
                self.spool.add(OP_DECAY, 0, 0, 0, DECAY_ALL_CPUS)
                self.decoded.decay_ticks += 1

    # --- what the kernel's PCP did: counted, not replayed

    def zone_locked(self, e: TraceEvent) -> None:
        pcp = self.decoded.pcp
        self.last_free[e.cpu] = None
        if e.percpu_refill == 1:
            pcp.refill_blocks += 1
            pcp.refill_pages += 1 << e.order
            pindex = pcp_list(e.order, e.migratetype)
            lists = self.lists(e.cpu)
            block = (e.order, e.migratetype)
            # rmqueue_bulk() fills one list: a run of another order or migratetype is another
            # refill (alloc_pages_bulk() refills with no mm_page_alloc between them)
            if self.run.get(e.cpu) != REFILL_RUN or self.refilling.get(e.cpu) != block:
                pcp.refills += 1
                self.run[e.cpu] = REFILL_RUN
                self.refilling[e.cpu] = block
                lists.refill_run(e.order)
                if pindex >= 0:
                    lists.refill(pindex)
            lists.refill_block()
            if pindex >= 0:
                lists.add(pindex, 1 << e.order)
        else:
            pcp.buddy_blocks += 1
            self.run[e.cpu] = NO_RUN

    def pcpu_drain(self, e: TraceEvent) -> None:
        pcp = self.decoded.pcp
        pcp.drain_blocks += 1
        pages = 1 << e.order
        pcp.drain_pages += pages
        pindex = pcp_list(e.order, e.migratetype)
        if self.run.get(e.cpu) != DRAIN_RUN:
            pcp.drains += 1
            self.run[e.cpu] = DRAIN_RUN
            cause = self.drain_cause[e.cpu] = self.cause_of_drain(e, pindex)
            pcp.drains_by_cause[cause] = pcp.drains_by_cause.get(cause, 0) + 1
        cause = self.drain_cause[e.cpu]
        pcp.drain_pages_by_cause[cause] = pcp.drain_pages_by_cause.get(cause, 0) + pages
        if pindex >= 0:
            self.lists(e.cpu).add(pindex, -pages)
        self.learn_pageblock(e.pfn, e.migratetype, sure=True)

    def cause_of_drain(self, e: TraceEvent, pindex: int) -> str:
        """Why the drain run that ``e`` starts happened (the module docstring's rules)."""
        last = self.last_free.get(e.cpu)
        if last is not None and last[0] == e.pid and last[1] in (pindex, -1):
            return DRAIN_FREE
        work = self.work.get(e.cpu)
        if work is not None:
            return WORK_CAUSES.get(work, DRAIN_OTHER)
        return DRAIN_DECAY if e.comm.startswith("kworker/") else DRAIN_ALL

    def extfrag(self, e: TraceEvent) -> None:
        """Only counted; it ends no run (a claim inside a refill emits it)."""

    # --- context: which work a kworker runs

    def work_start(self, e: TraceEvent) -> None:
        self.work[e.cpu] = e.function
        if e.function == VMSTAT_UPDATE and self.decay_interval > 0:
            self.decay_on_work = True             # the kernel's own decay times from now on
            self.spool.add(OP_DECAY, e.cpu, 0, 0, DECAY_ONE_CPU)
            self.decoded.decay_ticks += 1
            self.decoded.decay_work += 1

    def work_end(self, e: TraceEvent) -> None:
        self.work.pop(e.cpu, None)

    # --- requests: replayed

    def alloc(self, e: TraceEvent) -> None:
        d = self.decoded
        self.run[e.cpu] = NO_RUN
        self.last_free[e.cpu] = None
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
        mt = e.migratetype
        self.live[e.pfn] = (e.order, t, e.cpu, d.allocs, mt)
        self.spool.add(OP_ALLOC, e.cpu, e.order, t, d.allocs)
        self.cpus.add(e.cpu)
        d.allocs += 1
        d.types[t, e.order] += 1
        d.live_pages += 1 << e.order
        if d.live_pages > d.peak_live_pages:
            d.peak_live_pages = d.live_pages
        pindex = pcp_list(e.order, mt)
        if pindex >= 0:                           # rmqueue_pcplist(): off the list of mt
            self.lists(e.cpu).add(pindex, -(1 << e.order))
            self.type_counts[e.order, mt, t] += 1
        self.learn_pageblock(e.pfn, mt, sure=False)

    def lose(self, block: LiveBlock) -> None:
        """Free, on its own CPU, a live block whose free the trace lost."""
        order, t, cpu, number, _ = block
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
            self.unknown_free(e)
        else:
            self.free_block(e, block)
        self.pending[e.pfn] = e.event
        self.pending.move_to_end(e.pfn)
        if len(self.pending) > PAIR_WINDOW:
            self.pending.popitem(last=False)

    def free_block(self, e: TraceEvent, block: LiveBlock) -> None:
        d = self.decoded
        order, t, cpu, number, mt = block
        if e.event == MM_PAGE_FREE and e.order != order:
            d.order_mismatches += 1
        self.spool.add(OP_FREE, e.cpu, order, t, number)
        self.cpus.add(e.cpu)
        d.frees += 1
        d.remote_frees += cpu != e.cpu
        d.live_pages -= 1 << order
        self.onto_list(e, order, self.pageblock_mt.get(e.pfn >> PAGEBLOCK_ORDER, mt))

    def unknown_free(self, e: TraceEvent) -> None:
        """A free of a page the trace never allocated: a piece of a live block (skipped), or
        a block allocated before the capture (replayed from the pool)."""
        d = self.decoded
        d.unknown_frees += 1
        if self.inside_live_block(e.pfn):
            d.split_frees += 1
            self.last_free[e.cpu] = None
            return
        # mm_page_free_batched prints order 0 (and has no partner only before v3.3)
        order = e.order if e.event == MM_PAGE_FREE else 0
        if order > MAX_PAGE_ORDER:                # not a block the model can hold: counted only
            self.last_free[e.cpu] = None
            return
        mt = self.pageblock_mt.get(e.pfn >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)
        t = self.type_of(order, mt)
        self.spool.add(OP_FREE_PRE, e.cpu, order, t, 0)
        self.cpus.add(e.cpu)
        d.pre_capture_frees += 1
        d.pool[e.cpu, order, t] += 1
        self.onto_list(e, order, mt)

    def inside_live_block(self, pfn: int) -> bool:
        """Whether ``pfn`` lies inside a live block of a higher order (its head is live)."""
        live = self.live
        for order in range(1, MAX_PAGE_ORDER + 1):
            block = live.get(pfn & ~((1 << order) - 1))
            if block is not None and block[0] >= order:
                return True
        return False

    def type_of(self, order: int, mt: int) -> int:
        """The memdesc type a pre-capture block of ``order`` on list ``mt`` replays as: the
        type the trace allocated most from that list so far, else the list's default."""
        best, n = DEFAULT_TYPE_OF_MT.get(mt, T_ANON), 0
        counts = self.type_counts
        for t in range(len(TYPES)):
            c = counts.get((order, mt, t), 0)
            if c > n:
                best, n = t, c
        return best

    def onto_list(self, e: TraceEvent, order: int, mt: int) -> None:
        """free_frozen_pages(): the block goes onto the freeing CPU's list of its migratetype."""
        pindex = pcp_list(order, mt)
        self.last_free[e.cpu] = (e.pid, pindex)
        if pindex >= 0:
            lists = self.lists(e.cpu)
            lists.add(pindex, 1 << order)
            lists.freed()
