"""Run tags the pipeline reads and writes, and what they and the instance say about a run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import dagster as dg

from recon_pipeline.clients.membership_db import utcnow
from recon_pipeline.run_records import RunFacts

SCHEDULE_NAME = "dagster/schedule_name"
ROOT_RUN_ID = "dagster/root_run_id"
REEXECUTED_RUN_ID = "dagster/parent_run_id"  # on a re-execution: the run it re-executes
PARTITION = "dagster/partition"
TRIGGERED_BY = "recon/triggered_by"  # set by the schedule and by the verification sensor
AUTO_FIX = "recon/auto_fix"  # "true" | "false": whether the run was asked to fix
FIXES_WITHHELD = "recon/fixes_withheld"  # why a run asked to fix applied nothing (a code)
ISSUES_FIXED = "recon/issues_fixed"
FIXES_APPLIED = "recon/fixes_applied"  # "true" once a run fixed at least one issue
GUARD = "recon/guard"  # "ok" | "tripped" | "overridden"
PARENT_RUN_ID = "recon/parent_run_id"  # on a verification run: the run it verifies
FAILURE_NOTIFIED = "recon/failure_notified"  # "true" once the admins heard the run failed


def triggered_by(tags: Mapping[str, str]) -> str:
    """`"ReconciliationRun".triggeredBy`: scheduled, verification, or manual for the rest."""
    if tags.get(TRIGGERED_BY) in ("scheduled", "verification"):
        return tags[TRIGGERED_BY]
    if SCHEDULE_NAME in tags:
        return "scheduled"
    return "manual"


def fix_scope(run: dg.DagsterRun) -> str:
    """Whose fixes a run's are: a re-execution continues the fixes of the run it re-executes
    (the first run of the chain)."""
    return run.root_run_id or run.tags.get(ROOT_RUN_ID) or run.run_id


def run_chain(instance: dg.DagsterInstance, run: dg.DagsterRun) -> frozenset[str]:
    """The runs whose stored outputs count as this run's own: itself and, for a re-execution,
    every run it re-executes back to the first (whose successful steps it did not repeat).
    Dagster records the chain on the run itself; runs launched from the UI also carry it in
    tags."""
    chain: set[str] = set()
    current: dg.DagsterRun | None = run
    while current is not None and current.run_id not in chain:
        chain.add(current.run_id)
        parent = current.parent_run_id or current.tags.get(REEXECUTED_RUN_ID)
        current = instance.get_run_by_id(parent) if parent else None
    root = run.root_run_id or run.tags.get(ROOT_RUN_ID)
    return frozenset(chain | ({root} if root else set()))


def run_started_at(instance: dg.DagsterInstance, run_id: str) -> dt.datetime:
    """When Dagster started the run (UTC, naive), or now if it has not recorded it."""
    record = instance.get_run_record_by_id(run_id)
    if record is None or record.start_time is None:
        return utcnow()
    return dt.datetime.fromtimestamp(record.start_time, dt.UTC).replace(tzinfo=None)


def run_facts(instance: dg.DagsterInstance, run: dg.DagsterRun, partition_key: str) -> RunFacts:
    """What the run's record needs to know of the run, from the instance (whose copy of the
    run has the tags added after launch)."""
    current = instance.get_run_by_id(run.run_id) or run
    return RunFacts(
        run_id=current.run_id,
        job_name=current.job_name,
        started_at=run_started_at(instance, current.run_id),
        triggered_by=triggered_by(current.tags),
        partition_key=partition_key,
        chain=run_chain(instance, current),
    )
