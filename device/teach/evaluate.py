"""Score a bundle (with its current head) on a folder of class folders, through the device's own loader,
decoding and preprocessing: accuracy, per-class precision and recall, a confusion matrix in Markdown, and a
contact sheet of the mistakes (image, truth, prediction, confidence) as a PNG drawn with Pillow.

    report = evaluate("artifacts/rps", "data/rps-own")
    print(report.markdown())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.layout import find_images

TILE = 128
CAPTION = 30
COLUMNS = 6
MAX_MISTAKES = 48


@dataclass
class Evaluation:
    bundle: str
    data: str
    head: str
    labels: list  # the rows and columns of the confusion matrix: the data's classes, then any other prediction
    confusion: list
    images: int
    accuracy: float
    mistakes: list = field(default_factory=list)  # (path, truth, predicted, confidence)

    def per_class(self) -> list:
        """[(label, precision or None, recall or None, support)] for every label."""
        matrix = np.asarray(self.confusion)
        rows = []
        for index, label in enumerate(self.labels):
            predicted, support = matrix[:, index].sum(), matrix[index].sum()
            correct = matrix[index, index]
            rows.append((label, correct / predicted if predicted else None, correct / support if support else None,
                         int(support)))
        return rows

    def markdown(self) -> str:
        def percent(value):
            return "-" if value is None else f"{value:.1%}"

        lines = [f"# Evaluation of {self.bundle} ({self.head})", "",
                 f"{self.images} images from {self.data}: accuracy **{self.accuracy:.1%}**, "
                 f"{len(self.mistakes)} mistakes.", "",
                 "| class | precision | recall | images |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {percent(p)} | {percent(r)} | {n} |" for label, p, r, n in self.per_class()]
        lines += ["", "Confusion matrix (rows: truth, columns: prediction):", "",
                  "| truth \\ predicted | " + " | ".join(self.labels) + " |",
                  "|---|" + "---:|" * len(self.labels)]
        lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |"
                  for label, row in zip(self.labels, self.confusion)]
        return "\n".join(lines) + "\n"


def evaluate(bundle, data, model: str = "int8", threads: int | None = None, region=None,
             state_dir=None) -> Evaluation:
    """Every image under DATA's class folders through the bundle's model and current head. REGION
    (device/regions/__init__.py): the frames labelled for it (DATA/regions.jsonl), cropped to its box, read with its head."""
    from device.sources import ImagesSource
    from device.teach.teaching import load_classifier_any

    classifier = load_classifier_any(bundle, model, threads, state_dir, region)
    root = Path(data)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    items = [(folder.name, path) for folder in folders for path in find_images(folder)]
    if region is not None:
        from device.teach.teaching import collect_region

        names, found = collect_region(data, region)
        items = [(names[index], path) for index, path in found]
        folders = [Path(name) for name in names]
    if not items:
        raise ValueError(f"{data} has no images in class folders (DATA/<class>/*.jpg): point --data at a folder "
                         "such as data/rps-own or data/rps/test.")
    truths = [folder.name for folder in folders if any(label == folder.name for label, _ in items)]
    labels = truths + [label for label in classifier.labels if label not in truths]
    matrix = np.zeros((len(labels), len(labels)), int)
    source = ImagesSource(paths=[path for _, path in items], loop=False)
    source.open()
    mistakes = []
    for truth, path in items:
        frame = source.decode(path)
        if frame is None:
            raise ValueError(f"{path} cannot be decoded as an image: delete it or replace it.")
        if region is not None:
            frame = region.crop(frame)
        probabilities = classifier.probabilities(frame)
        best = int(np.argmax(probabilities))
        predicted = classifier.labels[best]
        matrix[labels.index(truth), labels.index(predicted)] += 1
        if predicted != truth:
            mistakes.append((str(path), truth, predicted, float(probabilities[best])))
    head = classifier.name
    correct = int(np.trace(matrix))
    return Evaluation(str(bundle), str(data), head, labels, matrix.tolist(), len(items), correct / len(items),
                      mistakes)


def contact_sheet(mistakes: list, out_png, tile: int = TILE, columns: int = COLUMNS) -> Path | None:
    """The mistakes as a grid of tiles captioned 'truth -> predicted (confidence)'; None when there are none."""
    from PIL import Image, ImageDraw

    shown = mistakes[:MAX_MISTAKES]
    if not shown:
        return None
    rows = (len(shown) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * (tile + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for number, (path, truth, predicted, confidence) in enumerate(shown):
        x, y = (number % columns) * tile, (number // columns) * (tile + CAPTION)
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((tile, tile))
            sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
        draw.text((x + 3, y + tile + 2), f"{truth} -> {predicted}", fill=(160, 0, 0))
        draw.text((x + 3, y + tile + 15), f"{confidence:.0%}  {Path(path).name[:16]}", fill=(60, 60, 60))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
