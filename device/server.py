"""The daemon's local HTTP API (standard library only): /healthz, /status, /metrics, /events.

- Bound to 127.0.0.1 by default; any other address needs a token (``--token`` or $EDGECAM_TOKEN), sent
  as ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``. /healthz stays open for monitors (it says
  only ok or degraded).
- /events is a Server-Sent Events stream. Each client has its own bounded queue; a client that lags
  loses its oldest events, so a slow browser can never block the pipeline.
- Any other path goes to ``device.web.handle(handler, path, daemon)`` (the kiosk, written separately)
  when that module exists; it returns True when it answered the request, else the server sends 404.

The daemon object passed in provides ``status() -> dict``, ``healthy() -> (bool, reason)``, ``hub``.

Limits (:class:`Limits`, the daemon's ``--max-connections``, ``--max-sse-clients``, ``--request-timeout``,
``--allow-host``), so that no client, slow, idle, hostile or many, can take the device down:

- at most ``max_connections`` open connections (a 503 beyond it, answered by the accept loop itself) and
  at most ``max_sse_clients`` /events streams (503 beyond it); a listen backlog of ``LISTEN_BACKLOG``;
- each request's line and headers must arrive within ``request_timeout`` seconds of its start (a keep-alive
  connection idle for as long is closed), and every socket read or write times out after as long;
- the Host header must name this machine (an IP literal, localhost, the host name, the bound address or
  an ``--allow-host`` name): a web page cannot reach the API by DNS rebinding;
- the token is checked before anything else of a request is used; after ``FREE_TOKEN_FAILURES`` wrong
  tokens from one address, that address gets 429 for a back-off doubling from 1 s to 60 s;
- no token ever reaches a log line (``?token=`` and ``Bearer`` values are masked), and clients that go
  away mid-response are a debug line, never a traceback. HEAD is answered like GET, without the body.
"""

from __future__ import annotations

import errno
import hmac
import importlib
import importlib.util
import ipaddress
import json
import logging
import queue
import re
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("edgecam.server")
CLIENT_QUEUE = 64  # events buffered per SSE client before its oldest are dropped
PING_S = 5.0
LISTEN_BACKLOG = 128  # connections the kernel queues before the accept loop takes them (socketserver's is 5)
MIN_TOKEN_LENGTH = 16  # characters; secrets.token_urlsafe(16) gives 22
FREE_TOKEN_FAILURES = 5  # wrong tokens one address may send before it must back off
BACKOFF_MAX_S = 60.0
TRACKED_ADDRESSES = 1024  # addresses remembered for the back-off (oldest forgotten first)
TOKEN_IN_TEXT = re.compile(r"((?:[?&]|%3F|%26)token(?:=|%3D)|Bearer\s+)[^\s&'\"]*", re.IGNORECASE)
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, socket.timeout)


class ConfigError(ValueError):
    """The --http / --token combination cannot be served safely (exit 2: retrying will not help)."""


class AddressInUse(RuntimeError):
    """The HTTP port is taken, e.g. by a previous instance still stopping (exit 3: worth a retry)."""


@dataclass(frozen=True)
class Limits:
    """What one client, or many, may take of the device (see the module docstring)."""

    max_connections: int = 32
    max_sse_clients: int = 8
    request_timeout: float = 10.0
    allow_hosts: tuple = ()


def check_token(token: str | None) -> None:
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"--token is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH}, e.g. the output of "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))' (in --token or $EDGECAM_TOKEN)."
        )


def redact(text: str) -> str:
    """``text`` with every ``token=VALUE`` and ``Bearer VALUE`` masked, for log lines."""
    return TOKEN_IN_TEXT.sub(lambda match: match.group(1) + "***", str(text))


def host_name(header: str) -> str:
    """The host part of a Host header, lower case, without port, brackets or a trailing dot."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def default_allowed_hosts(bound_host: str, extra=()) -> frozenset:
    """Names a request's Host header may use (IP literals are always allowed: rebinding needs a name)."""
    names = {"localhost", "localhost.localdomain", bound_host.strip("[]").lower()}
    hostname = socket.gethostname().lower()
    if hostname:
        names |= {hostname, hostname + ".local"}
    return frozenset(name.rstrip(".") for name in names | {host_name(name) for name in extra} if name)


