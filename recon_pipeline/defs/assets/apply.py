"""Fixing and the run record: the only assets with side effects."""

import dagster as dg
import pandas as pd

from recon_pipeline.clients.membership_db import utcnow, write_run_record
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.assets.snapshots import GROUP
from recon_pipeline.defs.fix_config import FixConfig
from recon_pipeline.defs.hooks import record_failed_run
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import (
    DiscordResource,
    MembershipDbResource,
    NotifierResource,
    ReconciliationPolicyResource,
)
from recon_pipeline.domain.fixes import GuardDecision
from recon_pipeline.domain.provenance import sources_of
from recon_pipeline.domain.report import RunSummary, trend_counts
from recon_pipeline.fix_step import FixDecision, FixRequest, run_fixing_step
from recon_pipeline.run_records import notice_for, record_frame, record_of

FIX_POOL = "recon_fixes"  # the queue's limit on fixing steps; the lease is what guarantees it
GUARD_CHECK = "guard_not_tripped"


def _fixing_tags(run: dg.DagsterRun, decision: FixDecision, summary: RunSummary) -> dict:
    """Tags the UI filters on and verification_sensor looks for."""
    tags = {
        run_tags.TRIGGERED_BY: run_tags.triggered_by(run.tags),
        run_tags.FIXES_APPLIED: str(summary.issues_fixed > 0).lower(),
        run_tags.AUTO_FIX: str(decision.auto_fix).lower(),
        run_tags.ISSUES_FIXED: str(summary.issues_fixed),
        run_tags.GUARD: decision.guard.state,
    }
    if decision.fixes_withheld and decision.withheld:
        tags[run_tags.FIXES_WITHHELD] = decision.withheld.code.value
    return tags


def _guard_check(guard: GuardDecision) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=GUARD_CHECK,
        passed=not guard.tripped,
        severity=dg.AssetCheckSeverity.WARN,
        description=guard.describe(),
        metadata={
            "planned_removals": guard.planned_removals,
            "limit": guard.limit,
            "role_holders": guard.holders,
            "overridden": guard.overridden,
        },
    )


def _fix_request(
    context: dg.AssetExecutionContext, config: FixConfig, policy: ReconciliationPolicyResource
) -> FixRequest:
    run = context.run
    return FixRequest(
        run_id=run.run_id,
        scope_id=run_tags.fix_scope(run),
        chain=run_tags.run_chain(context.instance, run),
        day=context.partition_key,
        today=local_day(policy.timezone),
        auto_fix=config.auto_fix_or(policy.auto_fix),
        override_guard=config.override_guard,
    )


def _fixing_metadata(
    fixed: pd.DataFrame, decision: FixDecision, summary: RunSummary
) -> dict[str, object]:
    return {
        "auto_fix": decision.auto_fix,
        "fixes_withheld_because": decision.fixes_withheld or "",
        "issues_fixed": summary.issues_fixed,
        "changes_made": decision.changes,
        "by_outcome": dg.MetadataValue.json(summary.by_outcome),
        "guard": decision.guard.describe(),
        "changes_planned": decision.planned,
        "snapshots_from_runs": dg.MetadataValue.json(
            sorted({o.run_id for o in sources_of(fixed) if o})
        ),
    }


def reconciliation_fixes(
    context: dg.AssetExecutionContext,
    config: FixConfig,
    drift_issues: pd.DataFrame,
    discord_roles: pd.DataFrame,
    discord_member_roles: pd.DataFrame,
    discord: DiscordResource,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
):  # no return annotation: with check_specs Dagster reads one as the output's type
    """The drift table with each issue's outcome: fixed, failed (with the error), skipped
    (with the reason) or not attempted. A dry run unless auto-fix is on; fixes only from
    this run's own complete and fresh snapshots, under the fixing lease; removals held back
    when the blast-radius guard trips."""
    request = _fix_request(context, config, policy)
    with discord.client() as client, membership_db.engine() as engine:
        fixed, decision = run_fixing_step(
            drift_issues,
            discord_roles,
            discord_member_roles,
            request=request,
            settings=policy.fix_settings(),
            discord=client,
            engine=engine,
        )
    summary = RunSummary.of(fixed)
    context.instance.add_run_tags(request.run_id, _fixing_tags(context.run, decision, summary))
    if decision.warning:
        context.log.warning(decision.warning)
    return dg.MaterializeResult(
        value=fixed,
        check_results=[_guard_check(decision.guard)],
        metadata=_fixing_metadata(fixed, decision, summary),
    )


def reconciliation_run(
    context: dg.AssetExecutionContext,
    reconciliation_fixes: pd.DataFrame,
    membership_db: MembershipDbResource,
    notifier: NotifierResource,
    policy: ReconciliationPolicyResource,
) -> dg.MaterializeResult:
    """The run's `ReconciliationRun` row (id = this Dagster run's id), as the app's admin
    views read it: counts, auto-fix flag, how it was triggered and every issue with its
    outcome."""
    facts = run_tags.run_facts(context.instance, context.run, context.partition_key)
    record = record_of(reconciliation_fixes, facts, completed_at=utcnow())
    with membership_db.engine() as engine, engine.begin() as conn:
        write_run_record(conn, record)
    notice = notice_for(
        record,
        reconciliation_fixes,
        facts,
        today=local_day(policy.timezone),
        run_url=notifier.run_url(record.run_id),
        notify=policy.notify,
    )
    sent = notifier.send(notice, context.log) if notice else {}
    context.log.info(
        f"ReconciliationRun {record.run_id}: {record.issues_found} issue(s), "
        f"{record.issues_fixed} fixed, triggered by {record.triggered_by}"
    )
    return dg.MaterializeResult(
        value=record_frame(record),
        metadata={
            "run_id": record.run_id,
            "issues_found": record.issues_found,
            "issues_fixed": record.issues_fixed,
            "triggered_by": record.triggered_by,
            "fixes_withheld_because": record.fixes_withheld or "",
            "by_type": dg.MetadataValue.json(RunSummary.of(reconciliation_fixes).by_type),
            **trend_counts(reconciliation_fixes),
            "resolved_since_previous_run": record.resolved_issues or 0,
            "admin_notice": dg.MetadataValue.json(sent or {"sent": "no notice due"}),
        },
    )


def build_apply_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The fixing and record steps on the configured day partitions."""
    fixes = dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"discord"},
        pool=FIX_POOL,
        hooks={record_failed_run},
        check_specs=[
            dg.AssetCheckSpec(
                GUARD_CHECK,
                asset="reconciliation_fixes",
                description="The blast-radius guard did not trip (a warning when it did: the "
                "run held its removals back unless the launch config overrode it).",
            )
        ],
    )(reconciliation_fixes)
    record = dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"sql"},
        deps=["membership_members", "membership_teams"],
        hooks={record_failed_run},
    )(reconciliation_run)
    return [fixes, record]
