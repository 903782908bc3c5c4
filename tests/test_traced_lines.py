"""Traced cachelines against charged ones, in every cell of the cost table (issue 11).

``pcpd costs`` measures each cell both ways: plain, and with the measured CPU
over a ``TracedArena`` (pcpd.model.linetrace), whose accessors record the set
of lines each operation loaded and stored.  The rules, each a modelling
convention documented where the code follows it:

* Tracing changes nothing: every charged figure is the same both ways.
* Every operation charges exactly what it touches: per region and access
  kind, the charged count is the number of distinct lines traced.  That
  holds for a PCP hit (the hot path, which charges inline), the owner's
  side of a routed free (row ``owner``: pcp-buddy), and a miss or a bypass,
  whose steps (each buddy list operation, the refill's and the drain's
  per-block work, the hit's part around them) record their lines in the
  CPU's ``LineCharges`` (pcpd.model.lines), which charges each line once
  per operation, however many steps touched it.  Reads are every line
  loaded, stored to as well or not (legacy's tail loop reads and rewrites
  every tail: 511 lines each way; list_del() in the buddy reads a free
  block's own links, then rewrites them).
* Free memory is charged for stores only (``data_lines_written``; no read
  counter exists): the 8-byte page's buddy loads its links uncharged, and
  a hit loads none.
* The slab's own stores (its free-object marker) are slab operations, not
  descriptor lines (traced as region ``slab``); a page->memdesc load that
  stands for the folio the caller holds is not a memmap access (untraced).

Cells: the proposal's four policies, memdesc types anon (folio, movable),
slab (compound, not a folio, reclaimable) and kernel (not compound,
unmovable), which between them take every branch the charges depend on
(file, pagetable and netpool differ from anon and slab only in migratetype,
which kernel covers); orders 0 (the order-0 lists), 1 and 2 (no deferred
split below order 2), 4 (bypass), 9 (THP lists) and 10 (bypass, split into
pageblocks on free); 16-byte pages, and the memdesc policies' 8-byte page
(buddy links in free memory) and 32-byte page.  Every registered policy
gets the same check on its own cells in tests/test_policy_suite.py.
"""

import random
from typing import Any

import numpy as np
import pytest

from pcpd.analysis.costs import cost_table
from pcpd.model.linetrace import LineTrace, TracedArena
from pcpd.model.pagewords import NIL
from pcpd.model.stats import NAMES
from pcpd.policies import PROPOSAL
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena

pytestmark = pytest.mark.interpreted          # traces cachelines (tests/conftest.py)

TYPES = ("anon", "slab", "kernel")
ORDERS = (0, 1, 2, 4, 9, 10)
# charged figures, each equal to the traced count of the same name
WRITES = ("struct_page_lines_written", "descriptor_lines_written", "free_memory_lines_written")
READS = ("struct_page_lines_read", "descriptor_lines_read")


def mismatches(row: dict[str, Any]) -> list[str]:
    """Where a cost-table row's charges break the rules above; empty if none."""
    traced = row["traced"]
    where = f"{row['policy']} {row['memdesc']} {row['order']} {row['op']} {row['pcp']}"
    out = [f"{where}: {kind} charged {row[kind]}, traced {traced[kind]}"
           for kind in WRITES + READS if row[kind] != traced[kind]]
    if row["pcp"] in ("hit", "owner") and traced["free_memory_lines_read"]:
        out.append(f"{where}: a hit loads {traced['free_memory_lines_read']} free-memory lines")
    return out


def strip_trace(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("lines_touched", "traced")}


CASES = [(16, PROPOSAL, TYPES, ORDERS), (8, ("memdesc-pcpdesc", "memdesc"), ("anon", "kernel"), (0, 9)),
         (32, ("memdesc-pcpdesc", "memdesc"), ("anon", "kernel"), (0, 9))]


