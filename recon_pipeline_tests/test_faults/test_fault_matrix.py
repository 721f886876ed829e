"""The fault matrix: each outage, throttle or crash the pipeline must survive, one test each.

Every test runs the whole reconciliation job with auto-fix on, against the emulators' fault
injection and a real PostgreSQL membership database, and checks the same four things: the
emulator's final role state (nobody wrongly loses a role), the role changes made (none applied
twice, none made from partial data), the run's record, and what the admins were told.

Clients are built with short timeouts and backoffs (`quick_clients`): the waits are real, only
shorter than production's seconds, so the matrix runs in well under a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster import serialize_value
from psycopg import sql

import recon_pipeline.defs.assets.apply as apply_assets
from recon_pipeline.clients.discord import DiscordClient
from recon_pipeline.clients.stripe import StripeBilling
from recon_pipeline.defs.resources import DiscordResource, StripeResource
from recon_pipeline.sandbox.demo import (
    SANDBOX_ADMIN_CHANNEL_ID,
    SANDBOX_BOT_TOKEN,
    SANDBOX_STRIPE_KEY,
    demo_community,
)
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator, RequestRecord
from recon_pipeline_tests.builders import ROLE_IDS
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.postgres import PostgresServer
from recon_pipeline_tests.processes import kill_step_of_latest_run
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    REPORT_ONLY,
    ROLE_CHANGES,
    ROLES_AFTER_FIX,
    issue_subject,
    scenario_community,
)
from recon_pipeline_tests.smtp import Inbox, admin_mail

ROLE_CALLS = {"PUT", "DELETE"}
_ids = ROLE_IDS
# Every removal the scenario calls for; any other successful DELETE is a wrong removal.
PLANNED_REMOVALS = {
    ("1003", _ids["Knight"]),
    ("1004", _ids["Lord"]),
    ("1005", _ids["Lord"]),
    ("1008", _ids["Knight"]),
    ("2001", _ids["Squire"]),
}
# Accounts that pay (or owe) and must hold a managed role whatever happens.
MUST_KEEP_ACCESS = ("1001", "1004", "1005", "1007")
MANAGED = {_ids[n] for n in ("Squire", "Knight", "Lord", "Debtor")}
FIXABLE = EXPECTED_ISSUES - REPORT_ONLY
SMTP_USER, SMTP_PASSWORD = "recon-mailer", "fault-matrix-smtp-pa55"


@pytest.fixture
def quick_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    def discord_client(self: DiscordResource) -> DiscordClient:
        return DiscordClient(
            bot_token=self.bot_token,
            guild_id=self.guild_id,
            api_base=self.api_base,
            timeout_s=2.0,
            retry_backoff_s=0.02,
        )

    def stripe_client(self: StripeResource) -> StripeBilling:
        return StripeBilling(self.secret_key, api_base=self.api_base, timeout_s=0.5)

    monkeypatch.setattr(DiscordResource, "client", discord_client)
    monkeypatch.setattr(StripeResource, "client", stripe_client)


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    with admin_mail(monkeypatch, username=SMTP_USER, password=SMTP_PASSWORD) as inbox:
        yield inbox


@pytest.fixture
def pipeline(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, quick_clients: None, inbox: Inbox
) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), postgres_url, monkeypatch) as p:
        yield p
        assert_no_secret_leaked(p, inbox)


# ------------------------------------------------------------------------------ the checks


def role_calls(discord: DiscordEmulator, status: int | None = None) -> list[tuple[str, str, str]]:
    return [
        (m.method, m.user_id, m.role_id)
        for m in discord.mutations
        if status is None or m.status == status
    ]


def assert_safe(discord: DiscordEmulator) -> None:
    """No wrong removal, nobody paying locked out, no change applied twice."""
    applied = role_calls(discord, 204)
    assert len(applied) == len(set(applied)), "a role change was applied twice"
    removed = {(user, role) for method, user, role in applied if method == "DELETE"}
    assert removed <= PLANNED_REMOVALS, f"wrong removals: {removed - PLANNED_REMOVALS}"
    roles = discord.all_member_roles()
    for user in MUST_KEEP_ACCESS:
        assert roles[user] & MANAGED, f"{user} pays but lost every managed role"


def assert_fully_fixed(pipeline: Pipeline, record: dict[str, Any]) -> None:
    discord = pipeline.sandbox.discord
    roles = {u: set(r) for u, r in discord.all_member_roles().items() if u in ROLES_AFTER_FIX}
    assert roles == ROLES_AFTER_FIX
    assert len(role_calls(discord, 204)) == ROLE_CHANGES
    assert record["status"] == "succeeded"
    fixed = {(i["type"], issue_subject(i)) for i in record["issues"] if i["outcome"] == "fixed"}
    assert fixed == FIXABLE
    assert record["issuesFixed"] == len(FIXABLE)


def assert_failed_record(record: dict[str, Any] | None, *fragments: str) -> None:
    assert record is not None, "the run left no record"
    assert record["status"] == "failed"
    assert record["completedAt"] is not None and record["completedAt"] >= record["startedAt"]
    for fragment in fragments:
        assert fragment in record["failure"]


def assert_no_secret_leaked(pipeline: Pipeline, inbox: Inbox) -> None:
    """Whatever failed, no credential reached the event log, a run's config, a database row,
    a mail or an admin message."""
    instance = pipeline.instance
    stored = [
        serialize_value(instance.all_logs(run.run_id)) + serialize_value(run)
        for run in instance.get_runs()
    ]
    engine = pipeline.engine()
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            rows = [repr(conn.execute(sa.text(f'SELECT * FROM "{t}"')).all()) for t in tables]
    finally:
        engine.dispose()
    mails = [m.as_string() for m in inbox.messages]
    haystack = "\n".join([*stored, *rows, *mails, *admin_posts(pipeline)])
    assert stored and rows
    for secret in (SANDBOX_STRIPE_KEY, SANDBOX_BOT_TOKEN, SMTP_PASSWORD):
        assert secret not in haystack


def admin_posts(pipeline: Pipeline) -> list[str]:
    return [m["content"] for m in pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)]


def assert_told_of_failure(pipeline: Pipeline, inbox: Inbox, run_id: str) -> None:
    """Exactly one failure notice per channel, naming the run."""
    [mail] = inbox.messages
    assert mail["Subject"] == "[recon_pipeline] Reconciliation run failed"
    assert run_id in mail.get_content()
    [post] = admin_posts(pipeline)
    assert "run failed" in post and run_id in post


def issue_outcomes(record: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["type"], issue_subject(i)): i for i in record["issues"]}


# ------------------------------------------------------------------------------ Stripe


def test_stripe_500_on_a_middle_page_fails_the_run_before_any_fix(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, quick_clients: None, inbox: Inbox
) -> None:
    community = demo_community()
    with running_pipeline(community, postgres_url, monkeypatch) as pipeline:
        before = pipeline.sandbox.discord.all_member_roles()
        pipeline.sandbox.stripe.fail_page(2, status=500, times=10)

        result = pipeline.run(auto_fix=True)

        assert not result.success
        assert role_calls(pipeline.sandbox.discord) == []
        assert pipeline.sandbox.discord.all_member_roles() == before
        record = pipeline.record(result.run_id)
        assert_failed_record(record, "stripe_subscriptions", "Stripe snapshot incomplete")
        assert record["issuesFixed"] == 0
        assert_told_of_failure(pipeline, inbox, result.run_id)
        assert_no_secret_leaked(pipeline, inbox)


@pytest.mark.parametrize(
    "should_retry", [None, True], ids=["plain-429", "429-with-Stripe-Should-Retry"]
)
def test_stripe_429s_are_waited_out_and_the_run_fixes_everything(
    pipeline: Pipeline, inbox: Inbox, should_retry: bool | None
) -> None:
    pipeline.sandbox.stripe.fail_next(2, status=429, should_retry=should_retry)

    result = pipeline.run(auto_fix=True)

    assert result.success
    statuses = [r.status for r in pipeline.sandbox.stripe.requests]
    assert statuses.count(429) == 2 and statuses[-1] == 200
    assert_safe(pipeline.sandbox.discord)
    assert_fully_fixed(pipeline, pipeline.record(result.run_id))
    assert "issue(s) found" in inbox.messages[0]["Subject"]


def test_a_stripe_timeout_is_retried(pipeline: Pipeline) -> None:
    pipeline.sandbox.stripe.hang_next(1, seconds=5.0)

    result = pipeline.run(auto_fix=True)

    assert result.success
    assert len(pipeline.sandbox.stripe.requests) >= 2
    assert_safe(pipeline.sandbox.discord)
    assert_fully_fixed(pipeline, pipeline.record(result.run_id))


def test_stripe_timing_out_on_every_try_fails_the_run_before_any_fix(
    pipeline: Pipeline, inbox: Inbox
) -> None:
    before = pipeline.sandbox.discord.all_member_roles()
    pipeline.sandbox.stripe.hang_next(10, seconds=5.0)

    result = pipeline.run(auto_fix=True)

    assert not result.success
    assert role_calls(pipeline.sandbox.discord) == []
    assert pipeline.sandbox.discord.all_member_roles() == before
    assert_failed_record(pipeline.record(result.run_id), "stripe_subscriptions")
    assert_told_of_failure(pipeline, inbox, result.run_id)


# ------------------------------------------------------------------------------ Discord


@pytest.mark.parametrize("global_", [False, True], ids=["per-route", "global"])
def test_discord_429s_during_fixing_are_waited_out(pipeline: Pipeline, global_: bool) -> None:
    pipeline.sandbox.discord.fail_next(
        3, 429, global_=global_, retry_after_s=0.05, methods=ROLE_CALLS
    )

    result = pipeline.run(auto_fix=True)

    assert result.success
    assert len(role_calls(pipeline.sandbox.discord, 429)) == 3
    assert_safe(pipeline.sandbox.discord)
    assert_fully_fixed(pipeline, pipeline.record(result.run_id))


def test_a_cloudflare_429_stops_every_further_discord_change_and_is_reported(
    pipeline: Pipeline, inbox: Inbox
) -> None:
    before = pipeline.sandbox.discord.all_member_roles()
    pipeline.sandbox.discord.fail_next(1, 429, cloudflare=True, methods=ROLE_CALLS)

    result = pipeline.run(auto_fix=True)

    discord = pipeline.sandbox.discord
    assert len(role_calls(discord)) == 1  # not retried, nothing after it
    assert discord.all_member_roles() == before
    assert_safe(discord)
    record = pipeline.record(result.run_id)
    outcomes = issue_outcomes(record)
    role_issues = [i for k, i in outcomes.items() if k[0] != "STALE_DATABASE_STATUS"]
    role_issues = [i for i in role_issues if (i["type"], issue_subject(i)) not in REPORT_ONLY]
    assert [i["outcome"] for i in role_issues].count("failed") == 1
    assert {i["outcome"] for i in role_issues} == {"failed", "not_attempted"}
    assert all("Discord blocked the bot" in i["outcomeDetail"] for i in role_issues)
    # The database's own fixes do not depend on Discord.
    assert outcomes[("STALE_DATABASE_STATUS", "m_stale")]["outcome"] == "fixed"
    assert record["issuesFixed"] == 2
    [mail] = inbox.messages
    assert "auto-fix on: 2 of 10 issue(s) fixed" in mail.get_content()


def test_a_short_discord_5xx_burst_is_retried(pipeline: Pipeline) -> None:
    pipeline.sandbox.discord.fail_next(3, 502, methods=ROLE_CALLS)

    result = pipeline.run(auto_fix=True)

    assert result.success
    assert len(role_calls(pipeline.sandbox.discord, 502)) == 3
    assert_safe(pipeline.sandbox.discord)
    assert_fully_fixed(pipeline, pipeline.record(result.run_id))


def test_discord_down_for_every_retry_stops_after_three_changes(
    pipeline: Pipeline, inbox: Inbox
) -> None:
    before = pipeline.sandbox.discord.all_member_roles()
    pipeline.sandbox.discord.fail_next(100, 503, methods=ROLE_CALLS)

    result = pipeline.run(auto_fix=True)

    discord = pipeline.sandbox.discord
    attempts = len(role_calls(discord))
    assert role_calls(discord, 204) == []
    assert attempts == 3 * 5  # three changes, each tried once and retried four times
    assert discord.all_member_roles() == before
    record = pipeline.record(result.run_id)
    role_outcomes = [
        i["outcome"]
        for i in record["issues"]
        if i["type"] != "STALE_DATABASE_STATUS" and i["type"] != "NOT_IN_GUILD"
    ]
    assert role_outcomes.count("failed") == 3
    assert role_outcomes.count("not_attempted") == len(role_outcomes) - 3
    assert "Discord unavailable" in str(record["issues"])
    assert len(inbox.messages) == 1


def test_a_role_the_bot_may_not_manage_fails_only_its_own_fixes(pipeline: Pipeline) -> None:
    # Someone drags the bot's own role just below Debtor (position 4) after the run's preflight
    # passed, while the members are being listed: Discord answers 403/50013 for Debtor.
    emulator = pipeline.sandbox.discord

    def demote_once_listing_starts(request: RequestRecord) -> None:
        if request.path.endswith("/members"):
            emulator.set_bot_top_position(4)

    emulator.after_request = demote_once_listing_starts

    result = pipeline.run(auto_fix=True)

    assert result.success
    discord = pipeline.sandbox.discord
    assert role_calls(discord, 403) == [("PUT", "1005", _ids["Debtor"])]
    assert len(role_calls(discord, 204)) == ROLE_CHANGES - 2  # Debtor refused, Lord kept
    assert discord.member_roles("1005") == {_ids["Lord"]}
    assert_safe(discord)
    outcomes = issue_outcomes(pipeline.record(result.run_id))
    debtor = outcomes[("DEBTOR_MISMATCH", "m_debtor")]
    assert (
        debtor["outcome"] == "failed" and "may not manage role 'Debtor'" in debtor["outcomeDetail"]
    )
    others = {k: i["outcome"] for k, i in outcomes.items() if k != ("DEBTOR_MISMATCH", "m_debtor")}
    assert others == {k: "fixed" for k in FIXABLE - {("DEBTOR_MISMATCH", "m_debtor")}} | {
        k: "not_attempted" for k in REPORT_ONLY
    }


def test_a_member_who_left_after_the_snapshot_fails_alone(pipeline: Pipeline) -> None:
    discord = pipeline.sandbox.discord

    def leave_after_listing(request: RequestRecord) -> None:
        if (
            request.method == "GET"
            and request.path.endswith("/members")
            and "1002" in (discord.all_member_roles())
        ):
            discord.remove_member("1002")

    discord.after_request = leave_after_listing

    result = pipeline.run(auto_fix=True)

    assert result.success
    assert role_calls(discord, 404) == [("PUT", "1002", _ids["Lord"])]
    assert len(role_calls(discord, 204)) == ROLE_CHANGES - 1
    assert_safe(discord)
    outcomes = issue_outcomes(pipeline.record(result.run_id))
    gone = outcomes[("MISSING_ACCESS", "m_missing")]
    assert gone["outcome"] == "failed" and "10007" in gone["outcomeDetail"]
    assert outcomes[("MISSING_ACCESS", "m_intro")]["outcome"] == "fixed"


# ------------------------------------------------------------------------------ the database


def _set_connections(postgres: PostgresServer, url: str, *, allowed: bool) -> None:
    """Open or close the database to new connections, dropping the open ones when closing."""
    dbname = url.rsplit("/", 1)[1].split("?")[0]
    with postgres.connect() as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )


def _sweep(pipeline: Pipeline, cursor: str | None) -> str | None:
    """One tick of `record_failed_runs_sensor`; returns its new cursor."""
    defs = pipeline.definitions()
    sensor = defs.resolve_sensor_def("record_failed_runs_sensor")
    with dg.build_sensor_context(
        instance=pipeline.instance, cursor=cursor, resources=defs.resources
    ) as context:
        sensor(context)
        return context.cursor


def test_database_unreachable_at_start_fails_the_run_tells_the_admins_and_records_it_later(
    pipeline: Pipeline, inbox: Inbox, postgres_server: PostgresServer
) -> None:
    _set_connections(postgres_server, pipeline.database_url, allowed=False)
    try:
        result = pipeline.run(auto_fix=True)

        assert not result.success
        assert role_calls(pipeline.sandbox.discord) == []
        cursor = _sweep(pipeline, None)  # still unreachable: the run waits in the cursor
        assert result.run_id in cursor
    finally:
        _set_connections(postgres_server, pipeline.database_url, allowed=True)
    assert pipeline.record(result.run_id) is None
    assert_told_of_failure(pipeline, inbox, result.run_id)

    cursor = _sweep(pipeline, cursor)

    record = pipeline.record(result.run_id)
    assert_failed_record(record, "not currently accepting connections")
    assert record["autoFixEnabled"] is True and record["issuesFixed"] == 0
    assert result.run_id not in cursor
    _sweep(pipeline, cursor)
    assert pipeline.record(result.run_id) == record
    assert_told_of_failure(pipeline, inbox, result.run_id)  # still exactly one notice


def test_database_dropping_before_the_record_is_written_still_leaves_a_consistent_record(
    pipeline: Pipeline,
    inbox: Inbox,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_run_record = apply_assets.write_run_record

    def drop_then_write(conn: Any, record: Any) -> None:
        _set_connections(postgres_server, pipeline.database_url, allowed=False)
        write_run_record(conn, record)

    monkeypatch.setattr(apply_assets, "write_run_record", drop_then_write)
    try:
        result = pipeline.run(auto_fix=True)
        assert not result.success
    finally:
        _set_connections(postgres_server, pipeline.database_url, allowed=True)
    assert_safe(pipeline.sandbox.discord)
    assert len(role_calls(pipeline.sandbox.discord, 204)) == ROLE_CHANGES
    assert pipeline.record(result.run_id) is None
    assert_told_of_failure(pipeline, inbox, result.run_id)

    _sweep(pipeline, None)

    record = pipeline.record(result.run_id)
    assert_failed_record(record, "reconciliation_run")
    # The fixes that were made are in the record, as the fixing step stored them.
    fixed = {(i["type"], issue_subject(i)) for i in record["issues"] if i["outcome"] == "fixed"}
    assert fixed == FIXABLE
    assert record["issuesFixed"] == len(FIXABLE)
    assert record["issuesFound"] == len(EXPECTED_ISSUES)
    assert record["membersChecked"] == 10


# ------------------------------------------------------------------------------ a killed step


@pytest.mark.slow
def test_fixing_step_killed_part_way_then_reexecuted_from_failure_repeats_no_fix(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, inbox: Inbox
) -> None:
    home = tmp_path / "dagster_home"
    with running_pipeline(scenario_community(), postgres_url, monkeypatch) as pipeline:
        monkeypatch.setenv("DAGSTER_HOME", str(home))  # the CLI's instance, not the harness's
        # The killed step's fixing lease expires this soon after its last heartbeat; the
        # re-execution waits for that before it fixes.
        monkeypatch.setenv("RECONCILIATION_LEASE_TTL_SECONDS", "3")
        discord = pipeline.sandbox.discord
        discord.latency_s = 0.1  # role changes in flight long enough to be cut off
        killed: list[int] = []

        def kill_on_third_change(request: RequestRecord) -> None:
            # Discord has made the third change; the step dies before hearing the answer.
            if killed or len(role_calls(discord, 204)) < 3:
                return
            with dg.DagsterInstance.from_config(str(home)) as instance:
                _, pid = kill_step_of_latest_run(instance, "reconciliation_fixes")
            killed.append(pid)

        discord.after_request = kill_on_third_change
        first = subprocess.run(
            [str(Path(sys.executable).with_name("recon-pipeline")), "run", "--auto-fix"],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        discord.after_request = None

        assert first.returncode == 1, first.stderr
        assert len(killed) == 1
        assert len(role_calls(discord, 204)) == 3
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [failed] = instance.get_runs(limit=1)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            # The sweep records the killed run (its step could not).
            _sweep(Pipeline(pipeline.database_url, pipeline.sandbox, instance), cursor=None)
            assert_failed_record(pipeline.record(failed.run_id), "reconciliation_fixes")

            from recon_pipeline.definitions import get_reconciliation_job

            # As the UI's "Re-execute from failure" does: the parent's config and partition.
            again = dg.execute_job(
                dg.reconstructable(get_reconciliation_job),
                instance=instance,
                run_config=failed.run_config,
                tags={"dagster/partition": failed.tags["dagster/partition"]},
                reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
            )
            assert again.success
            rerun_id = again.run_id
            assert_no_secret_leaked(
                Pipeline(pipeline.database_url, pipeline.sandbox, instance), inbox
            )

        assert_safe(discord)
        assert len(role_calls(discord)) == ROLE_CHANGES  # each change made exactly once
        record = pipeline.record(rerun_id)
        assert_fully_fixed(pipeline, record)
        details = " ".join(i["outcomeDetail"] for i in record["issues"])
        assert "already applied earlier in this run" in details
        assert "applied by an interrupted attempt" in details
        assert (
            pipeline.scalar(
                "SELECT count(*) FROM recon_pipeline_fix_action WHERE outcome <> 'fixed'"
            )
            == 0
        )
        assert (
            pipeline.scalar("SELECT count(DISTINCT run_id) FROM recon_pipeline_fix_action") == 1
        )  # one scope: the first run of the chain
