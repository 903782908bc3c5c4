"""pcpd.replay.bundle and pcpd.replay.capture: capture bundles, read and written.

A hand-made bundle always; a real ``perf record`` where this machine lets
one run (perf installed, and root or a low kernel.perf_event_paranoid with
tracefs access), skipped with the reason otherwise.
"""

import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import zlib

import pytest
from replay_lines import BUNDLE_THP, THP_ZONEINFO, alloc, free, thp_like

from pcpd import cli
from pcpd.errors import InputError, UsageError
from pcpd.replay.bundle import FORMAT, VERSION, is_bundle
from pcpd.replay.capture import capture, mmap_pages, parse_lost_samples
from pcpd.replay.command import replay


def make_bundle(root, lines, window=(100.0, 1000.0), system_wide=False, **extra):
    root.mkdir()
    (root / "trace.txt").write_text("\n".join(lines) + "\n")
    shutil.copy(THP_ZONEINFO, root / "zoneinfo-before.txt")
    shutil.copy(THP_ZONEINFO, root / "zoneinfo-after.txt")
    meta = {"format": FORMAT, "version": VERSION, "system_wide": system_wide,
            "window": {"start": window[0], "end": window[1]}, "command": ["thp.py"], **extra}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def bundle(tmp_path):
    # one allocation before the window: the start snapshot already holds it
    early = alloc(0x7000, ts=99.0)
    return make_bundle(tmp_path / "b", [early] + thp_like(rounds=2))


def test_a_bundle_directory_replays_with_its_own_zoneinfo(bundle):
    r = replay(bundle, policies=["legacy"])
    assert r["trace"] == str(bundle)
    assert r["skipped"] == {"outside the capture window": 1}
    assert r["replay"]["allocs"] == 64 and r["model"]["zone_source"].endswith("zoneinfo-before.txt")
    assert r["scope"] == {"scope": "process", "evidence": "pcpd capture without -a"}
    assert r["start"]["mode"] == "capture" and r["start"]["cpus"][0]["high_captured"] == 25088
    # each of the 16 refills grows high by batch (nr_pcp_alloc(), the zone above high); this
    # hand-made bundle's zoneinfo-after is a copy of the one before
    assert r["end_state"]["cpus"][0]["high"] == {"capture": 25088, "model": 25088 + 16 * 63}
    assert r["policies"]["legacy"]["drains"] == 0


def test_a_tar_bundle_reads_the_same(bundle, tmp_path):
    for name, mode in (("b.tar", "w"), ("b.tar.gz", "w:gz"), ("b.tar.xz", "w:xz")):
        with tarfile.open(tmp_path / name, mode) as tar:
            for f in sorted(bundle.iterdir()):
                tar.add(f, arcname=f.name)
        assert is_bundle(tmp_path / name)
        a, b = replay(bundle, policies=["legacy"]), replay(tmp_path / name, policies=["legacy"])
        for r in (a, b):
            for key in ("trace", "model", "end_state"):
                del r[key]
        assert a == b


def test_explicit_zoneinfo_and_start_override_the_bundle(bundle):
    r = replay(bundle, policies=["legacy"], start="empty")
    assert r["start"]["mode"] == "empty" and r["policies"]["legacy"]["drains"] > 0


def test_plain_traces_and_zeros_are_not_bundles(tmp_path):
    (tmp_path / "zeros").write_bytes(bytes(1 << 16))     # reads as an empty tar
    (tmp_path / "t.txt").write_text(free(0x10) + "\n")
    assert not is_bundle(tmp_path / "zeros") and not is_bundle(tmp_path / "t.txt")
    assert not is_bundle("-") and not is_bundle(tmp_path / "missing")
    assert is_bundle(BUNDLE_THP)


def test_a_file_that_is_no_tar_is_never_decompressed(tmp_path, monkeypatch):
    """A large file of zeros is told apart by its first bytes: no decompressor reads it to its end."""
    def refuse(*args, **kwargs):
        raise AssertionError("a decompressor was tried")
    monkeypatch.setattr(lzma, "LZMADecompressor", refuse)
    monkeypatch.setattr(zlib, "decompressobj", refuse)
    (tmp_path / "zeros").write_bytes(bytes(8 << 20))
    assert not is_bundle(tmp_path / "zeros")


@pytest.mark.parametrize("meta, message", [
    ("{", "metadata.json is not JSON"),
    ('{"format": "other"}', "is not a pcpd capture's"),
    (json.dumps({"format": FORMAT, "version": 9, "system_wide": True}), "bundle version 9"),
    (json.dumps({"format": FORMAT, "version": VERSION, "system_wide": "yes"}), "system_wide"),
    (json.dumps({"format": FORMAT, "version": VERSION, "system_wide": True,
                 "window": {"start": 5, "end": 1}}), "window must be"),
])
def test_bad_metadata_is_one_line(bundle, meta, message):
    (bundle / "metadata.json").write_text(meta)
    with pytest.raises(InputError, match=message) as exc:
        replay(bundle, policies=["legacy"])
    assert "\n" not in str(exc.value)


def test_a_directory_that_is_not_a_bundle(tmp_path):
    with pytest.raises(InputError, match="not a regular file, nor a capture bundle"):
        replay(tmp_path, policies=["legacy"])
    (tmp_path / "metadata.json").write_text(json.dumps({"format": FORMAT, "version": VERSION,
                                                        "system_wide": False}))
    with pytest.raises(InputError, match="the bundle has no trace"):
        replay(tmp_path, policies=["legacy"])


