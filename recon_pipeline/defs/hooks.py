"""Every run leaves its record, failed runs included (SPEC §6).

A failed step writes the run's `ReconciliationRun` row (unless the run already wrote one) and
its failure; the hook sits on every asset, so runs launched from the asset graph are covered
too. A run that dies without a step failing (a crash, a killed worker) is caught by
`record_failed_runs_sensor`.
"""

import dagster as dg

from recon_pipeline.clients.frame_store import stored_row_count, writer_runs
from recon_pipeline.clients.membership_db import RunRecord, write_failed_run_record
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import (
    DiscordResource,
    MembershipDbResource,
    NotifierResource,
    ReconciliationPolicyResource,
)
from recon_pipeline.domain.notices import compose_notice

_COUNTED_FRAMES = ("membership_members", "membership_teams", "drift_issues")


def failure_text(step_key: str | None, error: BaseException | None) -> str:
    """What failed, in an operator's words (a Failure's description, else the exception)."""
    if error is None:
        reason = "unknown error"
    else:
        reason = getattr(error, "description", None) or f"{type(error).__name__}: {error}"
    return f"step {step_key} failed: {reason}" if step_key else reason


def requested_auto_fix(run: dg.DagsterRun | None, default: bool) -> bool:
    """The auto-fix a run was launched with: its launch config, else the deployment's."""
    tags = run.tags if run else {}
    if run_tags.AUTO_FIX in tags:  # set once the fixing step decided
        return tags[run_tags.AUTO_FIX] == "true"
    ops = (run.run_config or {}).get("ops", {}) if run else {}
    chosen = ops.get("reconciliation_fixes", {}).get("config", {}).get("auto_fix")
    return default if chosen is None else bool(chosen)


def record_failure(
    instance: dg.DagsterInstance,
    run_id: str,
    failure: str,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
    notifier: NotifierResource,
    discord: DiscordResource,
    log: dg.DagsterLogManager,
    *,
    append: bool = True,
) -> RunRecord:
    """Write what is known of a failed run: counts of what it did store, and why it failed.

    With `append`, a failure already recorded for the run is kept and this one added to it;
    without, an existing record is left as it is.
    """
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    partition = tags.get(run_tags.PARTITION)
    with membership_db.engine() as engine, engine.begin() as conn:
        counts = {name: 0 for name in _COUNTED_FRAMES}
        if partition:
            writers = writer_runs(conn, _COUNTED_FRAMES, partition)
            for name, writer in writers.items():
                if writer == run_id:
                    counts[name] = stored_row_count(conn, name, partition) or 0
        record = RunRecord(
            run_id=run_id,
            job_name=run.job_name if run else "",
            started_at=run_tags.run_started_at(instance, run_id),
            completed_at=run_tags.utcnow(),
            triggered_by=run_tags.triggered_by(tags),
            auto_fix_enabled=requested_auto_fix(run, policy.auto_fix),
            is_verification_run=tags.get(run_tags.TRIGGERED_BY) == "verification",
            members_checked=counts["membership_members"],
            teams_checked=counts["membership_teams"],
            issues_found=counts["drift_issues"],
            partition_key=partition,
            parent_run_id=tags.get(run_tags.PARENT_RUN_ID),
            failure=failure,
        )
        first = write_failed_run_record(conn, record, append=append)
    # The admins hear once per failed run; a failed recomputation of a past day stays quiet.
    if first and (partition is None or partition == local_day(policy.timezone)):
        notice = compose_notice(
            {**record.app_row(), "failure": failure}, run_url=notifier.run_url(run_id)
        )
        notifier.send(notice, log, discord=discord)
    return record


@dg.failure_hook(required_resource_keys={"membership_db", "policy", "notifier", "discord"})
def record_failed_run(context: dg.HookContext) -> None:
    """Record the run as failed, naming the step and why."""
    failure = failure_text(context.step_key, context.op_exception)
    try:
        record_failure(
            context.instance,
            context.run_id,
            failure,
            context.resources.membership_db,
            context.resources.policy,
            context.resources.notifier,
            context.resources.discord,
            context.log,
        )
    except Exception as exc:  # the database itself may be why the run failed
        context.log.error(f"could not record the failed run in the database: {exc}")
        return
    context.log.info(f"recorded failed run {context.run_id}: {failure}")


@dg.run_failure_sensor(
    name="record_failed_runs_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes the ReconciliationRun row of a run that failed without a step "
    "recording it (a crashed or killed run worker, a failure before any step).",
)
def record_failed_runs_sensor(
    context: dg.RunFailureSensorContext,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
    notifier: NotifierResource,
    discord: DiscordResource,
) -> None:
    run = context.dagster_run
    failure = context.failure_event.message or "the run failed"
    record = record_failure(
        context.instance,
        run.run_id,
        failure,
        membership_db,
        policy,
        notifier,
        discord,
        context.log,
        append=False,
    )
    context.log.info(f"recorded failed run {record.run_id}")
