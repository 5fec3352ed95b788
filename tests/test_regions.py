"""Regions (issue 27): several boxes of one camera view, each read on its own with its own taught head.

Real files (the tiny bundle's PNG photos, pasted side by side into frames as a two-player camera would see them),
the real interpreter, the real `python -m device` processes (daemon, capture, teach, undo) and real files in the
state folder; nothing is faked."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import teach_bundle

REPO = Path(__file__).resolve().parent.parent
RECOLOUR = {"paper": "red", "rock": "green", "scissors": "blue"}  # the region's own classes (not the bundle's)


def device(*arguments, timeout=180):
    return subprocess.run([sys.executable, "-m", "device", *map(str, arguments)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False, env=dict(os.environ, PYTHONPATH=str(REPO)))


def results(done) -> list:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def photos(tmp_path_factory, split: str = "test") -> dict:
    root = teach_bundle.images_root(tmp_path_factory) / split
    return {label: sorted((root / label).glob("*.png")) for label in sorted(RECOLOUR)}


def side_by_side(left: Path, right: Path) -> np.ndarray:
    from PIL import Image

    return np.concatenate([np.asarray(Image.open(path).convert("RGB")) for path in (left, right)], axis=1)


def write_pairs(folder: Path, pairs) -> list:
    """Frames of two photos side by side -> [(file name, left truth, right truth)], in replay (name) order."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, ((left_label, left), (right_label, right)) in enumerate(pairs):
        name = f"{number:03d}.png"
        Image.fromarray(side_by_side(left, right)).save(folder / name)
        written.append((name, left_label, right_label))
    return written


@pytest.fixture()
def bundle_copy(tmp_path_factory, tmp_path):
    from bench.teach import light_copy

    return light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")


# ---- parsing and validation (pure) ------------------------------------------------------------------
def test_region_flags_parse_and_bad_ones_say_what_to_write(tmp_path):
    from device.regions import RegionError, check_unique, load_file, parse_reference, parse_region

    region = parse_region("door=0.1,0.2,0.3,0.5")
    assert (region.name, region.box) == ("door", (0.1, 0.2, 0.3, 0.5))
    assert parse_reference("door") == ("door", None)
    for text, words in (("door", "needs a box"), ("do or=0,0,1,1", "not allowed"), ("door=0,0,1", "4 numbers"),
                        ("door=a,0,1,1", "must be numbers"), ("door=0.6,0,0.5,1", "past the frame's edge"),
                        ("door=0,0,0,1", "more than 0"), ("door=nan,0,1,1", "not a number")):
        with pytest.raises(RegionError, match=words):
            parse_region(text)
    with pytest.raises(RegionError, match="more than once"):
        check_unique([region, region])
    settings = tmp_path / "regions.toml"
    settings.write_text('[regions.door]\nbox = [0.1, 0.2, 0.3, 0.5]\nrepeat = 3\n\n'
                        '[regions.drive]\nbox = [0.5, 0.5, 0.5, 0.5]\nthreshold = 0.8\n')
    door, drive = load_file(settings)
    assert (door.name, door.repeat, drive.name, drive.threshold) == ("door", 3, "drive", 0.8)
    settings.write_text('[regions.door]\nbox = [0.1, 0.2, 0.3]\n')
    with pytest.raises(RegionError, match="4 numbers"):
        load_file(settings)
    settings.write_text('[regions.door]\nbox = [0, 0, 1, 1]\ncolour = "red"\n')
    with pytest.raises(RegionError, match="unknown key"):
        load_file(settings)
    settings.write_text('[regions.door\n')
    with pytest.raises(RegionError, match="not valid TOML"):
        load_file(settings)


def test_a_bad_region_flag_exits_2_with_one_line(tmp_path):
    done = device("--bundle", tmp_path, "--region", "door=0.6,0,0.5,1", timeout=60)
    assert done.returncode == 2
    assert "past the frame's edge" in done.stderr and "Traceback" not in done.stderr


