"""`verification_report`: re-checks a reconciliation run's fixes against fresh snapshots."""

import dagster as dg
import pandas as pd
from pydantic import Field

from recon_pipeline.clients.membership_db import read_run_record, utcnow, write_run_record
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.assets.snapshots import read_discord, read_membership, read_stripe
from recon_pipeline.defs.hooks import record_failed_run
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import (
    DiscordResource,
    MembershipDbResource,
    NotifierResource,
    ReconciliationPolicyResource,
    StripeResource,
)
from recon_pipeline.domain.access_exceptions import live_exceptions
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.notices import compose_notice
from recon_pipeline.domain.policy import Severity
from recon_pipeline.domain.verification import Verification, verify_fixes
from recon_pipeline.run_records import verification_record

VERIFICATION_GROUP = "verification"
NO_HIGH_DRIFT_LEFT = "no_high_severity_drift_left"


class VerificationConfig(dg.Config):
    """Which run to verify."""

    parent_run_id: str = Field(
        description="The reconciliation run to verify: its Dagster run id (the id of its "
        "ReconciliationRun row). verification_sensor fills it in for runs that fixed issues."
    )


def _parent_issues(membership_db: MembershipDbResource, parent_run_id: str) -> list[dict]:
    with membership_db.engine() as engine, engine.connect() as conn:
        parent = read_run_record(conn, parent_run_id.strip())
    if parent is None:
        raise dg.Failure(
            description=f"No ReconciliationRun has id {parent_run_id!r}: give the run id of an "
            "earlier reconciliation run (shown on its run page and in ReconciliationRun.id).",
            allow_retries=False,
        )
    if parent["isVerificationRun"]:
        raise dg.Failure(
            description=f"Run {parent_run_id} is itself a verification; verify the "
            "reconciliation run it checked instead.",
            allow_retries=False,
        )
    return list(parent["issues"] or [])


def _persisting_frame(verification: Verification) -> pd.DataFrame:
    return pd.DataFrame(
        verification.persisting,
        columns=["type", "memberId", "teamId", "discordId", "severity", "description"],
    )


def _report_metadata(
    verification: Verification, parent_run_id: str, sent: dict[str, str]
) -> dict[str, object]:
    persisting = _persisting_frame(verification)
    listing = persisting.astype(object).where(persisting.notna(), "")
    return {
        "summary": verification.summary,
        "verified_run_id": parent_run_id,
        "fixed_issues_checked": verification.checked,
        "persisting": len(verification.persisting),
        "other_parent_issues_still_open": verification.still_open,
        "admin_notice": dg.MetadataValue.json(sent or {"sent": "no notice due"}),
        "persisting_issues": dg.MetadataValue.md(
            listing.to_markdown(index=False) if len(listing) else "None: every fix held."
        ),
    }


def _high_drift_check(drift: pd.DataFrame) -> dg.AssetCheckResult:
    high_now = int((drift["severity"] == Severity.HIGH).sum())
    return dg.AssetCheckResult(
        check_name=NO_HIGH_DRIFT_LEFT,
        passed=high_now == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{high_now} HIGH-severity issue(s) in the fresh snapshots",
        metadata={"high_severity_issues": high_now},
    )


@dg.asset(
    group_name=VERIFICATION_GROUP,
    kinds={"stripe", "discord"},
    hooks={record_failed_run},
    check_specs=[
        dg.AssetCheckSpec(
            NO_HIGH_DRIFT_LEFT,
            asset="verification_report",
            description="After the verified run's fixes, the fresh snapshots show no "
            "HIGH-severity drift at all.",
        )
    ],
)
def verification_report(
    context: dg.AssetExecutionContext,
    config: VerificationConfig,
    membership_db: MembershipDbResource,
    stripe: StripeResource,
    discord: DiscordResource,
    policy: ReconciliationPolicyResource,
    notifier: NotifierResource,
):  # no return annotation: with check_specs Dagster reads one as the output's type
    """The verified run's fixed issues that persist in fresh snapshots ("N of M fixed issues
    persist"). Recorded as a ReconciliationRun with isVerificationRun=true; never fixes."""
    parent_issues = _parent_issues(membership_db, config.parent_run_id)
    membership = read_membership(membership_db)
    subscriptions, _ = read_stripe(stripe)
    now = read_discord(discord, policy, fixing=None)  # a verification changes nothing
    drift = find_drift_issues(
        membership.members,
        membership.teams,
        subscriptions,
        now.member_roles,
        now.roles,
        policy.access_policy(),
        live_exceptions(membership.exceptions, local_day(policy.timezone)),
    )
    verification = verify_fixes(parent_issues, drift)
    record = verification_record(
        run_tags.run_facts(context.instance, context.run, None),
        verification,
        parent_run_id=config.parent_run_id,
        members_checked=len(membership.members),
        teams_checked=len(membership.teams),
        completed_at=utcnow(),
    )
    with membership_db.engine() as engine, engine.begin() as conn:
        write_run_record(conn, record)
    sent: dict[str, str] = {}
    if verification.persisting:
        notice = compose_notice(record.app_row(), run_url=notifier.run_url(record.run_id))
        sent = notifier.send(notice, context.log)
    context.log.info(f"Verification of run {config.parent_run_id}: {verification.summary}")
    return dg.MaterializeResult(
        value=_persisting_frame(verification),
        metadata=_report_metadata(verification, config.parent_run_id, sent),
        check_results=[_high_drift_check(drift)],
    )
