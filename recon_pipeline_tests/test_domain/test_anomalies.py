"""Bad data in the snapshots: which fixes are withheld, what is reported (pure, no Dagster)."""

from __future__ import annotations

import pandas as pd

from recon_pipeline.domain.anomalies import data_anomalies, withhold_unsafe_fixes
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline_tests.builders import Snapshot, account, guild, member, sub, team

UNKNOWN_NO_REMOVAL = (
    "not fixed: Stripe status 'on_hold_review' is not one recon_pipeline knows, so access is "
    "not taken away on it"
)
UNKNOWN_NO_DOWNGRADE = (
    "not fixed: Stripe status 'on_hold_review' is not one recon_pipeline knows, so the database "
    "status is not downgraded on it"
)


def _withheld(snapshot: Snapshot, issues: pd.DataFrame | None = None) -> pd.DataFrame:
    frames = snapshot.frames()
    return withhold_unsafe_fixes(
        snapshot.drift() if issues is None else issues,
        frames["members"],
        teams=frames["teams"],
        subscriptions=frames["subscriptions"],
    )


def _rows(snapshot: Snapshot) -> dict[tuple[str, str], dict]:
    issues = _withheld(snapshot)
    return {
        (
            row[IssueCol.TYPE],
            row[IssueCol.MEMBER_ID] or row[IssueCol.TEAM_ID] or row[IssueCol.DISCORD_ID],
        ): row
        for row in issues.astype(object).where(issues.notna(), None).to_dict("records")
    }


def test_withhold_account_linked_to_two_members_plans_no_change() -> None:
    snapshot = Snapshot(
        members=[
            member("m_paying", discord_id="1001", customer="cus_p"),
            member("m_lapsed", discord_id=" 01001", customer="cus_l"),
        ],
        subs=[sub("cus_p", "active"), sub("cus_l", "canceled")],
        guild=guild(account("1001", "Lord")),
    )

    issue = _rows(snapshot)[("UNAUTHORIZED_ACCESS", "m_lapsed")]

    assert issue[IssueCol.ROLES_TO_REMOVE] == () and issue[IssueCol.ROLES_TO_ADD] == ()
    assert issue[IssueCol.DESCRIPTION].endswith(
        "not fixed: Discord account 01001 is linked to 2 member records (m_lapsed, m_paying); "
        "correct the links in the database first"
    )


def test_why_a_fix_is_withheld_is_its_own_column_and_empty_where_nothing_is_withheld() -> None:
    snapshot = Snapshot(
        members=[
            member("m_paying", discord_id="1001", customer="cus_p"),
            member("m_lapsed", discord_id=" 01001", customer="cus_l"),
            member("m_other", discord_id="1002", customer="cus_o"),
        ],
        subs=[sub("cus_p", "active"), sub("cus_l", "canceled"), sub("cus_o", "canceled")],
        guild=guild(account("1001", "Lord"), account("1002", "Lord")),
    )
    assert IssueCol.FIX_WITHHELD in snapshot.drift()  # in the drift table from the start

    rows = _rows(snapshot)

    assert rows[("UNAUTHORIZED_ACCESS", "m_lapsed")][IssueCol.FIX_WITHHELD] == (
        "Discord account 01001 is linked to 2 member records (m_lapsed, m_paying); "
        "correct the links in the database first"
    )
    assert rows[("UNAUTHORIZED_ACCESS", "m_other")][IssueCol.FIX_WITHHELD] is None


def test_withhold_removal_on_an_unknown_stripe_status_only() -> None:
    snapshot = Snapshot(
        members=[
            member("m_frozen", discord_id="1001", customer="cus_f"),
            member("m_canceled", discord_id="1002", customer="cus_c"),
        ],
        subs=[sub("cus_f", "frozen"), sub("cus_c", "canceled")],
        guild=guild(account("1001", "Lord"), account("1002", "Lord")),
    )

    rows = _rows(snapshot)

    frozen = rows[("UNAUTHORIZED_ACCESS", "m_frozen")]
    assert frozen[IssueCol.ROLES_TO_REMOVE] == ()
    assert "Stripe status 'frozen' is not one recon_pipeline knows" in frozen[IssueCol.DESCRIPTION]
    assert rows[("UNAUTHORIZED_ACCESS", "m_canceled")][IssueCol.ROLES_TO_REMOVE] == ("Lord",)


