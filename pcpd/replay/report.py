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

from pcpd.kernel import HIGH_BOUNDS_ERAS, MIGRATETYPE_NAMES
from pcpd.model import sizing, stats
from pcpd.policies import BASELINE, policy_names, policy_traits
from pcpd.replay.decode import DRAIN_DECAY, MODEL_CAUSES, TRACE_DRAIN_CAUSES, Decoded, TracePcp
from pcpd.replay.run import PolicyRun
from pcpd.replay.start import StartPlan
from pcpd.replay.trace import EVENTS, Skipped
from pcpd.replay.zone import ZoneSetup
from pcpd.zoneinfo import Pageset
from workers.policies import MIGRATETYPE_OF, TYPES

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
        "record_bytes": run.record_bytes, **_policy_reading(run.policy, run.memdesc_high),
        "ops": fig.ops, "allocs": fig.allocs, "frees": fig.frees,
        "alloc_hit": total("alloc_hit"), "alloc_refill": total("alloc_refill"),
        "alloc_buddy": total("alloc_buddy"),
        "pcp_hit_rate": _rounded(fig.pcp_hit_rate), **_pcp_holding(run),
        "free_pcp": total("free_pcp"), "free_buddy": total("free_buddy"),
        "refills": total("refills"), "refill_pages": total("refill_pages"),
        "drains": fig.drains,
        "drain_pages": fig.drain_pages,
        "drains_by_cause": {c: total(f"drains_{c}") for c in stats.DRAIN_CAUSES
                            if total(f"drains_{c}")},
        "drain_pages_by_cause": {c: total(f"drain_pages_{c}") for c in stats.DRAIN_CAUSES
                                 if total(f"drain_pages_{c}")},
        "decay_passes": run.decay_passes,
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
        "pre_capture_skipped": run.pre_capture_skipped,
        "pcp_at_end": run.pcp_at_end,
        "start_allocated_at_end": run.start_allocated_at_end,
        "pages_at_end": run.pages_at_end,
        "audit_ok": run.audit_ok,
        "audit_problems": run.audit_problems,
    }


def _policy_reading(policy: str, memdesc_high: str) -> dict[str, Any]:
    """Which variant ran: the budget of per-type PCPs (``pcpd replay --memdesc-high``), the
    compound reading; None where the policy has neither."""
    traits = policy_traits(policy)
    return {"memdesc_high": memdesc_high if traits.typed_pcps else None,
            "compound_reading": traits.compound_reading or None}


