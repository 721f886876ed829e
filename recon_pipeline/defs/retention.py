"""`snapshot_retention_job`: stored frames older than the retention horizon are deleted.

A day's snapshots are what a backfill recomputes that day from, and they hold personal data;
past `RECONCILIATION_SNAPSHOT_RETENTION_DAYS` they go, in batches so no transaction (or
SQLite's single write lock) is held for long. The catalog entries go first, so no run ever
reads a frame whose rows are being deleted. `ReconciliationRun` rows and the fix notes stay:
they are the history the app and the operators read.
"""

import datetime as dt

import dagster as dg

from recon_pipeline.defs.io_managers import oldest_kept_day
from recon_pipeline.defs.resources import MembershipDbResource, ReconciliationPolicyResource

RETENTION_JOB = "snapshot_retention_job"
BATCH_ROWS = 50_000


@dg.op(out=dg.Out(dagster_type=dg.Nothing))
def delete_expired_frames(
    context: dg.OpExecutionContext,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
):
    """Delete every stored frame of a day before the retention horizon."""
    oldest = oldest_kept_day(policy.timezone, policy.retention_days)
    undated_before = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(
        days=policy.retention_days
    )
    with membership_db.frame_store() as store:
        result = store.delete_days_before(
            oldest, latest_before=undated_before, batch_rows=BATCH_ROWS
        )
    context.log.info(
        f"deleted {result.frames} stored frame(s) of {len(result.days)} day(s) before {oldest} "
        f"({result.body_rows} row(s) or file(s))"
    )
    yield dg.Output(
        None,
        metadata={
            "oldest_day_kept": oldest,
            "days_deleted": dg.MetadataValue.json(result.days),
            "frames_deleted": result.frames,
            "rows_deleted": result.body_rows,
        },
    )


@dg.job(
    name=RETENTION_JOB,
    description="Delete stored snapshots and drift tables older than "
    "RECONCILIATION_SNAPSHOT_RETENTION_DAYS (never a ReconciliationRun row).",
    tags={"recon/kind": "retention"},
)
def snapshot_retention_job() -> None:
    delete_expired_frames()


def build_retention_schedule(*, hour: int, timezone: str) -> dg.ScheduleDefinition:
    """Daily, half an hour after the reconciliation run starts."""
    return dg.ScheduleDefinition(
        name="daily_snapshot_retention",
        job=snapshot_retention_job,
        cron_schedule=f"30 {hour} * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every day at {hour:02d}:30 {timezone}: deletes stored frames older "
        "than RECONCILIATION_SNAPSHOT_RETENTION_DAYS.",
    )
