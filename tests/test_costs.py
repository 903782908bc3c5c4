"""pcpd.analysis.costs: the measured per-operation cost table and the ``pcpd costs`` command.

The figures the proposal states (linux-mm, January 2024; reference 5.6):
a legacy order-9 folio allocation writes all 511 tails (at least 512
struct page lines, 32 KiB of 64-byte pages); compound and memdesc PCP hits
touch no tail and only a few lines.
"""

import json

import pytest

from pcpd import cli
from pcpd.analysis.costs import COST_PAGES, cost_table, format_table, model_spec
from workers.policies import TYPES

KEYS = {"policy", "memdesc", "order", "pcp", "op", "struct_page_lines_written",
        "struct_page_lines_read", "descriptor_lines", "slab_ops", "zone_lock_acquisitions",
        "record_bytes", "by_cause"}
TAIL_CAUSES = ("compound_prep", "tail_undo")


@pytest.fixture(scope="module")
def table():
    """Era 6.7, every policy and type; orders 0 and 9 (PCP) and 4 and 10 (bypass)."""
    return cost_table("6.7", 16, orders=(0, 4, 9, 10))


def rows_of(table, **match):
    return [r for r in table if all(r[k] == v for k, v in match.items())]


def one(table, **match):
    [row] = rows_of(table, **match)
    return row


def lines_touched(r) -> int:
    return (r["struct_page_lines_written"] + r["struct_page_lines_read"] + r["descriptor_lines"]
            + r["free_memory_lines_written"])


# -- the model measured ----------------------------------------------------------------

@pytest.mark.parametrize("era, batch, high, high_max", [
    ("4.18", 31, 186, 186), ("5.13", 63, 378, 378), ("5.14", 63, 3920, 3920),
    ("6.7", 63, 3920, 28672)])
def test_pcp_is_sized_as_for_this_machines_zone(era, batch, high, high_max):
    limits = model_spec("legacy", era).limits()
    assert (limits.batch, limits.high, limits.high_max) == (batch, high, high_max)


def test_legacy_and_compound_always_use_64_byte_pages():
    assert model_spec("legacy", record_bytes=8).record_bytes == 64
    assert model_spec("compound", record_bytes=8).record_bytes == 64
    assert model_spec("memdesc", record_bytes=8).record_bytes == 8
    assert model_spec("memdesc-pcpdesc").pages == COST_PAGES


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy"):
        model_spec("slub")


# -- the proposal's figures ---------------------------------------------------------------