def test_crop_is_a_view_with_whole_pixels_and_the_state_file_round_trips(tmp_path):
    from device.regions import load_state, make_region, save_state

    frame = np.zeros((150, 300, 3), np.uint8)
    left, right = make_region("left", [0, 0, 0.5, 1]), make_region("right", [0.5, 0, 0.5, 1])
    assert left.crop(frame).shape == right.crop(frame).shape == (150, 150, 3)
    assert np.shares_memory(left.crop(frame), frame)  # a view: no copy of the frame per region
    save_state(tmp_path, [left, make_region("right", [0.5, 0, 0.5, 1], smoothing=3, threshold=0.7, repeat=2)])
    loaded = load_state(tmp_path)
    assert [r.describe() for r in loaded] == [left.describe(), {"name": "right", "box": [0.5, 0, 0.5, 1],
                                                                 "repeat": 2, "smoothing": 3, "threshold": 0.7}]


def test_the_same_result_n_times_in_a_row_rule():
    from device.regions.serve import Steady

    steady = Steady(3)
    assert [steady.update(label) for label in ["open", "open", "shut", "open", "open", "open", "shut", "shut"]] == \
        ["unknown", "unknown", "unknown", "unknown", "unknown", "open", "open", "open"]
    assert [Steady(1).update(label) for label in ["a", "b"]] == ["a", "b"]


def test_change_mode_follows_each_region_on_its_own():
    from device.outputs.base import Emitter

    emitter = Emitter("change")
    lines = [{"region": "left", "label": "rock"}, {"region": "right", "label": "paper"},
             {"region": "left", "label": "rock"}, {"region": "right", "label": "paper"},
             {"region": "left", "label": "paper"}]
    assert [emitter.wants(line) for line in lines] == [True, True, False, False, True]


# ---- a crop equal to a photo reads as that photo --------------------------------------------------
def test_a_crop_equal_to_a_photo_classifies_as_that_photo(tmp_path_factory):
    from device.regions import make_region
    from device.regions.serve import RegionReader, load_heads
    from device.sources import ImagesSource
    from device.teach.teaching import load_classifier_any

    bundle = teach_bundle.shared_teach_bundle(tmp_path_factory)
    classifier = load_classifier_any(bundle, "int8", threads=1, state_dir=tmp_path_factory.mktemp("empty-state"))
    regions = [make_region("left", [0, 0, 0.5, 1]), make_region("right", [0.5, 0, 0.5, 1])]
    reader = RegionReader(classifier, load_heads(classifier, regions, bundle, None, 1, 0.0))
    found = photos(tmp_path_factory)
    decoder = ImagesSource(paths=[path for paths in found.values() for path in paths], loop=False)
    decoder.open()
    for left, right in [(found["paper"][0], found["rock"][1]), (found["scissors"][2], found["paper"][3])]:
        frame = np.concatenate([decoder.decode(left), decoder.decode(right)], axis=1)  # the real files' pixels
        read = reader.probabilities(frame)
        for photo, probabilities in zip((left, right), read):
            alone = classifier.probabilities(decoder.decode(photo))
            np.testing.assert_array_equal(probabilities, alone)
        by_region = {result["region"]: result for result in reader.process(frame)}
        assert by_region["left"]["label"] == classifier.labels[int(classifier.probabilities(decoder.decode(left)).argmax())]


# ---- the interface the checks use ---------------------------------------------------------------
def test_one_line_per_region_per_frame_and_nothing_changes_without_region(tmp_path, tmp_path_factory):
    found = photos(tmp_path_factory)
    frames = write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0])),
                                               (("scissors", found["scissors"][0]), ("paper", found["paper"][1]))])
    bundle = teach_bundle.shared_teach_bundle(tmp_path_factory)
    common = ("--bundle", bundle, "--source", f"images:{tmp_path / 'frames'}", "--once", "--http", "off",
              "--smoothing", "1", "--threshold", "0", "--max-fps", "0", "--emit", "every", "--threads", "1",
              "--state-dir", tmp_path / "state", "--tune-seconds", "0")
    done = device(*common, "--region", "left=0,0,0.5,1", "--region", "right=0.5,0,0.5,1")
    assert done.returncode == 0, done.stderr
    lines = results(done)
    assert [(line["frame"], line["region"]) for line in lines] == [(1, "left"), (1, "right"), (2, "left"),
                                                                    (2, "right")]
    assert all(line["item"].endswith(frames[line["frame"] - 1][0]) and line["label"] for line in lines)
    whole = results(device(*common))
    assert len(whole) == 2 and all("region" not in line for line in whole)