def _pcp_holding(run: PolicyRun) -> dict[str, Any]:
    """Pages on the PCPs at the end; for per-type PCPs, by type and stranded: held by a CPU
    that allocated none of the type in the replay (the counters start at the replay's
    start, ``pcpd.replay.start``); None for the others."""
    end = run.snapshot
    out: dict[str, Any] = {"pcp_pages": end.total("pcp_pages"), "pcp_pages_by_type": None,
                           "stranded_pages": None, "stranded_by_type": None}
    if run.policy not in policy_names(typed_pcps=True):
        return out
    typed = stats.typed_holding(None, end)
    out.update(pcp_pages_by_type=typed.by_type, stranded_by_type=typed.stranded, stranded_pages=typed.stranded_pages)
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def fidelity(trace: TracePcp, figures: dict[str, Any], run: PolicyRun | None = None,
             scope: str = "system") -> dict[str, Any]:
    """The legacy model's refills and drains beside the trace's own, in total and by cause.

    Causes (``pcpd.replay.decode.TRACE_DRAIN_CAUSES``) pair with the model's
    (``MODEL_CAUSES``): free-path drains with ``high`` and ``free_high``,
    decay with ``decay`` (the model's decay passes that drained, since the
    trace shows one drain a pass: ``pcpd.replay.run``; the total counts them
    so too, though a 6.18 decay drains in batch-sized calls), drain_all with
    ``drain_all``.  ``basis`` is ``counts`` for a whole-system trace and
    ``pages`` for a per-process one, whose counts are not comparable: the
    traced task's frees drain what other tasks' frees also filled, and
    other tasks' allocations halve ``free_count`` (``rmqueue_pcplist()``),
    which sizes each drain, so the kernel drains the same pages in more,
    smaller drains than a model that sees one task.
    """
    rows: dict[str, Any] = {}
    by_cause = figures["drains_by_cause"]
    drains = figures["drains"]
    if run is not None:                 # one drain a decay pass, as the trace counts them
        drains += run.decay_passes - sum(by_cause.get(c, 0) for c in MODEL_CAUSES[DRAIN_DECAY])
    pairs = {"refills": (trace.refills, figures["refills"]),
             "refill_pages": (trace.refill_pages, figures["refill_pages"]),
             "drains": (trace.drains, drains),
             "drain_pages": (trace.drain_pages, figures["drain_pages"])}
    pages_by_cause = figures.get("drain_pages_by_cause", {})
    for cause in TRACE_DRAIN_CAUSES:
        model_causes = MODEL_CAUSES[cause]
        n = sum(by_cause.get(c, 0) for c in model_causes)
        if cause == DRAIN_DECAY and run is not None:
            n = run.decay_passes
        pairs[f"drains_{cause}"] = (trace.drains_by_cause.get(cause, 0), n)
        pairs[f"drain_pages_{cause}"] = (trace.drain_pages_by_cause.get(cause, 0),
                                         sum(pages_by_cause.get(c, 0) for c in model_causes))
    for name, (t, m) in pairs.items():
        rows[name] = {"trace": t, "model": m, "model_per_trace": _ratio(m, t)}
    rows["basis"] = "counts" if scope == "system" else "pages"
    return rows


# --- results.json ----------------------------------------------------------------------

def results_json(*, source: str, decoded: Decoded, skipped: Skipped, ops: int, zone: ZoneSetup,
                 limits: sizing.PcpLimits, cacheinfo: dict[str, Any], decay_interval: float,
                 runs: dict[str, PolicyRun],
                 scope: dict[str, str] | None = None, plan: StartPlan | None = None,
                 after: dict[int, Pageset] | None = None,
                 after_source: str | None = None) -> dict[str, Any]:
    """The results.json object of a replay: what was read, the model, each policy's figures."""
    scope = scope or {"scope": "system", "evidence": "not determined"}
    policies = {}
    for name, run in runs.items():
        figures = policy_figures(run)
        if name == BASELINE:             # today's kernel is what the trace recorded
            figures["fidelity"] = fidelity(decoded.pcp, figures, run, scope["scope"])
        policies[name] = figures
    _add_savings(policies)
    out = {
        "trace": source,
        "lines": (sum(decoded.events.values()) + sum(decoded.context_events.values())
                  + skipped.total()),
        "events": _events_json(decoded.events),
        "context_events": dict(decoded.context_events),
        "skipped": dict(skipped.most_common()),
        "scope": scope,
        "replay": _replay_json(decoded, ops),
        "trace_pcp": asdict(decoded.pcp),
        "model": _model_json(zone, limits, cacheinfo, decay_interval, decoded.decay_work),
        "start": _start_json(plan, runs),
        "policies": policies,
    }
    if after is not None:
        base = runs.get(BASELINE) or next(iter(runs.values()))
        out["end_state"] = _end_state(after, after_source, base)
    return out


def _start_json(plan: StartPlan | None, runs: dict[str, PolicyRun]) -> dict[str, Any]:
    """What the model started from (the baseline's seeding; every policy gets the same plan)."""
    if plan is None:
        return {"mode": "empty", "unknown": []}
    run = runs.get(BASELINE) or next(iter(runs.values()), None)
    seeded = run.start if run is not None else None
    out: dict[str, Any] = {"mode": plan.mode, "unknown": list(plan.unknown)}
    if seeded is not None and plan.seeds:
        out.update({
            "cpus": seeded.pcp,
            "pool": {"blocks": sum(plan.pool.values()),
                     "unplaced": seeded.pool_unplaced},
            "pcp_unplaced_blocks": seeded.pcp_unplaced_blocks,
            "free_pages": {"capture": seeded.free_pages_captured, "model": seeded.free_pages},
            "filler_pages": seeded.filler_pages,
            "pageblocks": seeded.pageblocks,
            "free_pages_by_type": seeded.free_by_type,
        })
    return out


