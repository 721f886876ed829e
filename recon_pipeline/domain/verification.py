"""Verification (docs/behaviour.md §7): which of a run's fixed issues are still there in fresh
snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.fixes import Outcome
from recon_pipeline.domain.report import issues_json


def issue_key(issue_type: Any, member_id: Any, team_id: Any, discord_id: Any) -> str:
    """What identifies an issue across runs: its type and whom it is about."""
    subject = next(
        (str(v) for v in (member_id, team_id, discord_id) if v is not None and not pd.isna(v)), ""
    )
    return f"{issue_type}|{subject}"


@dataclass(frozen=True)
class Verification:
    checked: int  # the parent's fixed issues
    persisting: list[dict[str, Any]]  # those still present, as the fresh table describes them
    still_open: int  # the parent's other issues (not fixed by it) still present

    @property
    def summary(self) -> str:
        return f"{len(self.persisting)} of {self.checked} fixed issues persist"


def verify_fixes(parent_issues: list[dict[str, Any]], drift: pd.DataFrame) -> Verification:
    """Compare the parent run's issues (its `ReconciliationRun.issues`) with a fresh drift table."""
    now = {
        issue_key(*row): i
        for i, row in enumerate(
            drift[[IssueCol.TYPE, IssueCol.MEMBER_ID, IssueCol.TEAM_ID, IssueCol.DISCORD_ID]]
            .astype(object)
            .itertuples(index=False, name=None)
        )
    }
    current = issues_json(drift)
    fixed = [i for i in parent_issues if i.get("outcome") == Outcome.FIXED]
    persisting = []
    for issue in fixed:
        key = issue_key(
            issue.get("type"), issue.get("memberId"), issue.get("teamId"), issue.get("discordId")
        )
        if key in now:
            persisting.append(
                {
                    **current[now[key]],
                    "persists": True,
                    "parentDescription": issue.get("description"),
                }
            )
    still_open = sum(
        issue_key(i.get("type"), i.get("memberId"), i.get("teamId"), i.get("discordId")) in now
        for i in parent_issues
        if i.get("outcome") != Outcome.FIXED
    )
    return Verification(checked=len(fixed), persisting=persisting, still_open=still_open)
