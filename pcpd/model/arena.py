"""The page arena: one shared-memory segment that every pcpd process maps.

The segment is the source of truth.  It holds the ``struct page`` array
(``mem``), the buddy zone's free-list heads and counters, the pageblock
migratetypes, the memdesc descriptors, per-CPU statistics and control words,
and the cross-CPU free rings.  Anything a process keeps elsewhere (PCP list
order, local counters) is a cache that can be rebuilt from here.

Layout (every region starts on a 64-byte line; words are int64 unless noted):

    header     HEADER_WORDS words: magic, version, geometry, creator pid,
               daemon control words and the zone-lock bookkeeping (H_* below)
    zone       ZONE_WORDS words, owned by pcpd.model.zone
    pageblock  int8 per 512-page pageblock: its migratetype
    memmap     pages * record_bytes: the struct page array (pcpd.model.memmap)
    freelinks  2 words per page: list links kept in a free block's own memory
               (8-byte struct page stage, and memdesc Misc PCP lists)
    descs      desc_slots * 16 words: memdesc descriptors (folio, slab, ptdesc,
               netmem, pcpdesc), 128 B each (pcpd.model.slab)
    descfree   desc_slots words: the slab's shared free stack (pcpd.model.slab)
    cpuctl     CPUCTL_WORDS words per CPU slot: pid, state, heartbeat
    stats      (ncpus + 1) stats blocks (pcpd.model.stats); the last is "retired"
    rings      ncpus * ncpus rings of RING_HEADER + ring_slots words
               (ring (src, dst) carries pages freed by src for dst)

Segments are created with owner-only permissions (0600) under the name
``pcpd-<creator pid>-<random>``; ``remove_stale`` unlinks the ones whose
creator is dead, and only those the current user owns.
"""

from __future__ import annotations

import _posixshmem
import gc
import os
import secrets
import sys
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from pcpd.errors import ArenaError
from pcpd.model import stats

PAGE_SIZE = 4096
PAGEBLOCK_PAGES = 512
RECORD_SIZES = (64, 32, 16, 8)
SEGMENT_PREFIX = "pcpd-"
SHM_DIR = "/dev/shm"
MAGIC = 0x70637064_61726E61  # "pcpdarna"
VERSION = 1

HEADER_WORDS = 512
ZONE_WORDS = 1024
CPUCTL_WORDS = 16
DESC_WORDS = 16
RING_HEADER = 8

# Header word indices.
H_MAGIC, H_VERSION, H_PAGES, H_RECORD, H_NCPUS, H_RING_SLOTS, H_DESC_SLOTS, H_CREATOR = range(8)
H_CREATED_NS = 8
H_DRAIN_SEQ = 16         # bumped by the daemon to ask every PCP to drain (drain_all_pages)
H_SHUTDOWN = 17          # 1: workers stop and free what they hold; 2: drain and exit
H_DAEMON_HEARTBEAT = 19  # monotonic ns, written by the daemon
H_PAUSE_REQ = 20         # nonzero: workers park at their next check point and ack with this value
H_LOCK_HOLDER_PID = 24   # zone lock bookkeeping (pcpd.model.lock)
H_LOCK_HOLDER_CPU = 25
H_LOCK_LAST_CPU = 26
H_LOCK_OP = 27           # what the holder is doing (pcpd.model.lock.OP_*), for recovery logs
H_SLAB_TOP = 32          # top of the shared descriptor free stack
H_SLAB_HOLDER_PID = 33
H_AUDIT_OK = 40          # last conservation audit: 1 ok, 0 violated, -1 never run
H_AUDIT_RUNS = 41
H_AUDIT_FAILURES = 42
H_RESTARTS = 43
H_MEMDESC = 44           # 1: pages carry memdesc words (memdesc policies); 0: today's flags

# cpuctl word indices, per CPU slot.
(C_PID, C_STATE, C_HEARTBEAT, C_DRAIN_ACK, C_RESTARTS, C_WAITING, C_CPU, C_PAUSE_ACK,
 C_DRAIN_REQ, C_STOP) = range(10)