@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
@pytest.mark.parametrize("memdesc", ["anon", "file"])
@pytest.mark.parametrize("pcp", ["hit", "miss"])
def test_legacy_order_9_folio_alloc_writes_every_tail(table, memdesc, pcp):
    r = one(table, policy="legacy", memdesc=memdesc, order=9, op="alloc", pcp=pcp)
    assert r["by_cause"]["written"]["compound_prep"] == 511
    assert r["struct_page_lines_written"] >= 512
    assert r["struct_page_lines_written"] * 64 >= 32 * 1024
    assert r["record_bytes"] == 64


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_legacy_order_9_free_reads_and_writes_every_tail(table):
    r = one(table, policy="legacy", memdesc="anon", order=9, op="free", pcp="hit")
    assert r["by_cause"]["written"]["tail_undo"] == r["by_cause"]["read"]["tail_undo"] == 511


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
@pytest.mark.parametrize("policy", ["compound", "memdesc"])
@pytest.mark.parametrize("op", ["alloc", "free"])
@pytest.mark.parametrize("order", [0, 9])
def test_compound_and_memdesc_hits_touch_no_tail(table, policy, op, order):
    for r in rows_of(table, policy=policy, op=op, order=order, pcp="hit"):
        assert all(r["by_cause"]["written"][c] == 0 for c in TAIL_CAUSES), r
        assert r["by_cause"]["read"]["tail_undo"] == 0
        assert r["by_cause"]["written"]["memdesc_set"] <= 1      # at most the head's word
        assert r["struct_page_lines_written"] <= 3
        # head, list neighbour, and for a large folio page[1] (rmappable) and a page[2] read
        assert lines_touched(r) <= 4
        assert r["zone_lock_acquisitions"] == 0 and r["slab_ops"] == 0


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_compound_large_folio_hit_touches_head_neighbour_and_rmappable(table):
    alloc = one(table, policy="compound", memdesc="anon", order=9, op="alloc", pcp="hit")
    assert alloc["by_cause"]["written"] == {"page_state": 1, "list_link": 1, "compound_prep": 0,
                                            "tail_undo": 0, "memdesc_set": 0, "rmappable": 1,
                                            "buddy": 0}
    slab = one(table, policy="compound", memdesc="slab", order=9, op="alloc", pcp="hit")
    assert slab["by_cause"]["written"]["rmappable"] == 0        # not a folio: no rmappable prep


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_memdesc_hit_leaves_the_memmap_alone(table):
    for name in ("anon", "file", "slab", "pagetable", "netpool"):
        for op in ("alloc", "free"):
            r = one(table, policy="memdesc", memdesc=name, order=9, op=op, pcp="hit")
            assert r["struct_page_lines_written"] == r["struct_page_lines_read"] == 0
            # the folio's line and the list neighbour's; an allocation also loads the
            # folio's pfn from the line it writes (charged as a read, as memdesc-pcpdesc does)
            assert 1 <= r["descriptor_lines_written"] <= 2
            assert r["descriptor_lines_read"] == (op == "alloc")
            assert r["lines_touched"] == r["descriptor_lines_written"]


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_memdesc_without_descriptor_caching_rewrites_every_memdesc_word(table):
    for op in ("alloc", "free"):
        r = one(table, policy="memdesc-pcpdesc", memdesc="anon", order=9, op=op, pcp="hit")
        assert r["by_cause"]["written"]["memdesc_set"] == 512 * 16 // 64
        assert r["slab_ops"] == 2                    # one descriptor freed, one allocated


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_compound_moves_tail_work_to_the_buddy_boundary(table):
    miss = one(table, policy="compound", memdesc="anon", order=9, op="alloc", pcp="miss")
    assert miss["by_cause"]["written"]["compound_prep"] == 2 * 511   # both refilled THPs
    drain = one(table, policy="compound", memdesc="anon", order=9, op="free", pcp="miss")
    assert drain["by_cause"]["written"]["tail_undo"] == drain["drain_pages"] // 512 * 511


# -- what a row means --------------------------------------------------------------------

