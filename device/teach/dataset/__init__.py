"""The captured data set on the device: class folders of camera frames, as the trainer reads them.

    DATASET/
      paper/20261129-010203-0007.jpg      the camera's frame, not the model-size crop (docs/capture.md), JPEG
      rock/...
      index.jsonl                         one line per capture: file, label, time, source, model, reading
      .uncertain/                         frames the model was unsure of (a ring bounded by count and MB)
        20261129-010203-0008.jpg
        ring.json                         their readings, oldest first
      .deleted/BATCH/                     the newest delete, until the next one (undo)

One concern a module (each readable in one sitting):

    paths.py    the one reading of a user-given data-set path (move, remove, delete, restore, the image view)
    files.py    naming without replacing: a complete file linked to a new name; a rename that never replaces
    writer.py   the capture writer (every process that records: the daemon and ``python -m device capture``)
    space.py    the size limit, the free-space floor, a size count that follows other writers
    classes.py  classes, counts and pages of frames, as the Teach view lists them
    ring.py     the uncertain ring
    edits.py    move, delete, restore, class rename and delete, under the cross-process edit lock (lock.py)
    errors.py   DatasetError (bad input) and DatasetFull (recording must stop)

Before a write, the size limit and the free-space floor are checked; when either would be crossed,
:class:`DatasetFull` says which and what to do. A class name is 1-40 letters, digits, ``-`` or ``_``, matched
whole; a data set holds at most MAX_CLASSES classes (a Teach view beyond that has no room for its buttons,
and a head's held-out fifth no frames per class). numpy + Pillow only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from device.teach.dataset.classes import LATEST, MAX_CLASSES, PAGE, PAGE_MAX, Classes
from device.teach.dataset.edits import BATCH_NAME, DELETED, MAX_BATCH, BulkEdits, check_batch
from device.teach.dataset.errors import DatasetError, DatasetFull, disk_full, short_error
from device.teach.dataset.files import JPEG_QUALITY, encode_jpeg, link_new, rename_new, write_temporary
from device.teach.dataset.lock import EditLock
from device.teach.dataset.paths import CLASS_NAME, check_class_name, frame_path, parse_frame
from device.teach.dataset.ring import RING, UNCERTAIN, UncertainRing
from device.teach.dataset.space import (
    DEFAULT_LIMIT_BYTES,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_ROOT,
    DEFAULT_UNCERTAIN_BYTES,
    INDEX,
    Space,
    default_root,
)
from device.teach.dataset.writer import NAME_TRIES, Writer

__all__ = ["BATCH_NAME", "CLASS_NAME", "DEFAULT_LIMIT_BYTES", "DEFAULT_MIN_FREE_BYTES", "DEFAULT_ROOT",
           "DEFAULT_UNCERTAIN_BYTES", "DELETED", "INDEX", "JPEG_QUALITY", "LATEST", "MAX_BATCH", "MAX_CLASSES",
           "NAME_TRIES", "PAGE", "PAGE_MAX", "RING", "UNCERTAIN", "Dataset", "DatasetError", "DatasetFull",
           "EditLock", "check_batch", "check_class_name", "default_root", "disk_full", "encode_jpeg", "frame_path",
           "link_new", "parse_frame", "rename_new", "short_error", "write_temporary"]


class Dataset(Space, Classes, Writer, UncertainRing, BulkEdits):
    """One data-set folder; safe to call from the HTTP threads and the inference loop at once, and from
    other processes (the capture writer's names; the edit lock for edits)."""

    def __init__(self, root, limit_bytes: int = DEFAULT_LIMIT_BYTES, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 keep_uncertain: int = 0, uncertain_bytes: int = DEFAULT_UNCERTAIN_BYTES):
        self.root = Path(root)
        self.limit_bytes = int(limit_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.keep_uncertain = int(keep_uncertain)
        self.uncertain_bytes = int(uncertain_bytes)
        self.lock = threading.RLock()  # this object's counts, names and ring (held briefly)
        self.edits = EditLock(self.root)  # taken before self.lock, never while holding it
        self.sequence = 0
        self.frame_bytes = 0  # the last frame's JPEG size: what the next capture will roughly need
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatasetError(f"--dataset {self.root} cannot be created ({error.strerror}): pick a writable "
                               "folder with --dataset DIR.") from None
        self.index_size = -1  # index.jsonl's size after this object's last look: another writer changes it
        self.bytes = self._count_bytes()
        self.ring: OrderedDict = OrderedDict()  # id -> {"id", "file", "label", "confidence", "time", "bytes"}
        self._load_ring()
