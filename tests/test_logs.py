"""pcpd.logs: every worker's lines reach the daemon's stderr, tagged, through its own pipe.

A LogReader copies whole lines to the daemon's handler and ends when the
pipe's write end is gone, whether the worker closed it or was killed.
"""

import io
import logging
import multiprocessing
import os
import re
import signal

import pytest

from pcpd.logs import LogReader, configure_daemon_logging, configure_worker_logging

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\S+) (INFO|WARNING|ERROR) (.*)")


@pytest.fixture
def root_logging():
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def daemon_stream(root_logging):
    stream = io.StringIO()
    configure_daemon_logging(stream)
    return stream


def lines(stream: io.StringIO) -> list[tuple[str, str, str]]:
    out = []
    for line in stream.getvalue().splitlines():
        match = LINE.fullmatch(line)
        assert match, f"badly formed log line {line!r}"
        out.append(match.groups())
    return out


def test_daemon_records_are_tagged_daemon(daemon_stream):
    logging.getLogger("pcpd.daemon").info("reloaded %s", "x.toml")
    logging.getLogger("pcpd.daemon").error("worker pid %d died", 42)
    assert lines(daemon_stream) == [("daemon", "INFO", "reloaded x.toml"),
                                    ("daemon", "ERROR", "worker pid 42 died")]


def test_reader_copies_every_line_and_ends_with_the_pipe(daemon_stream):
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    reader = LogReader(reader_end, "cpu3")
    for i in range(50):
        writer_end.send_bytes(f"2026-01-02 12:00:00 cpu3 INFO line {i}".encode())
    writer_end.close()
    reader.join(5.0)
    assert not reader.thread.is_alive()
    assert lines(daemon_stream) == [("cpu3", "INFO", f"line {i}") for i in range(50)]


def test_worker_logging_goes_down_its_pipe(daemon_stream):
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    root = logging.getLogger()
    daemon_handlers = root.handlers[:]
    configure_worker_logging(writer_end, "cpu1")      # as in a worker process
    logging.getLogger("pcpd.worker").info("started: policy %s", "legacy")
    logging.getLogger("pcpd.worker").warning("short of memory")
    writer_end.close()
    root.handlers[:] = daemon_handlers                # back in the daemon: the pipe kept the lines
    reader = LogReader(reader_end, "cpu1")
    reader.join(5.0)
    assert lines(daemon_stream) == [("cpu1", "INFO", "started: policy legacy"),
                                    ("cpu1", "WARNING", "short of memory")]


def _log_then_die(conn) -> None:
    configure_worker_logging(conn, "cpu5")
    log = logging.getLogger("pcpd.worker")
    log.info("started")
    log.error("about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_ends_its_reader(daemon_stream):
    ctx = multiprocessing.get_context("spawn")
    reader_end, writer_end = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_log_then_die, args=(writer_end,))
    worker.start()
    writer_end.close()                                # the worker holds the only write end
    reader = LogReader(reader_end, "cpu5")
    worker.join(10.0)
    assert worker.exitcode == -signal.SIGKILL
    reader.join(10.0)
    assert not reader.thread.is_alive()
    assert lines(daemon_stream) == [("cpu5", "INFO", "started"), ("cpu5", "ERROR", "about to be killed")]


def test_a_worker_outliving_the_daemon_logs_nowhere_quietly(root_logging, capsys):
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    reader_end.close()                                # the daemon is gone
    configure_worker_logging(writer_end, "cpu0")
    logging.getLogger("pcpd.worker").error("the daemon is gone; exiting")
    writer_end.close()
    assert capsys.readouterr().err == ""              # no "--- Logging error ---" report


def test_worker_without_a_pipe_has_no_handlers(root_logging):
    configure_worker_logging(None, "cpu0")
    assert logging.getLogger().handlers == []


def test_lines_to_the_journal_carry_their_priority_and_no_time(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_daemon_logging(stream)
        logging.getLogger("pcpd.daemon").info("started")
        logging.getLogger("pcpd.daemon").error("worker died")
    assert path.read_text().splitlines() == ["<6>daemon INFO started", "<3>daemon ERROR worker died"]


def test_another_streams_journal_is_not_this_one(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    stream = io.StringIO()
    configure_daemon_logging(stream)
    logging.getLogger("pcpd.daemon").info("started")
    assert LINE.fullmatch(stream.getvalue().strip())
