"""HTTP answers (issue 26 item 12) on a real daemon (real model, real image source, real loopback sockets; the
inference loop in a thread of the test process): every error is JSON, the shell's and the API's verdicts on a
damaged head store agree, no token reaches a log line, and only a full or read-only disk is 507."""

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import device_bundle
import pytest

from device.daemon import Daemon, Options
from device.http import guard


@pytest.fixture
def running(bundle, tmp_path):
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    daemon = Daemon(Options(bundle=str(bundle), source=f"images:{images}", http="127.0.0.1:0", max_fps=100,
                            threads=1, emit="off", state_dir=str(tmp_path / "state")))
    daemon.start()
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while daemon.frame_number < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield daemon
    daemon.stopping.set()
    thread.join(3)
    daemon.shutdown()


def raw(daemon, data: bytes) -> tuple:
    """Send DATA as it is on a new connection -> (status line, headers and body as text)."""
    with socket.create_connection(("127.0.0.1", daemon.server.port), timeout=5) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.decode("latin-1").partition("\r\n\r\n")
    return head.splitlines()[0], head, body


@pytest.mark.parametrize("request_bytes, status", [
    (b"NONSENSE\r\n\r\n", "400"),  # a malformed request line (HTTP/0.9 to the standard library: no headers)
    (b"GET /status HTTP/1.x\r\n\r\n", "400"),  # a malformed version
    (b"BREW /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "501"),  # an unknown method
])
def test_the_standard_librarys_own_errors_are_json_too(running, request_bytes, status):
    line, head, body = raw(running, request_bytes)
    assert line.split()[1] == status, line
    assert "application/json" in head and "<html" not in body.lower()
    assert json.loads(body)["error"]


def test_undo_with_a_damaged_current_json_answers_what_the_shell_says_not_500(running, tmp_path):
    running.head_store.root.mkdir(parents=True, exist_ok=True)
    (running.head_store.root / "current.json").write_text("{not json")
    request = urllib.request.Request(f"http://127.0.0.1:{running.server.port}/api/teach/undo", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 409
    assert "delete it to go back to the bundle's own head" in json.loads(answer.value.read())["error"]


def test_a_quoted_token_never_reaches_the_log():
    secret = "0123456789abcdefSECRET"
    for line in (f'"GET /?token="{secret}" HTTP/1.1" 200 -', f"GET /?token='{secret}' HTTP/1.1",
                 f'GET /?tok%65n="{secret}"&x=1'):
        assert secret not in guard.redact(line), line


def test_only_a_full_or_read_only_disk_is_507_for_a_teach():
    """A teach whose data set cannot be read (EIO, a permission on one file) failed, it is not out of room."""
    import errno

    from device.http.errors import status_for
    from device.teach.service import ERROR_KINDS

    assert status_for(ERROR_KINDS["io"]("x"))[0] == 500
    assert status_for(ERROR_KINDS["storage"](errno.ENOSPC, "full"))[0] == 507
    logging.getLogger("edgecam").debug("done")
