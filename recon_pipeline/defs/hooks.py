"""Every run leaves its record: a failed step writes the run's row and its failure."""

import dagster as dg

from recon_pipeline.clients.membership_db import RunRecord, write_failed_run_record
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.assets.apply import run_started_at, utcnow


def failure_text(step_key: str | None, error: BaseException | None) -> str:
    """What failed, in an operator's words (a Failure's description, else the exception)."""
    if error is None:
        reason = "unknown error"
    else:
        reason = getattr(error, "description", None) or f"{type(error).__name__}: {error}"
    return f"step {step_key} failed: {reason}" if step_key else reason


@dg.failure_hook(required_resource_keys={"membership_db", "policy"})
def record_failed_run(context: dg.HookContext) -> None:
    """Write the failed run's `ReconciliationRun` row (unless it wrote one) and its failure."""
    run = context.instance.get_run_by_id(context.run_id)
    tags = run.tags if run else {}
    record = RunRecord(
        run_id=context.run_id,
        job_name=context.job_name,
        started_at=run_started_at(context.instance, context.run_id),
        completed_at=utcnow(),
        triggered_by=run_tags.triggered_by(tags),
        auto_fix_enabled=tags.get(run_tags.AUTO_FIX, str(context.resources.policy.auto_fix).lower())
        == "true",
        is_verification_run=tags.get(run_tags.TRIGGERED_BY) == "verification",
        partition_key=tags.get(run_tags.PARTITION),
        parent_run_id=tags.get(run_tags.PARENT_RUN_ID),
        failure=failure_text(context.step_key, context.op_exception),
    )
    try:
        with context.resources.membership_db.engine() as engine, engine.begin() as conn:
            write_failed_run_record(conn, record)
    except Exception as exc:  # the database itself may be why the run failed
        context.log.error(f"could not record the failed run in the database: {exc}")
        return
    context.log.info(f"recorded failed run {context.run_id}: {record.failure}")
