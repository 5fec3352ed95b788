"""Teaching on a device installed the way install.sh installs it (issue 18 items 2 and 5): the release is
read-only (the unit's ProtectSystem=strict; here a read-only bind mount in a private mount namespace, real
EROFS from the kernel) and only the state folder is writable. Teach, undo and status from the command line and
the Teach view's POST /api/teach work; the head lives in STATE/models/<model key>/heads/ and survives a restart,
a new release of the same model and a rollback; another model re-fits its own head from the data set at start;
a teach that cannot write answers one clear line (409 locked, 507 read-only) and says why in the daemon's log.
Real bundle, real interpreter, real daemon processes, real sockets."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import teach_bundle
from test_teach_http import listening

REPO = Path(__file__).resolve().parent.parent
COLOURS = {"paper": "red", "rock": "green", "scissors": "blue"}  # the data set's classes: new names


def can_mount_read_only() -> str | None:
    """None when this process may make read-only bind mounts in a private mount namespace, else why not."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "read-only bind mounts need root and unshare(1) (util-linux)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp /tmp && ! touch /tmp/.ro-probe"],
                           capture_output=True, text=True, check=False)
    return None if probe.returncode == 0 else f"cannot make a read-only bind mount here: {probe.stderr.strip()}"


WHY_NOT = can_mount_read_only()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def read_only(folders, command) -> list:
    """COMMAND with each of FOLDERS mounted read-only, as systemd's ProtectSystem=strict mounts the release."""
    mounts = " && ".join(f'mount --bind "{f}" "{f}" && mount -o remount,ro,bind "{f}" "{f}"' for f in folders)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh",
            *map(str, command)]


def device(*arguments) -> list:
    return [sys.executable, "-m", "device", *map(str, arguments)]


def run(command, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


@pytest.fixture()
def device_root(tmp_path_factory, tmp_path):
    """/opt/edgecam/releases/A/bundle and /var/lib/edgecam, in miniature: a release folder with the bundle, and a
    state folder whose dataset/ holds the user's frames (the tiny bundle's images under new class names)."""
    from bench.teach import light_copy

    release = tmp_path / "releases" / "A"
    light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), release / "bundle")
    state = tmp_path / "state"
    images = teach_bundle.images_root(tmp_path_factory)
    for label, colour in COLOURS.items():
        shutil.copytree(images / "train" / label, state / "dataset" / colour)
    return release, state


def model_heads(state: Path, bundle: Path, fmt: str = "int8") -> Path:
    from device.manifest import load_manifest
    from device.state import model_dir

    return model_dir(state, load_manifest(bundle).models[fmt].sha256) / "heads"


def test_teach_undo_and_status_with_the_release_read_only(device_root):
    release, state = device_root
    bundle = release / "bundle"
    before = sorted(p.relative_to(release.parent) for p in release.parent.rglob("*"))
    env = {"EDGECAM_STATE_DIR": str(state)}
    taught = run(read_only([release], device("teach", "--bundle", bundle, "--force", "--threads", 1, "--json")), env)
    assert taught.returncode == 0, taught.stderr
    result = json.loads(taught.stdout.splitlines()[-1])
    assert result["accepted"] and result["revision"] == 1 and result["labels"] == ["blue", "green", "red"]
    heads = model_heads(state, bundle)
    meta = json.loads((heads / "r0001" / "meta.json").read_text())
    assert meta["data"] == str(state / "dataset") and meta["frames"] == 90  # the data set from the state folder
    assert meta["model_sha256"] == json.loads((bundle / "manifest.json").read_text())["models"]["int8"]["sha256"]
    assert sorted(p.relative_to(release.parent) for p in release.parent.rglob("*")) == before  # nothing written

    shown = run(read_only([release], device("status", "--bundle", bundle, "--json")), env)
    assert shown.returncode == 0, shown.stderr
    head = json.loads(shown.stdout)
    assert (head["revision"], head["source"], head["labels"]) == (1, "taught", ["blue", "green", "red"])
    assert head["frames"] == 90 and head["data"] == str(state / "dataset") and head["store"] == str(heads)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", head["fitted"])
    words = run(read_only([release], device("status", "--bundle", bundle)), env)
    assert "head revision 1 (taught): blue, green, red" in words.stdout
    assert f"fitted on 90 frames from {state / 'dataset'}" in words.stdout

    undone = run(read_only([release], device("undo", "--bundle", bundle)), env)
    assert undone.returncode == 0 and "now using head revision 0 (the bundle's own)" in undone.stdout
    assert json.loads((heads / "current.json").read_text()) == {"revision": 0}
    again = run(read_only([release], device("undo", "--bundle", bundle)), env)
    assert again.returncode == 2 and "nothing to undo" in again.stderr


