"""`daily_reconciliation`: once per local calendar day at RECONCILIATION_HOUR:00."""

import dagster as dg

from recon_pipeline.defs import run_tags
from recon_pipeline.defs.jobs import reconciliation_job
from recon_pipeline.defs.partitions import local_day


def build_daily_schedule(*, hour: int, timezone: str, paused: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_reconciliation",
        job=reconciliation_job,
        cron_schedule=f"0 {hour} * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every day at {hour:02d}:00 {timezone}; fills that local day's partition. "
        "Skips with a reason while RECONCILIATION_PAUSED=true.",
    )
    def daily_reconciliation(context: dg.ScheduleEvaluationContext):
        if paused:
            return dg.SkipReason(
                "RECONCILIATION_PAUSED=true: scheduled reconciliation is paused; set it to "
                "false (and reload the code location) to resume"
            )
        day = local_day(timezone, context.scheduled_execution_time)
        return dg.RunRequest(
            run_key=f"daily-{day}",
            partition_key=day,
            tags={run_tags.TRIGGERED_BY: "scheduled"},
        )

    return daily_reconciliation
