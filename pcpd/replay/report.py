"""What a replay reports: the results.json object and the terminal report.

The per-policy figures are derived in one place, ``policy_figures``, from
``pcpd.model.stats.derive`` (the definition the experiments and the daemon
use); the legacy model's refills and drains sit beside the trace's own in
``fidelity``.  docs/replay.md lists every key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from pcpd.kernel import HIGH_BOUNDS_ERAS
from pcpd.model import sizing, stats
from pcpd.policies import BASELINE
from pcpd.replay.decode import Decoded, TracePcp
from pcpd.replay.run import PolicyRun
from pcpd.replay.trace import EVENTS, Skipped
from pcpd.replay.zone import ZoneSetup
from workers.policies import TYPES

# --- figures -----------------------------------------------------------------------


def policy_figures(run: PolicyRun) -> dict[str, Any]:
    """The per-policy figures of results.json (see docs/replay.md).

    Every derived figure is ``pcpd.model.stats.derive``'s, the definition the
    experiments and the daemon use (the PCP hit rate is over the allocations
    that got memory); ratios are rounded to 4 places, and None over nothing.
    """
    snap = run.snapshot
    total = snap.total
    fig = stats.derive(snap.totals())
    return {
        "record_bytes": run.record_bytes,
        "ops": fig.ops, "allocs": fig.allocs, "frees": fig.frees,
        "alloc_hit": total("alloc_hit"), "alloc_refill": total("alloc_refill"),
        "alloc_buddy": total("alloc_buddy"),
        "pcp_hit_rate": _rounded(fig.pcp_hit_rate),
        "free_pcp": total("free_pcp"), "free_buddy": total("free_buddy"),
        "refills": total("refills"), "refill_pages": total("refill_pages"),
        "drains": fig.drains,
        "drain_pages": fig.drain_pages,
        "drains_by_cause": {c: total(f"drains_{c}") for c in stats.DRAIN_CAUSES
                            if total(f"drains_{c}")},
        "zone_lock_acquisitions": total("lock_acquisitions"),
        "cachelines": fig.cachelines,
        "cachelines_per_op": _rounded(fig.cachelines_per_op),
        "struct_page_lines_written": fig.struct_page_lines_written,
        "struct_page_lines_read": fig.struct_page_lines_read,
        "descriptor_lines": fig.descriptor_lines, "free_memory_lines": fig.free_memory_lines,
        "lines_by_cause": fig.lines_by_cause,
        "slab_ops": fig.slab_ops,
        "slab_shared": total("slab_shared"),
        "alloc_failures": fig.alloc_failures,
        "frees_skipped": run.frees_skipped,
        "pages_at_end": run.pages_at_end,
        "audit_ok": run.audit_ok,
        "audit_problems": run.audit_problems,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def fidelity(trace: TracePcp, figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The legacy model's refills and drains beside the trace's own."""
    pairs = {"refills": trace.refills, "refill_pages": trace.refill_pages,
             "drains": trace.drains, "drain_pages": trace.drain_pages}
    return {name: {"trace": n, "model": figures[name], "model_per_trace": _ratio(figures[name], n)}
            for name, n in pairs.items()}


# --- results.json ----------------------------------------------------------------------

def results_json(*, source: str, decoded: Decoded, skipped: Skipped, ops: int, zone: ZoneSetup,
                 limits: sizing.PcpLimits, decay_interval: float,
                 runs: dict[str, PolicyRun]) -> dict[str, Any]:
    """The results.json object of a replay: what was read, the model, each policy's figures."""
    policies = {}
    for name, run in runs.items():
        figures = policy_figures(run)
        if name == BASELINE:             # today's kernel is what the trace recorded
            figures["fidelity"] = fidelity(decoded.pcp, figures)
        policies[name] = figures
    _add_savings(policies)
    return {
        "trace": source,
        "lines": sum(decoded.events.values()) + skipped.total(),
        "events": _events_json(decoded.events),
        "skipped": dict(skipped.most_common()),
        "replay": _replay_json(decoded, ops),
        "trace_pcp": asdict(decoded.pcp),
        "model": _model_json(zone, limits, decay_interval),
        "policies": policies,
    }


def _events_json(events: Counter) -> dict[str, dict[str, Any]]:
    out = {}
    for name in EVENTS:
        orders = sorted((order, n) for (ev, order), n in events.items() if ev == name)
        out[name] = {"count": sum(n for _, n in orders),
                     "orders": {str(order): n for order, n in orders}}
    return out


def _replay_json(d: Decoded, ops: int) -> dict[str, Any]:
    types: dict[str, dict[str, int]] = {}
    for (t, order), n in sorted(d.types.items()):
        types.setdefault(TYPES[t], {})[str(order)] = n
    return {
        "cpus": d.cpus, "nr_cpu_ids": d.nr_cpu_ids, "ops": ops,
        "allocs": d.allocs, "failed_allocs": d.failed_allocs,
        "above_max_order": d.above_max_order, "frees": d.frees,
        "remote_frees": d.remote_frees, "batched_pairs": d.batched_pairs,
        "unknown_frees": d.unknown_frees, "order_mismatches": d.order_mismatches,
        "lost_frees": d.lost_frees, "live_blocks_at_end": d.live_blocks,
        "live_pages_at_end": d.live_pages, "peak_live_pages": d.peak_live_pages,
        "decay_ticks": d.decay_ticks, "types": types,
    }