def _end_state(after: dict[int, Pageset], source: str | None, run: PolicyRun) -> dict[str, Any]:
    """The model's per-CPU high and count at the end beside a zoneinfo taken then."""
    cpus = []
    for row in run.pcp_at_end:
        p = after.get(row["cpu"])
        cpus.append({"cpu": row["cpu"],
                     "high": {"capture": p.high if p else None, "model": row["high"]},
                     "count": {"capture": p.count if p else None, "model": row["count"]}})
    return {"zoneinfo": source, "policy": run.policy, "cpus": cpus}


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
        "unknown_frees": d.unknown_frees, "pre_capture_frees": d.pre_capture_frees,
        "split_frees": d.split_frees, "order_mismatches": d.order_mismatches,
        "lost_frees": d.lost_frees, "live_blocks_at_end": d.live_blocks,
        "live_pages_at_end": d.live_pages, "peak_live_pages": d.peak_live_pages,
        "decay_ticks": d.decay_ticks, "decay_work": d.decay_work, "types": types,
        "migratetypes": {TYPES[t]: MIGRATETYPE_NAMES[mt] for t, mt in enumerate(d.migratetypes)},
    }


def _model_json(zone: ZoneSetup, limits: sizing.PcpLimits, cacheinfo: dict[str, Any],
                decay_interval: float, decay_work: int) -> dict[str, Any]:
    # cacheinfo: ModelSpec.cacheinfo(), PCPF_FREE_HIGH_BATCH as the model set it
    return {
        "era": zone.era, "zone_source": zone.source, "node": zone.node,
        "managed": zone.managed, "arena_pages": zone.pages, "nsplit": zone.nsplit,
        "pcp_from_capture": zone.captured,
        "batch": limits.batch, "high": limits.high,
        "high_min": limits.high_min, "high_max": limits.high_max,
        "decay_interval": decay_interval, "decay_work": decay_work, "pcp_cacheinfo": cacheinfo,
    }


def _add_savings(policies: dict[str, dict[str, Any]]) -> None:
    """cachelines_saved_vs_legacy: 1 - lines / legacy lines (None without legacy)."""
    base = policies.get(BASELINE, {}).get("cachelines")
    for figures in policies.values():
        figures["cachelines_saved_vs_legacy"] = (
            round(1 - figures["cachelines"] / base, 4) if base else None)


# --- the terminal report ---------------------------------------------------------------

def format_report(results: dict[str, Any]) -> str:
    """The terminal report: what was read, the model and its start, one row per policy,
    fidelity, and the end state where a second zoneinfo was given."""
    out = _trace_lines(results) + [_model_line(results["model"])]
    out += _start_lines(results.get("start", {})) + [""]
    out += _policy_table(results["policies"])
    legacy = results["policies"].get(BASELINE)
    if legacy:
        out += [""] + _fidelity_table(legacy["fidelity"], results.get("scope", {}))
    if "end_state" in results:
        out += [""] + _end_state_table(results["end_state"])
    return "\n".join(out)


