"""The held-out images parity is measured on: the bundle's heldout.txt, or --test-data DIR (class folders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConvertError
from device.layout import HELDOUT, find_images, parse_heldout_line


@dataclass
class HeldOut:
    paths: list[Path]
    labels: list[int]  # index into manifest.labels
    source: str  # where they came from, for the report


def load_heldout(bundle: Path, manifest, test_data: Path | None = None) -> HeldOut:
    if test_data is not None:
        return _from_class_folders(Path(test_data), manifest.labels)
    return _from_heldout_file(Path(bundle), manifest)


def _from_heldout_file(bundle: Path, manifest) -> HeldOut:
    listing = bundle / (manifest.heldout_file or HELDOUT)
    fix = "Pass --test-data DIR (one sub-folder per label) or re-export the bundle with python -m train."
    if not listing.is_file():
        raise ConvertError(f"{listing} is missing: no held-out images to measure parity on. {fix}")
    root = Path(manifest.dataset.root)
    if not root.is_absolute():
        root = (bundle / root) if (bundle / root).is_dir() else root
    paths, labels = [], []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = parse_heldout_line(line)
        except ValueError:
            entry = ("", "")
        if entry is None:
            continue
        label, relative = entry
        if not relative or label not in manifest.labels:
            raise ConvertError(
                f"{listing}:{number}: expected 'label<TAB>relative/path' with a label from labels.txt "
                f"({', '.join(manifest.labels)}), got {line!r}. {fix}"
            )
        paths.append(root / relative)
        labels.append(manifest.labels.index(label))
    if not paths:
        raise ConvertError(f"{listing} lists no images. {fix}")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ConvertError(
            f"{len(missing)} of {len(paths)} held-out images listed in {listing} are missing, e.g. {missing[0]} "
            f"(dataset.root in the manifest is {manifest.dataset.root}). Regenerate the data where the bundle "
            f"was trained ('make data'), or pass --test-data DIR."
        )
    return HeldOut(paths, labels, f"{listing.name} ({root})")


def _from_class_folders(folder: Path, label_names: list) -> HeldOut:
    fix = f"--test-data needs one sub-folder per label ({', '.join(label_names)}) holding images."
    if not folder.is_dir():
        raise ConvertError(f"--test-data {folder} does not exist. {fix}")
    paths, labels = [], []
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in label_names)
    if unknown:
        raise ConvertError(f"--test-data {folder}: folder(s) {', '.join(unknown)} are not labels of this model. {fix}")
    for index, name in enumerate(label_names):
        for path in find_images(folder / name) if (folder / name).is_dir() else []:
            paths.append(path)
            labels.append(index)
    if not paths:
        raise ConvertError(f"--test-data {folder} holds no images in label folders. {fix}")
    return HeldOut(paths, labels, f"--test-data {folder}")
