"""Virtual-time benchmark: a preset on N virtual CPUs, era against era, and how long it takes here.

Runs ``pcpd simulate``'s engine in this process for each (CPU count, era) and
prints, per run, the wall-clock time on this machine (the only figure that
depends on the machine) and the virtual figures the 6.7 auto-tuning series
reported on: pages taken from the zone, zone->lock acquisitions, drains by
cause, pages held on PCPs, and the virtual lock waits.

    python bench/simulate.py                          # page-fault1, 64 CPUs, eras 5.14 and 6.7
    python bench/simulate.py --cpus 64,128,256 --ops 12288
    python bench/simulate.py --config configs/soak.toml --cpus 16 --policy memdesc --json
    python bench/simulate.py --cpus 128,256 --set arena.memory='"16GiB"'   # any config key, TOML value

Virtual figures are deterministic (same config, seed and CPU count: same
numbers on any machine); wall times are this machine's, and on a shared
machine only comparable within one invocation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcpd.config.load import load_settings, replace_path  # noqa: E402
from pcpd.simulate.engine import Simulation  # noqa: E402
from pcpd.simulate.output import virtual_figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, cpus: int, era: str, policy: str | None, ops: int | None,
        overrides: tuple[tuple[str, object], ...] = ()) -> dict:
    settings = load_settings(config, available_cpus=range(4096))
    for key, value in overrides:
        settings = replace_path(settings, key, value, available_cpus=range(4096))
    settings = replace_path(settings, "cpus", list(range(cpus)), available_cpus=range(cpus))
    settings = replace_path(settings, "kernel.era", era, available_cpus=range(cpus))
    result = Simulation(settings, policy, ops).run()
    totals = result.snapshot.totals()
    v = virtual_figures(result)
    return {
        "cpus": cpus, "era": era, "policy": result.policy, "ops": result.ops,
        "memory_gib": settings.arena.memory_bytes / (1 << 30),
        "wall_seconds": round(result.wall_seconds, 1),
        "virtual_ms": result.seconds * 1e3,
        "batch": result.limits.batch, "high_min": result.limits.high_min, "high_max": result.limits.high_max,
        "allocs": sum(totals[n] for n in ("alloc_hit", "alloc_refill", "alloc_buddy")),
        "refill_pages": totals["refill_pages"], "refills": totals["refills"],
        "lock_acquisitions": totals["lock_acquisitions"],
        "drains_high": totals["drains_high"], "drains_free_high": totals["drains_free_high"],
        "drains_decay": totals["drains_decay"],
        "pcp_pages_end": totals["pcp_pages"], "pcp_pages_mean": round(result.pcp_pages_mean),
        "lock_contended": v["lock_contended_ratio"], "lock_busy": v["lock_busy_ratio"],
        "wait_p50_us": _us(v["lock_wait_p50_seconds"]), "wait_p99_us": _us(v["lock_wait_p99_seconds"]),
        "hold_p50_us": _us(v["lock_hold_p50_seconds"]), "waiters_max": v["lock_waiters_max"],
        "inversions": v["lock_order_inversions"], "audit_ok": result.audit_ok,
    }


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "page-fault1.toml"))
    parser.add_argument("--cpus", default="64", help="comma-separated virtual CPU counts")
    parser.add_argument("--eras", default="5.14,6.7")
    parser.add_argument("--policy")
    parser.add_argument("--ops", type=int, help="operations per CPU (default: the config's simulate.ops)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key with a TOML value, e.g. arena.memory='\"16GiB\"'")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    overrides = []
    for item in args.set:
        key, _, value = item.partition("=")
        overrides.append((key, tomllib.loads(f"v = {value}")["v"]))
    rows = []
    for cpus in (int(n) for n in args.cpus.split(",")):
        for era in args.eras.split(","):
            row = run(args.config, cpus, era, args.policy, args.ops, tuple(overrides))
            rows.append(row)
            if not args.json:
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if all(row["audit_ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