def test_withhold_removal_when_any_subscription_has_an_unknown_status_not_only_the_reported() -> (
    None
):
    snapshot = Snapshot(
        members=[
            member("m_unknown_newer", discord_id="1001", customer="cus_a", status="CANCELLED"),
            member("m_unknown_older", discord_id="1002", customer="cus_b", status="CANCELLED"),
            member("m_canceled", discord_id="1003", customer="cus_c", status="CANCELLED"),
        ],
        subs=[
            sub("cus_a", "canceled", created=100),
            sub("cus_a", "on_hold_review", created=200),
            sub("cus_b", "on_hold_review", created=100),
            sub("cus_b", "canceled", created=200),
            sub("cus_c", "canceled", created=200),
        ],
        guild=guild(account("1001", "Lord"), account("1002", "Lord"), account("1003", "Lord")),
    )

    rows = _rows(snapshot)

    for member_id in ("m_unknown_newer", "m_unknown_older"):
        issue = rows[("UNAUTHORIZED_ACCESS", member_id)]
        assert issue[IssueCol.ROLES_TO_REMOVE] == ()
        assert issue[IssueCol.DESCRIPTION].endswith(UNKNOWN_NO_REMOVAL)
    # The reported (newest) status is a known one; the older unknown one still counts.
    assert rows[("UNAUTHORIZED_ACCESS", "m_unknown_older")][IssueCol.STRIPE_STATUS] == "canceled"
    assert rows[("UNAUTHORIZED_ACCESS", "m_canceled")][IssueCol.ROLES_TO_REMOVE] == ("Lord",)


def test_withhold_removal_looks_at_the_billing_customers_subscriptions() -> None:
    seat = {"tier": "TEAM_MEMBER", "status": "NONE"}
    snapshot = Snapshot(
        members=[
            member("m_team_unknown", discord_id="1001", customer=None, team="t_unknown", **seat),
            # Their own customer's unknown status is not what bills them: the team's is.
            member("m_own_unknown", discord_id="1002", customer="cus_own", team="t_known", **seat),
            # A team id that names no team: billed as themselves.
            member("m_team_gone", discord_id="1003", customer="cus_gone", team="t_gone", **seat),
        ],
        teams=[
            team("t_unknown", customer="cus_tu", status="CANCELLED"),
            team("t_known", customer="cus_tk", status="CANCELLED"),
        ],
        subs=[
            sub("cus_tu", "on_hold_review", created=100),
            sub("cus_tu", "canceled", created=200),
            sub("cus_tk", "canceled", created=200),
            sub("cus_own", "on_hold_review", created=100),
            sub("cus_gone", "on_hold_review", created=100),
            sub("cus_gone", "canceled", created=200),
        ],
        guild=guild(
            account("1001", "Knight"), account("1002", "Knight"), account("1003", "Knight")
        ),
    )

    rows = _rows(snapshot)

    assert set(rows) == {
        ("UNAUTHORIZED_ACCESS", "m_team_unknown"),
        ("UNAUTHORIZED_ACCESS", "m_own_unknown"),
        ("UNAUTHORIZED_ACCESS", "m_team_gone"),
    }
    for member_id in ("m_team_unknown", "m_team_gone"):
        issue = rows[("UNAUTHORIZED_ACCESS", member_id)]
        assert issue[IssueCol.ROLES_TO_REMOVE] == ()
        assert issue[IssueCol.DESCRIPTION].endswith(UNKNOWN_NO_REMOVAL)
    billed_by_team = rows[("UNAUTHORIZED_ACCESS", "m_own_unknown")]
    assert billed_by_team[IssueCol.ROLES_TO_REMOVE] == ("Knight",)
    assert "not fixed" not in billed_by_team[IssueCol.DESCRIPTION]


def test_withhold_status_downgrade_when_the_customer_has_an_unknown_status() -> None:
    snapshot = Snapshot(
        members=[
            member("m_down", discord_id=None, customer="cus_down", status="ACTIVE"),
            member("m_up", discord_id=None, customer="cus_up", status="NONE"),
            member("m_plain", discord_id=None, customer="cus_plain", status="PAST_DUE"),
        ],
        teams=[team("t_down", customer="cus_t_down", status="TRIALING")],
        subs=[
            sub("cus_down", "on_hold_review", created=100),
            sub("cus_down", "canceled", created=200),
            sub("cus_t_down", "canceled", created=100),
            sub("cus_t_down", "on_hold_review", created=200),
            # An upgrade is safe whatever else the customer has.
            sub("cus_up", "active", created=100),
            sub("cus_up", "on_hold_review", created=200),
            sub("cus_plain", "canceled", created=200),
        ],
    )

    rows = _rows(snapshot)

    for subject in ("m_down", "t_down"):
        issue = rows[("STALE_DATABASE_STATUS", subject)]
        assert issue[IssueCol.STATUS_FIX] is None
        assert issue[IssueCol.DESCRIPTION].endswith(UNKNOWN_NO_DOWNGRADE)
    assert rows[("STALE_DATABASE_STATUS", "m_up")][IssueCol.STATUS_FIX] == "ACTIVE"
    assert rows[("STALE_DATABASE_STATUS", "m_plain")][IssueCol.STATUS_FIX] == "CANCELLED"
    assert "not fixed" not in rows[("STALE_DATABASE_STATUS", "m_up")][IssueCol.DESCRIPTION]


