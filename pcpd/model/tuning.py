"""Each CPU's PCP tuning over a run: high, free_count and alloc_factor sampled as time goes.

The daemon samples a ``TuningSeries`` once a second from the snapshots it
takes anyway (``pcpd.daemon.supervisor``); the virtual-time simulator samples
one every few microseconds of virtual time (``pcpd.simulate.engine``).  Both
store it in their run record (``pcpd.analysis.results``: ``tuning``), which
``pcpd.analysis.report`` plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcpd.model.stats import INDEX, TUNING_GAUGES, TUNING_KEYS, Snapshot

TUNING_INTERVAL = 1.0           # s: vmstat_update()'s tick, when decay_pcp_high() runs
TUNING_SAMPLES = 512            # at most this many kept, however long the run


class TuningSeries:
    """Each CPU's PCP high, free_count and alloc_factor over a run, sampled by the daemon
    (or by ``pcpd.simulate.engine`` in virtual time).

    The values are the workers' fold-time gauges (``stats.TUNING_GAUGES``),
    read from a snapshot the daemon takes anyway; nothing is added to the
    workers.  The series is bounded: once ``TUNING_SAMPLES`` are kept, every
    other one is dropped and the interval doubles, so an endless soak keeps
    a fixed amount of memory and still covers its whole length.
    """

    def __init__(self, cpus: Sequence[int], interval: float = TUNING_INTERVAL) -> None:
        self.cpus = list(cpus)
        self.interval = interval
        self.seconds: list[float] = []
        self.values = np.zeros((TUNING_SAMPLES, len(TUNING_GAUGES), len(cpus)), dtype=np.int64)
        self.next = interval
        # times kept to a thousandth of the interval: ms for the daemon's, finer for virtual time's
        self.digits = 3 - min(0, math.floor(math.log10(interval)))

    def due(self, elapsed: float) -> bool:
        return elapsed >= self.next

    def sample(self, elapsed: float, snapshot: Snapshot) -> None:
        """Record every CPU's tuning gauges as ``snapshot`` has them, ``elapsed`` s into the run."""
        if len(self.seconds) == TUNING_SAMPLES:
            self._halve()
        n = len(self.seconds)
        for g, name in enumerate(TUNING_GAUGES):
            self.values[n, g] = snapshot.per_cpu[:, INDEX[name]]
        self.seconds.append(elapsed)
        self.next = elapsed + self.interval

    def _halve(self) -> None:
        kept = self.values[1::2].copy()
        self.values[:len(kept)] = kept
        self.seconds = self.seconds[1::2]
        self.interval *= 2

    def record(self) -> dict[str, Any]:
        """The series as a run record stores it (pcpd.analysis.results: ``tuning``)."""
        n = len(self.seconds)
        out: dict[str, Any] = {"interval": self.interval, "cpus": self.cpus,
                               "seconds": [round(t, self.digits) for t in self.seconds]}
        for g, key in enumerate(TUNING_KEYS):
            out[key] = self.values[:n, g].T.tolist()
        return out
