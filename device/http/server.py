"""The daemon's local HTTP server (standard library only): connections, limits, and what serves each path.

- Bound to 127.0.0.1 by default; any other address needs a token (``--token`` or $EDGECAM_TOKEN); who may ask
  what is device/http/guard.py's (Host allow-list, token, back-off, cookie, log masking). /healthz stays open
  for monitors (it says only ok or degraded).
- One request is device/http/handler.py's: /healthz, /status, /metrics (device/http/metrics.py), /events (a
  Server-Sent Events stream fed by device/http/events.py), the Teach API (device/teach/http.py), then the kiosk
  (device/http/web.py) when those modules exist; errors through one map (device/http/errors.py).

The daemon object passed in provides ``status() -> dict``, ``healthy() -> (bool, reason)``, ``hub``.

Limits (:class:`Limits`, the daemon's ``--max-connections``, ``--max-sse-clients``, ``--request-timeout``,
``--allow-host``), so that no client, slow, idle, hostile or many, can take the device down:

- at most ``max_connections`` open connections (a 503 beyond it, answered by the accept loop itself) and
  at most ``max_sse_clients`` /events streams (503 beyond it); a listen backlog of ``LISTEN_BACKLOG``;
- each request's line, headers and body must arrive within ``request_timeout`` seconds of its start (a
  keep-alive connection idle for as long is closed), and every socket read or write times out after as long;
- clients that go away mid-response are a debug line, never a traceback.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import ipaddress
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from device.http.errors import ErrorMap
from device.http.events import EventHub  # noqa: F401 - the daemon's hub, imported from here
from device.http.guard import ConfigError, TokenGuard, check_token, default_allowed_hosts, redact
from device.http.handler import DISCONNECTS, Handler
from device.http.routes import Routes

log = logging.getLogger("edgecam.server")
LISTEN_BACKLOG = 128  # connections the kernel queues before the accept loop takes them (socketserver's is 5)


class AddressInUse(RuntimeError):
    """The HTTP port is taken, e.g. by a previous instance still stopping (exit 3: worth a retry)."""


@dataclass(frozen=True)
class Limits:
    """What one client, or many, may take of the device (see the module docstring)."""

    max_connections: int = 32
    max_sse_clients: int = 8
    request_timeout: float = 10.0
    allow_hosts: tuple = ()


def parse_address(text: str) -> tuple:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port)."""
    host, separator, port = str(text).rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise ConfigError(f"--http {text}: expected HOST:PORT such as 127.0.0.1:8080, or 'off'.")
    host = host.strip("[]")
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http {text}: port must be 0..65535.")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple, daemon, token: str | None = None, limits: Limits | None = None):
        host = address[0]
        if not is_loopback(host) and not token:
            raise ConfigError(
                f"--http {host}:{address[1]} listens beyond this machine: pass --token SECRET "
                "(or set EDGECAM_TOKEN), or bind 127.0.0.1."
            )
        check_token(token)
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = daemon
        self.token = token
        self.limits = limits or Limits()
        self.allowed_hosts = default_allowed_hosts(host, self.limits.allow_hosts)
        self.guard = TokenGuard()
        self.handlers: set = set()
        self.connections = 0
        self.refusals: dict = {}
        self.counter_lock = threading.Lock()
        self.web = load_web()
        self.routes = Routes()  # the Teach API registers here (device/teach/http.py register, called by the daemon)
        self.errors = ErrorMap()  # and its errors here
        try:
            super().__init__(address, Handler)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"--http {host}:{address[1]}: the port is in use (another edgecam still stopping, or "
                    "another program): exit 3, systemd retries; pick another port with --http if it persists."
                ) from None
            raise ConfigError(f"--http {host}:{address[1]}: cannot listen ({error.strerror or error}).") from None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    # ---- connection accounting (the accept loop and the handler threads) --------------------------
    def process_request(self, request, client_address):
        with self.counter_lock:
            full = self.connections >= self.limits.max_connections
            if not full:
                self.connections += 1
        if full:
            self.refused("connections")
            return self.refuse(request)
        try:
            super().process_request(request, client_address)
        except Exception:  # cannot start a thread: give the slot back
            with self.counter_lock:
                self.connections -= 1
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.counter_lock:
                self.connections -= 1

    def refuse(self, request) -> None:
        """503 from the accept loop, without a thread: never blocks (a full socket buffer just drops it)."""
        body = (b'{"error":"too many connections (--max-connections %d): try again later"}'
                % self.limits.max_connections)
        response = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        try:
            request.setblocking(False)
            try:
                request.recv(65536)  # what the client already sent: unread data would turn the close into a reset
            except (BlockingIOError, InterruptedError):
                pass
            request.send(response)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.shutdown_request(request)

    def track(self, handler) -> None:
        with self.counter_lock:
            self.handlers.add(handler)

    def untrack(self, handler) -> None:
        with self.counter_lock:
            self.handlers.discard(handler)

    def refused(self, reason: str) -> None:
        with self.counter_lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def service_actions(self) -> None:
        """Run by serve_forever between polls: close connections whose request (line, headers, body) is late."""
        now = time.monotonic()
        with self.counter_lock:
            late = [handler for handler in self.handlers if handler.deadline is not None and handler.deadline < now]
        for handler in late:
            handler.deadline = None
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)  # its blocked read returns; its thread ends
            except OSError:
                pass

    def handle_error(self, request, client_address):
        """One line, no traceback: a client that vanished is not the daemon's error."""
        error = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(error, DISCONNECTS + (OSError,)) else logging.WARNING
        log.log(level, "request from %s failed: %s", client_address[0], redact(f"{type(error).__name__}: {error}"))

    def describe(self) -> dict:
        with self.counter_lock:
            return {"connections": self.connections, "sse_clients": len(self.app.hub.clients),
                    "refused": dict(self.refusals)}

    def status(self) -> dict:
        """The daemon's /status plus this server's own counters."""
        status = self.app.status()
        status["http"] = self.describe()
        return status

    def start(self) -> None:
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="edgecam-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.app.hub.close()
        if self.thread is not None:
            self.shutdown()
        self.server_close()


def load_web():
    """device.http.web (the kiosk), if it exists and has ``handle``; a broken one is logged, not fatal."""
    if importlib.util.find_spec("device.http.web") is None:
        return None
    try:
        module = importlib.import_module("device.http.web")
    except Exception as error:  # noqa: BLE001 - the kiosk is optional; the API must still serve
        log.warning("device/http/web.py failed to import (%s); serving the API only", error)
        return None
    return module if callable(getattr(module, "handle", None)) else None
