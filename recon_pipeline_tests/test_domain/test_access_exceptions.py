"""The drift engine's exception rules, one case each (docs/behaviour.md §1; pure, no Dagster)."""

from __future__ import annotations

from typing import Any

import pytest

from recon_pipeline.domain.access_exceptions import live_exceptions
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.policy import AccessPolicy
from recon_pipeline_tests.builders import Snapshot, account, comped, guild, member, sub

TODAY = "2026-11-30"


def _issues(snapshot: Snapshot) -> dict[tuple[str, str], dict[str, Any]]:
    frames = snapshot.frames()
    frames["exceptions"] = live_exceptions(frames["exceptions"], TODAY)
    issues = find_drift_issues(**frames, policy=AccessPolicy())
    rows = issues.astype(object).where(issues.notna(), None).to_dict("records")
    return {(r[IssueCol.TYPE], r[IssueCol.MEMBER_ID] or r[IssueCol.DISCORD_ID]): r for r in rows}


def _one(**kwargs: Any) -> Snapshot:
    """A member m1 (account 1001) whose subscription ended, and an exception for it."""
    defaults: dict[str, Any] = {
        "members": [member("m1", discord_id="1001", customer="cus_1", status="CANCELLED")],
        "subs": [sub("cus_1", "canceled")],
        "guild": guild(account("1001", "Lord")),
        "exceptions": [comped(1, member_id="m1", role="lord")],
    }
    return Snapshot(**(defaults | kwargs))


def test_a_member_holding_the_role_an_exception_gives_is_no_drift() -> None:
    assert not [k for k in _issues(_one()) if k[0] != "STALE_DATABASE_STATUS"]


def test_an_exception_on_the_members_discord_account_counts_too() -> None:
    snapshot = _one(exceptions=[comped(1, discord_id="1001", role="lord")])

    assert ("UNAUTHORIZED_ACCESS", "m1") not in _issues(snapshot)


def test_a_member_lacking_the_exceptions_role_is_missing_access() -> None:
    issue = _issues(_one(guild=guild(account("1001"))))[("MISSING_ACCESS", "m1")]

    assert issue[IssueCol.ROLES_TO_ADD] == ("Lord",)
    assert issue[IssueCol.ACCESS_EXCEPTION] == "1"
    assert issue[IssueCol.DESCRIPTION].endswith("; access exception #1 gives Lord (staff)")


def test_other_managed_roles_are_still_drift() -> None:
    issue = _issues(_one(guild=guild(account("1001", "Lord", "Squire"))))[("ROLE_MISMATCH", "m1")]

    assert (issue[IssueCol.ROLES_TO_ADD], issue[IssueCol.ROLES_TO_REMOVE]) == ((), ("Squire",))


def test_a_debtor_still_expects_debtor() -> None:
    snapshot = _one(members=[member("m1", discord_id="1001", customer="cus_1", debtor=True)])

    issue = _issues(snapshot)[("DEBTOR_MISMATCH", "m1")]
    assert issue[IssueCol.EXPECTED_ROLE] == "Debtor" and issue[IssueCol.ACCESS_EXCEPTION] is None


def test_an_entitled_member_keeps_the_policys_role() -> None:
    snapshot = _one(
        members=[member("m1", discord_id="1001", customer="cus_1", tier="TEAM_MEMBER")],
        subs=[sub("cus_1", "active")],
    )

    issue = _issues(snapshot)[("ROLE_MISMATCH", "m1")]
    assert issue[IssueCol.EXPECTED_ROLE] == "Knight" and issue[IssueCol.ACCESS_EXCEPTION] is None


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        pytest.param((), {("MISSING_ACCESS", "2001")}, id="lacking"),
        pytest.param(("Knight",), set(), id="holding"),
        pytest.param(("Knight", "Lord"), {("ROLE_MISMATCH", "2001")}, id="holding-more"),
    ],
)
def test_an_account_without_a_member_record(held: tuple[str, ...], expected: set) -> None:
    snapshot = Snapshot(
        guild=guild(account("2001", *held)),
        exceptions=[comped(4, discord_id="2001", role="knight", reason="sponsor")],
    )

    issues = _issues(snapshot)

    assert set(issues) == expected
    for issue in issues.values():
        assert issue[IssueCol.DESCRIPTION].startswith("No member record")
        assert "access exception #4 gives Knight (sponsor)" in issue[IssueCol.DESCRIPTION]


def test_an_expired_exception_no_longer_counts() -> None:
    snapshot = _one(exceptions=[comped(1, member_id="m1", role="lord", expires_on="2026-11-29")])

    assert ("UNAUTHORIZED_ACCESS", "m1") in _issues(snapshot)


def test_an_exception_expiring_today_still_counts() -> None:
    snapshot = _one(exceptions=[comped(1, member_id="m1", role="lord", expires_on=TODAY)])

    assert ("UNAUTHORIZED_ACCESS", "m1") not in _issues(snapshot)


def test_the_members_own_exception_outranks_one_on_its_account() -> None:
    snapshot = _one(
        exceptions=[
            comped(1, member_id="m1", role="lord"),
            comped(2, discord_id="1001", role="squire"),
        ]
    )

    assert not [k for k in _issues(snapshot) if k[0] != "STALE_DATABASE_STATUS"]
