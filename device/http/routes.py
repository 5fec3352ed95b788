"""What answers the paths beyond the server's own (/healthz, /status, /metrics, /events): a route table that
the optional parts fill (the Teach API registers its paths from device/teach/http.py when the daemon enables
teaching), so this package never imports them.

A route is a method and a path: an exact path, or, ending in ``/``, every path under it. Its handler is called
as ``handler(request_handler, method, path, daemon) -> bool``; False passes the request on (in the end to the
kiosk, then the server's 404).
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class Route(NamedTuple):
    method: str
    path: str
    handler: Callable


class Routes:
    """The server's route table, one per server (first match in registration order)."""

    def __init__(self):
        self.table: list = []

    def register(self, method: str, path: str, handler: Callable) -> None:
        """Answer METHOD PATH (or, for a PATH ending in ``/``, every path under it) with HANDLER."""
        if method not in ("GET", "POST") or not path.startswith("/"):
            raise ValueError(f"route {method} {path}: the method must be GET or POST and the path start with /")
        self.table.append(Route(method, path, handler))

    def handle(self, request_handler, method: str, path: str) -> bool:
        """Hand METHOD PATH to the first registered handler that answers it; False when none does."""
        for route in self.table:
            if route.method == method and (path == route.path or route.path.endswith("/")
                                           and path.startswith(route.path)):
                if route.handler(request_handler, method, path, request_handler.daemon):
                    return True
        return False
