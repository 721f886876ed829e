"""A run's record from its fixing step's output, and when it tells the admins (no Dagster)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from recon_pipeline.defs.fix_config import FixConfig, launched_auto_fix
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.fix_gate import Withheld, WithheldCode
from recon_pipeline.domain.fixes import GuardDecision, Outcome, OutcomeCol
from recon_pipeline.domain.notices import NOTIFY_ALWAYS
from recon_pipeline.domain.provenance import DECISION, FrameOrigin, set_sources
from recon_pipeline.domain.verification import Verification
from recon_pipeline.fix_step import FixDecision
from recon_pipeline.run_records import (
    RunFacts,
    notice_for,
    record_of,
    tells_admins,
    verification_record,
)

TODAY = "2026-11-30"
YESTERDAY = "2026-11-29"
STARTED = dt.datetime(2026, 11, 30, 3, 0)
DONE = dt.datetime(2026, 11, 30, 3, 5)
RUN, PARENT, EARLIER = "run-b", "run-a", "run-x"
GUARD_OK = GuardDecision(planned_removals=1, holders=100, floor=10, fraction=0.25)
GUARD_TRIPPED = GuardDecision(planned_removals=60, holders=100, floor=10, fraction=0.25)


def _facts(day: str = TODAY, chain: frozenset[str] = frozenset({RUN})) -> RunFacts:
    return RunFacts(RUN, "reconciliation_job", STARTED, "scheduled", day, chain)


def _fixes(
    outcomes: list[str],
    *,
    snapshots_by: str = RUN,
    day: str = TODAY,
    decision: FixDecision | None = None,
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            IssueCol.TYPE: ["MISSING_ACCESS"] * len(outcomes),
            IssueCol.SEVERITY: ["HIGH"] * len(outcomes),
            IssueCol.MEMBER_ID: [f"m{i}" for i in range(len(outcomes))],
            OutcomeCol.OUTCOME: outcomes,
        }
    )
    set_sources(
        frame,
        [
            FrameOrigin("membership_members", day, snapshots_by, 120),
            FrameOrigin("membership_teams", day, snapshots_by, 7),
            FrameOrigin("stripe_subscriptions", day, snapshots_by, 90),
        ],
    )
    if decision is not None:
        frame.attrs[DECISION] = decision.to_json()
    return frame


def test_record_counts_the_snapshots_the_issues_and_the_fixes() -> None:
    fixes = _fixes(
        [Outcome.FIXED, Outcome.FIXED, Outcome.FAILED],
        decision=FixDecision(auto_fix=True, withheld=None, guard=GUARD_OK, changes=2),
    )

    record = record_of(fixes, _facts(), completed_at=DONE)

    assert (record.members_checked, record.teams_checked) == (120, 7)
    assert (record.issues_found, record.issues_fixed) == (3, 2)
    assert record.auto_fix_enabled is True
    assert record.fixes_withheld is None
    assert [issue["memberId"] for issue in record.issues] == ["m0", "m1", "m2"]
    assert (record.started_at, record.completed_at, record.partition_key) == (STARTED, DONE, TODAY)


@pytest.mark.parametrize(
    ("auto_fix", "withheld", "recorded_reason"),
    [
        pytest.param(
            True,
            Withheld(WithheldCode.LEASE_HELD, "run run-x holds the fixing lease"),
            "run run-x holds the fixing lease",
            id="withheld-keeps-auto-fix-and-says-why",
        ),
        pytest.param(
            False,
            Withheld(WithheldCode.DRY_RUN, "dry run (auto-fix off)"),
            None,
            id="dry-run-is-not-withheld",
        ),
    ],
)
def test_record_of_a_run_that_applied_nothing(
    auto_fix: bool, withheld: Withheld, recorded_reason: str | None
) -> None:
    fixes = _fixes(
        [Outcome.SKIPPED],
        decision=FixDecision(auto_fix=auto_fix, withheld=withheld, guard=GUARD_OK, changes=0),
    )

    record = record_of(fixes, _facts(), completed_at=DONE)

    assert (record.auto_fix_enabled, record.fixes_withheld) == (auto_fix, recorded_reason)


@pytest.mark.parametrize(
    ("day", "snapshots_by", "chain", "tells"),
    [
        pytest.param(TODAY, RUN, {RUN}, True, id="today-own-snapshots"),
        pytest.param(TODAY, PARENT, {RUN, PARENT}, True, id="re-execution-parent-snapshots"),
        pytest.param(YESTERDAY, RUN, {RUN}, False, id="past-day"),
        pytest.param(TODAY, EARLIER, {RUN}, False, id="another-runs-snapshots"),
    ],
)
def test_only_a_run_of_today_on_its_own_snapshots_tells_the_admins(
    day: str, snapshots_by: str, chain: set[str], tells: bool
) -> None:
    fixes = _fixes([Outcome.FIXED], snapshots_by=snapshots_by, day=day)

    assert tells_admins(fixes, _facts(day, frozenset(chain)), today=TODAY) is tells


def test_a_table_with_no_recorded_sources_never_tells_the_admins() -> None:
    fixes = _fixes([Outcome.FIXED])
    fixes.attrs = {}

    assert tells_admins(fixes, _facts(), today=TODAY) is False


def test_no_notice_when_nothing_was_found_and_the_guard_held() -> None:
    fixes = _fixes([], decision=FixDecision(True, None, GUARD_OK, 0))
    record = record_of(fixes, _facts(), completed_at=DONE)

    assert (
        notice_for(record, fixes, _facts(), today=TODAY, run_url=None, notify=NOTIFY_ALWAYS) is None
    )


def test_a_notice_for_issues_found_links_the_run() -> None:
    fixes = _fixes([Outcome.FIXED, Outcome.FAILED], decision=FixDecision(True, None, GUARD_OK, 1))
    record = record_of(fixes, _facts(), completed_at=DONE)

    notice = notice_for(
        record, fixes, _facts(), today=TODAY, run_url="http://ui/runs/run-b", notify=NOTIFY_ALWAYS
    )

    assert notice is not None
    assert "2" in notice.subject
    assert "http://ui/runs/run-b" in notice.text


def test_a_tripped_guard_alone_calls_for_a_notice_that_describes_it() -> None:
    fixes = _fixes([], decision=FixDecision(True, None, GUARD_TRIPPED, 0))
    record = record_of(fixes, _facts(), completed_at=DONE)

    notice = notice_for(record, fixes, _facts(), today=TODAY, run_url=None, notify=NOTIFY_ALWAYS)

    assert notice is not None
    assert GUARD_TRIPPED.describe() in notice.text


def test_a_backfill_finding_issues_sends_no_notice() -> None:
    fixes = _fixes([Outcome.NOT_ATTEMPTED], snapshots_by=EARLIER, day=YESTERDAY)
    facts = _facts(YESTERDAY)
    record = record_of(fixes, facts, completed_at=DONE)

    assert record.issues_found == 1
    assert notice_for(record, fixes, facts, today=TODAY, run_url=None, notify=NOTIFY_ALWAYS) is None


def _launch_config(**options: bool) -> dict:
    return {"ops": {"reconciliation_fixes": {"config": options}}}


@pytest.mark.parametrize(
    ("run_config", "default", "expected"),
    [
        pytest.param({}, False, False, id="no-config-default-off"),
        pytest.param({}, True, True, id="no-config-default-on"),
        pytest.param(_launch_config(auto_fix=True), False, True, id="on"),
        pytest.param(_launch_config(auto_fix=False), True, False, id="off"),
        pytest.param(_launch_config(override_guard=True), True, True, id="other-option-only"),
    ],
)
def test_launched_auto_fix_follows_the_launch_config_else_the_deployment(
    run_config: dict, default: bool, expected: bool
) -> None:
    run = dg.DagsterRun(job_name="reconciliation_job", run_config=run_config)

    assert launched_auto_fix(run, default) is expected


@pytest.mark.parametrize(
    ("chosen", "default", "expected"),
    [(None, False, False), (None, True, True), (True, False, True), (False, True, False)],
)
def test_the_fixing_steps_auto_fix_is_its_config_else_the_deployments(
    chosen: bool | None, default: bool, expected: bool
) -> None:
    assert FixConfig(auto_fix=chosen).auto_fix_or(default) is expected


@pytest.mark.parametrize(
    ("decision", "warning"),
    [
        pytest.param(
            FixDecision(auto_fix=True, withheld=None, guard=GUARD_OK, changes=2), None, id="fixed"
        ),
        pytest.param(
            FixDecision(
                auto_fix=False,
                withheld=Withheld(WithheldCode.DRY_RUN, "dry run"),
                guard=GUARD_TRIPPED,
                changes=0,
            ),
            None,
            id="dry-run-is-no-warning",
        ),
        pytest.param(
            FixDecision(
                auto_fix=True,
                withheld=Withheld(WithheldCode.STALE_SNAPSHOTS, "snapshots are 3 h old"),
                guard=GUARD_TRIPPED,
                changes=0,
            ),
            "no fix applied: snapshots are 3 h old",
            id="withheld-outranks-the-guard",
        ),
        pytest.param(
            FixDecision(auto_fix=True, withheld=None, guard=GUARD_TRIPPED, changes=4),
            GUARD_TRIPPED.describe(),
            id="guard-held-removals-back",
        ),
        pytest.param(
            FixDecision(
                auto_fix=True,
                withheld=None,
                guard=GuardDecision(60, 100, 10, 0.25, overridden=True),
                changes=64,
            ),
            None,
            id="guard-overridden",
        ),
    ],
)
def test_the_fixing_step_warns_of_withheld_fixes_and_held_back_removals(
    decision: FixDecision, warning: str | None
) -> None:
    assert decision.warning == warning


def test_a_verification_record_lists_the_fixes_that_persist_and_fixes_nothing() -> None:
    persisting = [{"type": "MISSING_ACCESS", "memberId": "m1", "persists": True}]
    verification = Verification(checked=3, persisting=persisting, still_open=1)
    launched_from_the_graph = RunFacts(
        RUN, "__ASSET_JOB", STARTED, "manual", None, frozenset({RUN})
    )

    record = verification_record(
        launched_from_the_graph,
        verification,
        parent_run_id=PARENT,
        members_checked=120,
        teams_checked=7,
        completed_at=DONE,
    )

    assert (record.run_id, record.job_name, record.started_at) == (RUN, "__ASSET_JOB", STARTED)
    assert record.triggered_by == "verification" and record.is_verification_run
    assert not record.auto_fix_enabled and record.issues_fixed == 0
    assert (record.issues_found, record.issues) == (1, persisting)
    assert (record.members_checked, record.teams_checked) == (120, 7)
    assert (record.parent_run_id, record.partition_key) == (PARENT, None)
