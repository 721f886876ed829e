"""What a run reports: the `"ReconciliationRun".issues` JSON, the summary counts and the text
report, from issue tables the drift engine really produces."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.drift import empty_issue_table
from recon_pipeline.domain.fixes import (
    ActionCol,
    OutcomeCol,
    ResultCol,
    issue_outcomes,
    plan_fix_actions,
)
from recon_pipeline.domain.report import (
    RunSummary,
    examples_by_type,
    format_run_report,
    issues_json,
    trend_counts,
)
from recon_pipeline_tests.builders import Snapshot, account, guild, member, sub, team

ORIGINAL_KEYS = (
    "type",
    "memberId",
    "discordId",
    "description",
    "stripeStatus",
    "databaseStatus",
    "discordRoles",
    "severity",
)


def _issues() -> pd.DataFrame:
    """A swap, an orphan, a team's stale column and four strangers holding a managed role."""
    return Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        teams=[team("t1", name="Acme", customer="cus_t1", status="CANCELLED")],
        subs=[sub("cus_1"), sub("cus_t1")],
        guild=guild(
            account("1001", "Knight", "Moderator"),
            account("5001", "Knight"),
            account("5002", "Lord"),
            account("5003", "Squire"),
            account("5004", "Debtor"),
        ),
    ).drift()


def _with_outcomes(issues: pd.DataFrame, outcome_of: dict[str, str]) -> pd.DataFrame:
    """Every action `fixed`, except those of a Discord id or team id in `outcome_of`."""
    actions = plan_fix_actions(issues)
    subject = actions[ActionCol.DISCORD_ID].fillna(actions[ActionCol.TEAM_ID])
    outcomes = subject.map(lambda s: outcome_of.get(s, "fixed")).astype("str")
    results = pd.DataFrame(
        {
            ResultCol.KEY: actions[ActionCol.KEY],
            ResultCol.OUTCOME: outcomes,
            ResultCol.DETAIL: np.where(outcomes == "fixed", "", "boom"),
        }
    ).astype("str")
    return issue_outcomes(issues, actions, results)


def _by_subject(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["discordId"] or r["teamId"]: r for r in records}


# ----------------------------------------------------------------------------- issues JSON


def test_issues_json_keeps_the_original_keys_with_their_values() -> None:
    issues = _issues()
    description = dict(zip(issues[IssueCol.DISCORD_ID], issues[IssueCol.DESCRIPTION], strict=True))

    records = _by_subject(issues_json(issues))

    assert {k: records["1001"][k] for k in ORIGINAL_KEYS} == {
        "type": "ROLE_MISMATCH",
        "memberId": "m1",
        "discordId": "1001",
        "description": description["1001"],
        "stripeStatus": "active",
        "databaseStatus": "ACTIVE",
        "discordRoles": ["Knight"],
        "severity": "MEDIUM",
    }
    assert {k: records["5002"][k] for k in ORIGINAL_KEYS} == {
        "type": "ORPHANED_ACCESS",
        "memberId": None,
        "discordId": "5002",
        "description": description["5002"],
        "stripeStatus": None,
        "databaseStatus": None,
        "discordRoles": ["Lord"],
        "severity": "HIGH",
    }


def test_issues_json_every_record_has_every_original_key() -> None:
    records = issues_json(_issues())

    assert len(records) == 6
    for record in records:
        assert set(ORIGINAL_KEYS) <= record.keys()


def test_issues_json_missing_values_are_none_and_roles_are_lists() -> None:
    records = _by_subject(issues_json(_issues()))

    stale_team = records["t1"]
    assert stale_team["type"] == "STALE_DATABASE_STATUS"
    assert stale_team["memberId"] is None
    assert stale_team["discordId"] is None
    assert stale_team["discordRoles"] == []
    assert stale_team["teamId"] == "t1"
    assert stale_team["statusFix"] == "ACTIVE"
    swap = records["1001"]
    assert swap["rolesToAdd"] == ["Lord"]
    assert swap["rolesToRemove"] == ["Knight"]
    assert swap["teamId"] is None


def test_issues_json_turns_every_kind_of_missing_value_into_null() -> None:
    issues = _issues().astype({IssueCol.STRIPE_STATUS: object, IssueCol.DATABASE_STATUS: object})
    issues[IssueCol.STRIPE_STATUS] = [np.nan, None, pd.NA, np.nan, None, pd.NA]
    issues[IssueCol.DATABASE_STATUS] = np.nan

    records = issues_json(issues)

    assert [r["stripeStatus"] for r in records] == [None] * 6
    assert [r["databaseStatus"] for r in records] == [None] * 6


def test_issues_json_is_plain_json_without_nan() -> None:
    records = issues_json(_with_outcomes(_issues(), {"5003": "failed"}))

    text = json.dumps(records, allow_nan=False)  # raises on NaN

    # Round-tripping changes nothing: no tuples, no NaN, no numpy scalars left.
    assert json.loads(text) == records


def test_issues_json_adds_outcome_keys_when_fixing_ran() -> None:
    records = _by_subject(issues_json(_with_outcomes(_issues(), {"5003": "failed"})))

    assert records["1001"]["outcome"] == "fixed"
    assert records["1001"]["outcomeDetail"] == ""
    assert records["1001"]["actionsTaken"] == ["add_role Lord", "remove_role Knight"]
    assert records["5003"]["outcome"] == "failed"
    assert records["5003"]["outcomeDetail"] == "boom"
    assert records["5003"]["actionsTaken"] == []


def test_issues_json_of_no_issues_is_an_empty_list() -> None:
    assert issues_json(empty_issue_table()) == []


# ----------------------------------------------------------------------------- summary


