"""Every run leaves its record, failed and cancelled runs included (docs/behaviour.md §5).

A failed step writes the run's `ReconciliationRun` row (unless the run already wrote one) and
its failure; the hook sits on every asset, so runs launched from the asset graph are covered
too. `record_failed_runs_sensor` sweeps ended runs for any that still have no record: a killed
run worker, a cancelled run, or a failure the hook could not write because the membership
database itself was down. A run it cannot record yet stays in its cursor and is tried again on
the next tick, so the record lands once the database is back.

The admins hear of each failed run once: the first recorded failure sends the notice, and a
notice sent while the database was unreachable is remembered in a run tag instead.
"""

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from recon_pipeline.clients.frame_store import FrameStore
from recon_pipeline.clients.membership_db import RunRecord, utcnow, write_failed_run_record
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.fix_config import launched_auto_fix
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import (
    MembershipDbResource,
    NotifierResource,
    ReconciliationPolicyResource,
)
from recon_pipeline.domain.fixes import issue_outcomes, plan_fix_actions
from recon_pipeline.domain.notices import compose_notice
from recon_pipeline.domain.report import RunSummary, issues_json
from recon_pipeline.fix_step import decision_of
from recon_pipeline.fixing import results_from_notes
from recon_pipeline.run_records import RunFacts, record_for

# Frames whose row count a failed run's record shows, by the record's field.
_COUNTED_FRAMES = {
    "membership_members": "members_checked",
    "membership_teams": "teams_checked",
    "drift_issues": "issues_found",
}
_FIXES_FRAME = "reconciliation_fixes"
_DRIFT_FRAME = "drift_issues"
# The pipeline's jobs, and the job Dagster runs when assets are materialised from the graph.
RECORDED_JOBS = frozenset({"reconciliation_job", "verification_job", "__ASSET_JOB"})
FIRST_LOOK_BACK_S = 24 * 3600  # how far back the sweep's first tick looks
MAX_WAITING = 500  # runs kept for another try; a longer outage drops the oldest


def failure_text(step_key: str | None, error: BaseException | None) -> str:
    """What failed, in an operator's words (a Failure's description, else the exception)."""
    if error is None:
        reason = "unknown error"
    else:
        # Dagster wraps errors of the IO manager; the operator needs the one underneath.
        while isinstance(error, dg.DagsterUserCodeExecutionError) and error.__cause__:
            error = error.__cause__
        reason = getattr(error, "description", None) or f"{type(error).__name__}: {error}"
    return f"step {step_key} failed: {reason}" if step_key else reason


@dataclass(frozen=True)
class FailureRecorder:
    """Writes failed runs' records and tells the admins, with the run's resources."""

    membership_db: MembershipDbResource
    policy: ReconciliationPolicyResource
    notifier: NotifierResource

    def record(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        failure: str,
        log: dg.DagsterLogManager,
        *,
        append: bool = True,
        notify: bool = True,
    ) -> RunRecord:
        """Write what is known of a failed run: what it stored (counts, and the issues with
        their outcomes when its fixing step finished), and why it failed.

        With `append`, a failure already recorded for the run is kept and this one added to
        it; without, an existing record is left as it is. When the database cannot be written
        the admins are still told (once) and the error is raised.
        """
        run = instance.get_run_by_id(run_id)
        facts = _facts_of(instance, run_id, run)
        tags = run.tags if run else {}
        default_auto_fix = self.policy.auto_fix
        # What the run itself tells; what it stored is added when the database can be read.
        known = record_for(
            facts,
            completed_at=utcnow(),
            auto_fix_enabled=launched_auto_fix(run, default_auto_fix) if run else default_auto_fix,
            is_verification_run=tags.get(run_tags.TRIGGERED_BY) == "verification",
            parent_run_id=tags.get(run_tags.PARENT_RUN_ID),
            failure=failure,
        )
        scope = run_tags.fix_scope(run) if run else run_id
        try:
            with self.membership_db.frame_store() as store:
                stored = _stored_by(store, facts.chain, scope, known.partition_key)
                record = dataclasses.replace(known, **stored)
                with store.catalog.begin() as conn:
                    first = write_failed_run_record(conn, record, append=append)
        except Exception:
            if notify:
                self._notify_once(instance, run, known, log)
            raise
        if first and notify:
            self._notify_once(instance, run, record, log)
        return record

    def _notify_once(
        self,
        instance: dg.DagsterInstance,
        run: dg.DagsterRun | None,
        record: RunRecord,
        log: dg.DagsterLogManager,
    ) -> None:
        if run is None or run.tags.get(run_tags.FAILURE_NOTIFIED) == "true":
            return
        # A failed recomputation of a past day stays quiet: it made no outside call.
        partition = run.tags.get(run_tags.PARTITION)
        if partition is not None and partition != local_day(self.policy.timezone):
            return
        notice = compose_notice(
            {**record.app_row(), "failure": record.failure},
            run_url=self.notifier.run_url(run.run_id),
        )
        self.notifier.send(notice, log)
        instance.add_run_tags(run.run_id, {run_tags.FAILURE_NOTIFIED: "true"})


