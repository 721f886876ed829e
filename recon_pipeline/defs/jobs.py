"""Jobs."""

from __future__ import annotations

import dagster as dg

from recon_pipeline.defs.assets.snapshots import GROUP

RECONCILIATION_JOB = "reconciliation_job"

reconciliation_job = dg.define_asset_job(
    RECONCILIATION_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    description="Snapshot Stripe, the membership database and Discord; compute the drift "
    "table; fix it when auto-fix is on; record the run in ReconciliationRun.",
    tags={"recon/kind": "reconciliation"},
)

VERIFICATION_JOB = "verification_job"

verification_job = dg.define_asset_job(
    VERIFICATION_JOB,
    selection=dg.AssetSelection.assets("verification_report"),
    description="Re-check a reconciliation run's fixes against fresh snapshots and record which "
    "persist (a ReconciliationRun with isVerificationRun=true). Never fixes anything.",
    tags={"recon/kind": "verification", "recon/triggered_by": "verification"},
)
