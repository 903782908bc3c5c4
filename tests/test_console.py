"""pcpd.daemon.console: the status line and the summary of ``pcpd run``, character for character."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pcpd.daemon.console import StatusLine, interval_figures, share, summary_text
from pcpd.daemon.report import Measurement, RunReport
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
    assert line == ("pcpd: 500 ops/s  hit 75.0%, on PCPs 0 pages  zone-lock hold 1.5 us, contended 25.0% "
                    "(wait 2.0 us)  2.00 lines/op  free 123 pages  daemon 3.5 MiB  restarts 2")


def test_later_lines_cover_their_interval_only():
    status = StatusLine(start=0.0)
    status.render(1.0, snapshot(BUSY), 0, RunReport())
    later = {name: 2 * value for name, value in BUSY.items()}
    line = status.render(3.0, snapshot(later), 0, RunReport())
    assert line.startswith("pcpd: 500 ops/s  hit 75.0%, on PCPs 0 pages  zone-lock hold 1.5 us, "
                           "contended 25.0% (wait 2.0 us)  2.00 lines/op")
    # a worker replaced in the interval: its old counts are in the retired block
    moved = snapshot(BUSY, retired=later)
    assert status.render(5.0, moved, 0, RunReport()).startswith("pcpd: 500 ops/s")


def test_an_idle_interval_shows_no_shares():
    status = StatusLine(start=0.0)
    assert status.render(1.0, snapshot(), 4096, RunReport()) == (
        "pcpd: 0 ops/s  hit -, on PCPs 0 pages  zone-lock hold 0.0 us, contended - (wait 0.0 us)  "
        "0.00 lines/op  free 4096 pages  daemon 0.0 MiB  restarts 0")


def typed_holding(cpu0: Mapping[str, int], cpu1: Mapping[str, int]) -> stats.Snapshot:
    """CPU 0 allocates anon and holds anon and file pages; CPU 1 allocates file and holds netpool."""
    s = snapshot(cpu0)
    for name, value in cpu1.items():
        s.per_cpu[1, stats.INDEX[name]] = value
    return s


HOLDING = typed_holding(dict(BUSY, pcp_pages=70, pcp_pages_type_anon=60, pcp_pages_type_file=10),
                        dict(alloc_file_order_0=5, pcp_pages=12, pcp_pages_type_netpool=12))


def test_status_line_shows_typed_pages_and_those_stranded_beside_the_hit_rate():
    status = StatusLine(start=0.0)
    line = status.render(2.0, HOLDING, 0, RunReport(policy="memdesc"))
    # since the start CPU 0 allocated no file memory, CPU 1 no netpool: their pages are stranded
    assert "hit 75.0%, on PCPs 82 pages (anon 60 file 10 netpool 12; stranded 22 file 10 netpool 12)  " in line
    # the next interval: CPU 0 allocated anon and file memory in it, so its pages are not stranded
    later = typed_holding(dict(BUSY, alloc_anon_order_0=1200, alloc_file_order_0=1, pcp_pages=70,
                               pcp_pages_type_anon=60, pcp_pages_type_file=10),
                          dict(alloc_file_order_0=5, pcp_pages=12, pcp_pages_type_netpool=12))
    line = status.render(4.0, later, 0, RunReport(policy="memdesc"))
    assert "on PCPs 82 pages (anon 60 file 10 netpool 12; stranded 22 file 10 netpool 12)" not in line
    assert "on PCPs 82 pages (anon 60 file 10 netpool 12; stranded 12 netpool 12)  " in line
    # a policy without per-type PCPs: the total alone
    assert "hit 75.0%, on PCPs 82 pages  " in StatusLine(0.0).render(2.0, HOLDING, 0, RunReport(policy="legacy"))


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
        "pcpd run test-mixed: policy memdesc (budget shared), era 6.7, 2 worker(s), 2.0 s",
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


def test_summary_names_the_budget_and_the_window_s_pages():
    report = RunReport(name="x", policy="memdesc", memdesc_high="per-type", era="6.7", workers=2,
                       totals=HOLDING.totals(), measurement=Measurement(snapshot(), HOLDING, 2.0))
    lines = summary_text(report).splitlines()
    assert lines[0].startswith("pcpd run x: policy memdesc (budget per-type), era 6.7")
    assert lines[1].endswith("PCP hit rate 75.0%, on PCPs 82 pages (anon 60 file 10 netpool 12; "
                             "stranded 22 file 10 netpool 12) at the window's end")


def test_summary_names_the_compound_reading():
    report = RunReport(name="x", policy="compound-lazy", era="6.7", workers=1, totals=snapshot().totals())
    assert summary_text(report).startswith("pcpd run x: policy compound-lazy (lazy prep at first allocation), ")