def _model_json(zone: ZoneSetup, limits: sizing.PcpLimits, decay_interval: float) -> dict[str, Any]:
    return {
        "era": zone.era, "zone_source": zone.source, "node": zone.node,
        "managed": zone.managed, "arena_pages": zone.pages, "nsplit": zone.nsplit,
        "pcp_from_capture": zone.captured,
        "batch": limits.batch, "high": limits.high,
        "high_min": limits.high_min, "high_max": limits.high_max,
        "decay_interval": decay_interval,
    }


def _add_savings(policies: dict[str, dict[str, Any]]) -> None:
    """cachelines_saved_vs_legacy: 1 - lines / legacy lines (None without legacy)."""
    base = policies.get(BASELINE, {}).get("cachelines")
    for figures in policies.values():
        figures["cachelines_saved_vs_legacy"] = (
            round(1 - figures["cachelines"] / base, 4) if base else None)


# --- the terminal report ---------------------------------------------------------------

def format_report(results: dict[str, Any]) -> str:
    """The terminal report: what was read, the model, one row per policy, fidelity."""
    out = _trace_lines(results) + [_model_line(results["model"]), ""]
    out += _policy_table(results["policies"])
    legacy = results["policies"].get(BASELINE)
    if legacy:
        out += [""] + _fidelity_table(legacy["fidelity"])
    return "\n".join(out)


def _trace_lines(results: dict[str, Any]) -> list[str]:
    """What was read and replayed: events, skipped lines, CPUs and the replay's bookkeeping."""
    r = results["replay"]
    events = ", ".join(f"{name} {e['count']}" for name, e in results["events"].items()
                       if e["count"])
    head = f"{results['trace']}: {results['lines']} lines; {events}"
    if skipped := results["skipped"]:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items())
        head += f"; skipped {sum(skipped.values())} ({reasons})"
    cpus = f"{len(r['cpus'])} CPUs ({_cpu_list(r['cpus'])})" if r["cpus"] else "no CPU"
    out = [head,
           f"replayed on {cpus}: {r['allocs']} allocs ({r['failed_allocs']} failed in the "
           f"trace), {r['frees']} frees ({r['remote_frees']} remote), {r['batched_pairs']} "
           f"batched pairs; unknown frees {r['unknown_frees']}, order mismatches "
           f"{r['order_mismatches']}, lost frees {r['lost_frees']}; live at end "
           f"{r['live_pages_at_end']} pages (peak {r['peak_live_pages']})"]
    if r["types"]:
        out.append("allocations by inferred type: " + ", ".join(
            f"{t} {sum(orders.values())}" for t, orders in r["types"].items()))
    return out


def _model_line(m: dict[str, Any]) -> str:
    zone = (f"Normal zone of {m['zone_source']} (node {m['node']}, managed {m['managed']})"
            if m["zone_source"] != "default" else "default zone")
    high = (f"high {m['high_min']}..{m['high_max']}" if m["era"] in HIGH_BOUNDS_ERAS
            else f"high {m['high']}")
    decay = f"decay every {m['decay_interval']:g} s" if m["decay_interval"] > 0 else "no decay"
    return (f"model: era {m['era']}, {zone}, arena {m['arena_pages']} pages, nsplit "
            f"{m['nsplit']}, batch {m['batch']}, {high}"
            f"{' (captured)' if m['pcp_from_capture'] else ''}, {decay}")


def _policy_table(policies: dict[str, dict[str, Any]]) -> list[str]:
    out = [f"{'policy':<16} {'rec':>3} {'ops':>8} {'hit%':>6} {'refills':>7} {'refill pg':>9} "
           f"{'drains':>6} {'drain pg':>8} {'lock':>6} {'lines/op':>8} {'saved':>6} "
           f"{'slab ops':>8} {'fails':>5}"]
    for name, f in policies.items():
        saved = f["cachelines_saved_vs_legacy"]
        out.append(
            f"{name:<16} {f['record_bytes']:>3} {f['ops']:>8} {_pct(f['pcp_hit_rate']):>6} "
            f"{f['refills']:>7} {f['refill_pages']:>9} {f['drains']:>6} {f['drain_pages']:>8} "
            f"{f['zone_lock_acquisitions']:>6} {_num(f['cachelines_per_op']):>8} "
            f"{_pct(saved):>6} {f['slab_ops']:>8} {f['alloc_failures']:>5}"
            + ("" if f["audit_ok"] else "  AUDIT VIOLATED"))
    return out


def _fidelity_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    out = ["legacy fidelity (what the trace recorded vs the model):",
           f"  {'':<13} {'trace':>8} {'model':>8} {'model/trace':>11}"]
    for name, row in rows.items():
        out.append(f"  {name.replace('_', ' '):<13} {row['trace']:>8} {row['model']:>8} "
                   f"{_num(row['model_per_trace']):>11}")
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus)) if len(cpus) <= 8 else f"{cpus[0]}..{cpus[-1]}"
