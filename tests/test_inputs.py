"""pcpd.inputs: which files pcpd opens, and how much of them it holds."""

import io
import os
import threading
import tracemalloc

import pytest

from pcpd import inputs
from pcpd.errors import InputError
from pcpd.inputs import (
    MAX_LINE,
    bounded_lines,
    display_name,
    open_input,
    read_capped,
    too_long,
)


def test_regular_files_open(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    with open_input(tmp_path / "f") as f:
        assert f.read() == b"abc"
    assert read_capped(str(tmp_path / "f")) == b"abc"


@pytest.mark.parametrize("make, kind", [
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: os.mkfifo(p), "a FIFO"),
])
def test_other_kinds_of_file_are_refused(tmp_path, make, kind):
    path = tmp_path / "x"
    make(path)
    with pytest.raises(InputError) as err:
        open_input(path, "cannot read trace")
    assert str(err.value) == (f"{path}: cannot read trace: {kind}, not a regular file "
                              "(give a file, or - for standard input)")


def test_a_fifo_without_writer_does_not_block(tmp_path):
    # the refusal comes from stat, before any open; a blocked open would hang this thread
    os.mkfifo(tmp_path / "fifo")
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_refusal(tmp_path / "fifo")), daemon=True)
    thread.start()
    thread.join(10)
    assert outcome and "a FIFO" in outcome[0]


def _refusal(path):
    try:
        read_capped(path)
    except InputError as err:
        return str(err)
    return "opened"


def test_devices_are_refused():
    with pytest.raises(InputError, match="^/dev/zero: cannot read: a character device, not a regular file"):
        read_capped("/dev/zero")


def test_missing_file_names_the_reason(tmp_path):
    with pytest.raises(InputError, match=f"^{tmp_path / 'no'}: cannot read: No such file or directory$"):
        open_input(tmp_path / "no")


def test_stdin_is_dash():
    assert display_name("-") == "<stdin>" and display_name("a/-") == "a/-"
    f = open_input("-")
    assert f.fileno() == 0
    f.close()
    os.fstat(0)                                  # closing it left fd 0 open


def test_read_capped_refuses_past_the_cap(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * (1 << 20))
    assert len(read_capped(tmp_path / "f", limit=1 << 20)) == 1 << 20
    with pytest.raises(InputError, match=r"f: larger than 1023 bytes, more than pcpd reads of such a file$"):
        read_capped(tmp_path / "f", limit=1023)
    (tmp_path / "f").write_bytes(b"x" * ((1 << 20) + 1))
    with pytest.raises(InputError, match=r"f: larger than 1 MiB, more than pcpd reads of such a file$"):
        read_capped(tmp_path / "f", limit=1 << 20)


@pytest.mark.parametrize("text, lines", [
    ("", []),
    ("a\nb", ["a\n", "b"]),
    ("a\r\nb\n", ["a\r\n", "b\n"]),
    ("x" * 10 + "\n", ["x" * 10 + "\n"]),                    # exactly the limit: kept whole
    ("x" * 11 + "\nok\n", ["x" * 11, "ok\n"]),               # over it: cut, the rest dropped
    ("y" * 25 + "\nok", ["y" * 11, "ok"]),
    ("z" * 11, ["z" * 11]),                                  # an over-long last line
])
def test_bounded_lines(text, lines):
    got = list(bounded_lines(io.StringIO(text), limit=10))
    assert got == lines
    assert [too_long(line, 10) for line in got] == [len(line.rstrip("\r\n")) > 10 for line in lines]


def test_an_endless_line_costs_one_line_of_memory():
    text = io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"\0" * (8 << 20) + b"\nend\n")),
                            encoding="utf-8")
    tracemalloc.start()
    try:
        lines = [len(line) for line in bounded_lines(text)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [MAX_LINE + 1, 4]
    assert peak < 16 * MAX_LINE                  # 8 MiB read, a few lines' worth held


def test_a_reader_that_refuses_a_cut_line_stops_reading():
    class Endless(io.TextIOBase):
        reads = 0

        def readline(self, size=-1):
            self.reads += 1
            return "\0" * size

    endless = Endless()
    assert too_long(next(bounded_lines(endless)))
    assert endless.reads == 1


def test_the_caps_are_documented():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert f"{inputs.MAX_LINE // 1024} KiB" in readme and f"{inputs.MAX_FILE_BYTES >> 20} MiB" in readme
