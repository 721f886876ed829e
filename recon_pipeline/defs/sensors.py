"""`verification_sensor`: one verification per run that fixed something, once it is due.

A plain polling sensor rather than a run-status sensor: a run-status sensor sees each run once,
when it ends, which is an hour too early. The cursor (the end time of the newest run already
requested) and the run key `verify-<run id>` both keep a run from being verified twice: the
daemon never launches a run key it has launched before, across ticks and restarts.
"""

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg

from recon_pipeline.defs import run_tags
from recon_pipeline.defs.jobs import RECONCILIATION_JOB, verification_job


def verification_request(parent_run_id: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"verify-{parent_run_id}",
        run_config={"ops": {"verification_report": {"config": {"parent_run_id": parent_run_id}}}},
        tags={run_tags.TRIGGERED_BY: "verification", run_tags.PARENT_RUN_ID: parent_run_id},
    )


def build_verification_sensor(
    delay_minutes: float, *, now: Callable[[], float] = time.time
) -> dg.SensorDefinition:
    delay_s = delay_minutes * 60

    @dg.sensor(
        name="verification_sensor",
        job=verification_job,
        minimum_interval_seconds=int(min(300, max(5, delay_s / 4))),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches verification_job {delay_minutes:g} minute(s) after each "
        "reconciliation run that fixed at least one issue, once per run.",
    )
    def verification_sensor(context: dg.SensorEvaluationContext):
        since = float(context.cursor or 0)
        current = now()
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=RECONCILIATION_JOB,
                statuses=[dg.DagsterRunStatus.SUCCESS],
                tags={run_tags.FIXES_APPLIED: "true"},
                updated_after=dt.datetime.fromtimestamp(since, dt.UTC) if since else None,
            ),
            limit=200,
        )
        ended = [r for r in records if r.end_time and r.end_time > since]
        due = [r for r in ended if current - r.end_time >= delay_s]
        if not due:
            waiting = len(ended)
            return dg.SkipReason(
                f"{waiting} fixing run(s) not yet {delay_minutes:g} minute(s) old"
                if waiting
                else "no reconciliation run with fixes to verify"
            )
        # Runs end in order of end time, so every run not yet due ended after every due one.
        return dg.SensorResult(
            run_requests=[verification_request(r.dagster_run.run_id) for r in due],
            cursor=str(max(r.end_time for r in due)),
        )

    return verification_sensor
