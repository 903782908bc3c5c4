"""The spool: decoded model operations on an anonymous temporary file.

``pcpd.replay.decode`` writes every operation once; ``pcpd.replay.run`` reads
them all back once per policy.  A trace's operations can outgrow memory
(a busy machine emits millions of events a second), so they live on disk,
15 bytes each, written and read in blocks.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

# OP_FREE_PRE: the free of a block allocated before the capture (cpu, order and
# memdesc type; block number 0): pass 2 takes one from the pre-capture pool.
OP_ALLOC, OP_FREE, OP_DECAY, OP_FREE_PRE = range(4)
# OP_DECAY's block number: a tick decays every CPU, a vmstat_update work its own CPU.
DECAY_ALL_CPUS, DECAY_ONE_CPU = 0, 1
OP = struct.Struct("<BIBBq")       # kind, cpu, order, memdesc type, block number
FLUSH_BYTES = 1 << 16              # the write buffer: what the spool holds in memory
READ_OPS = 1 << 16                 # operations read back per block

Op = tuple[int, int, int, int, int]


class OpSpool:
    """Model operations on an anonymous temporary file: written once, read per policy."""

    def __init__(self) -> None:
        self._file: BinaryIO = tempfile.TemporaryFile(prefix="pcpd-replay-")
        self._buf = bytearray()
        self.count = 0

    def add(self, kind: int, cpu: int, order: int, t: int, block: int) -> None:
        self._buf += OP.pack(kind, cpu, order, t, block)
        self.count += 1
        if len(self._buf) >= FLUSH_BYTES:
            self._file.write(self._buf)
            self._buf.clear()

    def __iter__(self) -> Iterator[Op]:
        """Every operation in order; the spool stays readable for the next pass."""
        if self._buf:
            self._file.write(self._buf)
            self._buf.clear()
        self._file.seek(0)
        while chunk := self._file.read(OP.size * READ_OPS):
            yield from OP.iter_unpack(chunk)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> OpSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
