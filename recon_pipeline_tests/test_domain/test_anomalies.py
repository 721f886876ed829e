"""Bad data in the snapshots: which fixes are withheld, what is reported (pure, no Dagster)."""

from __future__ import annotations

from recon_pipeline.domain.anomalies import data_anomalies, withhold_unsafe_fixes
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline_tests.builders import Snapshot, account, guild, member, sub, team


def _rows(snapshot: Snapshot) -> dict[tuple[str, str], dict]:
    issues = withhold_unsafe_fixes(snapshot.drift(), snapshot.frames()["members"])
    return {
        (row[IssueCol.TYPE], row[IssueCol.MEMBER_ID] or row[IssueCol.DISCORD_ID]): row
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

    assert withhold_unsafe_fixes(issues, snapshot.frames()["members"]).equals(issues)


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
