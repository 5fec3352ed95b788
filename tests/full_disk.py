"""A real full disk for tests: a small tmpfs mounted for the test (root only), filled to the last few pages.

    with tmpfs(tmp_path / "disk", "2m") as disk:
        shutil.copytree(bundle, disk / "bundle")
        fill(disk, leave_kb=0)          # now every new page fails with ENOSPC, as a full SD card does

No fake: the kernel answers ENOSPC. A test that needs one is skipped where mounting is not allowed."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

FILLER = ".filler"


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "2m"):
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def free_kb(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize // 1024


def fill(folder: Path, leave_kb: int = 0) -> None:
    """Write a filler file so that LEAVE_KB kilobytes stay free (tmpfs counts in 4 kB pages)."""
    with open(folder / FILLER, "ab") as stream:
        while free_kb(folder) > leave_kb:
            try:
                stream.write(b"\0" * min(64, free_kb(folder) - leave_kb) * 1024)
                stream.flush()
            except OSError:
                break
    assert free_kb(folder) <= leave_kb, free_kb(folder)
