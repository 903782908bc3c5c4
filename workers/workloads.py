"""Seeded operation streams for one worker, driven by a WorkloadSettings.

A workload decides, operation by operation, whether to allocate (which
memdesc type, which order) or free (which held block, and whether to hand it
to another CPU).  It keeps the blocks it holds, so every choice depends only
on the seed, the settings and what the allocator returned: one worker and
one seed give the same operations, and the same counts, on every run.

The shape:
  * below ``working_set`` pages held the stream allocates, above it frees,
    ``burst`` operations at a time (burst 1 hovers around the working set);
  * which held block a free picks follows ``lifetime``: "fifo" (oldest
    first), "lifo" (newest) or "random";
  * every ``pressure.period`` operations a wave frees ``free_fraction`` of
    what is held at once, as reclaim would, then allocation refills it;
  * a ``cross_cpu.fraction`` of the frees of eligible types are handed to a
    target CPU, which frees them there (its own PCP);
  * a failed allocation backs off: it frees a quarter of what is held (as
    reclaim would) and asks the daemon for a drain of every PCP.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Callable, Sequence

from pcpd.config.settings import WorkloadSettings
from pcpd.kernel import MEMDESC_TYPES
from pcpd.model.pagewords import NIL
from workers.policies import Policy

BACKOFF_FRACTION = 4             # a failed allocation frees 1/4 of what is held


class _Choice:
    """Weighted choice by one random() draw (faster than random.choices per op)."""

    def __init__(self, items: Sequence, weights: Sequence[float]) -> None:
        self.items = list(items)
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, r: float):
        return self.items[bisect.bisect_right(self.cum, r * self.total)]


class Workload:
    """One worker's op stream.  ``send(pfn, order, t, dst) -> bool`` hands a
    block to dst (False when that ring is full: the block is freed here)."""

    def __init__(self, ws: WorkloadSettings, seed: int, cpu: int, workers: Sequence[int],
                 slot_of: dict[int, int], send: Callable[[int, int, int, int], bool]) -> None:
        self.settings = ws
        self.rng = random.Random(f"{seed}/{cpu}/{ws.name}")
        self.types = _Choice([MEMDESC_TYPES.index(t) for t in ws.types], list(ws.types.values()))
        self.orders = {}
        for name in ws.types:
            weights = ws.orders_for(name)
            self.orders[MEMDESC_TYPES.index(name)] = _Choice(list(weights), list(weights.values()))
        fifo = ws.lifetime == "fifo"
        self.held: deque[tuple[int, int, int]] | list[tuple[int, int, int]] = deque() if fifo else []
        self.held_pages = 0
        self.mode_alloc = True
        self.left_in_burst = 0
        self.since_wave = 0
        targets = ws.cross_cpu.targets_for(cpu, workers)
        self.cross_fraction = ws.cross_cpu.fraction if targets else 0.0
        self.cross_slots = [slot_of[c] for c in targets]
        self.cross_types = frozenset(MEMDESC_TYPES.index(t) for t in ws.cross_cpu.types) \
            or frozenset(range(len(MEMDESC_TYPES)))
        self.send = send
        self.waves = 0
        self.drain_wanted = False

    # -- one operation ---------------------------------------------------------
    def step(self, policy: Policy) -> None:
        ws = self.settings
        if ws.pressure.period:
            self.since_wave += 1
            if self.since_wave >= ws.pressure.period:
                self.since_wave = 0
                self.waves += 1
                self.free_some(policy, ws.pressure.free_fraction)
                return
        if not self.left_in_burst:
            self.mode_alloc = self.held_pages < ws.working_set or not self.held
            self.left_in_burst = ws.burst
        self.left_in_burst -= 1
        if self.mode_alloc:
            self.alloc_one(policy)
        elif self.held:
            self.free_one(policy)

    def alloc_one(self, policy: Policy) -> None:
        rng = self.rng
        t = self.types.pick(rng.random())
        order = self.orders[t].pick(rng.random())
        pfn = policy.alloc(t, order)
        if pfn == NIL:
            self.drain_wanted = True
            self.left_in_burst = 0
            self.free_some(policy, 1 / BACKOFF_FRACTION)
            return
        self.held.append((pfn, order, t))
        self.held_pages += 1 << order

    def free_one(self, policy: Policy) -> None:
        held = self.held
        if isinstance(held, deque):                 # lifetime "fifo"
            block = held.popleft()
        elif self.settings.lifetime == "lifo":
            block = held.pop()
        else:                                       # random: swap-remove
            i = int(self.rng.random() * len(held))
            block = held[i]
            held[i] = held[-1]
            held.pop()
        pfn, order, t = block
        self.held_pages -= 1 << order
        if self.cross_fraction and t in self.cross_types and self.rng.random() < self.cross_fraction:
            dst = self.cross_slots[int(self.rng.random() * len(self.cross_slots))]
            policy.send(pfn, order, t, dst)
            if self.send(pfn, order, t, dst):
                return
            policy.receive(pfn, order, t)           # ring full: free it here after all
        policy.free(pfn, order, t)

    def free_some(self, policy: Policy, fraction: float) -> None:
        """Free a share of what is held, in lifetime order (reclaim, a wave, a back-off)."""
        for _ in range(int(len(self.held) * fraction + 0.999)):
            self.free_one(policy)

    def release_all(self, policy: Policy) -> None:
        """Free everything held, here (worker exit); no cross-CPU hand-offs."""
        while self.held:
            pfn, order, t = self.held.pop()
            policy.free(pfn, order, t)
        self.held_pages = 0