def test_tar_members_that_are_not_files_are_refused(bundle, tmp_path):
    os.symlink("/etc/passwd", tmp_path / "trace.txt")
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        tar.add(bundle / "metadata.json", arcname="metadata.json")
        tar.add(tmp_path / "trace.txt", arcname="trace.txt")
        tar.add(bundle / "trace.txt", arcname="../escape.txt")          # ignored: not a member name
    with pytest.raises(InputError, match="member 'trace.txt' is not a regular file"):
        replay(tmp_path / "evil.tar", policies=["legacy"])
    assert not (tmp_path.parent / "escape.txt").exists()


def test_replay_command_reads_a_bundle(capsys):
    rc = cli.main(["replay", str(BUNDLE_THP), "--policies", "legacy"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "scope: whole system (pcpd capture -a)" in out and "start (capture): CPU0 high 14805" in out
    assert "end state (legacy vs" in out and "drains: free path" in out


# --- pcpd capture -------------------------------------------------------------------------

def test_capture_needs_a_command_and_perf(tmp_path):
    with pytest.raises(UsageError, match="no command to run"):
        capture([], str(tmp_path / "b"))
    with pytest.raises(UsageError, match="no-such-perf: not found"):
        capture(["true"], str(tmp_path / "b"), perf="no-such-perf")
    (tmp_path / "b").mkdir()
    with pytest.raises(UsageError, match="exists"):
        capture(["true"], str(tmp_path / "b"), perf=sys.executable)


def test_capture_command_line_errors_exit_2(tmp_path, capsys):
    assert cli.main(["capture", "-o", str(tmp_path / "b"), "--perf", "no-such-perf", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-perf: not found" in err


# perf report --stats of a 12-second make -j2 recorded with perf's default buffers
LOST_STATS = """
Aggregated stats:
           TOTAL events:     601664
            LOST events:         13  ( 0.0%)
          SAMPLE events:     597490  (99.3%)
    LOST_SAMPLES events:         14  ( 0.0%)
kmem:mm_page_alloc stats:
          SAMPLE events:     191273
    LOST_SAMPLES events:       3989
kmem:mm_page_free stats:
          SAMPLE events:     156835
    LOST_SAMPLES events:      24543
kmem:mm_page_pcpu_drain stats:
          SAMPLE events:      27807
"""


def test_lost_samples_are_read_per_event():
    assert parse_lost_samples(LOST_STATS) == {"mm_page_alloc": 3989, "mm_page_free": 24543}
    assert parse_lost_samples(LOST_STATS.replace("24543", "0").replace("3989", "0")) == {}


def test_perf_buffers_fit_the_budget():
    assert mmap_pages(2) == 4096                       # 16 MiB a CPU: a make -j2 lost nothing
    assert mmap_pages(224) == 256                      # 224 x 1 MiB, within 256 MiB
    assert mmap_pages(100000) == 128                   # never below perf's usual size
    for cpus in (1, 3, 96, 224):
        assert mmap_pages(cpus) & (mmap_pages(cpus) - 1) == 0


def test_mmap_pages_must_be_a_power_of_two(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["capture", "--mmap-pages", "3", "--", "true"])
    assert exit_.value.code == 2 and "expected a power of two" in capsys.readouterr().err


def _perf_unusable() -> str:
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed"
    probe = subprocess.run([perf, "record", "-q", "-o", "/dev/null", "-e", "kmem:mm_page_alloc",
                            "--", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode:
        lines = (probe.stderr.strip().splitlines() or ["exit status " + str(probe.returncode)])
        return f"perf record cannot trace kmem:mm_page_alloc here: {lines[-1]}"
    return ""


@pytest.fixture(scope="module")
def perf_works():
    """Probed once, and only when a test that records is run."""
    why = _perf_unusable()
    if why:
        pytest.skip(why)


@pytest.mark.usefixtures("perf_works")
def test_capture_and_replay_a_command(tmp_path):
    work = [sys.executable, "-c", "b = bytearray(8 << 20); b[::4096] = b'x' * 2048"]
    dest, meta = capture(work, str(tmp_path / "b"))
    assert dest.is_dir() and not (dest / "perf.data").exists()
    assert {p.name for p in dest.iterdir()} >= {"metadata.json", "trace.txt.gz",
                                                "zoneinfo-before.txt", "zoneinfo-after.txt"}
    assert meta["system_wide"] is False and meta["exit_status"] == 0 and meta["lost_samples"] == {}
    assert meta["perf_record"][meta["perf_record"].index("-m") + 1] == str(mmap_pages(os.cpu_count() or 1))
    assert meta["window"]["start"] <= meta["window"]["end"]
    r = replay(dest, policies=["legacy"])
    assert r["scope"]["scope"] == "process" and r["replay"]["allocs"] >= 2048
    assert r["start"]["mode"] == "capture" and r["policies"]["legacy"]["audit_ok"]
    # the child's own start-up happened before the window: skipped, not replayed
    assert r["skipped"].get("outside the capture window", 0) > 0


@pytest.mark.usefixtures("perf_works")
def test_capture_all_cpus_into_a_tar(tmp_path, capsys):
    rc = cli.main(["capture", "-a", "-o", str(tmp_path / "b.tar.gz"), "--", "sleep", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0 and "every task (-a)" in out and "replay it with: pcpd replay" in out
    assert is_bundle(tmp_path / "b.tar.gz")
    r = replay(tmp_path / "b.tar.gz", policies=["legacy"])
    assert r["scope"] == {"scope": "system", "evidence": "pcpd capture -a"}
    assert r["policies"]["legacy"]["audit_ok"]


@pytest.mark.usefixtures("perf_works")
def test_capture_passes_the_command_status_on(tmp_path, capsys):
    rc = cli.main(["capture", "-o", str(tmp_path / "b"), "--", "sh", "-c", "exit 3"])
    assert rc == 0 and "exited with 3" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["exit_status"] == 3
