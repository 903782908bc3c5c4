"""pcpd.model.slab: the descriptor cache's per-CPU and shared parts."""

import os
import threading

import pytest

from pcpd.model.arena import DESC_WORDS, H_SLAB_HOLDER_PID, H_SLAB_TOP, Arena, Geometry
from pcpd.model.slab import D_STATE, DS_CACHED, SLAB_BATCH, SLAB_LOCAL_MAX, DescriptorSlab, desc_state, format_slab
from pcpd.model.stats import Counters

PAGES = 512


@pytest.fixture
def arena():
    a = Arena.create(Geometry(PAGES, 16, 2))
    format_slab(a)
    yield a
    try:
        a.close()
    finally:
        a.unlink()


def make_slabs(arena):
    lock = threading.Lock()
    counters = [Counters(), Counters()]
    return counters, [DescriptorSlab(arena, lock, counters[cpu], cpu) for cpu in (0, 1)]


def shared_top(arena) -> int:
    return int(arena.header[H_SLAB_TOP])


def test_format_puts_every_descriptor_on_the_shared_stack(arena):
    assert shared_top(arena) == arena.geometry.desc_slots == PAGES
    assert sorted(arena.descfree[:PAGES]) == list(range(PAGES))
    assert not arena.descs.any()


def test_first_alloc_refills_a_batch(arena):
    counters, (slab, _) = make_slabs(arena)
    idx = slab.alloc()
    assert 0 <= idx < PAGES
    assert shared_top(arena) == PAGES - SLAB_BATCH
    assert len(slab.local) == SLAB_BATCH - 1
    assert counters[0]["slab_alloc"] == 1 and counters[0]["slab_shared"] == 1
    for cached in slab.local:                        # parked descriptors name their CPU
        assert arena.descs[cached * DESC_WORDS + D_STATE] == desc_state(0, DS_CACHED, 0, 0)


def test_alloc_free_pairs_stay_local(arena):
    counters, (slab, _) = make_slabs(arena)
    slab.free(slab.alloc())
    shared = counters[0]["slab_shared"]
    for _ in range(100):
        slab.free(slab.alloc())
    assert counters[0]["slab_shared"] == shared
    assert counters[0]["slab_alloc"] == counters[0]["slab_free"] == 101


def test_free_flushes_a_batch_past_the_local_limit(arena):
    counters, (slab, _) = make_slabs(arena)
    held = [slab.alloc() for _ in range(SLAB_LOCAL_MAX + 1)]
    top = shared_top(arena)
    for idx in held:
        slab.free(idx)
    assert len(slab.local) <= SLAB_LOCAL_MAX
    assert shared_top(arena) == top + SLAB_BATCH    # exactly one batch went back
    assert shared_top(arena) + len(slab.local) == PAGES
    for idx in arena.descfree[top:top + SLAB_BATCH]:
        assert arena.descs[idx * DESC_WORDS + D_STATE] == 0


def test_descriptors_are_conserved_across_cpus(arena):
    _, slabs = make_slabs(arena)
    held = []
    for i in range(300):
        held.append(slabs[i % 2].alloc())
    for i, idx in enumerate(held[::3]):            # some freed on the other CPU
        slabs[(i + 1) % 2].free(idx)
    in_use = set(held) - set(held[::3])
    local = set(slabs[0].local) | set(slabs[1].local)
    shared = set(arena.descfree[:shared_top(arena)].tolist())
    assert len(held) == len(set(held))             # never handed out twice
    assert not (in_use & local) and not (in_use & shared) and not (local & shared)
    assert len(in_use) + len(local) + len(shared) == PAGES
    for slab in slabs:
        slab.flush_all()
    assert shared_top(arena) == PAGES - len(in_use)


def test_exhaustion_raises(arena):
    _, (slab, _) = make_slabs(arena)
    for _ in range(PAGES):
        slab.alloc()
    with pytest.raises(MemoryError):
        slab.alloc()


def test_shared_part_records_its_holder(arena):
    lock = threading.Lock()
    slab = DescriptorSlab(arena, lock, Counters(), 0)
    seen = []
    with slab._shared():                            # noqa: SLF001 - the part recovery reads
        seen.append(int(arena.header[H_SLAB_HOLDER_PID]))
        assert lock.locked()
    assert seen == [os.getpid()]
    assert arena.header[H_SLAB_HOLDER_PID] == 0
    assert not lock.locked()

