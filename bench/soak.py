"""``python -m bench.soak --bundle artifacts/rps --images data/rps/test --minutes 2`` (``make soak``).

A bounded soak of the real daemon: it replays an image folder as fast as it can while HTTP clients poll
/healthz, /status, /metrics and /frame.jpg on keep-alive connections, two /events streams stay open, a
misbehaving client opens idle and half-sent connections, and a SIGHUP reload comes every 20 seconds.
Prints the daemon's RSS, open file descriptors, threads and error counters idle before the clients start,
under load at the start and at the end, and idle again after they stopped; then stops it with SIGTERM.
Exit 1 when the daemon died, did not stop with 0, logged a traceback, counted frame or reload errors, or
has more descriptors or threads idle after than idle before; RSS is reported, not judged (minutes are too
short for that: run longer).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLLED = ("/healthz", "/status", "/metrics", "/frame.jpg")
LEAK_TOLERANCE = 4  # descriptors or threads more after than before (a client mid-connect when measured)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle folder")
    parser.add_argument("--images", default="data/rps/test", help="image folder the daemon replays")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to soak (after a 5 s warm-up)")
    parser.add_argument("--model", default="int8", help="model the daemon serves")
    parser.add_argument("--clients", type=int, default=4, help="HTTP polling clients (keep-alive)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_figures(pid: int) -> dict:
    """RSS (MB), open file descriptors and threads of a live process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"])}


def daemon_figures(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/status")
    status = json.loads(connection.getresponse().read())
    connection.close()
    http_counts = status.get("http") or {}
    return {"frames": status["frames"], "fps": status["fps"], "frame_errors": status["frame_errors"],
            "reload_errors": status["reload_errors"], "source_retries": status["source"]["retries"],
            "skipped_frames": sum((status.get("skipped_frames") or {}).values()),
            "http_refused": sum((http_counts.get("refused") or {}).values()),
            "state": status["state"]}


class Clients:
    """The load: polling clients, SSE readers, a rude client; each counts its requests and errors."""

    def __init__(self, port: int, polling: int):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "errors": 0, "events": 0, "rude": 0}
        self.threads = [threading.Thread(target=self.poll, daemon=True) for _ in range(polling)]
        self.threads += [threading.Thread(target=self.listen, daemon=True) for _ in range(2)]
        self.threads.append(threading.Thread(target=self.rude, daemon=True))

    def count(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[key] += amount

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> dict:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        return dict(self.counts)

    def poll(self) -> None:
        connection = None
        index = 0
        while not self.stop.is_set():
            path = POLLED[index % len(POLLED)]
            index += 1
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                self.count("requests")
                if response.status >= 500 and not (path == "/frame.jpg" and response.status == 503):
                    self.count("errors")
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                self.count("errors")
                if connection is not None:
                    connection.close()
                connection = None
                self.stop.wait(0.1)
            self.stop.wait(0.01)

    def listen(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as stream:
                    stream.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    while not self.stop.is_set():
                        chunk = stream.recv(65536)
                        if not chunk:
                            break
                        self.count("events", chunk.count(b"\nevent: "))
            except OSError:
                if not self.stop.is_set():
                    self.count("errors")
                self.stop.wait(0.5)

    def rude(self) -> None:
        """Idle connections, half-sent requests and resets: what the limits are for."""
        while not self.stop.wait(0.5):
            try:
                idle = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                half = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                half.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                reset = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                reset.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                reset.close()
                self.stop.wait(1.5)
                idle.close()
                half.close()
                self.count("rude")
            except OSError:
                self.count("errors")


def wait_running(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"soak: the daemon exited with {process.returncode} before it ran")
        try:
            if daemon_figures(port)["state"] == "running":
                return
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise SystemExit("soak: the daemon did not reach 'running' within 60 s")


def table(*columns: dict) -> str:
    """Figures side by side: idle before, load start, load end, idle after, and the change idle to idle."""
    heads = ("idle before", "load start", "load end", "idle after", "idle change")
    lines = [f"{'':16}" + "".join(f"{head:>13}" for head in heads)]
    for key in columns[0]:
        if key == "state":
            continue
        change = columns[-1][key] - columns[0][key]
        change = f"{change:+.1f}" if isinstance(change, float) else f"{change:+d}"
        lines.append(f"{key:16}" + "".join(f"{column[key]:>13}" for column in columns) + f"{change:>13}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    bundle, images = Path(args.bundle), Path(args.images)
    if not (bundle / "manifest.json").is_file():
        print(f"soak: {bundle} is not a bundle: make train convert first, or pass BUNDLE=...", file=sys.stderr)
        return 2
    if not images.is_dir():
        print(f"soak: {images} is not an image folder: make data first, or pass DATA=...", file=sys.stderr)
        return 2
    port = free_port()
    command = [sys.executable, "-m", "device", "--bundle", str(bundle), "--model", args.model,
               "--source", f"images:{images}", "--max-fps", "0", "--emit", "off", "--threads", str(args.threads),
               "--http", f"127.0.0.1:{port}", "--log-level", "warning"]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    daemon = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    stderr_lines: list = []
    threading.Thread(target=lambda: stderr_lines.extend(daemon.stderr), daemon=True).start()
    try:
        wait_running(port, daemon)
        time.sleep(2.0)
        idle_before = {**daemon_figures(port), **process_figures(daemon.pid)}
        clients = Clients(port, args.clients)
        clients.start()
        time.sleep(5.0)  # warm-up: threads, buffers and caches reach their working size
        before = {**daemon_figures(port), **process_figures(daemon.pid)}
        print(f"soak: {args.minutes:g} min on {images} ({args.model}), pid {daemon.pid}, port {port}", flush=True)
        end = time.monotonic() + args.minutes * 60
        next_reload = time.monotonic() + 20
        reloads = 0
        while time.monotonic() < end and daemon.poll() is None:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_reload:
                daemon.send_signal(signal.SIGHUP)
                reloads += 1
                next_reload += 20
        alive = daemon.poll() is None
        after = {**daemon_figures(port), **process_figures(daemon.pid)} if alive else None
        counts = clients.finish()
        time.sleep(2.0)  # let the last connections close (--request-timeout reaps the rest)
        idle_after = {**daemon_figures(port), **process_figures(daemon.pid)} if alive else None
    finally:
        stopped = time.monotonic()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        stop_s = time.monotonic() - stopped
    if after is None or idle_after is None:
        print(f"soak: FAIL, the daemon died (exit {code}):\n{''.join(stderr_lines[-20:])}")
        return 1
    print(table(idle_before, before, after, idle_after))
    print(f"clients: {counts['requests']} requests, {counts['events']} events, {counts['rude']} rude rounds, "
          f"{counts['errors']} client errors; {reloads} SIGHUP reloads; SIGTERM -> exit {code} in {stop_s:.2f} s")
    tracebacks = sum("Traceback" in line for line in stderr_lines)
    print(f"stderr: {len(stderr_lines)} lines, {tracebacks} tracebacks" + "".join(
        f"\n  {line.rstrip()}" for line in stderr_lines[:5]))
    leaks = [key for key in ("fds", "threads") if idle_after[key] > idle_before[key] + LEAK_TOLERANCE]
    problems = leaks + (["exit code"] if code != 0 else []) + (["tracebacks"] if tracebacks else [])
    problems += [key for key in ("frame_errors", "reload_errors") if idle_after[key] > idle_before[key]]
    print("soak: PASS" if not problems else f"soak: FAIL ({', '.join(problems)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
