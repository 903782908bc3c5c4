"""workers.workloads: seeded op streams against a real single-process allocator.

One seed gives one op sequence; frees pick held blocks in lifetime order;
pressure waves free their share at their period; only eligible types are
handed to other CPUs (through a real ring); a failed allocation backs off.
"""

import pytest

from pcpd.config.load import parse_settings
from pcpd.daemon.audit import audit
from pcpd.errors import ArenaError
from pcpd.model import rings
from pcpd.model.stats import MEMDESC_TYPES, NAMES
from pcpd.policies import record_bytes_for
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.workloads import BACKOFF_FRACTION, Workload, _Choice

TIMED = ("lock_wait", "lock_hold", "heartbeat_ns")      # clock readings, not counts
T_ANON, T_NETPOOL = MEMDESC_TYPES.index("anon"), MEMDESC_TYPES.index("netpool")


def workload_settings(body: str, memory: str = "16MiB"):
    """The single [[workload]] of a config whose workload table is ``body``."""
    text = f'cpus = [0, 1]\n[arena]\nmemory = "{memory}"\n[[workload]]\nname = "w"\n{body}'
    return parse_settings(text, "test.toml", available_cpus={0, 1}).workloads[0]


class Model:
    """An arena of ``ncpus`` slots and one CPU's allocator on slot 0."""

    def __init__(self, pages: int, policy: str, ncpus: int, ring_slots: int) -> None:
        record_bytes = record_bytes_for(policy)
        self.spec = ModelSpec(pages=pages, policy=policy, record_bytes=record_bytes, ncpus=ncpus)
        self.arena = create_arena(self.spec, ring_slots)
        self.cpu = CpuAllocator(self.arena, self.spec, SharedLocks.local(), 0)
        self.policy = self.cpu.policy
        self.outbox = rings.Outbox(self.arena, 0)
        self.sent = 0                                     # blocks the workload handed over

    def send(self, pfn: int, order: int, t: int, dst: int) -> bool:
        """What Worker._send does: queue the block on the ring to dst."""
        queued = self.outbox.push(dst, rings.encode(pfn, t, order))
        self.sent += int(queued)
        return queued

    def workload(self, ws, seed: int = 1, workers=(0,)) -> Workload:
        return Workload(ws, seed, 0, workers, {cpu: i for i, cpu in enumerate(workers)}, self.send)

    def close(self) -> None:
        del self.cpu, self.policy, self.outbox
        try:
            self.arena.close()
        except ArenaError:
            pass
        finally:
            self.arena.unlink()


@pytest.fixture
def make_model():
    made = []

    def make(pages: int = 4096, policy: str = "legacy", ncpus: int = 1, ring_slots: int = 64) -> Model:
        made.append(Model(pages, policy, ncpus, ring_slots))
        return made[-1]

    yield make
    for m in made:
        m.close()


MIXED = """
types = { anon = 3, file = 2, slab = 1, netpool = 1, kernel = 1 }
orders = { 0 = 70, 1 = 10, 2 = 10, 3 = 10 }
working_set = 512
burst = 4
pressure = { period = 700, free_fraction = 0.5 }
"""


def test_choice_picks_by_cumulative_weight():
    choice = _Choice(["a", "b", "c"], [1.0, 2.0, 1.0])
    assert choice.pick(0.0) == "a"
    assert choice.pick(0.24) == "a"
    assert choice.pick(0.26) == "b"
    assert choice.pick(0.74) == "b"
    assert choice.pick(0.76) == "c"
    assert choice.pick(0.999) == "c"


@pytest.mark.parametrize("policy", ["legacy", "memdesc"])
def test_same_seed_same_operations(make_model, policy):
    ws = workload_settings(MIXED)
    runs = []
    for _ in range(2):
        m = make_model(policy=policy)
        w = m.workload(ws, seed=11)
        for _ in range(5000):
            w.step(m.policy)
        counts = {name: m.cpu.counters[name] for name in NAMES if not name.startswith(TIMED)}
        runs.append((list(w.held), w.held_pages, w.waves, counts))
    assert runs[0] == runs[1]
    assert runs[0][2] == 5000 // 700