def _start_lines(start: dict[str, Any]) -> list[str]:
    if not start:
        return []
    out = []
    if start.get("cpus") is not None:
        cpus = "; ".join(
            f"CPU{c['cpu']} high {c.get('high_model', '-') or '0 (boot: high_min at first use)'}"
            + (f" (captured {c['high_captured']})" if c.get("high_captured") is not None else "")
            + (f", alloc_factor {c['alloc_factor']} (first refill)" if c.get("alloc_factor") else "")
            + f", {c['pages_seeded']} PCP pages"
            + (f" (count {c['count_captured']}: {c['from_trace']} shown by the trace, "
               f"{c['beyond_trace']} beyond)" if c.get("count_captured") is not None
               else f" ({c['from_trace']} shown by the trace)")
            for c in start["cpus"])
        free = start["free_pages"]
        captured = f" (captured {free['capture']})" if free["capture"] is not None else ""
        blocks = ", ".join(f"{n} {t}" for t, n in start["pageblocks"].items())
        pool = start["pool"]
        out.append(f"start ({start['mode']}): {cpus}")
        out.append(f"  free pages {free['model']}{captured}; pageblocks {blocks}; pre-capture "
                   f"pool {pool['blocks']} blocks" + (f" ({pool['unplaced']} without room)"
                                                      if pool["unplaced"] else ""))
    else:
        out.append(f"start ({start['mode']})")
    out += [f"  unknown at start: {u}" for u in start.get("unknown", [])]
    return out


def _trace_lines(results: dict[str, Any]) -> list[str]:
    """What was read and replayed: events, skipped lines, CPUs and the replay's bookkeeping."""
    r = results["replay"]
    events = ", ".join(f"{name} {e['count']}" for name, e in results["events"].items()
                       if e["count"])
    if ctx := results.get("context_events"):
        events += ", " + ", ".join(f"{name} {n}" for name, n in ctx.items())
    head = f"{results['trace']}: {results['lines']} lines; {events}"
    if skipped := results["skipped"]:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items())
        head += f"; skipped {sum(skipped.values())} ({reasons})"
    cpus = f"{len(r['cpus'])} CPUs ({_cpu_list(r['cpus'])})" if r["cpus"] else "no CPU"
    out = [head,
           f"replayed on {cpus}: {r['allocs']} allocs ({r['failed_allocs']} failed in the "
           f"trace), {r['frees']} frees ({r['remote_frees']} remote), {r['batched_pairs']} "
           f"batched pairs; unknown frees {r['unknown_frees']} ({r['pre_capture_frees']} "
           f"pre-capture, replayed; {r['split_frees']} pieces of live blocks), order mismatches "
           f"{r['order_mismatches']}, lost frees {r['lost_frees']}; live at end "
           f"{r['live_pages_at_end']} pages (peak {r['peak_live_pages']})"]
    if scope := results.get("scope"):
        out.append(f"scope: {'whole system' if scope['scope'] == 'system' else 'per process'} "
                   f"({scope['evidence']})")
    if r["types"]:
        out.append("allocations by inferred type: " + ", ".join(
            f"{t} {sum(orders.values())}" for t, orders in r["types"].items()))
    return out + _migratetype_lines(r.get("migratetypes", {}))


def _migratetype_lines(migratetypes: dict[str, str]) -> list[str]:
    """The types the trace allocated from another migratetype than the model's default."""
    default = {t: MIGRATETYPE_NAMES[mt] for t, mt in zip(TYPES, MIGRATETYPE_OF)}
    moved = [f"{t} {name} (the model's default: {default[t]})"
             for t, name in migratetypes.items() if name != default[t]]
    return ["migratetypes from the trace's GFP flags: " + ", ".join(moved)] if moved else []


def _model_line(m: dict[str, Any]) -> str:
    zone = (f"Normal zone of {m['zone_source']} (node {m['node']}, managed {m['managed']})"
            if m["zone_source"] != "default" else "default zone")
    high = (f"high {m['high_min']}..{m['high_max']}" if m["era"] in HIGH_BOUNDS_ERAS
            else f"high {m['high']}")
    decay = f"decay every {m['decay_interval']:g} s" if m["decay_interval"] > 0 else "no decay"
    if m.get("decay_work"):
        decay = f"decay at the trace's {m['decay_work']} vmstat_update works"
    return (f"model: era {m['era']}, {zone}, arena {m['arena_pages']} pages, nsplit "
            f"{m['nsplit']}, batch {m['batch']}, {high}"
            f"{' (captured)' if m['pcp_from_capture'] else ''}, {decay}")


