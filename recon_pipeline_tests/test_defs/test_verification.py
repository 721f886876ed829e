"""Verification runs and `verification_sensor` (docs/behaviour.md §7)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from recon_pipeline.defs.sensors import build_verification_sensor
from recon_pipeline_tests.builders import ROLE_IDS
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, REPORT_ONLY, scenario_community

FIXED = len(EXPECTED_ISSUES - REPORT_ONLY)


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as p:
        yield p


def _verify(pipeline: Pipeline, parent_run_id: str) -> dg.ExecuteInProcessResult:
    job = pipeline.definitions().resolve_job_def("verification_job")
    return job.execute_in_process(
        instance=pipeline.instance,
        run_config={"ops": {"verification_report": {"config": {"parent_run_id": parent_run_id}}}},
        raise_on_error=False,
    )


def _summary(result: dg.ExecuteInProcessResult) -> str:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["summary"].value


def test_verification_after_fixes_finds_nothing_persisting(pipeline: Pipeline) -> None:
    parent = pipeline.run(auto_fix=True)
    mutations_after_fixing = len(pipeline.sandbox.discord.mutations)

    result = _verify(pipeline, parent.run_id)

    assert result.success
    assert _summary(result) == f"0 of {FIXED} fixed issues persist"
    record = pipeline.record(result.run_id)
    assert record["isVerificationRun"] is True
    assert record["triggeredBy"] == "verification"
    assert record["autoFixEnabled"] is False
    assert record["issuesFound"] == 0 and record["issues"] == []
    link = "SELECT parent_run_id FROM recon_pipeline_run WHERE run_id = :run_id"
    assert pipeline.scalar(link, run_id=result.run_id) == parent.run_id
    assert len(pipeline.sandbox.discord.mutations) == mutations_after_fixing  # never fixes
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "no_high_severity_drift_left" and check.passed


def test_verification_lists_the_fixes_that_did_not_hold(pipeline: Pipeline) -> None:
    parent = pipeline.run(auto_fix=True)
    # Someone gives the lapsed member Knight back after the fix.
    pipeline.sandbox.discord.add_member("1003", roles=(ROLE_IDS["Knight"], ROLE_IDS["Moderator"]))

    result = _verify(pipeline, parent.run_id)

    assert result.success
    assert _summary(result) == f"1 of {FIXED} fixed issues persist"
    record = pipeline.record(result.run_id)
    [issue] = record["issues"]
    assert (issue["type"], issue["memberId"], issue["persists"]) == (
        "UNAUTHORIZED_ACCESS",
        "m_unauth",
        True,
    )
    [check] = result.get_asset_check_evaluations()
    assert not check.passed  # HIGH-severity drift is back


@pytest.mark.parametrize("parent", ["no-such-run", "verification"])
def test_verification_refuses_a_parent_that_is_not_a_reconciliation_run(
    pipeline: Pipeline, parent: str
) -> None:
    if parent == "verification":
        parent = _verify(pipeline, pipeline.run(auto_fix=True).run_id).run_id

    result = _verify(pipeline, parent)

    assert not result.success
    record = pipeline.record(result.run_id)
    assert record["status"] == "failed"
    assert record["isVerificationRun"] is True and record["triggeredBy"] == "verification"
    expected = (
        "No ReconciliationRun has id" if parent == "no-such-run" else "is itself a verification"
    )
    assert expected in record["failure"]


def _tick(
    pipeline: Pipeline, *, now: float, delay_minutes: float = 60, cursor: str | None = None
) -> dg.SensorExecutionData:
    sensor = build_verification_sensor(delay_minutes, now=lambda: now)
    context = dg.build_sensor_context(instance=pipeline.instance, cursor=cursor)
    return sensor.evaluate_tick(context)


def _ended(pipeline: Pipeline, run_id: str) -> float:
    return pipeline.instance.get_run_record_by_id(run_id).end_time


def test_sensor_waits_for_the_delay_then_requests_one_verification(pipeline: Pipeline) -> None:
    fixing = pipeline.run(auto_fix=True)
    ended = _ended(pipeline, fixing.run_id)

    early = _tick(pipeline, now=ended + 59 * 60)
    due = _tick(pipeline, now=ended + 60 * 60)

    assert early.run_requests == []
    assert "not yet 60 minute(s) old" in early.skip_message
    [request] = due.run_requests
    assert request.run_key == f"verify-{fixing.run_id}"
    assert request.tags["recon/parent_run_id"] == fixing.run_id
    config = request.run_config["ops"]["verification_report"]["config"]
    assert config == {"parent_run_id": fixing.run_id}
    dg.validate_run_config(
        pipeline.definitions().resolve_job_def("verification_job"), request.run_config
    )


def test_sensor_requests_each_run_once_across_ticks_and_a_restart(pipeline: Pipeline) -> None:
    first = pipeline.run(auto_fix=True)
    later = _ended(pipeline, first.run_id) + 3600

    tick = _tick(pipeline, now=later)
    again = _tick(pipeline, now=later + 600, cursor=tick.cursor)
    # A restarted daemon builds the sensor anew and resumes from the stored cursor.
    restarted = _tick(pipeline, now=later + 1200, cursor=tick.cursor)

    assert [r.run_key for r in tick.run_requests] == [f"verify-{first.run_id}"]
    assert again.run_requests == [] and restarted.run_requests == []


def test_sensor_fractional_delay_in_minutes(pipeline: Pipeline) -> None:
    fixing = pipeline.run(auto_fix=True)
    ended = _ended(pipeline, fixing.run_id)

    assert _tick(pipeline, now=ended + 5, delay_minutes=0.1).run_requests == []
    assert len(_tick(pipeline, now=ended + 6, delay_minutes=0.1).run_requests) == 1


def test_sensor_ignores_dry_runs_and_verification_runs(pipeline: Pipeline) -> None:
    dry = pipeline.run()
    fixing = pipeline.run(auto_fix=True)
    verification = _verify(pipeline, fixing.run_id)
    assert dry.success and verification.success
    much_later = _ended(pipeline, verification.run_id) + 10 * 3600

    tick = _tick(pipeline, now=much_later)

    assert [r.run_key for r in tick.run_requests] == [f"verify-{fixing.run_id}"]
