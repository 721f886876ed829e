"""A run that ends inside its fixing step still records which changes it made."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from recon_pipeline import fixing
from recon_pipeline_tests.harness import running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, issue_subject, scenario_community

CHANGES_BEFORE_THE_END = 3
NOTES = "SELECT action_key, outcome FROM recon_pipeline_fix_action"


def test_a_run_that_dies_while_fixing_records_its_issues_with_the_changes_it_made(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    call_discord = fixing._call_discord
    calls: list[str] = []

    def dies_on_the_fourth_change(action: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if len(calls) == CHANGES_BEFORE_THE_END:
            raise RuntimeError("the run worker lost its memory")
        calls.append(str(action["action_key"]))
        return call_discord(action, *args, **kwargs)

    monkeypatch.setattr(fixing, "_call_discord", dies_on_the_fourth_change)
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        result = pipeline.run(auto_fix=True)

        assert not result.success
        assert len(pipeline.sandbox.discord.mutations) == CHANGES_BEFORE_THE_END
        record = pipeline.record(result.run_id)
        engine = pipeline.engine()
        try:
            with engine.connect() as conn:
                notes = dict(conn.execute(sa.text(NOTES)).all())
        finally:
            engine.dispose()

    assert record is not None
    assert record["status"] == "failed"
    assert "reconciliation_fixes" in record["failure"]
    # Not "0 issues, 0 fixed": the drift table, with what the notes say of each change.
    assert record["issuesFound"] == len(EXPECTED_ISSUES)
    assert {(i["type"], issue_subject(i)) for i in record["issues"]} == EXPECTED_ISSUES
    assert sorted(k for k, v in notes.items() if v == "fixed") == sorted(calls)
    fixed = [i for i in record["issues"] if i["outcome"] == "fixed"]
    assert record["issuesFixed"] == len(fixed) >= 1
    taken = [change for i in fixed for change in i["actionsTaken"]]
    assert len(taken) <= CHANGES_BEFORE_THE_END
    [interrupted] = [i for i in record["issues"] if "interrupted" in i["outcomeDetail"]]
    assert interrupted["outcome"] == "failed"
    assert any(i["outcome"] == "not_attempted" for i in record["issues"])