@dataclass(frozen=True)
class Geometry:
    """Sizes that fix the segment layout; stored in the header for attachers."""

    pages: int
    record_bytes: int
    ncpus: int
    ring_slots: int = 1024

    @property
    def desc_slots(self) -> int:
        return self.pages                     # worst case: one descriptor per page

    def regions(self) -> dict[str, tuple[int, int]]:
        """Region name -> (byte offset, byte size), each aligned to 64 bytes."""
        sizes = {
            "header": HEADER_WORDS * 8,
            "zone": ZONE_WORDS * 8,
            "pageblock": self.pages // PAGEBLOCK_PAGES,
            "memmap": self.pages * self.record_bytes,
            "freelinks": self.pages * 16,
            "descs": self.desc_slots * DESC_WORDS * 8,
            "descfree": self.desc_slots * 8,
            "cpuctl": self.ncpus * CPUCTL_WORDS * 8,
            "stats": (self.ncpus + 1) * stats.BLOCK_WORDS * 8,
            "rings": self.ncpus * self.ncpus * (RING_HEADER + self.ring_slots) * 8,
        }
        out, offset = {}, 0
        for name, size in sizes.items():
            out[name] = (offset, size)
            offset += (size + 63) // 64 * 64
        out["_end"] = (offset, 0)
        return out

    def validate(self) -> None:
        if self.record_bytes not in RECORD_SIZES:
            raise ArenaError(f"record size {self.record_bytes} is not one of {RECORD_SIZES}")
        if self.pages < PAGEBLOCK_PAGES or self.pages % PAGEBLOCK_PAGES:
            raise ArenaError(f"{self.pages} pages is not a whole number of 512-page pageblocks")
        if self.ncpus < 1:
            raise ArenaError("an arena needs at least one CPU slot")


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # Python < 3.13 registers every mapping with the resource tracker, which then
    # unlinks the segment when *any* process that mapped it exits.  pcpd owns
    # the segment's lifetime itself (daemon exit, or remove_stale on next start).
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
    except Exception:  # the tracker may not know it; nothing to undo
        pass


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Map an existing segment without telling the resource tracker.

    Workers share their daemon's tracker; had each registered the name and
    unregistered it again, the second unregister would fail in the tracker.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args: None   # attach-time only, single-threaded
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


