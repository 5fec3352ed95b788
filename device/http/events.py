"""The /events fan-out: server-sent events to per-client bounded queues (device/http/server.py streams them).

Each client has its own bounded queue; a client that lags loses its oldest events, so a slow browser can never
block the pipeline.
"""

from __future__ import annotations

import json
import queue
import threading

CLIENT_QUEUE = 64  # events buffered per SSE client before its oldest are dropped


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