def host_allowed(header: str | None, allowed: frozenset) -> bool:
    if header is None:
        return True  # HTTP/1.0 tools (no browser omits it)
    name = host_name(header)
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in allowed


class TokenGuard:
    """Wrong tokens per client address; after FREE_TOKEN_FAILURES of them the address must wait, doubling."""

    def __init__(self, free: int = FREE_TOKEN_FAILURES, cap_s: float = BACKOFF_MAX_S):
        self.free = free
        self.cap_s = cap_s
        self.failures: OrderedDict = OrderedDict()  # address -> (count, blocked until monotonic)
        self.lock = threading.Lock()

    def wait_s(self, address: str) -> float:
        with self.lock:
            _, until = self.failures.get(address, (0, 0.0))
        return max(0.0, until - time.monotonic())

    def failed(self, address: str) -> None:
        with self.lock:
            count, _ = self.failures.pop(address, (0, 0.0))
            count += 1
            over = count - self.free  # the FREE-th failure starts a 1 s wait, each further one doubles it
            until = time.monotonic() + min(self.cap_s, 2.0 ** min(over, 30)) if over >= 0 else 0.0
            self.failures[address] = (count, until)
            while len(self.failures) > TRACKED_ADDRESSES:
                self.failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self.lock:
            self.failures.pop(address, None)


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


class EventHub:
    """Fan-out of server-sent events to per-client bounded queues (drop oldest, never block)."""

    def __init__(self, size: int = CLIENT_QUEUE):
        self.size = size
        self.clients: set = set()
        self.lock = threading.Lock()
        self.dropped = 0

    def subscribe(self, limit: int | None = None) -> queue.Queue | None:
        """A new client's queue, or None when ``limit`` clients are already subscribed."""
        client = queue.Queue(maxsize=self.size)
        with self.lock:
            if limit is not None and len(self.clients) >= limit:
                return None
            self.clients.add(client)
        return client

    def unsubscribe(self, client: queue.Queue) -> None:
        with self.lock:
            self.clients.discard(client)

    def publish(self, kind: str, payload: dict) -> None:
        with self.lock:
            clients = list(self.clients)
        if not clients:
            return
        message = f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
        for client in clients:
            self._offer(client, message)

    def _offer(self, client: queue.Queue, message) -> None:
        while True:
            try:
                client.put_nowait(message)
                return
            except queue.Full:
                try:
                    client.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        with self.lock:
            clients = list(self.clients)
        for client in clients:
            self._offer(client, None)  # tells the client's handler to finish


