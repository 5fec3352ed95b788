"""bench/: `python -m bench` runs end to end on a small bundle and writes its table. Timings are measured
there, never asserted here (a shared build machine's timings are noise)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import device_bundle

REPO = Path(__file__).resolve().parent.parent


def test_bench_prints_and_writes_the_table(bundle, tmp_path):
    out = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--bundle", str(bundle), "--frames", "30", "--rss-frames", "300",
         "--threads", "1", "--out", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    for text in ("int8 raw interpreter", "640x480 frames", "int8 speed-up over float32", "int8 size / float32 size",
                 "peak RSS", "cold start to first result", "RSS growth over 300 frames", "Machine:"):
        assert text in result.stdout, text
    table = out.read_text()
    assert table.startswith("# edgecam benchmark") and "| measurement | value | limit | |" in table
    assert table.count("\n| ") >= 11


def test_bench_needs_a_converted_bundle(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["models"]["int8"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, "-m", "bench", "--bundle", str(copy)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "has no int8 model: run python -m convert" in result.stderr
