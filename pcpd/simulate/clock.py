"""Virtual time: each CPU's clock, and zone->lock as a virtual resource with FIFO waiters.

The engine (``pcpd.simulate.engine``) runs one step of one CPU at a time, the
CPU whose clock is earliest (ties: the lower slot).  A step starts at the
CPU's clock (``CpuClock.now``) and moves it on by what the step cost
(``pcpd.simulate.costs``).  When the step takes zone->lock, the
``VirtualZoneLock`` hook that replaces the CPU's ``ZoneLock`` does, at that
point of the step:

1. charge what the step did so far (the cost potential's increase): the
   request time ``t_req``;
2. grant the lock at ``max(t_req, free_at)``, where ``free_at`` is when the
   previous holder released it: the wait is the difference;
3. on release, price the hold: ``lock_ns``, plus ``lock_handoff_ns`` when the
   last holder was another CPU, plus ``locked_line_ns`` per line the buddy work
   charged while held; ``free_at`` moves to the release time.

Requests are granted in the order the engine reaches them.  A step's first
request is made at the step's start time (nothing is charged before it unless
the step did work first), and steps run in start-time order, so those are
granted strictly first come, first served.  A request made later in a step
(after the step's own work, or a second acquisition in a pressure wave or a
drain of every PCP) is granted after the requests the engine reached first,
even one made at a later virtual time: such a grant is counted as an order
inversion (``ZoneLockClock.inversions``), so the figures say how far from
exact FIFO a run was.

Every wait and hold is recorded exactly (integer picoseconds), so the
contention share, the wait and hold quantiles, owner switches and the most
waiters at once are exact and depend on nothing but the seed and the config.
The same events also fill the CPU's ordinary lock counters (in nanoseconds),
so ``pcpd.model.stats.derive`` reads a virtual run as it reads a real one.

Imports: the standard library, ``pcpd.model`` (arena, lock, stats), ``pcpd.simulate.costs``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, field

from pcpd.model.arena import Arena
from pcpd.model.lock import OP_NONE, ZoneLock
from pcpd.model.stats import (
    LOCK_ACQUISITIONS,
    LOCK_CONTENDED,
    LOCK_HOLD_MAX_NS,
    LOCK_HOLD_NS,
    LOCK_OWNER_SWITCHES,
    LOCK_UNCONTENDED,
    LOCK_WAIT_BUCKET,
    LOCK_WAIT_MAX_NS,
    LOCK_WAIT_NS,
    LOCK_WAITERS_MAX,
    Counters,
    wait_bucket,
)
from pcpd.simulate.costs import PS_PER_NS, CostModel

__all__ = ["CpuClock", "ZoneLockClock", "VirtualZoneLock", "LockFigures", "quantile"]

_ACQ, _UNCONT, _CONT = LOCK_ACQUISITIONS, LOCK_UNCONTENDED, LOCK_CONTENDED
_WAIT, _WAIT_MAX, _HOLD, _HOLD_MAX = LOCK_WAIT_NS, LOCK_WAIT_MAX_NS, LOCK_HOLD_NS, LOCK_HOLD_MAX_NS
_SWITCH, _WAITERS_MAX = LOCK_OWNER_SWITCHES, LOCK_WAITERS_MAX

Counting = Callable[[Sequence[int]], int]


def _ns(ps: int) -> int:
    return (ps + PS_PER_NS // 2) // PS_PER_NS


@dataclass(slots=True)
class CpuClock:
    """Where one virtual CPU is in virtual time.

    ``now`` is the CPU's clock in picoseconds (within a step: how far the step
    has got); ``mark`` is the cost potential already charged to it.
    """

    slot: int
    v: MutableSequence[int]          # the CPU's Counters.v
    now: int = 0
    mark: int = 0


@dataclass(frozen=True)
class LockFigures:
    """zone->lock in virtual time over a run: exact, from every acquisition."""

    acquisitions: int
    contended: int
    contended_ratio: float | None
    wait_mean_seconds: float | None        # over contended acquisitions, as the real figures
    wait_p50_seconds: float | None
    wait_p90_seconds: float | None
    wait_p99_seconds: float | None
    wait_max_seconds: float | None
    hold_mean_seconds: float | None
    hold_p50_seconds: float | None
    hold_p99_seconds: float | None
    hold_max_seconds: float | None
    owner_switches: int
    waiters_max: int
    busy_ratio: float | None               # share of the run's virtual time the lock was held
    inversions: int                        # grants made out of request-time order (see the module doc)


def quantile(ordered: Sequence[int], q: float) -> int | None:
    """The nearest-rank q-quantile of sorted values; None for none."""
    if not ordered:
        return None
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@dataclass
class ZoneLockClock:
    """zone->lock as one virtual resource shared by every CPU of a run."""

    costs: CostModel
    potential: Counting              # the cost potential of a Counters.v (pcpd.simulate.costs)
    lines: Counting                  # cachelines charged so far by a Counters.v
    free_at: int = 0                 # ps: when the current (or last) holder releases it
    last_slot: int = -1              # the CPU that held it last
    floor: int = 0                   # no request from now on is earlier (the engine's step start)
    busy: int = 0                    # ps held, every hold summed
    inversions: int = 0
    switches: int = 0                # owner switches: a grant to another CPU than the last holder
    waiters_max: int = 0             # most CPUs waiting at once, the requester included
    waits: list[int] = field(default_factory=list)     # ps, contended acquisitions only
    holds: list[int] = field(default_factory=list)     # ps, every acquisition
    _pending: list[tuple[int, int]] = field(default_factory=list)   # (t_req, grant) not yet granted by floor
    _latest_request: int = -1        # the latest request time granted so far
    _holder: CpuClock | None = None
    _hold_start: int = 0
    _lines_at: int = 0
    _switched: bool = False

    def charge(self, cpu: CpuClock) -> None:
        """Move ``cpu``'s clock on by what it did since its last charge."""
        p = self.potential(cpu.v)
        cpu.now += p - cpu.mark
        cpu.mark = p

    def acquire(self, cpu: CpuClock) -> None:
        if self._holder is not None:
            raise RuntimeError(f"zone->lock taken by CPU slot {cpu.slot} while slot "
                               f"{self._holder.slot} holds it: a path takes it twice")
        self.charge(cpu)
        v, request = cpu.v, cpu.now
        grant = max(request, self.free_at)
        if request < self._latest_request:
            self.inversions += 1
        else:
            self._latest_request = request
        v[_ACQ] += 1
        if grant > request:
            self._contended(v, request, grant)
        else:
            v[_UNCONT] += 1
        self._switched = self.last_slot not in (-1, cpu.slot)
        if self._switched:
            v[_SWITCH] += 1
            self.switches += 1
        self.last_slot = cpu.slot
        cpu.now = self._hold_start = grant
        self._lines_at = self.lines(v)
        self._holder = cpu

    def _contended(self, v: MutableSequence[int], request: int, grant: int) -> None:
        wait = grant - request
        self.waits.append(wait)
        floor = self.floor
        pending = [(r, g) for r, g in self._pending if g > floor]
        # waiters at the request: those that asked no later and are granted after it, and this one
        waiters = 1 + sum(1 for r, g in pending if r <= request < g)
        pending.append((request, grant))
        self._pending = pending
        if waiters > v[_WAITERS_MAX]:
            v[_WAITERS_MAX] = waiters
        self.waiters_max = max(self.waiters_max, waiters)
        ns = _ns(wait)
        v[_CONT] += 1
        v[_WAIT] += ns
        if ns > v[_WAIT_MAX]:
            v[_WAIT_MAX] = ns
        v[LOCK_WAIT_BUCKET + wait_bucket(ns)] += 1

    def release(self, cpu: CpuClock) -> None:
        if self._holder is not cpu:
            raise RuntimeError(f"zone->lock released by CPU slot {cpu.slot}, which does not hold it")
        costs, v = self.costs, cpu.v
        hold = costs.lock + costs.locked_line * (self.lines(v) - self._lines_at)
        if self._switched:
            hold += costs.lock_handoff
        cpu.now = self.free_at = self._hold_start + hold
        # what the hold's work bumped is priced by the hold, not again at line_ns
        cpu.mark = self.potential(v)
        self.busy += hold
        self.holds.append(hold)
        ns = _ns(hold)
        v[_HOLD] += ns
        if ns > v[_HOLD_MAX]:
            v[_HOLD_MAX] = ns
        self._holder = None

    def figures(self, seconds: float) -> LockFigures:
        """The run's lock figures; ``seconds`` is its virtual length (for the busy share)."""
        waits, holds = sorted(self.waits), sorted(self.holds)

        def s(ps: float | None) -> float | None:
            return None if ps is None else ps / (PS_PER_NS * 1e9)

        acquisitions = len(holds)
        return LockFigures(
            acquisitions=acquisitions, contended=len(waits),
            contended_ratio=len(waits) / acquisitions if acquisitions else None,
            wait_mean_seconds=s(sum(waits) / len(waits)) if waits else None,
            wait_p50_seconds=s(quantile(waits, 0.5)), wait_p90_seconds=s(quantile(waits, 0.9)),
            wait_p99_seconds=s(quantile(waits, 0.99)), wait_max_seconds=s(waits[-1] if waits else None),
            hold_mean_seconds=s(sum(holds) / acquisitions) if holds else None,
            hold_p50_seconds=s(quantile(holds, 0.5)), hold_p99_seconds=s(quantile(holds, 0.99)),
            hold_max_seconds=s(holds[-1] if holds else None),
            owner_switches=self.switches, waiters_max=self.waiters_max,
            busy_ratio=self.busy / (seconds * PS_PER_NS * 1e9) if seconds > 0 else None,
            inversions=self.inversions,
        )


class VirtualZoneLock(ZoneLock):
    """One CPU's zone->lock in a virtual-time run: the ``ZoneLock`` interface (``with
    lock(op)``, ``acquire``, ``release``) over the shared ``ZoneLockClock``.

    It replaces ``CpuAllocator.zone_lock`` and ``Zone.lock``, so every path that
    takes zone->lock (refills, drains, buddy allocations and frees, a policy's
    own claims) is timed, whoever wrote it.
    """

    def __init__(self, clock: ZoneLockClock, cpu: CpuClock, arena: Arena, counters: Counters) -> None:
        # the real lock's bookkeeping is unused: one process, no pid to record for recovery
        super().__init__(threading.Lock(), arena, counters, cpu.slot)
        self.clock, self.cpu_clock = clock, cpu

    def acquire(self, op: int = OP_NONE) -> None:
        self.clock.acquire(self.cpu_clock)

    def release(self) -> None:
        self.clock.release(self.cpu_clock)
