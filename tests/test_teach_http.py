"""The Teach HTTP API against a real daemon subprocess replaying an image folder as its camera, over real
loopback sockets: token, Host and Origin checks on POSTs, capture with its rate limit and size limit, delete,
labelling an uncertain frame, teaching (which switches the running daemon's head without a restart), undo, a
teach from the command line picked up by the running daemon, thumbnails and the data set as a tar."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import teach_bundle

REPO = Path(__file__).resolve().parent.parent
TOKEN = "teach-test-token-0123456789"
COLOUR_NAMES = {"paper": "red", "rock": "green", "scissors": "blue"}  # the tiny bundle's classes are colours


def listening(process, timeout: float = 30) -> tuple:
    """Collect a daemon's stderr lines (a reader thread, until it exits) and wait for the line that says where it
    listens -> (the growing list of lines, its port)."""
    lines, port, found = [], [], threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line)
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if match and not port:
                port.append(int(match.group(1)))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), "".join(lines)
    return lines, port[0]


class DaemonProcess:
    def __init__(self, *arguments):
        self.process = subprocess.Popen([sys.executable, "-m", "device", *map(str, arguments)], cwd=REPO,
                                        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines, self.port = listening(self.process)

    def request(self, method, path, body=None, token=TOKEN, headers=None, data=None):
        data = data if body is None else json.dumps(body).encode()
        heads = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            heads["Authorization"] = f"Bearer {token}"
        heads.update(headers or {})
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers=heads)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers

    def post(self, path, body, **options):
        code, raw, _ = self.request("POST", path, body, **options)
        return code, json.loads(raw)

    def status(self):
        return json.loads(self.request("GET", "/status")[1])

    def wait_for(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"timed out; last status {self.status()}")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture()
def setup(tmp_path_factory, tmp_path):
    from bench.teach import light_copy

    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    images = teach_bundle.images_root(tmp_path_factory)
    dataset = tmp_path / "dataset"
    for label, colour in COLOUR_NAMES.items():  # a data set with the same images under new class names
        shutil.copytree(images / "train" / label, dataset / colour)
    (dataset / "zz").mkdir()
    (dataset / "zz" / "big.jpg").write_bytes(os.urandom(1_000_000))  # fills the size limit
    daemon = DaemonProcess("--bundle", bundle, "--source", f"images:{images / 'test'}", "--http", "127.0.0.1:0",
                           "--token", TOKEN, "--max-fps", 20, "--threads", 1, "--emit", "off", "--dataset", dataset,
                           "--dataset-limit-mb", 1.3, "--min-free-mb", 0, "--keep-uncertain", 3,
                           "--threshold", 1.0, "--capture-fps", 2)
    yield daemon, bundle, dataset
    daemon.stop()


def test_teach_api_end_to_end_switches_the_running_daemons_head(setup):
    daemon, bundle, dataset = setup
    status = daemon.wait_for(lambda s: s["frames"] > 0)
    assert {key: status["head"][key] for key in ("revision", "source", "accuracy", "labels")} == {
        "revision": 0, "source": "bundle", "accuracy": None, "labels": ["paper", "rock", "scissors"]}
    assert status["head"]["store"] == str(bundle / "heads") and len(status["head"]["model_sha256"]) == 64

    # state-changing calls: token, Host, Origin/Referer and a JSON body are checked
    assert daemon.post("/api/classes", {"name": "x"}, token=None)[0] == 401
    assert daemon.post("/api/classes", {"name": "x"}, token="wrong")[0] == 401
    code, answer = daemon.post("/api/classes", {"name": "x"}, headers={"Origin": "http://evil.example"})
    assert code == 403 and "another site than this device" in answer["error"]
    code, answer = daemon.post("/api/classes", {"name": "x"}, headers={"Referer": "http://evil.example/page"})
    assert code == 403
    code, answer = daemon.post("/api/classes", {"name": "x"}, headers={"Host": "rebound.evil.example"})
    assert code == 403 and "is not this device" in answer["error"]
    code, raw, _ = daemon.request("POST", "/api/classes", None, headers={"Content-Type": "text/plain"})
    assert code == 415 and "application/json" in json.loads(raw)["error"]
    assert not (dataset / "x").exists()
    same_origin = {"Origin": f"http://127.0.0.1:{daemon.port}"}
    assert daemon.post("/api/classes", {"name": "red"}, headers=same_origin) == (200, {"name": "red"})
    code, answer = daemon.post("/api/classes", {"name": "no/slash"})
    assert code == 400 and "use 1-40 letters" in answer["error"]

    # capture: the size limit answers 507 with the reason; delete frees it; a second capture at once is 429
    code, answer = daemon.post("/api/capture", {"label": "red"})
    assert code == 507 and "the data set is full" in answer["error"]
    assert daemon.post("/api/dataset/delete", {"file": "zz/big.jpg"}) == (200, {"deleted": "zz/big.jpg"})
    code, answer = daemon.post("/api/capture", {"label": "red"})
    assert code == 200 and answer["count"] == 31 and answer["file"].startswith("red/")
    code, answer = daemon.post("/api/capture", {"label": "red"})
    assert code == 429 and "--capture-fps" in answer["error"]
    code, answer = daemon.post("/api/capture", {"label": "purple"})
    assert code == 404 and "add it first" in answer["error"]

    # the uncertain ring fills (threshold 1.0: every frame is uncertain, one kept a second); label one
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = json.loads(daemon.request("GET", "/api/dataset")[1])
        if listing["uncertain"]:
            break
        time.sleep(0.2)
    assert listing["root"] == str(dataset) and listing["capture_fps"] == 2.0 and listing["recording_blocked"] is None
    assert {c["name"]: c["count"] for c in listing["classes"]}["red"] == 31
    uncertain = listing["uncertain"][0]
    assert 0 <= uncertain["confidence"] < 1 and uncertain["label"] in ("paper", "rock", "scissors")
    code, answer = daemon.post("/api/uncertain/label", {"id": uncertain["id"], "label": "red"})
    assert code == 200 and (dataset / answer["file"]).is_file()
    code, raw, headers = daemon.request("GET", f"/api/dataset/image?file={answer['file']}&thumb=1")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and raw[:2] == b"\xff\xd8"
    assert daemon.request("GET", "/api/dataset/image?file=../bundle/manifest.json")[0] == 400

    # teach: runs in its own process, then the running daemon serves the new head with its new labels
    code, answer = daemon.post("/api/teach", {"force": False}, headers=same_origin)
    assert code == 200, answer
    assert answer["accepted"] and answer["revision"] == 1 and answer["labels"] == ["blue", "green", "red"]
    assert answer["accuracy_current"] == 0.0 and answer["accuracy_new"] >= 0.8  # new names: the old head knew none
    assert len(answer["confusion"]["matrix"]) == 3 and answer["heldout"] == answer["trained"] == 92
    status = daemon.status()
    assert status["head"]["revision"] == 1 and status["head"]["source"] == "taught"
    assert status["head"]["labels"] == ["blue", "green", "red"] and status["head"]["accuracy"] == answer["accuracy_new"]
    status = daemon.wait_for(lambda s: s["last_result"]["model"].endswith("+head1"))
    assert set(status["last_result"]["probabilities"]) == {"blue", "green", "red"}
    assert status["last_result"]["raw_label"] in ("blue", "green", "red")

    # undo goes back to the bundle's own head; nothing more to undo is 409
    assert daemon.post("/api/teach/undo", {}) == (200, {"revision": 0, "labels": ["paper", "rock", "scissors"]})
    daemon.wait_for(lambda s: s["last_result"]["model"] == "tiny:int8")
    code, answer = daemon.post("/api/teach/undo", {})
    assert code == 409 and "nothing to undo" in answer["error"]

    # a teach from the command line (over ssh, say) is picked up by the running daemon within seconds
    done = subprocess.run([sys.executable, "-m", "device", "teach", "--bundle", str(bundle), "--data", str(dataset),
                           "--threads", "1"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    daemon.wait_for(lambda s: s["head"]["revision"] == 2 and s["last_result"]["model"].endswith("+head2"))

    # the data set leaves the device as one tar (class folders and index; not the uncertain ring)
    code, raw, headers = daemon.request("GET", "/dataset.tar")
    assert code == 200 and headers["Content-Type"] == "application/x-tar"
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert "dataset/index.jsonl" in names and sum(n.startswith("dataset/red/") for n in names) == 32
    assert not any(".uncertain" in n for n in names)
    assert daemon.request("GET", "/dataset.tar", token=None)[0] == 401


# ---- issue 19 item 9: one error-to-status map -------------------------------------------------
@pytest.fixture()
def full_disk(tmp_path):
    """A real tmpfs (root only: skipped elsewhere) with bytes to spare but every inode taken, holding a data set
    with one class: the next file any writer creates fails with ENOSPC, as on a full SD card."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=64", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        dataset = mount / "dataset"
        (dataset / "red").mkdir(parents=True)
        (dataset / "index.jsonl").write_text("")
        filler = mount / "filler"
        filler.mkdir()
        for index in range(200):
            try:
                (filler / str(index)).touch()
            except OSError:
                break
        else:
            raise AssertionError("the tmpfs never ran out of inodes")
        yield dataset
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_errors_map_to_one_status_table_in_one_short_line(tmp_path_factory, tmp_path, full_disk):
    from bench.teach import light_copy
    from device.layout import acquire_lock

    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    images = teach_bundle.images_root(tmp_path_factory)
    daemon = DaemonProcess("--bundle", bundle, "--source", f"images:{images / 'test'}", "--http", "127.0.0.1:0",
                           "--token", TOKEN, "--max-fps", 20, "--threads", 1, "--emit", "off", "--dataset",
                           full_disk, "--min-free-mb", 0, "--capture-fps", 0)
    try:
        daemon.wait_for(lambda s: s["frames"] > 0)
        # disk full: 507 for a capture and for a new class, and the view's "recording stopped" field says why
        code, answer = daemon.post("/api/capture", {"label": "red"})
        assert code == 507 and answer["error"].startswith("recording stopped"), answer
        code, answer = daemon.post("/api/classes", {"name": "green"})
        assert code == 507 and answer["error"].startswith("recording stopped"), answer
        listing = json.loads(daemon.request("GET", "/api/dataset")[1])
        assert listing["recording_blocked"], listing
        # a file name longer than the file system allows is bad input
        code, answer = daemon.post("/api/dataset/delete", {"file": "red/" + "a" * 5000 + ".jpg"})
        assert code == 400, answer
        # 30,000 nested brackets: an answer, not a closed connection
        code, raw, _ = daemon.request("POST", "/api/classes", None, headers={"Content-Type": "application/json"},
                                      data=b"[" * 30000)
        assert code == 400 and "JSON" in json.loads(raw)["error"]
        # undo while another command holds the bundle's lock: 409, as /api/teach answers
        lock = acquire_lock(bundle)
        try:
            code, answer = daemon.post("/api/teach/undo", {})
            assert code == 409 and "another edgecam command" in answer["error"], answer
        finally:
            lock.close()
        for error in [answer["error"]] + [json.loads(daemon.request("POST", path, None, headers={
                "Content-Type": "application/json"}, data=body)[1])["error"]
                for path, body in [("/api/capture", b'{"label": "red"}'), ("/api/classes", b'{"name": "a\\nb"}')]]:
            assert "\n" not in error and str(tmp_path) not in error and len(error) <= 300, error
        assert "Traceback" not in "".join(daemon.lines)
    finally:
        daemon.stop()


