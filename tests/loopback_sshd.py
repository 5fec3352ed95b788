"""Real OpenSSH servers on loopback ports for the deploy and fleet tests (`make deploy`, `make fleet`).

Each server runs as the current user with its own generated host key, port and config; every server of a
test accepts the same generated client key. ``SetEnv`` gives the sessions extra environment variables (the
tests use it for the stand-in system site-packages, as a Pi's system Python has numpy).
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_openssh() -> None:
    if not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server/client not installed: run `make system-deps` (scripts/system-deps.sh)")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def client_options(port: int, client_key: Path) -> str:
    return (f"-p {port} -i {client_key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10")


class LoopbackSshd:
    """``with LoopbackSshd(folder, client_key, {"PYTHONPATH": ...}) as server:`` -> server.port, .options, .host."""

    def __init__(self, folder: Path, client_key: Path, environment: dict | None = None):
        self.folder, self.client_key, self.environment = folder, client_key, environment or {}
        self.port = free_port()
        self.host = f"{getpass.getuser()}@127.0.0.1"
        self.options = client_options(self.port, client_key)
        self.process = None

    def __enter__(self) -> "LoopbackSshd":
        self.folder.mkdir(parents=True, exist_ok=True)
        keygen(self.folder / "host_key")
        (self.folder / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        settings = " ".join(f"{key}={value}" for key, value in self.environment.items())
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.folder / 'host_key'}",
            f"PidFile {self.folder / 'sshd.pid'}", f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "MaxStartups 30:30:60",
            "Subsystem sftp internal-sftp",
            *([f"SetEnv {settings}"] if settings else []), ""]))
        self.process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 15
        while subprocess.run(["ssh", *shlex.split(self.options), self.host, "true"], check=False,
                             capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"sshd did not start: {self.process.stdout.read()}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
