"""Fuzzing the files pcpd reads, through the real command line (``pcpd.cli.main``).

For ``pcpd check`` (config text), ``pcpd zoneinfo``, ``pcpd replay`` and
``pcpd compare``, whatever the file holds: exit status 0 (the input happened
to be valid; replay may also find it holds no event) or 2, and for 2 exactly
one line on stderr and no traceback; and memory bounded by the caps of
pcpd.inputs, not by the input.  Hypothesis runs derandomized (the same
examples every run) with a bounded number of examples and no example
database, so the file takes a few seconds.
"""

import gzip
import io
import json
import os
import random
import subprocess
import sys
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcpd import cli

TESTS = Path(__file__).parent
REPO = TESTS.parent
CONFIG = (REPO / "configs" / "soak.toml").read_text()
ZONEINFO = (TESTS / "data" / "zoneinfo" / "this-machine-6.18.txt").read_text()
RESULTS = (TESTS / "data" / "results" / "v1-tiny.json").read_text()
TRACE_LINES = (TESTS / "data" / "traces" / "perf-6.18-thp.txt").read_text().splitlines()[:40]

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """pcpd.cli.main in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = cli.main(list(argv))
        except SystemExit as exc:           # argparse's own errors
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def assert_clean(rc: int, err: str, command: str) -> None:
    assert "Traceback" not in err
    if rc == 0:
        assert err == ""
    else:
        assert rc == 2, err
        assert err.endswith("\n") and err.count("\n") == 1, err
        assert err.startswith(f"pcpd {command}: error: "), err


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return str(path)


@st.composite
def mutated(draw, text: str, pieces: list[str]):
    """``text`` with a few cuts, deletions, duplications and insertions."""
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        at = rng.randrange(len(chars) + 1)
        what = rng.random()
        if what < 0.15:
            del chars[at:]
        elif what < 0.4:
            del chars[at:at + rng.randint(1, 40)]
        elif what < 0.55:
            chars[at:at] = chars[max(0, at - 60):at]
        else:
            chars[at:at] = list(draw(st.sampled_from(pieces)) if rng.random() < 0.7 else
                                 draw(st.text(max_size=12)))
    return "".join(chars)


JUNK = ["\0", "\n", "\r", "\ufffd", "\x1b[0m", " " * 200, "9" * 30, "-1", "=", "[", "]", "{", "}", '"']

# --- pcpd check ------------------------------------------------------------------------

TOML_PIECES = JUNK + ["[[workload]]", "[pcp]", "[arena]", "= 1", "= -1", "= 1e999", "= nan", '= "x"',
                      "= [", "= {", "policy", ".", "weight", "order", "\n[", "= 99999999999999999999"]


@FUZZ
@given(st.one_of(mutated(CONFIG, TOML_PIECES), st.text(max_size=300), st.binary(max_size=300)))
def test_check_config_text(workdir, text):
    rc, _, err = run_cli("check", write(workdir / "c.toml", text))
    assert_clean(rc, err, "check")


# --- pcpd zoneinfo ---------------------------------------------------------------------

ZONEINFO_PIECES = JUNK + ["Node 0, zone   Normal\n", "  pages free 1\n", "    cpu: 0\n", "count: 1",
                          "high:  1", "batch: 1", "high_min: 1", "  start_pfn: 1\n", "protection: (0, 0)"]


@FUZZ
@given(st.one_of(mutated(ZONEINFO, ZONEINFO_PIECES), st.binary(max_size=300)))
def test_zoneinfo(workdir, text):
    rc, _, err = run_cli("zoneinfo", write(workdir / "z.txt", text))
    assert_clean(rc, err, "zoneinfo")


# --- pcpd replay -----------------------------------------------------------------------

TRACE_PIECES = JUNK + ["mm_page_alloc:", "mm_page_free:", "kmem:", "page=", "pfn=0x", "order=",
                       "order=11", "gfp_flags=", "|__GFP_COMP", "[000]", "[999999]", "1.5:", "0x"]


@settings(FUZZ, max_examples=25)
@given(st.one_of(mutated("\n".join(TRACE_LINES) + "\n", TRACE_PIECES), st.binary(max_size=300)),
       st.booleans())
def test_replay_trace(workdir, text, compress):
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if compress:
        data = gzip.compress(data)[:len(data) // 2 + 20]       # often cut short too
    rc, _, err = run_cli("replay", write(workdir / "t.txt", data), "--policies", "legacy")
    assert_clean(rc, err, "replay")


# --- pcpd compare ----------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                inner, max_size=4),
                    max_leaves=20)


def results_variants():
    base = json.loads(RESULTS)

    def replace_in(document, path, value):
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return document

    paths = [("format",), ("version",), ("metadata",), ("runs",), ("runs", 0), ("runs", 0, "figures"),
             ("runs", 0, "policy"), ("runs", 0, "point"), ("runs", 0, "figures", "throughput"),
             ("metadata", "config"), ("metadata", "cpu_count"), ("runs", 1, "counters")]
    return st.builds(lambda path, value: json.dumps(replace_in(json.loads(RESULTS), path, value)),
                     st.sampled_from(paths), JSON) if base else st.nothing()


@FUZZ
@given(st.one_of(mutated(RESULTS, JUNK + ['"version": 1', "null", "[]", "{}", "1e999", "NaN"]),
                 results_variants(), JSON.map(json.dumps), st.binary(max_size=200)))
def test_compare_results(workdir, text):
    good = write(workdir / "good.json", RESULTS)
    rc, _, err = run_cli("compare", write(workdir / "r.json", text), good)
    assert_clean(rc, err, "compare")


# --- every command: files that are not files, and files that never end ------------------

COMMANDS = [("check",), ("zoneinfo",), ("replay",), ("compare", "GOOD")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_special_files_are_refused(workdir, command, kind):
    target = {"fifo": workdir / f"fifo-{command[0]}", "directory": workdir / f"dir-{command[0]}",
              "device": Path("/dev/zero")}[kind]
    if kind == "fifo" and not target.exists():
        os.mkfifo(target)                    # no writer: opening it for reading would block
    elif kind == "directory":
        target.mkdir(exist_ok=True)
    argv = [command[0], str(target)] + [write(workdir / "good.json", RESULTS)
                                        for _ in command[1:]]
    rc, _, err = run_cli(*argv)
    assert_clean(rc, err, command[0])
    assert rc == 2
    if command[0] != "compare" or kind != "directory":    # compare reads DIR/results.json
        assert "not a regular file" in err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_huge_single_line_costs_bounded_memory(workdir, command):
    path = workdir / f"line-{command[0]}"
    size = 8 << 20
    with open(path, "wb") as f:                 # /dev/zero-like: no newline anywhere
        f.write(b"\0" * size)
    argv = [command[0], str(path)] + [write(workdir / "good.json", RESULTS) for _ in command[1:]]
    tracemalloc.start()
    try:
        rc, _, err = run_cli(*argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_clean(rc, err, command[0])
    assert rc == 2
    # traces and zoneinfo hold a line; config and results files are read whole up to their caps
    # (1 MiB, 64 MiB): a results file is held with its decoded text, then refused
    limit = 3 * size if command[0] == "compare" else 4 << 20
    assert peak < limit, f"{command[0]}: peak {peak >> 20} MiB"


def test_replay_counts_endless_lines_of_a_trace_as_skips(workdir):
    path = workdir / "long-lines.txt"
    path.write_bytes(b"\n".join([TRACE_LINES[5].encode(), b"x" * (3 << 20), TRACE_LINES[5].encode()]))
    rc, out, err = run_cli("replay", str(path), "--policies", "legacy")
    assert (rc, err) == (0, "")
    assert "3 lines;" in out and "skipped 1 (1 line over 64 KiB)" in out


@pytest.mark.parametrize("document, message", [
    ("[" * 100_000, "not a JSON document (nested too deeply)"),
    ('{"version": ' + "9" * 5000 + "}", "not a JSON document (Exceeds the limit (4300 digits)"),
    ('{"format": ', "not a JSON document (Expecting value"),
])
def test_compare_refuses_json_bombs(workdir, document, message):
    good = write(workdir / "good.json", RESULTS)
    rc, _, err = run_cli("compare", write(workdir / "bomb.json", document), good)
    assert_clean(rc, err, "compare")
    assert rc == 2 and message in err


def test_the_real_entry_point_on_devices_and_stdin(workdir):
    # /dev/zero would have grown pcpd to ~4 GB before; standard input is read as a file
    for argv in (["replay", "/dev/zero"], ["compare", "/dev/zero", "/dev/zero"]):
        proc = subprocess.run([sys.executable, "-m", "pcpd", *argv], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "a character device, not a regular file" in proc.stderr
    good = write(workdir / "good.json", RESULTS)
    proc = subprocess.run([sys.executable, "-m", "pcpd", "compare", "-", good], input=RESULTS,
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "A = -" in proc.stdout
