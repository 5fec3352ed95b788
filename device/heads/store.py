"""Head revisions: the classifier heads taught on the device, kept in the state folder, keyed by the model they fit.

    STATE/models/<model key>/        device/state.py; the key comes from the sha256 of the model file that embedded
      heads/                         the frames (int8 for an Edge TPU bundle: teaching embeds with that graph)
        current.json                 {"revision": N}; missing means 0
        r0001/ head.npz labels.txt meta.json      (meta: parent, accuracy, data set, frames, model sha256, time)
        r0002/ ...
      .heads.lock                    held by whoever writes a revision (teach, undo)

Revision 0 is the bundle's own head: the model's probabilities output as converted. Revision N > 0 is a numpy
head applied to the model's embedding output, with its own labels (new classes allowed). A revision folder is
written under a temporary name and renamed when complete, and ``current.json`` is replaced atomically, so a
killed writer never leaves a half revision in use. Undo goes back to the revision that was current when N was
made (its parent).

Because the heads live beside the state, not in a release: a restart, a new release of the same model and a
rollback find the same head; a release with another model finds none of its own (the daemon then re-fits one
from the data set, device/teach/service.py); nothing here needs the release to be writable.

Without a state folder (a laptop run: device.state.device_state_dir is None) the heads stay beside the bundle
they were taught on, in ``BUNDLE/heads/``, locked with the bundle's own lock (the one convert/ and train/ hold).
A bundle from before the state folder (``BUNDLE/heads/`` inside a release) keeps working: on first use with a
state folder its heads are copied there (the bundle is left as it was), or read in place where that copy fails.
Every revision records the sha256 of its model; one fitted on another model is never served.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from device.atomic import atomic_write, sync_folder
from device.heads.head import Head
from device.layout import EDGETPU_FORMAT, HEADS_DIR, LABELS, StageError, acquire_lock, model_path
from device.manifest import Manifest, load_manifest, sha256_file, unreadable
from device.state import device_state_dir, model_dir

log = logging.getLogger("edgecam.teach")
CURRENT = "current.json"
META = "meta.json"
HEAD = "head.npz"


class NothingToUndo(ValueError):
    """The store already serves the bundle's own head (revision 0)."""


class StoreLocked(RuntimeError):
    """Another teach or undo holds the head store's lock: try again when it has finished (exit 3, HTTP 409)."""


