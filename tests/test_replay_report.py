"""pcpd.replay.report: the figures, the fidelity table and the terminal report."""

from replay_lines import DEFAULT_PCP

from pcpd.replay.command import replay
from pcpd.replay.decode import TracePcp
from pcpd.replay.report import fidelity, format_report


def test_fidelity_ratio_is_none_where_the_trace_recorded_nothing():
    rows = fidelity(TracePcp(refills=4, refill_pages=0, drains=0, drain_pages=10),
                    {"refills": 6, "refill_pages": 12, "drains": 0, "drain_pages": 5})
    assert rows == {"refills": {"trace": 4, "model": 6, "model_per_trace": 1.5},
                    "refill_pages": {"trace": 0, "model": 12, "model_per_trace": None},
                    "drains": {"trace": 0, "model": 0, "model_per_trace": None},
                    "drain_pages": {"trace": 10, "model": 5, "model_per_trace": 0.5}}


def test_report_without_legacy_has_no_fidelity_table():
    results = replay(DEFAULT_PCP, policies=["memdesc"], decay_interval=0)
    text = format_report(results)
    assert "legacy fidelity" not in text and "no decay" in text
    row = next(line for line in text.splitlines() if line.startswith("memdesc "))
    assert row.split()[10] == "-"            # saved: no legacy to save against
    assert results["policies"]["memdesc"]["cachelines_saved_vs_legacy"] is None


def test_report_names_skipped_lines_and_audit_failures():
    results = replay(DEFAULT_PCP, policies=["legacy"])
    results["skipped"] = {"malformed fields": 2, "line over 64 KiB": 1}
    results["policies"]["legacy"]["audit_ok"] = False
    text = format_report(results)
    head = text.splitlines()[0]
    assert head.endswith("; skipped 3 (2 malformed fields, 1 line over 64 KiB)")
    assert next(line for line in text.splitlines()
                if line.startswith("legacy ")).endswith("  AUDIT VIOLATED")
