"""Jobs."""

from __future__ import annotations

import dagster as dg

from recon_pipeline.defs.assets.snapshots import GROUP

RECONCILIATION_JOB = "reconciliation_job"
FIXING_LOCK_TAG = "recon/lock"  # dagster.yaml limits runs carrying it to one at a time

reconciliation_job = dg.define_asset_job(
    RECONCILIATION_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    description="Snapshot Stripe, the membership database and Discord; compute the drift "
    "table; fix it when auto-fix is on; record the run in ReconciliationRun.",
    # `tags`, not `run_tags`: only job tags reach runs launched from the UI, and the
    # deployment's run queue allows one run with this tag at a time.
    tags={"recon/kind": "reconciliation", FIXING_LOCK_TAG: "fixing"},
)

VERIFICATION_JOB = "verification_job"

verification_job = dg.define_asset_job(
    VERIFICATION_JOB,
    selection=dg.AssetSelection.assets("verification_report"),
    description="Re-check a reconciliation run's fixes against fresh snapshots and record which "
    "persist (a ReconciliationRun with isVerificationRun=true). Never fixes anything.",
    tags={
        "recon/kind": "verification",
        "recon/triggered_by": "verification",
        FIXING_LOCK_TAG: "fixing",
    },
)
