"""The IO manager: every asset's DataFrame, per day and per run, in the frame store.

A step's output is stored as its run's; an input is read from the run that produced it: this
run, or for a re-execution the earlier run of its chain that Dagster names. An input whose asset
this run does not materialise at all (a backfill recomputing a past day, a launch of part of
the job) is read from the day's last run that stored every snapshot, one run for all of this
run's steps. Loading a day that was never stored, or one beyond the retention horizon, fails
with a message naming the day, rather than handing downstream an empty frame that would read as
"no drift".
"""

import datetime as dt

import dagster as dg
import pandas as pd

from recon_pipeline.clients.frame_store import (
    FrameDamagedError,
    FrameNotStoredError,
    FrameStore,
)
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import MembershipDbResource, ReconciliationPolicyResource
from recon_pipeline.domain.access_exceptions import empty_exceptions
from recon_pipeline.domain.provenance import STORED

LATEST = "latest"  # the key of an unpartitioned asset's value
_NO_RUN = "__EPHEMERAL_RUN_ID"
# The frames a reconciliation run snapshots; one run's set is read together.
SNAPSHOT_FRAMES = (
    "membership_members",
    "membership_teams",
    "stripe_subscriptions",
    "discord_roles",
    "discord_member_roles",
)
# Snapshots a run takes beside those, which runs of earlier versions did not store: reading one
# of such a run's days finds the frame it would have had (no exception existed then).
LATER_SNAPSHOT_FRAMES = {"access_exceptions": empty_exceptions}


def oldest_kept_day(timezone: str, retention_days: int) -> str:
    """The oldest day whose frames the retention horizon keeps."""
    today = dt.date.fromisoformat(local_day(timezone))
    return (today - dt.timedelta(days=retention_days)).isoformat()


class FrameStoreIOManager(dg.ConfigurableIOManager):
    """Stores each asset's frame per (day, run) in the frame store (clients/frame_store)."""

    membership_db: dg.ResourceDependency[MembershipDbResource]
    policy: dg.ResourceDependency[ReconciliationPolicyResource]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        name = context.asset_key.path[-1]
        [day] = context.asset_partition_keys if context.has_asset_partitions else [LATEST]
        with self.membership_db.frame_store() as store:
            store.write(name, day, context.run_id, obj)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        name = context.asset_key.path[-1]
        keys = context.asset_partition_keys if context.has_asset_partitions else [LATEST]
        if len(keys) != 1:
            raise dg.Failure(
                description=f"{name}: one day at a time, not {len(keys)} ({keys[0]}…{keys[-1]})",
                allow_retries=False,
            )
        [day] = keys
        self._refuse_beyond_horizon(name, day)
        try:
            with self.membership_db.frame_store() as store:
                run_id = _producing_run(context) or _chosen_run(context, store, name, day)
                if name in LATER_SNAPSHOT_FRAMES and store.entry(name, day, run_id) is None:
                    return _as_stored_empty(LATER_SNAPSHOT_FRAMES[name](), name, day, run_id)
                frame = store.read(name, day, run_id)
        except (FrameNotStoredError, FrameDamagedError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return frame

    def _refuse_beyond_horizon(self, name: str, day: str) -> None:
        if day == LATEST:
            return
        days = self.policy.retention_days
        oldest = oldest_kept_day(self.policy.timezone, days)
        if day < oldest:
            raise dg.Failure(
                description=(
                    f"cannot read {name} of {day}: it is beyond the snapshot retention horizon "
                    f"(RECONCILIATION_SNAPSHOT_RETENTION_DAYS={days}: the oldest "
                    f"day kept is {oldest})"
                ),
                metadata={"day": day, "oldest_kept_day": oldest},
                allow_retries=False,
            )


def _as_stored_empty(frame: pd.DataFrame, name: str, day: str, run_id: str) -> pd.DataFrame:
    """`frame` read as that run's (empty) `name`, so what is computed from it names the run."""
    frame.attrs[STORED] = {"frame": name, "day": day, "run_id": run_id, "row_count": 0}
    return frame


def _producing_run(context: dg.InputContext) -> str | None:
    """The run that produced this input in this run's plan (this run, or for a re-execution the
    run of its chain Dagster found it in); None for an asset this run does not materialise."""
    upstream = context.upstream_output
    if upstream is None:
        return None
    try:
        run_id = upstream.run_id
    except dg.DagsterInvariantViolationError:
        return None
    # Dagster fills an upstream it does not produce in this plan with a placeholder run id.
    return None if run_id == _NO_RUN else run_id


def _chosen_run(context: dg.InputContext, store: FrameStore, name: str, day: str) -> str:
    reader = context.step_context.run_id
    if name in SNAPSHOT_FRAMES or name in LATER_SNAPSHOT_FRAMES:
        return store.choose_source(reader, day, list(SNAPSHOT_FRAMES))
    writer = store.latest_writer(name, day)
    if writer is None:
        raise FrameNotStoredError(
            f"no {name} is stored for {day}; only a day whose snapshots were taken (by a "
            "reconciliation run on that day) can be recomputed"
        )
    return writer
