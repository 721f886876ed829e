"""Removal confirmation, the previous run it is checked against, lapsed exceptions and what the
guard and the notice make of them (pure, no Dagster)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from recon_pipeline.domain.access_exceptions import lapsed_since, live_exceptions
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.confirmation import (
    StoredDrift,
    await_confirmation,
    previous_observation,
    removal_keys,
)
from recon_pipeline.domain.fixes import GuardPolicy, awaiting, evaluate_guard, plan_fix_actions
from recon_pipeline.domain.notices import compose_notice, needs_notice
from recon_pipeline.domain.provenance import COMPLETENESS, SOURCES, FrameOrigin
from recon_pipeline_tests.builders import Snapshot, account, comped, guild, member, sub, team

WAITS = "awaiting confirmation (first seen in run run-2)"


def _drift() -> pd.DataFrame:
    """Every kind of issue once: removals of each kind, a swap, a grant, an upgrade."""
    return Snapshot(
        members=[
            member("m_unauth", discord_id="1001", customer="cus_u", status="ACTIVE"),
            member("m_swap", discord_id="1002", customer="cus_s", tier="TEAM_MEMBER"),
            member("m_grant", discord_id="1003", customer="cus_g"),
            member("m_up", discord_id=None, customer="cus_up", status="CANCELLED"),
        ],
        teams=[team("t_down", customer="cus_td", status="ACTIVE")],
        subs=[
            sub("cus_u", "canceled"),
            sub("cus_s", "active"),
            sub("cus_g", "active"),
            sub("cus_up", "active"),
            sub("cus_td", "canceled"),
        ],
        guild=guild(
            account("1001", "Lord"),
            account("1002", "Lord"),
            account("1003"),
            account("2001", "Squire"),
        ),
    ).drift()


def _waiting(issues: pd.DataFrame) -> set[tuple[str, str]]:
    marked = issues[awaiting(issues)]
    subject = (
        marked[IssueCol.MEMBER_ID]
        .fillna(marked[IssueCol.TEAM_ID])
        .fillna(marked[IssueCol.DISCORD_ID])
    )
    return set(zip(marked[IssueCol.TYPE], subject, strict=True))


def test_with_no_previous_run_every_pure_removal_waits_and_nothing_else() -> None:
    confirmed = await_confirmation(_drift(), None, first_seen_in="run-2")

    assert _waiting(confirmed) == {
        ("UNAUTHORIZED_ACCESS", "m_unauth"),
        ("ORPHANED_ACCESS", "2001"),
        ("STALE_DATABASE_STATUS", "m_unauth"),  # ACTIVE → CANCELLED ends access in the app
        ("STALE_DATABASE_STATUS", "t_down"),
    }
    assert set(confirmed.loc[awaiting(confirmed), IssueCol.AWAITING_CONFIRMATION]) == {WAITS}
    # A waiting removal keeps its planned change, so the next run can match it.
    unauth = confirmed[confirmed[IssueCol.TYPE] == "UNAUTHORIZED_ACCESS"].iloc[0]
    assert unauth[IssueCol.ROLES_TO_REMOVE] == ("Lord",)


def test_a_removal_the_previous_run_found_the_same_way_is_confirmed() -> None:
    drift = _drift()

    confirmed = await_confirmation(drift, drift.copy(), first_seen_in="run-2")

    assert _waiting(confirmed) == set()
    assert confirmed[IssueCol.AWAITING_CONFIRMATION].isna().all()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({IssueCol.ROLES_TO_REMOVE: ("Knight",)}, "other roles", id="roles"),
        pytest.param({IssueCol.TYPE: "ROLE_MISMATCH"}, "other type", id="type"),
        pytest.param({IssueCol.DISCORD_ID: "1999"}, "other account", id="account"),
    ],
)
def test_a_removal_found_differently_before_still_waits(change: dict, why: str) -> None:
    drift = _drift()
    previous = drift.copy()
    row = previous.index[previous[IssueCol.TYPE] == "UNAUTHORIZED_ACCESS"][0]
    for column, value in change.items():
        previous.at[row, column] = value

    confirmed = await_confirmation(drift, previous, first_seen_in="run-2")

    assert ("UNAUTHORIZED_ACCESS", "m_unauth") in _waiting(confirmed), why


def test_the_same_account_is_recognised_however_its_id_was_written() -> None:
    drift = _drift()
    previous = drift.copy()
    orphan = previous[IssueCol.TYPE] == "ORPHANED_ACCESS"
    previous.loc[orphan, IssueCol.DISCORD_ID] = " 2001"

    assert removal_keys(previous)[orphan].tolist() == removal_keys(drift)[orphan].tolist()


def test_the_guard_counts_only_removals_applied_this_run() -> None:
    waiting = await_confirmation(_drift(), None, first_seen_in="run-2")
    confirmed = await_confirmation(_drift(), _drift(), first_seen_in="run-2")
    policy = GuardPolicy(floor=0, fraction=0.0)

    assert evaluate_guard(waiting, holders=4, policy=policy).planned_removals == 0
    assert evaluate_guard(confirmed, holders=4, policy=policy).planned_removals == 4


def test_planned_actions_of_a_waiting_issue_carry_why_it_waits() -> None:
    actions = plan_fix_actions(await_confirmation(_drift(), None, first_seen_in="run-2"))

    waits = actions[actions["awaiting"] != ""]
    assert set(waits["awaiting"]) == {WAITS}
    assert set(waits["issue_type"]) == {
        "UNAUTHORIZED_ACCESS",
        "ORPHANED_ACCESS",
        "STALE_DATABASE_STATUS",
    }
    assert (actions.loc[actions["action"] == "add_role", "awaiting"] == "").all()


def _stored(run_id: str, taken: str | None, *, complete: bool = True) -> StoredDrift:
    sources = [
        FrameOrigin(
            "membership_members",
            "2026-11-29",
            run_id,
            10,
            taken_at=dt.datetime.fromisoformat(taken) if taken else None,
        ).to_json()
    ]
    return StoredDrift(
        run_id, "2026-11-29", {SOURCES: sources, COMPLETENESS: [] if complete else ["empty"]}
    )


def test_the_previous_run_is_the_last_complete_one_observed_before_this_one() -> None:
    stored = [
        _stored("run-a", "2026-11-29T03:00:00"),
        _stored("run-b", "2026-11-29T09:00:00"),
        _stored("run-incomplete", "2026-11-29T10:00:00", complete=False),
        _stored("run-later", "2026-11-30T04:00:00"),  # taken after this run's snapshots
        _stored("run-self", "2026-11-29T11:00:00"),  # this run's own chain
        _stored("run-unknown", None),
    ]

    found = previous_observation(
        stored,
        chain=frozenset({"run-self"}),
        observed_at=dt.datetime.fromisoformat("2026-11-30T03:00:00"),
    )

    assert found is not None and found.run_id == "run-b"
    assert (
        previous_observation([], chain=frozenset(), observed_at=dt.datetime(2026, 11, 30)) is None
    )


def test_lapsed_exceptions_are_those_the_previous_run_counted_that_have_expired() -> None:
    previous = Snapshot(
        exceptions=[
            comped(1, discord_id="1", expires_on="2026-11-29"),  # lapses
            comped(2, discord_id="2", expires_on="2026-12-31"),  # still counts
            comped(3, discord_id="3", expires_on="2026-11-20"),  # had lapsed already
            comped(4, discord_id="4"),  # removed since: not in today's snapshot
        ]
    ).frames()["exceptions"]
    today = previous[previous["id"] != "4"]

    lapsed = lapsed_since(today, previous, "2026-11-29", "2026-11-30")

    assert lapsed["id"].tolist() == ["1"]
    assert lapsed_since(today, None, None, "2026-11-30").empty
    assert live_exceptions(today, "2026-11-30")["id"].tolist() == ["2"]


def test_the_notice_says_how_many_removals_wait_and_names_lapsed_exceptions() -> None:
    record = {"id": "run-2", "triggeredBy": "scheduled", "issuesFound": 0, "issues": []}
    assert needs_notice(record, guard_tripped=False, lapsed_exceptions=1, notify="always")
    assert not needs_notice(record, guard_tripped=False, notify="always")

    notice = compose_notice(
        record, awaiting=3, lapsed_exceptions=("#1 Discord account 1: Lord until 2026-11-29 (x)",)
    )

    assert "3 removal(s) await confirmation" in notice.text
    assert "Access exceptions that lapsed since the previous run: 1" in notice.text
    assert "  - #1 Discord account 1: Lord until 2026-11-29 (x)" in notice.lines
