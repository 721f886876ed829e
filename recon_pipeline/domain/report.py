"""What a run reports: the `"ReconciliationRun".issues` JSON and the summary counts.

The JSON keeps the original app's issue keys (`type`, `memberId`, `discordId`, `description`,
`stripeStatus`, `databaseStatus`, `discordRoles`, `severity`) so its admin views keep working,
and adds the pipeline's keys (team, expected role, planned changes, outcome).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.fixes import Outcome, OutcomeCol
from recon_pipeline.domain.identity import NEW, PERSISTING
from recon_pipeline.domain.policy import DriftType, Severity

# issue table column → JSON key, in the order the keys are written
_JSON_KEYS = {
    IssueCol.TYPE: "type",
    IssueCol.MEMBER_ID: "memberId",
    IssueCol.DISCORD_ID: "discordId",
    IssueCol.DESCRIPTION: "description",
    IssueCol.STRIPE_STATUS: "stripeStatus",
    IssueCol.DATABASE_STATUS: "databaseStatus",
    IssueCol.DISCORD_ROLES: "discordRoles",
    IssueCol.SEVERITY: "severity",
    IssueCol.TEAM_ID: "teamId",
    IssueCol.TEAM_NAME: "teamName",
    IssueCol.EXPECTED_ROLE: "expectedRole",
    IssueCol.ROLES_TO_ADD: "rolesToAdd",
    IssueCol.ROLES_TO_REMOVE: "rolesToRemove",
    IssueCol.STATUS_FIX: "statusFix",
    IssueCol.ACCESS_EXCEPTION: "accessException",
    IssueCol.AWAITING_CONFIRMATION: "awaitingConfirmation",
    IssueCol.FINGERPRINT: "fingerprint",
    IssueCol.FIRST_SEEN: "firstSeen",
    IssueCol.ISSUE_STATUS: "status",
    OutcomeCol.OUTCOME: "outcome",
    OutcomeCol.OUTCOME_DETAIL: "outcomeDetail",
    OutcomeCol.ACTIONS_TAKEN: "actionsTaken",
}


def issues_json(issues: pd.DataFrame) -> list[dict[str, Any]]:
    """The issue table as the `issues` JSON list: missing values as null, role sets as lists."""
    columns = [c for c in _JSON_KEYS if c in issues.columns]
    frame = issues[columns].astype(object).where(issues[columns].notna(), None)
    records = frame.rename(columns=_JSON_KEYS).to_dict("records")
    for record in records:
        for key, value in record.items():
            if isinstance(value, tuple):
                record[key] = list(value)
    return records


@dataclass(frozen=True)
class RunSummary:
    """The counts a run reports, from its issue table (with outcomes when fixing ran)."""

    issues_found: int
    issues_fixed: int
    by_type: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, issues: pd.DataFrame) -> RunSummary:
        outcomes = issues[OutcomeCol.OUTCOME] if OutcomeCol.OUTCOME in issues else pd.Series()
        return cls(
            issues_found=len(issues),
            issues_fixed=int((outcomes == Outcome.FIXED).sum()),
            by_type=_counts(issues[IssueCol.TYPE], [t.value for t in DriftType]),
            by_severity=_counts(issues[IssueCol.SEVERITY], [s.value for s in Severity]),
            by_outcome=_counts(outcomes, [o.value for o in Outcome]),
        )


def _counts(column: pd.Series, order: list[str]) -> dict[str, int]:
    counts = column.value_counts()
    return {key: int(counts[key]) for key in order if key in counts.index}


def examples_by_type(issues: pd.DataFrame, per_type: int = 3) -> dict[str, list[str]]:
    """A few issue descriptions of each type, in table order."""
    firsts = issues.groupby(IssueCol.TYPE, sort=False).head(per_type)
    grouped = firsts.groupby(IssueCol.TYPE, sort=False)[IssueCol.DESCRIPTION].agg(list)
    return {t.value: grouped[t.value] for t in DriftType if t.value in grouped.index}


def format_run_report(record: dict[str, Any], *, examples: int = 3) -> str:
    """A plain-text report of one `"ReconciliationRun"` row (with its status columns)."""
    issues = record.get("issues") or []
    mode = "auto-fix on" if record.get("autoFixEnabled") else "dry run (auto-fix off)"
    if record.get("fixes_withheld"):
        mode = "auto-fix on, no fix applied"
    lines = [
        f"Run {record['id']} ({record.get('triggeredBy')}, {mode}): "
        f"{record.get('status', 'unknown')}",
        f"  checked {record.get('membersChecked', 0)} members and "
        f"{record.get('teamsChecked', 0)} teams; {record.get('issuesFound', 0)} issue(s) found, "
        f"{record.get('issuesFixed', 0)} fixed",
    ]
    ages = pd.Series([i.get("status") for i in issues], dtype="object").value_counts()
    if len(ages) or record.get("resolved_issues") is not None:
        lines.append(
            f"  {ages.get('new', 0)} new, {ages.get('persisting', 0)} persisting; "
            f"{record.get('resolved_issues') or 0} resolved since the previous run"
        )
    if record.get("failure"):
        lines.append(f"  failure: {record['failure']}")
    if record.get("fixes_withheld"):
        lines.append(f"  fixes withheld: {record['fixes_withheld']}")
    waiting = [i for i in issues if i.get("awaitingConfirmation")]
    if waiting and record.get("autoFixEnabled"):  # in a dry run nothing waits: nothing applies
        lines.append(
            f"  {len(waiting)} removal(s) await confirmation: applied only if the next run "
            "finds them too"
        )
    by_type: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:
        by_type.setdefault(str(issue.get("type")), []).append(issue)
    for kind in [t.value for t in DriftType if t.value in by_type]:
        group = by_type[kind]
        outcomes = pd.Series([i.get("outcome") or "-" for i in group]).value_counts()
        summary = ", ".join(f"{n} {o}" for o, n in outcomes.items())
        lines.append(f"  {kind}: {len(group)} ({summary})")
        lines += [f"    - {i.get('description')}" for i in group[:examples]]
    return "\n".join(lines)


def trend_counts(issues: pd.DataFrame) -> dict[str, int]:
    """One number per drift type, severity, age and outcome (zeros included), so each is a
    series over the days: `type_missing_access`, `severity_high`, `new`, `fixed`, …"""
    counts: dict[str, int] = {}
    kinds = issues[IssueCol.TYPE].value_counts()
    for kind in DriftType:
        counts[f"type_{kind.value.lower()}"] = int(kinds.get(kind.value, 0))
    severities = issues[IssueCol.SEVERITY].value_counts()
    for severity in Severity:
        counts[f"severity_{severity.value.lower()}"] = int(severities.get(severity.value, 0))
    if IssueCol.ISSUE_STATUS in issues:
        ages = issues[IssueCol.ISSUE_STATUS].value_counts()
        counts[NEW] = int(ages.get(NEW, 0))
        counts[PERSISTING] = int(ages.get(PERSISTING, 0))
    if OutcomeCol.OUTCOME in issues:
        outcomes = issues[OutcomeCol.OUTCOME].value_counts()
        for outcome in Outcome:
            counts[outcome.value] = int(outcomes.get(outcome.value, 0))
    return counts