def _policy_table(policies: dict[str, dict[str, Any]]) -> list[str]:
    """One row per policy; then a line per policy that has a budget or a compound reading,
    naming it, with the per-type pages of per-type PCPs."""
    out = [f"{'policy':<16} {'rec':>3} {'ops':>8} {'hit%':>6} {'pcp pg':>7} {'strand':>6} "
           f"{'refills':>7} {'refill pg':>9} {'drains':>6} {'drain pg':>8} {'lock':>6} "
           f"{'lines/op':>8} {'saved':>6} {'slab ops':>8} {'fails':>5}"]
    for name, f in policies.items():
        saved = f["cachelines_saved_vs_legacy"]
        out.append(
            f"{name:<16} {f['record_bytes']:>3} {f['ops']:>8} {_pct(f['pcp_hit_rate']):>6} "
            f"{f['pcp_pages']:>7} {_opt(f['stranded_pages']):>6} "
            f"{f['refills']:>7} {f['refill_pages']:>9} {f['drains']:>6} {f['drain_pages']:>8} "
            f"{f['zone_lock_acquisitions']:>6} {_num(f['cachelines_per_op']):>8} "
            f"{_pct(saved):>6} {f['slab_ops']:>8} {f['alloc_failures']:>5}"
            + ("" if f["audit_ok"] else "  AUDIT VIOLATED"))
    for name, f in policies.items():
        if f["compound_reading"]:
            out.append(f"  {name}: {f['compound_reading']}")
        if f["memdesc_high"]:
            out.append(f"  {name}: budget {f['memdesc_high']}; on PCPs at the end "
                       f"{_by_type(f['pcp_pages_by_type'])}; stranded {_by_type(f['stranded_by_type'])}")
    return out


def _by_type(pages: dict[str, int]) -> str:
    """``anon 12, file 3``: the types holding pages; "none" where none does."""
    return ", ".join(f"{t} {n}" for t, n in pages.items() if n) or "none"


_CAUSE_LABELS = {"free": "free path", "decay": "decay", "drain_all": "drain_all", "other": "other"}


def _fidelity_table(rows: dict[str, Any], scope: dict[str, Any]) -> list[str]:
    """Totals, then drains by cause (a cause shows where the trace or the model has one)."""
    per_process = rows.get("basis") == "pages"
    head = "legacy fidelity (what the trace recorded vs the model)"
    if per_process:
        head += ": a per-process trace, compare pages; its counts miss other tasks"
    out = [head + ":", f"  {'':<22} {'trace':>8} {'model':>8} {'model/trace':>11}"]

    def line(label: str, row: dict[str, Any], count: bool) -> str:
        mark = "  (not comparable)" if per_process and count else ""
        return (f"  {label:<22} {row['trace']:>8} {row['model']:>8} "
                f"{_num(row['model_per_trace']):>11}{mark}")

    for name, label in (("refills", "refills"), ("refill_pages", "refill pages"),
                        ("drains", "drains"), ("drain_pages", "drain pages")):
        out.append(line(label, rows[name], not name.endswith("pages")))
    for cause, label in _CAUSE_LABELS.items():
        count, pages = rows.get(f"drains_{cause}"), rows.get(f"drain_pages_{cause}")
        if count is None or pages is None or not (count["trace"] or count["model"]
                                                  or pages["trace"] or pages["model"]):
            continue
        out.append(line(f"  drains: {label}", count, True))
        out.append(line(f"  drain pages: {label}", pages, False))
    return out


def _end_state_table(end: dict[str, Any]) -> list[str]:
    out = [f"end state ({end['policy']} vs {end['zoneinfo']}):",
           f"  {'':<6} {'high':>8} {'model':>8} {'count':>8} {'model':>8}"]
    for c in end["cpus"]:
        out.append(f"  CPU{c['cpu']:<3} {_opt(c['high']['capture']):>8} {c['high']['model']:>8} "
                   f"{_opt(c['count']['capture']):>8} {c['count']['model']:>8}")
    return out


def _opt(x: int | None) -> str:
    return "-" if x is None else str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus)) if len(cpus) <= 8 else f"{cpus[0]}..{cpus[-1]}"
