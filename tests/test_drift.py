"""Drift (device/drift.py) on real frames: real PNG files decoded by the device's image source, embedded by the
real int8 interpreter through the daemon's own Classifier, a reference written by the real convert (the bundle's
held-out images) or by a real teach (the frames a head was fitted on). The window replay uses the pure Monitor
(one frame a "second", every frame counted) so that thousands of frames take well under a second; the daemon
test runs the real process. Nothing is faked."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import device_bundle
import numpy as np
import pytest
from test_device_daemon import DaemonProcess
from test_kiosk_browser import browser  # noqa: F401 - the shared Chromium fixture

from bench.drift import embed_folder, false_alarms, replay
from device import drift
from device.daemon import Daemon, Options

WINDOW = 300


@pytest.fixture(scope="module")
def drift_bundle(bundle, tmp_path_factory) -> Path:
    """The device tests' bundle converted by the real convert_bundle with parity measured: its tflite/drift.npz
    is the bundle's own head's reference, from its 24 held-out images."""
    from convert.api import convert_bundle
    from convert.parity import Thresholds

    out = tmp_path_factory.mktemp("drift-bundle") / "tiny"
    shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("data", "tflite"))
    lenient = Thresholds(max_drop_bound={"int8": 100.0})  # 24 held-out images cannot bound a drop to 3 points
    report = convert_bundle(out, formats="int8", calibration_dir=bundle / "data" / "train", thresholds=lenient,
                            progress=False, log=lambda message: None)
    assert report.passed, report.models[0].failures  # a failed parity gate rolls the conversion back
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """Class folders of frames: the taught scene (new frames, other seeds), the same shapes under another
    background and light, and another scene altogether (train.datagen's camera-style hands, same classes)."""
    from train.datagen import generate_dataset

    root = tmp_path_factory.mktemp("drift-scenes")
    for seed in (100, 101):
        device_bundle.draw_images(root / f"domain-{seed}", 25, seed)
    device_bundle.draw_images(root / "dim", 25, 200, background=(10, 50), light=(1.25, 0.9, 0.55))
    generate_dataset(root / "hands", train_per_class=25, test_per_class=1, size=40, seed=3, progress=False,
                     style="camera")
    return {"domain": [root / "domain-100", root / "domain-101"], "dim": root / "dim", "hands": root / "hands" / "train"}


def classifier_of(bundle, state_dir=None):
    """The classifier the daemon builds (its head, its drift monitor), without starting anything."""
    daemon = Daemon(Options(bundle=str(bundle), model="int8", source="images:unused", threads=1, http="off",
                            state_dir=str(state_dir) if state_dir else None, drift_window_frames=WINDOW,
                            drift_window_seconds=0.0))
    return daemon.load()


def test_the_bundle_head_reference_is_recorded_by_convert(drift_bundle):
    from device.manifest import load_manifest, sha256_file

    manifest = load_manifest(drift_bundle)
    assert manifest.embedding.drift_file == drift.BUNDLE_REFERENCE_FILE
    assert manifest.embedding.drift_sha256 == sha256_file(drift_bundle / drift.BUNDLE_REFERENCE_FILE)
    reference = drift.load(drift_bundle / drift.BUNDLE_REFERENCE_FILE, "int8")
    assert reference.frames == 24 and reference.means.shape == (3, manifest.embedding.size)
    assert "held-out" in reference.source and np.all(np.diff(reference.distances) >= 0)
    from deploy.bundle import bundle_entries

    shipped = [name for name, _source in bundle_entries(drift_bundle, None)[2]]
    assert f"bundle/{drift.BUNDLE_REFERENCE_FILE}" in shipped  # the device archive carries it
    probe = reference.means[1] + np.linspace(-1, 1, reference.means.shape[1], dtype=np.float32)
    assert drift.nearest_distance(reference, probe) == pytest.approx(
        float(np.min(np.linalg.norm(reference.means - probe, axis=1))), rel=1e-4)


def test_in_domain_frames_raise_no_alarm_over_2000_frames_across_seeds(drift_bundle, scenes):
    classifier = classifier_of(drift_bundle)
    reference = classifier.drift.reference
    assert reference is not None, classifier.drift.note
    for folder in scenes["domain"]:
        embeddings, confidences, _ = embed_folder(classifier, folder)
        for seed in range(3):
            alarms, not_ok = false_alarms(reference, embeddings, confidences, 2000, seed, WINDOW)
            assert (alarms, not_ok) == (0, 0), f"{folder.name}, seed {seed}"


def test_another_scene_drifts_within_the_window_and_teaching_on_it_brings_ok_back(drift_bundle, scenes, tmp_path,
                                                                                  bundle):
    from device.teach.teaching import teach

    classifier = classifier_of(drift_bundle)
    domain = embed_folder(classifier, scenes["domain"][0])[:2]
    rng = np.random.default_rng(0)
    for name in ("dim", "hands"):
        shifted = embed_folder(classifier, scenes[name])[:2]
        monitor = drift.Monitor(classifier.drift.reference, WINDOW, 0.0)
        assert set(replay(monitor, *domain, rng.integers(0, len(domain[0]), WINDOW))) == {"ok"}
        states = replay(monitor, *shifted, rng.integers(0, len(shifted[0]), WINDOW), start=WINDOW)
        assert "drifted" in states, f"{name}: {monitor.describe()}"
        assert "frames are far from anything taught; since" in monitor.reason()
        assert states[: int(WINDOW * drift.WATCH_FAR) - 1] == ["ok"] * (int(WINDOW * drift.WATCH_FAR) - 1)

    data = tmp_path / "data"  # the taught scene's frames and both new scenes', by class
    for folder in (bundle / "data" / "train", scenes["dim"], scenes["hands"]):
        for image in folder.glob("*/*.png"):
            (data / image.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, data / image.parent.name / f"{folder.parent.name}-{folder.name}-{image.name}")
    state = tmp_path / "state"
    result = teach(drift_bundle, data, state_dir=state, force=True)
    assert result["accepted"], result
    taught = classifier_of(drift_bundle, state)
    assert taught.head is not None and "fitted on" in taught.drift.reference.source
    for name in ("dim", "hands"):
        shifted = embed_folder(taught, scenes[name])[:2]
        monitor = drift.Monitor(taught.drift.reference, WINDOW, 0.0)
        assert set(replay(monitor, *shifted, rng.integers(0, len(shifted[0]), 2 * WINDOW))) == {"ok"}, name
        assert monitor.describe()["score"] < drift.WATCH_FAR


def test_one_odd_frame_never_flaps_the_state(drift_bundle, scenes):
    classifier = classifier_of(drift_bundle)
    domain = embed_folder(classifier, scenes["domain"][0])[:2]
    odd = embed_folder(classifier, scenes["hands"])[:2]
    monitor = drift.Monitor(classifier.drift.reference, 100, 0.0)
    states = []
    for second in range(1000):  # every 10th frame from another scene: 10% far, under the watch level
        embeddings, confidences = odd if second % 10 == 0 else domain
        index = second % len(embeddings)
        monitor.observe(embeddings[index], confidences[index], now=float(second))
        states.append(monitor.state)
    assert set(states) == {"ok"}


def test_daemon_status_metrics_and_the_window_flags(drift_bundle, scenes, tmp_path):
    """The real daemon on frames of another scene: /status drift goes to drifted within the window the flags
    set, /metrics has the gauges, the daily history is written at exit; a bad flag exits 2."""
    state = tmp_path / "state"
    daemon = DaemonProcess("--bundle", drift_bundle, "--source", f"images:{scenes['hands']}", "--max-fps", "0",
                           "--state-dir", state, "--drift-window-frames", "60", "--drift-window-seconds", "0")
    try:
        status = daemon.wait_status(lambda s: (s.get("drift") or {}).get("state") == "drifted", timeout=60)
        report = status["drift"]
        assert report["state"] in ("ok", "watch", "drifted") and report["window"]["max_frames"] == 60
        assert report["measured"] and report["score"] >= drift.DRIFTED_FAR and report["since"] > 0
        assert "far from anything taught; since" in report["reason"]
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "edgecam_drift_state 2" in metrics and "edgecam_drift_score " in metrics
        code, _seconds = daemon.terminate()
        assert code == 0
    finally:
        daemon.kill()
    history = json.loads((state / drift.HISTORY_FILE).read_text())["days"]
    (entry,) = [scopes["frame"] for scopes in history.values()]
    assert entry["worst"] == "drifted" and entry["first_drifted"] and entry["far_frames"] > 0
    bad = DaemonProcess("--bundle", drift_bundle, "--source", f"images:{scenes['hands']}",
                        "--drift-window-frames", "0", http=False)
    assert bad.exit_code() == 2 and "--drift-window-frames" in "".join(bad.stderr_lines)


def test_the_uncertain_ring_keeps_the_highest_drift_first(tmp_path):
    from device.teach.dataset import Dataset

    dataset = Dataset(tmp_path / "data", keep_uncertain=3)
    frame = np.full((40, 40, 3), 90, np.uint8)
    kept = {score: dataset.keep(frame, "rock", 0.4, drift=score) for score in (5.0, 0.2, 3.0, 2.0, 0.1)}
    listed = dataset.uncertain()
    assert [entry["drift"] for entry in listed] == [5.0, 3.0, 2.0]
    assert kept[0.2] not in {entry["id"] for entry in listed} and kept[0.1] is None
    assert sorted(path.name for path in (tmp_path / "data" / ".uncertain").glob("*.jpg")) == sorted(
        entry["id"] for entry in listed)


def test_the_teach_view_says_needs_teaching_and_lists_the_far_frames(browser, drift_bundle, scenes,  # noqa: F811
                                                                   tmp_path):
    """The Teach view in a real Chromium against the real daemon on another scene: the banner says it needs
    teaching and why, and the Unsure tab holds the frames far from anything taught (kept for their drift
    although --threshold 0 never makes a reading unsure)."""
    import test_kiosk_browser

    daemon = test_kiosk_browser.DaemonProcess(
        drift_bundle, scenes["hands"], tmp_path / "daemon.log", "--max-fps", "0", "--drift-window-frames", "40",
        "--drift-window-seconds", "0", "--dataset", str(tmp_path / "dataset"), "--keep-uncertain", "5").start()
    context = browser.new_context(viewport={"width": 800, "height": 480})
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(daemon.base + "/teach", wait_until="domcontentloaded")
        banner = page.get_by_test_id("banner")
        banner.wait_for(state="visible", timeout=30_000)
        page.wait_for_function("document.querySelector('[data-testid=banner]').textContent.includes('Needs "
                               "teaching')", timeout=30_000)
        assert "far from anything taught; since" in banner.inner_text()
        page.get_by_test_id("tab-uncertain").click()
        item = page.get_by_test_id("uncertain-item").first
        item.wait_for(state="visible", timeout=30_000)
        assert "far from anything taught" in item.inner_text()
        assert errors == []
    finally:
        context.close()
        daemon.stop()


def test_the_daily_history_keeps_a_week_in_a_few_kilobytes(drift_bundle, scenes, tmp_path):
    classifier = classifier_of(drift_bundle)
    embeddings, confidences, _ = embed_folder(classifier, scenes["hands"])
    monitor = drift.Monitor(classifier.drift.reference, 60, 0.0, scope="frame")
    history = drift.History(tmp_path / drift.HISTORY_FILE)
    start = 1_780_000_000.0
    for day in range(12):
        for second in range(100):
            now = start + day * 86_400 + second
            monitor.observe(embeddings[second % len(embeddings)], confidences[second % len(embeddings)], now)
        history.record(monitor, now)
        history.flush(force=True)
    path = tmp_path / drift.HISTORY_FILE
    days = json.loads(path.read_text())["days"]
    assert len(days) == drift.HISTORY_DAYS and path.stat().st_size < 4000
    newest = days[max(days)]["frame"]
    assert newest["frames"] == 100 and newest["far_frames"] == 100 and newest["worst"] == "drifted"
    assert [path.name for path in tmp_path.iterdir()] == [drift.HISTORY_FILE]  # one file, no temporaries left


@pytest.fixture(scope="module")
def halves(scenes, tmp_path_factory) -> Path:
    """80x40 frames made of two real images side by side: the left half a frame of the taught scene, the right
    half one of another scene (train.datagen's camera-style hands), as a two-region camera would see them; each
    file named NUMBER-CLASS.png after the right half's class."""
    from PIL import Image

    out = tmp_path_factory.mktemp("drift-halves")
    taught = sorted(scenes["domain"][0].glob("*/*.png"))
    other = sorted(scenes["hands"].glob("*/*.png"))
    for index, (left, right) in enumerate(zip(taught, other)):
        frame = Image.new("RGB", (2 * device_bundle.IMAGE_SIZE, device_bundle.IMAGE_SIZE))  # 80x40
        frame.paste(Image.open(left).convert("RGB"), (0, 0))
        size = device_bundle.IMAGE_SIZE
        frame.paste(Image.open(right).convert("RGB").resize((size, size)), (size, 0))
        frame.save(out / f"{index:03d}-{right.parent.name}.png")
    return out


def test_each_region_has_its_own_drift(drift_bundle, halves, tmp_path):
    """The real daemon with two regions on frames whose right half is another scene: /status regions[i].drift
    says the right region drifted while the left stays ok over its whole window, /metrics has a series per
    region, the top-level drift is the worst region's, the change is logged. Teaching the right region on those
    frames (a real teach into the daemon's state folder) brings its own reference (its revision's) and ok back,
    while the left region's window goes on.
    The daily history and `python -m device status` have one entry per region."""
    import subprocess
    import sys

    from PIL import Image

    from device.regions import make_region
    from device.teach import regionlabels
    from device.teach.dataset import Dataset
    from device.teach.teaching import teach

    state = tmp_path / "state"
    daemon = DaemonProcess("--bundle", drift_bundle, "--source", f"images:{halves}", "--max-fps", "0",
                           "--state-dir", state, "--region", "left=0,0,0.5,1", "--region", "right=0.5,0,0.5,1",
                           "--drift-window-frames", "60", "--drift-window-seconds", "0")
    left_states = set()

    def decided(status) -> bool:
        regions = {entry["name"]: entry.get("drift") or {} for entry in status.get("regions") or []}
        left, right = regions.get("left", {}), regions.get("right", {})
        if (left.get("window") or {}).get("frames", 0) >= drift.MIN_FRAMES:
            left_states.add(left["state"])
        return right.get("state") == "drifted" and (left.get("window") or {}).get("frames") == 60

    try:
        status = daemon.wait_status(decided, timeout=60)
        left, right = (entry["drift"] for entry in status["regions"])
        assert right["measured"] and right["score"] >= drift.DRIFTED_FAR and right["window"]["max_frames"] == 60
        assert "far from anything taught; since" in right["reason"]
        assert left["measured"] and left["state"] == "ok" and left_states == {"ok"}, left
        assert left["score"] < drift.WATCH_FAR and "matches what was taught" in left["reason"]
        assert left["reference"] == right["reference"] and "held-out" in left["reference"]  # untaught: the bundle's
        worst = status["drift"]  # the top level (Home Assistant, the Teach view's banner): the worst region's
        assert worst["state"] == "drifted" and worst["region"] == "right"
        assert worst["reason"].startswith("region right:")
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'edgecam_region_drift_state{region="right"} 2' in metrics
        assert 'edgecam_region_drift_state{region="left"} 0' in metrics

        dataset = Dataset(tmp_path / "dataset", min_free_bytes=0)
        right_box = make_region("right", [0.5, 0, 0.5, 1])
        for path in sorted(halves.glob("*.png")):
            label = path.stem.split("-", 1)[1]
            regionlabels.save(dataset, np.asarray(Image.open(path).convert("RGB")), {"right": label},
                              {"right": right_box.box})
        taught = teach(drift_bundle, dataset.root, state_dir=state, force=True, region=right_box, threads=1)
        assert taught["accepted"], taught
        left_frames = left["frames"]
        status = daemon.wait_status(lambda s: "fitted on" in (s["regions"][1]["drift"]["reference"] or "") and
                                    s["regions"][1]["drift"]["window"]["frames"] >= drift.MIN_FRAMES, timeout=60)
        left, right = (entry["drift"] for entry in status["regions"])
        assert right["state"] == "ok" and right["score"] < drift.WATCH_FAR, right
        assert status["drift"]["state"] == "ok"
        assert left["state"] == "ok" and left["frames"] > left_frames + drift.MIN_FRAMES  # not reset by the reload
        code, _seconds = daemon.terminate()
        assert code == 0
    finally:
        daemon.kill()
    assert any("drift in region right: drifted" in line for line in daemon.stderr_lines)
    assert not any("drift in region left" in line for line in daemon.stderr_lines)
    (day,) = json.loads((state / drift.HISTORY_FILE).read_text())["days"].values()
    assert day["region right"]["worst"] == "drifted" and day["region right"]["first_drifted"]
    assert day["region left"]["worst"] == "ok" and day["region left"]["frames"] >= 60
    printed = subprocess.run([sys.executable, "-m", "device", "status", "--bundle", str(drift_bundle), "--state-dir",
                              str(state), "--region", "right"], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parent.parent)
    assert printed.returncode == 0, printed.stderr
    assert "region right: worst drifted" in printed.stdout and "region left" not in printed.stdout
