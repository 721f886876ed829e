"""Run tags the pipeline reads and writes, and what they say about a run."""

from __future__ import annotations

from collections.abc import Mapping

SCHEDULE_NAME = "dagster/schedule_name"
ROOT_RUN_ID = "dagster/root_run_id"
PARTITION = "dagster/partition"
TRIGGERED_BY = "recon/triggered_by"  # set by the schedule and by the verification sensor
AUTO_FIX = "recon/auto_fix"  # "true" | "false", set once the run knows
ISSUES_FIXED = "recon/issues_fixed"
GUARD = "recon/guard"  # "ok" | "tripped" | "overridden"
PARENT_RUN_ID = "recon/parent_run_id"  # on a verification run: the run it verifies


def triggered_by(tags: Mapping[str, str]) -> str:
    """`"ReconciliationRun".triggeredBy`: scheduled, verification, or manual for the rest."""
    if tags.get(TRIGGERED_BY) in ("scheduled", "verification"):
        return tags[TRIGGERED_BY]
    if SCHEDULE_NAME in tags:
        return "scheduled"
    return "manual"


def fix_scope(run_id: str, tags: Mapping[str, str]) -> str:
    """Whose fixes a run's are: a re-execution continues the fixes of the run it re-executes."""
    return tags.get(ROOT_RUN_ID) or run_id
