"""The systemd test bed: a Debian root file system (trixie, as Raspberry Pi OS today, or bookworm, as before
2025-10) booted with systemd as PID 1 in systemd-nspawn.

What runs is what runs on a Pi: the real device archive (python -m deploy.bundle), the real install.sh (venv,
pip, device doctor, user, unit, restart, health check, rollback), the real unit under the real systemd
(Type=notify, WatchdogSec, Restart*, ProtectSystem=strict, StateDirectory, MemoryMax), driven with systemctl,
journalctl and HTTP. Faked, because it cannot exist here: the Pi camera (frames replayed from a folder,
EDGECAM_ARGS="--source images:/opt/frames") and the CPU (x86_64, not arm64: make pi-sim covers that).

- Each release's root file system is built once with mmdebstrap and cached outside the repository
  ($EDGECAM_BED_CACHE, default ~/.cache/edgecam/rootfs-RELEASE.tar.zst, rebuilt when PACKAGES change); each
  session unpacks it once and every container boots it with --volatile=overlay, so a boot always starts from
  the same clean image. It carries what Raspberry Pi OS Lite has and install.sh uses: python3-venv,
  python3-numpy, python3-pil, sudo, curl; install.sh runs with --no-apt (python3-picamera2 is the faked camera).
- pip installs offline from a wheelhouse for the container's own platform (x86_64; CPython 3.13 on trixie,
  3.11 on bookworm; deploy/wheelhouse.py evaluates the requirements' markers for it), downloaded once into
  the cache: install.sh --pip-args "--no-index --find-links /mnt/bed/wheels-RELEASE".
- systemd 257 (trixie) refuses cgroup v1 unless told: PID 1 gets SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1 on
  its command line (a container's systemd reads its "kernel command line" from its own argv).
- The host has no systemd, so: --register=no --keep-unit. Each container gets its own cgroups (memory,
  name=systemd, unified), and its PID 1 remounts its memory hierarchy read-write before it execs systemd, so
  MemoryMax= is enforced; the cgroups are removed after the container stops.
- Commands inside: nsenter into all of the container's namespaces with a clean environment (env -i), so
  nothing of the host's environment leaks in. HTTP: the host's Python in the container's network namespace.

Needs root, systemd-nspawn, nsenter, zstd and (for the first build) mmdebstrap and network:
scripts/system-deps.sh installs them. ``missing()`` names what is missing; the tests skip with that reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("EDGECAM_BED_CACHE") or Path.home() / ".cache" / "edgecam")
# Debian release -> its python3 (Raspberry Pi OS trixie since 2025-10-01; bookworm before)
RELEASES = {"trixie": "3.13", "bookworm": "3.11"}
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,python3-numpy,python3-pil,sudo,curl"
PATH_INSIDE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "deploy" / "requirements-pi.txt"
SHARE = "/mnt/bed"  # the host folder every container sees read-only (archives, wheels, frames)
CGROUP_ROOTS = ("memory", "systemd", "unified")
# PID 1 of the container: the memory hierarchy read-write first, or systemd cannot apply MemoryMax=.
INIT = ("mount -o remount,rw,bind /sys/fs/cgroup/memory; "
        "exec /lib/systemd/systemd systemd.unified_cgroup_hierarchy=0 SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1")
HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url, body, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
headers = {"Content-Type": "application/json"} if body else {}
if token:
    headers["Authorization"] = "Bearer " + token
request = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=float(sys.argv[5])) as response:
        status, raw = response.status, response.read()
except urllib.error.HTTPError as error:
    status, raw = error.code, error.read()
except OSError as error:
    status, raw = None, str(getattr(error, "reason", None) or error).encode()
print(json.dumps({"status": status, "body": raw.decode("utf-8", "replace")}))
"""


