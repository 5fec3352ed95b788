"""Several data folders as one training set: ``--data data/rps --data data/rps-own``.

Each folder is read on its own (train/dataset.py: its own test/ split, or its own validation split as
held-out), then the class folders are merged by name. Every image keeps the index of the folder it came from,
so the held-out report can show how the model does on each folder (the built-in set and the user's own
camera, say), and a per-folder weight (``--data-weight``) scales its images' loss.

One folder gives exactly what scan_image_folder gives, plus the per-folder bookkeeping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.dataset import DataError, ImageFolder, Split, scan_image_folder


@dataclass
class Source:
    root: Path
    weight: float
    folder: ImageFolder  # the folder read on its own, with its own class indices


@dataclass
class MergedFolder(ImageFolder):
    sources: list = field(default_factory=list)  # Source, in --data order
    origins: dict = field(default_factory=dict)  # "train" / "validation" / "test" -> folder index per image

    def sample_weights(self, split: str) -> np.ndarray:
        weights = np.asarray([source.weight for source in self.sources], dtype=np.float32)
        return weights[np.asarray(self.origins[split], dtype=np.int64)]

    def counts(self) -> list:
        """Rows (folder, class, train, validation, held-out) for the summary printed before training."""
        rows = []
        for index, source in enumerate(self.sources):
            for label, name in enumerate(self.class_names):
                row = [str(source.root), name]
                for split in ("train", "validation", "test"):
                    labels = getattr(self, split).labels
                    row.append(sum(1 for o, y in zip(self.origins[split], labels) if o == index and y == label))
                rows.append(row)
        return rows

    def summary(self) -> str:
        header = ("folder", "class", "train", "validation", "held-out")
        rows = [header] + [tuple(map(str, row)) for row in self.counts()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                           for i, (cell, width) in enumerate(zip(row, widths))) for row in rows]
        weights = ", ".join(f"{s.root.name} x{s.weight:g}" for s in self.sources)
        return "\n".join(lines) + f"\nloss weight per folder: {weights}"

    def accuracy_per_source(self, predicted) -> list:
        """Held-out accuracy of each folder: [{root, weight, num_test, test_accuracy}, ...] (accuracy None when a
        folder has no held-out images)."""
        predicted = np.asarray(predicted)
        labels = np.asarray(self.test.labels)
        origins = np.asarray(self.origins["test"])
        result = []
        for index, source in enumerate(self.sources):
            mask = origins == index
            accuracy = float(np.mean(predicted[mask] == labels[mask])) if mask.any() else None
            result.append({"root": str(source.root), "weight": source.weight, "num_test": int(mask.sum()),
                           "test_accuracy": None if accuracy is None else round(accuracy, 6),
                           "heldout_source": source.folder.heldout_source})
        return result


def _remap(split: Split, names: list, merged_names: list, origin: int, into: Split, origins: list) -> None:
    for path, label in zip(split.paths, split.labels):
        into.paths.append(path)
        into.labels.append(merged_names.index(names[label]))
        origins.append(origin)


def scan_sources(roots, weights=None, validation_split: float = 0.1, seed: int = 0) -> MergedFolder:
    """Read every folder in ROOTS and merge them by class name. WEIGHTS: one loss weight per folder (default 1)."""
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    if not roots:
        raise DataError("No --data folder given. Pass --data DIR (repeat it for several folders).")
    weights = [1.0] * len(roots) if not weights else [float(w) for w in weights]
    if len(weights) != len(roots):
        raise DataError(
            f"{len(weights)} --data-weight value(s) for {len(roots)} --data folder(s): give one weight per folder, "
            "in the same order (e.g. --data data/rps --data data/own --data-weight 1 --data-weight 3), or none."
        )
    if any(not w > 0 for w in weights):
        raise DataError(f"--data-weight must be greater than 0, got {weights}.")
    resolved = [Path(root).resolve() for root in roots]
    duplicates = sorted({str(r) for r in resolved if resolved.count(r) > 1})
    if duplicates:
        raise DataError(f"--data {duplicates[0]} is given more than once; give each folder once.")
    sources = [Source(Path(root).resolve(), weight, scan_image_folder(root, validation_split, seed))
               for root, weight in zip(roots, weights)]
    names = sorted({name for source in sources for name in source.folder.class_names})
    train, validation, test = Split(), Split(), Split()
    origins = {"train": [], "validation": [], "test": []}
    for index, source in enumerate(sources):
        folder = source.folder
        for split_name, into in (("train", train), ("validation", validation), ("test", test)):
            _remap(getattr(folder, split_name), folder.class_names, names, index, into, origins[split_name])
    root = Path(os.path.commonpath([str(s.folder.root) for s in sources])) if len(sources) > 1 \
        else sources[0].folder.root
    heldout = "+".join(sorted({s.folder.heldout_source for s in sources}))
    grouping = "+".join(sorted({s.folder.validation_grouping for s in sources}))
    skipped = [item for source in sources for item in source.folder.skipped]
    # Where the training images are, relative to ROOT (convert/ calibrates on them when no folder is given).
    train_folder = sources[0].folder.train_folder if len(sources) == 1 else "."
    return MergedFolder(root, names, train, validation, test, heldout, skipped, train_folder=train_folder,
                        validation_grouping=grouping, sources=sources, origins=origins)
