"""deploy/pcpd.service: the repository's own unit file, driven as systemd would drive it.

systemd cannot run here, so the test plays the service manager: it reads the
unit, starts its ExecStart (the virtual environment's path swapped for this
interpreter, the config for a small one) with a notify socket and a watchdog
interval in the environment, and holds the daemon to the protocol the unit
declares: READY=1 within TimeoutStartSec, WATCHDOG=1 at least every half
WatchdogSec, RELOADING=1 then READY=1 around ExecReload, STOPPING=1 on
KillSignal and a clean exit within TimeoutStopSec.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from groups import end_group

UNIT = Path(__file__).parents[1] / "deploy" / "pcpd.service"
CONFIG = """
name = "service"
seed = 3
cpus = [0]
[arena]
memory = "16MiB"
[exporter]
address = ""
"""


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str                      # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


class Manager:
    """The notify socket's reading end: every message the service sent, in order."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path

    def expect(self, key: str, within: float) -> dict[str, str]:
        """The next message carrying ``key``; fails after ``within`` seconds."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            message = dict(line.split("=", 1) for line in data.split("\n"))
            if key in message:
                return message
        pytest.fail(f"no {key}= from the service within {within} s")


def test_the_unit_declares_a_notify_service_with_reload_and_watchdog():
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert shlex.split(service["ExecStart"])[1] == "run"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert seconds(service["WatchdogSec"]) > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_unit(tmp_path):
    exec_start = shlex.split(unit()["Service"]["ExecStart"])[0]
    text = UNIT.read_text().replace(exec_start, shutil.which("true") or "/bin/true")
    (tmp_path / "pcpd.service").write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "pcpd.service")],
                          capture_output=True, text=True)
    problems = [line for line in done.stderr.splitlines() if "pcpd.service" in line]
    assert not problems, done.stderr


def test_start_watchdog_reload_and_stop_follow_the_notify_protocol(tmp_path):
    service = unit()["Service"]
    config = tmp_path / "pcpd.toml"
    config.write_text(CONFIG)
    argv = shlex.split(service["ExecStart"])
    assert argv[1:] == ["run", "/etc/pcpd/pcpd.toml"]
    command = [sys.executable, "-m", "pcpd", "run", str(config)]
    manager = Manager(tmp_path / "notify")
    watchdog = 2.0                                # shorter than the unit's, to see several pings
    env = {**os.environ, "NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": str(int(watchdog * 1e6))}
    for assignment in service.get("Environment", "").split():
        key, _, value = assignment.partition("=")
        env[key] = value
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        ready = manager.expect("READY", seconds(service["TimeoutStartSec"]))
        assert "1 workers" in ready["STATUS"]
        for _ in range(2):
            manager.expect("WATCHDOG", watchdog / 2 + 1.5)
        reload = shlex.split(service["ExecReload"].replace("$MAINPID", str(proc.pid)))
        subprocess.run(reload, check=True)
        manager.expect("RELOADING", 10)
        manager.expect("READY", 30)
        proc.send_signal(getattr(signal, service["KillSignal"]))
        manager.expect("STOPPING", 10)
        out, err = proc.communicate(timeout=seconds(service["TimeoutStopSec"]))
    finally:
        if proc.poll() is None:
            end_group(proc.pid)
        manager.sock.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert b"reloaded" in err