def missing() -> str | None:
    """Why the bed cannot run here (the tests' skip reason), or None."""
    if sys.platform != "linux":
        return "the systemd test bed needs Linux (systemd-nspawn)"
    if os.geteuid() != 0:
        return "the systemd test bed needs root (systemd-nspawn, nsenter, cgroups)"
    for tool in ("systemd-nspawn", "nsenter", "zstd", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `make system-deps` (scripts/system-deps.sh)"
    if shutil.which("mmdebstrap") is None and not all(rootfs_file(release).is_file() for release in RELEASES):
        return "mmdebstrap is not installed and the root file systems are not built: run `make system-deps`"
    if not Path("/sys/fs/cgroup/memory/cgroup.procs").is_file():
        return "no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (the bed's MemoryMax set-up needs it)"
    return None


def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_suffix(path.suffix + ".lock"), "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def rootfs_file(release: str) -> Path:
    return CACHE / f"rootfs-{release}.tar.zst"


def wheels_folder(release: str) -> Path:
    return CACHE / f"wheels-x86_64-cp{RELEASES[release].replace('.', '')}"


def build_rootfs(release: str = "trixie", log=print) -> Path:
    """RELEASE's cached root file system (tar.zst), built with mmdebstrap when missing or when PACKAGES changed
    (about 30-100 s, once)."""
    rootfs = rootfs_file(release)
    stamp = rootfs.with_suffix("").with_suffix(".packages")  # rootfs-RELEASE.packages: what it was built with
    with _locked(rootfs):
        if not rootfs.is_file() or not stamp.is_file() or stamp.read_text() != PACKAGES:
            partial = rootfs.with_name(rootfs.name + ".partial.tar.zst")
            started = time.monotonic()
            log(f"systemd bed: building {rootfs} with mmdebstrap (once)")
            result = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={PACKAGES}",
                                     release, str(partial)], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                partial.unlink(missing_ok=True)
                raise RuntimeError(f"mmdebstrap failed (exit {result.returncode}): {result.stderr[-2000:]}")
            partial.rename(rootfs)
            stamp.write_text(PACKAGES)
            log(f"systemd bed: {release} root file system built in {time.monotonic() - started:.0f} s")
    return rootfs


def build_wheels(release: str = "trixie", log=print) -> Path:
    """The device requirements as wheels for RELEASE's container (x86_64, its CPython), downloaded once."""
    from deploy import wheelhouse  # the one place that evaluates the requirements' markers for a target

    folder = wheels_folder(release)
    with _locked(folder):
        stamp = folder / ".requirements"
        wanted = REQUIREMENTS.read_text()
        if not stamp.is_file() or stamp.read_text() != wanted:
            log(f"systemd bed: downloading the {release} container's wheels (once)")
            report = wheelhouse.download_platform(REQUIREMENTS, "x86_64", RELEASES[release], folder)
            if report["missing"] or report["without_dependencies"]:
                raise RuntimeError(f"pip download for x86_64 CPython {RELEASES[release]} failed: {report}")
            stamp.write_text(wanted)
    return folder


def unpack_rootfs(destination: Path, release: str = "trixie") -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"zstd -dc {shlex.quote(str(build_rootfs(release)))} | tar -x -C {shlex.quote(str(destination))}",
                   shell=True, check=True)
    return destination


