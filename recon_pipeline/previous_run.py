"""The previous complete run, read back from the frame store (docs/behaviour.md §4): what a
run's removals are confirmed against, and the access exceptions it counted.

No Dagster here: `drift_issues` gives the run's chain and when its snapshots were taken.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from recon_pipeline.clients.frame_store import FrameNotStoredError, FrameStore
from recon_pipeline.domain.confirmation import StoredDrift, previous_observation
from recon_pipeline.domain.issue_table import PreviousRun
from recon_pipeline.domain.provenance import sources_of_attrs

DRIFT = "drift_issues"
EXCEPTIONS = "access_exceptions"


def find_previous_run(
    store: FrameStore, *, chain: frozenset[str], observed_at: dt.datetime, with_issues: bool
) -> PreviousRun | None:
    """Of the drift tables other runs stored, the one whose complete snapshots were taken last
    before `observed_at`: its run, day and access exceptions, and (`with_issues`) its issues."""
    stored = [StoredDrift(e.run_id, e.day, e.attrs) for e in store.entries_named(DRIFT)]
    found = previous_observation(stored, chain=chain, observed_at=observed_at)
    if found is None:
        return None
    issues = store.read(DRIFT, found.day, found.run_id) if with_issues else None
    return PreviousRun(
        found.run_id, found.day, _exceptions_of(store, found), issues, found.observed_at
    )


def _exceptions_of(store: FrameStore, previous: StoredDrift) -> pd.DataFrame | None:
    """The access exceptions the run snapshotted; None when it predates them."""
    for origin in sources_of_attrs(previous.attrs):
        if origin is not None and origin.frame == EXCEPTIONS:
            try:
                return store.read(origin.frame, origin.day, origin.run_id)
            except FrameNotStoredError:  # deleted meanwhile: no lapse can be told
                return None
    return None
