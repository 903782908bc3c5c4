"""pcpd.model.lines: cachelines spanned, and each line charged once per operation."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcpd.model.arena import RECORD_SIZES
from pcpd.model.lines import LineCharges, LineMarks, lines_spanned
from pcpd.model.stats import DESC_R, DESC_W, INDEX, LINES_R, LINES_W, Counters

# -- lines_spanned -------------------------------------------------------------------

@pytest.mark.parametrize("record_bytes, lines", [(64, 512), (32, 256), (16, 128), (8, 64)])
def test_order_9_block_memmap_lines(record_bytes, lines):
    """Section 6.1: 32 KiB, 16 KiB, 8 KiB, 4 KiB of memmap per order-9 block."""
    assert lines_spanned(0, 512, record_bytes) == lines
    assert lines_spanned(512 * 7, 512, record_bytes) == lines


def test_tails_of_an_order_9_block():
    assert lines_spanned(1, 511, 64) == 511            # the 511 tails of prep_compound_page()
    assert lines_spanned(1, 511, 8) == 64              # tails share the head's line at 8 B


def test_nothing_spans_no_lines():
    assert lines_spanned(5, 0, 64) == 0
    assert lines_spanned(5, -1, 16) == 0


@given(first=st.integers(0, 1 << 20), count=st.integers(1, 4096),
       record_bytes=st.sampled_from(RECORD_SIZES))
def test_lines_spanned_counts_distinct_lines(first, count, record_bytes):
    lines = {pfn * record_bytes // 64 for pfn in range(first, first + count)}
    assert lines_spanned(first, count, record_bytes) == len(lines)


# -- LineCharges: each line once per operation ---------------------------------------

def test_line_charges_count_per_call_outside_an_operation_and_per_line_inside():
    counters = Counters()
    lines = LineCharges(counters, 16, pages=64, desc_words=64)   # four records to a line
    buddy, link, memdesc = LINES_W["buddy"], LINES_W["list_link"], LINES_W["memdesc_set"]
    lines.page(buddy, 0)
    lines.page(buddy, 1)                                   # a hit's way: per call
    assert counters["lines_written_buddy"] == 2
    lines.begin()
    lines.page(buddy, 0)
    lines.page(link, 3)                                    # pfns 0-3: line 0, list_link first in CAUSES
    lines.pages(memdesc, 0, 8)                             # lines 0 and 1
    lines.desc(DESC_R, 0)
    lines.desc(DESC_R, 7)                                  # words 0-7: descriptor line 0
    lines.desc(DESC_R, 8)
    lines.begin()                                          # nested: part of the outer one
    lines.free_memory(5)
    lines.fold()
    assert counters["data_lines_written"] == 0
    lines.fold()
    assert (counters["lines_written_list_link"], counters["lines_written_memdesc_set"],
            counters["lines_written_buddy"]) == (1, 1, 2)
    assert (counters["desc_lines_read"], counters["data_lines_written"]) == (2, 1)


def test_line_charges_leave_out_prepaid_lines_and_charge_a_settled_line_once():
    counters = Counters()
    lines = LineCharges(counters, 64, pages=64, desc_words=64)
    page, link, buddy = LINES_W["page_state"], LINES_W["list_link"], LINES_W["buddy"]
    lines.begin()
    lines.prepaid(lines.page, page, 4)                     # a hit part charged it already
    lines.page(buddy, 4)
    lines.page(buddy, 5)
    lines.settle()                                         # as zone->lock is taken
    assert (counters["lines_written_page_state"], counters["lines_written_buddy"]) == (0, 1)
    lines.page(link, 5)                                    # settled: paid for
    lines.page(link, 6)
    lines.fold()
    assert (counters["lines_written_list_link"], counters["lines_written_buddy"]) == (1, 1)
    lines.page(link, 6)                                    # a new operation's line, per call again
    assert counters["lines_written_list_link"] == 2


def test_line_charges_count_each_family_apart_and_a_prepaid_line_pending_not_at_all():
    counters = Counters()
    lines = LineCharges(counters, 64, pages=64, desc_words=64)
    buddy_w, buddy_r, page = LINES_W["buddy"], LINES_R["buddy"], LINES_W["page_state"]
    with lines.operation():
        lines.page(buddy_w, 4)                             # pending ...
        lines.prepaid(lines.page, page, 4)                 # ... then a hit part's: paid
        lines.page(buddy_r, 4)                             # a load of the same line: its own family
        lines.desc(DESC_W, 0)
        lines.desc(DESC_R, 0)
    assert (counters["lines_written_buddy"], counters["lines_written_page_state"]) == (0, 0)
    assert (counters["lines_read_buddy"], counters["desc_lines_written"], counters["desc_lines_read"]) == (1, 1, 1)
    with lines.operation():                                # a new operation: charged again
        lines.page(buddy_w, 4)
    assert counters["lines_written_buddy"] == 1


def test_line_charges_of_one_thread_take_turns_and_an_exception_frees_the_marks():
    counters = Counters()
    a, b = (LineCharges(counters, 64, pages=64, desc_words=64) for _ in range(2))
    buddy = LINES_W["buddy"]
    with a.operation():
        with pytest.raises(RuntimeError, match="another CPU"):
            b.begin()                                      # the CPUs of a thread share marks
    with pytest.raises(KeyError):
        with a.operation():
            a.page(buddy, 1)
            a.settle()                                     # zone->lock taken: charged
            a.page(buddy, 2)                               # never settled: not charged
            raise KeyError("a bug mid-operation")
    assert counters["lines_written_buddy"] == 1 and (a.depth, a.exact) == (0, False)
    with b.operation():                                    # the thread goes on, marks clean
        b.page(buddy, 2)
    assert counters["lines_written_buddy"] == 2


def test_a_nested_operations_exception_caught_inside_the_outer_one_ends_both():
    """abort() abandons the operation, nested ones included; the outer one's end is then
    no end at all, and the thread's marks are free for another CPU."""
    counters = Counters()
    a, b = (LineCharges(counters, 64, pages=64, desc_words=64) for _ in range(2))
    buddy = LINES_W["buddy"]
    with a.operation():
        a.page(buddy, 1)
        a.settle()
        try:
            with a.operation():
                a.page(buddy, 2)                           # never settled: not charged
                raise KeyError("a bug in a nested operation")
        except KeyError:
            pass
        a.page(buddy, 3)                                   # no operation open: per call
    assert (a.depth, a.exact) == (0, False) and counters["lines_written_buddy"] == 2
    with b.operation():                                    # another CPU of the thread may begin
        b.page(buddy, 1)
        b.page(buddy, 1)
    assert counters["lines_written_buddy"] == 3


