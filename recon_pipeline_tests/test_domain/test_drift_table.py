"""The drift engine, one case per row of docs/behaviour.md §2 and per deliberate difference from
the original app.

Each case is a small community and the exact issues expected of it, projected to
(type, severity, member, team, Discord id, roles to add, roles to remove, status fix).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd
import pytest

from recon_pipeline.domain.columns import IssueCol, MissingColumnsError
from recon_pipeline.domain.policy import AccessPolicy, ManagedRoles, RoleResolutionError
from recon_pipeline_tests.builders import Snapshot, account, guild, guild_roles, member, sub, team


class Expect(NamedTuple):
    type: str
    severity: str
    member_id: str | None = None
    team_id: str | None = None
    discord_id: str | None = None
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    status_fix: str | None = None


def _project(issues: pd.DataFrame) -> list[Expect]:
    def value(v: Any) -> Any:
        return None if pd.isna(v) else v

    return [
        Expect(
            row[IssueCol.TYPE],
            row[IssueCol.SEVERITY],
            value(row[IssueCol.MEMBER_ID]),
            value(row[IssueCol.TEAM_ID]),
            value(row[IssueCol.DISCORD_ID]),
            tuple(row[IssueCol.ROLES_TO_ADD]),
            tuple(row[IssueCol.ROLES_TO_REMOVE]),
            value(row[IssueCol.STATUS_FIX]),
        )
        for _, row in issues.iterrows()
    ]


def _paying(
    *roles: str, tier: str = "INDIVIDUAL", intro: bool = True, debtor: bool = False, **kw: Any
) -> Snapshot:
    """One linked member with an active subscription, holding `roles` in the guild."""
    return Snapshot(
        members=[member(tier=tier, intro=intro, debtor=debtor, **kw)],
        subs=[sub("cus_1", "active")],
        guild=guild(account("1001", *roles)),
    )


def _lapsed(*roles: str, status: str = "CANCELLED", debtor: bool = False) -> Snapshot:
    """One linked member whose only subscription is canceled, holding `roles`."""
    return Snapshot(
        members=[member(status=status, debtor=debtor)],
        subs=[sub("cus_1", "canceled")],
        guild=guild(account("1001", *roles)),
    )


CASES: dict[str, tuple[Snapshot, list[Expect]]] = {
    # MISSING_ACCESS: E = {r}, r ≠ Debtor, A empty → HIGH, add r
    "missing: individual gets Lord": (
        _paying(),
        [Expect("MISSING_ACCESS", "HIGH", "m1", None, "1001", add=("Lord",))],
    ),
    "missing: owner gets Lord": (
        _paying(tier="OWNER"),
        [Expect("MISSING_ACCESS", "HIGH", "m1", None, "1001", add=("Lord",))],
    ),
    "missing: intro not completed gets Squire": (
        _paying(intro=False),
        [Expect("MISSING_ACCESS", "HIGH", "m1", None, "1001", add=("Squire",))],
    ),
    "missing: team seat billed through the team gets Knight": (
        Snapshot(
            members=[member(customer=None, tier="TEAM_MEMBER", team="t1", status="NONE")],
            teams=[team("t1", customer="cus_t1", status="ACTIVE")],
            subs=[sub("cus_t1", "active")],
            guild=guild(account("1001", "Events")),
        ),
        [Expect("MISSING_ACCESS", "HIGH", "m1", "t1", "1001", add=("Knight",))],
    ),
    "missing: seat tier missing means Knight": (
        _paying(tier=None),
        [Expect("MISSING_ACCESS", "HIGH", "m1", None, "1001", add=("Knight",))],
    ),
    "missing: trialing and past_due grant access": (
        Snapshot(
            members=[
                member("m1", discord_id="1001", customer="cus_1", status="TRIALING"),
                member("m2", discord_id="1002", customer="cus_2", status="PAST_DUE"),
            ],
            subs=[sub("cus_1", "trialing"), sub("cus_2", "past_due")],
            guild=guild(account("1001"), account("1002")),
        ),
        [
            Expect("MISSING_ACCESS", "HIGH", "m1", None, "1001", add=("Lord",)),
            Expect("MISSING_ACCESS", "HIGH", "m2", None, "1002", add=("Lord",)),
        ],
    ),
    # UNAUTHORIZED_ACCESS: E empty, A not empty → HIGH (LOW if A is only Debtor), remove A
    "unauthorized: canceled member keeps Knight": (
        _lapsed("Knight"),
        [Expect("UNAUTHORIZED_ACCESS", "HIGH", "m1", None, "1001", remove=("Knight",))],
    ),
    "unauthorized: never paid, holds two managed roles": (
        Snapshot(
            members=[member(customer=None, status="NONE")],
            guild=guild(account("1001", "Lord", "Debtor", "Moderator")),
        ),
        [Expect("UNAUTHORIZED_ACCESS", "HIGH", "m1", None, "1001", remove=("Debtor", "Lord"))],
    ),
    "unauthorized: only a Debtor role left is LOW": (
        _lapsed("Debtor"),
        [Expect("UNAUTHORIZED_ACCESS", "LOW", "m1", None, "1001", remove=("Debtor",))],
    ),
    "unauthorized: unpaid, incomplete and paused do not grant": (
        Snapshot(
            members=[
                member("m1", discord_id="1001", customer="cus_1", status="CANCELLED"),
                member("m2", discord_id="1002", customer="cus_2", status="CANCELLED"),
                member("m3", discord_id="1003", customer="cus_3", status="CANCELLED"),
            ],
            subs=[sub("cus_1", "unpaid"), sub("cus_2", "incomplete"), sub("cus_3", "paused")],
            guild=guild(
                account("1001", "Lord"), account("1002", "Knight"), account("1003", "Squire")
            ),
        ),
        [
            Expect("UNAUTHORIZED_ACCESS", "HIGH", "m1", None, "1001", remove=("Lord",)),
            Expect("UNAUTHORIZED_ACCESS", "HIGH", "m2", None, "1002", remove=("Knight",)),
            Expect("UNAUTHORIZED_ACCESS", "HIGH", "m3", None, "1003", remove=("Squire",)),
        ],
    ),
    # ROLE_MISMATCH: E = {r}, r ≠ Debtor, A not empty, A ≠ E → MEDIUM, remove A − E, add r if absent
    "mismatch: Knight held where Lord expected": (
        _paying("Knight"),
        [Expect("ROLE_MISMATCH", "MEDIUM", "m1", None, "1001", ("Lord",), ("Knight",))],
    ),
    "mismatch: extra Lord beside the expected Knight": (
        _paying("Knight", "Lord", tier="TEAM_MEMBER"),
        [Expect("ROLE_MISMATCH", "MEDIUM", "m1", None, "1001", remove=("Lord",))],
    ),
    "mismatch: stale Debtor role beside the expected role": (
        _paying("Lord", "Debtor"),
        [Expect("ROLE_MISMATCH", "MEDIUM", "m1", None, "1001", remove=("Debtor",))],
    ),
    "mismatch: Squire promoted once the intro is done": (
        _paying("Squire"),
        [Expect("ROLE_MISMATCH", "MEDIUM", "m1", None, "1001", ("Lord",), ("Squire",))],
    ),
    # DEBTOR_MISMATCH: E = {Debtor}, A ≠ E → MEDIUM, remove A − E, add Debtor if absent
    "debtor: holds a member role instead of Debtor": (
        _paying("Lord", debtor=True),
        [Expect("DEBTOR_MISMATCH", "MEDIUM", "m1", None, "1001", ("Debtor",), ("Lord",))],
    ),
    "debtor: holds no managed role": (
        _paying("Events", debtor=True),
        [Expect("DEBTOR_MISMATCH", "MEDIUM", "m1", None, "1001", add=("Debtor",))],
    ),
    "debtor: holds Debtor and extra roles": (
        _paying("Debtor", "Knight", "Squire", debtor=True),
        [Expect("DEBTOR_MISMATCH", "MEDIUM", "m1", None, "1001", remove=("Knight", "Squire"))],
    ),
    "debtor: Debtor applies even when Stripe no longer grants": (
        _lapsed("Knight", debtor=True),
        [Expect("DEBTOR_MISMATCH", "MEDIUM", "m1", None, "1001", ("Debtor",), ("Knight",))],
    ),
    "debtor: holding exactly Debtor is in order": (_lapsed("Debtor", debtor=True), []),
    # ORPHANED_ACCESS: a managed role held with no member record → HIGH, remove managed roles
    "orphan: stranger with Knight and an unmanaged role": (
        Snapshot(guild=guild(account("5005", "Knight", "Moderator"))),
        [Expect("ORPHANED_ACCESS", "HIGH", None, None, "5005", remove=("Knight",))],
    ),
    "orphan: only Debtor is still HIGH": (
        Snapshot(guild=guild(account("5005", "Debtor"))),
        [Expect("ORPHANED_ACCESS", "HIGH", None, None, "5005", remove=("Debtor",))],
    ),
    "orphan: bots, unmanaged-only and roleless accounts are not orphans": (
        Snapshot(
            guild=guild(
                account("5005", "Lord", bot=True),
                account("5006", "Moderator", "Events"),
                account("5007"),
            )
        ),
        [],
    ),
    "orphan: an unlinked member record does not claim an account": (
        Snapshot(
            members=[member(discord_id=None, customer=None, status="NONE")],
            guild=guild(account("5005", "Squire")),
        ),
        [Expect("ORPHANED_ACCESS", "HIGH", None, None, "5005", remove=("Squire",))],
    ),
    # NOT_IN_GUILD: E not empty, account not in the guild → LOW, report only
    "not in guild: paying member": (
        Snapshot(members=[member()], subs=[sub("cus_1", "active")], guild=guild(account("7777"))),
        [Expect("NOT_IN_GUILD", "LOW", "m1", None, "1001")],
    ),
    "not in guild: debtor": (
        Snapshot(members=[member(debtor=True)], subs=[sub("cus_1", "active")]),
        [Expect("NOT_IN_GUILD", "LOW", "m1", None, "1001")],
    ),
    "not in guild: nothing expected, nothing to report": (
        Snapshot(members=[member(customer=None, status="NONE")]),
        [],
    ),
    # STALE_DATABASE_STATUS: a cached column disagrees with Stripe on whether access is granted
    "stale: member ACTIVE but Stripe canceled": (
        _lapsed(status="ACTIVE"),
        [Expect("STALE_DATABASE_STATUS", "LOW", "m1", None, "1001", status_fix="CANCELLED")],
    ),
    "stale: member NONE but Stripe active, unlinked member too": (
        Snapshot(
            members=[
                member("m1", status="NONE", discord_id="1001", customer="cus_1"),
                member("m2", status="CANCELLED", discord_id=None, customer="cus_2"),
            ],
            subs=[sub("cus_1", "active"), sub("cus_2", "trialing")],
            guild=guild(account("1001", "Lord")),
        ),
        [
            Expect("STALE_DATABASE_STATUS", "LOW", "m1", None, "1001", status_fix="ACTIVE"),
            Expect("STALE_DATABASE_STATUS", "LOW", "m2", None, None, status_fix="TRIALING"),
        ],
    ),
    "stale: past_due writes PAST_DUE, unpaid writes CANCELLED, none writes NONE": (
        Snapshot(
            members=[
                member("m1", status="NONE", discord_id=None, customer="cus_1"),
                member("m2", status="ACTIVE", discord_id=None, customer="cus_2"),
                member("m3", status="TRIALING", discord_id=None, customer=None),
            ],
            subs=[sub("cus_1", "past_due"), sub("cus_2", "unpaid")],
        ),
        [
            Expect("STALE_DATABASE_STATUS", "LOW", "m1", status_fix="PAST_DUE"),
            Expect("STALE_DATABASE_STATUS", "LOW", "m2", status_fix="CANCELLED"),
            Expect("STALE_DATABASE_STATUS", "LOW", "m3", status_fix="NONE"),
        ],
    ),
    "stale: agreeing on access is enough (ACTIVE vs trialing, NONE vs canceled)": (
        Snapshot(
            members=[
                member("m1", status="ACTIVE", discord_id=None, customer="cus_1"),
                member("m2", status="NONE", discord_id=None, customer="cus_2"),
            ],
            subs=[sub("cus_1", "trialing"), sub("cus_2", "canceled")],
        ),
        [],
    ),
    "stale: a team's column, and not its seats' own columns": (
        Snapshot(
            members=[member(customer=None, status="NONE", tier="TEAM_MEMBER", team="t1")],
            teams=[team("t1", customer="cus_t1", status="CANCELLED")],
            subs=[sub("cus_t1", "active")],
            guild=guild(account("1001", "Knight")),
        ),
        [Expect("STALE_DATABASE_STATUS", "LOW", None, "t1", None, status_fix="ACTIVE")],
    ),
    "stale: a dangling team id falls back to the member's own customer and column": (
        Snapshot(
            members=[member(customer="cus_1", status="NONE", tier="TEAM_MEMBER", team="gone")],
            subs=[sub("cus_1", "active")],
            guild=guild(account("1001", "Knight")),
        ),
        [Expect("STALE_DATABASE_STATUS", "LOW", "m1", None, "1001", status_fix="ACTIVE")],
    ),
    # Deliberate differences from the original app
    "difference: one granting subscription is enough beside a newer incomplete one": (
        Snapshot(
            members=[member()],
            subs=[
                sub("cus_1", "active", created=1_700_000_000),
                sub("cus_1", "incomplete", created=1_700_100_000),
            ],
            guild=guild(account("1001", "Lord")),
        ),
        [],
    ),
    "difference: role order never matters": (
        Snapshot(
            members=[
                member("m1", discord_id="1001"),
                member("m2", discord_id="1002", customer="cus_2"),
            ],
            subs=[sub("cus_1", "active"), sub("cus_2", "active")],
            guild=guild(account("1001", "Events", "Lord"), account("1002", "Lord", "Events")),
        ),
        [],
    ),
    "in order: expected role plus unmanaged roles": (_paying("Lord", "Moderator"), []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_find_drift_issues_matches_spec_table(case: str) -> None:
    snapshot, expected = CASES[case]
    assert _project(snapshot.drift()) == expected


ONLY_ACTIVE_GRANTS = AccessPolicy(granting_statuses=frozenset({"active"}))
UNPAID_GRANTS = AccessPolicy(
    granting_statuses=frozenset({"active", "trialing", "past_due", "unpaid"})
)

# With granting statuses other than the database's fixed three, a column can disagree with Stripe
# on access while already holding what its fix would write: writing it again changes nothing, so
# there is no issue. Each case has a contrasting record whose fix does change its column.
NO_OP_CASES: dict[str, tuple[Snapshot, AccessPolicy, list[Expect]]] = {
    "member PAST_DUE, Stripe past_due, only active grants": (
        Snapshot(
            members=[
                member("m1", status="PAST_DUE", discord_id=None, customer="cus_1"),
                member("m2", status="ACTIVE", discord_id=None, customer="cus_2"),
            ],
            subs=[sub("cus_1", "past_due"), sub("cus_2", "past_due")],
        ),
        ONLY_ACTIVE_GRANTS,
        [Expect("STALE_DATABASE_STATUS", "LOW", "m2", status_fix="PAST_DUE")],
    ),
    "member CANCELLED, Stripe unpaid, unpaid grants": (
        Snapshot(
            members=[
                member("m1", status="CANCELLED", discord_id=None, customer="cus_1"),
                member("m2", status="NONE", discord_id=None, customer="cus_2"),
            ],
            subs=[sub("cus_1", "unpaid"), sub("cus_2", "unpaid")],
        ),
        UNPAID_GRANTS,
        [Expect("STALE_DATABASE_STATUS", "LOW", "m2", status_fix="CANCELLED")],
    ),
    "team PAST_DUE, Stripe past_due, only active grants": (
        Snapshot(
            teams=[
                team("t1", customer="cus_t1", status="PAST_DUE"),
                team("t2", customer="cus_t2", status="TRIALING"),
            ],
            subs=[sub("cus_t1", "past_due"), sub("cus_t2", "past_due")],
        ),
        ONLY_ACTIVE_GRANTS,
        [Expect("STALE_DATABASE_STATUS", "LOW", None, "t2", status_fix="PAST_DUE")],
    ),
    "team CANCELLED, Stripe unpaid, unpaid grants": (
        Snapshot(
            teams=[
                team("t1", customer="cus_t1", status="CANCELLED"),
                team("t2", customer="cus_t2", status="NONE"),
            ],
            subs=[sub("cus_t1", "unpaid"), sub("cus_t2", "unpaid")],
        ),
        UNPAID_GRANTS,
        [Expect("STALE_DATABASE_STATUS", "LOW", None, "t2", status_fix="CANCELLED")],
    ),
}


@pytest.mark.parametrize("case", list(NO_OP_CASES))
def test_find_drift_issues_reports_no_stale_status_whose_fix_writes_the_same_value(
    case: str,
) -> None:
    snapshot, policy, expected = NO_OP_CASES[case]
    assert _project(snapshot.drift(policy)) == expected


def test_find_drift_issues_reports_newest_granting_status_else_newest() -> None:
    snapshot = Snapshot(
        members=[
            member("m1", discord_id=None, customer="cus_1", status="NONE"),
            member("m2", discord_id=None, customer="cus_2", status="ACTIVE"),
        ],
        subs=[
            sub("cus_1", "trialing", created=100),
            sub("cus_1", "past_due", created=200),
            sub("cus_1", "incomplete", created=300),
            sub("cus_2", "canceled", created=100),
            sub("cus_2", "incomplete_expired", created=300),
            sub("cus_2", "unpaid", created=200),
        ],
    )
    issues = snapshot.drift().set_index(IssueCol.MEMBER_ID)
    assert issues.loc["m1", IssueCol.STRIPE_STATUS] == "past_due"
    assert issues.loc["m2", IssueCol.STRIPE_STATUS] == "incomplete_expired"


def test_find_drift_issues_breaks_created_ties_by_larger_subscription_id() -> None:
    snapshot = Snapshot(
        members=[member(status="NONE", discord_id=None)],
        subs=[
            sub("cus_1", "past_due", created=100, sub_id="sub_B"),
            sub("cus_1", "active", created=100, sub_id="sub_A"),
        ],
    )
    assert snapshot.drift()[IssueCol.STRIPE_STATUS].tolist() == ["past_due"]


def test_find_drift_issues_never_touches_unmanaged_roles() -> None:
    issues = _lapsed("Knight", "Moderator", "Events").drift()
    assert issues[IssueCol.ROLES_TO_REMOVE].tolist() == [("Knight",)]
    assert issues[IssueCol.DISCORD_ROLES].tolist() == [("Knight",)]


def test_find_drift_issues_exempt_ids_are_not_orphans() -> None:
    snapshot = Snapshot(guild=guild(account("5005", "Lord"), account("5006", "Lord")))
    issues = snapshot.drift(AccessPolicy(exempt_discord_ids=frozenset({"5005"})))
    assert issues[IssueCol.DISCORD_ID].tolist() == ["5006"]


def test_find_drift_issues_uses_configured_role_names() -> None:
    roles = ManagedRoles(squire="Page", knight="Member", lord="Patron", debtor="Overdue")
    snapshot = Snapshot(
        members=[member()],
        subs=[sub("cus_1", "active")],
        guild=guild(account("1001", "Knight")),  # the id of the role now named "Member"
        roles=guild_roles(Squire="Page", Knight="Member", Lord="Patron", Debtor="Overdue"),
    )
    issues = snapshot.drift(AccessPolicy(roles=roles))
    assert _project(issues) == [
        Expect("ROLE_MISMATCH", "MEDIUM", "m1", None, "1001", ("Patron",), ("Member",))
    ]


def test_find_drift_issues_uses_configured_granting_statuses() -> None:
    snapshot = Snapshot(
        members=[member(status="ACTIVE")],
        subs=[sub("cus_1", "past_due")],
        guild=guild(account("1001", "Lord")),
    )
    strict = AccessPolicy(granting_statuses=frozenset({"active", "trialing"}))
    assert [i.type for i in _project(snapshot.drift(strict))] == [
        "UNAUTHORIZED_ACCESS",
        "STALE_DATABASE_STATUS",
    ]
    assert _project(snapshot.drift()) == []


def test_find_drift_issues_matches_discord_ids_as_integers() -> None:
    # Discord ids are compared as numbers; text that is no id at all matches nothing.
    snapshot = Snapshot(
        members=[
            member("m1", discord_id="01001", customer="cus_1"),
            member("m2", discord_id="not-an-id", customer="cus_2"),
        ],
        subs=[sub("cus_1", "active"), sub("cus_2", "active")],
        guild=guild(account("1001", "Lord")),
    )
    assert _project(snapshot.drift()) == [Expect("NOT_IN_GUILD", "LOW", "m2", None, "not-an-id")]


def test_find_drift_issues_describes_expected_and_found_in_plain_words() -> None:
    snapshot = Snapshot(
        members=[member(customer=None, status="ACTIVE", tier="TEAM_MEMBER", team="t1")],
        teams=[team("t1", name="Acme", customer="cus_t1")],
        subs=[sub("cus_t1", "active")],
        guild=guild(account("1001")),
    )
    [description] = snapshot.drift()[IssueCol.DESCRIPTION].tolist()
    assert description.startswith("Stripe active (team Acme) but Discord has no member role")
    assert "Knight" in description


def test_find_drift_issues_orders_rows_by_type_then_ids() -> None:
    snapshot = Snapshot(
        members=[
            member("m2", discord_id="1002", customer="cus_2"),
            member("m1", discord_id="1001", customer="cus_1"),
            member("m3", discord_id="1003", customer=None, status="ACTIVE"),
        ],
        subs=[sub("cus_1", "active"), sub("cus_2", "active")],
        guild=guild(
            account("1003", "Knight"), account("1002"), account("1001"), account("9", "Lord")
        ),
    )
    issues = snapshot.drift()
    assert list(
        zip(issues[IssueCol.TYPE], issues[IssueCol.MEMBER_ID].fillna("-"), strict=True)
    ) == [
        ("MISSING_ACCESS", "m1"),
        ("MISSING_ACCESS", "m2"),
        ("UNAUTHORIZED_ACCESS", "m3"),
        ("ORPHANED_ACCESS", "-"),
        ("STALE_DATABASE_STATUS", "m3"),
    ]


def test_find_drift_issues_is_empty_with_every_column_for_an_empty_community() -> None:
    issues = Snapshot().drift()
    assert issues.empty
    assert tuple(issues.columns) == IssueCol.ALL


def test_find_drift_issues_refuses_a_guild_without_a_managed_role() -> None:
    roles = guild_roles().query("name != 'Debtor'")
    with pytest.raises(RoleResolutionError, match="'Debtor' does not exist in the guild"):
        Snapshot(roles=roles).drift()


def test_find_drift_issues_refuses_an_ambiguous_managed_role() -> None:
    roles = pd.concat([guild_roles(), pd.DataFrame({"id": ["9999"], "name": ["Lord"]})])
    with pytest.raises(RoleResolutionError, match="'Lord' matches 2 guild roles"):
        Snapshot(roles=roles).drift()


def test_find_drift_issues_names_a_missing_column() -> None:
    frames = Snapshot(members=[member()]).frames()
    frames["members"] = frames["members"].drop(columns="seat_tier")
    from recon_pipeline.domain.drift import find_drift_issues

    with pytest.raises(MissingColumnsError, match=r"members frame is missing column.*seat_tier"):
        find_drift_issues(**frames, policy=AccessPolicy())