def test_teach_into_a_read_only_bundle_without_a_state_folder_says_how_to_fix_it(device_root):
    release, state = device_root
    bundle = release / "bundle"
    done = run(read_only([release], device("teach", "--bundle", bundle, "--data", state / "dataset", "--json")))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["kind"] == "storage" and "read-only file system" in answer["error"]
    assert "--state-dir" in answer["error"] and "EDGECAM_STATE_DIR" in answer["error"]


def test_a_legacy_head_inside_the_bundle_is_copied_into_the_state_folder_once(device_root):
    release, state = device_root
    bundle = release / "bundle"
    assert run(device("teach", "--bundle", bundle, "--data", state / "dataset", "--threads", 1)).returncode == 0
    assert (bundle / "heads" / "current.json").is_file()  # a bundle from before the state folder: heads inside
    legacy = sorted(p.relative_to(bundle) for p in (bundle / "heads").rglob("*"))
    shown = run(read_only([release], device("status", "--bundle", bundle, "--state-dir", state, "--json")))
    head = json.loads(shown.stdout)
    assert head["revision"] == 1 and head["store"] == str(model_heads(state, bundle))
    assert head["store_note"] == f"copied from {bundle / 'heads'} (a bundle from before the state folder)"
    assert (model_heads(state, bundle) / "r0001" / "head.npz").is_file()
    assert sorted(p.relative_to(bundle) for p in (bundle / "heads").rglob("*")) == legacy  # left as it was


class Daemon:
    """`python -m device` as the unit runs it: the release read-only, $STATE_DIRECTORY set by systemd."""

    def __init__(self, release: Path, state: Path, *extra, read_only_too=()):
        command = device("--bundle", release / "bundle", "--source",
                         f"images:{release / 'bundle' / 'frames'}", "--http", "127.0.0.1:0", "--max-fps", 20,
                         "--threads", 1, "--emit", "off", *extra)
        self.process = subprocess.Popen(read_only([release, *read_only_too], command), cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ, PYTHONPATH=str(REPO), STATE_DIRECTORY=str(state)))
        self.lines, self.port = listening(self.process)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def status(self):
        return self.request("GET", "/status")[1]

    def wait_for(self, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"timed out; last status {self.status()}; log: {''.join(self.lines)}")

    def log(self) -> str:
        return "".join(self.lines)

    def logged(self, text: str, timeout: float = 10) -> bool:
        """TEXT in the daemon's log (stderr, read by a thread: a line may arrive just after the HTTP answer)."""
        deadline = time.monotonic() + timeout
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        return text in self.log()

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


def new_release(tmp_path: Path, release: Path, name: str) -> Path:
    """Another release folder of the same bundle (install.sh's next release of the same model)."""
    other = tmp_path / "releases" / name
    shutil.copytree(release, other)
    return other


def probe(daemon: Daemon) -> tuple:
    """The served head's revision and its reading of the replayed frames, once the head is in use."""
    status = daemon.wait_for(lambda s: s["frames"] > 0 and s["last_result"] is not None)
    return status["head"]["revision"], status["head"]["labels"], status["last_result"]["model"]


