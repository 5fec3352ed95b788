"""sd_notify without a dependency: READY=1, WATCHDOG=1, STATUS=..., RELOADING=1, STOPPING=1 as datagrams
on $NOTIFY_SOCKET (an AF_UNIX path, or an abstract socket written '@name'). Outside systemd every call
is a no-op. The unit file is device/systemd/edgecam.service (a folder, not this module)."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.address = self._address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = self._watchdog(environ)
        self.socket: socket.socket | None = None

    @staticmethod
    def _address(value: str):
        if not value:
            return None
        if value.startswith("@"):
            return "\0" + value[1:]  # abstract namespace
        if value.startswith("/"):
            return value
        return None  # vsock and other kinds: not used on a Pi

    @staticmethod
    def _watchdog(environ) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is set."""
        try:
            usec = int(environ.get("WATCHDOG_USEC", "0"))
            pid = int(environ.get("WATCHDOG_PID", os.getpid()))
        except ValueError:
            return None
        if usec <= 0 or pid != os.getpid():
            return None
        return usec / 2e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False (never an exception) when it cannot be sent."""
        if self.address is None:
            return False
        try:
            if self.socket is None:
                self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.socket.sendto("\n".join(fields).encode("utf-8"), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