class Arena:
    """A mapped pcpd segment and typed views of its regions.

    Create it once (``Arena.create``) in the daemon or a single-process run;
    workers ``Arena.attach(name)``.  ``close()`` drops this process's mapping;
    ``unlink()`` removes the segment (creator only, on clean exit).
    """

    def __init__(self, shm: shared_memory.SharedMemory, geometry: Geometry, owner: bool) -> None:
        self.shm, self.geometry, self.owner = shm, geometry, owner
        self.name = shm.name
        regions = geometry.regions()
        buf = shm.buf

        def words(region: str, dtype=np.int64) -> np.ndarray:
            off, size = regions[region]
            # frombuffer holds a buffer export: close() refuses while a view lives,
            # instead of unmapping memory under it
            return np.frombuffer(buf, dtype, size // np.dtype(dtype).itemsize, off)

        self.header = words("header")
        self.zone = words("zone")
        self.pageblock = words("pageblock", np.int8)
        self.mem = words("memmap")
        self.freelinks = words("freelinks")
        self.descs = words("descs")
        self.descfree = words("descfree")
        self.cpuctl = words("cpuctl").reshape(geometry.ncpus, CPUCTL_WORDS)
        self.stats = words("stats").reshape(geometry.ncpus + 1, stats.BLOCK_WORDS)
        self.rings = words("rings").reshape(
            geometry.ncpus, geometry.ncpus, RING_HEADER + geometry.ring_slots
        )
        # Scalar views for hot paths: memoryview indexing yields plain ints and
        # stores faster than numpy scalars; the numpy views serve strided work.
        self._views: list[memoryview] = []
        self.memq = self._scalar_view(regions["memmap"])
        self.descq = self._scalar_view(regions["descs"])
        self.pageblockq = self._scalar_view(regions["pageblock"], "b")

    def _scalar_view(self, region: tuple[int, int], fmt: str = "q") -> memoryview:
        off, size = region
        window = self.shm.buf[off:off + size]
        view = window.cast(fmt)
        self._views += [view, window]
        return view

    @property
    def pages(self) -> int:
        return self.geometry.pages

    @property
    def record_bytes(self) -> int:
        return self.geometry.record_bytes

    @classmethod
    def create(cls, geometry: Geometry) -> Arena:
        geometry.validate()
        size = geometry.regions()["_end"][0]
        name = f"{SEGMENT_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except OSError as err:
            raise ArenaError(f"cannot create shared memory segment {name}: {err}") from err
        _untrack(shm)
        os.fchmod(shm._fd, 0o600)  # noqa: SLF001 - already 0600 on Linux; make it explicit
        arena = cls(shm, geometry, owner=True)
        h = arena.header
        h[H_MAGIC], h[H_VERSION] = MAGIC, VERSION
        h[H_PAGES], h[H_RECORD], h[H_NCPUS] = geometry.pages, geometry.record_bytes, geometry.ncpus
        h[H_RING_SLOTS], h[H_DESC_SLOTS] = geometry.ring_slots, geometry.desc_slots
        h[H_CREATOR], h[H_CREATED_NS] = os.getpid(), time.time_ns()
        h[H_AUDIT_OK] = -1
        h[H_LOCK_HOLDER_CPU] = h[H_LOCK_LAST_CPU] = -1
        return arena

    @classmethod
    def attach(cls, name: str) -> Arena:
        try:
            shm = _attach_untracked(name)
        except OSError as err:
            raise ArenaError(f"cannot attach shared memory segment {name}: {err}") from err
        head = np.frombuffer(shm.buf, np.int64, 16)
        if head[H_MAGIC] != MAGIC or head[H_VERSION] != VERSION:
            del head
            shm.close()
            raise ArenaError(f"{name} is not a pcpd arena of version {VERSION}")
        geometry = Geometry(int(head[H_PAGES]), int(head[H_RECORD]), int(head[H_NCPUS]),
                            int(head[H_RING_SLOTS]))
        del head
        return cls(shm, geometry, owner=False)

    def close(self) -> None:
        """Drop this arena's views and, once no view is left, the mapping.

        Views handed out earlier (a Zone's, a policy's) pin the mapping (numpy
        frombuffer holds a buffer export), so it is unmapped when the last of
        them goes, never under a live view.
        """
        for attr in ("memq", "descq", "pageblockq"):
            self.__dict__.pop(attr, None)
        for view in self._views:
            view.release()
        self._views = []
        for attr in ("header", "zone", "pageblock", "mem", "freelinks", "descs",
                     "descfree", "cpuctl", "stats", "rings"):
            self.__dict__.pop(attr, None)
        try:
            self.shm.close()
        except BufferError:
            gc.collect()                         # views kept only by reference cycles
            try:
                self.shm.close()
            except BufferError:
                # live views keep the mapping (through their buffer export) until they
                # go; detach it so SharedMemory's own close-on-collect does not retry
                self.shm._buf = self.shm._mmap = None  # noqa: SLF001

    def unlink(self) -> None:
        # not SharedMemory.unlink(): it would tell the resource tracker, which
        # no longer tracks this segment (see _untrack)
        try:
            _posixshmem.shm_unlink(self.shm._name)  # noqa: SLF001
        except FileNotFoundError:
            pass


def segment_creator(name: str) -> int | None:
    """The creator pid encoded in a pcpd segment name, or None if it is not one."""
    if not name.startswith(SEGMENT_PREFIX):
        return None
    pid, _, _ = name[len(SEGMENT_PREFIX):].partition("-")
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink pcpd segments of this user whose creating process is gone."""
    removed = []
    uid = os.getuid()
    for entry in os.scandir(shm_dir):
        pid = segment_creator(entry.name)
        if pid is None or _alive(pid):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except FileNotFoundError:
            continue
    return removed