def prometheus(status: dict, hub_dropped: int = 0) -> str:
    """The /status snapshot as Prometheus text exposition format."""
    lines = []

    def metric(name, kind, text, value, labels=""):
        lines.extend([f"# HELP edgecam_{name} {text}", f"# TYPE edgecam_{name} {kind}"])
        if isinstance(value, dict):
            for label_text, item in value.items():
                lines.append(f"edgecam_{name}{{{label_text}}} {_number(item)}")
        else:
            lines.append(f"edgecam_{name}{labels} {_number(value)}")

    model = status.get("model") or {}
    source = status.get("source") or {}
    latency = status.get("latency_ms") or {}
    last = status.get("last_result") or {}
    metric("up", "gauge", "1 when the daemon is running and its source delivers frames.",
           1 if status.get("state") == "running" else 0)
    metric("frames_total", "counter", "Frames classified.", status.get("frames", 0))
    metric("dropped_frames_total", "counter", "Stale camera frames dropped for a newer one.",
           status.get("dropped_frames", 0))
    metric("fps", "gauge", "Frames classified per second over the last seconds.", status.get("fps", 0.0))
    metric("latency_ms", "summary", "Per-frame pipeline latency in milliseconds (last 1000 frames).",
           {f'quantile="{q}"': latency.get(key) for q, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))})
    metric("source_up", "gauge", "1 when the frame source is delivering.", 1 if source.get("state") == "ok" else 0)
    metric("source_retries_total", "counter", "Source failures retried.", source.get("retries", 0))
    metric("reload_errors_total", "counter", "SIGHUP reloads that failed (the old model kept serving).",
           status.get("reload_errors", 0))
    skipped = status.get("skipped_frames") or {}
    metric("skipped_frames_total", "counter", "Source files skipped, by reason (too large, corrupt, ...).",
           {f'reason="{_escape(reason)}"': count for reason, count in sorted(skipped.items())} or 0)
    http = status.get("http") or {}
    metric("http_connections", "gauge", "Open HTTP connections.", http.get("connections", 0))
    metric("http_refused_total", "counter", "HTTP requests refused, by reason (busy, host, token, ...).",
           {f'reason="{_escape(reason)}"': count for reason, count in sorted((http.get("refused") or {}).items())}
           or 0)
    metric("events_dropped_total", "counter", "Server-sent events dropped for lagging clients.", hub_dropped)
    outputs = status.get("outputs") or {}
    if outputs:  # device/outputs/: one labelled series per output
        for name, kind, text, key in (
                ("output_written_total", "counter", "Results an output delivered.", "written"),
                ("output_dropped_total", "counter", "Results an output dropped (its queue was full).", "dropped"),
                ("output_errors_total", "counter", "Errors an output met (retried, or it turned off).", "errors")):
            metric(name, kind, text, {f'output="{_escape(o)}"': item.get(key, 0) for o, item in outputs.items()})
        metric("output_up", "gauge", "1 when the output is on and (for network outputs) connected.",
               {f'output="{_escape(o)}"': int(item.get("state") == "ok" and item.get("connected") is not False)
                for o, item in outputs.items()})
    metric("uptime_seconds", "gauge", "Seconds since the daemon started.", status.get("uptime_s", 0.0))
    metric("confidence", "gauge", "Confidence of the last result.", last.get("confidence"))
    info = ",".join(f'{key}="{_escape(model.get(key, ""))}"' for key in ("format", "runtime", "sha256"))
    metric("model_info", "gauge", "The model being served.", {info: 1})
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return "NaN" if value is None else repr(float(value)) if isinstance(value, float) else str(int(value))


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "edgecam"
    protocol_version = "HTTP/1.1"
    head_only = False

    @property
    def daemon(self):
        return self.server.app

    # ---- connection life: timeouts, deadlines, quiet disconnects ------------------------------------
    def setup(self):
        self.timeout = self.server.limits.request_timeout  # every socket read and write (StreamRequestHandler)
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay per response
        self.deadline: float | None = None
        self.server.track(self)

    def finish(self):
        self.server.untrack(self)
        try:
            super().finish()
        except DISCONNECTS + (OSError,):
            pass

    def handle_one_request(self):
        """The request line and headers must arrive by the deadline (the accept loop enforces it)."""
        self.head_only = False
        self.deadline = time.monotonic() + self.server.limits.request_timeout
        try:
            super().handle_one_request()
        except DISCONNECTS + (OSError,) as error:
            log.debug("%s went away: %s", self.client_address[0], error)
            self.close_connection = True

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.deadline = None  # the headers are in: the handler's own socket timeouts apply from here
        return parsed

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), redact(format % args))

    # ---- requests ---------------------------------------------------------------------------------
    def do_HEAD(self):
        """Like GET, headers only: the first body write is swallowed, a stream's next write ends it."""
        self.head_only = True
        self.close_connection = True
        self.wfile = HeadWriter(self.wfile)
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if not self.admitted(path, url.query):
            return None
        if path == "/healthz":
            healthy, reason = self.daemon.healthy()
            body = {"status": "ok"} if healthy else {"status": "degraded", "reason": reason}
            return self.send_json(200 if healthy else 503, body)
        if path == "/status":
            return self.send_json(200, self.server.status())
        if path == "/metrics":
            text = prometheus(self.server.status(), self.daemon.hub.dropped)
            return self.send_body(200, text.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/events":
            return self.stream_events()
        if self.teach_handles("GET", path):
            return None
        web = self.server.web
        if web is not None:
            try:
                if web.handle(self, path, self.daemon):
                    return None
            except DISCONNECTS:
                self.close_connection = True
                return None
        return self.send_json(404, {"error": f"no such endpoint {path}",
                                    "endpoints": ["/healthz", "/status", "/metrics", "/events"]})

    def admitted(self, path: str, query: str) -> bool:
        """Host allow-list, then the token (with back-off); answers and returns False when refused."""
        server = self.server
        host = self.headers.get("Host")
        if not host_allowed(host, server.allowed_hosts):
            server.refused("host")
            self.close_connection = True
            self.send_json(403, {"error": f"Host {host!r} is not this device: open it by IP address or "
                                          f"localhost, or start the daemon with --allow-host {host_name(host)}"})
            return False
        if path == "/healthz" or not server.token:
            return True
        address = self.client_address[0]
        wait = server.guard.wait_s(address)
        if wait > 0:
            server.refused("backoff")
            self.close_connection = True
            self.send_json(429, {"error": f"too many wrong tokens from {address}: wait {wait:.0f} s"},
                           {"Retry-After": str(max(1, round(wait)))})
            return False
        if self.authorised(query):
            server.guard.succeeded(address)
            return True
        server.guard.failed(address)
        server.refused("token")
        self.close_connection = True  # nothing more (no body, no pipelined request) is read from it
        self.send_json(401, {"error": "token required: Authorization: Bearer TOKEN or ?token=TOKEN"},
                       {"WWW-Authenticate": "Bearer"})
        return False

    def do_POST(self):
        """State-changing calls (the Teach API): Host and token checked here (admitted), Origin in device/teach/http.py."""
        url = urlsplit(self.path)
        if not self.admitted(url.path, url.query):
            return None
        if self.teach_handles("POST", url.path):
            return None
        self.close_connection = True  # the unread body must not be taken for the next request
        return self.send_json(404, {"error": f"no such endpoint POST {url.path}"})

    def teach_handles(self, method: str, path: str) -> bool:
        teach = self.server.teach
        if teach is None:
            return False
        try:
            return teach.handle(self, method, path, self.daemon)
        except DISCONNECTS:
            self.close_connection = True
            return True

    def authorised(self, query: str) -> bool:
        token = self.server.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        offered = header[7:].strip() if header.startswith("Bearer ") else ""
        offered = offered or (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))

    def send_json(self, code: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self.send_body(code, body, "application/json", headers)

    def send_body(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def stream_events(self) -> None:
        hub = self.daemon.hub
        client = None if self.head_only else hub.subscribe(self.server.limits.max_sse_clients)
        if client is None and not self.head_only:
            self.server.refused("sse_clients")
            self.close_connection = True
            return self.send_json(503, {"error": f"{self.server.limits.max_sse_clients} /events clients are "
                                                 "connected already (--max-sse-clients): try again later"},
                                  {"Retry-After": "5"})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if client is None:  # HEAD
                return None
            status = json.dumps(self.server.status(), separators=(",", ":"))
            self.wfile.write(f"retry: 2000\n\nevent: status\ndata: {status}\n\n".encode())
            self.wfile.flush()
            while True:
                try:
                    message = client.get(timeout=PING_S)
                except queue.Empty:
                    message = b": ping\n\n"
                if message is None:
                    break
                self.wfile.write(message)
                self.wfile.flush()
        except DISCONNECTS + (OSError,):
            pass
        finally:
            if client is not None:
                hub.unsubscribe(client)
            self.close_connection = True


class HeadWriter:
    """The response stream of a HEAD request: headers go out, the body does not."""

    def __init__(self, stream):
        self.stream = stream
        self.headers_sent = False
        self.body_writes = 0

    def write(self, data) -> int:
        if not self.headers_sent:  # end_headers() writes the status line and headers in one piece
            self.headers_sent = True
            return self.stream.write(data)
        self.body_writes += 1
        if self.body_writes > 1:  # a stream (/events, /stream.mjpg): stop it after its headers
            raise BrokenPipeError("HEAD: no body")
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


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
        self.teach = load_optional("device.teach.http")
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
        """Run by serve_forever between polls: close connections whose request line or headers are late."""
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
        import sys

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
    """device.web, if it exists and has ``handle``; a broken one is logged, not fatal."""
    if importlib.util.find_spec("device.web") is None:
        return None
    try:
        module = importlib.import_module("device.web")
    except Exception as error:  # noqa: BLE001 - the kiosk is optional; the API must still serve
        log.warning("device/web.py failed to import (%s); serving the API only", error)
        return None
    return module if callable(getattr(module, "handle", None)) else None


def load_optional(name: str):
    """An optional module with ``handle`` (device.teach.http); a broken one is logged, not fatal."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
        module = importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - the API must still serve
        log.warning("%s failed to import (%s); serving without it", name, error)
        return None
    return module if callable(getattr(module, "handle", None)) else None
