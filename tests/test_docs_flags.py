"""Every command-line flag the docs show (in code, where a reader copies it from) exists in the code: in an
argparse parser of train/, convert/, device/, deploy/, bench/ or scripts/, or in install.sh, the Makefile, a
shell script or the Ansible playbook. A renamed or removed flag left in a page fails here, naming the page.
Flags of other tools the pages quote (systemd-nspawn, pytest, Home Assistant, TF Serving) are listed below.
Reads files only: no network, no subprocess, well under a second."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "bench" / "results.md"])
PYTHON = ("device", "train", "convert", "deploy", "bench", "scripts")
SHELL = ["deploy/**/*.sh", "scripts/**/*.sh", "Makefile", "deploy/ansible/**/*.yml"]
# flags of other programs the pages quote, by program
OTHER_TOOLS = {
    "systemd-nspawn": {"console", "keep-unit", "kill-signal", "private-network", "register", "volatile"},
    "kill / systemctl": {"signal"},
    "pytest": {"durations"},
    "rpicam-hello": {"list-cameras"},
    "tar": {"exclude"},
    "hass": {"script", "skip-pip"},
    "tensorflow_model_server": {"rest"},  # --rest_api_port: the scan stops at the underscore
}
DOC_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])")


def known_flags() -> list[re.Pattern]:
    """Every flag the code defines; an f-string's {part} (--min-agreement-{fmt}) matches any word there."""
    found = set()
    for package in PYTHON:
        for path in (REPO / package).glob("**/*.py"):
            found.update(re.findall(r"""["']--([a-z0-9][a-z0-9{}_-]*)""", path.read_text()))
    for pattern in SHELL:
        for path in REPO.glob(pattern):
            found.update(re.findall(r"--([a-z][a-z0-9-]*)", path.read_text()))
    for flags in OTHER_TOOLS.values():
        found.update(flags)
    return [re.compile(re.sub(r"\\\{[^}]*\\\}", "[a-z0-9-]+", re.escape(flag)) + "$") for flag in found]


def flags_in_code(text: str) -> set[str]:
    """The --flags in a page's code blocks and code spans."""
    code = re.findall(r"```.*?```", text, re.DOTALL) + re.findall(r"`[^`\n]+`", re.sub(r"```.*?```", "", text,
                                                                                      flags=re.DOTALL))
    return {flag for snippet in code for flag in DOC_FLAG.findall(snippet)}


def unknown(text: str, patterns: list[re.Pattern]) -> list[str]:
    return sorted(flag for flag in flags_in_code(text) if not any(pattern.match(flag) for pattern in patterns))


@pytest.fixture(scope="module")
def patterns() -> list[re.Pattern]:
    return known_flags()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_flag_a_page_shows_exists(page, patterns):
    missing = unknown(page.read_text(), patterns)
    assert not missing, f"{page.relative_to(REPO)} shows flags no command has: {missing}"


def test_the_check_catches_a_renamed_flag(patterns):
    """--dataset exists (the daemon, capture), --data too (teach, train), and the parity flags made by an
    f-string; --datasets in a code block does not. A flag in prose (not code) is not read."""
    text = ("`python -m device --dataset D` and `python -m device teach --data D` and "
            "`--min-agreement-int8 0.98`\n```\npython -m device --datasets D --emit change\n```\n"
            "prose: --not-in-code is not checked")
    assert unknown(text, patterns) == ["datasets"]
