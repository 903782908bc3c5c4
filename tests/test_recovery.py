"""pcpd.daemon.recovery: a dead worker's pages come back from the page array alone.

A dead slot is simulated in one process: slot 1's CpuAllocator allocates,
frees onto its PCP, hands blocks to slot 0 (one hand-off half done), and is
then abandoned, as a SIGKILL leaves it.  The daemon's steps follow:
``reclaim_slot`` (with the zone and slab locks held) must leave a clean
audit, take only what slot 1 owned, and keep what is still travelling.
Corruptions a kill can leave (half-linked free lists, pages in no state,
descriptors nobody points to, a consumer that freed an entry but never
moved the ring head) are repaired the same way.
"""

import pytest

from pcpd.daemon.audit import audit
from pcpd.daemon.recovery import Reclaimed, rebuild_slab, rebuild_zone, reclaim_slot, release_cached_descriptors
from pcpd.errors import ArenaError
from pcpd.model import rings
from pcpd.model.arena import DESC_WORDS, H_SLAB_TOP, RING_HEADER
from pcpd.model.lock import ZoneLock
from pcpd.model.pagewords import MEMDESC_SLAB, NIL
from pcpd.model.slab import D_PFN, D_STATE, DS_INUSE, desc_state
from pcpd.model.stats import Counters
from pcpd.model.zone import Zone
from pcpd.model.zonewords import Z_FREE_PAGES, Z_HEAD, Z_NR_FREE
from pcpd.policies import record_bytes_for
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import T_ANON, T_FILE, T_KERNEL, T_NETPOOL, T_SLAB

POLICIES = ["legacy", "memdesc"]
# (type, order) of the blocks slot 1 allocates: PCP orders, a buddy order, Misc
BLOCKS = [(T_ANON, 0), (T_FILE, 0), (T_SLAB, 1), (T_NETPOOL, 0), (T_ANON, 2),
          (T_KERNEL, 1), (T_FILE, 4), (T_ANON, 9), (T_ANON, 3), (T_NETPOOL, 1)]


class Machine:
    """Two CPU slots over one arena, as two workers would see it."""

    def __init__(self, policy: str, pages: int = 4096) -> None:
        record_bytes = record_bytes_for(policy)
        self.spec = ModelSpec(pages=pages, policy=policy, record_bytes=record_bytes, ncpus=2)
        self.arena = create_arena(self.spec)
        self.locks = SharedLocks.local()
        self.cpus = [CpuAllocator(self.arena, self.spec, self.locks, slot) for slot in (0, 1)]
        self.held: list[list[tuple[int, int, int]]] = [[], []]

    def policy(self, slot: int):
        return self.cpus[slot].policy

    def alloc(self, slot: int, t: int, order: int) -> tuple[int, int, int]:
        pfn = self.policy(slot).alloc(t, order)
        assert pfn != NIL
        block = (pfn, order, t)
        self.held[slot].append(block)
        return block

    def free(self, slot: int, block) -> None:
        self.held[slot].remove(block)
        pfn, order, t = block
        self.policy(slot).free(pfn, order, t)

    def send(self, src: int, dst: int, block, queue: bool = True) -> None:
        """A cross-CPU free: marked in flight, then queued (unless the sender dies first)."""
        self.held[src].remove(block)
        pfn, order, t = block
        self.policy(src).send(pfn, order, t, dst)
        if queue:
            assert rings.Outbox(self.arena, src).push(dst, rings.encode(pfn, t, order))

    def receive(self, dst: int) -> int:
        """What Worker.receive does."""
        policy = self.policy(dst)
        taken = rings.Inbox(self.arena, dst).take(lambda pfn, t, order: policy.receive(pfn, order, t))
        for pfn, t, order in taken:
            policy.free(pfn, order, t)
        return len(taken)

    def kill(self, slot: int) -> None:
        """The process is gone; only the arena remembers what it had."""
        self.cpus[slot] = None
        self.held[slot] = []

    def restart(self, slot: int) -> None:
        self.cpus[slot] = CpuAllocator(self.arena, self.spec, self.locks, slot)

    def recover(self, slot: int, keep_inbox: bool = True) -> Reclaimed:
        """The daemon's part: zone and slab locks held, every writer quiescent."""
        counters = Counters()
        zone = Zone(self.arena, ZoneLock(self.locks.zone, self.arena, counters, slot), counters)
        with self.locks.slab, zone.lock:
            return reclaim_slot(self.arena, zone, slot, keep_inbox=keep_inbox)

    def shut_down(self) -> None:
        """Every live slot takes its inbox, frees what it holds and drains."""
        for slot in (0, 1):
            if self.cpus[slot] is not None:
                self.receive(slot)
        for slot in (0, 1):
            if self.cpus[slot] is not None:
                for block in list(self.held[slot]):
                    self.free(slot, block)
                self.cpus[slot].release()

    def owned(self, slot: int) -> dict[str, list[tuple[int, int]]]:
        result = audit(self.arena)
        return {state: sorted((p, o) for p, o, c in zip(b.pfn.tolist(), b.order.tolist(), b.cpu.tolist())
                              if c == slot)
                for state, b in result.blocks.items() if state != "buddy"}

    def close(self) -> None:
        self.cpus = []
        try:
            self.arena.close()
        except ArenaError:
            pass
        finally:
            self.arena.unlink()


