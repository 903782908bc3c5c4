"""What ``pcpd run`` shows on its terminal: a status line per interval, a summary at the end.

Lines are built here and printed by the caller, so a run embedded in an
experiment or a benchmark shows nothing unless asked.  The figures come from
``pcpd.model.stats.derive``, the one definition every reader of the counters
shares; this module only chooses and formats them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pcpd.daemon.report import RunReport
from pcpd.model import stats
from pcpd.policies import policy_names, run_label

MIB = 2 ** 20


def interval_figures(counters: Mapping[str, int], seconds: float) -> stats.Figures:
    """The figures of one status interval's counter increments (``seconds`` long)."""
    return stats.derive(counters, max(seconds, 1e-9))


def share(ratio: float | None) -> str:
    """A ratio as a percentage; '-' for a share of nothing."""
    return "-" if ratio is None else f"{ratio:.1%}"


def pcp_holding(policy: str, start: stats.Snapshot | None, end: stats.Snapshot) -> str:
    """Pages on the PCPs at ``end``; where ``policy`` keeps per-type PCPs, those of each
    type holding any, and the pages stranded since ``start`` (None: since the run's start):
    held by a CPU that allocated none of their type (``stats.stranded_by_type``)."""
    held = f"on PCPs {end.total('pcp_pages'):,} pages"
    if policy not in policy_names(typed_pcps=True):
        return held
    typed = stats.typed_holding(start, end)
    stranded = _held_by_type(typed.stranded)
    return (f"{held} ({' '.join(_held_by_type(typed.by_type)) or 'none'}; "
            f"stranded {typed.stranded_pages:,}" + "".join(f" {pages}" for pages in stranded) + ")")


def _held_by_type(pages: Mapping[str, int]) -> list[str]:
    """'anon 12' for each type holding any pages."""
    return [f"{t} {n:,}" for t, n in pages.items() if n]


class StatusLine:
    """The periodic status line: each one covers the interval since the previous one."""

    def __init__(self, start: float) -> None:
        self.then = start                            # when the interval began
        self.earlier: stats.Snapshot | None = None   # counters then; None: the run's start

    def render(self, now: float, snapshot: stats.Snapshot, free_pages: int, report: RunReport) -> str:
        """The line for the interval ending ``now`` with ``snapshot``; starts the next interval."""
        counters = snapshot.since(self.earlier) if self.earlier is not None else snapshot.totals()
        figures = interval_figures(counters, now - self.then)
        holding = pcp_holding(report.policy, self.earlier, snapshot)
        self.then, self.earlier = now, snapshot
        wait_us = (figures.lock_wait_mean_seconds or 0.0) * 1e6
        # hold per acquisition: a refill or drain's time under zone->lock, to set against
        # the kernel's (a batch of 63 order-0 pages: a few microseconds)
        hold_us = (figures.lock_hold_mean_seconds or 0.0) * 1e6
        return (f"pcpd: {figures.ops_per_second or 0.0:,.0f} ops/s  hit {share(figures.pcp_hit_rate)}, "
                f"{holding}  "
                f"zone-lock hold {hold_us:.1f} us, contended {share(figures.lock_contended_ratio)} "
                f"(wait {wait_us:.1f} us)  "
                f"{figures.struct_page_lines_per_op or 0.0:.2f} lines/op  "
                f"free {free_pages} pages  "
                f"daemon {report.private_end / MIB:.1f} MiB  restarts {report.restarts}")


def summary_text(report: RunReport) -> str:
    """The summary ``pcpd run`` prints when it stops."""
    r = report
    hit = (stats.derive(r.totals).pcp_hit_rate if r.totals else None) or 0.0
    window = r.measurement
    # pages held as the measured window closed: after the stop every PCP is drained
    holding = (f", {pcp_holding(r.policy, window.start, window.end)} at the window's end"
               if window.start is not None and window.end is not None else "")
    return "\n".join([
        f"pcpd run {r.name}: policy {run_label(r.policy, r.memdesc_high)}, era {r.era}, "
        f"{r.workers} worker(s), {r.seconds:.1f} s",
        f"  operations {r.ops:,} ({r.ops / max(r.seconds, 1e-9):,.0f}/s), PCP hit rate {hit:.1%}{holding}",
        f"  zone->lock acquisitions {r.totals.get('lock_acquisitions', 0):,}, "
        f"contended {r.totals.get('lock_contended', 0):,}",
        f"  restarts {r.restarts}, kills {r.kills} ({r.kills_holding_lock} holding zone->lock), "
        f"audits {r.audits} ({r.audit_failures} failed)",
        f"  daemon memory (RSS less the shared arena) start {r.private_start / MIB:.1f} MiB, "
        f"peak {r.private_peak / MIB:.1f} MiB, end {r.private_end / MIB:.1f} MiB",
        f"  final {r.final_audit}; every PCP drained: {'yes' if r.drained else 'NO'}; "
        f"pages lost {r.pages_lost}",
    ])
