"""Who may use the daemon's HTTP API: the Host allow-list, the token, its back-off, and log lines without it.

- The Host header must name this machine (an IP literal, localhost, the host name alone or as
  ``<host>.local``, ``.lan``, ``.home``, ``.home.arpa``, ``.fritz.box``, the bound address or an
  ``--allow-host`` name): a web page cannot reach the API by DNS rebinding.
- The token (``--token`` or $EDGECAM_TOKEN) arrives as ``Authorization: Bearer TOKEN`` (scripts), as
  ``?token=TOKEN`` (the first page a person opens), or as the cookie that first page sets: HttpOnly (no
  script reads it), SameSite=Strict (no other site's page sends it), named after the port (two daemons on
  one host keep theirs apart). So the kiosk and the Teach view never put the token in a URL again.
- After ``FREE_TOKEN_FAILURES`` wrong tokens from one address, that address gets 429 for a back-off doubling
  from 1 s to 60 s.
- No token reaches a log line: :func:`redact` masks ``Bearer`` values and every query value whose key
  decodes to ``token`` (``?tok%65n=`` included).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
import threading
import time
from collections import OrderedDict
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote, unquote, unquote_plus

LOCAL_SUFFIXES = ("", ".local", ".lan", ".home", ".home.arpa", ".fritz.box")  # the device's own names
MIN_TOKEN_LENGTH = 16  # characters; secrets.token_urlsafe(16) gives 22
FREE_TOKEN_FAILURES = 5  # wrong tokens one address may send before it must back off
BACKOFF_MAX_S = 60.0
TRACKED_ADDRESSES = 1024  # addresses remembered for the back-off (oldest forgotten first)
BEARER = re.compile(r"(Bearer\s+)[^\s&'\"]*", re.IGNORECASE)
QUERY_PAIR = re.compile(r"((?:[?&;]|%3F|%26)([^=&;\s'\"]*?)(?:=|%3D))([^&;\s]*)", re.IGNORECASE)  # a quoted value too


class ConfigError(ValueError):
    """The --http / --token combination cannot be served safely (exit 2: retrying will not help)."""


def check_token(token: str | None) -> None:
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"--token is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH}, e.g. the output of "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))' (in --token or $EDGECAM_TOKEN)."
        )


def is_token_key(key: str) -> bool:
    """True when a query key means ``token`` once decoded (``tok%65n``, ``%74oken``, any case)."""
    decoded = key
    for _ in range(3):  # %2574 decodes to %74, then to t
        decoded = unquote_plus(decoded)
    return decoded.strip().lower() == "token"


def redact(text: str) -> str:
    """``text`` with every token value masked (``Bearer VALUE`` and ``?KEY=VALUE`` whose KEY decodes to token)."""
    text = BEARER.sub(lambda match: match.group(1) + "***", str(text))
    return QUERY_PAIR.sub(lambda match: match.group(1) + "***" if is_token_key(match.group(2)) else match.group(0),
                          text)


def cookie_name(port: int) -> str:
    return f"edgecam_token_{port}"


def token_cookie(port: int, token: str) -> str:
    """The Set-Cookie value that lets a page opened with ``?token=`` talk to this daemon without it."""
    return f"{cookie_name(port)}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Strict"


def expired_cookie(port: int) -> str:
    return f"{cookie_name(port)}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def offered_token(headers, query: dict, port: int) -> tuple:
    """-> (token offered, where: "header", "query", "cookie" or None). The header wins, then the query (so a
    person can replace a stale cookie by opening ?token= again), then the cookie."""
    header = headers.get("Authorization", "")
    if header.startswith("Bearer ") and header[7:].strip():
        return header[7:].strip(), "header"
    values = [value for key, values in query.items() if is_token_key(key) for value in values]
    if values:
        return values[0], "query"
    try:
        cookie = SimpleCookie(headers.get("Cookie", ""))
    except CookieError:
        return "", None
    morsel = cookie.get(cookie_name(port))
    return (unquote(morsel.value), "cookie") if morsel is not None and morsel.value else ("", None)


def token_matches(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


def host_name(header: str) -> str:
    """The host part of a Host header, lower case, without port, brackets or a trailing dot."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def own_host_names(hostname: str | None = None) -> set:
    """This device's own names: its host name (full and short) alone and under the suffixes home networks
    give it (mDNS .local, routers' .lan, .home, .home.arpa, .fritz.box). A web page cannot rebind those: the
    home network's own resolver answers for them."""
    name = (socket.gethostname() if hostname is None else hostname).lower().rstrip(".")
    if not name:
        return set()
    return {base + suffix for base in {name, name.split(".")[0]} for suffix in LOCAL_SUFFIXES}


def default_allowed_hosts(bound_host: str, extra=()) -> frozenset:
    """Names a request's Host header may use (IP literals are always allowed: rebinding needs a name)."""
    names = {"localhost", "localhost.localdomain", bound_host.strip("[]").lower()} | own_host_names()
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
