"""Access exceptions and removal confirmation in whole runs of the job, against the emulators
(docs/behaviour.md §1 and §4): comped accounts keep or get their role; a removal applies only
once two runs saw it; the guard counts only removals applied now."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pytest
import sqlalchemy as sa

from recon_pipeline.clients.access_exceptions import NewException, add_exception
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.domain.policy import ManagedRoles
from recon_pipeline.sandbox.demo import SANDBOX_ADMIN_CHANNEL_ID
from recon_pipeline_tests.builders import ROLE_IDS, Snapshot, account, guild, member, sub
from recon_pipeline_tests.harness import TIMEZONE, Pipeline, running_pipeline
from recon_pipeline_tests.scenario import community_of

TODAY = local_day(TIMEZONE)
YESTERDAY = (dt.date.fromisoformat(TODAY) - dt.timedelta(days=1)).isoformat()
LORD, KNIGHT, SQUIRE = ROLE_IDS["Lord"], ROLE_IDS["Knight"], ROLE_IDS["Squire"]


def _community() -> Snapshot:
    return Snapshot(
        members=[
            member("m_paying", discord_id="1001", customer="cus_paying"),
            # Comped members: no subscription, an exception gives the role.
            member("m_staff", discord_id="1002", customer=None, status="NONE"),
            member("m_helper", discord_id="1003", customer=None, status="NONE"),
            # Lapsed: canceled, still holding Lord, no exception.
            member("m_lapsed", discord_id="1004", customer="cus_lapsed", status="CANCELLED"),
        ],
        subs=[
            sub("cus_paying", "active", sub_id="sub_paying"),
            sub("cus_lapsed", "canceled", sub_id="sub_lapsed"),
        ],
        guild=guild(
            account("1001", "Lord"),
            account("1002", "Lord"),
            account("1003"),  # comped, but the role was never given
            account("1004", "Lord"),
            account("2001", "Knight"),  # a sponsor: no member record
            account("2002"),  # a partner without the role yet
        ),
    )


@contextmanager
def _pipeline(
    database_url: str, monkeypatch: pytest.MonkeyPatch, *, confirm: bool = True
) -> Iterator[Pipeline]:
    with running_pipeline(
        community_of(_community()), database_url, monkeypatch, confirm_removals=confirm
    ) as pipeline:
        yield pipeline


def _except(pipeline: Pipeline, role: str, expires: str | None = None, **subject: str) -> int:
    engine = pipeline.engine()
    try:
        return add_exception(
            engine,
            NewException(
                discord_id=subject.get("discord_id"),
                member_id=subject.get("member_id"),
                role=role,
                reason=f"comped {role}",
                added_by="test",
                expires_on=dt.date.fromisoformat(expires) if expires else None,
            ),
            roles=ManagedRoles(),
            today=TODAY,
        )
    finally:
        engine.dispose()


def _issues(pipeline: Pipeline, run_id: str) -> dict[tuple[str, str], dict]:
    record = pipeline.record(run_id)
    assert record is not None
    return {(i["type"], i["memberId"] or i["discordId"]): i for i in record["issues"] or []}


def _roles(pipeline: Pipeline, discord_id: str) -> set[str]:
    return set(pipeline.sandbox.discord.member_roles(discord_id))


def test_comped_accounts_keep_their_roles_and_get_missing_ones_at_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(database_url, monkeypatch) as pipeline:
        _except(pipeline, "Lord", member_id="m_staff")
        helper = _except(pipeline, "Squire", member_id="m_helper")
        _except(pipeline, "Knight", discord_id="2001")
        partner = _except(pipeline, "Knight", discord_id="2002")

        first = pipeline.run(auto_fix=True)

        assert first.success
        issues = _issues(pipeline, first.run_id)
        # Holding the exception's role is no drift; lacking it is fixed in the first run.
        assert ("UNAUTHORIZED_ACCESS", "m_staff") not in issues
        assert not any(key[1] == "2001" for key in issues)
        granted = {
            key: issues[key] for key in [("MISSING_ACCESS", "m_helper"), ("MISSING_ACCESS", "2002")]
        }
        assert all(i["outcome"] == "fixed" for i in granted.values())
        assert granted[("MISSING_ACCESS", "m_helper")]["accessException"] == str(helper)
        assert (
            f"access exception #{partner} gives Knight"
            in (granted[("MISSING_ACCESS", "2002")]["description"])
        )
        assert _roles(pipeline, "1002") == {LORD}
        assert _roles(pipeline, "1003") == {SQUIRE}
        assert _roles(pipeline, "2001") == {KNIGHT}
        assert _roles(pipeline, "2002") == {KNIGHT}

        second = pipeline.run(auto_fix=True)

        assert second.success
        issues = _issues(pipeline, second.run_id)
        assert not {k for k in issues if k[1] in ("m_staff", "m_helper", "2001", "2002")}
        assert _roles(pipeline, "1002") == {LORD} and _roles(pipeline, "2001") == {KNIGHT}


def test_a_removal_first_seen_waits_and_is_applied_by_the_next_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(database_url, monkeypatch) as pipeline:
        first = pipeline.run(auto_fix=True)

        lapsed = _issues(pipeline, first.run_id)[("UNAUTHORIZED_ACCESS", "m_lapsed")]
        assert lapsed["outcome"] == "skipped"
        assert lapsed["outcomeDetail"] == (
            f"awaiting confirmation (first seen in run {first.run_id})"
        )
        assert _roles(pipeline, "1004") == {LORD}

        second = pipeline.run(auto_fix=True)

        lapsed = _issues(pipeline, second.run_id)[("UNAUTHORIZED_ACCESS", "m_lapsed")]
        assert lapsed["outcome"] == "fixed"
        assert lapsed["awaitingConfirmation"] is None
        assert _roles(pipeline, "1004") == set()


def test_a_dry_run_finding_the_removal_confirms_it_for_the_fixing_run(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(database_url, monkeypatch) as pipeline:
        dry = pipeline.run()
        assert _issues(pipeline, dry.run_id)[("UNAUTHORIZED_ACCESS", "m_lapsed")]["outcome"] == (
            "skipped"
        )

        fixing = pipeline.run(auto_fix=True)

        assert (
            _issues(pipeline, fixing.run_id)[("UNAUTHORIZED_ACCESS", "m_lapsed")]["outcome"]
            == "fixed"
        )
        assert _roles(pipeline, "1004") == set()


def test_a_removal_seen_once_and_then_gone_is_never_applied(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(database_url, monkeypatch) as pipeline:
        first = pipeline.run(auto_fix=True)
        assert ("UNAUTHORIZED_ACCESS", "m_lapsed") in _issues(pipeline, first.run_id)

        pipeline.sandbox.stripe.set_status("sub_lapsed", "active")  # the member paid
        second = pipeline.run(auto_fix=True)

        assert ("UNAUTHORIZED_ACCESS", "m_lapsed") not in _issues(pipeline, second.run_id)
        assert _roles(pipeline, "1004") == {LORD}

        pipeline.sandbox.stripe.set_status("sub_lapsed", "canceled")  # and lapsed again
        third = pipeline.run(auto_fix=True)

        # The run before did not see it: it waits again rather than count the first sighting.
        again = _issues(pipeline, third.run_id)[("UNAUTHORIZED_ACCESS", "m_lapsed")]
        assert again["outcomeDetail"] == (
            f"awaiting confirmation (first seen in run {third.run_id})"
        )
        assert _roles(pipeline, "1004") == {LORD}


def test_with_confirmation_off_removals_apply_on_first_sight(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(database_url, monkeypatch, confirm=False) as pipeline:
        first = pipeline.run(auto_fix=True)

        lapsed = _issues(pipeline, first.run_id)[("UNAUTHORIZED_ACCESS", "m_lapsed")]
        assert lapsed["outcome"] == "fixed"
        assert _roles(pipeline, "1004") == set()


def test_an_expired_exceptions_role_is_removed_after_confirmation_and_named_in_the_notice(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(database_url, monkeypatch) as pipeline:
        sponsor = _except(pipeline, "Knight", expires=TODAY, discord_id="2001")
        first = pipeline.run(auto_fix=True)
        assert not any(key[1] == "2001" for key in _issues(pipeline, first.run_id))

        # A day later the exception has run its course.
        pipeline.execute(
            "UPDATE recon_pipeline_access_exception SET expires_on = :day WHERE id = :id",
            day=dt.date.fromisoformat(YESTERDAY),
            id=sponsor,
        )
        second = pipeline.run(auto_fix=True)

        orphan = _issues(pipeline, second.run_id)[("ORPHANED_ACCESS", "2001")]
        assert orphan["outcome"] == "skipped"
        assert orphan["outcomeDetail"].startswith("awaiting confirmation")
        notice = pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)[-1]["content"]
        assert "Access exceptions that lapsed since the previous run: 1" in notice
        assert f"#{sponsor} Discord account 2001: Knight until {YESTERDAY} (comped Knight)" in (
            notice
        )
        assert "removal(s) await confirmation" in notice
        assert _roles(pipeline, "2001") == {KNIGHT}

        third = pipeline.run(auto_fix=True)

        assert _issues(pipeline, third.run_id)[("ORPHANED_ACCESS", "2001")]["outcome"] == "fixed"
        assert _roles(pipeline, "2001") == set()
        posts = pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)
        told = [m for m in posts if "lapsed since the previous run" in m["content"]]
        assert len(told) == 1  # told once


def test_the_guard_counts_only_the_removals_a_run_would_apply(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lapsed = [f"m_gone{i}" for i in range(8)]
    snapshot = Snapshot(
        members=[
            *(
                member(m, discord_id=str(5000 + i), customer=f"cus_{m}", status="CANCELLED")
                for i, m in enumerate(lapsed)
            ),
            member("m_new", discord_id="1001", customer="cus_new"),
        ],
        subs=[*(sub(f"cus_{m}", "canceled") for m in lapsed), sub("cus_new", "active")],
        guild=guild(*(account(str(5000 + i), "Lord") for i in range(8)), account("1001")),
    )
    with running_pipeline(
        community_of(snapshot), sqlite_url, monkeypatch, confirm_removals=True
    ) as pipeline:
        first = pipeline.run(auto_fix=True)

        # Eight removals of nine role holders would trip the guard; none is applied this run,
        # so it does not trip, and the grant goes through.
        record = pipeline.record(first.run_id)
        assert pipeline.instance.get_run_by_id(first.run_id).tags["recon/guard"] == "ok"
        assert _roles(pipeline, "1001") == {LORD}
        assert record["issuesFixed"] == 1

        second = pipeline.run(auto_fix=True)

        # Confirmed now, they count: the guard trips and holds them back.
        assert pipeline.instance.get_run_by_id(second.run_id).tags["recon/guard"] == "tripped"
        assert all(_roles(pipeline, str(5000 + i)) == {LORD} for i in range(8))
        held = _issues(pipeline, second.run_id)[("UNAUTHORIZED_ACCESS", "m_gone0")]
        assert "guard tripped" in held["outcomeDetail"]


def test_exceptions_of_a_run_are_the_ones_its_snapshot_read(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(sqlite_url, monkeypatch) as pipeline:
        _except(pipeline, "Lord", member_id="m_staff")
        first = pipeline.run()
        engine = pipeline.engine()
        try:
            with engine.begin() as conn:  # removed after the run took its snapshot
                conn.execute(
                    sa.text(
                        "UPDATE recon_pipeline_access_exception SET removed_at = "
                        "CURRENT_TIMESTAMP, removed_by = 'ana'"
                    )
                )
        finally:
            engine.dispose()

        # Recomputing the day from that run's snapshots sees the exception it saw.
        again = pipeline.reexecute(
            first.run_id, ["drift_issues", "reconciliation_fixes", "reconciliation_run"]
        )

        assert again.success
        assert ("UNAUTHORIZED_ACCESS", "m_staff") not in _issues(pipeline, again.run_id)


def test_a_day_stored_before_exceptions_existed_is_recomputed_without_any(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _pipeline(sqlite_url, monkeypatch) as pipeline:
        first = pipeline.run()
        # What a run of the version before exceptions left: every snapshot but that one.
        pipeline.execute(
            "DELETE FROM recon_pipeline_stored_frame WHERE frame_name = 'access_exceptions'"
        )
        _except(pipeline, "Lord", member_id="m_staff")  # added since: not part of that day

        again = pipeline.recompute(TODAY)

        assert again.success
        issues = _issues(pipeline, again.run_id)
        assert ("UNAUTHORIZED_ACCESS", "m_staff") in issues
        assert issues.keys() == _issues(pipeline, first.run_id).keys()


def test_the_exceptions_page_shows_how_many_are_in_force_and_the_next_expiry(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    next_week = (dt.date.fromisoformat(TODAY) + dt.timedelta(days=7)).isoformat()
    with _pipeline(sqlite_url, monkeypatch) as pipeline:
        _except(pipeline, "Lord", member_id="m_staff")
        _except(pipeline, "Knight", expires=next_week, discord_id="2001")
        _except(pipeline, "Knight", expires=TODAY, discord_id="2002")
        pipeline.run()

        event = pipeline.instance.get_latest_materialization_event(dg.AssetKey("access_exceptions"))

    metadata = event.asset_materialization.metadata
    assert metadata["in_force"].value == 3
    assert metadata["next_expiry"].value == TODAY
    assert metadata["by_role"].value == {"knight": 2, "lord": 1}
