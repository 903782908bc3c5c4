"""Multi-process engine benchmark: worker scaling and PCP versus no PCP.

Runs real `pcpd run` daemons (in this process, workers in their own
processes) on a PCP-friendly workload (order-0 anon pages, a small working
set, so nearly every operation is a PCP hit) and reports, from one run:

  scaling          aggregate ops/s with 1 worker and with N workers, and the ratio
                   (goal >= 1.8x for 2 workers on a 2-core machine)
  pcp_vs_nopcp     zone->lock acquisitions per operation and ops/s with the PCP,
                   and with the boot pageset (high 0, batch 1: every operation
                   goes to the buddy under zone->lock)

    python bench/engine.py [--duration 5] [--workers 2] [--json]

Figures are medians of --runs runs and are measured over a window that opens
after a one-second warm-up.  The machine is shared: compare figures from one
invocation only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcpd.config.load import parse_settings  # noqa: E402
from pcpd.daemon.supervisor import Daemon, RunOptions  # noqa: E402

WORKLOAD = """
name = "bench-engine"
seed = 1
cpus = {cpus}
[arena]
memory = "256MiB"
[pcp]
enabled = {pcp}
[exporter]
address = ""
[[workload]]
name = "hits"
types = {{ anon = 1 }}
orders = {{ 0 = 1 }}
working_set = 64
burst = 1
"""


def measure(cpus: list[int], pcp: bool, duration: float) -> dict:
    settings = parse_settings(WORKLOAD.format(cpus=cpus, pcp=str(pcp).lower()), "<bench>")
    options = RunOptions(duration=duration + 1.0, listen="", warmup=1.0, quiet=True,
                         status_interval=1e9, audit_interval=1e9)
    outcome = Daemon(settings, options).run()
    if outcome.exit_code != 0:
        raise SystemExit(f"benchmark run failed (exit {outcome.exit_code})")
    m = outcome.measurement
    if m.start is None or m.end is None:
        raise SystemExit("benchmark run ended before its measured window opened")
    ops = m.end.ops() - m.start.ops()
    locks = m.end.total("lock_acquisitions") - m.start.total("lock_acquisitions")
    return {"ops_per_s": ops / m.seconds, "lock_acquisitions_per_op": locks / max(ops, 1)}


def median_of(runs: int, *args) -> dict:
    results = [measure(*args) for _ in range(runs)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scaling", metavar="N,N,...",
                        help="also report ops/s for each of these worker counts (machines with "
                             "more CPUs: e.g. 1,2,4,8,16)")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    available = sorted(os.sched_getaffinity(0))
    cpus = available[:args.workers]
    if args.scaling:
        curve = {n: median_of(args.runs, available[:n], True, args.duration)["ops_per_s"]
                 for n in map(int, args.scaling.split(","))}
        for n, rate in curve.items():
            print(f"  {n:3d} workers {rate:14,.0f} ops/s   {rate / curve[min(curve)]:6.2f}x", flush=True)

    one = median_of(args.runs, cpus[:1], True, args.duration)
    many = median_of(args.runs, cpus, True, args.duration)
    nopcp = median_of(args.runs, cpus, False, args.duration)
    figures = {
        "workers": len(cpus),
        "ops_per_s_1_worker": one["ops_per_s"],
        f"ops_per_s_{len(cpus)}_workers": many["ops_per_s"],
        "scaling_ratio": many["ops_per_s"] / one["ops_per_s"],
        "pcp_ops_per_s": many["ops_per_s"],
        "pcp_lock_acquisitions_per_op": many["lock_acquisitions_per_op"],
        "nopcp_ops_per_s": nopcp["ops_per_s"],
        "nopcp_lock_acquisitions_per_op": nopcp["lock_acquisitions_per_op"],
        "pcp_speedup": many["ops_per_s"] / nopcp["ops_per_s"],
    }
    if args.scaling:
        figures["scaling_curve_ops_per_s"] = curve
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"PCP-hit workload, {args.duration:g} s measured, median of {args.runs} runs")
    print(f"  1 worker        {one['ops_per_s']:12,.0f} ops/s")
    print(f"  {len(cpus)} workers       {many['ops_per_s']:12,.0f} ops/s   "
          f"scaling {figures['scaling_ratio']:.2f}x")
    print(f"  PCP             {many['lock_acquisitions_per_op']:12.4f} zone->lock acquisitions/op")
    print(f"  no PCP          {nopcp['lock_acquisitions_per_op']:12.4f} zone->lock acquisitions/op  "
          f"{nopcp['ops_per_s']:,.0f} ops/s  (PCP is {figures['pcp_speedup']:.2f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
