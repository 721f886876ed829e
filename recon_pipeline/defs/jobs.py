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