def test_different_seed_different_operations(make_model):
    ws = workload_settings(MIXED)
    helds = []
    for seed in (1, 2):
        m = make_model()
        w = m.workload(ws, seed=seed)
        for _ in range(2000):
            w.step(m.policy)
        helds.append(list(w.held))
    assert helds[0] != helds[1]


def test_a_workload_hovers_at_its_working_set(make_model):
    m = make_model()
    w = m.workload(workload_settings("working_set = 300\nburst = 1"))
    for _ in range(300):
        w.step(m.policy)
    assert w.held_pages == 300
    for _ in range(1000):
        w.step(m.policy)
        assert 299 <= w.held_pages <= 300
    assert audit(m.arena).pages("allocated") == w.held_pages


def test_bursts_overshoot_by_less_than_a_burst(make_model):
    m = make_model()
    w = m.workload(workload_settings("working_set = 300\nburst = 16"))
    for _ in range(400):
        w.step(m.policy)
    seen = []
    for _ in range(2000):
        w.step(m.policy)
        seen.append(w.held_pages)
    assert 300 - 16 <= min(seen) and max(seen) <= 300 + 15
    assert max(seen) > 300                       # a burst that starts below runs to its end


def fill(w: Workload, policy, n: int) -> list:
    for _ in range(n):
        w.alloc_one(policy)
    return list(w.held)


@pytest.mark.parametrize("lifetime", ["fifo", "lifo"])
def test_ordered_lifetimes_pick_the_oldest_or_newest(make_model, lifetime):
    m = make_model()
    w = m.workload(workload_settings(f'lifetime = "{lifetime}"'))
    held = fill(w, m.policy, 6)
    order = held if lifetime == "fifo" else held[::-1]
    for block in order:
        w.free_one(m.policy)
        assert block not in w.held
    assert not w.held and w.held_pages == 0


def test_random_lifetime_picks_anywhere(make_model):
    m = make_model()
    w = m.workload(workload_settings('lifetime = "random"'))
    positions = set()
    for _ in range(40):
        held = fill(w, m.policy, 8)
        w.free_one(m.policy)
        gone = [i for i, block in enumerate(held) if block not in w.held]
        assert len(gone) == 1
        positions.add(gone[0])
        w.release_all(m.policy)
    assert len(positions) > 3                    # not always the oldest or the newest


def test_pressure_waves_free_their_share_at_their_period(make_model):
    m = make_model()
    w = m.workload(workload_settings("working_set = 400\npressure = { period = 500, free_fraction = 0.5 }"))
    for _ in range(499):
        w.step(m.policy)
    before = len(w.held)
    assert w.waves == 0
    w.step(m.policy)                             # the 500th operation is the wave
    assert w.waves == 1
    assert len(w.held) == before - (before + 1) // 2
    for _ in range(1500):
        w.step(m.policy)
    assert w.waves == 4


def test_free_some_rounds_up(make_model):
    m = make_model()
    w = m.workload(workload_settings(""))
    fill(w, m.policy, 5)
    w.free_some(m.policy, 0.25)                  # a quarter of 5 is 1.25: two blocks go
    assert len(w.held) == 3


def cross_settings(types: str, fraction: float = 1.0, extra: str = "") -> object:
    body = (f'types = {{ {types} }}\nworking_set = 64\nburst = 1\n'
            f'cross_cpu = {{ fraction = {fraction}{extra} }}')
    return workload_settings(body)


