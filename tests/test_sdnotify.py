"""pcpd.sdnotify: the sd_notify protocol against a real datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
import time

import pytest

from pcpd.sdnotify import Notifier


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path):
    """A service manager's notify socket: (the NOTIFY_SOCKET value, the socket to read)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
        value = address
    else:
        name = f"pcpd-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind(b"\0" + name.encode())
        value = "@" + name
    sock.settimeout(5)
    yield value, sock
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))


def test_outside_systemd_every_call_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.stopping() and not notifier.watchdog()


def test_ready_reloading_status_stopping(manager):
    value, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": value})
    assert notifier.ready("2 workers")
    assert received(sock) == {"READY": "1", "STATUS": "2 workers"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    message = received(sock)
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.status("line one\nline two")
    assert received(sock) == {"STATUS": "line one line two"}
    assert notifier.stopping()
    assert received(sock) == {"STOPPING": "1"}
    notifier.close()


def test_watchdog_pings_every_half_interval(manager):
    value, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_s == 4.0
    assert notifier.watchdog(now=100.0)
    assert received(sock) == {"WATCHDOG": "1"}
    assert not notifier.watchdog(now=101.9)
    assert notifier.watchdog(now=102.0)
    assert received(sock) == {"WATCHDOG": "1"}


@pytest.mark.parametrize("env", [{"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "x"},
                                 {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}])
def test_no_watchdog_when_not_asked_or_meant_for_another_process(manager, env):
    value, _ = manager
    assert Notifier({"NOTIFY_SOCKET": value, **env}).watchdog_s is None


def test_a_vanished_manager_is_not_an_error(tmp_path):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled and not notifier.ready()
