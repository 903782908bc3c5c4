"""What a run of the daemon returns: its figures, its counters and how it ended.

``Daemon.run()`` fills one ``RunReport`` as the run goes (restarts, kills,
audits, the daemon's own memory, each CPU's PCP tuning over time) and
completes it at the stop (final audit, final counters, exit status).  Nothing here prints: ``pcpd run`` shows the
report with ``pcpd.daemon.console``, experiments and benchmarks read its
figures directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from pcpd.model.stats import Snapshot
from pcpd.model.tuning import TuningSeries
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