def _own_cgroup(kind: str) -> Path:
    """This process's folder in one cgroup v1 hierarchy (memory, name=systemd) or in the unified one."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if (kind == "unified" and number == "0") or (kind == "systemd" and controllers == "name=systemd") \
                or controllers == kind:
            return Path("/sys/fs/cgroup") / kind / path.lstrip("/")
    return Path("/sys/fs/cgroup") / kind


class Container:
    """One booted container. ``with Container(rootfs, "bed-1", share) as box:`` boots; leaving stops it."""

    def __init__(self, rootfs: Path, name: str, share: Path, private_network: bool = True,
                 release: str = "trixie"):
        self.rootfs, self.name, self.share, self.release = rootfs, name, share, release
        self.private_network = private_network  # False: the host's network (sshd for make fleet)
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        self.cgroups = [_own_cgroup(kind) / name for kind in CGROUP_ROOTS]
        self.boot_seconds: float | None = None
        self.log = share.parent / f"{name}.console.log"

    # ---- life ---------------------------------------------------------------------------------
    def __enter__(self) -> "Container":
        try:
            self.boot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def boot(self, timeout: float = 60) -> float:
        started = time.monotonic()
        for folder in self.cgroups:
            folder.mkdir(parents=True, exist_ok=True)
        cgroup_procs = " ".join(shlex.quote(str(folder / "cgroup.procs")) for folder in self.cgroups)
        command = ["systemd-nspawn", "--quiet", "-D", str(self.rootfs), f"--machine={self.name}",
                   "--register=no", "--keep-unit", "--console=pipe", "--volatile=overlay",
                   *(["--private-network"] if self.private_network else []),
                   "--kill-signal=SIGRTMIN+3", f"--bind-ro={self.share}:{SHARE}", "/bin/sh", "-c", INIT]
        # The nspawn process moves itself into the container's own cgroups first, then becomes nspawn.
        wrapper = f"for f in {cgroup_procs}; do echo $$ > $f; done; exec {shlex.join(command)}"
        with open(self.log, "ab") as console:
            self.process = subprocess.Popen(["/bin/sh", "-c", wrapper], stdin=subprocess.DEVNULL, stdout=console,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.pid is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not boot: {self.log.read_text()[-3000:]}")
            self.pid = self._init_pid()
            time.sleep(0.05)
        state = ""
        while state not in ("running", "degraded"):  # "offline": PID 1 has not become systemd yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: systemd says {state!r}: {self.log.read_text()[-3000:]}")
            state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout).stdout.strip()
            time.sleep(0.05 if state not in ("running", "degraded") else 0)
        self.boot_seconds = time.monotonic() - started
        return self.boot_seconds

    def _init_pid(self) -> int | None:
        """The container's PID 1 as the host sees it: nspawn's child whose namespace PID is 1."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            nspid = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
            if nspid and len(nspid[0]) > 1 and nspid[0][-1] == "1" and "systemd" in Path(f"/proc/{child}/comm").read_text():
                return int(child)
        return None

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn passes SIGRTMIN+3: systemd powers off cleanly
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGTERM)  # a second SIGTERM: nspawn ends it at once
                self.process.wait(10)
        self.process, self.pid = None, None
        deadline = time.monotonic() + 10
        for folder in self.cgroups:  # systemd's child cgroups in the container's own, deepest first
            for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [folder]:
                while path.is_dir():
                    try:
                        path.rmdir()
                    except OSError:  # EBUSY while the kernel still uncharges a memory cgroup: retry a while
                        if time.monotonic() > deadline:
                            print(f"systemd bed: could not remove {path}; remove it by hand (rmdir)")
                            break
                        time.sleep(0.1)

    # ---- commands -----------------------------------------------------------------------------
    def run(self, *command, check: bool = True, timeout: float = 120, input: str | None = None,
            environment: dict | None = None) -> subprocess.CompletedProcess:
        """Run COMMAND inside (all namespaces, a clean environment) -> CompletedProcess (text)."""
        assert self.pid is not None, "the container is not running"
        variables = [f"{key}={value}" for key, value in {"PATH": PATH_INSIDE, "HOME": "/root", "LANG": "C.UTF-8",
                                                          **(environment or {})}.items()]
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "env", "-i", *variables, *map(str, command)],
                                capture_output=True, text=True, timeout=timeout, input=input, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: {shlex.join(map(str, command))} exited {result.returncode}\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("/bin/sh", "-c", script, **kwargs)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.sh(f"mkdir -p \"$(dirname {shlex.quote(path)})\" && cat > {shlex.quote(path)} && chmod {mode} "
                f"{shlex.quote(path)}", input=text)

    def http(self, method: str, path: str, body: dict | None = None, token: str = "", port: int = 8080,
             timeout: float = 60) -> tuple:
        """-> (status or None, parsed JSON or text): the host's Python in the container's network namespace."""
        assert self.pid is not None, "the container is not running"
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-n", sys.executable, "-c", HTTP_CLIENT, method,
                                 f"http://127.0.0.1:{port}{path}", json.dumps(body) if body is not None else "",
                                 token, str(timeout)], capture_output=True, text=True, timeout=timeout + 10,
                                check=True)
        answer = json.loads(result.stdout)
        try:
            return answer["status"], json.loads(answer["body"])
        except ValueError:
            return answer["status"], answer["body"]

    # ---- systemd ------------------------------------------------------------------------------
    def show(self, unit: str = "edgecam.service", *properties) -> dict:
        text = self.run("systemctl", "show", unit, *(f"--property={name}" for name in properties)).stdout
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def journal(self, unit: str = "edgecam.service", since: str | None = None) -> str:
        extra = [f"--since={since}"] if since else []
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, *extra, check=False).stdout

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {what} not within {timeout:g} s; journal:\n"
                                     f"{self.journal()[-4000:]}")
            time.sleep(interval)

    def healthy(self) -> bool:
        status, _ = self.http("GET", "/healthz", timeout=5)
        return status == 200

    def memory(self, unit: str = "edgecam.service") -> dict:
        """The unit's memory cgroup (v1): limit, usage, peak (max_usage) and failcnt, in bytes."""
        folder = f"/sys/fs/cgroup/memory/system.slice/{unit}"
        values = self.sh(f"cd {folder} && cat memory.limit_in_bytes memory.usage_in_bytes "
                         "memory.max_usage_in_bytes memory.failcnt").stdout.split()
        return dict(zip(("limit", "usage", "peak", "failcnt"), map(int, values)))

    # ---- edgecam ------------------------------------------------------------------------------
    def install(self, archive: str, *options, check: bool = True) -> subprocess.CompletedProcess:
        """Unpack SHARE/ARCHIVE in /root and run its install.sh, pip offline from SHARE/wheels-RELEASE."""
        script = (f"set -e; top=$(tar -tzf {SHARE}/{archive} | head -n 1 | cut -d/ -f1); rm -rf /root/$top; "
                  f"tar -xzf {SHARE}/{archive} -C /root; "
                  f"bash /root/$top/install.sh --no-apt --pip-args '--no-index --find-links {SHARE}/wheels-{self.release}' "
                  + " ".join(map(shlex.quote, options)))
        return self.sh(script, check=check, timeout=300)

    def install_sh(self, *options, check: bool = True) -> subprocess.CompletedProcess:
        """The installed release's own install.sh (--rollback, --status)."""
        return self.run("bash", "/opt/edgecam/current/install.sh", "--no-apt", *options, check=check, timeout=300)


