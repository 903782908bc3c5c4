"""``pcpd capture``: record a kmem trace with the zone state around it, as one bundle.

::

    pcpd capture [-a] [-o BUNDLE] [--perf PERF] [--mmap-pages N] [--keep-perf-data] -- CMD [ARG...]

runs ``perf record`` on the page-allocator tracepoints (and the workqueue
ones that tell ``decay_pcp_high()`` drains apart) while CMD runs, every
task with ``-a`` (what ``pcpd replay`` compares counts on) or CMD and its
children without, then ``perf script``, and writes a bundle
(``pcpd.replay.bundle``) that ``pcpd replay BUNDLE`` reads directly.

The start state has to be the one the first replayed event saw, so the
snapshots are taken inside the recording: perf runs this module as its
command (``python -m pcpd.replay.capture --child DIR -- CMD``), which reads
/proc/zoneinfo and /proc/pagetypeinfo, notes the time on CLOCK_MONOTONIC
(the clock ``perf record -k CLOCK_MONOTONIC`` stamps events with), runs CMD,
notes the time again and takes the second snapshots.  The replay keeps the
events between the two times.  /proc/pagetypeinfo is readable by root
only; without it the bundle has none and the replay says so.

perf drops events when its per-CPU buffers fill faster than it writes them
out: a 12-second ``make -j2`` here lost 54,000 of 650,000 samples with
perf's default buffers, and every lost ``mm_page_free`` turns into a "lost
free" in the replay.  So the buffers default to 16 MiB per CPU, at most
256 MiB in all (``--mmap-pages``), and after recording ``perf report
--stats`` tells how many samples of each event were lost: the count goes
into metadata.json (``lost_samples``), a warning to stderr, and the replay's
output.

Needs perf and, for the kmem tracepoints, root (or a low
``kernel.perf_event_paranoid`` and access to tracefs); what perf says when
it cannot is passed on in one line, exit status 2.  ``-o`` ending in
``.tar``, ``.tar.gz`` or ``.tgz`` writes a tar, else a directory; an
existing one is refused.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pcpd import __version__, argtypes
from pcpd.errors import PcpdError, UsageError
from pcpd.replay.bundle import (
    FORMAT,
    METADATA,
    PAGETYPEINFO_AFTER,
    PAGETYPEINFO_BEFORE,
    VERSION,
    ZONEINFO_AFTER,
    ZONEINFO_BEFORE,
)

KMEM_EVENTS = ("mm_page_alloc", "mm_page_free", "mm_page_free_batched",
               "mm_page_alloc_zone_locked", "mm_page_pcpu_drain", "mm_page_alloc_extfrag")
WORKQUEUE_EVENTS = ("workqueue_execute_start", "workqueue_execute_end")
TRACEFS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
TRACE = "trace.txt.gz"
TIMES = "times.json"               # the child's two timestamps, folded into metadata.json
PERF_DATA = "perf.data"
MMAP_BUDGET = 256 << 20            # bytes of perf ring buffers, all CPUs together
MMAP_MAX_PAGES = 4096              # per CPU: 16 MiB, enough for a make -j2 here
MMAP_MIN_PAGES = 128
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def events() -> list[str]:
    """The tracepoints to record: the kmem ones, and the workqueue ones where tracefs has
    them (without tracefs to look in, all of them, and perf decides)."""
    root = next((Path(p) for p in TRACEFS if Path(p).is_dir()), None)
    wanted = [("kmem", e) for e in KMEM_EVENTS] + [("workqueue", e) for e in WORKQUEUE_EVENTS]
    if root is not None:
        wanted = [(g, e) for g, e in wanted if g == "kmem" or (root / g / e).is_dir()]
    return [f"{g}:{e}" for g, e in wanted]


def mmap_pages(cpus: int, page_size: int = 4096) -> int:
    """perf record -m: pages per CPU buffer, a power of two, within MMAP_BUDGET for ``cpus``."""
    fit = max(MMAP_BUDGET // (max(cpus, 1) * page_size), MMAP_MIN_PAGES)
    return min(1 << (fit.bit_length() - 1), MMAP_MAX_PAGES)


def capture(cmd: list[str], out: str | None = None, system_wide: bool = False,
            perf: str = "perf", keep_perf_data: bool = False,
            pages: int | None = None) -> tuple[Path, dict]:
    """Run the capture (see the module docstring); the bundle's path and its metadata."""
    if not cmd:
        raise UsageError("no command to run: pcpd capture [-a] [-o BUNDLE] -- CMD [ARG...]")
    perf_path = shutil.which(perf)
    if perf_path is None:
        raise UsageError(f"{perf}: not found; install perf (linux-perf, linux-tools) or give --perf")
    dest = Path(out or datetime.now().strftime("pcpd-capture-%Y%m%d-%H%M%S"))
    as_tar = dest.name.endswith(TAR_SUFFIXES)
    if dest.exists():
        raise UsageError(f"{dest}: exists; give a new bundle name with -o")
    if as_tar and not dest.parent.is_dir():
        raise UsageError(f"{dest.parent}: no such directory for the bundle")
    with tempfile.TemporaryDirectory(prefix="pcpd-capture-", dir=dest.parent if as_tar else None) as tmp:
        work = Path(tmp) if as_tar else dest
        if not as_tar:
            try:
                dest.mkdir(parents=True)
            except OSError as err:
                raise UsageError(f"{dest}: cannot create: {err.strerror or err}") from None
        try:
            metadata = _record(work, cmd, system_wide, perf_path, keep_perf_data,
                               pages or mmap_pages(os.cpu_count() or 1))
        except BaseException:
            if not as_tar:
                shutil.rmtree(dest, ignore_errors=True)
            raise
        if as_tar:
            gz = dest.name.endswith((".gz", ".tgz"))
            with tarfile.open(dest, "w:gz") if gz else tarfile.open(dest, "w") as tar:
                for member in sorted(work.iterdir()):
                    tar.add(member, arcname=member.name, recursive=False)
    return dest, metadata


