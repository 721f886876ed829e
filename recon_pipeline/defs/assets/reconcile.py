"""The drift issue table: the engine run over one day's snapshots."""

import dagster as dg
import pandas as pd

from recon_pipeline.defs import run_tags
from recon_pipeline.defs.assets.snapshots import GROUP
from recon_pipeline.defs.hooks import record_failed_run
from recon_pipeline.defs.resources import MembershipDbResource, ReconciliationPolicyResource
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.issue_table import (
    Confirmation,
    DaySnapshots,
    DriftTable,
    drift_table,
)
from recon_pipeline.domain.policy import RoleResolutionError
from recon_pipeline.domain.provenance import (
    PREVIOUS_RUN,
    origin_of,
    sources_of,
)
from recon_pipeline.domain.report import RunSummary, trend_counts
from recon_pipeline.previous_run import find_previous_run

PREVIEW_ROWS = 25
SNAPSHOTS_COMPLETE = "snapshots_complete"

_COLUMN_DOCS = {
    IssueCol.TYPE: "MISSING_ACCESS, UNAUTHORIZED_ACCESS, ROLE_MISMATCH, DEBTOR_MISMATCH, "
    "ORPHANED_ACCESS, NOT_IN_GUILD or STALE_DATABASE_STATUS",
    IssueCol.SEVERITY: "HIGH, MEDIUM or LOW",
    IssueCol.MEMBER_ID: "Member.id (empty for orphaned accounts and team statuses)",
    IssueCol.TEAM_ID: "Team.id of the member's team, or of a stale team status",
    IssueCol.DISCORD_ID: "the Discord account",
    IssueCol.DESCRIPTION: "what was expected and what was found",
    IssueCol.STRIPE_STATUS: "status of the billing customer's reported subscription",
    IssueCol.DATABASE_STATUS: "the cached status column that governs the member",
    IssueCol.DISCORD_ROLES: "managed roles held",
    IssueCol.EXPECTED_ROLE: "the managed role the policy expects",
    IssueCol.ROLES_TO_ADD: "roles a fix adds",
    IssueCol.ROLES_TO_REMOVE: "roles a fix removes",
    IssueCol.STATUS_FIX: "status a fix writes (STALE_DATABASE_STATUS)",
    IssueCol.TEAM_NAME: "Team.name",
    IssueCol.FIX_WITHHELD: "why bad data withholds the fix (empty: nothing does)",
    IssueCol.ACCESS_EXCEPTION: "id of the access exception that gives the expected role",
    IssueCol.AWAITING_CONFIRMATION: "why a removal waits for the next run (empty: it does not)",
    IssueCol.FINGERPRINT: "the same for the same account, type and wanted change across runs",
    IssueCol.FIRST_SEEN: "when a run first found the issue (its snapshots' time, UTC)",
    IssueCol.ISSUE_STATUS: "new, or persisting from the previous complete run",
}
_TUPLES = {IssueCol.DISCORD_ROLES, IssueCol.ROLES_TO_ADD, IssueCol.ROLES_TO_REMOVE}
DRIFT_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(c, "list" if c in _TUPLES else "string", description=_COLUMN_DOCS[c])
        for c in IssueCol.ALL
    ]
)


_PREVIEW_COLUMNS = [
    IssueCol.TYPE,
    IssueCol.SEVERITY,
    IssueCol.ISSUE_STATUS,
    IssueCol.MEMBER_ID,
    IssueCol.DISCORD_ID,
    IssueCol.DESCRIPTION,
]


def preview_table(issues: pd.DataFrame, rows: int = PREVIEW_ROWS) -> dg.TableMetadataValue:
    """The first `rows` issues as table metadata, shown in place on the materialisation."""
    shown = issues.reindex(columns=_PREVIEW_COLUMNS).head(rows).astype(object)
    shown = shown.where(shown.notna(), "")
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(dict(zip(_PREVIEW_COLUMNS, map(str, r), strict=True)))
            for r in shown.itertuples(index=False)
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(c, "string", description=_COLUMN_DOCS[c]) for c in _PREVIEW_COLUMNS
            ]
        ),
    )


