"""Head revisions of a bundle: the classifier heads taught on the device, kept beside the model.

    BUNDLE/heads/
      current.json          {"revision": N}; missing means 0
      r0001/ head.npz labels.txt meta.json      (meta: parent revision, accuracies, confusion, time, ...)
      r0002/ ...

Revision 0 is the bundle's own head: the model's probabilities output as converted (and its W, b in
``tflite/head.npz``). Revision N > 0 is a numpy head applied to the model's embedding output, with its own
labels (new classes allowed). A revision folder is written under a temporary name and renamed when complete,
and ``current.json`` is replaced atomically, so a killed writer never leaves a half revision in use. Undo goes
back to the revision that was current when N was made (its parent). Writers hold the bundle's lock (the same
one convert/ and train/ hold while they stage a bundle).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from device.layout import HEADS_DIR, LABELS, StageError, _acquire_lock
from device.manifest import Manifest, atomic_write_text, sha256_file, unreadable
from device.teach.head import Head

CURRENT = "current.json"
META = "meta.json"
HEAD = "head.npz"


class NothingToUndo(ValueError):
    """The bundle already serves its own head (revision 0)."""


@dataclass
class ActiveHead:
    revision: int
    head: Head
    labels: list
    accuracy: float | None
    meta: dict


def heads_dir(bundle) -> Path:
    return Path(bundle) / HEADS_DIR


def revision_dir(bundle, revision: int) -> Path:
    return heads_dir(bundle) / f"r{revision:04d}"


def current_revision(bundle) -> int:
    path = heads_dir(bundle) / CURRENT
    try:
        revision = json.loads(path.read_text(encoding="utf-8"))["revision"]
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is unreadable ({error}): delete it to go back to the bundle's own head.") from None
    if not isinstance(revision, int) or revision < 0:
        raise ValueError(f"{path}: revision must be a whole number >= 0, got {revision!r}. Delete the file to "
                         "go back to the bundle's own head.")
    return revision


def read_meta(bundle, revision: int) -> dict:
    return json.loads((revision_dir(bundle, revision) / META).read_text(encoding="utf-8"))


def load_revision(bundle, revision: int) -> ActiveHead:
    """A taught revision (N > 0) -> ActiveHead; ValueError naming the folder when it is damaged."""
    folder = revision_dir(bundle, revision)
    try:
        meta = read_meta(bundle, revision)
        labels = [line.strip() for line in (folder / LABELS).read_text(encoding="utf-8").splitlines()
                  if line.strip()]
    except PermissionError as error:
        raise ValueError(unreadable(error.filename or folder, error)) from None
    except (OSError, ValueError) as error:
        raise ValueError(f"head revision {folder} is damaged ({error}). Undo it (python -m device teach --bundle "
                         f"{bundle} --undo) or teach again.") from None
    head = Head.load(folder / HEAD)
    if head.classes != len(labels):
        raise ValueError(f"{folder}: the head has {head.classes} classes but labels.txt lists {len(labels)}. "
                         "Undo it or teach again.")
    return ActiveHead(revision, head, labels, meta.get("accuracy"), meta)


def active_head(bundle, manifest: Manifest) -> ActiveHead | None:
    """The taught head the bundle's current revision names, or None when the model's own head is in use."""
    revision = current_revision(bundle)
    if revision == 0:
        return None
    active = load_revision(bundle, revision)
    size = manifest.embedding.size if manifest.embedding else None
    if size != active.head.size:
        raise ValueError(
            f"head revision {revision_dir(bundle, revision)} expects {active.head.size}-wide embeddings but the "
            f"bundle's model gives {size or 'none'}: it was taught on another model. Undo it (python -m device "
            f"teach --bundle {bundle} --undo) or teach again.")
    return active


def bundle_head(bundle, manifest: Manifest) -> Head:
    """Revision 0's weights (the bundle's own Dense layer), checked against the manifest's sha256."""
    info = manifest.embedding
    if info is None or not info.head_file:
        raise ValueError(no_embedding_message(bundle))
    path = Path(bundle) / info.head_file
    if not path.is_file():
        raise ValueError(f"{path} is missing. Re-convert the bundle: python -m convert {bundle}")
    if info.head_sha256 and sha256_file(path) != info.head_sha256:
        raise ValueError(f"{path} does not match its sha256 in the manifest: copy the bundle again or re-convert it.")
    return Head.load(path)


def no_embedding_message(bundle) -> str:
    return (f"{bundle} was converted without an embedding output, so it cannot be taught: re-convert this bundle "
            f"with this edgecam (python -m convert {bundle}), then copy it to the device again.")


def describe(bundle, manifest: Manifest, model_format: str | None = None) -> dict:
    """/status's ``head``: the revision in use, where it came from, its accuracy and labels."""
    revision = current_revision(bundle)
    if revision == 0:
        entry = manifest.models.get(model_format or "")
        accuracy = entry.accuracy if entry is not None and entry.accuracy is not None else manifest.test_accuracy
        return {"revision": 0, "source": "bundle", "accuracy": accuracy, "labels": list(manifest.labels)}
    active = load_revision(bundle, revision)
    return {"revision": revision, "source": "taught", "accuracy": active.accuracy, "labels": active.labels}


def write_revision(bundle, head: Head, labels: list, meta: dict) -> int:
    """Write HEAD and LABELS as the next revision and make it current -> its number."""
    with _lock(bundle):
        folder = heads_dir(bundle)
        folder.mkdir(exist_ok=True)
        numbers = [int(path.name[1:]) for path in folder.glob("r[0-9][0-9][0-9][0-9]") if path.is_dir()]
        revision = max(numbers, default=0) + 1
        temporary = folder / f".r{revision:04d}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            temporary.mkdir()
            head.save(temporary / HEAD)
            (temporary / LABELS).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
            meta = dict(meta, revision=revision, parent=current_revision(bundle), labels=list(labels),
                        created=round(time.time(), 3))
            (temporary / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.rename(temporary, revision_dir(bundle, revision))
        except BaseException:  # a full disk, a kill: no half revision is left behind
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        _set_current(bundle, revision)
    return revision


def undo(bundle) -> int:
    """Go back one revision (to the current one's parent) -> the revision now in use."""
    with _lock(bundle):
        revision = current_revision(bundle)
        if revision == 0:
            raise NothingToUndo(f"{bundle} already uses its own head (revision 0): there is nothing to undo.")
        try:
            parent = int(read_meta(bundle, revision).get("parent", 0))
        except (OSError, ValueError):
            parent = 0
        _set_current(bundle, parent)
    return parent


def _set_current(bundle, revision: int) -> None:
    atomic_write_text(heads_dir(bundle) / CURRENT, json.dumps({"revision": revision}) + "\n")


class _lock:
    def __init__(self, bundle):
        self.bundle = Path(bundle)

    def __enter__(self):
        try:
            self.handle = _acquire_lock(self.bundle)
        except PermissionError:
            raise ValueError(f"{self.bundle.parent} is not writable for this user: teaching writes head revisions "
                             "into the bundle. Run as the daemon's user or make the bundle writable.") from None
        except StageError as error:
            raise ValueError(str(error)) from None
        return self

    def __exit__(self, *exc):
        self.handle.close()
        return False
