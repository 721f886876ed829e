"""A run's record from what its fixing step produced, and whether it tells the admins.

No Dagster here: `reconciliation_run` gathers the run's facts, calls these, and writes what
they return (docs/behaviour.md §5 and §9).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recon_pipeline.clients.membership_db import RunRecord
from recon_pipeline.domain.fixes import awaiting
from recon_pipeline.domain.notices import Notice, compose_notice, needs_notice
from recon_pipeline.domain.provenance import LAPSED_EXCEPTIONS, RESOLVED, sources_of
from recon_pipeline.domain.report import RunSummary, issues_json
from recon_pipeline.domain.verification import Verification
from recon_pipeline.fix_step import decision_of


@dataclass(frozen=True)
class RunFacts:
    """What Dagster knows of a run, as the record needs it."""

    run_id: str
    job_name: str
    started_at: dt.datetime  # UTC, naive
    triggered_by: str
    partition_key: str | None
    chain: frozenset[str]  # the run and the runs it re-executes


def record_for(facts: RunFacts, *, completed_at: dt.datetime, **fields: Any) -> RunRecord:
    """A record of the run `facts` describe; `fields` give the rest of `RunRecord`."""
    return RunRecord(
        run_id=facts.run_id,
        job_name=facts.job_name,
        started_at=facts.started_at,
        completed_at=completed_at,
        triggered_by=facts.triggered_by,
        partition_key=facts.partition_key,
        **fields,
    )


def record_of(fixes: pd.DataFrame, facts: RunFacts, *, completed_at: dt.datetime) -> RunRecord:
    """The run's record from its issue table with outcomes (the fixing step's output), whose
    attrs carry the fixing step's decision and the row counts of the snapshots it rests on."""
    summary = RunSummary.of(fixes)
    decision = decision_of(fixes)
    rows = {o.frame: o.row_count for o in sources_of(fixes) if o is not None}
    return record_for(
        facts,
        completed_at=completed_at,
        auto_fix_enabled=bool(decision and decision.auto_fix),
        members_checked=rows.get("membership_members", 0),
        teams_checked=rows.get("membership_teams", 0),
        issues_found=summary.issues_found,
        issues_fixed=summary.issues_fixed,
        issues=issues_json(fixes),
        fixes_withheld=decision.fixes_withheld if decision else None,
        resolved_issues=fixes.attrs.get(RESOLVED),
    )


def verification_record(
    facts: RunFacts,
    verification: Verification,
    *,
    parent_run_id: str,
    members_checked: int,
    teams_checked: int,
    completed_at: dt.datetime,
) -> RunRecord:
    """A verification run's record: its issues are the verified run's fixed issues that
    persist. However it was launched, it counts as triggered by verification and fixes nothing."""
    return record_for(
        dataclasses.replace(facts, triggered_by="verification", partition_key=None),
        completed_at=completed_at,
        auto_fix_enabled=False,
        is_verification_run=True,
        members_checked=members_checked,
        teams_checked=teams_checked,
        issues_found=len(verification.persisting),
        issues=verification.persisting,
        parent_run_id=parent_run_id,
    )


def tells_admins(fixes: pd.DataFrame, facts: RunFacts, *, today: str) -> bool:
    """Only a run of today on its own snapshots may tell the admins: a recomputed past day (a
    backfill) makes no outside call at all."""
    sources = [o for o in sources_of(fixes) if o is not None]
    return (
        facts.partition_key == today
        and bool(sources)
        and all(o.run_id in facts.chain for o in sources)
    )


def notice_for(
    record: RunRecord,
    fixes: pd.DataFrame,
    facts: RunFacts,
    *,
    today: str,
    run_url: str | None,
    notify: str,
) -> Notice | None:
    """The admin notice the run calls for, if any: a run that may tell the admins (see
    `tells_admins`) and found issues, or whose guard tripped."""
    if not tells_admins(fixes, facts, today=today):
        return None
    decision = decision_of(fixes)
    tripped = bool(decision and decision.guard.blocks_removals)
    lapsed = tuple(fixes.attrs.get(LAPSED_EXCEPTIONS) or ())
    if not needs_notice(
        record.app_row(), guard_tripped=tripped, lapsed_exceptions=len(lapsed), notify=notify
    ):
        return None
    return compose_notice(
        {**record.app_row(), "fixesWithheld": record.fixes_withheld},
        guard_text=decision.guard.describe() if decision and tripped else None,
        run_url=run_url,
        awaiting=int(awaiting(fixes).sum()) if record.auto_fix_enabled else 0,
        lapsed_exceptions=lapsed,
    )


def record_frame(record: RunRecord) -> pd.DataFrame:
    """The record as `reconciliation_run`'s one-row output."""
    return pd.DataFrame(
        [
            {
                "run_id": record.run_id,
                "triggered_by": record.triggered_by,
                "auto_fix_enabled": record.auto_fix_enabled,
                "members_checked": record.members_checked,
                "teams_checked": record.teams_checked,
                "issues_found": record.issues_found,
                "issues_fixed": record.issues_fixed,
            }
        ]
    )
