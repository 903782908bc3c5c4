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
    pbowner    int16 per pageblock: the CPU slot + 1 that owns it, 0 for the zone
               (the pageblock-owning PCP, workers.policies.pcp_buddy)
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
import logging
import os
import re
import secrets
import stat
import sys
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any, Literal

import numpy as np

from pcpd.errors import ArenaError
from pcpd.kernel import PAGEBLOCK_NR_PAGES, RECORD_BYTES
from pcpd.model import stats

log = logging.getLogger("pcpd.arena")

RECORD_SIZES = RECORD_BYTES[::-1]      # largest first, as messages and --record-bytes choices list them
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
            "pageblock": self.pages // PAGEBLOCK_NR_PAGES,
            "pbowner": self.pages // PAGEBLOCK_NR_PAGES * 2,
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
        if self.pages < PAGEBLOCK_NR_PAGES or self.pages % PAGEBLOCK_NR_PAGES:
            raise ArenaError(f"{self.pages} pages is not a whole number of "
                             f"{PAGEBLOCK_NR_PAGES}-page pageblocks")
        if self.ncpus < 1:
            raise ArenaError("an arena needs at least one CPU slot")


def _cpython(shm: shared_memory.SharedMemory) -> Any:
    """``shm`` itself, typed for its CPython internals (``_name`` with the leading
    slash, ``_fd``, ``_buf``, ``_mmap``), which typeshed does not declare."""
    return shm


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # Python < 3.13 registers every mapping with the resource tracker, which then
    # unlinks the segment when *any* process that mapped it exits.  pcpd owns
    # the segment's lifetime itself (daemon exit, or remove_stale on next start).
    try:
        resource_tracker.unregister(_cpython(shm)._name, "shared_memory")  # noqa: SLF001
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
        if buf is None:
            raise ArenaError(f"{shm.name} is not mapped")

        def words(region: str, dtype=np.int64) -> np.ndarray:
            off, size = regions[region]
            # frombuffer holds a buffer export: close() refuses while a view lives,
            # instead of unmapping memory under it
            return np.frombuffer(buf, dtype, size // np.dtype(dtype).itemsize, off)

        self.header = words("header")
        self.zone = words("zone")
        self.pageblock = words("pageblock", np.int8)
        self.pbowner = words("pbowner", np.int16)
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
        self.headerq = self._scalar_view(buf, regions["header"])
        self.zoneq = self._scalar_view(buf, regions["zone"])
        self.zoneb = self._scalar_view(buf, regions["zone"], "b")   # zone->flags' bytes
        self.memq = self._scalar_view(buf, regions["memmap"])
        self.freelinksq = self._scalar_view(buf, regions["freelinks"])
        self.descq = self._scalar_view(buf, regions["descs"])
        self.pageblockq = self._scalar_view(buf, regions["pageblock"], "b")

    def _scalar_view(self, buf: memoryview, region: tuple[int, int],
                     fmt: Literal["q", "b"] = "q") -> memoryview:
        off, size = region
        window = buf[off:off + size]
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
        os.fchmod(_cpython(shm)._fd, 0o600)  # noqa: SLF001 - already 0600 on Linux; make it explicit
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
        if shm.buf is None:
            raise ArenaError(f"{name} is not mapped")
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
        frombuffer and the compiled core's typed memoryviews hold a buffer
        export), so it is unmapped when the last of them goes, never under a
        live view.
        """
        for attr in ("headerq", "zoneq", "memq", "freelinksq", "descq", "pageblockq"):
            self.__dict__.pop(attr, None)
        for view in self._views:
            try:
                view.release()
            except BufferError:                  # exported: it goes with its last holder
                pass
        self._views = []
        for attr in ("header", "zone", "pageblock", "pbowner", "mem", "freelinks", "descs",
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
                shm = _cpython(self.shm)
                shm._buf = shm._mmap = None  # noqa: SLF001

    def unlink(self) -> None:
        # not SharedMemory.unlink(): it would tell the resource tracker, which
        # no longer tracks this segment (see _untrack)
        try:
            _posixshmem.shm_unlink(_cpython(self.shm)._name)  # noqa: SLF001
        except FileNotFoundError:
            pass


# pcpd-<creator pid>-<hex>; the pid is ASCII digits no larger than the kernel's
# PID_MAX_LIMIT, so a hostile name can neither pass for a pid nor overflow a syscall
SEGMENT_NAME = re.compile(re.escape(SEGMENT_PREFIX) + r"([0-9]{1,7})-[0-9a-f]{4,32}")
PID_MAX_LIMIT = 4 * 1024 * 1024


def segment_creator(name: str) -> int | None:
    """The creator pid encoded in a pcpd segment name, or None if it is not one."""
    match = SEGMENT_NAME.fullmatch(name)
    if match is None:
        return None
    pid = int(match.group(1))
    return pid if 0 < pid <= PID_MAX_LIMIT else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink pcpd segments of this user whose creating process is gone.

    /dev/shm is world-writable, so anything may be there under a pcpd-like
    name: only regular files of this user whose whole name is a segment name
    are candidates.  Anything else is left alone and logged; nothing found
    there can make the sweep fail.
    """
    try:
        entries = list(os.scandir(shm_dir))
    except OSError as err:
        log.info("stale segments not swept: cannot list %s: %s", shm_dir, err.strerror)
        return []
    removed, odd = [], 0
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(SEGMENT_PREFIX):
            continue
        name = ascii(entry.name)
        pid = segment_creator(entry.name)
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue                                     # gone meanwhile
        if info.st_uid != uid:
            log.debug("%s: another user's; left alone", name)
            continue
        if pid is None or not stat.S_ISREG(info.st_mode):
            log.debug("%s: not a pcpd segment (name or file type); left alone", name)
            odd += 1
            continue
        if _alive(pid):
            continue
        try:
            os.unlink(entry.path)
        except OSError as err:
            log.debug("%s: cannot remove: %s", name, err.strerror)
            continue
        removed.append(entry.name)
    if odd:
        log.info("%d entr%s of %s named like pcpd segments but not one (a malformed name, or "
                 "not a regular file): left alone", odd, "y" if odd == 1 else "ies", shm_dir)
    return removed