# ---- pytest fixtures bed_share and box (import bed_share_fixture, box_fixture into a test module) -------------
import pytest  # noqa: E402 - the helpers above stand without pytest (make systemd-test's figures)

FRAMES_INSIDE = "/opt/frames"
EDGECAM_ARGS = f"--source images:{FRAMES_INSIDE} --loop --max-fps 10 --smoothing 1 --threads 1"


def _link_tree(source: Path, destination: Path) -> None:
    """Hard links where the file systems allow it (the 50 MB of wheels), copies where not."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source, destination, copy_function=link, ignore=shutil.ignore_patterns(".*"))


def build_archive(bundle: Path, out: Path, *extra, pythonpath: Path = REPO) -> dict:
    """python -m deploy.bundle -> release.json of the written archive."""
    import tarfile

    environment = dict(os.environ, PYTHONPATH=str(pythonpath))
    result = subprocess.run([sys.executable, "-m", "deploy.bundle", "--bundle", str(bundle), "--out", str(out),
                             "--force", *map(str, extra)], cwd=pythonpath, env=environment, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as tar:
        top = tar.getnames()[0].split("/")[0]
        return json.loads(tar.extractfile(f"{top}/release.json").read())


# Session-wide, whichever module asks first: a fixture imported into two test modules is two fixtures to
# pytest (one per module), so the share and the booted container are kept here, stopped when pytest ends.
_SESSION: dict = {}


@pytest.fixture(scope="session", name="bed_share")
def bed_share_fixture(tmp_path_factory):
    """-> (share folder, {"a": release A's release.json}, teach bundle): the unpacked root file systems beside it
    (rootfs-RELEASE, unpacked when a container of that release first boots)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    key = ("share", str(tmp_path_factory.getbasetemp()))
    if key not in _SESSION:
        import teach_bundle

        started = time.monotonic()
        work = tmp_path_factory.mktemp("systemd-bed")
        share = work / "share"
        share.mkdir()
        for release in RELEASES:
            _link_tree(build_wheels(release), share / f"wheels-{release}")
        bundle = teach_bundle.shared_teach_bundle(tmp_path_factory)
        shutil.copytree(teach_bundle.images_root(tmp_path_factory) / "test", share / "frames")
        releases = {"a": build_archive(bundle, share / "a.tar.gz")}
        print(f"systemd bed: wheels, archive ready in {time.monotonic() - started:.1f} s")
        _SESSION[key] = share, releases, bundle
    return _SESSION[key]


def rootfs_dir(share: Path, release: str) -> Path:
    """RELEASE's root file system unpacked beside SHARE, once per session (containers boot it --volatile)."""
    rootfs = share.parent / f"rootfs-{release}"
    if not (rootfs / "etc" / "os-release").exists():
        unpack_rootfs(rootfs, release)
    return rootfs


def booted_box(release: str, bed_share, tmp_path_factory, request) -> Container:
    """RELEASE's booted container with release A installed and running, one per session (each test puts back
    what it changed)."""
    key = ("box", release, str(tmp_path_factory.getbasetemp()))
    if key not in _SESSION:
        share, releases, _ = bed_share
        container = Container(rootfs_dir(share, release), f"edgecam-{release}-{os.getpid()}", share, release=release)
        container.__enter__()
        request.config.add_cleanup(container.stop)
        container.sh(f"cp -r {SHARE}/frames {FRAMES_INSIDE}")
        container.write("/etc/default/edgecam", f'EDGECAM_ARGS="{EDGECAM_ARGS}"\n', mode="0600")
        started = time.monotonic()
        container.install("a.tar.gz")
        container.install_seconds = time.monotonic() - started
        print(f"systemd bed: {release} boot {container.boot_seconds:.2f} s, "
              f"install {container.install_seconds:.1f} s")
        _SESSION[key] = container
    return _SESSION[key]


@pytest.fixture(scope="session", name="box")
def box_fixture(bed_share, tmp_path_factory, request):
    """The trixie container (Raspberry Pi OS today): every systemd test runs on it."""
    return booted_box("trixie", bed_share, tmp_path_factory, request)


@pytest.fixture(scope="session", name="bookworm_box")
def bookworm_box_fixture(bed_share, tmp_path_factory, request):
    """The bookworm container: install, teach and rollback only (tests/test_systemd_teach.py)."""
    return booted_box("bookworm", bed_share, tmp_path_factory, request)