def test_teach_view_on_a_read_only_release_keeps_the_head_across_restart_redeploy_and_rollback(device_root,
                                                                                                tmp_path):
    release, state = device_root
    shutil.copytree(state / "dataset" / "red", release / "bundle" / "frames")
    daemon = Daemon(release, state)
    try:
        assert probe(daemon) == (0, ["paper", "rock", "scissors"], "tiny:int8")
        assert daemon.status()["state_dir"] == str(state)
        code, answer = daemon.request("POST", "/api/teach", {"force": True})
        assert code == 200, answer
        assert answer["accepted"] and answer["revision"] == 1
        status = daemon.wait_for(lambda s: s["last_result"]["model"] == "tiny:int8+head1")
        head = status["head"]
        assert head["frames"] == 90 and head["data"] == str(state / "dataset")
        assert head["store"] == str(model_heads(state, release / "bundle"))
        # the taught head serves with the same model choice, shown in /status
        assert status["tuning"] and status["tuning"]["format"] == "int8", status["tuning"]
    finally:
        daemon.stop()
    assert not (release / "bundle" / "heads").exists() and not list(release.glob(".*lock"))

    for where in (release, new_release(tmp_path, release, "B"), release):  # restart, redeploy, rollback
        daemon = Daemon(where, state)
        try:
            assert probe(daemon) == (1, ["blue", "green", "red"], "tiny:int8+head1"), daemon.log()
        finally:
            daemon.stop()


def test_a_release_with_another_model_refits_its_head_from_the_data_set_at_start(device_root):
    release, state = device_root
    shutil.copytree(state / "dataset" / "red", release / "bundle" / "frames")
    env = {"EDGECAM_STATE_DIR": str(state)}
    assert run(device("teach", "--bundle", release / "bundle", "--force", "--threads", 1), env).returncode == 0
    # --model float32: another model file (another sha256) whose embedding the int8 head does not fit
    daemon = Daemon(release, state, "--model", "float32")
    try:
        status = daemon.wait_for(lambda s: (s["head"].get("refit") or {}).get("state") == "done", timeout=60)
        assert status["head"]["refit"]["data"] == str(state / "dataset")
        status = daemon.wait_for(lambda s: s["last_result"]["model"] == "tiny:float32+head1")
        assert status["head"]["labels"] == ["blue", "green", "red"]
        assert status["head"]["store"] == str(model_heads(state, release / "bundle", "float32"))
        assert daemon.logged("re-fitting its head from") and daemon.logged("head re-fit for the new model done")
    finally:
        daemon.stop()
    daemon = Daemon(release, state, "--model", "float32")  # once re-fitted, a restart serves it without re-fitting
    try:
        status = daemon.wait_for(lambda s: s["last_result"] is not None)
        assert status["last_result"]["model"] == "tiny:float32+head1" and "refit" not in status["head"]
    finally:
        daemon.stop()
    from device.heads.store import HeadStore, open_store
    from device.manifest import load_manifest

    # a re-fit the gate refused records the model's own head as chosen, so the next start does not try again
    untouched = HeadStore(state / "models" / "0123456789abcdef" / "heads", release / "bundle", "0" * 64, state)
    untouched.choose_own_head()
    assert json.loads((untouched.root / "current.json").read_text()) == {"revision": 0}
    float32 = open_store(release / "bundle", load_manifest(release / "bundle"), "float32", state)
    float32.choose_own_head()
    assert float32.current_revision() == 1  # a head in use is never replaced by it


def test_a_new_model_without_its_data_set_serves_its_own_head_and_says_why(device_root):
    release, state = device_root
    shutil.copytree(state / "dataset" / "red", release / "bundle" / "frames")
    assert run(device("teach", "--bundle", release / "bundle", "--state-dir", state, "--force", "--threads", 1,
                      "--data", state / "dataset")).returncode == 0
    shutil.rmtree(state / "dataset")
    daemon = Daemon(release, state, "--model", "float32")
    try:
        status = daemon.wait_for(lambda s: (s["head"].get("refit") or {}).get("state") == "skipped"
                                 and s["last_result"] is not None)
        assert "is gone: serving this release's own head" in status["head"]["refit"]["reason"]
        assert status["head"]["revision"] == 0 and status["last_result"]["model"] == "tiny:float32"
    finally:
        daemon.stop()


