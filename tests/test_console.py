"""pcpd.daemon.console: the status line and the summary of ``pcpd run``, character for character."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pcpd.daemon.console import StatusLine, interval_figures, share, summary_text
from pcpd.daemon.report import RunReport
from pcpd.model import stats

MIB = 2 ** 20


def snapshot(cpu0: Mapping[str, int] | None = None, retired: Mapping[str, int] | None = None,
             ncpus: int = 2) -> stats.Snapshot:
    """Counters with ``cpu0`` on slot 0 and ``retired`` in the retired block."""
    blocks = np.zeros((ncpus, stats.NR_STATS), dtype=np.int64)
    for name, value in (cpu0 or {}).items():
        blocks[0, stats.INDEX[name]] = value
    old = np.zeros(stats.NR_STATS, dtype=np.int64)
    for name, value in (retired or {}).items():
        old[stats.INDEX[name]] = value
    return stats.Snapshot(blocks, old)


BUSY = dict(alloc_anon_order_0=600, free_type_anon=400, alloc_hit=450, alloc_refill=50, alloc_buddy=100,
            lock_acquisitions=200, lock_contended=50, lock_wait_ns=100_000, lock_hold_ns=300_000,
            lines_written_page_state=1500, lines_read_list_link=500)


def test_the_first_status_line_covers_the_run_so_far():
    report = RunReport(private_end=int(3.5 * MIB), restarts=2)
    line = StatusLine(start=10.0).render(12.0, snapshot(BUSY), 123, report)
    assert line == ("pcpd: 500 ops/s  hit 75.0%  zone-lock hold 1.5 us, contended 25.0% (wait 2.0 us)  "
                    "2.00 lines/op  free 123 pages  daemon 3.5 MiB  restarts 2")


def test_later_lines_cover_their_interval_only():
    status = StatusLine(start=0.0)
    status.render(1.0, snapshot(BUSY), 0, RunReport())
    later = {name: 2 * value for name, value in BUSY.items()}
    line = status.render(3.0, snapshot(later), 0, RunReport())
    assert line.startswith("pcpd: 500 ops/s  hit 75.0%  zone-lock hold 1.5 us, contended 25.0% (wait 2.0 us)  "
                           "2.00 lines/op")
    # a worker replaced in the interval: its old counts are in the retired block
    moved = snapshot(BUSY, retired=later)
    assert status.render(5.0, moved, 0, RunReport()).startswith("pcpd: 500 ops/s")


def test_an_idle_interval_shows_no_shares():
    status = StatusLine(start=0.0)
    assert status.render(1.0, snapshot(), 4096, RunReport()) == (
        "pcpd: 0 ops/s  hit -  zone-lock hold 0.0 us, contended - (wait 0.0 us)  0.00 lines/op  "
        "free 4096 pages  daemon 0.0 MiB  restarts 0")


def test_interval_figures_are_the_shared_definition():
    counters = snapshot(BUSY).totals()
    assert interval_figures(counters, 2.0) == stats.derive(counters, 2.0)
    assert (interval_figures(counters, 0.0).ops_per_second or 0) > 0      # no division by zero


def test_share():
    assert share(None) == "-"
    assert share(0.0) == "0.0%"
    assert share(0.12345) == "12.3%"


def test_summary_text():
    final = snapshot(BUSY)
    report = RunReport(
        name="test-mixed", policy="memdesc", era="6.7", workers=2, seconds=2.0, ops=final.ops(),
        restarts=3, audits=7, audit_failures=0, kills=4, kills_holding_lock=2,
        private_start=10 * MIB, private_peak=12 * MIB, private_end=11 * MIB,
        final_audit="audit ok: buddy 4096 + pcp 0 + allocated 0 + inflight 0 = 4096", drained=True,
        pages_lost=0, totals=final.totals(), snapshot=final, exit_code=0)
    assert summary_text(report) == "\n".join([
        "pcpd run test-mixed: policy memdesc, era 6.7, 2 worker(s), 2.0 s",
        "  operations 1,000 (500/s), PCP hit rate 75.0%",
        "  zone->lock acquisitions 200, contended 50",
        "  restarts 3, kills 4 (2 holding zone->lock), audits 7 (0 failed)",
        "  daemon memory (RSS less the shared arena) start 10.0 MiB, peak 12.0 MiB, end 11.0 MiB",
        "  final audit ok: buddy 4096 + pcp 0 + allocated 0 + inflight 0 = 4096; "
        "every PCP drained: yes; pages lost 0",
    ])


def test_summary_of_a_failed_run_says_so():
    report = RunReport(name="x", policy="legacy", era="6.7", workers=1,
                       final_audit="audit VIOLATED: buddy 1 + pcp 0 + allocated 0 + inflight 0 = 2",
                       drained=False, pages_lost=1, totals=snapshot().totals())
    text = summary_text(report)
    assert "PCP hit rate 0.0%" in text
    assert text.endswith("final audit VIOLATED: buddy 1 + pcp 0 + allocated 0 + inflight 0 = 2; "
                         "every PCP drained: NO; pages lost 1")