def test_run_summary_of_counts_types_severities_and_outcomes() -> None:
    fixed = _with_outcomes(_issues(), {"5003": "failed", "5004": "skipped"})

    summary = RunSummary.of(fixed)

    assert summary.issues_found == 6
    assert summary.issues_fixed == 4
    assert summary.by_type == {
        "ROLE_MISMATCH": 1,
        "ORPHANED_ACCESS": 4,
        "STALE_DATABASE_STATUS": 1,
    }
    assert summary.by_severity == {"MEDIUM": 1, "HIGH": 4, "LOW": 1}
    assert summary.by_outcome == {"fixed": 4, "failed": 1, "skipped": 1}


def test_run_summary_of_a_dry_run_table_has_no_fixes_and_no_outcomes() -> None:
    summary = RunSummary.of(_issues())

    assert summary.issues_found == 6
    assert summary.issues_fixed == 0
    assert summary.by_outcome == {}
    assert summary.by_type["ORPHANED_ACCESS"] == 4


def test_run_summary_of_no_issues_is_all_zero() -> None:
    summary = RunSummary.of(empty_issue_table())

    assert (summary.issues_found, summary.issues_fixed) == (0, 0)
    assert summary.by_type == {} and summary.by_severity == {} and summary.by_outcome == {}


# ----------------------------------------------------------------------------- examples


def test_examples_by_type_takes_the_first_few_of_each_type_in_table_order() -> None:
    examples = examples_by_type(_issues(), per_type=2)

    assert examples == {
        "ROLE_MISMATCH": ["Stripe active: expected Lord but Discord has Knight"],
        "ORPHANED_ACCESS": [
            "Discord account holds Knight but no member record has this Discord id",
            "Discord account holds Lord but no member record has this Discord id",
        ],
        "STALE_DATABASE_STATUS": [
            "Database has team Acme as CANCELLED but Stripe says active (should be ACTIVE)"
        ],
    }


def test_examples_by_type_defaults_to_three_and_omits_absent_types() -> None:
    examples = examples_by_type(_issues())

    assert len(examples["ORPHANED_ACCESS"]) == 3
    assert "MISSING_ACCESS" not in examples
    assert examples_by_type(empty_issue_table()) == {}


# ----------------------------------------------------------------------------- text report


def _record(**overrides: Any) -> dict[str, Any]:
    fixed = _with_outcomes(_issues(), {"5003": "failed"})
    return {
        "id": "run-42",
        "triggeredBy": "scheduled",
        "autoFixEnabled": True,
        "status": "failed",
        "membersChecked": 1,
        "teamsChecked": 1,
        "issuesFound": 6,
        "issuesFixed": 5,
        "failure": "Discord unavailable for 3 changes in a row",
        "issues": issues_json(fixed),
        **overrides,
    }


def test_format_run_report_heads_with_the_run_and_its_counts() -> None:
    lines = format_run_report(_record()).splitlines()

    assert "run-42" in lines[0] and "scheduled" in lines[0] and "failed" in lines[0]
    assert "auto-fix on" in lines[0]
    assert "1 members" in lines[1] and "1 teams" in lines[1]
    assert "6 issue(s) found" in lines[1] and "5 fixed" in lines[1]


def test_format_run_report_includes_the_failure() -> None:
    text = format_run_report(_record())

    assert "failure: Discord unavailable for 3 changes in a row" in text
    assert "failure" not in format_run_report(_record(failure=None, status="succeeded"))


def test_format_run_report_counts_each_type_with_its_outcomes_and_examples() -> None:
    lines = [line.strip() for line in format_run_report(_record(), examples=3).splitlines()]

    assert "ORPHANED_ACCESS: 4 (3 fixed, 1 failed)" in lines
    assert "ROLE_MISMATCH: 1 (1 fixed)" in lines
    assert "STALE_DATABASE_STATUS: 1 (1 fixed)" in lines
    orphan_examples = [line for line in lines if line.startswith("- Discord account holds")]
    assert orphan_examples == [
        "- Discord account holds Knight but no member record has this Discord id",
        "- Discord account holds Lord but no member record has this Discord id",
        "- Discord account holds Squire but no member record has this Discord id",
    ]


def test_format_run_report_examples_limit_is_per_type() -> None:
    lines = format_run_report(_record(), examples=1).splitlines()

    examples = [line for line in lines if line.strip().startswith("- ")]
    assert len(examples) == 3  # one for each of the three types present


def test_format_run_report_of_a_dry_run_without_issues() -> None:
    text = format_run_report(
        _record(autoFixEnabled=False, issues=[], issuesFound=0, issuesFixed=0, failure=None)
    )

    assert "dry run" in text
    assert "0 issue(s) found" in text
    assert "- " not in text
    assert not any(kind in text for kind in ("ORPHANED_ACCESS", "ROLE_MISMATCH"))


def test_trend_counts_give_every_type_severity_age_and_outcome_a_number() -> None:
    issues = pd.DataFrame(
        {
            IssueCol.TYPE: ["MISSING_ACCESS", "MISSING_ACCESS", "ORPHANED_ACCESS"],
            IssueCol.SEVERITY: ["HIGH", "HIGH", "HIGH"],
            IssueCol.ISSUE_STATUS: ["new", "persisting", "persisting"],
            OutcomeCol.OUTCOME: ["fixed", "failed", "skipped"],
        }
    )

    counts = trend_counts(issues)

    assert counts["type_missing_access"] == 2 and counts["type_orphaned_access"] == 1
    assert counts["type_role_mismatch"] == 0  # every series has a point every day
    assert (counts["severity_high"], counts["severity_low"]) == (3, 0)
    assert (counts["new"], counts["persisting"]) == (1, 2)
    assert (counts["fixed"], counts["failed"], counts["skipped"]) == (1, 1, 1)
    assert all(isinstance(v, int) for v in counts.values())
