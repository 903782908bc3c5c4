"""pcpd hot-path benchmark: one process, one CPU, medians of several runs.

Figures, per policy unless stated:

pcp_hit_pairs_per_s
    order-0 anon alloc+free pairs per second with every allocation a PCP
    hit (goal: at least 2,000,000 in one process; 1,000,000 for
    memdesc-pcpdesc, whose hit is two slab operations and a rewrite of the
    block's memdesc words).
order9_us_per_pair, order9_legacy_compound_ratio
    microseconds per order-9 anon (THP) alloc+free pair on a warm PCP, and
    legacy's time over compound's: the cost of rebuilding and undoing 511
    tails on every round trip.
refill_drain_us_per_batch
    microseconds to refill an empty order-0 list with one batch under
    zone->lock (rmqueue_bulk) and drain that batch back to the buddy
    (free_pcppages_bulk), including the one allocation and free between.
zone_us_per_page, zone_path_to_hit_ratio
    that batch's microseconds per page, and those over the microseconds of
    one PCP-hit operation (half a pcp_hit_pairs_per_s pair): what a page
    moved under zone->lock costs against a PCP hit.  Each run times the hits
    and the refill+drain back to back; the ratio is the median of the runs'
    ratios, so a change in the machine's load between runs cancels out.  In the
    kernel the ratio is about 1-2 (page_bench: ~54 ns per order-0 alloc+free
    pair; rmqueue_bulk() and free_pcppages_bulk() tens of ns per page); the
    goal is at most 2, so zone->lock hold times, and the contention they
    cause, stand to the fast path as they do in the kernel.

Every model is the one ``pcpd costs`` measures (pcpd.analysis.costs.model_spec: era
6.7, PCP sized as this machine's Normal zone, batch 63; memdesc policies on
16-byte pages).  Each timed loop binds the policy's methods locally and runs
with the garbage collector off, as timeit does; the counters are checked
afterwards so a figure never silently measures another path.

Loops are timed in this process's CPU time (``time.process_time``; ``--clock
wall`` for elapsed time), so other jobs on a shared machine slow a figure
through the caches they share, not by taking the CPU away mid-loop.  The
machine's 1-minute load average at the start and the end is part of the
report all the same.

    python bench/run.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from pcpd import core
from pcpd.analysis.costs import DEFAULT_MEMDESC_RECORD, model_spec
from pcpd.kernel import DEFAULT_ERA, HPAGE_PMD_ORDER
from pcpd.policies import POLICIES
from workers.cpu import CpuAllocator, SharedLocks, create_arena
from workers.policies import T_ANON

GOAL_PAIRS_PER_S = 2_000_000
# a memdesc-pcpdesc hit is two descriptor slab operations and a memdesc word rewrite
GOAL_PAIRS_PER_S_BY_POLICY = {"memdesc-pcpdesc": 1_000_000}
GOAL_ZONE_PATH_TO_HIT_RATIO = 2.0
ERA = DEFAULT_ERA

# (runs, order-0 pairs, order-9 pairs, refill+drain batches) per run
FULL = (5, 200_000, 4_000, 400)
QUICK = (3, 50_000, 1_000, 100)
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


@contextmanager
def one_cpu(policy: str) -> Iterator[CpuAllocator]:
    """A fresh zone and CPU 0 of the costs model; the arena is removed afterwards."""
    spec = model_spec(policy, ERA, DEFAULT_MEMDESC_RECORD)
    arena = create_arena(spec)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        yield cpu
        del cpu
    finally:
        try:
            arena.close()
        finally:
            arena.unlink()


@contextmanager
def no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check(cpu: CpuAllocator, name: str, expect: int) -> None:
    if cpu.counters[name] != expect:
        raise RuntimeError(f"{cpu.policy.name}: {name} is {cpu.counters[name]}, expected {expect}: "
                           "the loop did not measure the path it names")


def hit_pairs(cpu: CpuAllocator, order: int, n: int, clock: Callable[[], float] = time.process_time) -> float:
    """Seconds for n alloc+free pairs of one order, every allocation a PCP hit."""
    alloc, free = cpu.policy.alloc, cpu.policy.free
    free(alloc(T_ANON, order), order, T_ANON)          # the list now holds blocks
    hits = cpu.counters["alloc_hit"]
    with no_gc():
        t0 = clock()
        for _ in range(n):
            pfn = alloc(T_ANON, order)
            free(pfn, order, T_ANON)
        elapsed = clock() - t0
    _check(cpu, "alloc_hit", hits + n)
    return elapsed


def refill_drain(cpu: CpuAllocator, n: int,
                 clock: Callable[[], float] = time.process_time) -> tuple[float, int]:
    """Seconds for n refill+drain cycles of an order-0 list, and pages per batch."""
    alloc, free, drain_all = cpu.policy.alloc, cpu.policy.free, cpu.policy.drain_all
    c = cpu.counters
    refills, pages, drained = c["refills"], c["refill_pages"], c["drain_pages_drain_all"]
    with no_gc():
        t0 = clock()
        for _ in range(n):
            pfn = alloc(T_ANON, 0)                      # empty list: rmqueue_bulk()
            free(pfn, 0, T_ANON)
            drain_all()                                 # free_pcppages_bulk() of the batch
        elapsed = clock() - t0
    _check(cpu, "refills", refills + n)
    batch, rest = divmod(c["refill_pages"] - pages, n)
    if rest:
        raise RuntimeError(f"{cpu.policy.name}: refills of different sizes")
    _check(cpu, "drain_pages_drain_all", drained + batch * n)
    return elapsed, batch


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def run(quick: bool, policies: Sequence[str] | None = None, clock_name: str = "cpu") -> dict:
    runs, pairs0, pairs9, batches = QUICK if quick else FULL
    clock = CLOCKS[clock_name]
    policies = list(POLICIES) if policies is None else policies
    load_start = os.getloadavg()[0]
    out: dict = {"pcp_hit_pairs_per_s": {}, "order9_us_per_pair": {},
                 "refill_drain_us_per_batch": {}}
    batch_pages: dict[str, int] = {}
    hit_us: dict[str, float] = {}
    zone_us: dict[str, float] = {}
    zone_ratio: dict[str, float] = {}
    for policy in policies:
        # order-0 hits and refill+drain cycles on two CPUs (two zones), timed back to back
        # in each run so that both halves of a run's ratio see the same machine
        with one_cpu(policy) as hit_cpu, one_cpu(policy) as zone_cpu:
            # untimed first: the first policy measured would otherwise pay for the
            # process's warm-up (its first runs read up to 25% slower than later ones)
            hit_pairs(hit_cpu, 0, pairs0 // 10, clock)
            refill_drain(zone_cpu, batches // 10, clock)
            hits, cycles, sizes = [], [], set()
            for _ in range(runs):
                hits.append(hit_pairs(hit_cpu, 0, pairs0, clock) / (2 * pairs0) * 1e6)  # us per op
                elapsed, pages = refill_drain(zone_cpu, batches, clock)
                sizes.add(pages)
                cycles.append(elapsed / batches * 1e6)                            # us per batch
        (pages,) = sizes                    # refill_drain() refuses batches of different sizes
        batch_pages[policy] = pages
        out["pcp_hit_pairs_per_s"][policy] = round(1e6 / (2 * statistics.median(hits)))
        out["refill_drain_us_per_batch"][policy] = round(statistics.median(cycles), 2)
        hit_us[policy] = statistics.median(hits)
        zone_us[policy] = statistics.median(cycles) / pages
        zone_ratio[policy] = statistics.median(c / pages / h for h, c in zip(hits, cycles))
        with one_cpu(policy) as cpu:
            out["order9_us_per_pair"][policy] = round(
                median_of(runs, lambda: hit_pairs(cpu, HPAGE_PMD_ORDER, pairs9, clock)) / pairs9 * 1e6, 3)
    nine = out["order9_us_per_pair"]
    if "legacy" in nine and "compound" in nine:
        out["order9_legacy_compound_ratio"] = round(nine["legacy"] / nine["compound"], 2)
    out["batch_pages"] = batch_pages
    out["pcp_hit_us_per_op"] = {p: round(us, 4) for p, us in hit_us.items()}
    out["zone_us_per_page"] = {p: round(us, 3) for p, us in zone_us.items()}
    out["zone_path_to_hit_ratio"] = {p: round(r, 2) for p, r in zone_ratio.items()}
    out.update(goal_pcp_hit_pairs_per_s={p: GOAL_PAIRS_PER_S_BY_POLICY.get(p, GOAL_PAIRS_PER_S)
                                         for p in policies},
               goal_zone_path_to_hit_ratio=GOAL_ZONE_PATH_TO_HIT_RATIO,
               runs=runs, quick=quick, clock=clock_name, era=ERA,
               core="compiled" if core.running_compiled() else f"interpreted ({core.why_interpreted()})",
               memdesc_record_bytes=DEFAULT_MEMDESC_RECORD,
               load_average_start=round(load_start, 2),
               load_average_end=round(os.getloadavg()[0], 2), cpus=os.cpu_count(),
               python=platform.python_version(), machine=platform.machine())
    return out



def format_report(r: dict) -> str:
    sizes = set(r["batch_pages"].values())
    batch = f"batch {sizes.pop()}" if len(sizes) == 1 else "refill batches by policy"
    lines = [f"pcpd bench: Python {r['python']}, {r['core']} core, medians of {r['runs']} runs "
             f"({r['clock']} time); era {r['era']}, {batch}; memdesc policies on "
             f"{r['memdesc_record_bytes']}-byte pages",
             f"machine: {r['cpus']} CPUs, 1-minute load average {r['load_average_start']:.2f} at the "
             f"start, {r['load_average_end']:.2f} at the end",
             "",
             "order-0 PCP-hit alloc+free pairs/s:"]
    for policy, value in r["pcp_hit_pairs_per_s"].items():
        goal = r["goal_pcp_hit_pairs_per_s"][policy]
        mark = "" if value >= goal else "  (below goal)"
        lines.append(f"  {policy:<16} {value:>10,}  goal >= {goal:,}{mark}")
    lines.append("order-9 alloc+free on a warm PCP, us per pair:")
    for policy, value in r["order9_us_per_pair"].items():
        lines.append(f"  {policy:<16} {value:>10.2f}")
    if "order9_legacy_compound_ratio" in r:
        lines.append(f"  legacy / compound {r['order9_legacy_compound_ratio']:>9.2f}x")
    lines.append("refill + drain of one order-0 batch under zone->lock, us:")
    for policy, value in r["refill_drain_us_per_batch"].items():
        lines.append(f"  {policy:<16} {value:>10.1f}  ({r['batch_pages'][policy]} pages, "
                     f"{r['zone_us_per_page'][policy]:.2f} per page)")
    goal = r["goal_zone_path_to_hit_ratio"]
    lines.append(f"zone path / PCP hit: us per page under zone->lock over us per PCP-hit operation "
                 f"(kernel ~1-2; goal <= {goal:g}):")
    for policy, value in r["zone_path_to_hit_ratio"].items():
        mark = "" if value <= goal else "  (above goal)"
        lines.append(f"  {policy:<16} {value:>10.2f}x  ({r['zone_us_per_page'][policy]:.2f} us / "
                     f"{r['pcp_hit_us_per_op'][policy]:.3f} us){mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--policy", action="append", choices=list(POLICIES), metavar="NAME",
                        help="only this policy (repeatable; default every registered policy)")
    parser.add_argument("--clock", choices=CLOCKS, default="cpu",
                        help="time loops in this process's CPU time (default) or elapsed time")
    args = parser.parse_args(argv)
    result = run(args.quick, args.policy, args.clock)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