def _record(work: Path, cmd: list[str], system_wide: bool, perf: str, keep: bool, pages: int) -> dict:
    evs = events()
    argv = [perf, "record", "-q", "-m", str(pages), "-k", "CLOCK_MONOTONIC", "-o", str(work / PERF_DATA)]
    argv += [a for e in evs for a in ("-e", e)]
    if system_wide:
        argv.append("-a")
    argv += ["--", sys.executable, "-m", "pcpd.replay.capture", "--child", str(work), "--", *cmd]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = subprocess.run(argv, stderr=subprocess.PIPE, text=True, errors="replace")
    times_path = work / TIMES
    if not times_path.is_file():                   # perf never ran the child: say why, in one line
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {result.returncode}"
        for line in lines:
            if "ermission" in line or "paranoid" in line or "No such" in line or "not found" in line:
                why = line
                break
        raise UsageError(f"perf record failed: {why}")
    sys.stderr.write(result.stderr)
    times = json.loads(times_path.read_text())
    times_path.unlink()
    _script(perf, work)
    lost = lost_samples(perf, work / PERF_DATA)
    if not keep:
        (work / PERF_DATA).unlink(missing_ok=True)
    metadata = {
        "format": FORMAT, "version": VERSION, "system_wide": system_wide, "command": cmd,
        "exit_status": times["exit_status"], "window": {"start": times["start"], "end": times["end"]},
        "clock": "CLOCK_MONOTONIC", "events": evs, "kernel": platform.release(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "created": started,
        "perf_record": argv[:argv.index("--")], "pcpd": __version__,
        "missing": times["missing"], "lost_samples": lost,
    }
    (work / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def _script(perf: str, work: Path) -> None:
    """perf script's text into trace.txt.gz, streamed (a trace can be gigabytes)."""
    with gzip.open(work / TRACE, "wb", compresslevel=6) as out:
        proc = subprocess.Popen([perf, "script", "-i", str(work / PERF_DATA)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        shutil.copyfileobj(proc.stdout, out, 1 << 20)
        _, err = proc.communicate()
    if proc.returncode:
        lines = err.decode(errors="replace").strip().splitlines()
        raise PcpdError(f"perf script failed: {lines[-1] if lines else proc.returncode}")


def lost_samples(perf: str, data: Path) -> dict[str, int]:
    """Samples perf lost, by event (``perf report --stats``: LOST_SAMPLES under each
    ``EVENT stats:`` heading); empty when none were lost or perf cannot tell."""
    proc = subprocess.run([perf, "report", "--stats", "-i", str(data)], capture_output=True,
                          text=True, errors="replace")
    return parse_lost_samples(proc.stdout)


def parse_lost_samples(stats: str) -> dict[str, int]:
    lost: dict[str, int] = {}
    event = None
    for line in stats.splitlines():
        line = line.strip()
        if line.endswith(" stats:"):               # "kmem:mm_page_free stats:"; not "Aggregated"
            name = line[:-len(" stats:")].partition(":")[2]
            event = name or None
        elif event and line.startswith("LOST_SAMPLES events:"):
            n = int(line.split(":")[1].split()[0])
            if n:
                lost[event] = lost.get(event, 0) + n
    return lost


# --- the child: snapshots around CMD, inside the recording --------------------------------

def _snapshot(src: str, dest: Path) -> bool:
    try:
        with open(src, "rb") as f:
            dest.write_bytes(f.read())
        return True
    except OSError:
        return False


def child(work: Path, cmd: list[str]) -> int:
    """Snapshot, time, run CMD, time, snapshot; the times for the parent.  CMD's status."""
    missing = []
    got = {ZONEINFO_BEFORE: _snapshot("/proc/zoneinfo", work / ZONEINFO_BEFORE),
           PAGETYPEINFO_BEFORE: _snapshot("/proc/pagetypeinfo", work / PAGETYPEINFO_BEFORE)}
    start = time.monotonic()                   # the events after this saw the state above
    try:
        status = subprocess.call(cmd)
    except OSError as err:
        print(f"pcpd capture: cannot run {cmd[0]}: {err.strerror or err}", file=sys.stderr)
        status = 127
    except KeyboardInterrupt:
        status = 130
    end = time.monotonic()
    got[ZONEINFO_AFTER] = _snapshot("/proc/zoneinfo", work / ZONEINFO_AFTER)
    got[PAGETYPEINFO_AFTER] = _snapshot("/proc/pagetypeinfo", work / PAGETYPEINFO_AFTER)
    missing = [name for name, ok in got.items() if not ok]
    (work / TIMES).write_text(json.dumps({"start": start, "end": end, "exit_status": status,
                                          "missing": missing}))
    return status


# --- the subcommand ------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all-cpus", action="store_true", dest="system_wide",
                        help="record every task on every CPU (perf record -a): the replay then "
                             "compares the kernel's refill and drain counts")
    parser.add_argument("-o", "--output", metavar="BUNDLE",
                        help="the bundle to write: a directory, or a tar if it ends in .tar, "
                             ".tar.gz or .tgz (default pcpd-capture-DATE-TIME)")
    parser.add_argument("--perf", default="perf", metavar="PERF", help="the perf binary (default perf)")
    parser.add_argument("--mmap-pages", type=argtypes.power_of_two, metavar="N",
                        help="perf record -m: pages of buffer per CPU, a power of two (default "
                             "16 MiB per CPU, at most 256 MiB in all); raise it if perf loses samples")
    parser.add_argument("--keep-perf-data", action="store_true",
                        help="keep perf.data in the bundle (perf script text is always there)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]",
                        help="the workload to run while recording")


def command(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    dest, meta = capture(cmd, args.output, args.system_wide, args.perf, args.keep_perf_data,
                         args.mmap_pages)
    scope = "every task (-a)" if args.system_wide else "the command and its children"
    print(f"wrote {dest}: {scope}, {meta['window']['end'] - meta['window']['start']:.3f} s; "
          f"{' '.join(cmd)} exited with {meta['exit_status']}")
    if lost := meta["lost_samples"]:
        print(f"warning: perf lost {sum(lost.values())} samples "
              f"({', '.join(f'{e} {n}' for e, n in lost.items())}): the replay will miss those "
              f"allocations and frees; capture a shorter run or give a larger --mmap-pages",
              file=sys.stderr)
    if meta["missing"]:
        print(f"note: not captured: {', '.join(meta['missing'])} (unreadable; pagetypeinfo needs root)")
    print(f"replay it with: pcpd replay {dest}")
    return 0


def _child_main(argv: list[str]) -> int:
    # python -m pcpd.replay.capture --child DIR -- CMD...
    if len(argv) < 4 or argv[0] != "--child" or argv[2] != "--":
        print("usage: python -m pcpd.replay.capture --child DIR -- CMD [ARG...]", file=sys.stderr)
        return 2
    return child(Path(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
