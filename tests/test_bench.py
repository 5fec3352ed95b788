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
         "--threads", "1", "--format-seconds", "2", "--out", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    for text in ("int8 raw interpreter", "640x480 frames", "int8 speed-up over float32", "int8 size / float32 size",
                 "peak RSS", "cold start to first result", "RSS growth over 300 frames", "Machine:"):
        assert text in result.stdout, text
    for fmt in ("int8", "float32"):  # a row per format and thread count; none passed parity in this bundle
        assert f"{fmt}, 1 thread: pipeline per frame, 32x32" in result.stdout, fmt
    assert "not a candidate: parity not measured" in result.stdout
    table = out.read_text()
    assert table.startswith("# edgecam benchmark") and "| measurement | value | limit | |" in table
    assert table.count("\n| ") >= 11
    assert "| python -m device tune would choose (passed parity; fewest threads within 5%) | nothing: no format " \
           "passed parity |" in table


def test_bench_needs_a_converted_bundle(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["models"]["int8"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, "-m", "bench", "--bundle", str(copy)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "has no int8 model: run python -m convert" in result.stderr


# ---- cost per architecture (bench/cost.py) ------------------------------------------------------------
def test_multiply_adds_and_parameters_are_counted_from_the_int8_graph(tmp_path):
    """A hand-sized model: conv 3x3x3->4 on 8x8 (same), depthwise 3x3 on 8x8x4, global average, dense 4->5. Biases
    are random: the converter shares identical constant buffers (zero biases) and drops an all-zero FC bias."""
    import keras
    import numpy as np

    from bench.cost import count_graph
    from convert import tflite
    from convert.calibration import representative_dataset

    inputs = keras.Input((8, 8, 3), name="image")
    keras.utils.set_random_seed(0)
    x = keras.layers.Conv2D(4, 3, padding="same", bias_initializer="random_uniform")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", bias_initializer="random_uniform")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, activation="softmax", bias_initializer="random_uniform")(x)
    keras.Model(inputs, outputs).export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    images = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype(np.float32)
    content = tflite.convert(tflite.ServingFunction(tmp_path / "sm", 8, 8), "int8",
                             representative_dataset(images, progress=False))
    (tmp_path / "m.tflite").write_bytes(content)
    macs, parameters, ops = count_graph(tmp_path / "m.tflite")
    assert macs == 8 * 8 * 4 * 3 * 3 * 3 + 8 * 8 * 4 * 3 * 3 + 4 * 5
    assert parameters == (4 * 27 + 4) + (9 * 4 + 4) + (4 * 5 + 5)
    assert ops["CONV_2D"] == ops["DEPTHWISE_CONV_2D"] == ops["FULLY_CONNECTED"] == 1


def test_cost_table_for_the_bundle_and_a_mobilenet_v3_small(bundle, tmp_path):
    out = tmp_path / "cost.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.cost", "--bundle", str(bundle), "--candidate", "mobilenet_v3_small:1.0@32",
         "--threads", "1", "--out", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| model | multiply-adds / frame | parameters | int8 file | int8 invoke here |")
    assert lines[2].startswith("| tiny@32 (this bundle) | ")  # the shared device-test bundle (no parity run)
    v3 = lines[3].split(" | ")
    assert v3[0] == "| mobilenet_v3_small:1.0@32" and v3[-1] == "untrained |"
    assert v3[5].startswith("all ") and float(v3[1].split()[0]) > 0.5  # every op on the Edge TPU; ~1 M MACs at 32 px
