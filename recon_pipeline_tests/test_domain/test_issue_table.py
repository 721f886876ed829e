"""The day's drift table as `drift_issues` stores it: withheld fixes, anomalies, completeness and
the snapshots it rests on (pure, no Dagster)."""

from __future__ import annotations

import pandas as pd
import pytest

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.issue_table import Confirmation, DaySnapshots, drift_table
from recon_pipeline.domain.policy import AccessPolicy, RoleResolutionError
from recon_pipeline.domain.provenance import COMPLETENESS, STORED, FrameOrigin, sources_of
from recon_pipeline_tests.builders import Snapshot, account, guild, guild_roles, member, sub

FRAME_NAMES = (
    "membership_members",
    "membership_teams",
    "stripe_subscriptions",
    "discord_member_roles",
    "discord_roles",
    "access_exceptions",
)


def _stored(frames: dict[str, pd.DataFrame], run_id: str) -> dict[str, pd.DataFrame]:
    """The frames as the frame store hands them to a step: each with its catalog entry."""
    for frame, name in zip(frames.values(), FRAME_NAMES, strict=True):
        frame.attrs[STORED] = {
            "frame": name,
            "day": "2026-11-30",
            "run_id": run_id,
            "row_count": len(frame),
        }
    return frames


def _table(snapshot: Snapshot, *, run_id: str = "run-1", policy: AccessPolicy | None = None):
    frames = _stored(snapshot.frames(), run_id)
    return drift_table(
        DaySnapshots(**frames),
        policy or AccessPolicy(),
        day="2026-11-30",
        confirmation=Confirmation(required=False, run_id=run_id),
    )


def test_drift_table_names_the_snapshots_it_rests_on_in_order() -> None:
    snapshot = Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        subs=[sub("cus_1", "active")],
        guild=guild(account("1001")),
    )

    table = _table(snapshot, run_id="run-7")

    origins = sources_of(table.issues)
    assert [o.frame for o in origins if o] == list(FRAME_NAMES)
    assert {o.run_id for o in origins if o} == {"run-7"}
    assert origins[0] == FrameOrigin("membership_members", "2026-11-30", "run-7", 1)


def test_drift_table_of_whole_snapshots_has_no_problems_and_the_engines_issues() -> None:
    snapshot = Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        subs=[sub("cus_1", "active")],
        guild=guild(account("1001")),
    )

    table = _table(snapshot)

    assert table.problems == [] and table.issues.attrs[COMPLETENESS] == []
    assert list(table.issues[IssueCol.TYPE]) == ["MISSING_ACCESS"]
    assert list(table.issues[IssueCol.FIX_WITHHELD].fillna("")) == [""]
    assert table.anomalies == []


def test_drift_table_says_why_snapshots_look_incomplete() -> None:
    # A paying member, but Stripe answered with no subscription at all.
    snapshot = Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        guild=guild(account("1001", "Lord")),
    )

    table = _table(snapshot)

    assert len(table.problems) == 1 and "Stripe returned no subscriptions" in table.problems[0]
    assert table.issues.attrs[COMPLETENESS] == table.problems


def test_drift_table_withholds_a_fix_bad_data_would_make_wrong_and_reports_the_data() -> None:
    # One account written into two member records: which of them it belongs to is unknown.
    records = [member(m, discord_id=d, customer=m) for m, d in (("m_a", "1001"), ("m_b", "1001"))]
    snapshot = Snapshot(
        members=records, subs=[sub("m_a", "canceled")], guild=guild(account("1001", "Knight"))
    )

    table = _table(snapshot)

    issues = table.issues.set_index([IssueCol.TYPE, IssueCol.MEMBER_ID])
    lapsed = issues.loc[("UNAUTHORIZED_ACCESS", "m_a")]
    assert lapsed[IssueCol.ROLES_TO_REMOVE] == ()
    assert "linked to 2 member records" in lapsed[IssueCol.FIX_WITHHELD]
    assert table.anomalies == [
        "one Discord account is linked to 2 member records (m_a, m_b): their role fixes are "
        "withheld"
    ]


def test_drift_table_does_not_carry_an_inputs_attrs_over() -> None:
    snapshot = Snapshot(members=[member("m1")], subs=[sub("cus_1")], guild=guild(account("1001")))

    table = _table(snapshot)

    assert STORED not in table.issues.attrs


def test_drift_table_refuses_a_guild_without_a_managed_role() -> None:
    snapshot = Snapshot(
        members=[member("m1")],
        subs=[sub("cus_1")],
        guild=guild(account("1001")),
        roles=guild_roles(Lord="Overlord"),
    )

    with pytest.raises(RoleResolutionError):
        _table(snapshot)
