"""'Have I taught enough?': per class, the cross-validated accuracy, what it is confused with, whether more
frames still help (the learning curve), turned into one-line advice for the Teach view and the CLI.

    rows = per_class(labels, truth, predicted, curve)   # [{label, accuracy, frames, confused_with, more_frames_help}]
    lines = advise(rows, method)
"""

from __future__ import annotations

import numpy as np

MIN_FOR_CURVE = 8  # frames of a class below which a learning curve says nothing (null)
STILL_HELPS = 0.05  # accuracy gained from half to all the frames that means more frames still help
CONFUSED = 0.1  # a confusion worth a line: at least this share of a class's frames (and at least 2)
GOOD = 0.95


def per_class(labels: list, truth: np.ndarray, predicted: np.ndarray, curve: dict | None) -> list:
    """One row per class: {label, accuracy, frames, confused_with: [{label, count}] (most first),
    more_frames_help: True/False/None (None: too few frames, or no curve)}."""
    rows = []
    for index, label in enumerate(labels):
        members = truth == index
        frames = int(members.sum())
        accuracy = float(np.mean(predicted[members] == index)) if frames else None
        counts = np.bincount(predicted[members], minlength=len(labels))
        confused = [{"label": labels[other], "count": int(counts[other])}
                    for other in np.argsort(-counts, kind="stable") if other != index and counts[other]]
        helps = None
        if curve and frames >= MIN_FOR_CURVE and accuracy is not None:
            half = float(np.mean(curve[0.5][members] == index))
            helps = bool(accuracy < 1.0 and accuracy - half >= STILL_HELPS)
        rows.append({"label": label, "accuracy": None if accuracy is None else round(accuracy, 4), "frames": frames,
                     "confused_with": confused, "more_frames_help": helps})
    return rows


def curve_points(truth: np.ndarray, predicted: np.ndarray, curve: dict | None, labels: list) -> dict | None:
    """{"fractions": [...], "accuracy": [...], "per_class": {label: [...]}} for the result (None: no curve)."""
    if not curve:
        return None
    points = sorted(curve) + [1.0]
    columns = [curve[f] for f in sorted(curve)] + [predicted]
    return {"fractions": points, "accuracy": [round(float(np.mean(c == truth)), 4) for c in columns],
            "per_class": {label: [round(float(np.mean(c[truth == i] == i)), 4) if np.any(truth == i) else None
                                  for c in columns] for i, label in enumerate(labels)}}


def advise(rows: list, method: str, minimum_softmax: int) -> list:
    """One line per thing worth doing, most useful first."""
    lines = []
    for row in rows:
        if row["frames"] < minimum_softmax:
            lines.append(f"{row['label']} has only {row['frames']} frame(s): taught by nearest class mean. Record at "
                         f"least {minimum_softmax} (20 or more teach much better) for a checked, sharper fit.")
    for row in sorted(rows, key=lambda r: r["accuracy"] if r["accuracy"] is not None else 1.0):
        for other in row["confused_with"]:
            if other["count"] >= 2 and other["count"] >= CONFUSED * row["frames"]:
                lines.append(f"{row['label']} is confused with {other['label']} in {other['count']} of {row['frames']} "
                             f"frames: record {row['label']} from other angles, distances and light, where it looks "
                             f"least like {other['label']}.")
    for row in rows:
        if row["more_frames_help"] is True:
            lines.append(f"more frames of {row['label']} still help ({row['accuracy']:.0%} with all {row['frames']}, "
                         f"less with half): record more.")
        elif row["more_frames_help"] is False and (row["accuracy"] or 0) >= GOOD:
            lines.append(f"more frames of {row['label']} no longer help ({row['accuracy']:.0%} cross-validated).")
        elif row["more_frames_help"] is False:
            lines.append(f"more frames of {row['label']} like these no longer help ({row['accuracy']:.0%}): record it "
                         "differently (background, light, distance), or check its frames' labels.")
    if not lines and method == "softmax":
        lines.append("every class is learnt and more frames no longer help; record where it still errs.")
    return lines
