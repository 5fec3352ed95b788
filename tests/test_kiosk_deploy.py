"""deploy/kiosk: kiosk.sh waits for the daemon's /healthz (degraded counts as up), then starts the browser in
kiosk mode on the page, once per login. The browser is a stand-in script (no display here); the daemon is
a stand-in HTTP server that answers /healthz the way a degraded daemon does."""

import configparser
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KIOSK = REPO / "deploy" / "kiosk"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="kiosk.sh needs bash")


class DegradedHealth(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status":"degraded","reason":"camera unplugged"}'
        self.send_response(503 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def kiosk_env(tmp_path):
    browser = tmp_path / "fake-chromium"
    launches = tmp_path / "launches.txt"
    browser.write_text(  # records its arguments, then exits as if the user closed it
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{launches}.tmp" && mv "{launches}.tmp" "{launches}"\n')
    browser.chmod(0o755)
    port = free_port()
    environment = dict(os.environ, EDGECAM_BROWSER=str(browser), XDG_RUNTIME_DIR=str(tmp_path),
                       EDGECAM_KIOSK_URL=f"http://127.0.0.1:{port}/?countdown=900")
    return environment, launches, port


def start(environment):
    return subprocess.Popen(["bash", str(KIOSK / "kiosk.sh")], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(5)


def test_kiosk_sh_waits_for_the_daemon_then_opens_the_page_in_kiosk_mode(kiosk_env):
    environment, launches, port = kiosk_env
    process = start(environment)
    server = None
    try:
        assert not wait_until(launches.exists, 1.5), "the browser started before the daemon answered"
        server = ThreadingHTTPServer(("127.0.0.1", port), DegradedHealth)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        assert wait_until(launches.exists, 5), "the browser never started"
        arguments = launches.read_text().splitlines()
        for flag in ("--kiosk", "--noerrdialogs", "--disable-infobars", "--incognito",
                     "--disable-background-networking"):
            assert flag in arguments
        assert arguments[-1] == f"http://127.0.0.1:{port}/?countdown=900"

        second = subprocess.run(["bash", str(KIOSK / "kiosk.sh")], env=environment, capture_output=True,
                                text=True, timeout=5, check=False)
        assert second.returncode == 0 and "already running" in second.stderr
    finally:
        stop(process)
        if server is not None:
            server.shutdown()
            server.server_close()


def test_kiosk_sh_says_what_to_install_without_a_browser(kiosk_env, tmp_path):
    environment, _, _ = kiosk_env
    tools = tmp_path / "bin"  # a PATH with the script's tools but no chromium
    tools.mkdir()
    for tool in ("sed", "flock"):
        if shutil.which(tool):
            (tools / tool).symlink_to(shutil.which(tool))
    environment = dict(environment, PATH=str(tools), EDGECAM_BROWSER="")
    result = subprocess.run([shutil.which("bash"), str(KIOSK / "kiosk.sh")], env=environment,
                            capture_output=True, text=True, timeout=5, check=False)
    assert result.returncode == 1 and "sudo apt install chromium-browser" in result.stderr


def test_autostart_entries_start_the_installed_kiosk_script():
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.read(KIOSK / "edgecam-kiosk.desktop")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Exec"] == "/usr/local/bin/edgecam-kiosk"
    lines = [line for line in (KIOSK / "labwc-autostart").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == ["/usr/local/bin/edgecam-kiosk 2>&1 | systemd-cat -t edgecam-kiosk &"]
    assert os.access(KIOSK / "kiosk.sh", os.X_OK)
