"""An experiment's progress on the terminal: which run is going, how many are done, how long is left.

On a terminal one bar is redrawn in place with \\r; elsewhere (a log, a
pipe) each run that ends prints one line, so the record reads top to bottom.

Imports: the standard library and ``pcpd.analysis.results`` (the run record it reads).
"""

from __future__ import annotations

import time
from typing import TextIO

from pcpd.analysis.results import RunRecord


class Progress:
    """Progress on ``stream``: a bar redrawn with \\r on a terminal, one line per run elsewhere."""

    WIDTH = 24
    MAX_LINE = 150

    def __init__(self, total: int, stream: TextIO, clock=time.monotonic) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty()
        self.done = 0
        self.began = clock()
        self.drawn = 0                            # length of the line on screen

    def start(self, label: str) -> None:
        if self.tty:
            self._draw(f"running {label}")

    def finish(self, label: str, run: RunRecord) -> None:
        self.done += 1
        figs = run["figures"]
        outcome = (f"{figs['throughput_ops_per_second']:,.0f} ops/s, "
                   f"hit {figs['pcp_hit_ratio']:.1%}" + ("" if not run["exit_code"] else ", FAILED"))
        if self.tty:
            self._draw(f"{label}: {outcome}")
        else:
            print(f"pcpd experiment: [{self.done}/{self.total}] {label}: {outcome}",
                  file=self.stream, flush=True)

    def eta(self) -> float | None:
        """Seconds left, from the mean time of the runs so far; None before the first ends."""
        if not self.done:
            return None
        return (self.clock() - self.began) / self.done * (self.total - self.done)

    def _draw(self, text: str) -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        eta = self.eta()
        left = "" if eta is None else f" {int(eta) // 60}:{int(eta) % 60:02d} left"
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}{left}  {text}"
        line = line[:self.MAX_LINE]
        self.stream.write("\r" + line.ljust(self.drawn))      # blank what a longer line left
        self.stream.flush()
        self.drawn = len(line)

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
