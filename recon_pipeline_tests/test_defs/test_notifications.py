"""Admin notices from real runs: mail through a real SMTP server, messages to the emulator."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import serialize_value

from recon_pipeline.clients.membership_db import metadata
from recon_pipeline.domain.columns import GuildMemberRoleCol
from recon_pipeline.sandbox.demo import (
    SANDBOX_ADMIN_CHANNEL_ID,
    SANDBOX_BOT_TOKEN,
    SANDBOX_STRIPE_KEY,
)
from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.builders import ROLE_IDS
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import scenario_community
from recon_pipeline_tests.smtp import Inbox, admin_mail

SMTP_USER, SMTP_PASSWORD = "recon-mailer", "smtp-secret-pa55word"
UI = "http://dagster.example:3000"


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", UI)
    with admin_mail(monkeypatch, username=SMTP_USER, password=SMTP_PASSWORD) as inbox:
        yield inbox


def _channel(pipeline: Pipeline) -> list[str]:
    return [m["content"] for m in pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)]


def _stored_runs(pipeline: Pipeline, *run_ids: str) -> list[str]:
    """Each run and its event log as the instance keeps them, for a secret sweep.

    The serialized JSON escapes non-ASCII characters ("p\\u00e4ss"), where a non-ASCII secret
    would go unseen; it is decoded back so that the text holds them as written.
    """

    def as_written(value: object) -> str:
        return json.dumps(json.loads(serialize_value(value)), ensure_ascii=False)

    instance = pipeline.instance
    return [
        as_written(instance.all_logs(run_id)) + as_written(instance.get_run_by_id(run_id))
        for run_id in run_ids
    ]


def test_a_run_with_issues_mails_and_posts_one_notice(
    database_url: str, monkeypatch: pytest.MonkeyPatch, inbox: Inbox
) -> None:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        result = pipeline.run(auto_fix=True)

        assert result.success
        [posted] = _channel(pipeline)
    [mail] = inbox.messages
    assert inbox.logins == [(SMTP_USER, SMTP_PASSWORD)]
    assert mail["Subject"] == "[recon_pipeline] Reconciliation: 10 issue(s) found"
    assert (mail["From"], mail["To"]) == ("recon@example.org", "admins@example.org")
    body = mail.get_content()
    assert "auto-fix on: 9 of 10 issue(s) fixed" in body
    assert "MISSING_ACCESS: 2 (2 fixed)" in body and "NOT_IN_GUILD: 1 (0 fixed)" in body
    assert f"Run: {UI}/runs/{result.run_id}" in body
    assert posted.startswith("**[recon_pipeline] Reconciliation: 10 issue(s) found**")
    assert f"{UI}/runs/{result.run_id}" in posted


def test_a_500_issue_run_posts_one_message_within_discords_limit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, inbox: Inbox
) -> None:
    community = scenario_community()
    orphans = pd.DataFrame(
        {
            GuildMemberRoleCol.DISCORD_ID: [str(700_000 + i) for i in range(490)],
            GuildMemberRoleCol.IS_BOT: False,
            GuildMemberRoleCol.ROLE_ID: ROLE_IDS["Squire"],
        }
    )
    community = dataclasses.replace(
        community,
        guild_member_roles=pd.concat([community.guild_member_roles, orphans], ignore_index=True),
    )
    with running_pipeline(community, sqlite_url, monkeypatch) as pipeline:
        result = pipeline.run()

        assert result.success
        [posted] = _channel(pipeline)
        record = pipeline.record(result.run_id)
    assert record["issuesFound"] == 500
    assert len(posted) <= 2000
    assert "ORPHANED_ACCESS: 491 (0 fixed)" in posted
    assert posted.endswith(f"Run: {UI}/runs/{result.run_id}")
    [mail] = inbox.messages
    assert "… and 488 more" in mail.get_content()


def test_a_failed_run_sends_one_failure_notice(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, inbox: Inbox
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        pipeline.sandbox.stripe.fail_next(10, status=500, should_retry=False)

        result = pipeline.run(auto_fix=True)

        assert not result.success
        [posted] = _channel(pipeline)
    [mail] = inbox.messages
    assert mail["Subject"] == "[recon_pipeline] Reconciliation run failed"
    assert "The run FAILED: step stripe_subscriptions failed" in mail.get_content()
    assert "Stripe snapshot incomplete" in posted


def test_a_clean_run_sends_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, inbox: Inbox
) -> None:
    community = scenario_community()
    with running_pipeline(community, sqlite_url, monkeypatch) as pipeline:
        assert pipeline.run(auto_fix=True).success
        inbox.messages.clear()
        # After the fixes only m_absent's NOT_IN_GUILD is left; without that member, nothing.
        pipeline.execute("DELETE FROM \"Member\" WHERE id = 'm_absent'")

        clean = pipeline.run(auto_fix=True)

        assert clean.success
        assert pipeline.record(clean.run_id)["issuesFound"] == 0
        assert len(_channel(pipeline)) == 1  # only the first run's notice
    assert inbox.messages == []


def test_an_unreachable_mail_server_and_channel_do_not_fail_the_run(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, inbox: Inbox
) -> None:
    monkeypatch.setenv("SMTP_PORT", str(free_port()))  # nobody listens there
    monkeypatch.setenv("DISCORD_ADMIN_CHANNEL_ID", "1100000000000000999")  # no such channel
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        monkeypatch.setenv("DISCORD_ADMIN_CHANNEL_ID", "1100000000000000999")

        result = pipeline.run(auto_fix=True)

        assert result.success
        assert pipeline.record(result.run_id)["issuesFixed"] == 9
        [event] = [
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "reconciliation_run"
        ]
        sent = event.materialization.metadata["admin_notice"].value
    assert sent["email"].startswith("failed: cannot send mail through 127.0.0.1")
    assert sent["discord"].startswith("failed:") and "10003" in sent["discord"]
    assert inbox.messages == []


def test_a_non_ascii_smtp_password_fails_only_the_email_and_is_never_shown(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "pässwörd-smtp-Zx9"
    with (
        admin_mail(monkeypatch, username=SMTP_USER, password=password) as inbox,
        running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline,
    ):
        result = pipeline.run(auto_fix=True)

        assert result.success
        record = pipeline.record(result.run_id)
        [posted] = _channel(pipeline)
        [event] = [
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "reconciliation_run"
        ]
        sent = event.materialization.metadata["admin_notice"].value
        [stored] = _stored_runs(pipeline, result.run_id)
    assert record is not None and record["issuesFixed"] == 9
    assert posted.startswith("**[recon_pipeline] Reconciliation: 10 issue(s) found**")
    assert sent["discord"] == "sent"
    assert sent["email"].startswith("failed: ")
    assert "password" in sent["email"] and "ASCII" in sent["email"]
    assert "admin notice email" in stored and "ASCII" in stored  # the failure is logged
    assert inbox.logins == [] and inbox.messages == []
    assert password not in stored and password not in repr(record)


def test_no_secret_reaches_logs_events_messages_or_rows(
    database_url: str, monkeypatch: pytest.MonkeyPatch, inbox: Inbox, tmp_path: Path
) -> None:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        fixing = pipeline.run(auto_fix=True)
        pipeline.sandbox.stripe.fail_next(10, status=500, should_retry=False)
        failing = pipeline.run(auto_fix=True)
        assert fixing.success and not failing.success
        instance = pipeline.instance
        stored = _stored_runs(pipeline, fixing.run_id, failing.run_id)
        engine = pipeline.engine()
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            rows = [repr(conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()) for name in tables]
        engine.dispose()
        posted = _channel(pipeline)
    instance_files = [
        path.read_bytes().decode("utf-8", "replace")
        for path in Path(instance.root_directory).rglob("*")
        if path.is_file()
    ]
    mails = [m.as_string() for m in inbox.messages]
    haystack = "\n".join([*stored, *rows, *posted, *mails, *instance_files])
    assert len(inbox.messages) == 2 and len(posted) == 2
    assert {t.name for t in metadata.sorted_tables} <= set(tables)
    for secret in (SANDBOX_STRIPE_KEY, SANDBOX_BOT_TOKEN, SMTP_PASSWORD):
        assert secret not in haystack
