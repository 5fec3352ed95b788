"""docs/fleets.md shows `make fleet`'s report as the code prints it: the header of the page's example has the
columns of deploy/fleet.py's format_report, in its order. A column added to the report without the page (or the
other way round) fails here. Reads one file and calls one pure function: no ansible, no network."""

from __future__ import annotations

import re
from pathlib import Path

from deploy.fleet import format_report

REPO = Path(__file__).resolve().parent.parent


def header(report: str) -> list[str]:
    """The column titles of a report: the line after 'edgecam fleet report: release ...'."""
    lines = report.splitlines()
    index = next(number for number, line in enumerate(lines) if line.startswith("edgecam fleet report:"))
    return re.findall(r"[A-Z][A-Z0-9_]*", lines[index + 1])


def test_the_pages_example_report_has_the_codes_columns():
    page = (REPO / "docs" / "fleets.md").read_text()
    example = page[page.index("edgecam fleet report:"):]
    row = {"host": "pi-1", "result": "updated", "release": "r", "model": "int8", "sha256": "0" * 12}
    assert header(example) == header(format_report("r", [row]))