@pytest.fixture(scope="module")
def both_ways() -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(plain rows, traced rows) of each case."""
    return [(cost_table("6.7", rb, policies, types, orders, traced=False),
             cost_table("6.7", rb, policies, types, orders, traced=True))
            for rb, policies, types, orders in CASES]


def test_tracing_changes_no_charge(both_ways):
    for plain, traced in both_ways:
        assert "traced" not in plain[0] and "lines_touched" not in plain[0]
        assert [strip_trace(r) for r in traced] == plain


def test_every_cell_is_measured(both_ways):
    rows = both_ways[0][1]
    for policy in PROPOSAL:
        for t in TYPES:
            got = {(r["order"], r["op"], r["pcp"]) for r in rows if (r["policy"], r["memdesc"]) == (policy, t)}
            assert {(o, op, "bypass") for o in (4, 10) for op in ("alloc", "free")} <= got
            if (policy, t) == ("compound", "kernel"):    # non-compound multi-page: the buddy
                continue
            for order in (0, 1, 2, 9):
                assert {(order, op, pcp) for op in ("alloc", "free") for pcp in ("hit", "miss")} <= got


def test_traced_lines_match_the_charges(both_ways):
    problems = [p for _, rows in both_ways for r in rows for p in mismatches(r)]
    assert problems == []


def test_a_mischarge_is_caught(both_ways):
    rows = both_ways[0][1]
    hit = next(r for r in rows if (r["policy"], r["memdesc"], r["order"], r["op"], r["pcp"])
               == ("legacy", "anon", 9, "alloc", "hit"))
    assert mismatches(hit) == []
    double = dict(hit, struct_page_lines_written=hit["struct_page_lines_written"] + 1)
    assert mismatches(double) == ["legacy anon 9 alloc hit: struct_page_lines_written charged 514, traced 513"]
    miss = next(r for r in rows if (r["policy"], r["memdesc"], r["order"], r["op"], r["pcp"])
                == ("memdesc", "anon", 0, "free", "miss"))
    assert mismatches(miss) == []
    unread = dict(miss, descriptor_lines_read=0)          # the drain loads each descriptor's pfn
    loaded = miss["traced"]["descriptor_lines_read"]
    assert mismatches(unread) == [f"memdesc anon 0 free miss: descriptor_lines_read charged 0, traced {loaded}"]
    # a line two steps of the drain store, charged by each (the per-step count this replaced)
    twice = dict(miss, struct_page_lines_written=miss["struct_page_lines_written"] + 1)
    assert mismatches(twice) == [f"memdesc anon 0 free miss: struct_page_lines_written charged "
                                 f"{twice['struct_page_lines_written']}, traced {miss['struct_page_lines_written']}"]


def test_lines_touched_counts_each_line_once(both_ways):
    rows = both_ways[0][1]

    def cell(policy, memdesc, order, op, pcp):
        [r] = [r for r in rows if (r["policy"], r["memdesc"], r["order"], r["op"], r["pcp"])
               == (policy, memdesc, order, op, pcp)]
        return r

    # head, list neighbour, 511 tails; page[1] once although prep and large-rmappable both store there
    assert cell("legacy", "anon", 9, "alloc", "hit")["lines_touched"] == 513
    # the tails read and rewritten are one line each, the deferred-split load of page[2] among them
    free = cell("legacy", "anon", 9, "free", "hit")
    assert (free["struct_page_lines_read"], free["lines_touched"]) == (511, 513)
    assert cell("compound", "anon", 9, "alloc", "hit")["lines_touched"] == 3     # head, neighbour, page[1]
    hit = cell("memdesc", "anon", 0, "alloc", "hit")      # the folio's descriptor, the new list head's
    assert (hit["descriptor_lines"], hit["lines_touched"]) == (3, 2)   # a line stored and loaded: once
    # a drain's steps touch the same lines again and again (list_del() from the PCP,
    # page_is_buddy(), the merge's list_del() and list_add()): each line is charged
    # once, so the lines stored and the lines loaded are both among those touched
    drain = cell("legacy", "anon", 0, "free", "miss")
    written, read = drain["struct_page_lines_written"], drain["struct_page_lines_read"]
    assert drain["drain_pages"] >= 63
    assert max(written, read) <= drain["lines_touched"] <= written + read


@pytest.mark.parametrize("policy, record_bytes", [("legacy", 64), ("compound", 64), ("memdesc", 8),
                                                  ("memdesc-pcpdesc", 16)])
def test_a_traced_cpu_does_what_a_plain_one_does(policy, record_bytes):
    """Same operations, one CPU over the plain arena and one over a TracedArena: the
    same memory, the same counters, and the trace saw the lines that changed."""
    spec = ModelSpec(pages=2048, record_bytes=record_bytes, policy=policy, ncpus=1)
    arenas = [create_arena(spec), create_arena(spec)]
    trace = LineTrace()
    try:
        cpus = [CpuAllocator(arenas[0], spec, SharedLocks.local(), 0),
                CpuAllocator(TracedArena(arenas[1], trace), spec, SharedLocks.local(), 0)]
        rng = random.Random(policy)
        held: list[tuple[int, int, int]] = []
        for _ in range(300):
            if held and rng.random() < 0.45:
                pfn, order, t = held.pop(rng.randrange(len(held)))
                for cpu in cpus:
                    cpu.policy.free(pfn, order, t)
                continue
            t, order = rng.randrange(6), rng.choice((0, 0, 0, 1, 2, 4, 9))
            got = {cpu.policy.alloc(t, order) for cpu in cpus}
            assert len(got) == 1
            pfn = got.pop()
            if pfn != NIL:                        # an order-9 block the small zone did not have
                held.append((pfn, order, t))
        for cpu in cpus:
            cpu.release()
        plain, traced = arenas
        for region in ("mem", "descs", "freelinks", "zone"):
            assert np.array_equal(getattr(plain, region), getattr(traced, region)), region
        counted = [i for i, name in enumerate(NAMES)                  # not the clock readings
                   if not name.endswith("_ns") and not name.startswith("lock_wait_bucket")]
        assert [cpus[0].counters.v[i] for i in counted] == [cpus[1].counters.v[i] for i in counted]
        assert trace.written["memmap"] and trace.read["memmap"]
    finally:
        for arena in arenas:
            arena.close()
            arena.unlink()