def test_a_failed_teach_answers_one_line_and_says_why_in_the_log(device_root):
    from device.layout import acquire_lock

    release, state = device_root
    shutil.copytree(state / "dataset" / "red", release / "bundle" / "frames")
    daemon = Daemon(release, state)
    try:
        probe(daemon)
        heads = model_heads(state, release / "bundle")
        heads.mkdir(parents=True)
        with acquire_lock(heads):  # another writer (a teach from a shell) holds the store
            code, answer = daemon.request("POST", "/api/teach", {"force": True})
        assert code == 409 and "is being written by another edgecam command" in answer["error"]
        assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
        assert daemon.logged("teaching failed: ")
    finally:
        daemon.stop()
    daemon = Daemon(release, state, read_only_too=[state])  # the state folder read-only too (or full)
    try:
        probe(daemon)
        code, answer = daemon.request("POST", "/api/teach", {"force": True})
        assert code == 507, answer
        # the answer is one line without paths (device/http/errors.py); the journal names the folder to fix
        assert "read-only file system" in answer["error"] and "writable" in answer["error"], answer
        assert "\n" not in answer["error"] and "Traceback" not in answer["error"] and str(state) not in answer["error"]
        assert daemon.logged(f"make {state} writable")
    finally:
        daemon.stop()


def test_root_does_not_teach_into_the_service_users_state_folder(device_root):
    release, state = device_root
    os.chown(state, 65534, 65534)  # /var/lib/edgecam belongs to the service user (systemd's StateDirectory=)
    done = run(device("teach", "--bundle", release / "bundle", "--state-dir", state, "--json"))
    assert done.returncode == 2, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["kind"] == "storage" and "not root: run as that user (sudo -u " in answer["error"]
    assert not (state / "models").exists()


def test_the_installed_devices_state_folder_is_found_from_a_shell(tmp_path, monkeypatch):
    """`sudo -u edgecam python -m device teach` has no systemd variables: /var/lib/edgecam is found when this user
    may write it (here a stand-in folder: the host's /var/lib is not the test's to change)."""
    from device import state

    monkeypatch.setattr(state, "SYSTEM_STATE_DIR", tmp_path / "var-lib-edgecam")
    assert state.device_state_dir(environ={}) is None  # a laptop: no state folder, heads beside the bundle
    (tmp_path / "var-lib-edgecam").mkdir()
    assert state.device_state_dir(environ={}) == tmp_path / "var-lib-edgecam"
    assert state.device_state_dir(environ={"STATE_DIRECTORY": "/run/x:/run/y"}) == Path("/run/x")
    assert state.device_state_dir(tmp_path / "flag", environ={"EDGECAM_STATE_DIR": "/env"}) == tmp_path / "flag"


def test_a_damaged_head_in_the_state_folder_is_not_served_and_status_says_why(device_root):
    release, state = device_root
    shutil.copytree(state / "dataset" / "red", release / "bundle" / "frames")
    heads = model_heads(state, release / "bundle")
    heads.mkdir(parents=True)
    (heads / "current.json").write_text('{"revision": 7}')  # names a revision that is not there
    daemon = Daemon(release, state)
    try:
        status = daemon.wait_for(lambda s: s["last_result"] is not None)
        assert status["last_result"]["model"] == "tiny:int8" and status["head"]["revision"] == 0
        assert f"head revision {heads / 'r0007'} is damaged" in status["head"]["fallback"]
        assert daemon.logged("the taught head is not served, the bundle's own head is")
    finally:
        daemon.stop()
    words = run(read_only([release], device("status", "--bundle", release / "bundle", "--state-dir", state)))
    assert words.returncode == 0 and "NOT SERVED: head revision" in words.stdout


def test_teach_on_a_full_disk_answers_one_line_and_leaves_no_half_revision(device_root):
    """The state folder on a full file system (a 256 KiB tmpfs, filled): exit 2 with what to free, and no
    temporary revision folder left behind (issue 19 item 7)."""
    release, state = device_root
    full = state.parent / "full-state"
    full.mkdir()
    script = (f'mount -t tmpfs -o size=256k tmpfs "{full}" && (dd if=/dev/zero of="{full}/fill" bs=4k 2>/dev/null; '
              f'true) && "$@"; code=$?; find "{full}" -name "*tmp*"; exit $code')
    done = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *device("teach", "--bundle", release / "bundle", "--data", state / "dataset", "--state-dir", full,
                        "--force", "--threads", 1, "--json")])
    assert done.returncode == 2, done.stderr
    answer = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert answer["kind"] == "storage" and f"the disk holding {full}" in answer["error"] and "free some space" in \
        answer["error"]
    assert "Traceback" not in done.stderr
    assert [line for line in done.stdout.splitlines() if not line.startswith("{")] == []  # no .rNNNN.tmp-PID left
