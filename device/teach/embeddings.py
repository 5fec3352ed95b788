"""The embedding cache: each frame's embeddings (the frame and its variants) and the model's own probabilities,
kept beside the data set, so re-teaching after ten new frames embeds ten frames, not all.

    DATASET/.embeddings/<model key>/embeddings.npz      hashes [N], probabilities [N, C],
                                                        embeddings [N, variants, size] (float16), variants [V]

A frame is known by the sha256 of its file's bytes (so moving it to another class costs nothing); a model by
device/state.py's model_key of its file's sha256 (so another model, or a re-converted one, never reads
these). The file is replaced atomically; a damaged or foreign one is ignored and rewritten. numpy only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from device.atomic import atomic_write_with
from device.state import model_key

FOLDER = ".embeddings"
FILE = "embeddings.npz"


def frame_hash(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


def cache_path(data, model_sha256: str) -> Path:
    return Path(data) / FOLDER / model_key(model_sha256) / FILE


def load(path: Path, variants: tuple) -> dict:
    """{hash: (probabilities [C], embeddings [V, size] float32)} for the entries embedded with every one of
    VARIANTS (in that order); {} when there is no cache or it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            hashes = [str(h) for h in data["hashes"]]
            cached = [str(v) for v in data["variants"]]
            probabilities = np.asarray(data["probabilities"], np.float32)
            embeddings = np.asarray(data["embeddings"])
    except (OSError, KeyError, ValueError):
        return {}
    if any(name not in cached for name in variants) or embeddings.ndim != 3 or len(hashes) != len(embeddings):
        return {}
    order = [cached.index(name) for name in variants]
    return {frame: (probabilities[index], embeddings[index, order].astype(np.float32))
            for index, frame in enumerate(hashes)}


def save(path: Path, entries: dict, variants: tuple) -> None:
    """Write ENTRIES ({hash: (probabilities, embeddings [V, size])}) atomically; OSError propagates (a full
    disk): the caller decides whether teaching goes on without the cache."""
    hashes = sorted(entries)
    atomic_write_with(path, lambda stream: np.savez(
        stream, hashes=np.array(hashes, dtype="U32"), variants=np.array(variants),
        probabilities=np.stack([entries[h][0] for h in hashes]).astype(np.float32),
        embeddings=np.stack([entries[h][1] for h in hashes]).astype(np.float16)))
