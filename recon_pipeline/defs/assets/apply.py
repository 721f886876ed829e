"""Fixing and the run record: the only assets with side effects."""

import dagster as dg
import pandas as pd
from pydantic import Field

from recon_pipeline.clients.membership_db import RunRecord, write_run_record
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.assets.snapshots import GROUP
from recon_pipeline.defs.hooks import record_failed_run
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import (
    DiscordResource,
    MembershipDbResource,
    NotifierResource,
    ReconciliationPolicyResource,
)
from recon_pipeline.domain.fixes import GuardDecision
from recon_pipeline.domain.notices import compose_notice, needs_notice
from recon_pipeline.domain.provenance import sources_of
from recon_pipeline.domain.report import RunSummary, issues_json
from recon_pipeline.fix_step import FixDecision, FixRequest, decision_of, run_fixing_step

FIX_POOL = "recon_fixes"  # the queue's limit on fixing steps; the lease is what guarantees it
GUARD_CHECK = "guard_not_tripped"


class FixConfig(dg.Config):
    """Launch options for this run's fixes."""

    auto_fix: bool | None = Field(
        default=None,
        description="Apply fixes in this run (true) or only report them (false). Leave empty "
        "to follow RECONCILIATION_AUTO_FIX, which is off unless the deployment turned it on.",
    )
    override_guard: bool = Field(
        default=False,
        description="Apply role removals even when they trip the blast-radius guard. For this "
        "run only; use it after checking that the planned removals are right.",
    )


def _guard_state(guard: GuardDecision) -> str:
    if not guard.tripped:
        return "ok"
    return "overridden" if guard.overridden else "tripped"


def _fixing_tags(run: dg.DagsterRun, decision: FixDecision, summary: RunSummary) -> dict:
    """Tags the UI filters on and verification_sensor looks for."""
    tags = {
        run_tags.TRIGGERED_BY: run_tags.triggered_by(run.tags),
        run_tags.FIXES_APPLIED: str(summary.issues_fixed > 0).lower(),
        run_tags.AUTO_FIX: str(decision.auto_fix).lower(),
        run_tags.ISSUES_FIXED: str(summary.issues_fixed),
        run_tags.GUARD: _guard_state(decision.guard),
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


def build_apply_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
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
    )
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
        run = context.run
        request = FixRequest(
            run_id=run.run_id,
            scope_id=run_tags.fix_scope(run),
            chain=run_tags.run_chain(context.instance, run),
            day=context.partition_key,
            today=local_day(policy.timezone),
            auto_fix=policy.auto_fix if config.auto_fix is None else config.auto_fix,
            override_guard=config.override_guard,
        )
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
        context.instance.add_run_tags(run.run_id, _fixing_tags(run, decision, summary))
        if decision.fixes_withheld:
            context.log.warning(f"no fix applied: {decision.fixes_withheld}")
        elif decision.guard.blocks_removals and decision.withheld is None:
            context.log.warning(decision.guard.describe())
        return dg.MaterializeResult(
            value=fixed,
            check_results=[_guard_check(decision.guard)],
            metadata={
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
            },
        )

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"sql"},
        deps=["membership_members", "membership_teams"],
        hooks={record_failed_run},
    )
    def reconciliation_run(
        context: dg.AssetExecutionContext,
        reconciliation_fixes: pd.DataFrame,
        membership_db: MembershipDbResource,
        notifier: NotifierResource,
        discord: DiscordResource,
        policy: ReconciliationPolicyResource,
    ) -> dg.MaterializeResult:
        """The run's `ReconciliationRun` row (id = this Dagster run's id), as the app's admin
        views read it: counts, auto-fix flag, how it was triggered and every issue with its
        outcome."""
        run = context.instance.get_run_by_id(context.run.run_id) or context.run
        summary = RunSummary.of(reconciliation_fixes)
        decision = decision_of(reconciliation_fixes)
        sources = [o for o in sources_of(reconciliation_fixes) if o is not None]
        rows = {o.frame: o.row_count for o in sources}
        record = RunRecord(
            run_id=run.run_id,
            job_name=run.job_name,
            started_at=run_tags.run_started_at(context.instance, run.run_id),
            completed_at=run_tags.utcnow(),
            triggered_by=run_tags.triggered_by(run.tags),
            auto_fix_enabled=bool(decision and decision.auto_fix),
            members_checked=rows.get("membership_members", 0),
            teams_checked=rows.get("membership_teams", 0),
            issues_found=summary.issues_found,
            issues_fixed=summary.issues_fixed,
            issues=issues_json(reconciliation_fixes),
            partition_key=context.partition_key,
            fixes_withheld=decision.fixes_withheld if decision else None,
        )
        with membership_db.engine() as engine, engine.begin() as conn:
            write_run_record(conn, record)
        # Only a run of today on its own snapshots tells the admins: a recomputed past day
        # (a backfill) makes no outside call at all.
        chain = run_tags.run_chain(context.instance, run)
        fresh = (
            context.partition_key == local_day(policy.timezone)
            and bool(sources)
            and all(o.run_id in chain for o in sources)
        )
        tripped = bool(decision and decision.guard.blocks_removals)
        notice_sent: dict[str, str] = {}
        if fresh and needs_notice(record.app_row(), guard_tripped=tripped):
            notice = compose_notice(
                {**record.app_row(), "fixesWithheld": record.fixes_withheld},
                guard_text=decision.guard.describe() if decision and tripped else None,
                run_url=notifier.run_url(run.run_id),
            )
            notice_sent = notifier.send(notice, context.log, discord=discord)
        context.log.info(
            f"ReconciliationRun {record.run_id}: {record.issues_found} issue(s), "
            f"{record.issues_fixed} fixed, triggered by {record.triggered_by}"
        )
        row = pd.DataFrame(
            [
                {
                    "run_id": record.run_id,
                    "triggered_by": record.triggered_by,
                    "auto_fix_enabled": record.auto_fix_enabled,
                    "members_checked": record.members_checked,
                    "teams_checked": record.teams_checked,
                    "issues_found": record.issues_found,
                    "issues_fixed": record.issues_fixed,
                }
            ]
        )
        return dg.MaterializeResult(
            value=row,
            metadata={
                "run_id": record.run_id,
                "issues_found": record.issues_found,
                "issues_fixed": record.issues_fixed,
                "triggered_by": record.triggered_by,
                "fixes_withheld_because": record.fixes_withheld or "",
                "by_type": dg.MetadataValue.json(summary.by_type),
                "admin_notice": dg.MetadataValue.json(notice_sent or {"sent": "no notice due"}),
            },
        )

    return [reconciliation_fixes, reconciliation_run]