def test_line_charges_of_a_large_operation_charge_each_line_once():
    """Many lines in one operation, settled midway, and the CPUs of one thread in turn
    over the same marks: each line once an operation."""
    counters = Counters()
    a, b = (LineCharges(counters, 64, pages=20000, desc_words=64) for _ in range(2))
    buddy_w, buddy_r = LINES_W["buddy"], LINES_R["buddy"]
    with b.operation():
        b.page(buddy_w, 0)
    with a.operation():
        a.pages(buddy_w, 0, 3000)
        a.settle()
        a.pages(buddy_w, 0, 12000)                         # 3,000 of them paid for
        a.pages(buddy_r, 0, 5000)
    assert (counters["lines_written_buddy"], counters["lines_read_buddy"]) == (12001, 5000)
    with b.operation():                                    # b after a: marks clean
        b.pages(buddy_w, 0, 20000)
    assert counters["lines_written_buddy"] == 32001


def _charge_mixed(lines: LineCharges, ops: int) -> None:
    """Operations of several settles each, lines recurring across and within them."""
    w, r, link = LINES_W["buddy"], LINES_R["buddy"], LINES_W["list_link"]
    for op in range(ops):
        with lines.operation():
            lines.prepaid(lines.page, link, op % 7)
            for step in range(5):
                lines.page(w, (op + step) % 11)
                lines.page(link, (op * step) % 13)
                lines.settle()
                lines.page(r, (op + 2 * step) % 9)
        if op % 4 == 3:
            with pytest.raises(KeyError), lines.operation():
                lines.page(w, op % 5)
                lines.settle()
                lines.page(w, 5 + op % 5)                  # not settled: not charged
                raise KeyError(op)


def test_line_charges_renumber_when_the_settle_numbers_run_out(monkeypatch):
    """A mark is a stamp of the settle it was made in; when a C int runs out of them the
    marks are renumbered, mid-operation or between two, and the charges do not change."""
    plenty = Counters()
    _charge_mixed(LineCharges(plenty, 64, pages=64, desc_words=8), 40)
    monkeypatch.setattr(LineMarks, "last_seq", 4)
    few = Counters()
    lines = LineCharges(few, 64, pages=128, desc_words=8)  # marks of its own, made now
    _charge_mixed(lines, 40)
    assert list(few.v) == list(plenty.v) and any(plenty.v)
    assert lines._now // 32 <= 4                           # renumbered, not past the last


def test_a_line_outside_its_family_is_refused():
    lines = LineCharges(Counters(), 64, pages=64, desc_words=64)
    with lines.operation():
        with pytest.raises(ValueError, match="line 64 of counter"):
            lines.page(LINES_W["buddy"], 64)
        with pytest.raises(ValueError, match="line -1 of counter"):
            lines.record(DESC_R, -1)
        with pytest.raises(ValueError, match="outside its 8 lines"):
            lines.each(DESC_W, [0, 64])
    for charge in (lambda ctr: lines.record(ctr, 0), lambda ctr: lines.each(ctr, [0]),
                   lambda ctr: lines.pages(ctr, 0, 1)):
        for ctr in (len(Counters().v), -1):
            with pytest.raises(IndexError, match="no counter"):
                charge(ctr)
    with lines.operation(), pytest.raises(ValueError, match="line 64 of counter"):
        lines.pages(LINES_W["buddy"], 63, 2)


def test_a_counter_that_is_not_a_line_counter_is_refused():
    lines = LineCharges(Counters(), 64, pages=64, desc_words=64)
    with lines.operation(), pytest.raises(ValueError, match="charges no cachelines"):
        lines.record(INDEX["alloc_hit"], 0)
