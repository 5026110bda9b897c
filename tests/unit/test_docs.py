"""Every relative link and anchor in the hand-written docs points somewhere real."""

from pathlib import Path

import pytest

from worker.codec.schema_files import link_problems

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_are_live(doc: Path) -> None:
    assert link_problems(doc) == []


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make run", "make test"]


def test_no_merge_conflict_markers_are_left() -> None:
    """A merge once left `<<<<<<<` in the README; the links test did not see it."""
    markers = ("<" * 7 + " ", "=" * 7 + "\n", ">" * 7 + " ")
    roots = [*DOCS, *sorted((ROOT / "worker").rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in roots
        for number, line in enumerate(path.read_text().splitlines(keepends=True), 1)
        if line.startswith(markers)
    ]
    assert not found, found
