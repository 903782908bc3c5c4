"""pcpd.model.arena: segment layout, create/attach, lifetime and stale-segment cleanup."""

import gc
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from pcpd.errors import ArenaError
from pcpd.model import stats
from pcpd.model.arena import (
    CPUCTL_WORDS,
    DESC_WORDS,
    H_AUDIT_OK,
    H_CREATOR,
    H_LOCK_HOLDER_CPU,
    H_LOCK_LAST_CPU,
    H_MAGIC,
    H_NCPUS,
    H_PAGES,
    H_RECORD,
    H_VERSION,
    MAGIC,
    PID_MAX_LIMIT,
    RING_HEADER,
    SEGMENT_PREFIX,
    SHM_DIR,
    VERSION,
    Arena,
    Geometry,
    remove_stale,
    segment_creator,
)


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
    assert regions["descs"][1] == g.desc_slots * DESC_WORDS * 8
    assert regions["stats"][1] == 4 * stats.BLOCK_WORDS * 8
    assert regions["rings"][1] == 3 * 3 * (RING_HEADER + 64) * 8


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
    assert h[H_MAGIC] == MAGIC and h[H_VERSION] == VERSION
    assert (h[H_PAGES], h[H_RECORD], h[H_NCPUS]) == (1024, 64, 2)
    assert h[H_CREATOR] == os.getpid()
    assert h[H_AUDIT_OK] == -1
    assert h[H_LOCK_HOLDER_CPU] == h[H_LOCK_LAST_CPU] == -1
    assert arena.name.startswith(f"{SEGMENT_PREFIX}{os.getpid()}-")


def test_segment_is_owner_only(arena):
    mode = os.stat(os.path.join(SHM_DIR, arena.name)).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_views_have_the_layout_shapes(arena):
    assert arena.mem.shape == (1024 * 64 // 8,)
    assert arena.cpuctl.shape == (2, CPUCTL_WORDS)
    assert arena.stats.shape == (3, stats.BLOCK_WORDS)
    assert arena.rings.shape == (2, 2, RING_HEADER + 16)
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
    name = f"{SEGMENT_PREFIX}{os.getpid()}-notarena"
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    try:
        with pytest.raises(ArenaError, match="not a pcpd arena"):
            Arena.attach(name)
    finally:
        shm.close()
        shm.unlink()


def test_attach_missing_segment():
    with pytest.raises(ArenaError, match="cannot attach"):
        Arena.attach(f"{SEGMENT_PREFIX}0-missing")


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
    path = os.path.join(SHM_DIR, a.name)
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
    assert segment_creator(name) == pid


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_remove_stale_only_removes_segments_of_dead_creators(tmp_path):
    dead = _dead_pid()
    names = [f"pcpd-{dead}-aaaa", f"pcpd-{os.getpid()}-bbbb", "pcpd-junk", "unrelated"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale(str(tmp_path)) == [f"pcpd-{dead}-aaaa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_scalar_views_agree_with_numpy_views(arena):
    arena.mem[:] = np.arange(len(arena.mem))
    assert [arena.memq[i] for i in (0, 5, len(arena.mem) - 1)] == [0, 5, len(arena.mem) - 1]
    arena.pageblock[1] = 2
    assert arena.pageblockq[1] == 2
    # the zone, header and free-link words the buddy and zone->lock use as plain ints
    for numpy_view, scalar_view in ((arena.zone, arena.zoneq), (arena.header, arena.headerq),
                                    (arena.freelinks, arena.freelinksq), (arena.descs, arena.descq)):
        assert len(scalar_view) == len(numpy_view)
        scalar_view[len(numpy_view) - 1] = -7
        assert numpy_view[-1] == -7


# -- the stale-segment sweep against what any local user can put in /dev/shm -----------

def test_segment_names_are_parsed_strictly():
    assert segment_creator("pcpd-99999999999999999999-aaaa") is None     # no OverflowError later
    assert segment_creator(f"pcpd-{PID_MAX_LIMIT + 1}-aaaa") is None
    assert segment_creator(f"pcpd-{PID_MAX_LIMIT}-aaaa") == PID_MAX_LIMIT
    assert segment_creator("pcpd-0-aaaa") is None                        # kill(0) is the group
    assert segment_creator("pcpd-\u00b2-aaaa") is None                    # int('²') raises
    assert segment_creator("pcpd-\u0661\u0662-aaaa") is None              # Arabic-Indic digits
    assert segment_creator("pcpd-12-aaaa\n") is None
    assert segment_creator("pcpd-12") is None
    assert segment_creator("pcpd-12-zz") is None


def test_remove_stale_leaves_hostile_entries_alone(tmp_path, caplog):
    dead = _dead_pid()
    stale = f"pcpd-{dead}-aaaa"
    (tmp_path / stale).write_bytes(b"x")
    hostile = {
        "pcpd-99999999999999999999-aaaa": "file",     # OverflowError in os.kill before
        "pcpd-\u00b2-aaaa": "file",                   # ValueError in int() before
        f"pcpd-{dead}-bbbb": "dir",                   # IsADirectoryError in unlink before
        f"pcpd-{dead}-cccc": "symlink",               # to a file that must survive
        f"pcpd-{dead}-dddd": "fifo",
    }
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    for name, kind in hostile.items():
        path = tmp_path / name
        if kind == "file":
            path.write_bytes(b"x")
        elif kind == "dir":
            path.mkdir()
        elif kind == "symlink":
            path.symlink_to(target)
        else:
            os.mkfifo(path)
    with caplog.at_level("DEBUG", logger="pcpd.arena"):
        assert remove_stale(str(tmp_path)) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*hostile, "target"])
    assert target.read_bytes() == b"keep"
    # one line for the lot; the names are logged escaped
    assert "5 entries" in caplog.text and "left alone" in caplog.text
    assert "'pcpd-\\xb2-aaaa'" in caplog.text


def test_remove_stale_leaves_other_users_segments_alone(tmp_path, monkeypatch):
    dead = _dead_pid()
    (tmp_path / f"pcpd-{dead}-aaaa").write_bytes(b"x")
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    assert remove_stale(str(tmp_path)) == []
    assert (tmp_path / f"pcpd-{dead}-aaaa").exists()


def test_remove_stale_never_fails_on_an_unreadable_directory(tmp_path):
    assert remove_stale(str(tmp_path / "missing")) == []
    (tmp_path / "file").write_bytes(b"")
    assert remove_stale(str(tmp_path / "file")) == []
