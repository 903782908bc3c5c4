"""systemd's notify protocol (sd_notify(3)), so ``pcpd run`` can be a Type=notify service.

The service manager passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or
an abstract name written with a leading ``@``) and, with ``WatchdogSec=``, the
interval in ``$WATCHDOG_USEC`` for the process ``$WATCHDOG_PID`` names.  Each
message is newline-separated ``KEY=VALUE`` assignments: ``READY=1`` once the
workers run, ``RELOADING=1`` with ``MONOTONIC_USEC`` for a SIGHUP reload
(Type=notify-reload, systemd 253+), ``STOPPING=1``, ``STATUS=`` for
``systemctl status``, and ``WATCHDOG=1`` at least every half interval.

Outside systemd every call is a no-op, so the daemon calls these freely.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """A connection to the service manager's notify socket, or nothing outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message (``ready=1`` becomes ``READY=1``); False where nobody listens."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError:
            return False                       # the manager went away: nothing to tell
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(ready=1, **({"status": status} if status else {}))

    def reloading(self) -> bool:
        """RELOADING=1 with the monotonic time systemd matches against its reload job."""
        return self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def status(self, text: str) -> bool:
        return self.send(status=text.replace("\n", " "))

    def watchdog(self, now: float | None = None) -> bool:
        """WATCHDOG=1 if half the watchdog interval has passed since the last one."""
        if self.watchdog_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = now
        return self.send(watchdog=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()      # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None                                # unset, or a vsock address pcpd does not speak


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None                            # the watchdog is meant for another process
    return int(usec) / 1e6
