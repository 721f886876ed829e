"""The operator-facing documents list every setting the code reads, so they cannot drift apart."""

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
