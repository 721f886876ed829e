"""The whole reconciliation job, in-process, on SQLite and PostgreSQL, against the emulators."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import psycopg
import pytest
from dagster import serialize_value

from recon_pipeline.definitions import build_resources
from recon_pipeline.defs.assets.reconcile import build_drift_asset
from recon_pipeline.defs.assets.snapshots import build_snapshot_assets
from recon_pipeline.defs.partitions import daily_partitions, local_day
from recon_pipeline.domain.columns import GuildMemberRoleCol
from recon_pipeline.domain.report import issues_json
from recon_pipeline.sandbox.community import Community
from recon_pipeline.sandbox.demo import (
    SANDBOX_ADMIN_CHANNEL_ID,
    SANDBOX_BOT_TOKEN,
    SANDBOX_STRIPE_KEY,
    demo_community,
)
from recon_pipeline.sandbox.discord_emulator import RequestRecord
from recon_pipeline.settings import load_settings
from recon_pipeline_tests.app_schema import create_app_schema
from recon_pipeline_tests.builders import ROLE_IDS, Snapshot, account, guild, sub
from recon_pipeline_tests.harness import TIMEZONE, Pipeline, running_pipeline
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    REPORT_ONLY,
    ROLE_CHANGES,
    ROLES_AFTER_FIX,
    STATUSES_AFTER_FIX,
    issue_subject,
    scenario_community,
)


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as p:
        yield p


def _issues(record: dict) -> set[tuple[str, str]]:
    return {(i["type"], issue_subject(i)) for i in record["issues"]}


def test_dry_run_records_every_issue_and_changes_nothing(pipeline: Pipeline) -> None:
    before = pipeline.sandbox.discord.all_member_roles()

    result = pipeline.run()

    assert result.success
    record = pipeline.record(result.run_id)
    assert record is not None
    assert _issues(record) == EXPECTED_ISSUES
    assert record["issuesFound"] == len(EXPECTED_ISSUES)
    assert record["issuesFixed"] == 0
    assert record["autoFixEnabled"] is False
    assert record["triggeredBy"] == "manual"
    assert record["membersChecked"] == 10 and record["teamsChecked"] == 2
    assert record["completedAt"] >= record["startedAt"]
    assert record["status"] == "succeeded"
    assert {i["outcome"] for i in record["issues"]} == {"skipped", "not_attempted"}
    assert pipeline.sandbox.discord.mutations == []
    assert pipeline.sandbox.discord.all_member_roles() == before
    assert pipeline.scalar("""SELECT "subscriptionStatus" FROM "Member" WHERE id='m_stale'""") == (
        "CANCELLED"
    )


def test_fix_run_reaches_expected_roles_with_one_call_per_change(pipeline: Pipeline) -> None:
    result = pipeline.run(auto_fix=True)

    assert result.success
    discord = pipeline.sandbox.discord
    roles = {uid: set(r) for uid, r in discord.all_member_roles().items() if uid in ROLES_AFTER_FIX}
    assert roles == ROLES_AFTER_FIX
    assert len(discord.mutations) == ROLE_CHANGES
    assert all(m.status == 204 for m in discord.mutations)
    assert all(result.run_id in m.reason for m in discord.mutations)
    for (table, key), status in STATUSES_AFTER_FIX.items():
        sql = f'SELECT "subscriptionStatus" FROM "{table}" WHERE id = :key'
        assert pipeline.scalar(sql, key=key) == status
    record = pipeline.record(result.run_id)
    fixed = {(i["type"], issue_subject(i)) for i in record["issues"] if i["outcome"] == "fixed"}
    assert fixed == EXPECTED_ISSUES - REPORT_ONLY
    assert record["issuesFixed"] == len(EXPECTED_ISSUES - REPORT_ONLY)
    assert record["autoFixEnabled"] is True

    events = serialize_value(pipeline.instance.all_logs(result.run_id))
    stored_config = serialize_value(pipeline.instance.get_run_by_id(result.run_id).run_config)
    for secret in (SANDBOX_STRIPE_KEY, SANDBOX_BOT_TOKEN):
        assert secret not in events and secret not in stored_config
        assert secret not in str(record)

    again = pipeline.run(auto_fix=True)

    assert again.success
    assert _issues(pipeline.record(again.run_id)) == REPORT_ONLY
    assert len(discord.mutations) == ROLE_CHANGES


def _with_orphans(count: int):
    """The scenario plus `count` unknown accounts holding Squire: removals enough to trip the
    guard (floor 5, a quarter of the role holders)."""
    community = scenario_community()
    extra = pd.DataFrame(
        {
            GuildMemberRoleCol.DISCORD_ID: [str(5000 + i) for i in range(count)],
            GuildMemberRoleCol.IS_BOT: False,
            GuildMemberRoleCol.ROLE_ID: ROLE_IDS["Squire"],
        }
    )
    rows = pd.concat([community.guild_member_roles, extra], ignore_index=True)
    return dataclasses.replace(community, guild_member_roles=rows)


@pytest.mark.parametrize("override", [False, True])
def test_guard_holds_back_removals_but_not_grants(
    database_url: str, monkeypatch: pytest.MonkeyPatch, override: bool
) -> None:
    with running_pipeline(_with_orphans(12), database_url, monkeypatch) as pipeline:
        result = pipeline.run(auto_fix=True, override_guard=override)

        assert result.success
        roles = pipeline.sandbox.discord.all_member_roles()
        record = pipeline.record(result.run_id)
    outcomes = {(i["type"], issue_subject(i)): i for i in record["issues"]}
    removals = [
        i for i in record["issues"] if i["type"] in ("UNAUTHORIZED_ACCESS", "ORPHANED_ACCESS")
    ]
    assert len(removals) == 15
    assert roles["1002"] == {ROLE_IDS["Lord"]}  # MISSING_ACCESS granted either way
    assert roles["1004"] == {ROLE_IDS["Knight"]}  # ROLE_MISMATCH swapped either way
    if override:
        assert all(i["outcome"] == "fixed" for i in removals)
        assert roles["5000"] == set() and roles["1003"] == {ROLE_IDS["Moderator"]}
    else:
        assert all(i["outcome"] == "skipped" for i in removals)
        assert all("guard tripped" in i["outcomeDetail"] for i in removals)
        assert roles["5000"] == {ROLE_IDS["Squire"]}
        assert roles["1003"] == {ROLE_IDS["Knight"], ROLE_IDS["Moderator"]}
    assert outcomes[("MISSING_ACCESS", "m_missing")]["outcome"] == "fixed"


def test_stripe_failing_on_a_later_page_fails_the_run_without_fixes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    community = demo_community()
    assert len(community.subscriptions) > 200  # three pages of 100
    with running_pipeline(community, database_url, monkeypatch) as pipeline:
        pipeline.sandbox.stripe.fail_page(2, status=500, should_retry=False)

        result = pipeline.run(auto_fix=True)

        assert not result.success
        assert pipeline.sandbox.discord.mutations == []
        record = pipeline.record(result.run_id)
    assert record is not None
    assert record["status"] == "failed"
    assert record["completedAt"] is not None
    assert "stripe_subscriptions" in record["failure"]
    assert "Stripe snapshot incomplete" in record["failure"]
    assert record["issuesFixed"] == 0
    assert record["autoFixEnabled"] is True


def test_a_past_day_cannot_be_snapshotted(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        result = pipeline.run(partition="2026-02-01")

        assert not result.success
        assert pipeline.sandbox.stripe.requests == []
        record = pipeline.record(result.run_id)
    assert "Cannot snapshot 2026-02-01" in record["failure"]


def test_job_on_the_original_apps_database_touches_only_what_it_fixes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's own migrations and rows, in a Prisma schema: an owner and a debtor seat of team
    # Acme, whose cached status says CANCELLED while Stripe says active.
    create_app_schema(postgres_url, schema="App")
    with psycopg.connect(postgres_url) as conn:
        conn.execute("""UPDATE "App"."Team" SET "subscriptionStatus" = 'CANCELLED'""")
        before = conn.execute("""SELECT * FROM "App"."Member" ORDER BY id""").fetchall()
    frames = Snapshot(
        subs=[sub("cus_acme", "active")],
        guild=guild(account("1001", "Knight", "Events"), account("1002")),
    ).frames()
    community = Community(
        frames["members"],
        frames["teams"],
        frames["subscriptions"],
        frames["guild_member_roles"],
        frames["guild_roles"],
    )
    with running_pipeline(community, f"{postgres_url}?schema=App", monkeypatch, seed=False) as p:
        result = p.run(auto_fix=True)

        assert result.success
        roles = p.sandbox.discord.all_member_roles()
    assert roles["1001"] == {ROLE_IDS["Lord"], ROLE_IDS["Events"]}  # owner of a paying team
    assert roles["1002"] == {ROLE_IDS["Debtor"]}
    with psycopg.connect(postgres_url) as conn:
        team_status = conn.execute("""SELECT "subscriptionStatus" FROM "App"."Team" """).fetchone()
        after = conn.execute("""SELECT * FROM "App"."Member" ORDER BY id""").fetchall()
        run = conn.execute(
            """SELECT "triggeredBy", "issuesFound", "issuesFixed", issues
               FROM "App"."ReconciliationRun" WHERE id = %s""",
            (result.run_id,),
        ).fetchone()
        public_tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert team_status == ("ACTIVE",)
    assert after == before
    assert run[:3] == ("manual", 3, 3)
    assert {i["type"] for i in run[3]} == {
        "ROLE_MISMATCH",
        "DEBTOR_MISMATCH",
        "STALE_DATABASE_STATUS",
    }
    assert public_tables == (0,)


def test_fixes_are_never_applied_from_snapshots_this_run_did_not_take(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        assert pipeline.run().success  # today's snapshots, from a dry run
        # The unauthorised member pays again after the snapshot was taken.
        pipeline.sandbox.stripe.add_subscription(
            "sub_back", customer="cus_unauth", status="active", created=1_800_000_000
        )
        job = pipeline.definitions().resolve_job_def("reconciliation_job")

        downstream = job.execute_in_process(
            instance=pipeline.instance,
            partition_key=local_day(TIMEZONE),
            asset_selection=[
                dg.AssetKey("drift_issues"),
                dg.AssetKey("reconciliation_fixes"),
                dg.AssetKey("reconciliation_run"),
            ],
            run_config={"ops": {"reconciliation_fixes": {"config": {"auto_fix": True}}}},
        )

        assert downstream.success
        assert pipeline.sandbox.discord.mutations == []
        assert ROLE_IDS["Knight"] in pipeline.sandbox.discord.member_roles("1003")
        record = pipeline.record(downstream.run_id)
    # Fixes were asked for and withheld: the record says so, and never calls it a dry run.
    assert record["autoFixEnabled"] is True
    assert "were not taken by this run" in record["fixes_withheld"]
    assert {i["outcome"] for i in record["issues"]} <= {"skipped", "not_attempted"}
    assert any("were not taken by this run" in i["outcomeDetail"] for i in record["issues"])


def test_a_swap_whose_grant_fails_keeps_the_old_role(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        # Once the run's preflight has passed, someone drags the bot's own role between Knight
        # and Lord: it may still manage Squire and Knight but neither Lord nor Debtor.
        discord = pipeline.sandbox.discord

        def demote_once_listing_starts(request: RequestRecord) -> None:
            if request.path.endswith("/members"):
                discord.set_bot_top_position(3)

        discord.after_request = demote_once_listing_starts

        result = pipeline.run(auto_fix=True)

        assert result.success
        roles = pipeline.sandbox.discord.all_member_roles()
        record = pipeline.record(result.run_id)
    issues = {(i["type"], issue_subject(i)): i for i in record["issues"]}
    debtor = issues[("DEBTOR_MISMATCH", "m_debtor")]
    assert roles["1005"] == {ROLE_IDS["Lord"]}  # Debtor refused, so Lord is not taken away
    assert debtor["outcome"] in ("failed", "not_attempted")
    assert "may not manage role 'Debtor'" in debtor["outcomeDetail"]
    assert debtor["actionsTaken"] == []
    # Knight granted, the removal of Lord refused: still a member, never locked out.
    assert roles["1004"] == {ROLE_IDS["Knight"], ROLE_IDS["Lord"]}
    assert issues[("ROLE_MISMATCH", "m_mismatch")]["actionsTaken"] == ["add_role Knight"]
    # Members whose fixes the bot may make are still fixed.
    assert roles["1009"] == {ROLE_IDS["Squire"]}
    assert roles["1003"] == {ROLE_IDS["Moderator"]}
    assert issues[("MISSING_ACCESS", "m_intro")]["outcome"] == "fixed"


def test_a_failed_asset_graph_run_still_leaves_its_record(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        # What the UI's "Materialize" on the asset graph launches (an __ASSET_JOB run).
        yesterday = (dt.date.fromisoformat(local_day(TIMEZONE)) - dt.timedelta(days=1)).isoformat()
        result = pipeline.recompute(yesterday)

        assert not result.success
        record = pipeline.record(result.run_id)
    assert record is not None
    assert record["status"] == "failed"
    assert f"no run of {yesterday} stored all of" in record["failure"]
    assert record["completedAt"] is not None


def test_failure_sensor_records_a_run_that_died_without_a_step_failure(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        defs = pipeline.definitions()
        run = pipeline.instance.create_run_for_job(
            defs.resolve_job_def("reconciliation_job"),
            run_config={"ops": {"reconciliation_fixes": {"config": {"auto_fix": True}}}},
            tags={"dagster/partition": local_day(TIMEZONE)},
        )
        pipeline.instance.report_run_failed(run, "the run worker was killed")
        sensor = defs.resolve_sensor_def("record_failed_runs_sensor")
        with dg.build_sensor_context(
            instance=pipeline.instance, resources=defs.resources
        ) as context:
            sensor(context)

        record = pipeline.record(run.run_id)
    assert record["status"] == "failed"
    assert record["failure"] == "the run worker was killed"
    assert record["autoFixEnabled"] is True
    assert record["triggeredBy"] == "manual"


def test_failure_sensor_records_a_cancelled_run_without_telling_the_admins(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        defs = pipeline.definitions()
        run = pipeline.instance.create_run_for_job(
            defs.resolve_job_def("reconciliation_job"),
            tags={"dagster/partition": local_day(TIMEZONE)},
        )
        pipeline.instance.report_run_canceled(run)
        sensor = defs.resolve_sensor_def("record_failed_runs_sensor")
        with dg.build_sensor_context(
            instance=pipeline.instance, resources=defs.resources
        ) as context:
            sensor(context)

        record = pipeline.record(run.run_id)
        posted = pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)
    assert record["status"] == "failed"
    assert record["failure"] == "the run was cancelled before it finished"
    assert record["completedAt"] is not None
    assert posted == []


def test_a_subset_of_the_steps_materialises_from_the_asset_modules(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an operator's own test would: the snapshots and the drift table only, built by the
    # asset modules' factories with the deployment's resources. Nothing is fixed or recorded.
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        partitions = daily_partitions(TIMEZONE)
        before = pipeline.sandbox.discord.all_member_roles()

        result = dg.materialize(
            [*build_snapshot_assets(partitions), build_drift_asset(partitions)],
            instance=pipeline.instance,
            partition_key=local_day(TIMEZONE),
            resources=build_resources(load_settings()),
        )

        assert result.success
        issues = issues_json(result.output_for_node("drift_issues"))
        assert {(i["type"], issue_subject(i)) for i in issues} == EXPECTED_ISSUES
        assert pipeline.record(result.run_id) is None
        assert pipeline.sandbox.discord.all_member_roles() == before