def _facts_of(instance: dg.DagsterInstance, run_id: str, run: dg.DagsterRun | None) -> RunFacts:
    if run is None:  # deleted from the instance meanwhile: only its id is known
        started = run_tags.run_started_at(instance, run_id)
        return RunFacts(run_id, "", started, run_tags.triggered_by({}), None, frozenset({run_id}))
    return run_tags.run_facts(instance, run, run.tags.get(run_tags.PARTITION))


def _stored_by(
    store: FrameStore, chain: frozenset[str], scope_id: str, partition: str | None
) -> dict[str, Any]:
    """Counts and issues from the frames the run (or the runs it re-executes) stored for its
    day. A run that ended inside its fixing step stored no outcomes: they are rebuilt from its
    drift table and the notes it made before and after each change, so its record says which
    changes were made."""
    stored: dict[str, Any] = dict.fromkeys(_COUNTED_FRAMES.values(), 0)
    if not partition:
        return stored
    latest = {entry.name: entry for entry in store.entries(partition, run_ids=sorted(chain))}
    for name, field in _COUNTED_FRAMES.items():
        if name in latest:
            stored[field] = latest[name].row_count
    if _FIXES_FRAME in latest:
        fixes = store.read(_FIXES_FRAME, partition, latest[_FIXES_FRAME].run_id)
        decision = decision_of(fixes)
        if decision is not None:  # what the fixing step decided outranks the launch config
            stored["auto_fix_enabled"] = decision.auto_fix
    elif _DRIFT_FRAME in latest:
        drift = store.read(_DRIFT_FRAME, partition, latest[_DRIFT_FRAME].run_id)
        actions = plan_fix_actions(drift)
        fixes = issue_outcomes(drift, actions, results_from_notes(actions, store.catalog, scope_id))
    else:
        return stored
    summary = RunSummary.of(fixes)
    stored.update(
        issues_found=summary.issues_found,
        issues_fixed=summary.issues_fixed,
        issues=issues_json(fixes),
    )
    return stored


@dg.failure_hook(required_resource_keys={"membership_db", "policy", "notifier"})
def record_failed_run(context: dg.HookContext) -> None:
    """Record the run as failed, naming the step and why."""
    failure = failure_text(context.step_key, context.op_exception)
    resources = context.resources
    recorder = FailureRecorder(resources.membership_db, resources.policy, resources.notifier)
    try:
        recorder.record(context.instance, context.run_id, failure, context.log)
    except Exception as exc:  # the database itself may be why the run failed
        context.log.error(
            f"could not record the failed run in the database ({exc}); "
            "record_failed_runs_sensor records it once the database is back"
        )
        return
    context.log.info(f"recorded failed run {context.run_id}: {failure}")


def ended_run_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Why a run ended without success: its first failed step's error, else the run's own."""
    if run.status == dg.DagsterRunStatus.CANCELED:
        return "the run was cancelled before it finished"
    steps = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
    ).records
    if steps:
        event = steps[0].event_log_entry.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        while error is not None and error.cause is not None:
            error = error.cause  # the root cause, not Dagster's wrapper around it
        if error is not None:
            return f"step {event.step_key} failed: {error.message.strip()}"
    ends = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1
    ).records
    message = ends[0].event_log_entry.dagster_event.message if ends else None
    return message or "the run failed"


@dg.sensor(
    name="record_failed_runs_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes the ReconciliationRun row of every failed or cancelled run that has "
    "none yet (a killed run worker, a failure before any step, the membership database down "
    "when the run failed), retrying each tick until the database takes it.",
)
def record_failed_runs_sensor(
    context: dg.SensorEvaluationContext,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
    notifier: NotifierResource,
) -> dg.SkipReason:
    state = json.loads(context.cursor) if context.cursor else {}
    after = state.get("after", time.time() - FIRST_LOOK_BACK_S)
    waiting: list[str] = state.get("waiting", [])
    ended = context.instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            updated_after=dt.datetime.fromtimestamp(after, dt.UTC),
        ),
        limit=200,
        order_by="update_timestamp",
        ascending=True,
    )
    candidates = list(dict.fromkeys([*waiting, *(r.dagster_run.run_id for r in ended)]))
    if ended:
        after = max(after, max(r.update_timestamp.timestamp() for r in ended))
    recorder = FailureRecorder(membership_db, policy, notifier)
    recorded, still_waiting = 0, []
    for run_id in candidates:
        run = context.instance.get_run_by_id(run_id)
        if run is None or run.job_name not in RECORDED_JOBS:
            continue
        try:
            recorder.record(
                context.instance,
                run_id,
                ended_run_failure(context.instance, run),
                context.log,
                append=False,
                notify=run.status == dg.DagsterRunStatus.FAILURE,
            )
        except Exception as exc:
            context.log.warning(f"run {run_id} not recorded yet: {exc}")
            still_waiting.append(run_id)
            continue
        recorded += 1
    context.update_cursor(json.dumps({"after": after, "waiting": still_waiting[-MAX_WAITING:]}))
    return dg.SkipReason(
        f"checked {recorded} ended run(s); {len(still_waiting)} wait for the database"
        if candidates
        else "no failed or cancelled run since the last check"
    )
