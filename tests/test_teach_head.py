"""The embedding output and the numpy head: a numpy head equals a Keras Dense softmax layer with the same
weights; a converted bundle gives the embedding and the probabilities from one invoke, keeps its own head as
tflite/head.npz, and that head on the float32 embedding reproduces the model's own probabilities; the fit is
deterministic, class-balanced and stops early. Real Keras, real converter, real interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import device_bundle
import numpy as np
import pytest
import teach_bundle

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    return teach_bundle.shared_teach_bundle(tmp_path_factory)


def test_numpy_head_equals_a_keras_dense_softmax_layer():
    import keras

    from device.heads.head import Head

    rng = np.random.default_rng(0)
    weights, bias = rng.normal(0, 1, (12, 4)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)
    layer = keras.layers.Dense(4, activation="softmax")
    layer.build((None, 12))
    layer.set_weights([weights, bias])
    features = rng.normal(0, 2, (50, 12)).astype(np.float32)
    expected = np.asarray(layer(features))
    np.testing.assert_allclose(Head.from_dense(weights, bias).probabilities(features), expected, atol=1e-6)
    # a fitted (standardised) head is a Dense layer too, with mean and scale folded into W and b
    head = Head(weights, bias, rng.normal(0, 1, 12).astype(np.float32), rng.uniform(0.5, 2, 12).astype(np.float32))
    layer.set_weights([weights / head.scale[:, None], bias - (head.mean / head.scale) @ weights])
    np.testing.assert_allclose(head.probabilities(features), np.asarray(layer(features)), atol=1e-5)


def test_converted_bundle_has_the_embedding_and_its_own_head(taught):
    from device.heads.store import bundle_head
    from device.manifest import load_manifest, sha256_file
    from device.runtime import load_model

    manifest = load_manifest(taught)
    assert manifest.embedding.size == 8 and manifest.embedding.layer  # Conv2D(8) -> GAP -> Dense softmax
    assert sha256_file(taught / manifest.embedding.head_file) == manifest.embedding.head_sha256
    for fmt in ("float32", "int8"):
        entry = manifest.models[fmt]
        assert {entry.output_index, entry.embedding_index} == {0, 1}
        model = load_model(fmt, taught, threads=1, manifest=manifest)
        assert model.embedding_index is not None
    assert manifest.models["int8"].embedding_dtype == "int8" and manifest.models["int8"].output_scale == 1 / 256
    head = bundle_head(taught, manifest)
    assert (head.size, head.classes) == (8, 3)


def test_bundle_head_on_the_float32_embedding_is_the_models_own_output_from_one_invoke(taught):
    from device.heads.store import bundle_head
    from device.manifest import load_manifest
    from device.sources import ImagesSource
    from device.teach.teaching import load_classifier

    manifest = load_manifest(taught)
    head = bundle_head(taught, manifest)
    paths = [path for _, path in device_bundle.heldout(taught)]
    source = ImagesSource(paths=paths, loop=False)
    source.open()
    classifier = load_classifier(taught, "float32", threads=1)
    for path in paths:
        probabilities, embedding = classifier.outputs(source.decode(path))
        np.testing.assert_allclose(head.probabilities(embedding), probabilities, atol=1e-5)
    # int8: the bundle's own head (revision 0) serves the model's own probabilities, as before embeddings
    int8 = load_classifier(taught, "int8", threads=1)
    assert int8.head is None
    agree = [np.argmax(int8.probabilities(source.decode(p))) == np.argmax(head.probabilities(
        int8.outputs(source.decode(p))[1])) for p in paths]
    assert np.mean(agree) >= 0.9  # the numpy head on the int8 embedding is close to the int8 model's own


def test_fit_is_deterministic_class_balanced_and_stops_early():
    from device.heads.head import fit, split_heldout

    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (3, 16))
    counts = [200, 200, 12]  # one rare class
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    features = centres[labels] + rng.normal(0, 1.2, (len(labels), 16))
    train, heldout = split_heldout(labels, 0.2, seed=0)
    assert set(labels[heldout]) == {0, 1, 2} and len(set(train) & set(heldout)) == 0
    assert np.bincount(labels[heldout]).tolist() == [40, 40, 2]
    first, steps = fit(features[train], labels[train], 3, (features[heldout], labels[heldout]), seed=3)
    second, _ = fit(features[train], labels[train], 3, (features[heldout], labels[heldout]), seed=3)
    np.testing.assert_array_equal(first.weights, second.weights)
    assert steps < 400  # the held-out loss stopped improving before the step limit
    tests = rng.normal(0, 1.2, (300, 16)) + centres[np.arange(300) % 3]
    recall_rare = np.mean(first.probabilities(tests[2::3]).argmax(axis=1) == 2)
    assert recall_rare > 0.6  # class-balanced: the rare class is not drowned by the two big ones


def test_a_bundle_converted_before_embeddings_says_to_reconvert(bundle, tmp_path):
    """tests/device_bundle.py converts without convert/ (no embedding): like a bundle converted before."""
    data = device_bundle.heldout(bundle)[0][1].parent.parent
    result = subprocess.run([sys.executable, "-m", "device", "teach", "--bundle", str(bundle), "--data", str(data)],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "re-convert this bundle with this edgecam (python -m convert" in result.stderr
    assert not (bundle / "heads").exists()


def test_bench_measures_embedding_speed_and_fit_time(taught, bundle):
    from bench.teach import measure_teach

    figures = measure_teach(taught, threads=1, frames=30)
    assert figures["embed_fps"] > 0 and figures["fit_seconds"] > 0 and figures["embedding"] == 8
    assert measure_teach(bundle, threads=1) == {}  # converted before embeddings: the bench says so


def test_the_head_is_found_generically_and_models_without_one_convert_without_an_embedding(tmp_path):
    import keras

    from convert.embedding import find_head

    def save(name, *layers):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        x = keras.layers.Dense(5, activation="relu", name="features")(x)
        for layer in layers:
            x = layer(x)
        path = tmp_path / f"{name}.keras"
        keras.Model(inputs, x).save(path)
        return path

    found = find_head(save("softmax", keras.layers.Dense(3, activation="softmax", name="classes")))
    assert (found.layer, found.size, found.weights.shape, found.bias.shape) == ("classes", 5, (5, 3), (3,))
    assert [tuple(o.shape) for o in found.model.outputs] == [(None, 3), (None, 5)]
    split = find_head(save("split", keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")))
    assert split.layer == "logits" and split.size == 5
    assert find_head(save("sigmoid", keras.layers.Dense(1, activation="sigmoid"))) is None


def test_manifest_embedding_is_optional_and_checked(taught, bundle):
    from device.manifest import Manifest, ManifestError, load_manifest

    assert load_manifest(bundle).embedding is None  # written before embeddings: still reads
    data = json.loads((taught / "manifest.json").read_text())
    assert Manifest.from_dict(data).embedding.size == 8
    assert Manifest.from_dict(json.loads(Manifest.from_dict(data).to_json())).to_dict() == Manifest.from_dict(
        data).to_dict()
    data["embedding"]["size"] = 0
    with pytest.raises(ManifestError, match="embedding.size must be a positive integer"):
        Manifest.from_dict(data)
    data["embedding"] = {"size": 8, "head_file": "../outside.npz"}
    with pytest.raises(ManifestError, match="embedding.head_file must be a path inside the bundle"):
        Manifest.from_dict(data)
