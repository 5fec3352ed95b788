"""The one reading of a data-set path a user gives (HTTP, ``python -m device dataset``, the Teach view).

A frame is ``CLASS/NAME``: relative (never absolute), exactly two parts, no empty, ``.`` or ``..`` part and no
hidden part (``.deleted``, ``.uncertain`` in any spelling: a part that starts with a dot), CLASS a class name
and a real folder (not a link), NAME an image file name. The frame itself may be a symbolic link: it is
handled as the link (moved, deleted, restored as a link, never its target). Move, remove, delete, restore and
the image view all come through here, so one check holds for every entry. A link that points outside the
data set (or nowhere) is not a frame: it is refused, and left alone.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from device.layout import is_image_file
from device.teach.dataset.errors import DatasetError

CLASS_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")  # always fullmatch: match(...$) lets "paper\n" through
EXAMPLE = "paper/20261129-010203-0007.jpg"


def check_class_name(name) -> str:
    if not isinstance(name, str) or not CLASS_NAME.fullmatch(name):
        raise DatasetError(f"class name {name!r} is not allowed: use 1-40 letters, digits, '-' or '_' "
                           "(e.g. paper, rock, nothing).")
    return name


def parse_frame(relative) -> tuple:
    """RELATIVE checked as a data-set path -> (class, file name); DatasetError for anything else. Looks at
    the text only (restore names frames that are not there yet)."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        raise DatasetError(f"file {relative!r} is not a data-set path such as {EXAMPLE}.")
    parts = relative.split("/")
    if (relative.startswith("/") or len(parts) != 2 or any(not part or part.startswith(".") for part in parts)
            or not CLASS_NAME.fullmatch(parts[0]) or not is_image_file(parts[1])):
        raise DatasetError(f"file {relative!r} is outside the data set: use a path from /api/dataset such as "
                           f"{EXAMPLE}.")
    return parts[0], parts[1]


def frame_path(root: Path, relative) -> Path:
    """RELATIVE -> ROOT/CLASS/NAME, an existing file, or a link to a file inside the data set (returned as the
    link, never its target); DatasetError otherwise."""
    label, name = parse_frame(relative)
    try:
        if not stat.S_ISDIR(os.lstat(root / label).st_mode):
            raise DatasetError(f"file {relative!r}: {label} is not a class folder (a link?). Use a path from "
                               "/api/dataset.")
        mode = os.lstat(root / label / name).st_mode
    except FileNotFoundError:
        raise DatasetError(f"file {relative!r} does not exist (deleted already?). Reload the list.") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise DatasetError(f"file {relative!r} is not a frame: use a path from /api/dataset.")
    path = root / label / name
    if stat.S_ISLNK(mode):  # a frame of this data set only when it points at a file inside it (never /etc/...)
        target = Path(os.path.realpath(path))
        if Path(os.path.realpath(root)) not in target.parents or not target.is_file():
            raise DatasetError(f"file {relative!r} links outside the data set (or nowhere): it is left alone; "
                               "remove the link in a shell if you do not want it.")
    return path


def frame_bytes(path: Path) -> int:
    """What a frame adds to the data set's size (a link: its target's, as the size count reads it; 0 when
    dangling)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