def test_bulk_move_remove_restore_pages_and_classes_over_http(tmp_path_factory, tmp_path):
    """Issue 20 item 4: one request, one answer, atomic per frame, a bounded batch; paging the whole data set."""
    from bench.teach import light_copy

    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    images = teach_bundle.images_root(tmp_path_factory)
    dataset = tmp_path / "dataset"
    for label in ("paper", "rock"):
        shutil.copytree(images / "train" / label, dataset / label)
    daemon = DaemonProcess("--bundle", bundle, "--source", f"images:{images / 'test'}", "--http", "127.0.0.1:0",
                           "--token", TOKEN, "--max-fps", 5, "--threads", 1, "--emit", "off", "--dataset", dataset,
                           "--min-free-mb", 0)
    try:
        rock = sorted(f"rock/{path.name}" for path in (dataset / "rock").iterdir())
        pages = [json.loads(daemon.request("GET", f"/api/dataset/frames?label=rock&offset={offset}&limit=20")[1])
                 for offset in range(0, len(rock), 20)]
        assert sorted(sum((page["files"] for page in pages), [])) == rock and pages[0]["total"] == len(rock)
        assert daemon.request("GET", "/api/dataset/frames?label=rock&offset=x")[0] == 400

        code, answer = daemon.post("/api/dataset/move", {"files": rock[:5] + ["rock/gone.png"], "label": "paper"})
        assert code == 200 and len(answer["moved"]) == 5 and answer["failed"][0]["file"] == "rock/gone.png"
        assert all((dataset / item["to"]).is_file() and not (dataset / item["file"]).exists()
                   for item in answer["moved"])
        code, answer = daemon.post("/api/dataset/remove", {"files": rock[5:8]})
        assert code == 200 and answer["removed"] == rock[5:8] and answer["undo"]
        assert not any((dataset / name).exists() for name in rock[5:8])
        assert daemon.post("/api/dataset/restore", {"undo": answer["undo"]})[1]["restored"] == rock[5:8]
        assert all((dataset / name).is_file() for name in rock[5:8])
        code, answer = daemon.post("/api/dataset/remove", {"files": ["rock/x.png"] * 501})
        assert code == 400 and "at most 500" in answer["error"]

        assert daemon.post("/api/classes/rename", {"name": "rock", "to": "stone"}) == (200, {"name": "stone"})
        code, answer = daemon.post("/api/classes/delete", {"name": "stone"})
        assert code == 200 and not (dataset / "stone").exists()
        listing = json.loads(daemon.request("GET", "/api/dataset")[1])
        assert [c["name"] for c in listing["classes"]] == ["paper"]
        assert daemon.post("/api/dataset/restore", {"undo": answer["undo"]})[0] == 200
        assert len(list((dataset / "stone").iterdir())) == len(rock) - 5
    finally:
        daemon.stop()
