"""pcpd.model.rings: the single-producer single-consumer rings that carry cross-CPU frees.

Entries are taken oldest first per source, a full ring refuses a push, the
counters wrap around the slots, and recovery can list every queued entry
and drop the ones a dead consumer had already freed.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcpd.errors import ArenaError
from pcpd.model import rings
from workers.cpu import ModelSpec, create_arena


@pytest.fixture
def make_arena():
    """An arena of ``ncpus`` slots whose rings hold ``ring_slots`` entries each."""
    made = []

    def make(ncpus: int = 2, ring_slots: int = 8):
        made.append(create_arena(ModelSpec(pages=512, ncpus=ncpus), ring_slots))
        return made[-1]

    yield make
    for arena in made:
        try:
            arena.close()
        except ArenaError:
            pass                     # a view outlived the test; the segment still goes
        finally:
            arena.unlink()


def entry(pfn: int, order: int = 0, t: int = 0) -> int:
    return rings.encode(pfn, t, order)


def take_all(inbox):
    """Take everything queued, claiming nothing (the pages' state is not under test)."""
    return inbox.take(lambda pfn, t, order: None)


@given(pfn=st.integers(0, 2**40), t=st.integers(0, 5), order=st.integers(0, 10))
def test_encode_decode_round_trip(pfn, t, order):
    assert rings.decode(rings.encode(pfn, t, order)) == (pfn, t, order)


def test_take_returns_entries_in_push_order(make_arena):
    arena = make_arena()
    out, inbox = rings.Outbox(arena, 0), rings.Inbox(arena, 1)
    for pfn in (5, 3, 9):
        assert out.push(1, entry(pfn))
    assert inbox.pending() == 3
    assert [b[0] for b in take_all(inbox)] == [5, 3, 9]
    assert inbox.pending() == 0
    assert take_all(inbox) == []


def test_rings_are_per_destination(make_arena):
    arena = make_arena(ncpus=3)
    rings.Outbox(arena, 0).push(2, entry(1))
    assert rings.Inbox(arena, 1).pending() == 0
    assert rings.Inbox(arena, 0).pending() == 0
    assert rings.Inbox(arena, 2).pending() == 1


def test_take_goes_source_by_source_oldest_first(make_arena):
    arena = make_arena(ncpus=3)
    from0, from1 = rings.Outbox(arena, 0), rings.Outbox(arena, 1)
    from1.push(2, entry(10))
    from0.push(2, entry(20))
    from1.push(2, entry(11))
    from0.push(2, entry(21))
    taken = [b[0] for b in take_all(rings.Inbox(arena, 2))]
    assert taken == [20, 21, 10, 11]


def test_full_ring_refuses_a_push_until_the_consumer_takes(make_arena):
    arena = make_arena(ring_slots=4)
    out, inbox = rings.Outbox(arena, 0), rings.Inbox(arena, 1)
    assert all(out.push(1, entry(pfn)) for pfn in range(4))
    assert out.push(1, entry(99)) is False
    assert inbox.pending() == 4                  # the refused entry was not queued
    assert [b[0] for b in take_all(inbox)] == [0, 1, 2, 3]
    assert out.push(1, entry(99)) is True


def test_counters_wrap_around_the_slots(make_arena):
    arena = make_arena(ring_slots=4)
    out, inbox = rings.Outbox(arena, 0), rings.Inbox(arena, 1)
    pushed, taken = [], []
    pfn = 0
    for _ in range(10):                          # 30 entries through 4 slots, 3 at a time
        for _ in range(3):
            assert out.push(1, entry(pfn, order=pfn % 4, t=pfn % 6))
            pushed.append((pfn, pfn % 6, pfn % 4))
            pfn += 1
        taken += take_all(inbox)
    assert taken == pushed


def test_claim_runs_before_the_head_moves(make_arena):
    # the consumer makes each page its own before the entry leaves the ring
    arena = make_arena()
    out, inbox = rings.Outbox(arena, 0), rings.Inbox(arena, 1)
    for pfn in (1, 2, 3):
        out.push(1, entry(pfn))
    seen = []
    taken = inbox.take(lambda pfn, t, order: seen.append((pfn, inbox.pending())))
    assert seen == [(1, 3), (2, 2), (3, 1)]
    assert [b[0] for b in taken] == [1, 2, 3]
    assert inbox.pending() == 0


def test_a_consumer_killed_while_claiming_leaves_the_entry_queued(make_arena):
    arena = make_arena()
    out, inbox = rings.Outbox(arena, 0), rings.Inbox(arena, 1)
    for pfn in (1, 2, 3):
        out.push(1, entry(pfn))

    class Killed(Exception):
        pass

    def claim(pfn, t, order):
        if pfn == 2:
            raise Killed                          # the consumer dies claiming entry 2
    with pytest.raises(Killed):
        inbox.take(claim)
    assert [rings.decode(e)[0] for e in rings.queued_entries(arena)] == [2, 3]


def test_queued_entries_lists_every_ring(make_arena):
    arena = make_arena(ncpus=3)
    rings.Outbox(arena, 0).push(1, entry(4, order=2, t=4))
    rings.Outbox(arena, 2).push(0, entry(7))
    rings.Outbox(arena, 2).push(1, entry(8))
    assert sorted(rings.decode(int(e)) for e in rings.queued_entries(arena)) == \
        [(4, 4, 2), (7, 0, 0), (8, 0, 0)]
    take_all(rings.Inbox(arena, 1))
    assert [rings.decode(int(e)) for e in rings.queued_entries(arena)] == [(7, 0, 0)]


def test_queued_entries_is_empty_for_idle_rings(make_arena):
    arena = make_arena()
    assert len(rings.queued_entries(arena)) == 0


def test_queued_pages_counts_pages_not_entries(make_arena):
    arena = make_arena(ncpus=3, ring_slots=4)
    out = rings.Outbox(arena, 0)
    out.push(1, entry(0, order=0))
    out.push(1, entry(8, order=3))
    out.push(2, entry(16, order=1))
    assert out.queued_pages() == 1 + 8 + 2
    take_all(rings.Inbox(arena, 1))
    assert out.queued_pages() == 2
    for pfn in range(4):                         # wrapped: tail past the slot count
        out.push(2, entry(pfn, order=0))
    take_all(rings.Inbox(arena, 2))
    out.push(2, entry(32, order=2))
    assert out.queued_pages() == 4


def test_drop_consumed_drops_only_leading_entries_no_longer_in_flight(make_arena):
    arena = make_arena(ncpus=3)
    from0, from2 = rings.Outbox(arena, 0), rings.Outbox(arena, 2)
    for pfn in (1, 2, 3):
        from0.push(1, entry(pfn))
    from2.push(1, entry(4))
    # pfn 1 was freed by the dead consumer; 3 is not in flight either, but it
    # comes after 2, which still is: only the head of each ring can be stale
    dropped = rings.drop_consumed(arena, 1, in_flight={2, 4})
    assert dropped == 1
    assert sorted(rings.decode(int(e))[0] for e in rings.queued_entries(arena)) == [2, 3, 4]


def test_drop_consumed_with_nothing_in_flight_empties_the_inbox(make_arena):
    arena = make_arena()
    out = rings.Outbox(arena, 0)
    for pfn in (1, 2):
        out.push(1, entry(pfn))
    assert rings.drop_consumed(arena, 1, in_flight=set()) == 2
    assert rings.Inbox(arena, 1).pending() == 0
    assert out.push(1, entry(5))                 # the producer carries on
    assert [b[0] for b in take_all(rings.Inbox(arena, 1))] == [5]
