"""docs/reliability.md names real tests, and its figures are the counts of its own tables."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "reliability.md").read_text()
TESTS = ROOT / "recon_pipeline_tests"


def _section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else None]


def _rows(title: str) -> list[list[str]]:
    lines = [line for line in _section(title).splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def _figure(name: str) -> str:
    [value] = [row[1] for row in _rows("Figures") if row[0] == name]
    return value


def test_every_test_the_document_names_exists() -> None:
    named = set(re.findall(r"`([\w/]+\.py)::(\w+)`", DOC))
    assert len(named) >= 30
    for path, test in named:
        [module] = [p for p in TESTS.rglob(Path(path).name) if p.as_posix().endswith(path)]
        assert f"def {test}(" in module.read_text(), f"{path}::{test} does not exist"


def test_figures_are_the_counts_of_the_tables() -> None:
    faults = _rows("Faults")
    assert int(_figure("faults tried")) == len(faults) >= 16
    assert int(_figure("faults survived")) == len(faults)
    assert int(_figure("bad configuration values tried")) == len(_rows("Bad configuration"))
    assert int(_figure("data anomalies tried")) == len(_rows("Bad data"))
    for zero in ("wrong removals", "lost records", "double fixes", "secret leaks"):
        assert _figure(zero) == "0"
