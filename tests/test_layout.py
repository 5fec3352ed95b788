"""device/layout.py: the bundle's vocabulary and staged writes (real files, real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device import layout


def _bundle(path: Path) -> Path:
    (path / layout.TFLITE_DIR).mkdir(parents=True)
    (path / layout.MANIFEST).write_text("old manifest")
    (path / layout.TFLITE_DIR / layout.model_filename("int8")).write_bytes(b"old model")
    return path


def test_commit_swaps_in_the_new_version_and_leaves_nothing_behind(tmp_path):
    bundle = _bundle(tmp_path / "rps")
    with layout.Stage(bundle) as staging:
        assert staging != bundle and staging.parent == bundle.parent
        assert (staging / layout.MANIFEST).read_text() == "old manifest"  # starts as a copy
        target = staging / layout.MANIFEST
        target.unlink()  # replace, never modify in place: the file is hard-linked with the live bundle
        target.write_text("new manifest")
        assert (bundle / layout.MANIFEST).read_text() == "old manifest"  # live bundle untouched meanwhile
    assert (bundle / layout.MANIFEST).read_text() == "new manifest"
    assert (bundle / layout.TFLITE_DIR / "model_int8.tflite").read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["rps"]


def test_failure_keeps_the_bundle_and_the_failed_try_beside_it(tmp_path):
    bundle = _bundle(tmp_path / "rps")
    stage = layout.Stage(bundle)
    with pytest.raises(RuntimeError, match="parity"):
        with stage as staging:
            (staging / "tflite" / "model_int8.tflite").unlink()
            (staging / "tflite" / "model_int8.tflite").write_bytes(b"broken model")
            raise RuntimeError("parity lost")
    assert (bundle / "tflite" / "model_int8.tflite").read_bytes() == b"old model"
    assert stage.failed is not None and stage.failed.name.startswith("rps.failed-")
    assert (stage.failed / "tflite" / "model_int8.tflite").read_bytes() == b"broken model"
    assert list(layout.iter_failed(bundle)) == [stage.failed]


def test_start_empty_and_a_new_bundle(tmp_path):
    bundle = _bundle(tmp_path / "rps")
    with layout.Stage(bundle, start_empty=True) as staging:
        assert list(staging.iterdir()) == []
        (staging / layout.MANIFEST).write_text("fresh")
    assert [p.name for p in bundle.iterdir()] == [layout.MANIFEST]
    with layout.Stage(tmp_path / "new") as staging:
        (staging / layout.MANIFEST).write_text("first")
    assert (tmp_path / "new" / layout.MANIFEST).read_text() == "first"


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    bundle = _bundle(tmp_path / "rps")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from device.layout import Stage; s = Stage(sys.argv[1]); "
         "s.open(); print('locked', flush=True); time.sleep(30)", str(bundle)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(layout.StageError, match="being written by another edgecam command"):
            layout.Stage(bundle).open()
    finally:
        holder.kill()
        holder.wait()
    # The killed writer left its staging folder: the next writer clears it and goes on.
    assert layout.staging_path(bundle).exists()
    with layout.Stage(bundle) as staging:
        (staging / "extra").write_text("x")
    assert (bundle / "extra").is_file() and not layout.staging_path(bundle).exists()


def test_vocabulary():
    assert layout.model_path("int8") == "tflite/model_int8.tflite"
    assert layout.MODEL_FORMATS[-1] == layout.EDGETPU_FORMAT
    with pytest.raises(ValueError, match="Unknown model format"):
        layout.model_filename("int4")
    text = layout.format_heldout([("rock", Path("test") / "rock" / "a.png")])
    assert text == "rock\ttest/rock/a.png\n"
    assert layout.parse_heldout_line(text) == ("rock", "test/rock/a.png")
    assert layout.parse_heldout_line("  \n") is None
    with pytest.raises(ValueError):
        layout.parse_heldout_line("no tab here")


def test_find_images_follows_symlinked_folders_and_skips_hidden(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "paper"
    elsewhere.mkdir(parents=True)
    (elsewhere / "a.webp").write_bytes(b"x")
    (elsewhere / ".hidden.png").write_bytes(b"x")
    (elsewhere / "notes.txt").write_text("x")
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(elsewhere, data / "paper")
    assert layout.find_images(data) == [data / "paper" / "a.webp"]