class StoreUnwritable(OSError):
    """The head store cannot be written (read-only, not this user's, or full): a person must act (exit 2, 507)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


@dataclass
class ActiveHead:
    revision: int
    head: Head
    labels: list
    accuracy: float | None
    meta: dict


@dataclass
class HeadStore:
    """Where one model's head revisions live (``root``), and what they fit."""

    root: Path                      # the heads folder
    bundle: Path
    model_sha256: str               # the model file whose embedding the heads apply to
    state_dir: Path | None          # None: a laptop run, the heads beside the bundle
    note: str | None = None         # how a legacy BUNDLE/heads/ was taken over (copied, or read in place)

    @property
    def lock_target(self) -> Path:
        """acquire_lock(target) locks ``.NAME.lock`` beside it: the bundle's own lock for BUNDLE/heads/."""
        return self.bundle if self.root == self.bundle / HEADS_DIR else self.root

    def revision_dir(self, revision: int) -> Path:
        return self.root / f"r{revision:04d}"

    def current_revision(self) -> int:
        path = self.root / CURRENT
        try:
            revision = json.loads(path.read_text(encoding="utf-8"))["revision"]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is unreadable ({error}): delete it to go back to the bundle's own head.") from None
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError(f"{path}: revision must be a whole number >= 0, got {revision!r}. Delete the file to "
                             "go back to the bundle's own head.")
        return revision

    def read_meta(self, revision: int) -> dict:
        meta = json.loads((self.revision_dir(revision) / META).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"{META} is not a JSON object")
        return meta

    def load_revision(self, revision: int) -> ActiveHead:
        """A taught revision (N > 0) -> ActiveHead; ValueError naming the folder when it is damaged."""
        folder = self.revision_dir(revision)
        try:
            meta = self.read_meta(revision)
            labels = [line.strip() for line in (folder / LABELS).read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        except PermissionError as error:
            raise ValueError(unreadable(error.filename or folder, error)) from None
        except (OSError, ValueError) as error:
            raise ValueError(f"head revision {folder} is damaged ({error}). {self.fix_hint()}") from None
        try:
            head = Head.load(folder / HEAD)
        except ValueError as error:
            raise ValueError(f"{error} ({self.fix_hint()})") from None
        if head.classes != len(labels):
            raise ValueError(f"{folder}: the head has {head.classes} classes but labels.txt lists {len(labels)}. "
                             f"{self.fix_hint()}")
        fitted_on = meta.get("model_sha256")
        if fitted_on and fitted_on != self.model_sha256:
            raise ValueError(f"head revision {folder} was fitted on another model (sha256 {str(fitted_on)[:12]}..., "
                             f"this one is {self.model_sha256[:12]}...). {self.fix_hint()}")
        return ActiveHead(revision, head, labels, meta.get("accuracy"), meta)

    def active_head(self, manifest: Manifest) -> ActiveHead | None:
        """The taught head the current revision names, or None when the model's own head is in use."""
        revision = self.current_revision()
        if revision == 0:
            return None
        active = self.load_revision(revision)
        size = manifest.embedding.size if manifest.embedding else None
        if size != active.head.size:
            raise ValueError(
                f"head revision {self.revision_dir(revision)} expects {active.head.size}-wide embeddings but the "
                f"bundle's model gives {size or 'none'}: it was taught on another model. {self.fix_hint()}")
        return active

    def fix_hint(self) -> str:
        return (f"Undo it (python -m device undo --bundle {self.bundle}) or teach again; "
                "until then the bundle's own head serves.")

    def describe(self, manifest: Manifest, model_format: str | None = None, active: ActiveHead | None = None) -> dict:
        """/status's and ``python -m device status``'s ``head``: which head serves, for which model, fitted on
        which frames (count, data set, when), and where the revisions are kept."""
        common = {"model_sha256": self.model_sha256, "store": str(self.root)}
        if self.note:
            common["store_note"] = self.note
        if active is None:
            entry = manifest.models.get(model_format or "")
            accuracy = entry.accuracy if entry is not None and entry.accuracy is not None else manifest.test_accuracy
            return {"revision": 0, "source": "bundle", "accuracy": accuracy, "labels": list(manifest.labels), **common}
        meta = active.meta
        frames = meta.get("frames")
        if frames is None and isinstance(meta.get("trained"), int) and isinstance(meta.get("heldout"), int):
            frames = meta["trained"] + meta["heldout"]
        created = meta.get("created")
        return {"revision": active.revision, "source": "taught", "accuracy": active.accuracy,
                "labels": list(active.labels), "frames": frames, "data": meta.get("data"),
                "fitted": _iso(created) if isinstance(created, (int, float)) else None, **common}

    # ---- writing ---------------------------------------------------------------------------
    def write_revision(self, head: Head, labels: list, meta: dict, files: dict | None = None,
                       decide=None) -> int | None:
        """Write HEAD and LABELS (and FILES, {name: bytes}: the drift reference) as the next revision and make it
        current -> its number. DECIDE(revision current now) -> (keep it, extra meta): called under the store's
        lock, so a teach compares with the head that is current when it commits, not the one it started from
        (another teach may have committed meanwhile); None when DECIDE refused (nothing written)."""
        with self.locked():
            if decide is not None:
                keep, extra = decide(self._parent())
                if not keep:
                    return None
                meta = dict(meta, **extra)
            numbers = [int(path.name[1:]) for path in self.root.glob("r[0-9][0-9][0-9][0-9]") if path.is_dir()]
            revision = max(numbers, default=0) + 1
            temporary = self.root / f".r{revision:04d}.tmp-{os.getpid()}"
            try:
                shutil.rmtree(temporary, ignore_errors=True)
                temporary.mkdir()
                head.save(temporary / HEAD)  # each file fsynced (device/atomic.py), then the folders: a power
                atomic_write(temporary / LABELS, "".join(f"{label}\n" for label in labels))  # cut never leaves
                for name, content in (files or {}).items():
                    atomic_write(temporary / name, content)
                meta = dict(meta, revision=revision, parent=self._parent(), labels=list(labels),  # current.json
                            model_sha256=self.model_sha256, created=round(time.time(), 3))  # naming a torn head
                atomic_write(temporary / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
                os.rename(temporary, self.revision_dir(revision))
                sync_folder(self.root)
                self._set_current(revision)
            except OSError as error:
                shutil.rmtree(temporary, ignore_errors=True)  # a full disk must not leave a half revision behind
                raise self.unwritable(error) from None
        return revision

    def undo(self) -> int:
        """Go back one revision (to the current one's parent) -> the revision now in use."""
        with self.locked():
            revision = self.current_revision()
            if revision == 0:
                raise NothingToUndo(f"{self.bundle} already uses its own head (revision 0): there is nothing to undo.")
            try:
                parent = int(self.read_meta(revision).get("parent", 0))
            except (OSError, ValueError, TypeError):
                parent = 0
            try:
                self._set_current(parent)
            except OSError as error:
                raise self.unwritable(error) from None
        return parent

    def check_writable(self) -> None:
        """Before teaching's seconds of embedding: StoreLocked when another writer holds the lock, StoreUnwritable
        when the store cannot be made or written (a read-only or full file system, another user's folder)."""
        made = not self.root.exists()
        with self.locked():
            try:
                handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.root)
                os.close(handle)
                os.unlink(probe)
            except OSError as error:
                raise self.unwritable(error) from None
            finally:
                if made:  # made only to try: a teach that stops later (no embedding, too few frames) leaves none
                    shutil.rmtree(self.root, ignore_errors=True)

    def check_owner(self) -> None:
        """root writing into a state folder that belongs to the service's user would leave files the service cannot
        replace (its next teach or undo fails): refuse, and name the user to run as."""
        if self.state_dir is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
            return
        try:
            owner = self.state_dir.stat().st_uid
        except OSError:
            return
        if owner != 0:
            import pwd

            try:
                name = pwd.getpwuid(owner).pw_name
            except KeyError:
                name = str(owner)
            raise StoreUnwritable(None, f"{self.state_dir} belongs to {name}, not root: run as that user "
                                        f"(sudo -u {name} python -m device ...) so that the service can still "
                                        "write what you teach.")

    def _parent(self) -> int:
        """The revision in use now (a damaged current.json: 0, the bundle's own head, which is what serves)."""
        try:
            return self.current_revision()
        except ValueError:
            return 0

    def choose_own_head(self) -> None:
        """Record that the head in use stays (a re-fit the gate refused): current.json written again (revision 0
        where none was current), so the next start does not re-fit again."""
        with self.locked():
            self._set_current(self._parent() if (self.root / CURRENT).exists() else 0)

    def locked(self):
        return _Lock(self)

    def unwritable(self, error: OSError) -> StoreUnwritable:
        """One line that says what happened and how to fix it."""
        import errno

        where = self.root
        if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
            what = f"the disk holding {where} is full"
            fix = "free some space (delete old frames in the Teach view, or old logs), then teach again"
        elif error.errno == errno.EROFS:
            what = f"{where} is on a read-only file system"
            fix = self._state_fix()
        else:
            what = f"{where} cannot be written by this user ({error.strerror or error})"
            fix = self._state_fix()
        return StoreUnwritable(error.errno, f"{what}: {fix}.")

    def _state_fix(self) -> str:
        if self.state_dir is None:
            return ("taught heads go into the state folder: pass --state-dir DIR (or set EDGECAM_STATE_DIR) "
                    "to a folder this user may write, or make the bundle writable")
        return (f"run as the service's user (sudo -u edgecam python -m device ...) or make {self.state_dir} "
                "writable for this user")

    def _set_current(self, revision: int) -> None:
        atomic_write(self.root / CURRENT, json.dumps({"revision": revision}) + "\n")


class _Lock:
    def __init__(self, store: HeadStore):
        self.store = store

    def __enter__(self):
        self.store.check_owner()
        try:
            self.store.root.mkdir(parents=True, exist_ok=True)
            self.handle = acquire_lock(self.store.lock_target)
        except StageError as error:
            raise StoreLocked(str(error)) from None
        except OSError as error:
            raise self.store.unwritable(error) from None
        return self

    def __exit__(self, *exc):
        self.handle.close()
        return False


def serving_head(store: HeadStore, manifest: Manifest) -> tuple:
    """-> (the taught head to serve or None, why a taught head cannot serve or None). A damaged or mismatched
    revision never stops the device: the bundle's own head (the model's probabilities output) serves instead."""
    try:
        return store.active_head(manifest), None
    except ValueError as error:
        return None, str(error)
    except Exception as error:  # noqa: BLE001 - a damaged file may raise anything (a truncated .npz: BadZipFile)
        return None, f"the taught head in {store.root} cannot be read ({type(error).__name__}: {error}). " + \
            store.fix_hint()


# ---- finding the store -------------------------------------------------------------------------
def head_format(model_format: str) -> str:
    """The format whose heads MODEL_FORMAT serves: int8's for the Edge TPU model (compiled from the int8 model;
    teaching embeds with int8 on the CPU while the daemon holds the Edge TPU), else its own. The one place that
    maps the Edge TPU to int8."""
    return "int8" if model_format == EDGETPU_FORMAT else model_format


def embedding_sha256(bundle, manifest: Manifest, model_format: str, loaded_sha256: str = "") -> str:
    """The sha256 of the model file whose embedding output a head of MODEL_FORMAT is fitted on. An Edge TPU
    model is taught through its int8 source on the CPU (the daemon holds the TPU), so it shares int8's heads."""
    chosen = head_format(model_format) if "int8" in manifest.models else model_format
    entry = manifest.models.get(chosen or "")
    if entry is not None and entry.sha256:
        return entry.sha256
    if loaded_sha256 and chosen == model_format:
        return loaded_sha256
    try:
        path = Path(bundle) / (entry.file if entry is not None else model_path(chosen))
        return sha256_file(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{bundle}: cannot identify the {model_format or 'given'} model its taught heads belong to "
                         f"({error}). Re-copy the bundle or name an existing format with --model.") from None


def open_store(bundle, manifest: Manifest, model_format: str = "int8", state_dir=None,
               loaded_sha256: str = "") -> HeadStore:
    """The head store for BUNDLE's MODEL_FORMAT: STATE/models/<key>/heads/ with a state folder (--state-dir,
    $EDGECAM_STATE_DIR, systemd's $STATE_DIRECTORY, an installed /var/lib/edgecam), else BUNDLE/heads/."""
    bundle = Path(bundle)
    sha = embedding_sha256(bundle, manifest, model_format, loaded_sha256)
    folder = device_state_dir(state_dir)
    if folder is None:
        return HeadStore(bundle / HEADS_DIR, bundle, sha, None)
    store = HeadStore(model_dir(folder, sha) / HEADS_DIR, bundle, sha, Path(folder))
    return _adopt_legacy(store)


def _adopt_legacy(store: HeadStore) -> HeadStore:
    """A bundle from before the state folder, with BUNDLE/heads/ in use: copy it into the state folder once (the
    bundle is left as it was, so the older release still finds it); where the copy fails, read it in place."""
    legacy = HeadStore(store.bundle / HEADS_DIR, store.bundle, store.model_sha256, store.state_dir)
    if (store.root / CURRENT).exists() or not (legacy.root / CURRENT).is_file():
        return store
    try:
        revision = legacy.current_revision()
        if revision == 0:
            return store
        legacy.load_revision(revision)  # refuses a head fitted on another model: that one stays behind
    except ValueError as error:
        log.warning("not taking over %s: %s", legacy.root, error)
        return store
    try:
        with store.locked():
            if not store.root.joinpath(CURRENT).exists():
                temporary = store.root.with_name(f".heads.tmp-{os.getpid()}")
                shutil.rmtree(temporary, ignore_errors=True)
                shutil.copytree(legacy.root, temporary, ignore=shutil.ignore_patterns(".*"))
                for name in sorted(os.listdir(temporary), key=lambda name: name == CURRENT):  # current.json last
                    if name == CURRENT:
                        sync_folder(store.root)
                    os.rename(temporary / name, store.root / name)
                temporary.rmdir()
                sync_folder(store.root)
    except (OSError, StoreLocked) as error:
        legacy.note = f"read in place from the bundle: copying it to {store.root} failed ({error})"
        log.warning("head revisions %s: %s", legacy.root, legacy.note)
        return legacy
    store.note = f"copied from {legacy.root} (a bundle from before the state folder)"
    log.info("head revisions: %s", store.note)
    return store


def other_models(state_dir, model_sha256: str) -> list:
    """Stores of other models in STATE with a taught head in use -> [(store root, meta)], newest first (the
    daemon re-fits a new model's head from the data set the newest of them was fitted on)."""
    found = []
    models = Path(state_dir) / "models"
    if not models.is_dir():
        return found
    own = model_dir(state_dir, model_sha256)
    for folder in models.iterdir():
        root = folder / HEADS_DIR
        if folder == own or not (root / CURRENT).is_file():
            continue
        other = HeadStore(root, Path(), "", Path(state_dir))
        try:
            revision = other.current_revision()
            meta = other.read_meta(revision) if revision else None
        except (OSError, ValueError):
            continue
        if meta:
            found.append((root, meta))
    return sorted(found, key=lambda item: item[1].get("created") or 0, reverse=True)


def no_embedding_message(bundle) -> str:
    return (f"{bundle} was converted without an embedding output, so it cannot be taught: re-convert this bundle "
            f"with this edgecam (python -m convert {bundle}), then copy it to the device again.")


def bundle_head(bundle, manifest: Manifest) -> Head:
    """Revision 0's weights in numpy (the bundle's own Dense layer, ``tflite/head.npz``), checked against the
    manifest's sha256."""
    info = manifest.embedding
    if info is None or not info.head_file:
        raise ValueError(no_embedding_message(bundle))
    path = Path(bundle) / info.head_file
    if not path.is_file():
        raise ValueError(f"{path} is missing. Re-convert the bundle: python -m convert {bundle}")
    if info.head_sha256 and sha256_file(path) != info.head_sha256:
        raise ValueError(f"{path} does not match its sha256 in the manifest: copy the bundle again or re-convert it.")
    return Head.load(path)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


def load_revision(bundle, revision: int, model_format: str = "int8", state_dir=None) -> ActiveHead:
    """Head revision REVISION of BUNDLE's MODEL_FORMAT model, from the store the daemon would use (bench/, tests)."""
    return open_store(bundle, load_manifest(bundle), model_format, state_dir).load_revision(revision)