def test_only_eligible_types_are_handed_over(make_model):
    m = make_model(ncpus=2, ring_slots=4096)
    ws = cross_settings("anon = 1, netpool = 1", extra=', types = ["netpool"]')
    w = m.workload(ws, workers=(0, 1))
    for _ in range(3000):
        w.step(m.policy)
    queued = [rings.decode(int(e)) for e in rings.queued_entries(m.arena)]
    assert m.sent == len(queued) > 0
    assert {t for _, t, _ in queued} == {T_NETPOOL}
    assert m.cpu.counters["free_type_anon"] > 0          # anon frees stay here
    assert m.cpu.counters["free_type_netpool"] == 0      # every netpool free went to CPU 1
    result = audit(m.arena)
    assert result.ok
    assert sorted(result.blocks["inflight"].pfn.tolist()) == sorted(pfn for pfn, _, _ in queued)


def test_every_type_is_eligible_when_none_is_named(make_model):
    m = make_model(ncpus=2, ring_slots=4096)
    w = m.workload(cross_settings("anon = 1, file = 1"), workers=(0, 1))
    for _ in range(2000):
        w.step(m.policy)
    types = {rings.decode(int(e))[1] for e in rings.queued_entries(m.arena)}
    assert types == {T_ANON, MEMDESC_TYPES.index("file")}


def test_a_worker_never_hands_frees_to_itself(make_model):
    m = make_model(ncpus=2)
    w = m.workload(cross_settings("anon = 1", extra=", targets = [0, 1]"), workers=(0, 1))
    assert w.cross_slots == [1]


def test_a_lone_worker_frees_everything_itself(make_model):
    m = make_model(ncpus=1)
    w = m.workload(cross_settings("anon = 1"), workers=(0,))
    assert w.cross_fraction == 0.0
    for _ in range(1000):
        w.step(m.policy)
    assert m.sent == 0 and len(rings.queued_entries(m.arena)) == 0


def test_a_full_ring_frees_locally(make_model):
    m = make_model(ncpus=2, ring_slots=4)
    w = m.workload(cross_settings("netpool = 1"), workers=(0, 1))
    for _ in range(1000):
        w.step(m.policy)
    assert m.sent == 4
    assert m.cpu.counters["free_type_netpool"] > 0
    result = audit(m.arena)
    assert result.ok
    assert result.pages("inflight") == sum(1 << o for _, _, o in
                                           map(rings.decode, rings.queued_entries(m.arena).tolist()))


def test_cross_fraction_is_a_share_of_eligible_frees(make_model):
    m = make_model(ncpus=2, ring_slots=1 << 14)
    w = m.workload(cross_settings("anon = 1", fraction=0.25), workers=(0, 1))
    for _ in range(8000):
        w.step(m.policy)
    frees = m.sent + m.cpu.counters["free_type_anon"]
    assert 0.2 < m.sent / frees < 0.3


@pytest.mark.parametrize("policy", ["legacy", "memdesc"])
def test_failed_allocation_backs_off(make_model, policy):
    # a 512-page zone cannot hold a 512-page working set
    m = make_model(pages=512, policy=policy)
    w = m.workload(workload_settings("types = { anon = 1 }\norders = { 0 = 1, 2 = 1 }\nworking_set = 512",
                                     memory="2MiB"))
    for _ in range(5000):
        held = len(w.held)
        w.step(m.policy)
        if m.cpu.counters["alloc_fail_no_memory"]:
            break
    else:
        pytest.fail("no allocation failed")
    assert len(w.held) == held - int(held / BACKOFF_FRACTION + 0.999)
    assert w.drain_wanted
    assert w.left_in_burst == 0
    assert m.cpu.counters["alloc_fail_no_memory"] == 1
    assert audit(m.arena).ok


def test_release_all_frees_everything_here(make_model):
    m = make_model(ncpus=2)
    w = m.workload(workload_settings(MIXED + 'cross_cpu = { fraction = 0.5 }'), workers=(0, 1))
    for _ in range(3000):
        w.step(m.policy)
    queued = len(rings.queued_entries(m.arena))
    w.release_all(m.policy)
    assert not w.held and w.held_pages == 0
    assert len(rings.queued_entries(m.arena)) == queued   # no hand-offs at exit
    m.cpu.release()
    result = audit(m.arena)
    assert result.ok
    assert result.pages("allocated") == result.pages("pcp") == 0
