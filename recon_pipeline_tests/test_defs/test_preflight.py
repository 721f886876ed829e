"""Every reconciliation run's preflight (docs/behaviour.md §14): a fixing run whose bot cannot
manage a managed role changes nothing, fails naming the role, records its row and tells the
admins once; a dry run reports the problem and succeeds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recon_pipeline.sandbox.demo import SANDBOX_ADMIN_CHANNEL_ID
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, scenario_community


def _posts(pipeline: Pipeline) -> list[str]:
    return [m["content"] for m in pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)]


@pytest.fixture
def bot_below_lord(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        discord = pipeline.sandbox.discord
        discord.set_bot_top_position(discord.position_of("Lord"))
        yield pipeline


def test_a_fixing_run_stops_at_the_preflight_naming_the_role(bot_below_lord: Pipeline) -> None:
    pipeline = bot_below_lord

    result = pipeline.run(auto_fix=True)

    assert not result.success
    assert pipeline.sandbox.discord.mutations == []  # no role change was even tried
    listings = [r for r in pipeline.sandbox.discord.requests if r.path.endswith("/members")]
    assert listings == []  # it stopped before reading the member list
    record = pipeline.record(result.run_id)
    assert record is not None and record["status"] == "failed"
    assert "Preflight" in record["failure"] and "'Lord'" in record["failure"]
    assert "Move the bot's role above" in record["failure"]
    [notice] = _posts(pipeline)
    assert "'Lord'" in notice


def test_a_dry_run_reports_the_problem_and_succeeds(bot_below_lord: Pipeline) -> None:
    pipeline = bot_below_lord

    result = pipeline.run(auto_fix=False)

    assert result.success
    record = pipeline.record(result.run_id)
    assert record["issuesFound"] == len(EXPECTED_ISSUES)
    [roles] = [
        m
        for m in result.asset_materializations_for_node("discord_snapshot")
        if m.asset_key.path[-1] == "discord_roles"
    ]
    [line] = roles.metadata["preflight"].value
    assert line["check"] == "bot role position" and "'Lord'" in line["detail"]
