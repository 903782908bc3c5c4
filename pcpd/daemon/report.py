"""What a run of the daemon returns: its figures, its counters and how it ended.

``Daemon.run()`` fills one ``RunReport`` as the run goes (restarts, kills,
audits, the daemon's own memory, each CPU's PCP tuning over time) and
completes it at the stop (final audit, final counters, exit status).  Nothing here prints: ``pcpd run`` shows the
report with ``pcpd.daemon.console``, experiments and benchmarks read its
figures directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from pcpd.model.stats import INDEX, TUNING_GAUGES, TUNING_KEYS, Snapshot
from pcpd.policies import MEMDESC_BUDGETS

if TYPE_CHECKING:
    from pcpd.daemon.audit import AuditResult


@dataclass
class Measurement:
    """Counters at the start and end of the measured window of a run (after any warm-up)."""

    start: Snapshot | None = None
    end: Snapshot | None = None
    seconds: float = 0.0
    opened: float = 0.0          # time.monotonic() when the window opened


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


@dataclass
class RunReport:
    """One run of the daemon, as ``pcpd run`` summarises it."""

    name: str = ""               # the config's name
    policy: str = ""
    memdesc_high: str = MEMDESC_BUDGETS[0]   # policy.memdesc_high: the budget of per-type PCPs
    era: str = ""
    workers: int = 0
    seconds: float = 0.0         # the whole run, warm-up included
    ops: int = 0
    restarts: int = 0            # workers replaced after dying (a reload is not a restart)
    audits: int = 0              # conservation audits, the final one included
    audit_failures: int = 0
    kills: int = 0               # --kill-interval SIGKILLs
    kills_holding_lock: int = 0
    private_start: int = 0       # daemon RSS less resident shared pages (the arena), bytes
    private_peak: int = 0
    private_end: int = 0
    final_audit: str = ""        # the final audit's one-line verdict
    drained: bool = False        # every page back in the buddy at the end
    pages_lost: int = 0
    totals: dict[str, int] = field(default_factory=dict)    # every counter, summed over the CPUs
    snapshot: Snapshot | None = None                        # the final counters, per CPU
    measurement: Measurement = field(default_factory=Measurement)
    tuning: TuningSeries | None = None    # each CPU's PCP tuning over the run (the daemon's samples)
    interrupted: bool = False    # stopped by SIGINT or SIGTERM
    exit_code: int = 1           # 0: the final audit passed and every PCP was drained

    def note_memory(self) -> None:
        """Sample the daemon's own memory: RSS less the shared pages it maps (the arena,
        whose residency grows as audits touch more of it, and is no leak)."""
        info = psutil.Process().memory_info()
        private = info.rss - info.shared
        self.private_start = self.private_start or private
        self.private_peak = max(self.private_peak, private)
        self.private_end = private

    def conclude(self, final: AuditResult, snapshot: Snapshot) -> None:
        """The run's end: its final audit, with every worker gone, and its last counters."""
        self.final_audit = final.summary()
        self.pages_lost = len(final.orphans)
        self.drained = final.pages("buddy") == final.total
        self.snapshot, self.ops, self.totals = snapshot, snapshot.ops(), snapshot.totals()
        self.exit_code = 0 if final.ok and self.drained else 1
