"""HTTP POST of the JSON result line to ``--webhook URL`` when the label changes (Node-RED, n8n, a
home-made server). Each post has a timeout and is retried with back-off; a post that still fails is
counted (errors, last_error) and dropped, and the next one is tried. While it retries, new results wait
in the bounded queue (the oldest dropped, counted)."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from device.outputs.base import Output, to_json

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--webhook {url!r}: expected an http:// or https:// URL such as "
                         "http://192.168.1.10:1880/edgecam.")
    if parts.username or parts.password:
        raise ValueError("--webhook: credentials in the URL would show in `ps` and logs; put a token in the "
                         "path or query of a URL your server checks, or use a reverse proxy.")
    return url


class WebhookOutput(Output):
    name = "webhook"
    queue_size = 32

    def __init__(self, url: str, mode: str = "change", timeout: float = 5.0, retries: int = 3):
        super().__init__(mode, "--webhook-emit")
        self.url = check_url(url)
        self.timeout = timeout
        self.retries = retries
        self.stopping = threading.Event()
        self.connected: bool | None = None
        self.posted = 0

    @classmethod
    def configure(cls, options):
        settings = options.outputs
        if not settings.webhook:
            return None
        return cls(settings.webhook, settings.webhook_emit, settings.webhook_timeout, settings.webhook_retries)

    def write_result(self, result: dict) -> None:
        import urllib.error  # here, not at the top: urllib.request imports ssl (5 MB), only for webhooks
        import urllib.request

        body = (to_json(result) + "\n").encode("utf-8")
        for attempt in range(self.retries + 1):
            if self.stopping.is_set():
                return
            try:
                request = urllib.request.Request(self.url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json",
                                                          "User-Agent": "edgecam"})
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                self.connected = True
                self.posted += 1
                return
            except (urllib.error.URLError, OSError, ValueError) as error:
                self.connected = False
                self.count_error(describe(error))
                if attempt < self.retries:
                    self.stopping.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])

    def interrupt(self) -> None:
        self.stopping.set()  # no more retries: shutting down

    def close(self) -> None:
        self.stopping.set()

    def health(self) -> dict:
        return {"connected": self.connected, "url": redact(self.url), "posted": self.posted}


def describe(error) -> str:
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot reach the server ({error.reason})"
    return f"{type(error).__name__}: {error}"


def redact(url: str) -> str:
    """The URL without its query (which may hold a token) for /status."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


OUTPUT = WebhookOutput