def drift_issues(
    context: dg.AssetExecutionContext,
    membership_members: pd.DataFrame,
    membership_teams: pd.DataFrame,
    stripe_subscriptions: pd.DataFrame,
    discord_member_roles: pd.DataFrame,
    discord_roles: pd.DataFrame,
    access_exceptions: pd.DataFrame,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
):  # no return annotation: with check_specs Dagster reads one as the output's type
    """One row per drift issue: who should hold which role, who holds it, which cached status is
    stale (docs/behaviour.md §2). Computed from the day's stored snapshots only; removals the
    previous complete run did not find wait for confirmation (§4)."""
    snapshots = DaySnapshots(
        membership_members,
        membership_teams,
        stripe_subscriptions,
        discord_member_roles,
        discord_roles,
        access_exceptions,
    )
    confirmation = _confirmation(context, membership_db, policy.confirm_removals, snapshots)
    try:
        table = drift_table(
            snapshots,
            policy.access_policy(),
            day=context.partition_key,
            confirmation=confirmation,
        )
    except RoleResolutionError as exc:
        raise dg.Failure(description=f"Discord roles cannot be matched: {exc}") from None
    for anomaly in table.anomalies:
        context.log.warning(f"bad data: {anomaly}")
    if table.problems:
        context.log.error(
            "snapshots incomplete, no fix will be applied: " + "; ".join(table.problems)
        )
    return dg.MaterializeResult(
        value=table.issues,
        check_results=[_completeness_check(table.problems)],
        metadata=_drift_metadata(table),
    )


def _confirmation(
    context: dg.AssetExecutionContext,
    membership_db: MembershipDbResource,
    required: bool,
    snapshots: DaySnapshots,
) -> Confirmation:
    """How this run's removals are confirmed: against the previous complete run, the one whose
    snapshots were taken last before these."""
    taken = [o.taken_at for o in map(origin_of, snapshots) if o and o.taken_at]
    run = context.run
    if not taken:
        return Confirmation(required, run.run_id)
    with membership_db.frame_store() as store:
        previous = find_previous_run(
            store,
            chain=run_tags.run_chain(context.instance, run),
            observed_at=min(taken),
        )
    return Confirmation(required, run.run_id, previous, observed_at=min(taken))


def _completeness_check(problems: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=SNAPSHOTS_COMPLETE,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or "every snapshot is plausible",
        metadata={"problems": len(problems)},
    )


def _drift_metadata(table: DriftTable) -> dict[str, object]:
    summary = RunSummary.of(table.issues)
    return {
        "dagster/row_count": len(table.issues),
        "by_type": dg.MetadataValue.json(summary.by_type),
        "by_severity": dg.MetadataValue.json(summary.by_severity),
        "high_severity": summary.by_severity.get("HIGH", 0),
        "data_anomalies": dg.MetadataValue.json(table.anomalies),
        "awaiting_confirmation": table.awaiting,
        "resolved_since_previous_run": table.resolved,
        "confirmed_against_run": table.issues.attrs.get(PREVIOUS_RUN) or "none",
        "exceptions_lapsed": dg.MetadataValue.json(table.lapsed),
        "snapshots_from_runs": dg.MetadataValue.json(
            sorted({o.run_id for o in sources_of(table.issues) if o})
        ),
        "preview": preview_table(table.issues),
        **trend_counts(table.issues),
    }


def build_drift_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`drift_issues` on the configured day partitions."""
    return dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"pandas"},
        metadata={"dagster/column_schema": DRIFT_SCHEMA},
        hooks={record_failed_run},
        check_specs=[
            dg.AssetCheckSpec(
                SNAPSHOTS_COMPLETE,
                asset="drift_issues",
                blocking=True,
                description="The day's snapshots are whole enough to act on: no side is empty "
                "while the other says members are paying. Blocking: when it fails, no fix runs.",
            )
        ],
    )(drift_issues)