@pytest.fixture
def make_machine():
    made = []

    def make(policy: str = "legacy", pages: int = 4096) -> Machine:
        made.append(Machine(policy, pages))
        return made[-1]

    yield make
    for m in made:
        m.close()


def busy_slot_1(m: Machine) -> dict:
    """Slot 1 allocates, frees some onto its PCP and hands blocks over; slot 0 too."""
    mine = [m.alloc(1, t, order) for t, order in BLOCKS * 3]
    for block in mine[:8]:
        m.free(1, block)                              # onto slot 1's PCP (or the buddy)
    to_0 = mine[8:12]
    for block in to_0:
        m.send(1, 0, block)                           # queued for slot 0
    half_done = mine[12:14]
    for block in half_done:
        m.send(1, 0, block, queue=False)              # killed between send and push
    theirs = [m.alloc(0, t, order) for t, order in BLOCKS[:6] * 2]
    for block in theirs[:3]:
        m.free(0, block)
    to_1 = theirs[3:6]
    for block in to_1:
        m.send(0, 1, block)                           # queued for the slot that dies
    return {"to_0": to_0, "half_done": half_done, "to_1": to_1}


def pages(blocks) -> int:
    return sum(1 << order for _, order, _ in blocks)


@pytest.mark.parametrize("policy", POLICIES)
def test_reclaim_returns_only_what_the_dead_slot_owned(make_machine, policy):
    m = make_machine(policy)
    sent = busy_slot_1(m)
    before = audit(m.arena)
    assert before.ok
    slot0_before = m.owned(0)
    slot1_pages = sum(1 << o for state in ("pcp", "allocated") for _, o in m.owned(1)[state])
    m.kill(1)
    got = m.recover(1)
    after = audit(m.arena)
    assert after.ok, after.describe_problems()
    assert m.owned(1)["pcp"] == m.owned(1)["allocated"] == []
    assert m.owned(0)["pcp"] == slot0_before["pcp"]
    assert m.owned(0)["allocated"] == slot0_before["allocated"]
    # what travels stays in flight: to slot 0, and to slot 1 for its replacement
    travelling = sorted(pfn for pfn, _, _ in sent["to_0"] + sent["to_1"])
    assert sorted(after.blocks["inflight"].pfn.tolist()) == travelling
    assert got.pages == slot1_pages + pages(sent["half_done"])
    assert got.orphan_pages == 0
    assert after.pages("buddy") == before.pages("buddy") + got.pages


@pytest.mark.parametrize("policy", POLICIES)
def test_a_replacement_takes_over_and_nothing_is_lost(make_machine, policy):
    m = make_machine(policy)
    sent = busy_slot_1(m)
    m.kill(1)
    m.recover(1)
    m.restart(1)
    assert m.receive(1) == len(sent["to_1"])
    assert m.receive(0) == len(sent["to_0"])
    for t, order in BLOCKS:                           # the new worker allocates as usual
        m.alloc(1, t, order)
    m.shut_down()
    result = audit(m.arena)
    assert result.ok
    assert result.pages("buddy") == result.total


@pytest.mark.parametrize("policy", POLICIES)
def test_without_a_replacement_its_inbox_is_reclaimed_too(make_machine, policy):
    m = make_machine(policy)
    sent = busy_slot_1(m)
    m.kill(1)
    got = m.recover(1, keep_inbox=False)
    assert got.ring_entries == len(sent["to_1"])
    assert rings.Inbox(m.arena, 1).pending() == 0
    result = audit(m.arena)
    assert result.ok
    assert sorted(result.blocks["inflight"].pfn.tolist()) == sorted(p for p, _, _ in sent["to_0"])
    m.shut_down()
    assert audit(m.arena).pages("buddy") == m.arena.pages


@pytest.mark.parametrize("policy", POLICIES)
def test_rebuild_zone_relinks_half_updated_free_lists(make_machine, policy):
    m = make_machine(policy)
    sent = busy_slot_1(m)
    free = int(m.arena.zone[Z_FREE_PAGES])
    z = m.arena.zone
    z[Z_HEAD:Z_HEAD + 6] = 7                          # lists pointing into allocated memory
    z[Z_NR_FREE + 4] += 3
    z[Z_FREE_PAGES] -= 1
    assert not audit(m.arena).ok
    assert rebuild_zone(m.arena) == free
    assert audit(m.arena).ok
    m.shut_down()                                     # and the relinked lists work
    result = audit(m.arena)
    assert result.ok
    assert result.pages("buddy") == m.arena.pages - pages(sent["half_done"])


