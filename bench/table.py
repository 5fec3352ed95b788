"""The benchmark table's rows and its plain-text form (bench/__main__.py and bench/regions.py write rows)."""

from __future__ import annotations


def row(name, value, limit=None, ok=None) -> tuple:
    verdict = "" if ok is None else ("PASS" if ok else "FAIL")
    return name, value, limit or "", verdict


def plain(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows)