@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_records_have_the_documented_keys(table):
    for r in table:
        assert KEYS <= r.keys()
        assert r["op"] in ("alloc", "free") and r["pcp"] in ("hit", "miss", "bypass")
        assert r["struct_page_lines_written"] == sum(r["by_cause"]["written"].values())
        assert r["struct_page_lines_read"] == sum(r["by_cause"]["read"].values())
        assert r["descriptor_lines"] == r["descriptor_lines_written"] + r["descriptor_lines_read"]


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_every_combination_is_measured(table):
    for policy in ("legacy", "compound", "memdesc-pcpdesc", "memdesc"):
        for name in TYPES:
            got = {(r["order"], r["op"], r["pcp"])
                   for r in rows_of(table, policy=policy, memdesc=name)}
            for order in (4, 10):
                assert {(order, "alloc", "bypass"), (order, "free", "bypass")} <= got
            if policy == "compound" and name == "kernel":   # non-compound: straight to the buddy
                assert (9, "alloc", "bypass") in got
                continue
            for order in (0, 9):
                for op in ("alloc", "free"):
                    assert {(order, op, "hit"), (order, op, "miss")} <= got, (policy, name, order)


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_hits_take_no_lock_and_misses_one(table):
    for r in table:
        assert r["zone_lock_acquisitions"] == (0 if r["pcp"] == "hit" else 1), r


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_misses_move_pages_through_the_buddy(table):
    r = one(table, policy="legacy", memdesc="anon", order=0, op="alloc", pcp="miss")
    assert r["refill_pages"] == 63                   # batch, alloc_factor 0
    r = one(table, policy="legacy", memdesc="anon", order=0, op="free", pcp="miss")
    assert r["drain_cause"] == "high" and r["drain_pages"] == 2016   # free_count capped at 2016
    r = one(table, policy="memdesc", memdesc="anon", order=9, op="free", pcp="miss")
    assert r["drain_pages"] == 2048                  # 8 THPs reached high; 4 drained


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_refill_links_each_block_to_the_previous_tail(table):
    r = one(table, policy="legacy", memdesc="anon", order=0, op="alloc", pcp="miss")
    # 63 blocks, each linked to the previous tail (the first to the list head): lines the
    # buddy wrote first, taking the blocks off its free lists under zone->lock, so the
    # links (and the popped head's page state) add none; every line touched is written
    assert r["refill_pages"] == 63 and r["by_cause"]["written"]["buddy"] >= 63
    assert r["by_cause"]["written"]["list_link"] == r["by_cause"]["written"]["page_state"] == 0
    assert r["struct_page_lines_written"] == r["lines_touched"]
    r = one(table, policy="memdesc", memdesc="kernel", order=0, op="alloc", pcp="miss")
    assert r["free_memory_lines_written"] == 63         # Misc links live in the free pages


def test_8_byte_pages_move_buddy_links_into_free_memory():
    def miss(record_bytes):
        [r] = [r for r in cost_table("6.7", record_bytes, ["memdesc"], ["anon"], [9], traced=False)
               if (r["op"], r["pcp"]) == ("alloc", "miss")]
        return r
    sixteen, eight = miss(16), miss(8)
    assert sixteen["free_memory_lines_written"] == 0
    assert eight["free_memory_lines_written"] > 0
    # every page's memdesc word (two THPs), each line once whichever step wrote it first;
    # the 16-byte page also rewrites the prev link of the next block on the order-10 list
    # (list_del()), which the 8-byte page keeps in free memory
    assert eight["struct_page_lines_written"] == 2 * 512 * 8 // 64
    assert sixteen["struct_page_lines_written"] == 2 * 512 * 16 // 64 + 1


def test_old_era_thp_cannot_stay_on_the_pcp():
    rows = cost_table("5.13", 16, policies=["legacy"], types=["anon"], orders=[9], traced=False)
    assert {(r["op"], r["pcp"]) for r in rows} == {("alloc", "miss"), ("alloc", "hit"),
                                                   ("free", "miss")}   # high 378 < 512


def test_4_18_keeps_only_order_0():
    rows = cost_table("4.18", 8, policies=["memdesc"], types=["file"], orders=[0, 1, 9], traced=False)
    assert {r["order"] for r in rows if r["pcp"] == "bypass"} == {1, 9}
    assert {r["pcp"] for r in rows if r["order"] == 0} == {"hit", "miss"}
    assert {r["record_bytes"] for r in rows} == {8}


def test_identical_arguments_give_identical_rows():
    args = ("6.7", 32, ["compound", "memdesc-pcpdesc"], ["slab", "kernel"], [1, 9])
    rows = cost_table(*args, traced=False)      # tracing's own determinism: test_traced_lines
    groups = dict.fromkeys((r["policy"], r["memdesc"], r["order"]) for r in rows)
    assert list(groups) == [(p, t, o) for p in args[2] for t in args[3] for o in args[4]]
    assert cost_table(*args, traced=False) == rows
    # each policy is measured on an arena of its own: the others do not change its rows
    alone = cost_table(args[0], args[1], ["memdesc-pcpdesc"], *args[3:], traced=False)
    assert alone == [r for r in rows if r["policy"] == "memdesc-pcpdesc"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="era"):
        cost_table("3.10")
    with pytest.raises(ValueError, match="record size"):
        cost_table("6.7", 24)


