"""The README is a front door: two screens, the two commands first, a link to every detail page under docs/, and no
link (there or in a docs page) to a file that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reversal_hf.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
MAX_README_LINES = 120
# A Markdown link's target, without its #anchor; web addresses are not checked.
LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)(?:#[^)\s]*)?\)")


def local_links(page: Path) -> list[Path]:
    return [(page.parent / target).resolve() for target in LINK.findall(page.read_text(encoding="utf-8"))]


def test_readme_fits_two_screens_and_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines: move detail to docs/"
    assert lines[3].startswith("make reproduce ") and lines[4].startswith("make test ")


def test_readme_links_every_docs_page() -> None:
    linked = set(local_links(README))
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_every_local_link_exists(page: Path) -> None:
    assert [str(path) for path in local_links(page) if not path.exists()] == []
