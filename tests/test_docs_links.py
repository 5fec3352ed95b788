"""The docs a maker follows: every relative link and every #anchor in README.md, docs/*.md and bench/results.md
points at a file that exists and a heading (or an explicit HTML id) that is there, with GitHub's anchor rules;
every command-line flag the docs show exists in the code. Reads files only: no network, well under a second.

The checker is tested too, on small texts written here, so a checker that silently accepts everything fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "bench" / "results.md"])

FENCE = re.compile(r"^(\s*)(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\".*\")?\s*$")
HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
HTML_ID = re.compile(r"""<a\s+[^>]*(?:name|id)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: links and headings in code are not links."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(2)
            elif match.group(2) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (no markup), lower case, punctuation dropped (letters,
    digits, '-', '_' and spaces kept), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = CODE_SPAN.sub(lambda match: match.group(2), text)
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = re.sub(r"(\*\*|__|\*|(?<!\w)_|_(?!\w))", "", text)  # emphasis marks (not underscores inside words)
    text = text.strip().lower()
    text = "".join(character for character in text if character.isalnum() or character in "-_ ")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page has: its headings' slugs (a repeated one gets -1, -2, ...) and explicit HTML ids."""
    found, seen = set(), {}
    for _, line in prose_lines(text):
        found.update(HTML_ID.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image, HTML link or image and reference definition outside
    code."""
    found = []
    for number, line in prose_lines(text):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1)))
            continue
        prose = CODE_SPAN.sub("", line)
        for target in INLINE_LINK.findall(prose) + HTML_LINK.findall(prose):
            found.append((number, target))
    return found


def broken(page: Path, text: str | None = None) -> list[str]:
    """What is wrong with the page's local links: a missing file or a missing anchor, one line each."""
    text = page.read_text() if text is None else text
    problems = []
    for number, target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:, ...: not local
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{page.relative_to(REPO) if page.is_relative_to(REPO) else page}:{number}"
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            problems.append(f"{where}: {target}: no such file {destination}")
            continue
        if not anchor:
            continue
        if destination.is_dir() or destination.suffix.lower() != ".md":
            problems.append(f"{where}: {target}: an anchor into a file that is not Markdown")
            continue
        if anchor not in anchors(destination.read_text() if destination != page else text):
            problems.append(f"{where}: {target}: no heading or id '{anchor}' in {destination.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_local_link_and_anchor_resolves(page):
    assert not broken(page), "\n".join(broken(page))


def test_the_readme_links_the_pages_a_maker_needs():
    """The landing page leads to every page in docs/ (a page nobody links to is a page nobody reads)."""
    linked = {(REPO / target.partition("#")[0]).resolve() for _, target in links((REPO / "README.md").read_text())
              if not re.match(r"^[a-z]+:", target)}
    orphans = [page.name for page in sorted((REPO / "docs").glob("*.md")) if page.resolve() not in linked]
    assert not orphans, f"README.md links no page {orphans}"


# ---- the checker itself --------------------------------------------------------------------------------------
@pytest.mark.parametrize("heading, expected", [
    ("Exit codes", "exit-codes"),
    ("The `edgecam` command", "the-edgecam-command"),
    ("Home Assistant: entities, an automation", "home-assistant-entities-an-automation"),
    ("What exit 2 and `StartLimitBurst` mean", "what-exit-2-and-startlimitburst-mean"),
    ("Own objects: teach, --init-from or MobileNet?", "own-objects-teach---init-from-or-mobilenet"),
    ("**Measured** on / not yet", "measured-on--not-yet"),
    ("state_dir and [links](x.md)", "state_dir-and-links"),
])
def test_slugs_follow_githubs_rules(heading, expected):
    assert slug(heading) == expected


def test_the_checker_finds_a_missing_file_a_missing_anchor_and_ignores_code(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n## Same\n## Same\n")
    page = tmp_path / "page.md"
    text = ("# Top\n[ok](other.md#same-1) [ok](#top) ![img](other.md) [web](https://example.com/x#y)\n"
            "[gone](missing.md) [bad anchor](other.md#nowhere) `[in code](missing-too.md)`\n"
            "```\n[in a block](missing-three.md)\n# not a heading\n```\n[x](#not-a-heading)\n[ref]: other.md#other\n"
            '<img src="gone.png" width="49%"> <a href="other.md#same">ok</a>\n')
    page.write_text(text)
    problems = broken(page)
    assert len(problems) == 4, problems
    assert "missing.md" in problems[0] and "no heading or id 'nowhere'" in problems[1]
    assert "'not-a-heading'" in problems[2] and "gone.png" in problems[3]