# -- the command -----------------------------------------------------------------------------

@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_text_table(table):
    text = format_table(rows_of(table, order=9), "6.7", 16)
    lines = text.splitlines()
    assert lines[0].startswith("era 6.7: PCP batch 63, high 3920..28672")
    assert lines[3].startswith("touched: distinct lines the operation touched")
    assert "touched" in lines[5].split()
    legacy = next(line for line in lines if line.startswith("legacy") and " 9 alloc hit" in line)
    assert "prep 511" in legacy and "32.1" in legacy
    # W, then touched after the lock column: page[1] counted once
    assert legacy.split()[6] == "513" and legacy.split()[13] == "513"


@pytest.mark.interpreted              # the table traces cachelines (tests/conftest.py)
def test_lines_touched_is_deduplicated_per_operation(table):
    r = one(table, policy="legacy", memdesc="anon", order=0, op="free", pcp="miss")
    # a drain's steps revisit the same lines: each is charged once, as traced
    written, read = r["struct_page_lines_written"], r["struct_page_lines_read"]
    assert (written, read) == (r["traced"]["struct_page_lines_written"], r["traced"]["struct_page_lines_read"])
    assert max(written, read) <= r["lines_touched"] < written + read
    # every memdesc word, the new descriptor and list neighbour, and the popped pcpdesc
    # (loaded for its pfn, then freed to the slab: one line)
    r = one(table, policy="memdesc-pcpdesc", memdesc="anon", order=9, op="alloc", pcp="hit")
    assert r["lines_touched"] == 512 * 16 // 64 + r["traced"]["descriptor_lines_written"] + 1


def test_command_json(capsys):
    assert cli.main(["costs", "--json", "--policy", "legacy", "--memdesc", "anon",
                     "--order", "9", "--era", "6.7"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["op"], r["pcp"]) for r in rows} == {("alloc", "miss"), ("alloc", "hit"),
                                                   ("free", "hit"), ("free", "miss")}
    assert all(r["policy"] == "legacy" and r["order"] == 9 for r in rows)
    hit = next(r for r in rows if (r["op"], r["pcp"]) == ("alloc", "hit"))
    assert hit["lines_touched"] == hit["traced"]["struct_page_lines_written"] == 513


def test_command_text(capsys):
    assert cli.main(["costs", "--policy", "memdesc", "--memdesc", "slab", "--order", "0",
                     "--record-bytes", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 B for the memdesc policies" in out
    assert sum(line.startswith("memdesc ") for line in out.splitlines()) == 4


@pytest.mark.parametrize("argv", [["--record-bytes", "24"], ["--era", "2.6"], ["--order", "11"],
                                  ["--policy", "slub"]])
def test_command_rejects_bad_options(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(["costs", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pcpd costs: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.interpreted                             # traces cachelines (tests/conftest.py)
@pytest.mark.parametrize("order", [2, 9])
def test_pcp_buddy_owner_free_charges_what_it_touches(order):
    """A routed free's second half, the owner freeing a block of its own pageblock:
    __free_pages_prepare() as legacy's, page[2]'s line once (folio_unqueue_deferred_split()
    shares it with the tail loop), and every charge equal to the lines traced."""
    rows = cost_table(policies=["pcp-buddy"], types=["anon"], orders=[order])
    owner = one(rows, op="free", pcp="owner")
    legacy = one(cost_table(policies=["legacy"], types=["anon"], orders=[order]), op="free", pcp="hit")
    assert owner["by_cause"]["read"]["tail_undo"] == legacy["by_cause"]["read"]["tail_undo"] == (1 << order) - 1
    assert owner["by_cause"]["read"]["rmappable"] == 0
    for kind in ("struct_page_lines_written", "struct_page_lines_read"):
        assert owner[kind] == owner["traced"][kind], kind
