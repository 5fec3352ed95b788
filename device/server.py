"""The daemon's local HTTP API (standard library only): /healthz, /status, /metrics, /events.

- Bound to 127.0.0.1 by default; any other address needs a token (``--token`` or $EDGECAM_TOKEN), sent
  as ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``. /healthz stays open for monitors (it says
  only ok or degraded).
- /events is a Server-Sent Events stream. Each client has its own bounded queue; a client that lags
  loses its oldest events, so a slow browser can never block the pipeline.
- Any other path goes to ``device.web.handle(handler, path, daemon)`` (the kiosk, written separately)
  when that module exists; it returns True when it answered the request, else the server sends 404.

The daemon object passed in provides ``status() -> dict``, ``healthy() -> (bool, reason)``, ``hub``.
"""

from __future__ import annotations

import hmac
import importlib
import importlib.util
import ipaddress
import json
import logging
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("edgecam.server")
CLIENT_QUEUE = 64  # events buffered per SSE client before its oldest are dropped
PING_S = 5.0


class ConfigError(ValueError):
    """The --http / --token combination cannot be served safely."""


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

    def subscribe(self) -> queue.Queue:
        client = queue.Queue(maxsize=self.size)
        with self.lock:
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
    metric("events_dropped_total", "counter", "Server-sent events dropped for lagging clients.", hub_dropped)
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

    @property
    def daemon(self):
        return self.server.app

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if path != "/healthz" and not self.authorised(url.query):
            return self.send_json(401, {"error": "token required: Authorization: Bearer TOKEN or ?token=TOKEN"},
                                  {"WWW-Authenticate": "Bearer"})
        if path == "/healthz":
            healthy, reason = self.daemon.healthy()
            body = {"status": "ok"} if healthy else {"status": "degraded", "reason": reason}
            return self.send_json(200 if healthy else 503, body)
        if path == "/status":
            return self.send_json(200, self.daemon.status())
        if path == "/metrics":
            text = prometheus(self.daemon.status(), self.daemon.hub.dropped)
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
            except (BrokenPipeError, ConnectionResetError):
                return None
        return self.send_json(404, {"error": f"no such endpoint {path}",
                                    "endpoints": ["/healthz", "/status", "/metrics", "/events"]})

    def do_POST(self):
        """State-changing calls (the Teach API): token checked here, Host/Origin in device/teach/http.py."""
        url = urlsplit(self.path)
        if not self.authorised(url.query):
            self.close_connection = True
            return self.send_json(403, {"error": "wrong or missing token: send Authorization: Bearer TOKEN "
                                                 "or ?token=TOKEN"})
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
        except (BrokenPipeError, ConnectionResetError):
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
        client = hub.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            status = json.dumps(self.daemon.status(), separators=(",", ":"))
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
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            pass
        finally:
            hub.unsubscribe(client)
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple, daemon, token: str | None = None):
        host = address[0]
        if not is_loopback(host) and not token:
            raise ConfigError(
                f"--http {host}:{address[1]} listens beyond this machine: pass --token SECRET "
                "(or set EDGECAM_TOKEN), or bind 127.0.0.1."
            )
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = daemon
        self.token = token
        self.web = load_web()
        self.teach = load_optional("device.teach.http")
        try:
            super().__init__(address, Handler)
        except OSError as error:
            raise ConfigError(f"--http {host}:{address[1]}: cannot listen ({error.strerror or error}).") from None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

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
