"""pcpd.model.arena: segment layout, create/attach, lifetime and stale-segment cleanup."""

import gc
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from pcpd.errors import ArenaError
from pcpd.model import arena as A
from pcpd.model import stats
from pcpd.model.arena import Arena, Geometry


@pytest.fixture
def arena():
    a = Arena.create(Geometry(1024, 64, 2, ring_slots=16))
    yield a
    try:
        a.close()
    finally:
        a.unlink()


def test_regions_are_line_aligned_and_disjoint():
    g = Geometry(4096, 16, 3, ring_slots=64)
    regions = g.regions()
    end = 0
    for name, (offset, size) in regions.items():
        assert offset % 64 == 0, name
        assert offset >= end, name
        end = offset + size
    assert regions["memmap"][1] == 4096 * 16
    assert regions["descs"][1] == g.desc_slots * A.DESC_WORDS * 8
    assert regions["stats"][1] == 4 * stats.BLOCK_WORDS * 8
    assert regions["rings"][1] == 3 * 3 * (A.RING_HEADER + 64) * 8


@pytest.mark.parametrize("geometry, problem", [
    (Geometry(1024, 48, 1), "record size"),
    (Geometry(1000, 64, 1), "pageblocks"),
    (Geometry(256, 64, 1), "pageblocks"),
    (Geometry(1024, 64, 0), "CPU"),
])
def test_impossible_geometry_is_refused(geometry, problem):
    with pytest.raises(ArenaError, match=problem):
        Arena.create(geometry)


def test_create_writes_the_header(arena):
    h = arena.header
    assert h[A.H_MAGIC] == A.MAGIC and h[A.H_VERSION] == A.VERSION
    assert (h[A.H_PAGES], h[A.H_RECORD], h[A.H_NCPUS]) == (1024, 64, 2)
    assert h[A.H_CREATOR] == os.getpid()
    assert h[A.H_AUDIT_OK] == -1
    assert h[A.H_LOCK_HOLDER_CPU] == h[A.H_LOCK_LAST_CPU] == -1
    assert arena.name.startswith(f"{A.SEGMENT_PREFIX}{os.getpid()}-")


def test_segment_is_owner_only(arena):
    mode = os.stat(os.path.join(A.SHM_DIR, arena.name)).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_views_have_the_layout_shapes(arena):
    assert arena.mem.shape == (1024 * 64 // 8,)
    assert arena.cpuctl.shape == (2, A.CPUCTL_WORDS)
    assert arena.stats.shape == (3, stats.BLOCK_WORDS)
    assert arena.rings.shape == (2, 2, A.RING_HEADER + 16)
    assert arena.pageblock.shape == (2,)
    assert len(arena.memq) == len(arena.mem)


def test_attach_sees_the_same_memory(arena):
    other = Arena.attach(arena.name)
    try:
        assert other.geometry == arena.geometry
        assert not other.owner
        arena.mem[17] = 12345
        arena.memq[18] = 678
        assert other.mem[17] == 12345 and other.memq[18] == 678
        other.descs[3] = -9
        assert arena.descs[3] == -9
    finally:
        other.close()


def test_attach_refuses_a_segment_that_is_not_an_arena():
    from multiprocessing import shared_memory
    name = f"{A.SEGMENT_PREFIX}{os.getpid()}-notarena"
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    try:
        with pytest.raises(ArenaError, match="not a pcpd arena"):
            Arena.attach(name)
    finally:
        shm.close()
        shm.unlink()


def test_attach_missing_segment():
    with pytest.raises(ArenaError, match="cannot attach"):
        Arena.attach(f"{A.SEGMENT_PREFIX}0-missing")


def test_close_keeps_the_mapping_for_live_views():
    """A view outliving close() still reads the segment (no unmap under it)."""
    a = Arena.create(Geometry(512, 8, 1))
    view = a.mem[:8]
    try:
        a.mem[3] = 42
        a.close()
        assert view[3] == 42
        assert not hasattr(a, "mem")
    finally:
        del view
        a.unlink()


def test_close_unmaps_once_the_last_view_goes():
    a = Arena.create(Geometry(512, 8, 1))
    view = a.mem[:8]
    a.close()
    shm = a.shm
    del view
    gc.collect()
    shm.close()                                     # nothing exported any more: succeeds
    a.unlink()


def test_unlink_removes_the_segment_and_is_idempotent():
    a = Arena.create(Geometry(512, 32, 1))
    path = os.path.join(A.SHM_DIR, a.name)
    a.close()
    assert os.path.exists(path)
    a.unlink()
    assert not os.path.exists(path)
    a.unlink()


@pytest.mark.parametrize("name, pid", [
    ("pcpd-123-abcd", 123),
    ("pcpd-x-abcd", None),
    ("other-123-abcd", None),
    ("pcpd-", None),
])
def test_segment_creator(name, pid):
    assert A.segment_creator(name) == pid


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_remove_stale_only_removes_segments_of_dead_creators(tmp_path):
    dead = _dead_pid()
    names = [f"pcpd-{dead}-aaaa", f"pcpd-{os.getpid()}-bbbb", "pcpd-junk", "unrelated"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert A.remove_stale(str(tmp_path)) == [f"pcpd-{dead}-aaaa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_scalar_views_agree_with_numpy_views(arena):
    arena.mem[:] = np.arange(len(arena.mem))
    assert [arena.memq[i] for i in (0, 5, len(arena.mem) - 1)] == [0, 5, len(arena.mem) - 1]
    arena.pageblock[1] = 2
    assert arena.pageblockq[1] == 2
