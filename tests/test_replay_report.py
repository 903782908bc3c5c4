"""pcpd.replay.report: the figures, the fidelity table and the terminal report."""

from replay_lines import DEFAULT_PCP

from pcpd.replay.command import replay
from pcpd.replay.decode import TracePcp
from pcpd.replay.report import _fidelity_table, fidelity, format_report


def test_fidelity_ratio_is_none_where_the_trace_recorded_nothing():
    rows = fidelity(TracePcp(refills=4, refill_pages=0, drains=0, drain_pages=10),
                    {"refills": 6, "refill_pages": 12, "drains": 0, "drain_pages": 5,
                     "drains_by_cause": {}})
    assert {k: rows[k] for k in ("refills", "refill_pages", "drains", "drain_pages")} == {
        "refills": {"trace": 4, "model": 6, "model_per_trace": 1.5},
        "refill_pages": {"trace": 0, "model": 12, "model_per_trace": None},
        "drains": {"trace": 0, "model": 0, "model_per_trace": None},
        "drain_pages": {"trace": 10, "model": 5, "model_per_trace": 0.5}}
    assert rows["basis"] == "counts"


def test_fidelity_by_cause_and_basis():
    trace = TracePcp(drains=5, drain_pages=600, drains_by_cause={"free": 3, "decay": 2},
                     drain_pages_by_cause={"free": 500, "decay": 100})
    figures = {"refills": 0, "refill_pages": 0, "drains": 9, "drain_pages": 700,
               "drains_by_cause": {"high": 2, "free_high": 1, "decay": 6},
               "drain_pages_by_cause": {"high": 400, "free_high": 100, "decay": 200}}
    rows = fidelity(trace, figures, scope="process")
    assert rows["basis"] == "pages"
    assert rows["drains_free"] == {"trace": 3, "model": 3, "model_per_trace": 1.0}
    assert rows["drain_pages_free"] == {"trace": 500, "model": 500, "model_per_trace": 1.0}
    assert rows["drain_pages_decay"] == {"trace": 100, "model": 200, "model_per_trace": 2.0}
    assert rows["drains_drain_all"] == {"trace": 0, "model": 0, "model_per_trace": None}
    text = "\n".join(_fidelity_table(rows, {}))
    assert "compare pages" in text and "drains: decay" in text and "drain_all" not in text
    assert next(line for line in text.splitlines() if line.strip().startswith("drains  ")
                ).endswith("(not comparable)")


def test_a_decay_pass_is_one_drain_in_the_total_too():
    """A 6.18 decay_pcp_high() drains in batch-sized calls (the model counts each), and the
    trace sees one run of drain events a pass: the total counts passes, as the row does."""
    trace = TracePcp(drains=3, drain_pages=300, drains_by_cause={"free": 2, "decay": 1})
    figures = {"refills": 0, "refill_pages": 0, "drains": 7, "drain_pages": 300,
               "drains_by_cause": {"high": 2, "decay": 5}}

    class Run:
        decay_passes = 1

    rows = fidelity(trace, figures, Run())          # type: ignore[arg-type]
    assert rows["drains"] == {"trace": 3, "model": 3, "model_per_trace": 1.0}
    assert rows["drains_decay"]["model"] == 1
    assert fidelity(trace, figures)["drains"]["model"] == 7


def test_report_without_legacy_has_no_fidelity_table():
    results = replay(DEFAULT_PCP, policies=["memdesc"], decay_interval=0)
    text = format_report(results)
    assert "legacy fidelity" not in text and "no decay" in text
    row = next(line for line in text.splitlines() if line.startswith("memdesc "))
    assert row.split()[12] == "-"            # saved: no legacy to save against
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


def test_report_shows_pages_held_and_stranded_by_type_and_names_each_variant():
    results = replay(DEFAULT_PCP, policies=["legacy", "compound", "memdesc"])
    legacy, compound, memdesc = (results["policies"][p] for p in ("legacy", "compound", "memdesc"))
    assert legacy["pcp_pages"] == legacy["pages_at_end"]["pcp"] > 0      # the gauge is the audit's count
    assert legacy["pcp_pages_by_type"] is None and legacy["stranded_pages"] is None
    assert (legacy["memdesc_high"], legacy["compound_reading"]) == (None, None)
    assert compound["compound_reading"] == "eager prep at refill"
    by_type = memdesc["pcp_pages_by_type"]
    assert sum(by_type.values()) == memdesc["pcp_pages"] == memdesc["pages_at_end"]["pcp"] > 0
    assert memdesc["stranded_pages"] == sum(memdesc["stranded_by_type"].values())
    assert memdesc["memdesc_high"] == "shared"
    per_type = replay(DEFAULT_PCP, policies=["memdesc"], memdesc_high="per-type")
    assert per_type["policies"]["memdesc"]["memdesc_high"] == "per-type"
    assert "memdesc: budget per-type" in format_report(per_type)
    assert per_type["policies"]["memdesc"]["pcp_pages"] != memdesc["pcp_pages"]
    lines = format_report(results).splitlines()
    header = next(line for line in lines if line.startswith("policy "))
    assert header.split()[3:7] == ["hit%", "pcp", "pg", "strand"]
    row = next(line for line in lines if line.startswith("memdesc "))
    assert row.split()[4:6] == [str(memdesc["pcp_pages"]), str(memdesc["stranded_pages"])]
    assert next(line for line in lines if line.startswith("legacy ")).split()[5] == "-"
    assert "  compound: eager prep at refill" in lines
    held = ", ".join(f"{t} {n}" for t, n in by_type.items() if n)
    assert any(line.startswith(f"  memdesc: budget shared; on PCPs at the end {held}; stranded ")
               for line in lines)
