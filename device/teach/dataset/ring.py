"""The uncertain ring: frames the model was unsure of, kept in ``.uncertain/`` (bounded by count and MB,
oldest dropped first) with their readings in ``ring.json``, until they are labelled into a class or
discarded."""

from __future__ import annotations

import json
import time
from pathlib import Path

from device.atomic import atomic_write
from device.teach.dataset.errors import DatasetError, DatasetFull, disk_full
from device.teach.dataset.files import encode_jpeg
from device.teach.dataset.paths import check_class_name, frame_path

UNCERTAIN = ".uncertain"
RING = "ring.json"


class UncertainRing:
    """Mixed into Dataset: needs root, lock, ring (an OrderedDict), keep_uncertain, uncertain_bytes,
    min_free_bytes and the Space and Writer methods."""

    def _ring_dir(self) -> Path:
        return self.root / UNCERTAIN

    def _load_ring(self) -> None:
        path = self._ring_dir() / RING
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and (self._ring_dir() / str(entry.get("id", "")) ).is_file():
                self.ring[entry["id"]] = entry

    def _save_ring(self) -> None:
        atomic_write(self._ring_dir() / RING, json.dumps(list(self.ring.values())) + "\n")

    def keep(self, frame, label: str, confidence: float, source: str = "", model: str = "",
             drift: float | None = None) -> str | None:
        """Add an uncertain FRAME to the ring (past --keep-uncertain frames or its MB, the lowest DRIFT score is
        dropped first, the oldest among equals: device/drift.py) -> its id; None when the ring is off or the disk
        checks refuse it."""
        if self.keep_uncertain <= 0:
            return None
        content = encode_jpeg(frame)
        with self.lock:
            if self.free_bytes() - len(content) < self.min_free_bytes:
                return None
            self._ring_dir().mkdir(exist_ok=True)
            now = time.time()
            identifier = self._write_new(self._ring_dir(), content, now)
            self.ring[identifier] = {"id": identifier, "file": f"{UNCERTAIN}/{identifier}", "label": label,
                                     "confidence": round(float(confidence), 4), "time": round(now, 3),
                                     "source": source, "model": model, "bytes": len(content),
                                     "drift": None if drift is None else round(float(drift), 3)}
            while self.ring and (len(self.ring) > self.keep_uncertain or self.ring_bytes() > self.uncertain_bytes):
                dropped = min(self.ring, key=lambda key: self.ring[key].get("drift") or 0.0)  # oldest of the lowest
                (self._ring_dir() / self.ring.pop(dropped)["id"]).unlink(missing_ok=True)
            self._save_ring()
            return identifier if identifier in self.ring else None

    def ring_bytes(self) -> int:
        return sum(entry["bytes"] for entry in self.ring.values())

    def uncertain(self) -> list:
        """Highest drift score first (device/drift.py), then newest first, as /api/dataset lists them."""
        newest = [{key: entry.get(key) for key in ("id", "file", "label", "confidence", "time", "drift")}
                  for entry in reversed(self.ring.values())]
        return sorted(newest, key=lambda entry: -(entry["drift"] or 0.0))

    def _take(self, identifier) -> dict:
        entry = self.ring.get(identifier) if isinstance(identifier, str) else None
        if entry is None:
            raise DatasetError(f"uncertain frame {identifier!r} is not in the ring (dropped as older frames came, "
                               "or handled already). Reload the list.")
        return entry

    def label_uncertain(self, identifier: str, label: str) -> str:
        """Move an uncertain frame into class LABEL -> its new relative file."""
        check_class_name(label)
        if not (self.root / label).is_dir():
            raise DatasetError(f"class {label!r} does not exist: add it first.")
        with self.lock:
            entry = self._take(identifier)
            self._follow_other_writers()
            reason = self.blocked(entry["bytes"])
            if reason:
                raise DatasetFull(reason)
            kept = self._ring_dir() / entry["id"]
            with disk_full(self.root):
                relative = f"{label}/{self._place(kept, self.root / label, entry['time'], entry['id'])}"  # never over a capture
            kept.unlink(missing_ok=True)  # (gone already where a file system without hard links renamed it)
            del self.ring[identifier]
            self._save_ring()
            self.bytes += entry["bytes"]
            self._index({"file": relative, "label": label, "time": round(time.time(), 3), "source": entry["source"],
                         "model": entry["model"], "reading": {"label": entry["label"],
                                                              "confidence": entry["confidence"]},
                         "from": "uncertain"})
        return relative

    def discard_uncertain(self, identifier: str) -> str:
        with self.lock:
            entry = self._take(identifier)
            (self._ring_dir() / entry["id"]).unlink(missing_ok=True)
            del self.ring[identifier]
            self._save_ring()
        return identifier

    def resolve_any(self, relative) -> Path:
        """The file to show for a path from /api/dataset: a class frame (paths.frame_path) or an uncertain
        frame's .uncertain/ID."""
        if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
            entry = self.ring.get(relative[len(UNCERTAIN) + 1:])
            if entry is None:
                raise DatasetError(f"uncertain frame {relative!r} is gone (dropped or handled). Reload the list.")
            return self._ring_dir() / entry["id"]
        return frame_path(self.root, relative)