def test_capture_teach_and_serve_a_region_then_undo(tmp_path, tmp_path_factory, bundle_copy):
    """The checks' interface: capture 20 frames a class for region left, teach it, serve it to left only."""
    train = photos(tmp_path_factory, "train")
    dataset, state = tmp_path / "dataset", tmp_path / "state"
    for label in sorted(RECOLOUR):
        others = [path for other in sorted(RECOLOUR) if other != label for path in train[other]]
        write_pairs(tmp_path / f"capture-{label}", [((label, left), ("x", right))
                                                     for left, right in zip(train[label][:20], others)])
        done = device("capture", "--bundle", bundle_copy, "--source", f"images:{tmp_path / f'capture-{label}'}",
                      "--region", "left=0,0,0.5,1", "--label", RECOLOUR[label], "--count", 20, "--interval", 0.02,
                      "--dataset", dataset)
        assert done.returncode == 0, done.stderr
        assert [line["count"] for line in results(done)][-1] == 20
    assert not any(path.is_dir() and not path.name.startswith(".") for path in dataset.iterdir())  # no class folders
    done = device("teach", "--bundle", bundle_copy, "--region", "left=0,0,0.5,1", "--data", dataset,
                  "--state-dir", state, "--threads", 1, "--json")
    taught = json.loads(done.stdout)
    assert done.returncode == 0 and taught["accepted"] and taught["frames"] == 60, done.stderr
    assert (state / "models").glob("*/heads/regions/left/current.json")

    test = photos(tmp_path_factory)
    pairs = [((label, test[label][i]), (other, test[other][i])) for i in range(4)
             for label, other in (("paper", "rock"), ("rock", "scissors"), ("scissors", "paper"))]
    frames = write_pairs(tmp_path / "frames", pairs)
    serve = ("--bundle", bundle_copy, "--source", f"images:{tmp_path / 'frames'}", "--once", "--http", "off",
             "--smoothing", "1", "--threshold", "0", "--max-fps", "0", "--emit", "every", "--threads", "1",
             "--tune-seconds", "0", "--region", "left=0,0,0.5,1", "--region", "right=0.5,0,0.5,1",
             "--state-dir", state)
    lines = results(device(*serve))
    left = [line for line in lines if line["region"] == "left"]
    right = [line for line in lines if line["region"] == "right"]
    assert len(left) == len(right) == len(frames)
    assert {line["label"] for line in left} <= set(RECOLOUR.values())  # the region's own head and classes
    assert {line["label"] for line in right} <= set(RECOLOUR)  # the untaught region: the bundle's head
    correct = sum(line["label"] == RECOLOUR[frames[line["frame"] - 1][1]] for line in left)
    assert correct >= 0.9 * len(left)

    done = device("undo", "--bundle", bundle_copy, "--region", "left", "--state-dir", state, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["revision"] == 0, done.stderr
    lines = results(device(*serve))
    assert {line["label"] for line in lines} <= set(RECOLOUR)


def test_a_region_moved_in_the_state_folder_is_read_without_a_restart(tmp_path, tmp_path_factory):
    from device.regions import make_region, save_state

    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0]))])
    state = tmp_path / "state"
    save_state(state, [make_region("left", [0, 0, 0.5, 1])])
    process = subprocess.Popen(
        [sys.executable, "-m", "device", "--bundle", str(teach_bundle.shared_teach_bundle(tmp_path_factory)),
         "--source", f"images:{tmp_path / 'frames'}", "--http", "off", "--max-fps", "20", "--threads", "1",
         "--tune-seconds", "0", "--state-dir", str(state)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    seen: list = []
    reader = threading.Thread(target=lambda: seen.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any('"region":"left"' in line for line in seen):
            time.sleep(0.05)
        assert any('"region":"left"' in line for line in seen)
        save_state(state, [make_region("door", [0.5, 0, 0.5, 1])])
        while time.monotonic() < deadline and not any('"region":"door"' in line for line in seen):
            time.sleep(0.05)
        assert any('"region":"door"' in line for line in seen)
        assert process.poll() is None  # the same process: no restart
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_bench_measures_1_2_and_4_regions_beside_raw_invokes(tmp_path_factory):
    """The make bench rows' measurement (timings are not asserted: shared build machine)."""
    from bench.regions import measure_cost

    cost = measure_cost(teach_bundle.shared_teach_bundle(tmp_path_factory), threads=1, repetitions=5)
    assert sorted(cost) == [1, 2, 4]
    assert all(entry[key] > 0 for entry in cost.values() for key in ("regions_ms", "raw_ms", "batch_ms"))


def test_evaluate_a_region_scores_its_labelled_crops(tmp_path, tmp_path_factory, bundle_copy):
    from device.regions import make_region
    from device.teach import regionlabels
    from device.teach.dataset import Dataset

    train = photos(tmp_path_factory, "train")
    dataset = Dataset(tmp_path / "dataset", min_free_bytes=0)
    left = make_region("left", [0, 0, 0.5, 1])
    for label in sorted(RECOLOUR):
        for photo in train[label][:3]:
            regionlabels.save(dataset, side_by_side(photo, train["rock"][0]), {"left": label}, {"left": left.box})
    assert regionlabels.counts(dataset.root, "left") == {"paper": 3, "rock": 3, "scissors": 3}
    done = device("evaluate", "--bundle", bundle_copy, "--data", dataset.root, "--region", "left=0,0,0.5,1",
                  "--out", tmp_path / "report", "--threads", 1)
    assert done.returncode == 0, done.stderr
    assert "9 images from" in done.stdout  # the region's labelled crops (the data set has no class folders)


def test_regions_over_http_set_capture_teach_undo_status_and_metrics(tmp_path, tmp_path_factory, bundle_copy):
    """The Teach API for regions on a real daemon (HTTP on loopback): a box set by POST /api/regions is served
    without a restart; its crop, a capture, a teach and an undo per region; /status and /metrics per region."""
    import urllib.error
    import urllib.request

    from outputs_helpers import Daemon

    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0]))])
    daemon = Daemon("--bundle", bundle_copy, "--source", f"images:{tmp_path / 'frames'}", "--max-fps", "10",
                    "--state-dir", tmp_path / "state", "--dataset", tmp_path / "dataset", "--tune-seconds", "0",
                    "--capture-fps", "0", "--emit", "off")
    base = f"http://127.0.0.1:{daemon.port}"

    def post(path, body):
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        daemon.wait_status(lambda status: status["frames"] > 0, 60)
        code, answer = post("/api/regions", {"regions": [{"name": "left", "box": [0.6, 0, 0.5, 1]}]})
        assert code == 400 and "past the frame's edge" in answer["error"]
        code, _ = post("/api/regions", {"regions": [{"name": "left", "box": [0, 0, 0.5, 1], "repeat": 1},
                                                    {"name": "right", "box": [0.5, 0, 0.5, 1]}]})
        assert code == 200
        status = daemon.wait_status(lambda s: [r["name"] for r in s.get("regions", [])] == ["left", "right"]
                                    and all(r["last_result"] for r in s["regions"]))
        assert [r["last_result"]["label"] for r in status["regions"]] == ["paper", "rock"]
        with urllib.request.urlopen(base + "/api/regions/crop?region=left", timeout=10) as response:
            from PIL import Image

            crop = Image.open(io.BytesIO(response.read()))
        assert crop.size == (40, 40)  # the left half of the 80x40 frame
        for label in ("red", "green"):
            for _ in range(3):
                code, answer = post("/api/regions/capture", {"region": "left", "label": label})
                assert code == 200, answer
        code, answer = post("/api/regions/teach", {"region": "left", "force": True})
        assert code == 200 and answer["accepted"] and answer["frames"] == 6, answer
        daemon.wait_status(lambda s: s["regions"][0]["head"]["revision"] == 1 and
                           s["regions"][0]["last_result"]["label"] in ("red", "green"))
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'edgecam_region_head_revision{region="left"} 1' in metrics
        assert 'edgecam_region_label{region="right",label="rock"} 1' in metrics
        code, answer = post("/api/regions/undo", {"region": "left"})
        assert code == 200 and answer["revision"] == 0
        status = daemon.wait_status(lambda s: s["regions"][0]["head"]["revision"] == 0)
        assert status["pid"] == daemon.process.pid  # every change without a restart
        code, answer = post("/api/regions/undo", {"region": "nowhere"})
        assert code == 404 and "no region 'nowhere'" in answer["error"]
    finally:
        daemon.kill()