def test_a_pcp_head_in_no_state_is_reclaimed_as_orphan_pages(make_machine):
    m = make_machine("legacy")
    busy_slot_1(m)
    pcp = [(p, o) for p, o in m.owned(1)["pcp"] if o > 0]
    pfn, order = pcp[0]
    m.arena.mem[pfn * 8] = 0                          # killed inside list_del(): flags cleared
    broken = audit(m.arena)
    assert sorted(broken.orphans.tolist()) == list(range(pfn, pfn + (1 << order)))
    m.kill(1)
    got = m.recover(1)
    assert got.orphan_pages == 1 << order
    assert audit(m.arena).ok
    m.restart(1)
    m.shut_down()
    assert audit(m.arena).pages("buddy") == m.arena.pages


def test_a_described_block_with_its_words_cleared_is_reclaimed(make_machine):
    m = make_machine("memdesc")
    sent = busy_slot_1(m)
    pfn, order, _ = next(b for b in sent["half_done"])
    w = m.arena.record_bytes // 8
    m.arena.mem[pfn * w:(pfn + (1 << order)) * w:w] = 0   # killed while setting memdesc words
    assert len(audit(m.arena).orphans) == 1 << order
    m.kill(1)
    got = m.recover(1)
    assert got.orphan_pages == 1 << order
    assert got.descriptors > 0                        # its descriptor pointed to nobody
    assert audit(m.arena).ok
    m.restart(1)
    m.shut_down()
    assert audit(m.arena).pages("buddy") == m.arena.pages


def test_a_descriptor_nobody_points_to_is_freed(make_machine):
    m = make_machine("memdesc")
    busy_slot_1(m)
    # killed between slab_alloc() and setting the memdesc words of a free page
    slab = m.cpus[1].slab
    idx = slab.alloc()
    free_pfn = int(audit(m.arena).blocks["buddy"].pfn[0])
    m.arena.descs[idx * DESC_WORDS + D_STATE] = desc_state(MEMDESC_SLAB, DS_INUSE, 0, 1)
    m.arena.descs[idx * DESC_WORDS + D_PFN] = free_pfn
    m.kill(1)
    m.recover(1)
    assert m.arena.descs[idx * DESC_WORDS + D_STATE] == 0
    assert audit(m.arena).ok


def test_a_consumer_killed_after_claiming_an_entry_does_not_free_it_twice(make_machine):
    m = make_machine("legacy")
    sent = busy_slot_1(m)                            # four blocks queued for slot 0
    ring = m.arena.rings[1, 0]                       # slot 1's ring to slot 0: its head entry
    head = int(ring[0])
    pfn, t, order = rings.decode(int(ring[RING_HEADER + head % m.arena.geometry.ring_slots]))
    m.policy(0).receive(pfn, order, t)               # claimed by slot 0 ...
    # ... which is killed before the head moved: recovery reclaims the page as
    # slot 0's and drops the entry, so the replacement does not free it again
    assert rings.Inbox(m.arena, 0).pending() == len(sent["to_0"])
    m.kill(0)
    got = m.recover(0)
    assert got.ring_entries == 1
    assert rings.Inbox(m.arena, 0).pending() == len(sent["to_0"]) - 1
    assert audit(m.arena).ok
    m.restart(0)
    assert m.receive(0) == len(sent["to_0"]) - 1
    m.shut_down()
    result = audit(m.arena)
    assert result.ok and result.pages("buddy") == result.total


def test_cached_descriptors_of_the_dead_slot_become_free(make_machine):
    m = make_machine("memdesc")
    busy_slot_1(m)
    cached = len(m.cpus[1].slab.local)
    assert cached > 0
    m.kill(1)
    assert release_cached_descriptors(m.arena, 1) == cached
    assert release_cached_descriptors(m.arena, 1) == 0


def test_rebuild_slab_restores_the_shared_free_stack(make_machine):
    m = make_machine("memdesc")
    busy_slot_1(m)
    state = m.arena.descs[D_STATE::DESC_WORDS]
    free = int((state == 0).sum())
    m.arena.header[H_SLAB_TOP] = 3                   # a holder killed mid-push
    m.arena.descfree[:3] = 0
    assert rebuild_slab(m.arena) == free
    assert int(m.arena.header[H_SLAB_TOP]) == free
    top = sorted(m.arena.descfree[:free].tolist())
    assert top == sorted((state == 0).nonzero()[0].tolist())
    m.kill(1)
    m.recover(1)
    m.restart(1)
    for t, order in BLOCKS * 3:                       # descriptors come off the rebuilt stack
        m.alloc(1, t, order)
    m.shut_down()
    assert audit(m.arena).ok


def test_reclaimed_says_what_came_back():
    text = str(Reclaimed(blocks=2, pages=5, orphan_pages=1, descriptors=3, ring_entries=4))
    assert text == "5 pages in 2 blocks, 1 orphan pages, 3 descriptors, 4 stale ring entries"