def test_withhold_orphan_whose_id_a_member_wrote_malformed() -> None:
    snapshot = Snapshot(
        members=[member("m_mention", discord_id="<@1003>", customer="cus_c")],
        subs=[sub("cus_c", "active")],
        guild=guild(account("1003", "Lord"), account("1004", "Lord")),
    )

    rows = _rows(snapshot)

    assert rows[("ORPHANED_ACCESS", "1003")][IssueCol.ROLES_TO_REMOVE] == ()
    assert rows[("ORPHANED_ACCESS", "1004")][IssueCol.ROLES_TO_REMOVE] == ("Lord",)


def test_withhold_leaves_clean_issues_untouched() -> None:
    snapshot = Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        subs=[sub("cus_1", "canceled")],
        guild=guild(account("1001", "Knight")),
    )
    issues = snapshot.drift()

    assert _withheld(snapshot, issues).equals(issues)


def test_drift_description_says_the_id_is_not_an_id_and_the_team_is_gone() -> None:
    snapshot = Snapshot(
        members=[
            member("m_word", discord_id="abc", customer="cus_a"),
            member("m_team", discord_id="1002", customer=None, team="t_gone"),
        ],
        subs=[sub("cus_a", "active")],
        guild=guild(account("1002", "Knight")),
    )

    rows = _rows(snapshot)

    assert rows[("NOT_IN_GUILD", "m_word")][IssueCol.DESCRIPTION] == (
        "Stripe active: expected Lord but the member's Discord id 'abc' is not a Discord id "
        "(digits), so no account in the server can be theirs"
    )
    assert rows[("UNAUTHORIZED_ACCESS", "m_team")][IssueCol.DESCRIPTION] == (
        "no Stripe subscription (team id 't_gone' names no team) but Discord has Knight "
        "(expected no managed role)"
    )


def test_drift_matches_an_id_with_surrounding_spaces_and_reports_it_stripped() -> None:
    snapshot = Snapshot(
        members=[member("m_padded", discord_id=" 1001 ", customer="cus_1")],
        subs=[sub("cus_1", "active")],
        guild=guild(account("1001")),
    )

    [issue] = _rows(snapshot).values()

    assert issue[IssueCol.TYPE] == "MISSING_ACCESS"
    assert issue[IssueCol.DISCORD_ID] == "1001"


def test_data_anomalies_names_each_kind_of_bad_data() -> None:
    frames = Snapshot(
        members=[
            member("m_word", discord_id="abc", customer="cus_shared"),
            member("m_a", discord_id="1001", customer="cus_shared", status="LAPSED"),
            member("m_b", discord_id="01001", customer=None, team="t_gone", tier="EMPEROR"),
        ],
        teams=[team("t1", customer="cus_t1", status="FROZEN")],
        subs=[sub("cus_shared", "active"), sub("cus_t1", "mystery")],
    ).frames()

    found = data_anomalies(frames["members"], frames["teams"], frames["subscriptions"])

    assert found == [
        "1 member(s) have a Discord id that is not a Discord id (digits), so no account can "
        "match them: m_word",
        "one Discord account is linked to 2 member records (m_a, m_b): their role fixes are "
        "withheld",
        "1 member(s) name a team that does not exist, so their own Stripe customer is used: m_b",
        "1 Stripe customer id(s) belong to several records: m_word, m_a",
        "1 member(s) have a subscriptionStatus outside NONE, TRIALING, ACTIVE, PAST_DUE, "
        "CANCELLED (read as not paying): m_a",
        "1 team(s) have a subscriptionStatus outside NONE, TRIALING, ACTIVE, PAST_DUE, "
        "CANCELLED (read as not paying): t1",
        "1 member(s) have a seatTier outside INDIVIDUAL, OWNER, TEAM_MEMBER (read as a team "
        "seat): m_b",
        "1 Stripe subscription(s) have a status recon_pipeline does not know (mystery): they "
        "grant no access and no access is taken away on them",
    ]


def test_data_anomalies_of_clean_snapshots_is_empty() -> None:
    frames = Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        subs=[sub("cus_1", "active")],
    ).frames()

    assert data_anomalies(frames["members"], frames["teams"], frames["subscriptions"]) == []
