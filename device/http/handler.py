"""One HTTP request to the daemon: /healthz, /status, /metrics, /events, then the Teach API and the kiosk.

- The whole request, request line, headers and body, must arrive within ``--request-timeout`` seconds of its
  start (the accept loop, device/http/server.py, shuts a late one down); a handler reads its body with
  :meth:`Handler.read_body`, after which the handler's own work (teaching: seconds) has no deadline.
- Host and token are checked before anything else of a request is used (device/http/guard.py); a page opened with
  ``?token=`` gets the token back as an HttpOnly, SameSite=Strict cookie, so its own requests carry no token.
- Any exception a request meets is answered through device/http/errors.py's one map, in one short line.
- HEAD is answered like GET, without the body; clients that go away mid-response are a debug line.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from device.http import guard
from device.http.errors import one_line
from device.http.metrics import prometheus

log = logging.getLogger("edgecam.server")
PING_S = 5.0
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, socket.timeout)


class Handler(BaseHTTPRequestHandler):
    server_version = "edgecam"
    protocol_version = "HTTP/1.1"
    head_only = False
    cookie = None  # a Set-Cookie value this response carries (the token cookie, or its expiry)

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
        """The request line, headers and body must arrive by the deadline (the accept loop enforces it)."""
        self.head_only = False
        self.cookie = None
        self.deadline = time.monotonic() + self.server.limits.request_timeout
        try:
            super().handle_one_request()
        except DISCONNECTS + (OSError,) as error:
            log.debug("%s went away: %s", self.client_address[0], error)
            self.close_connection = True

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed and not self.announces_body():
            self.deadline = None  # all of it is in: the handler's own socket timeouts apply from here
        return parsed

    def announces_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return "Transfer-Encoding" in self.headers or (length != "0" and length != "")

    def read_body(self, length: int) -> bytes:
        """LENGTH bytes of the request body, read under the request's deadline, which then ends."""
        body = self.rfile.read(length) if length > 0 else b""
        self.deadline = None
        return body

    def send_response(self, code, message=None):
        self.deadline = None  # answering: the request is over (an unread body closes the connection)
        super().send_response(code, message)

    def end_headers(self):
        if self.cookie:
            self.send_header("Set-Cookie", self.cookie)
        super().end_headers()

    def send_error(self, code, message=None, explain=None):
        """The standard library's own answers (a malformed request line, an unknown method, headers too long) as
        JSON like every other error (docs/http-api.md), never its HTML page."""
        text = message or self.responses.get(code, ("the request failed",))[0]
        if self.request_version == "HTTP/0.9":  # a request line that is no HTTP/1.x: still a status line and headers
            self.request_version = "HTTP/1.0"
        self.log_error("code %d, message %s", code, text)
        self.close_connection = True
        self.send_json(code, {"error": one_line(f"{text}: {explain}" if explain else text)},
                       {"Connection": "close"})

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), guard.redact(format % args))

    # ---- requests ---------------------------------------------------------------------------------
    def do_HEAD(self):
        """Like GET, headers only: the first body write is swallowed, a stream's next write ends it."""
        self.head_only = True
        self.close_connection = True
        self.wfile = HeadWriter(self.wfile)
        self.do_GET()

    def do_GET(self):
        self.answer(self.get)

    def do_POST(self):
        """State-changing calls (the Teach API): Host and token checked here (admitted), Origin in device/teach/http.py."""
        self.answer(self.post)

    def answer(self, action) -> None:
        """Run ACTION; an exception is answered through the one error map (when nothing was sent yet)."""
        self.headers_out = False
        try:
            action()
        except DISCONNECTS:
            self.close_connection = True
        except Exception as error:  # noqa: BLE001 - every failure gets an answer, not a closed connection
            code, message = self.server.errors.status_for(error)
            if code >= 500 and code != 507:
                log.warning("%s %s failed: %s", self.command, urlsplit(self.path).path,
                            guard.redact(f"{type(error).__name__}: {error}"))
            self.close_connection = True  # a body may be unread: never reuse the socket
            if not self.headers_out:
                self.send_json(code, {"error": message})

    def get(self):
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
        if self.server.routes.handle(self, "GET", path):
            return None
        web = self.server.web
        if web is not None and web.handle(self, path, self.daemon):
            return None
        return self.send_json(404, {"error": f"no such endpoint {path}",
                                    "endpoints": ["/healthz", "/status", "/metrics", "/events"]})

    def post(self):
        url = urlsplit(self.path)
        if not self.admitted(url.path, url.query):
            return None
        if self.server.routes.handle(self, "POST", url.path):
            return None
        self.close_connection = True  # the unread body must not be taken for the next request
        return self.send_json(404, {"error": f"no such endpoint POST {url.path}"})

    def admitted(self, path: str, query: str) -> bool:
        """Host allow-list, then the token (with back-off); answers and returns False when refused."""
        server = self.server
        host = self.headers.get("Host")
        if not guard.host_allowed(host, server.allowed_hosts):
            server.refused("host")
            self.close_connection = True
            self.send_json(403, {"error": f"Host {host!r} is not this device: open it by IP address or "
                                          f"localhost, or start the daemon with --allow-host "
                                          f"{guard.host_name(host)}"})
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
        offered, where = guard.offered_token(self.headers, parse_qs(query, keep_blank_values=True), server.port)
        if where is not None and guard.token_matches(offered, server.token):
            server.guard.succeeded(address)
            if where == "query":  # a page opened with ?token=: its own requests carry the cookie instead
                self.cookie = guard.token_cookie(server.port, server.token)
            return True
        server.guard.failed(address)
        server.refused("token")
        self.close_connection = True  # nothing more (no body, no pipelined request) is read from it
        if where == "cookie":  # a stale cookie (the token changed): drop it, so the browser stops sending it
            self.cookie = guard.expired_cookie(server.port)
        self.send_json(401, {"error": "token required: Authorization: Bearer TOKEN, or open the page once "
                                      "as ?token=TOKEN"}, {"WWW-Authenticate": "Bearer"})
        return False

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

    def send_header(self, keyword, value):
        self.headers_out = True
        super().send_header(keyword, value)

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

    @property
    def closed(self) -> bool:  # read by socketserver.StreamRequestHandler.finish
        return self.stream.closed

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

    def close(self) -> None:
        self.stream.close()
