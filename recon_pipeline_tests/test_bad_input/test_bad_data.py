"""Bad data through the whole reconciliation job, auto-fix on, against the emulators.

Each test seeds one anomaly (in the database, in Stripe or in Discord), runs `reconciliation_job`
with fixes on and states the outcome: the run's record and why, the roles left in Discord and the
calls made. None may remove a role from a member Stripe says is paying, and none may make a mass
change. Anomalies about the database run on SQLite and PostgreSQL; the others on SQLite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.clients.membership_db import init_database, parse_database_url
from recon_pipeline.domain.columns import GuildMemberRoleCol
from recon_pipeline.sandbox.community import Community
from recon_pipeline.sandbox.demo import SANDBOX_ADMIN_CHANNEL_ID, seed_membership_db
from recon_pipeline_tests.builders import ROLE_IDS, Snapshot, account, guild, member, sub
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import ROLES_AFTER_FIX, community_of, scenario_community

LORD, KNIGHT, SQUIRE = ROLE_IDS["Lord"], ROLE_IDS["Knight"], ROLE_IDS["Squire"]


@contextmanager
def pipeline_on(
    snapshot: Snapshot | Community,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    before_seed: tuple[str, ...] = (),
) -> Iterator[Pipeline]:
    """The pipeline on `snapshot`, after running `before_seed` (SQL) on the app's empty tables."""
    served = snapshot if isinstance(snapshot, Community) else community_of(snapshot)
    engine = parse_database_url(database_url).create_engine()
    try:
        init_database(engine)
        with engine.begin() as conn:
            for statement in before_seed:
                conn.execute(sa.text(statement))
        seed_membership_db(engine, served)
    finally:
        engine.dispose()
    with running_pipeline(served, database_url, monkeypatch, seed=False) as pipeline:
        yield pipeline


def run_with_fixes(pipeline: Pipeline) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    result = pipeline.run(auto_fix=True)
    record = pipeline.record(result.run_id)
    assert record is not None, "every run leaves its ReconciliationRun row"
    return result, record


def issues_of(record: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (i["type"], str(i.get("memberId") or i.get("teamId") or i.get("discordId"))): i
        for i in record["issues"]
    }


def role_calls(pipeline: Pipeline) -> list[tuple[str, str, str]]:
    """(method, user id, role id) of every role change Discord received."""
    return [(m.method, m.user_id, m.role_id) for m in pipeline.sandbox.discord.mutations]


def roles(pipeline: Pipeline, user_id: str) -> set[str]:
    return set(pipeline.sandbox.discord.member_roles(user_id))


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


# --- Database ------------------------------------------------------------------------------------


