"""Webhook output against a real local HTTP server that fails, then recovers; and the daemon (a real
subprocess) with a log file on a full disk (/dev/full fails every write with ENOSPC, as a full SD card
does): the log file turns itself off once, one error line, no tracebacks, the webhook and stdout go on,
exit 0 at the end of --once (issue 13, case 8)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import device_bundle
import pytest
from outputs_helpers import Daemon, wait_for

from device.outputs import OutputContext, open_outputs
from device.outputs.webhook import WebhookOutput


class FlakyServer(ThreadingHTTPServer):
    """Answers the first ``failures`` POSTs with 503, then 200; keeps the bodies it accepted."""

    def __init__(self, failures: int):
        self.failures = failures
        self.requests = 0
        self.bodies: list = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class FlakyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests += 1
            failing = self.server.requests <= self.server.failures
            if not failing:
                self.server.bodies.append(json.loads(body))
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def results(*labels):
    return [{"frame": index, "label": label, "confidence": 0.9} for index, label in enumerate(labels, 1)]


def test_webhook_retries_with_backoff_until_the_server_recovers():
    server = FlakyServer(failures=2)
    output = WebhookOutput(server.url, mode="change", timeout=2.0, retries=3)
    outputs = open_outputs([output], OutputContext(name="tiny", labels=["paper", "rock"]))
    try:
        for result in results("rock", "rock", "paper", "paper", "rock"):
            outputs.result(result)
        # the server holds the third body before the output has counted its answer: wait for what is asserted
        assert wait_for(lambda: len(server.bodies) == 3 and outputs.describe()["webhook"]["written"] == 3, 10), \
            (server.bodies, outputs.describe()["webhook"])
        assert [body["frame"] for body in server.bodies] == [1, 3, 5]  # label changes, in order, none lost
        status = outputs.describe()["webhook"]
        assert status["errors"] == 2 and status["last_error"] == "HTTP 503 Service Unavailable"
        assert status["connected"] is True and status["written"] == 3 and status["posted"] == 3
    finally:
        outputs.close()
        server.stop()


def test_webhook_to_a_dead_server_gives_up_and_counts_without_blocking():
    server = FlakyServer(failures=0)
    url = server.url
    server.stop()  # nobody listens there now
    output = WebhookOutput(url, mode="every", timeout=0.5, retries=1)
    outputs = open_outputs([output], OutputContext(name="tiny", labels=["paper", "rock"]))
    started = time.monotonic()
    for result in results(*["rock"] * 100):
        outputs.result(result)
    assert time.monotonic() - started < 0.5
    assert wait_for(lambda: outputs.describe()["webhook"]["errors"] >= 2, 10)
    status = outputs.describe()["webhook"]
    assert status["connected"] is False and "cannot reach the server" in status["last_error"]
    assert status["dropped"] >= 100 - 1 - output.queue_size and status["state"] == "ok"
    outputs.close(seconds=0.5)


def test_webhook_url_is_checked():
    with pytest.raises(ValueError, match="expected an http:// or https:// URL"):
        WebhookOutput("ftp://example/hook")
    with pytest.raises(ValueError, match="credentials in the URL"):
        WebhookOutput("http://user:pw@127.0.0.1/hook")


def test_daemon_with_a_full_disk_log_file_keeps_going_and_exits_0(bundle):
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    server = FlakyServer(failures=1)
    daemon = Daemon("--bundle", bundle, "--source", f"images:{images}", "--once", "--max-fps", "12",
                    "--log-file", "/dev/full", "--log-emit", "every", "--webhook", server.url)
    try:
        failed = daemon.wait_status(lambda s: s["outputs"]["logfile"]["state"] == "failed")
        assert failed["outputs"]["logfile"]["errors"] == 1
        assert "No space left on device" in failed["outputs"]["logfile"]["last_error"]
        assert daemon.process.wait(timeout=30) == 0
        stderr = "".join(daemon.stderr)
        assert "Traceback" not in stderr, stderr
        assert stderr.count("output logfile failed and is now off") == 1, stderr
        assert len(daemon.results()) == 24  # stdout got every result
        assert len(server.bodies) >= 2 and all("label" in body for body in server.bodies)  # posted after a 503
    finally:
        daemon.kill()
        server.stop()
