"""Fixing and the run record: the only assets with side effects."""

import dagster as dg
import pandas as pd
from pydantic import Field

from recon_pipeline.clients.frame_store import stored_row_count, writer_runs
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
from recon_pipeline.domain.fixes import (
    ActionCol,
    Outcome,
    count_role_holders,
    evaluate_guard,
    issue_outcomes,
    plan_fix_actions,
    skipped_results,
)
from recon_pipeline.domain.notices import compose_notice, needs_notice
from recon_pipeline.domain.policy import resolve_managed_role_ids
from recon_pipeline.domain.report import RunSummary, issues_json
from recon_pipeline.fixing import FixRun, apply_actions

FIX_POOL = "recon_fixes"  # one fixing run at a time (SPEC §6)
GUARD_CHECK = "guard_not_tripped"
# What a fix decision rests on: fixes apply only when this run took every one of them.
FIX_INPUT_FRAMES = (
    "membership_members",
    "membership_teams",
    "stripe_subscriptions",
    "discord_roles",
    "discord_member_roles",
    "drift_issues",
)


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
        (with the reason) or not attempted. A dry run unless auto-fix is on; removals held back
        when the blast-radius guard trips."""
        run = context.run
        auto_fix = policy.auto_fix if config.auto_fix is None else config.auto_fix
        own_runs = run_tags.own_runs(run)
        role_ids = {
            name: role_id
            for role_id, name in resolve_managed_role_ids(
                discord_roles, policy.managed_roles()
            ).items()
        }
        holders = count_role_holders(discord_member_roles, set(role_ids.values()))
        guard = evaluate_guard(
            drift_issues, holders, policy.guard_policy(), override=config.override_guard
        )
        actions = plan_fix_actions(drift_issues)
        with membership_db.engine() as engine, engine.connect() as conn:
            writers = writer_runs(conn, FIX_INPUT_FRAMES, context.partition_key)
        not_ours = sorted(name for name, writer in writers.items() if writer not in own_runs)
        blocked = _why_not_apply(auto_fix, context.partition_key, policy.timezone, not_ours)
        if blocked:
            results = skipped_results(actions, Outcome.SKIPPED, blocked)
        else:
            held = actions[ActionCol.REMOVAL_ONLY].to_numpy() & guard.blocks_removals
            with discord.client() as client, membership_db.engine() as engine:
                applied = apply_actions(
                    actions[~held],
                    discord=client,
                    engine=engine,
                    run=FixRun(
                        scope_id=run_tags.fix_scope(run),
                        audit_reason=f"recon_pipeline run {run.run_id}",
                        role_ids=role_ids,
                        trust_recorded_fixes=any(w != run.run_id for w in writers.values()),
                    ),
                )
            results = pd.concat(
                [skipped_results(actions[held], Outcome.SKIPPED, guard.describe()), applied],
                ignore_index=True,
            )
        fixed = issue_outcomes(drift_issues, actions, results)
        summary = RunSummary.of(fixed)
        guard_state = (
            "overridden"
            if guard.tripped and guard.overridden
            else ("tripped" if guard.tripped else "ok")
        )
        context.instance.add_run_tags(
            run.run_id,
            {
                run_tags.TRIGGERED_BY: run_tags.triggered_by(run.tags),
                run_tags.FIXES_APPLIED: str(summary.issues_fixed > 0).lower(),
                run_tags.AUTO_FIX: str(not blocked).lower(),
                run_tags.ISSUES_FIXED: str(summary.issues_fixed),
                run_tags.GUARD: guard_state,
                run_tags.GUARD_DETAIL: guard.describe(),
            },
        )
        if blocked and auto_fix:
            context.log.warning(f"no fix applied: {blocked}")
        elif guard.blocks_removals and not blocked:
            context.log.warning(guard.describe())
        return dg.MaterializeResult(
            value=fixed,
            check_results=[
                dg.AssetCheckResult(
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
            ],
            metadata={
                "auto_fix": not blocked,
                "fixes_withheld_because": blocked or "",
                "issues_fixed": summary.issues_fixed,
                "by_outcome": dg.MetadataValue.json(summary.by_outcome),
                "guard": guard.describe(),
                "role_calls_planned": int((actions[ActionCol.KIND] != "set_status").sum()),
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
    ) -> dg.MaterializeResult:
        """The run's `ReconciliationRun` row (id = this Dagster run's id), as the app's admin
        views read it: counts, auto-fix flag, how it was triggered and every issue with its
        outcome."""
        run = context.instance.get_run_by_id(context.run.run_id) or context.run
        summary = RunSummary.of(reconciliation_fixes)
        with membership_db.engine() as engine, engine.begin() as conn:
            record = RunRecord(
                run_id=run.run_id,
                job_name=run.job_name,
                started_at=run_tags.run_started_at(context.instance, run.run_id),
                completed_at=run_tags.utcnow(),
                triggered_by=run_tags.triggered_by(run.tags),
                auto_fix_enabled=run.tags.get(run_tags.AUTO_FIX) == "true",
                members_checked=stored_row_count(conn, "membership_members", context.partition_key)
                or 0,
                teams_checked=stored_row_count(conn, "membership_teams", context.partition_key)
                or 0,
                issues_found=summary.issues_found,
                issues_fixed=summary.issues_fixed,
                issues=issues_json(reconciliation_fixes),
                partition_key=context.partition_key,
            )
            write_run_record(conn, record)
            writers = writer_runs(conn, FIX_INPUT_FRAMES, context.partition_key)
        # Only a run of today on its own snapshots tells the admins: a recomputed past day
        # (a backfill) makes no outside call at all.
        own = run_tags.own_runs(run)
        fresh = all(writer in own for writer in writers.values())
        tripped = run.tags.get(run_tags.GUARD) == "tripped"
        notice_sent: dict[str, str] = {}
        if fresh and needs_notice(record.app_row(), guard_tripped=tripped):
            notice = compose_notice(
                record.app_row(),
                guard_text=run.tags.get(run_tags.GUARD_DETAIL) if tripped else None,
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
                "by_type": dg.MetadataValue.json(summary.by_type),
                "admin_notice": dg.MetadataValue.json(notice_sent or {"sent": "no notice due"}),
            },
        )

    return [reconciliation_fixes, reconciliation_run]


def _why_not_apply(auto_fix: bool, day: str, timezone: str, not_ours: list[str]) -> str | None:
    """Why this run must not apply fixes, or None when it may."""
    if not auto_fix:
        return "dry run: auto-fix is off"
    if day != local_day(timezone):
        return f"{day} is a past day: only a run on the day of its snapshots applies fixes"
    if not_ours:
        return (
            f"{', '.join(not_ours)} of {day} were not produced by this run: fixes are applied "
            "only from a run's own fresh snapshots (run the whole reconciliation_job)"
        )
    return None
