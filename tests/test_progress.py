"""Tests for pcpd.analysis.progress: one line per run off a terminal, a redrawn bar on one."""

import io

from pcpd.analysis.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


RUN = {"figures": {"throughput_ops_per_second": 123456.0, "pcp_hit_ratio": 0.5}, "exit_code": 0}


def test_progress_prints_one_line_per_run_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(2, stream)
    progress.start("legacy, repetition 1/1")
    progress.finish("legacy, repetition 1/1", RUN)
    progress.close()
    assert stream.getvalue() == "pcpd experiment: [1/2] legacy, repetition 1/1: 123,456 ops/s, hit 50.0%\n"


def test_progress_redraws_a_bar_on_a_terminal():
    stream, clock = Terminal(), FakeClock()
    progress = Progress(4, stream, clock)
    progress.start("legacy")
    clock.now = 10.0
    progress.finish("legacy", RUN)
    progress.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0] == "[........................] 0/4  running legacy"
    assert frames[1] == "[######..................] 1/4 0:30 left  legacy: 123,456 ops/s, hit 50.0%\n"
