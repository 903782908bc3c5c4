"""A long soak of ``pcpd run`` with every fault the daemon must survive.

``pcpd run --kill-interval`` SIGKILLs a worker every interval (every other
one while it holds zone->lock).  This driver adds what the daemon cannot do
to itself: every ``--helper-interval`` seconds it SIGKILLs the daemon's
forkserver and then its resource tracker, the two multiprocessing helpers
the workers are forked from and whose semaphores outlive them.  It prints
the daemon's summary and one JSON line with the soak's figures:

    python bench/soak.py --policy memdesc --duration 7200
    python bench/soak.py --policy legacy --duration 7200 --helper-interval 900
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time

import psutil

HELPERS = ("forkserver", "resource_tracker")


def main() -> int:
    args = _parse()
    cmd = [sys.executable, "-m", "pcpd", "run", "--policy", args.policy, "--duration", str(args.duration),
           "--kill-interval", str(args.kill_interval), "--listen", "", "--status-interval", "60"]
    with open(args.log, "w") as daemon_log:
        daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=daemon_log, text=True,
                                  start_new_session=True)
        helper_kills = _kill_helpers_until_exit(daemon, args.helper_interval)
        out = daemon.stdout.read() if daemon.stdout else ""
        daemon.wait()
    print(out, end="")
    with open(args.log) as log:
        tracebacks = sum("Traceback" in line for line in log)
    print(json.dumps({"policy": args.policy, "exit": daemon.returncode, "helper_kills": helper_kills,
                      "tracebacks_in_log": tracebacks, **_figures(out)}))
    return 0 if daemon.returncode == 0 and not tracebacks else 1


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="memdesc")
    parser.add_argument("--duration", type=int, default=7200, help="seconds (default 7200)")
    parser.add_argument("--kill-interval", type=float, default=10.0, help="worker kills, seconds (default 10)")
    parser.add_argument("--helper-interval", type=float, default=1200.0,
                        help="forkserver and resource tracker kills, seconds (default 1200)")
    parser.add_argument("--log", default="soak.log", help="the daemon's stderr (default soak.log)")
    return parser.parse_args()


def _kill_helpers_until_exit(daemon: subprocess.Popen, interval: float) -> dict[str, int]:
    """SIGKILL each helper every ``interval`` seconds while the daemon runs."""
    kills = dict.fromkeys(HELPERS, 0)
    due = time.monotonic() + interval
    while daemon.poll() is None:
        try:
            daemon.wait(timeout=max(due - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        if daemon.poll() is None and time.monotonic() >= due:
            due += interval
            for module in HELPERS:
                kills[module] += _kill_helper(daemon.pid, module)
    return kills


def _kill_helper(daemon_pid: int, module: str) -> int:
    """SIGKILL the daemon's child running ``multiprocessing.<module>``; 1 if one was."""
    try:
        children = psutil.Process(daemon_pid).children()
    except psutil.NoSuchProcess:
        return 0
    for child in children:
        try:
            if any(f"from multiprocessing.{module} import main" in arg for arg in child.cmdline()):
                child.send_signal(signal.SIGKILL)
                return 1
        except psutil.NoSuchProcess:
            continue
    return 0


def _figures(summary: str) -> dict[str, object]:
    """The soak's figures, read from the daemon's summary."""
    patterns = {
        "operations": r"operations ([\d,]+)",
        "kills": r"kills (\d+)",
        "kills_holding_lock": r"kills \d+ \((\d+) holding",
        "restarts": r"restarts (\d+)",
        "audits": r"audits (\d+)",
        "audits_failed": r"audits \d+ \((\d+) failed",
        "memory_mib_start": r"start ([\d.]+) MiB",
        "memory_mib_peak": r"peak ([\d.]+) MiB",
        "memory_mib_end": r"end ([\d.]+) MiB",
        "pages_lost": r"pages lost (\d+)",
    }
    out: dict[str, object] = {}
    summary = summary[summary.rfind("pcpd run "):]      # the summary, not the status lines above it
    for key, pattern in patterns.items():
        found = re.search(pattern, summary)
        out[key] = float(found.group(1).replace(",", "")) if found else None
    out["final_audit_ok"] = "final audit ok" in summary
    return out


if __name__ == "__main__":
    sys.exit(main())