def test_the_regions_command_sets_moves_and_removes_boxes_in_the_state_folder(tmp_path):
    from device.regions import load_state

    state = tmp_path / "state"
    done = device("regions", "--state-dir", state, "--set", "door=0.1,0.2,0.3,0.5", "--set", "drive=0,0.5,1,0.5",
                  "--repeat", 3, timeout=60)
    assert done.returncode == 0, done.stderr
    done = device("regions", "--state-dir", state, "--set", "door=0.2,0.2,0.3,0.5", "--remove", "drive", "--json",
                  timeout=60)
    assert json.loads(done.stdout)["regions"] == [{"name": "door", "box": [0.2, 0.2, 0.3, 0.5], "repeat": 3}]
    assert [region.describe() for region in load_state(state)] == json.loads(done.stdout)["regions"]
    done = device("regions", "--state-dir", state, "--remove", "nope", timeout=60)
    assert done.returncode == 2 and "no such region" in done.stderr


def test_the_fleet_probe_reports_each_regions_box_and_head(tmp_path, tmp_path_factory):
    """deploy/ansible/probe.py (run on each device by the fleet playbook) against a real daemon with two regions."""
    from outputs_helpers import Daemon

    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0]))])
    daemon = Daemon("--bundle", teach_bundle.shared_teach_bundle(tmp_path_factory), "--source",
                    f"images:{tmp_path / 'frames'}", "--max-fps", "10", "--tune-seconds", "0", "--emit", "off",
                    "--region", "left=0,0,0.5,1", "--region", "right=0.5,0,0.5,1")
    try:
        daemon.wait_status(lambda status: status["frames"] > 0, 60)
        done = subprocess.run([sys.executable, str(REPO / "deploy" / "ansible" / "probe.py"), "--base", str(tmp_path),
                               "--http", f"127.0.0.1:{daemon.port}"], capture_output=True, text=True, timeout=60,
                              check=True)
        assert json.loads(done.stdout)["regions"] == [{"name": "left", "box": [0, 0, 0.5, 1], "revision": 0},
                                                      {"name": "right", "box": [0.5, 0, 0.5, 1], "revision": 0}]
    finally:
        daemon.kill()


def test_the_webhook_posts_each_regions_changes(tmp_path, tmp_path_factory):
    """A real HTTP server receives the daemon's webhook (--webhook-emit change, the default): one POST per region
    whose label changed, none for a region that stayed the same."""
    import http.server

    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0])),
                                      (("rock", found["rock"][1]), ("rock", found["rock"][2]))])
    posts = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = device("--bundle", teach_bundle.shared_teach_bundle(tmp_path_factory), "--source",
                      f"images:{tmp_path / 'frames'}", "--once", "--http", "off", "--smoothing", "1", "--threshold",
                      "0", "--max-fps", "0", "--emit", "off", "--threads", "1", "--tune-seconds", "0",
                      "--webhook", f"http://127.0.0.1:{server.server_port}/hook",
                      "--region", "left=0,0,0.5,1", "--region", "right=0.5,0,0.5,1")
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
    assert sorted((post["frame"], post["region"], post["label"]) for post in posts) == \
        [(1, "left", "paper"), (1, "right", "rock"), (2, "left", "rock")]
