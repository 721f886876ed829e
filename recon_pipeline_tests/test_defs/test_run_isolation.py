"""Runs own their snapshots; fixes come only from a run's own, complete and fresh snapshots, under
the fixing lease (docs/behaviour.md §4, §10). The real job, in process, against the emulators,
on SQLite and a throwaway PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pandas as pd
import pytest

from recon_pipeline.clients.fixing_lease import FixingLease
from recon_pipeline.clients.frame_store import open_frame_store
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.domain.columns import SubscriptionCol
from recon_pipeline_tests.builders import ROLE_IDS
from recon_pipeline_tests.harness import TIMEZONE, Pipeline, running_pipeline
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    REPORT_ONLY,
    ROLE_CHANGES,
    scenario_community,
)

FIXING_STEPS = ["reconciliation_fixes", "reconciliation_run"]


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        yield pipeline


def _statuses(pipeline: Pipeline) -> dict[str, str]:
    return {
        "m_stale": pipeline.scalar(
            'SELECT "subscriptionStatus" FROM "Member" WHERE id = \'m_stale\''
        ),
        "t_gone": pipeline.scalar('SELECT "subscriptionStatus" FROM "Team" WHERE id = \'t_gone\''),
    }


def _drift(pipeline: Pipeline, run_id: str) -> pd.DataFrame:
    with open_frame_store(pipeline.database_url, None) as store:
        return store.read("drift_issues", local_day(TIMEZONE), run_id)


def test_two_runs_of_one_day_each_keep_their_own_snapshots(pipeline: Pipeline) -> None:
    first = pipeline.run()
    # Between the runs, someone hands m_missing (Discord 1002) their role by hand.
    pipeline.sandbox.discord.add_member("1002", roles=[ROLE_IDS["Lord"]])
    second = pipeline.run()

    assert first.success and second.success
    missing_first = set(_drift(pipeline, first.run_id)["member_id"])
    missing_second = set(_drift(pipeline, second.run_id)["member_id"])
    assert "m_missing" in missing_first
    assert "m_missing" not in missing_second
    assert pipeline.record(first.run_id)["issuesFound"] == len(EXPECTED_ISSUES)
    assert pipeline.record(second.run_id)["issuesFound"] == len(EXPECTED_ISSUES) - 1


def test_reexecuting_the_fixing_steps_of_a_fresh_complete_dry_run_applies_its_fixes(
    pipeline: Pipeline,
) -> None:
    dry = pipeline.run(auto_fix=False)

    again = pipeline.reexecute(dry.run_id, FIXING_STEPS, auto_fix=True)

    assert again.success
    assert len(pipeline.sandbox.discord.mutations) == ROLE_CHANGES
    assert pipeline.record(again.run_id)["issuesFixed"] == len(EXPECTED_ISSUES - REPORT_ONLY)


def test_reexecuting_the_fixing_steps_of_a_run_whose_snapshots_failed_the_check_changes_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stripe answers with no subscription at all (a key of another, empty account), while the
    # database has paying members: snapshots_complete fails and blocks the fixing step.
    community = scenario_community()
    community = dataclasses.replace(
        community, subscriptions=community.subscriptions.iloc[0:0].copy()
    )
    with running_pipeline(community, database_url, monkeypatch) as pipeline:
        before = _statuses(pipeline)
        parent = pipeline.run(auto_fix=True)
        assert not parent.success
        assert pipeline.sandbox.discord.mutations == []

        again = pipeline.reexecute(parent.run_id, FIXING_STEPS, auto_fix=True)

        assert again.success
        assert pipeline.sandbox.discord.mutations == []  # no role change
        assert _statuses(pipeline) == before  # no status write
        record = pipeline.record(again.run_id)
    assert record["autoFixEnabled"] is True
    assert record["issuesFixed"] == 0
    assert "failed snapshots_complete" in record["fixes_withheld"]
    assert "Stripe returned no subscriptions" in record["fixes_withheld"]
    assert {i["outcome"] for i in record["issues"]} <= {"skipped", "not_attempted"}


def test_reexecuting_the_fixing_steps_with_snapshots_older_than_the_maximum_age_changes_nothing(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _statuses(pipeline)
    dry = pipeline.run(auto_fix=False)
    # Six milliseconds: the parent's snapshots are older than that by the time it ends.
    monkeypatch.setenv("RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES", "0.0001")

    again = pipeline.reexecute(dry.run_id, FIXING_STEPS, auto_fix=True)

    assert again.success
    assert pipeline.sandbox.discord.mutations == []
    assert _statuses(pipeline) == before
    withheld = pipeline.record(again.run_id)["fixes_withheld"]
    assert "RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES=0.0 min" in withheld


def test_a_run_that_cannot_take_the_fixing_lease_fixes_nothing_and_names_the_holder(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILIATION_LEASE_WAIT_MINUTES", "0.01")
    engine = pipeline.engine()
    try:
        holder = FixingLease(engine, run_id="other-fixing-run", scope_id="other", ttl_s=600)
        assert holder.try_acquire() is None
        before = _statuses(pipeline)

        result = pipeline.run(auto_fix=True)

        assert result.success
        assert pipeline.sandbox.discord.mutations == []
        assert _statuses(pipeline) == before
        record = pipeline.record(result.run_id)
        run = pipeline.instance.get_run_by_id(result.run_id)
    finally:
        engine.dispose()
    assert record["autoFixEnabled"] is True
    assert "run other-fixing-run holds the fixing lease" in record["fixes_withheld"]
    assert run is not None
    assert run.tags["recon/auto_fix"] == "true"
    assert run.tags["recon/fixes_withheld"] == "lease_held"
    skipped = [i for i in record["issues"] if i["outcome"] == "skipped"]
    assert len(skipped) == len(EXPECTED_ISSUES - REPORT_ONLY)
    assert all("other-fixing-run" in i["outcomeDetail"] for i in skipped)


def test_a_run_whose_snapshots_predate_another_runs_fixes_withholds_its_plan(
    pipeline: Pipeline,
) -> None:
    dry = pipeline.run(auto_fix=False)
    # After the dry run's snapshots, another run held the lease and changed three things.
    engine = pipeline.engine()
    try:
        other = FixingLease(engine, run_id="other-fixing-run", scope_id="other", ttl_s=60)
        assert other.try_acquire() is None
        other.release(3)
    finally:
        engine.dispose()

    again = pipeline.reexecute(dry.run_id, FIXING_STEPS, auto_fix=True)

    assert again.success
    assert pipeline.sandbox.discord.mutations == []
    withheld = pipeline.record(again.run_id)["fixes_withheld"]
    assert "run other-fixing-run fixed drift after this run's snapshots were taken" in withheld


def test_status_downgrades_count_toward_the_guard(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stripe answers for another account: none of this community's customers has a
    # subscription, so every paying member looks lapsed (and the check still passes: Stripe
    # did return subscriptions).
    community = scenario_community()
    foreign = community.subscriptions.assign(
        **{SubscriptionCol.CUSTOMER_ID: "cus_other_" + community.subscriptions.index.astype(str)}
    )
    community = dataclasses.replace(community, subscriptions=foreign)
    with running_pipeline(community, database_url, monkeypatch) as pipeline:
        before = pipeline.scalar(
            """SELECT count(*) FROM "Member" WHERE "subscriptionStatus" = 'ACTIVE'"""
        )

        result = pipeline.run(auto_fix=True)

        assert result.success
        after = pipeline.scalar(
            """SELECT count(*) FROM "Member" WHERE "subscriptionStatus" = 'ACTIVE'"""
        )
        record = pipeline.record(result.run_id)
    assert after == before  # no paying member's cached status was rewritten
    downgrades = [
        i
        for i in record["issues"]
        if i["type"] == "STALE_DATABASE_STATUS" and i["databaseStatus"] == "ACTIVE"
    ]
    assert downgrades and all(i["outcome"] == "skipped" for i in downgrades)
    assert all("guard tripped" in i["outcomeDetail"] for i in downgrades)


def test_a_recomputation_beyond_the_retention_horizon_fails_naming_the_day_and_horizon(
    pipeline: Pipeline,
) -> None:
    result = pipeline.recompute("2026-03-02")

    assert not result.success
    failure = pipeline.record(result.run_id)["failure"]
    assert "2026-03-02" in failure
    assert "retention horizon" in failure
    assert "RECONCILIATION_SNAPSHOT_RETENTION_DAYS=35" in failure
