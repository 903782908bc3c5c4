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

MIB = 2 ** 20


def interval_figures(counters: Mapping[str, int], seconds: float) -> stats.Figures:
    """The figures of one status interval's counter increments (``seconds`` long)."""
    return stats.derive(counters, max(seconds, 1e-9))


def share(ratio: float | None) -> str:
    """A ratio as a percentage; '-' for a share of nothing."""
    return "-" if ratio is None else f"{ratio:.1%}"


class StatusLine:
    """The periodic status line: each one covers the interval since the previous one."""

    def __init__(self, start: float) -> None:
        self.then = start                            # when the interval began
        self.earlier: stats.Snapshot | None = None   # counters then; None: the run's start

    def render(self, now: float, snapshot: stats.Snapshot, free_pages: int, report: RunReport) -> str:
        """The line for the interval ending ``now`` with ``snapshot``; starts the next interval."""
        counters = snapshot.since(self.earlier) if self.earlier is not None else snapshot.totals()
        figures = interval_figures(counters, now - self.then)
        self.then, self.earlier = now, snapshot
        wait_us = (figures.lock_wait_mean_seconds or 0.0) * 1e6
        # hold per acquisition: a refill or drain's time under zone->lock, to set against
        # the kernel's (a batch of 63 order-0 pages: a few microseconds)
        hold_us = (figures.lock_hold_mean_seconds or 0.0) * 1e6
        return (f"pcpd: {figures.ops_per_second or 0.0:,.0f} ops/s  hit {share(figures.pcp_hit_rate)}  "
                f"zone-lock hold {hold_us:.1f} us, contended {share(figures.lock_contended_ratio)} "
                f"(wait {wait_us:.1f} us)  "
                f"{figures.struct_page_lines_per_op or 0.0:.2f} lines/op  "
                f"free {free_pages} pages  "
                f"daemon {report.private_end / MIB:.1f} MiB  restarts {report.restarts}")


def summary_text(report: RunReport) -> str:
    """The summary ``pcpd run`` prints when it stops."""
    r = report
    hit = (stats.derive(r.totals).pcp_hit_rate if r.totals else None) or 0.0
    return "\n".join([
        f"pcpd run {r.name}: policy {r.policy}, era {r.era}, {r.workers} worker(s), {r.seconds:.1f} s",
        f"  operations {r.ops:,} ({r.ops / max(r.seconds, 1e-9):,.0f}/s), PCP hit rate {hit:.1%}",
        f"  zone->lock acquisitions {r.totals.get('lock_acquisitions', 0):,}, "
        f"contended {r.totals.get('lock_contended', 0):,}",
        f"  restarts {r.restarts}, kills {r.kills} ({r.kills_holding_lock} holding zone->lock), "
        f"audits {r.audits} ({r.audit_failures} failed)",
        f"  daemon memory (RSS less the shared arena) start {r.private_start / MIB:.1f} MiB, "
        f"peak {r.private_peak / MIB:.1f} MiB, end {r.private_end / MIB:.1f} MiB",
        f"  final {r.final_audit}; every PCP drained: {'yes' if r.drained else 'NO'}; "
        f"pages lost {r.pages_lost}",
    ])
