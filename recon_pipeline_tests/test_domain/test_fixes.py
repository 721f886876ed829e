"""Fix planning (docs/behaviour.md §3, §4): the blast-radius guard, one action per change, and
issue outcomes.

The community below has one issue of every drift type, so each planning rule is checked against
issues the engine really produces rather than hand-made rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd
import pytest

from recon_pipeline.domain.anomalies import withhold_unsafe_fixes
from recon_pipeline.domain.columns import GuildMemberRoleCol, IssueCol, MissingColumnsError
from recon_pipeline.domain.drift import empty_issue_table
from recon_pipeline.domain.fixes import (
    ActionCol,
    GuardDecision,
    GuardPolicy,
    OutcomeCol,
    ResultCol,
    count_role_holders,
    evaluate_guard,
    issue_outcomes,
    plan_fix_actions,
)
from recon_pipeline_tests.builders import ROLE_IDS, Snapshot, account, guild, member, sub, team

MANAGED_IDS = {ROLE_IDS[name] for name in ("Squire", "Knight", "Lord", "Debtor")}

# Row positions of the issues `_community()` yields, in the engine's order.
MISSING, UNAUTHORIZED, MISMATCH, DEBTOR, ORPHAN, NOT_IN_GUILD, STALE_TEAM, STALE_MEMBER = range(8)


def _community() -> pd.DataFrame:
    """One issue of every drift type (row positions as named above)."""
    issues = Snapshot(
        members=[
            member("m1", discord_id="1001", customer="cus_1"),  # MISSING_ACCESS: add Lord
            member("m2", discord_id="1002", customer="cus_2", status="CANCELLED"),  # remove Knight
            member("m3", discord_id="1003", customer="cus_3"),  # ROLE_MISMATCH: Lord for two
            member("m4", discord_id="1004", customer="cus_4", debtor=True),  # Debtor for Lord
            member("m5", discord_id="1005", customer="cus_5"),  # NOT_IN_GUILD
            member("m6", discord_id=None, customer="cus_6", status="NONE"),  # stale member
        ],
        teams=[team("t1", customer="cus_t1", status="CANCELLED")],  # stale team
        subs=[
            sub("cus_1"),
            sub("cus_2", "canceled"),
            sub("cus_3"),
            sub("cus_4"),
            sub("cus_5"),
            sub("cus_6"),
            sub("cus_t1"),
        ],
        guild=guild(
            account("1001", "Events"),
            account("1002", "Knight"),
            account("1003", "Knight", "Squire"),
            account("1004", "Lord"),
            account("5005", "Squire", "Moderator"),  # ORPHANED_ACCESS
        ),
    ).drift()
    assert issues[IssueCol.TYPE].tolist() == [
        "MISSING_ACCESS",
        "UNAUTHORIZED_ACCESS",
        "ROLE_MISMATCH",
        "DEBTOR_MISMATCH",
        "ORPHANED_ACCESS",
        "NOT_IN_GUILD",
        "STALE_DATABASE_STATUS",
        "STALE_DATABASE_STATUS",
    ]
    return issues


def _orphans(n: int) -> pd.DataFrame:
    """`n` ORPHANED_ACCESS issues: strangers holding Knight."""
    issues = Snapshot(guild=guild(*(account(str(5000 + i), "Knight") for i in range(n)))).drift()
    assert (issues[IssueCol.TYPE] == "ORPHANED_ACCESS").sum() == n
    return issues


# ------------------------------------------------------------------------------------- guard


class GuardCase(NamedTuple):
    removals: int
    holders: int
    floor: int
    fraction: float
    tripped: bool


GUARD_CASES: dict[str, GuardCase] = {
    "exactly at the floor, above the fraction": GuardCase(5, 8, 5, 0.25, False),
    "one above the floor and above the fraction": GuardCase(6, 8, 5, 0.25, True),
    "exactly at fraction × holders, above the floor": GuardCase(25, 100, 5, 0.25, False),
    "one above fraction × holders and above the floor": GuardCase(26, 100, 5, 0.25, True),
    "above the floor only": GuardCase(10, 100, 5, 0.25, False),
    "above the fraction only": GuardCase(4, 8, 5, 0.25, False),
    "fraction × holders not whole, just above it": GuardCase(3, 10, 2, 0.25, True),
    "fraction × holders not whole, just below it": GuardCase(2, 10, 0, 0.25, False),
    "zero holders, at the floor": GuardCase(5, 0, 5, 0.25, False),
    "zero holders, above the floor": GuardCase(6, 0, 5, 0.25, True),
    "no removals at all": GuardCase(0, 0, 0, 0.25, False),
    "floor 0, at fraction × holders": GuardCase(2, 8, 0, 0.25, False),
    "floor 0, above fraction × holders": GuardCase(3, 8, 0, 0.25, True),
    "floor 0 and zero holders, one removal": GuardCase(1, 0, 0, 0.25, True),
    "fraction 0, at the floor": GuardCase(5, 100, 5, 0.0, False),
    "fraction 0, above the floor": GuardCase(6, 100, 5, 0.0, True),
    "fraction 1, every holder": GuardCase(10, 10, 5, 1.0, False),
    "fraction 1, more removals than holders": GuardCase(11, 10, 5, 1.0, True),
}


@pytest.mark.parametrize("case", list(GUARD_CASES))
def test_evaluate_guard_trips_only_above_both_floor_and_fraction(case: str) -> None:
    removals, holders, floor, fraction, tripped = GUARD_CASES[case]

    decision = evaluate_guard(_orphans(removals), holders, GuardPolicy(floor, fraction))

    assert decision.planned_removals == removals
    assert decision.tripped is tripped
    assert decision.blocks_removals is tripped
    # `limit` is the most removals allowed: the guard trips exactly when it is exceeded.
    assert (removals > decision.limit) is tripped


def test_guard_decision_exactly_at_an_inexact_fraction_does_not_trip() -> None:
    decision = GuardDecision(planned_removals=29, holders=100, floor=5, fraction=0.29)

    assert decision.limit == 29
    assert not decision.tripped


def test_evaluate_guard_counts_only_removal_only_issues() -> None:
    # Seven issues of which ROLE_MISMATCH and DEBTOR_MISMATCH also remove roles, but swap them.
    decision = evaluate_guard(_community(), 10, GuardPolicy(floor=1, fraction=0.0))

    assert decision.planned_removals == 2  # UNAUTHORIZED_ACCESS m2 and ORPHANED_ACCESS 5005
    assert decision.tripped


def _downgrades(n: int, upgrades: int = 0) -> pd.DataFrame:
    """`n` paying members (unlinked) whose Stripe customers have nothing: each cached ACTIVE
    would be rewritten to NONE; and `upgrades` members whose NONE would become ACTIVE."""
    members = [
        member(f"d{i}", discord_id=None, customer=f"cus_d{i}", status="ACTIVE") for i in range(n)
    ]
    members += [
        member(f"u{i}", discord_id=None, customer=f"cus_u{i}", status="NONE")
        for i in range(upgrades)
    ]
    issues = Snapshot(members=members, subs=[sub(f"cus_u{i}") for i in range(upgrades)]).drift()
    assert (issues[IssueCol.TYPE] == "STALE_DATABASE_STATUS").sum() == n + upgrades
    return issues


def test_evaluate_guard_counts_status_downgrades_like_removals() -> None:
    decision = evaluate_guard(_downgrades(6, upgrades=4), 8, GuardPolicy(5, 0.25))

    assert decision.planned_removals == 6  # the upgrades take nothing away
    assert decision.tripped


def test_evaluate_guard_does_not_count_a_status_downgrade_withheld_for_bad_data() -> None:
    issues = _downgrades(6)
    issues.loc[0, IssueCol.STATUS_FIX] = pd.NA

    assert evaluate_guard(issues, 8, GuardPolicy(5, 0.25)).planned_removals == 5


def test_plan_fix_actions_marks_status_downgrades_for_the_guard_and_upgrades_not() -> None:
    actions = plan_fix_actions(_downgrades(1, upgrades=1))

    marked = dict(zip(actions[ActionCol.MEMBER_ID], actions[ActionCol.REMOVAL_ONLY], strict=True))
    assert marked == {"d0": True, "u0": False}


def test_evaluate_guard_does_not_count_removals_withheld_for_bad_data() -> None:
    issues = _orphans(6)
    issues.loc[:2, IssueCol.ROLES_TO_REMOVE] = pd.Series([()] * 3, dtype=object)

    decision = evaluate_guard(issues, 8, GuardPolicy(5, 0.25))

    assert decision.planned_removals == 3
    assert not decision.tripped


def test_evaluate_guard_on_no_issues_plans_no_removals() -> None:
    decision = evaluate_guard(empty_issue_table(), 0, GuardPolicy(floor=0, fraction=0.0))

    assert decision.planned_removals == 0
    assert not decision.tripped


def test_evaluate_guard_default_policy_is_floor_5_and_a_quarter() -> None:
    assert not evaluate_guard(_orphans(25), 100, GuardPolicy()).tripped
    assert evaluate_guard(_orphans(26), 100, GuardPolicy()).tripped
    assert not evaluate_guard(_orphans(5), 4, GuardPolicy()).tripped
    assert evaluate_guard(_orphans(6), 4, GuardPolicy()).tripped


def test_evaluate_guard_override_lets_a_tripped_guard_through() -> None:
    tripped = evaluate_guard(_orphans(6), 8, GuardPolicy(5, 0.25), override=True)
    calm = evaluate_guard(_orphans(1), 8, GuardPolicy(5, 0.25), override=True)

    assert tripped.tripped and tripped.overridden
    assert not tripped.blocks_removals
    assert not calm.tripped and not calm.blocks_removals


def test_guard_decision_describe_names_the_numbers_and_the_state() -> None:
    held = GuardDecision(planned_removals=26, holders=100, floor=5, fraction=0.25)
    overridden = GuardDecision(26, 100, 5, 0.25, overridden=True)
    calm = GuardDecision(3, 100, 5, 0.25)

    text = held.describe()
    for number in ("26", "100", "5", "0.25", "25"):
        assert number in text
    assert "limit 25" in text
    assert "held back" in text
    assert "overridden" in overridden.describe() and "held back" not in overridden.describe()
    assert "not tripped" in calm.describe() and "3 planned" in calm.describe()


# ----------------------------------------------------------------------------- role holders


def _member_roles(*accounts: list[dict[str, Any]]) -> pd.DataFrame:
    return Snapshot(guild=guild(*accounts)).frames()["guild_member_roles"]


def test_count_role_holders_counts_accounts_not_rows() -> None:
    frame = _member_roles(
        account("1001", "Knight", "Lord", "Moderator"),  # three rows, one holder
        account("1002", "Squire"),
        account("1003", "Debtor", "Events"),
        account("1004", "Moderator", "Events"),  # unmanaged roles only
        account("1005"),  # no role at all
    )

    assert count_role_holders(frame, MANAGED_IDS) == 3


def test_count_role_holders_only_looks_at_the_managed_ids_given() -> None:
    frame = _member_roles(account("1001", "Knight"), account("1002", "Moderator"))

    assert count_role_holders(frame, {ROLE_IDS["Moderator"]}) == 1
    assert count_role_holders(frame, set()) == 0


def test_count_role_holders_of_an_empty_guild_is_zero() -> None:
    assert count_role_holders(_member_roles(), MANAGED_IDS) == 0


def test_count_role_holders_rejects_a_frame_without_role_ids() -> None:
    frame = _member_roles(account("1001", "Knight")).drop(columns=GuildMemberRoleCol.ROLE_ID)

    with pytest.raises(MissingColumnsError, match=GuildMemberRoleCol.ROLE_ID):
        count_role_holders(frame, MANAGED_IDS)


# ----------------------------------------------------------------------------- planned actions


class Act(NamedTuple):
    issue: int
    kind: str
    type: str
    value: str
    removal_only: bool


def _acts(actions: pd.DataFrame) -> list[Act]:
    return [
        Act(
            int(row[ActionCol.ISSUE]),
            row[ActionCol.KIND],
            row[ActionCol.TYPE],
            row[ActionCol.VALUE],
            bool(row[ActionCol.REMOVAL_ONLY]),
        )
        for _, row in actions.iterrows()
    ]


def test_plan_fix_actions_one_action_per_role_change_and_status_write() -> None:
    actions = plan_fix_actions(_community())

    assert list(actions.columns) == list(ActionCol.ALL)
    assert _acts(actions) == [
        Act(MISSING, "add_role", "MISSING_ACCESS", "Lord", False),
        Act(UNAUTHORIZED, "remove_role", "UNAUTHORIZED_ACCESS", "Knight", True),
        Act(MISMATCH, "add_role", "ROLE_MISMATCH", "Lord", False),
        Act(MISMATCH, "remove_role", "ROLE_MISMATCH", "Knight", False),
        Act(MISMATCH, "remove_role", "ROLE_MISMATCH", "Squire", False),
        Act(DEBTOR, "add_role", "DEBTOR_MISMATCH", "Debtor", False),
        Act(DEBTOR, "remove_role", "DEBTOR_MISMATCH", "Lord", False),
        Act(ORPHAN, "remove_role", "ORPHANED_ACCESS", "Squire", True),
        Act(STALE_TEAM, "set_status", "STALE_DATABASE_STATUS", "ACTIVE", False),
        Act(STALE_MEMBER, "set_status", "STALE_DATABASE_STATUS", "ACTIVE", False),
    ]


def test_plan_fix_actions_puts_the_grant_before_the_removals_of_its_issue() -> None:
    # Removals sorted first alphabetically ("Debtor" < "Knight" < "Lord") still come after.
    issues = Snapshot(
        members=[member(debtor=True)],
        subs=[sub("cus_1")],
        guild=guild(account("1001", "Knight", "Squire", "Lord")),
    ).drift()
    issues = pd.concat([issues, _community().iloc[[MISMATCH]]], ignore_index=True)

    actions = plan_fix_actions(issues)

    assert [(a.issue, a.kind, a.value) for a in _acts(actions)] == [
        (0, "add_role", "Debtor"),
        (0, "remove_role", "Knight"),
        (0, "remove_role", "Lord"),
        (0, "remove_role", "Squire"),
        (1, "add_role", "Lord"),
        (1, "remove_role", "Knight"),
        (1, "remove_role", "Squire"),
    ]


def test_plan_fix_actions_gives_not_in_guild_no_action() -> None:
    actions = plan_fix_actions(_community())

    assert NOT_IN_GUILD not in set(actions[ActionCol.ISSUE])
    assert "NOT_IN_GUILD" not in set(actions[ActionCol.TYPE])


def test_plan_fix_actions_carries_who_each_action_is_for() -> None:
    actions = plan_fix_actions(_community()).set_index(ActionCol.ISSUE)

    def subject(issue: int) -> tuple[Any, Any, Any]:
        row = actions.loc[[issue]].iloc[0]
        return tuple(
            None if pd.isna(row[c]) else row[c]
            for c in (ActionCol.MEMBER_ID, ActionCol.TEAM_ID, ActionCol.DISCORD_ID)
        )

    assert subject(MISMATCH) == ("m3", None, "1003")
    assert subject(ORPHAN) == (None, None, "5005")
    assert subject(STALE_TEAM) == (None, "t1", None)
    assert subject(STALE_MEMBER) == ("m6", None, None)


def test_plan_fix_actions_keys_are_stable_and_distinct() -> None:
    issues = _community()

    first = plan_fix_actions(issues)
    second = plan_fix_actions(issues.copy())

    assert first[ActionCol.KEY].tolist() == second[ActionCol.KEY].tolist()
    assert first[ActionCol.KEY].is_unique
    # Same role, different issues (Lord added for m1 and m3; ACTIVE written for t1 and m6).
    lords = first[(first[ActionCol.VALUE] == "Lord") & (first[ActionCol.KIND] == "add_role")]
    statuses = first[first[ActionCol.KIND] == "set_status"]
    assert lords[ActionCol.KEY].nunique() == 2
    assert statuses[ActionCol.KEY].nunique() == 2


def test_plan_fix_actions_keys_do_not_depend_on_the_issues_row_position() -> None:
    issues = _community()
    later = [MISMATCH, STALE_TEAM, STALE_MEMBER]

    whole = plan_fix_actions(issues)
    part = plan_fix_actions(issues.iloc[later])

    expected = whole[whole[ActionCol.ISSUE].isin(later)]
    assert part[ActionCol.KEY].tolist() == expected[ActionCol.KEY].tolist()
    # The issue column is the position in the table handed in, whatever its index.
    assert part[ActionCol.ISSUE].tolist() == [0, 0, 0, 1, 2]


def test_plan_fix_actions_same_member_in_two_issues_gets_distinct_keys() -> None:
    # m1 holds Lord without paying (UNAUTHORIZED_ACCESS) and its column says ACTIVE (stale).
    issues = Snapshot(
        members=[member(status="ACTIVE")],
        subs=[sub("cus_1", "canceled")],
        guild=guild(account("1001", "Lord")),
    ).drift()

    actions = plan_fix_actions(issues)

    assert actions[ActionCol.MEMBER_ID].tolist() == ["m1", "m1"]
    assert actions[ActionCol.KEY].is_unique


def test_plan_fix_actions_of_no_issues_is_an_empty_action_table() -> None:
    actions = plan_fix_actions(empty_issue_table())

    assert len(actions) == 0
    assert list(actions.columns) == list(ActionCol.ALL)


def test_plan_fix_actions_rejects_a_table_without_the_issue_columns() -> None:
    issues = _community().drop(columns=IssueCol.ROLES_TO_ADD)

    with pytest.raises(MissingColumnsError, match=IssueCol.ROLES_TO_ADD):
        plan_fix_actions(issues)


# ----------------------------------------------------------------------------- issue outcomes


def _results(actions: pd.DataFrame, overrides: dict[tuple[int, str, str], tuple[str, str]]):
    """`fixed` for every action except `(issue, kind, value)` → (outcome, detail) overrides;
    an override of None leaves that action without a result."""
    rows = []
    for _, action in actions.iterrows():
        at = (int(action[ActionCol.ISSUE]), action[ActionCol.KIND], action[ActionCol.VALUE])
        result = overrides.get(at, ("fixed", ""))
        if result is not None:
            rows.append((action[ActionCol.KEY], *result))
    return pd.DataFrame(rows, columns=list(ResultCol.ALL)).astype("str")


class OutcomeCase(NamedTuple):
    overrides: dict[tuple[int, str, str], Any]
    outcome: str
    detail: str
    taken: tuple[str, ...]


ADD_LORD = (MISMATCH, "add_role", "Lord")
DROP_KNIGHT = (MISMATCH, "remove_role", "Knight")
DROP_SQUIRE = (MISMATCH, "remove_role", "Squire")
ALL_THREE = ("add_role Lord", "remove_role Knight", "remove_role Squire")

OUTCOME_CASES: dict[str, OutcomeCase] = {
    "every action fixed": OutcomeCase({}, "fixed", "", ALL_THREE),
    "one removal failed": OutcomeCase(
        {DROP_KNIGHT: ("failed", "Discord error: boom"), DROP_SQUIRE: ("not_attempted", "held")},
        "failed",
        "Discord error: boom",
        ("add_role Lord",),
    ),
    "grant failed, removals held back": OutcomeCase(
        {
            ADD_LORD: ("failed", "may not manage Lord"),
            DROP_KNIGHT: ("not_attempted", "held"),
            DROP_SQUIRE: ("not_attempted", "held"),
        },
        "failed",
        "may not manage Lord",
        (),
    ),
    "failed outranks skipped": OutcomeCase(
        {ADD_LORD: ("skipped", "guard"), DROP_SQUIRE: ("failed", "gone")},
        "failed",
        "gone",
        ("remove_role Knight",),
    ),
    "all skipped": OutcomeCase(
        {a: ("skipped", "dry run") for a in (ADD_LORD, DROP_KNIGHT, DROP_SQUIRE)},
        "skipped",
        "dry run",
        (),
    ),
    "grant fixed, run stopped before the removals": OutcomeCase(
        {DROP_KNIGHT: ("not_attempted", "stopped"), DROP_SQUIRE: ("not_attempted", "stopped")},
        "not_attempted",
        "stopped",
        ("add_role Lord",),
    ),
    "skipped outranks not attempted": OutcomeCase(
        {DROP_KNIGHT: ("not_attempted", "stopped"), DROP_SQUIRE: ("skipped", "guard")},
        "skipped",
        "guard",
        ("add_role Lord",),
    ),
    "a result missing counts as not attempted": OutcomeCase(
        {DROP_SQUIRE: None}, "not_attempted", "", ("add_role Lord", "remove_role Knight")
    ),
}


@pytest.mark.parametrize("case", list(OUTCOME_CASES))
def test_issue_outcomes_of_a_swap_follow_its_actions(case: str) -> None:
    overrides, outcome, detail, taken = OUTCOME_CASES[case]
    issues = _community()
    actions = plan_fix_actions(issues)

    fixed = issue_outcomes(issues, actions, _results(actions, overrides))

    swap = fixed.iloc[MISMATCH]
    assert swap[OutcomeCol.OUTCOME] == outcome
    assert swap[OutcomeCol.OUTCOME_DETAIL] == detail
    assert swap[OutcomeCol.ACTIONS_TAKEN] == taken
    # The other issues are untouched by the swap's results.
    assert fixed.iloc[MISSING][OutcomeCol.OUTCOME] == "fixed"
    assert fixed.iloc[DEBTOR][OutcomeCol.ACTIONS_TAKEN] == ("add_role Debtor", "remove_role Lord")


def test_issue_outcomes_fixed_only_where_every_action_is_fixed() -> None:
    issues = _community()
    actions = plan_fix_actions(issues)

    fixed = issue_outcomes(issues, actions, _results(actions, {}))

    assert fixed[OutcomeCol.OUTCOME].tolist() == [
        "fixed",
        "fixed",
        "fixed",
        "fixed",
        "fixed",
        "not_attempted",  # NOT_IN_GUILD: report only
        "fixed",
        "fixed",
    ]
    assert fixed[OutcomeCol.ACTIONS_TAKEN].tolist() == [
        ("add_role Lord",),
        ("remove_role Knight",),
        ALL_THREE,
        ("add_role Debtor", "remove_role Lord"),
        ("remove_role Squire",),
        (),
        ("set_status ACTIVE",),
        ("set_status ACTIVE",),
    ]


def test_issue_outcomes_report_only_issue_is_not_attempted_with_a_reason() -> None:
    issues = _community()
    actions = plan_fix_actions(issues)

    fixed = issue_outcomes(issues, actions, _results(actions, {}))

    report_only = fixed.iloc[NOT_IN_GUILD]
    assert report_only[OutcomeCol.OUTCOME] == "not_attempted"
    assert "report only" in report_only[OutcomeCol.OUTCOME_DETAIL]
    assert report_only[OutcomeCol.ACTIONS_TAKEN] == ()


def test_withheld_status_fix_gets_no_action_and_its_outcome_says_why() -> None:
    # m_unknown's column would go ACTIVE → CANCELLED while its customer has a status recon_pipeline
    # does not know; m_plain's would too, with nothing unknown.
    snapshot = Snapshot(
        members=[
            member("m_unknown", discord_id=None, customer="cus_u", status="ACTIVE"),
            member("m_plain", discord_id=None, customer="cus_p", status="ACTIVE"),
        ],
        subs=[
            sub("cus_u", "on_hold_review", created=100),
            sub("cus_u", "canceled", created=200),
            sub("cus_p", "canceled", created=200),
        ],
    )
    frames = snapshot.frames()
    issues = withhold_unsafe_fixes(
        snapshot.drift(),
        frames["members"],
        teams=frames["teams"],
        subscriptions=frames["subscriptions"],
    )
    assert issues[IssueCol.MEMBER_ID].tolist() == ["m_plain", "m_unknown"]

    actions = plan_fix_actions(issues)
    fixed = issue_outcomes(issues, actions, _results(actions, {}))

    # (a downgrade: the guard would hold it back)
    assert _acts(actions) == [Act(0, "set_status", "STALE_DATABASE_STATUS", "CANCELLED", True)]
    assert fixed[OutcomeCol.OUTCOME].tolist() == ["fixed", "not_attempted"]
    assert fixed.iloc[1][OutcomeCol.OUTCOME_DETAIL] == (
        "fix withheld: Stripe status 'on_hold_review' is not one recon_pipeline knows, so the "
        "database status is not downgraded on it"
    )
    assert fixed.iloc[1][OutcomeCol.ACTIONS_TAKEN] == ()


def test_issue_outcomes_guard_skips_removal_only_issues_and_says_why() -> None:
    issues = _community()
    actions = plan_fix_actions(issues)
    guarded = {
        (issue, "remove_role", role): ("skipped", "guard tripped")
        for issue, role in ((UNAUTHORIZED, "Knight"), (ORPHAN, "Squire"))
    }

    fixed = issue_outcomes(issues, actions, _results(actions, guarded))

    assert fixed[OutcomeCol.OUTCOME].tolist()[UNAUTHORIZED] == "skipped"
    assert fixed[OutcomeCol.OUTCOME].tolist()[ORPHAN] == "skipped"
    assert fixed.iloc[ORPHAN][OutcomeCol.OUTCOME_DETAIL] == "guard tripped"
    assert fixed.iloc[MISMATCH][OutcomeCol.OUTCOME] == "fixed"


def test_issue_outcomes_take_why_a_fix_is_withheld_from_its_column_not_the_description() -> None:
    issues = _community()
    issues.loc[ORPHAN, IssueCol.DESCRIPTION] += "; not fixed: words in a description"
    issues.loc[MISMATCH, IssueCol.FIX_WITHHELD] = "the reason in its column"
    for col in (IssueCol.ROLES_TO_ADD, IssueCol.ROLES_TO_REMOVE):
        issues.at[MISMATCH, col] = ()
    actions = plan_fix_actions(issues)

    fixed = issue_outcomes(issues, actions, _results(actions, {}))

    assert fixed.iloc[MISMATCH][OutcomeCol.OUTCOME_DETAIL] == (
        "fix withheld: the reason in its column"
    )
    assert "words in a description" not in fixed.iloc[ORPHAN][OutcomeCol.OUTCOME_DETAIL]


def test_issue_outcomes_keeps_the_issue_table_and_adds_the_outcome_columns() -> None:
    issues = _community()
    actions = plan_fix_actions(issues)

    fixed = issue_outcomes(issues, actions, _results(actions, {}))

    assert list(fixed.columns) == [*issues.columns, *OutcomeCol.ALL]
    pd.testing.assert_frame_equal(fixed[list(issues.columns)], issues)
    assert list(issues.columns) == list(IssueCol.ALL)  # the input is not modified


def test_issue_outcomes_of_no_issues_is_empty_with_outcome_columns() -> None:
    issues = empty_issue_table()
    actions = plan_fix_actions(issues)

    fixed = issue_outcomes(issues, actions, _results(actions, {}))

    assert len(fixed) == 0
    assert set(OutcomeCol.ALL) <= set(fixed.columns)


@pytest.mark.parametrize(
    ("planned", "overridden", "state"),
    [
        pytest.param(3, False, "ok", id="below-the-limit"),
        pytest.param(3, True, "ok", id="override-without-need"),
        pytest.param(26, False, "tripped", id="held-back"),
        pytest.param(26, True, "overridden", id="applied-all-the-same"),
    ],
)
def test_guard_decision_state_is_what_the_run_tag_and_the_ui_show(
    planned: int, overridden: bool, state: str
) -> None:
    assert GuardDecision(planned, 100, 5, 0.25, overridden=overridden).state == state