def test_two_members_sharing_one_stripe_customer_both_keep_access(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's unique index forbids it; a database without the index (an older app) has it.
    snapshot = Snapshot(
        members=[
            member("m_a", discord_id="1001", customer="cus_shared"),
            member("m_b", discord_id="1002", customer="cus_shared"),
        ],
        subs=[sub("cus_shared", "active")],
        guild=guild(account("1001", "Lord"), account("1002", "Lord")),
    )
    with pipeline_on(
        snapshot,
        database_url,
        monkeypatch,
        before_seed=('DROP INDEX "Member_stripeCustomerId_key"',),
    ) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        assert record["issuesFound"] == 0
        assert pipeline.sandbox.discord.mutations == []
        anomalies = metadata_of(result, "drift_issues")["data_anomalies"]
    assert any("belong to several records: m_a, m_b" in a for a in anomalies)


def test_one_customer_with_several_subscriptions_is_entitled_by_any_granting_one(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = Snapshot(
        members=[member("m_multi", discord_id="1001", customer="cus_multi")],
        subs=[
            sub("cus_multi", "canceled", created=1_600_000_000),
            sub("cus_multi", "active", created=1_650_000_000),
            sub("cus_multi", "incomplete", created=1_700_000_000),  # a newer, unpaid upgrade
        ],
        guild=guild(account("1001", "Lord")),
    )
    with pipeline_on(snapshot, sqlite_url, monkeypatch) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        assert record["issuesFound"] == 0
        assert roles(pipeline, "1001") == {LORD}
        assert pipeline.sandbox.discord.mutations == []


def test_member_whose_team_id_names_no_team_is_billed_as_themselves(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = Snapshot(
        members=[
            # Pays on their own account: keeps the role.
            member("m_pays", discord_id="1001", customer="cus_own", team="t_deleted"),
            # Nothing of their own: holds a role without paying (docs/behaviour.md §1), so it goes.
            member("m_free", discord_id="1002", customer=None, team="t_deleted", status="NONE"),
        ],
        subs=[sub("cus_own", "active")],
        guild=guild(account("1001", "Lord"), account("1002", "Knight")),
    )
    # PostgreSQL's foreign key refuses such a row; an app database without it can hold one.
    drop_fk = ('ALTER TABLE "Member" DROP CONSTRAINT "Member_teamId_fkey"',)
    with pipeline_on(
        snapshot, database_url, monkeypatch, before_seed=drop_fk if postgres(database_url) else ()
    ) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        assert set(issues_of(record)) == {("UNAUTHORIZED_ACCESS", "m_free")}
        issue = issues_of(record)[("UNAUTHORIZED_ACCESS", "m_free")]
        assert "team id 't_deleted' names no team" in issue["description"]
        assert roles(pipeline, "1001") == {LORD}
        assert role_calls(pipeline) == [("DELETE", "1002", KNIGHT)]


def test_database_status_outside_the_enum(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = Snapshot(
        members=[member("m_odd", discord_id="1001", customer="cus_odd")],
        subs=[sub("cus_odd", "active")],
        guild=guild(account("1001", "Lord")),
    )
    with pipeline_on(snapshot, database_url, monkeypatch) as pipeline:
        odd = """UPDATE "Member" SET "subscriptionStatus" = 'LAPSED' WHERE id = 'm_odd'"""
        if postgres(database_url):
            # The app's enum type refuses the value: the anomaly cannot reach the pipeline.
            with pytest.raises(sa.exc.DataError, match="invalid input value for enum"):
                pipeline.execute(odd)
            return
        pipeline.execute(odd)

        result, record = run_with_fixes(pipeline)

        assert result.success
        [(kind, subject)] = issues_of(record)
        assert (kind, subject) == ("STALE_DATABASE_STATUS", "m_odd")
        assert issues_of(record)[(kind, subject)]["outcome"] == "fixed"
        assert pipeline.scalar("""SELECT "subscriptionStatus" FROM "Member" """) == "ACTIVE"
        assert roles(pipeline, "1001") == {LORD}
        assert pipeline.sandbox.discord.mutations == []
        anomalies = metadata_of(result, "drift_issues")["data_anomalies"]
    assert any("subscriptionStatus outside" in a and "m_odd" in a for a in anomalies)


def test_discord_ids_that_are_not_ids(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = Snapshot(
        members=[
            member("m_word", discord_id="abc", customer="cus_a"),
            member("m_padded", discord_id=" 1002 ", customer="cus_b"),
            member("m_mention", discord_id="<@1003>", customer="cus_c"),
        ],
        subs=[sub("cus_a", "active"), sub("cus_b", "active"), sub("cus_c", "active")],
        guild=guild(account("1002"), account("1003", "Lord")),
    )
    with pipeline_on(snapshot, database_url, monkeypatch) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        issues = issues_of(record)
        assert set(issues) == {
            ("NOT_IN_GUILD", "m_word"),
            ("MISSING_ACCESS", "m_padded"),
            ("NOT_IN_GUILD", "m_mention"),
            ("ORPHANED_ACCESS", "1003"),
        }
        assert (
            "Discord id 'abc' is not a Discord id"
            in issues["NOT_IN_GUILD", "m_word"]["description"]
        )
        # Surrounding spaces do not hide the account: it gets its role.
        assert issues["MISSING_ACCESS", "m_padded"]["outcome"] == "fixed"
        # 1003 looks orphaned only because m_mention's link is malformed: its role stays.
        orphan = issues["ORPHANED_ACCESS", "1003"]
        assert orphan["outcome"] == "not_attempted"
        assert "m_mention's Discord id '<@1003>'" in orphan["description"]
        assert roles(pipeline, "1003") == {LORD}
        assert role_calls(pipeline) == [("PUT", "1002", LORD)]


def test_one_discord_account_linked_to_two_members_is_not_pulled_both_ways(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "1001" and "01001" pass the unique index but are one account (ids compare as numbers).
    snapshot = Snapshot(
        members=[
            member("m_paying", discord_id="1001", customer="cus_p"),
            member("m_lapsed", discord_id="01001", customer="cus_l", status="CANCELLED"),
        ],
        subs=[sub("cus_p", "active"), sub("cus_l", "canceled")],
        guild=guild(account("1001", "Lord")),
    )
    with pipeline_on(snapshot, database_url, monkeypatch) as pipeline:
        for _ in range(2):  # and not the next day either
            result, record = run_with_fixes(pipeline)

            assert result.success
            issue = issues_of(record)[("UNAUTHORIZED_ACCESS", "m_lapsed")]
            assert issue["outcome"] == "not_attempted"
            assert "linked to 2 member records (m_lapsed, m_paying)" in issue["description"]
            assert issue["outcomeDetail"].startswith("fix withheld: Discord account 01001")
            assert roles(pipeline, "1001") == {LORD}
        assert pipeline.sandbox.discord.mutations == []


def test_empty_string_ids(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = Snapshot(
        members=[
            member("m_blank_discord", discord_id="", customer="cus_x"),
            member("m_blank_customer", discord_id="1002", customer="", status="NONE"),
        ],
        subs=[sub("cus_x", "active")],
        guild=guild(account("1002", "Lord")),
    )
    with pipeline_on(snapshot, database_url, monkeypatch) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        issues = issues_of(record)
        assert set(issues) == {
            ("NOT_IN_GUILD", "m_blank_discord"),
            ("UNAUTHORIZED_ACCESS", "m_blank_customer"),
        }
        assert (
            "Discord id '' is not a Discord id"
            in (issues["NOT_IN_GUILD", "m_blank_discord"]["description"])
        )
        # No Stripe customer, no subscription: not paying (docs/behaviour.md §1), so the role goes.
        assert role_calls(pipeline) == [("DELETE", "1002", LORD)]


# --- Stripe --------------------------------------------------------------------------------------


def test_stripe_status_the_product_does_not_know_takes_no_access_away(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = Snapshot(
        members=[member("m_frozen", discord_id="1001", customer="cus_f")],
        subs=[sub("cus_f", "active", sub_id="sub_frozen")],
        guild=guild(account("1001", "Lord")),
    )
    with pipeline_on(snapshot, sqlite_url, monkeypatch) as pipeline:
        # The emulator only takes Stripe's statuses; set a new one the way the API would send it.
        pipeline.sandbox.stripe._subs["sub_frozen"].status = "frozen"

        result, record = run_with_fixes(pipeline)

        assert result.success
        issues = issues_of(record)
        unauthorized = issues["UNAUTHORIZED_ACCESS", "m_frozen"]
        assert unauthorized["stripeStatus"] == "frozen"
        assert unauthorized["outcome"] == "not_attempted"
        assert (
            "Stripe status 'frozen' is not one recon_pipeline knows"
            in (unauthorized["description"])
        )
        assert roles(pipeline, "1001") == {LORD}
        assert pipeline.sandbox.discord.mutations == []
        anomalies = metadata_of(result, "drift_issues")["data_anomalies"]
    assert any("status recon_pipeline does not know (frozen)" in a for a in anomalies)


def test_stripe_status_the_product_does_not_know_on_an_older_subscription_takes_nothing_away(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reported (newest) status is a known one; the older unknown one may still be paying.
    snapshot = Snapshot(
        members=[member("m_frozen", discord_id="1001", customer="cus_f", status="ACTIVE")],
        subs=[
            sub("cus_f", "active", created=1_600_000_000, sub_id="sub_frozen"),
            sub("cus_f", "canceled", created=1_700_000_000),
        ],
        guild=guild(account("1001", "Lord")),
    )
    with pipeline_on(snapshot, sqlite_url, monkeypatch) as pipeline:
        pipeline.sandbox.stripe._subs["sub_frozen"].status = "frozen"

        result, record = run_with_fixes(pipeline)

        assert result.success
        issues = issues_of(record)
        assert set(issues) == {
            ("UNAUTHORIZED_ACCESS", "m_frozen"),
            ("STALE_DATABASE_STATUS", "m_frozen"),
        }
        unauthorized = issues["UNAUTHORIZED_ACCESS", "m_frozen"]
        assert unauthorized["stripeStatus"] == "canceled"
        assert unauthorized["outcome"] == "not_attempted"
        assert unauthorized["outcomeDetail"] == (
            "fix withheld: Stripe status 'frozen' is not one recon_pipeline knows, so access is "
            "not taken away on it"
        )
        stale = issues["STALE_DATABASE_STATUS", "m_frozen"]
        assert stale["statusFix"] is None
        assert stale["outcome"] == "not_attempted"
        assert stale["outcomeDetail"] == (
            "fix withheld: Stripe status 'frozen' is not one recon_pipeline knows, so the "
            "database status is not downgraded on it"
        )
        assert roles(pipeline, "1001") == {LORD}
        assert pipeline.sandbox.discord.mutations == []
        assert pipeline.scalar("""SELECT "subscriptionStatus" FROM "Member" """) == "ACTIVE"


def test_customer_unknown_to_stripe_is_not_paying(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = Snapshot(
        members=[
            member("m_ghost", discord_id="1001", customer="cus_nowhere"),
            member("m_ok", discord_id="1002", customer="cus_ok"),
        ],
        subs=[sub("cus_ok", "active")],
        guild=guild(account("1001", "Lord"), account("1002", "Lord")),
    )
    with pipeline_on(snapshot, sqlite_url, monkeypatch) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        issues = issues_of(record)
        assert set(issues) == {
            ("UNAUTHORIZED_ACCESS", "m_ghost"),
            ("STALE_DATABASE_STATUS", "m_ghost"),
        }
        assert issues["UNAUTHORIZED_ACCESS", "m_ghost"]["description"].startswith(
            "no Stripe subscription but Discord has Lord"
        )
        assert role_calls(pipeline) == [("DELETE", "1001", LORD)]
        assert roles(pipeline, "1002") == {LORD}


# --- Discord -------------------------------------------------------------------------------------


def test_guild_members_listed_without_a_user_are_left_alone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pipeline_on(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        # 1004 (m_mismatch) holds Lord where Knight is expected; 2001 is an orphan.
        pipeline.sandbox.discord.list_without_user("1004")
        pipeline.sandbox.discord.list_without_user("2001")

        result, record = run_with_fixes(pipeline)

        assert result.success
        assert metadata_of(result, "discord_member_roles")["members_without_user"] == 2
        issues = issues_of(record)
        # Unseen, 1004 reads as not in the server (report only) and 2001 not at all.
        assert issues["NOT_IN_GUILD", "m_mismatch"]["outcome"] == "not_attempted"
        assert ("ORPHANED_ACCESS", "2001") not in issues
        assert roles(pipeline, "1004") == {LORD}
        assert roles(pipeline, "2001") == {SQUIRE}
        touched = {user for _, user, _ in role_calls(pipeline)}
        assert touched == {"1002", "1003", "1005", "1008", "1009"}


def test_renamed_managed_role_stops_the_run_before_any_fix(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pipeline_on(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        before = pipeline.sandbox.discord.all_member_roles()
        pipeline.sandbox.discord.add_role(KNIGHT, "Knights", position=2)  # renamed in Discord

        result, record = run_with_fixes(pipeline)

        assert not result.success
        assert record["status"] == "failed"
        assert "managed role 'Knight' does not exist in the guild" in record["failure"]
        assert "no fix will be applied" in record["failure"]
        assert record["issuesFixed"] == 0
        assert pipeline.sandbox.discord.mutations == []
        assert pipeline.sandbox.discord.all_member_roles() == before


def test_empty_guild_while_members_pay_blocks_every_fix(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pipeline_on(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        discord = pipeline.sandbox.discord
        for user_id in ROLES_AFTER_FIX:  # everyone leaves (or the bot sees another server)
            discord.remove_member(user_id)

        result = pipeline.run(auto_fix=True)

        [check] = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "snapshots_complete"
        ]
        assert not check.passed
        assert "the Discord snapshot has no member accounts" in check.description
        assert discord.mutations == []
        record = pipeline.record(result.run_id)
        assert record is not None and record["issuesFixed"] == 0
        assert record["status"] == "failed"
        assert "snapshots_complete" in record["failure"]
        assert pipeline.scalar(
            """SELECT "subscriptionStatus" FROM "Member" WHERE id='m_stale'"""
        ) == ("CANCELLED")


def test_bot_and_exempt_accounts_keep_their_managed_roles(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILIATION_EXEMPT_DISCORD_IDS", "2001")
    with pipeline_on(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        result, record = run_with_fixes(pipeline)

        assert result.success
        assert ("ORPHANED_ACCESS", "2001") not in issues_of(record)
        assert roles(pipeline, "2001") == {SQUIRE}  # exempt
        assert roles(pipeline, "3001") == {LORD}  # a bot
        touched = {user for _, user, _ in role_calls(pipeline)}
        assert touched.isdisjoint({"2001", "3001"})


# --- Scale ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_issues_are_all_recorded_and_the_notice_fits_discord(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = scenario_community()
    orphans = pd.DataFrame(
        {
            GuildMemberRoleCol.DISCORD_ID: [str(700_000 + i) for i in range(9_990)],
            GuildMemberRoleCol.IS_BOT: False,
            GuildMemberRoleCol.ROLE_ID: SQUIRE,
        }
    )
    big = dataclasses.replace(
        base,
        guild_member_roles=pd.concat([base.guild_member_roles, orphans], ignore_index=True),
    )
    with pipeline_on(big, sqlite_url, monkeypatch) as pipeline:
        monkeypatch.setenv("DISCORD_ADMIN_CHANNEL_ID", SANDBOX_ADMIN_CHANNEL_ID)

        result, record = run_with_fixes(pipeline)

        assert result.success
        assert record["issuesFound"] == 10_000
        assert len(record["issues"]) == 10_000
        # 9,991 planned removals trip the guard: no account loses a role for them.
        orphan_outcomes = {i["outcome"] for i in record["issues"] if i["type"] == "ORPHANED_ACCESS"}
        assert orphan_outcomes == {"skipped"}
        removed = {m.user_id for m in pipeline.sandbox.discord.mutations if m.method == "DELETE"}
        assert removed == {"1004", "1005"}  # the two role swaps, whose grant came first
        assert len(pipeline.sandbox.discord.mutations) == 6  # the grants and swaps only
        [posted] = pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)
    assert len(posted["content"]) <= 2000
    assert "10000 issue(s) found" in posted["content"]
    assert "ORPHANED_ACCESS: 9991" in posted["content"]
