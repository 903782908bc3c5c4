"""pcpd: an allocator stress and experiment service for Linux PCP designs."""

import os

# pcpd makes no BLAS calls, but numpy's OpenBLAS starts a server thread per
# CPU as it loads, and each spins about 0.1 s of CPU before it sleeps: in a
# worker, CPU taken from the pinned worker beside it; in bench/, process time
# counted against whatever it measured first (issue 12).  Set before any pcpd
# module imports numpy (pcpd's entry points import pcpd first; a program that
# imported numpy before pcpd keeps its threads), inherited by every process
# the program starts; a user's own setting stands.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pcpd import core  # noqa: E402

__version__ = "0.1.0"

core.choose()
