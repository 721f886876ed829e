"""Every reconciliation run's preflight (docs/behaviour.md §14): a fixing run (`auto_fix` in its
launch config, else RECONCILIATION_AUTO_FIX) whose bot cannot manage a managed role changes
nothing, fails naming the problem, records its row and tells the admins once; a dry run reports
the problem and succeeds; a verification never stops there and makes no preflight call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from recon_pipeline.sandbox.demo import SANDBOX_ADMIN_CHANNEL_ID
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, scenario_community


def _posts(pipeline: Pipeline) -> list[str]:
    return [m["content"] for m in pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)]


@dataclass(frozen=True)
class Fault:
    """What keeps the bot from managing a managed role, the check it fails, the words naming
    it and the fix the run gives."""

    make: Callable[[DiscordEmulator], None]
    check: str
    words: str
    fix: str


FAULTS = [
    pytest.param(
        Fault(lambda d: d.set_bot_top_position(d.position_of("Lord")), "bot role position",
              "'Lord'", "Move the bot's role above"),
        id="bot-below-lord",
    ),
    pytest.param(
        Fault(lambda d: d.set_manage_roles(False), "bot permission",
              "neither Manage Roles nor Administrator", "Manage Roles permission"),
        id="manage-roles-withdrawn",
    ),
]  # fmt: skip


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        yield pipeline


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("asked_by", ["launch config", "RECONCILIATION_AUTO_FIX"])
def test_a_fixing_run_stops_at_the_preflight_naming_the_problem(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, fault: Fault, asked_by: str
) -> None:
    fault.make(pipeline.sandbox.discord)
    if asked_by == "launch config":
        result = pipeline.run(auto_fix=True)
    else:  # no launch config: the deployment's setting decides
        monkeypatch.setenv("RECONCILIATION_AUTO_FIX", "true")
        result = pipeline.run()

    assert not result.success
    assert pipeline.sandbox.discord.mutations == []  # no role change was even tried
    listings = [r for r in pipeline.sandbox.discord.requests if r.path.endswith("/members")]
    assert listings == []  # it stopped before reading the member list
    record = pipeline.record(result.run_id)
    assert record is not None and record["status"] == "failed"
    assert record["autoFixEnabled"] is True
    assert "Preflight" in record["failure"] and fault.words in record["failure"]
    assert fault.fix in record["failure"]
    [notice] = _posts(pipeline)
    assert fault.words in notice


@pytest.mark.parametrize("fault", FAULTS)
def test_a_dry_run_reports_the_problem_and_succeeds(pipeline: Pipeline, fault: Fault) -> None:
    fault.make(pipeline.sandbox.discord)

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
    assert line["check"] == fault.check and fault.words in line["detail"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_verification_under_the_fault_succeeds_without_a_preflight_call(
    pipeline: Pipeline, fault: Fault
) -> None:
    parent = pipeline.run(auto_fix=True)
    assert parent.success
    fault.make(pipeline.sandbox.discord)
    discord = pipeline.sandbox.discord
    before = len(discord.requests)

    job = pipeline.definitions().resolve_job_def("verification_job")
    result = job.execute_in_process(
        instance=pipeline.instance,
        run_config={"ops": {"verification_report": {"config": {"parent_run_id": parent.run_id}}}},
        raise_on_error=False,
    )

    assert result.success
    paths = [r.path for r in discord.requests[before:]]
    assert any(p.endswith("/members") for p in paths)  # it read past where a preflight stops
    assert not any(p.endswith("/users/@me") for p in paths)
    record = pipeline.record(result.run_id)
    assert record["isVerificationRun"] is True and record["status"] == "succeeded"
