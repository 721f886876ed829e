"""The operator-facing documents list every setting the code reads, so they cannot drift apart;
the rules the code and tests cite are in the repository (docs/behaviour.md), under headings that
exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recon_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("variable", list(Settings.model_fields))
def test_readme_configuration_table_lists_every_setting(variable: str) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    assert f"`{variable}`" in table


def test_env_example_lists_every_setting_without_values() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    assignments = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    assert set(assignments) == set(Settings.model_fields)
    assert all(value == "" for value in assignments.values())


# --- docs/behaviour.md: the rules the code cites are in the repository ------------------------

BEHAVIOUR = ROOT / "docs" / "behaviour.md"
# A document outside the repository, cited by name or by path. Written so that these lines cite
# nothing themselves: `S[P]EC` is the product's specification, `[/]` a slash.
_OUTSIDE_DOCUMENT = re.compile(
    r"\bS[P]EC\b"
    r"|\b(?:STYLE|DAGSTER|PROTOCOLS)(?:\.md\b|\s*§)"
    r"|\.\./shared|[/]shared[/]|[/]work[/]|\bseed/\d"
)
# `docs/behaviour.md §4`, `docs/behaviour.md §1, §2`, `docs/behaviour.md §5 and §6`
_SECTION_CITATION = re.compile(r"behaviour\.md((?:(?:,|\s+and)?\s*§\d+)+)")
# `docs/behaviour.md#4-fixing-safety` (README, code), the same without `docs/` (in docs/), and
# `](#4-fixing-safety)` in docs/behaviour.md itself
_ANCHOR_LINK = re.compile(r"behaviour\.md#([^\s)\"'`>]+)")
_OWN_ANCHOR_LINK = re.compile(r"\]\(#([^\s)]+)\)")
# `[behaviour §4](docs/behaviour.md#4-fixing-safety)`: the number shown is the section linked
_NUMBERED_LINK = re.compile(r"\[[^\]]*§(\d+)\]\([^)\s]*behaviour\.md#([^)\s]+)\)")


def _project_texts() -> dict[str, str]:
    """The text of every file of the code, the tests, the benchmarks and the documents, by path
    (images and other binary files left out)."""
    paths = [
        ROOT / "README.md",
        ROOT / "Makefile",
        ROOT / "pyproject.toml",
        *sorted((ROOT / "benchmarks").glob("*.py")),
    ]
    for folder in ("recon_pipeline", "recon_pipeline_tests", "docs"):
        paths += sorted(
            p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    texts = {}
    for path in paths:
        data = path.read_bytes()
        if b"\0" not in data:
            texts[path.relative_to(ROOT).as_posix()] = data.decode("utf-8", errors="replace")
    return texts


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, code marks and punctuation dropped,
    spaces as hyphens."""
    text = heading.strip().replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _sections() -> dict[int, str]:
    """Section number → its heading's anchor, from the `## N. Title` headings of behaviour.md."""
    headings = re.findall(r"^## (.+)$", BEHAVIOUR.read_text(), re.MULTILINE)
    numbered = [re.match(r"(\d+)\. \S", heading) for heading in headings]
    assert all(numbered), f"every section heading is numbered: {headings}"
    return {int(m.group(1)): github_anchor(h) for m, h in zip(numbered, headings, strict=True) if m}


def test_behaviour_sections_are_numbered_in_order_with_distinct_anchors() -> None:
    sections = _sections()
    assert list(sections) == list(range(1, len(sections) + 1)) and len(sections) >= 10
    assert len(set(sections.values())) == len(sections)


def test_no_document_outside_the_repository_is_cited() -> None:
    texts = _project_texts()
    assert "docs/behaviour.md" in texts and "recon_pipeline/domain/drift.py" in texts
    cited = [
        f"{path}:{number}: {line.strip()}"
        for path, text in texts.items()
        for number, line in enumerate(text.splitlines(), 1)
        if _OUTSIDE_DOCUMENT.search(line)
    ]
    assert not cited, "cites a document outside the repository:\n" + "\n".join(cited)


def test_every_cited_behaviour_section_exists() -> None:
    sections = _sections()
    cited = [
        (path, int(number))
        for path, text in _project_texts().items()
        for numbers in _SECTION_CITATION.findall(text)
        for number in re.findall(r"§(\d+)", numbers)
    ]
    assert len(cited) >= 25, "the code and tests cite behaviour.md by section"
    missing = sorted({f"{path}: §{number}" for path, number in cited if number not in sections})
    assert not missing, "no such section in docs/behaviour.md:\n" + "\n".join(missing)


def test_every_link_into_behaviour_md_names_a_heading() -> None:
    sections = _sections()
    anchors = set(sections.values())
    texts = _project_texts()
    linked = [
        (path, anchor) for path, text in texts.items() for anchor in _ANCHOR_LINK.findall(text)
    ]
    own = "docs/behaviour.md"
    linked += [(own, anchor) for anchor in _OWN_ANCHOR_LINK.findall(texts[own])]
    assert len(linked) >= 5, "the README links to sections of docs/behaviour.md"
    broken = sorted({f"{path}: #{anchor}" for path, anchor in linked if anchor not in anchors})
    assert not broken, "no heading of docs/behaviour.md has this anchor:\n" + "\n".join(broken)
    for path, text in texts.items():
        for number, anchor in _NUMBERED_LINK.findall(text):
            assert sections.get(int(number)) == anchor, f"{path}: §{number} links to #{anchor}"
