"""The previous complete run, read back from the frame store (docs/behaviour.md §4): what a
run's removals are confirmed against, and the access exceptions it counted.

No Dagster here: `drift_issues` gives the run's chain and when its snapshots were taken.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from recon_pipeline.clients.frame_store import FrameNotStoredError, FrameStore, StoredFrame
from recon_pipeline.domain.confirmation import StoredDrift, previous_observation
from recon_pipeline.domain.issue_table import PreviousRun
from recon_pipeline.domain.provenance import sources_of_attrs

DRIFT = "drift_issues"
EXCEPTIONS = "access_exceptions"


def stored_drifts(entries: Iterable[StoredFrame]) -> list[StoredDrift]:
    """The catalog's `drift_issues` entries as confirmation.py reads them."""
    return [StoredDrift(e.run_id, e.day, e.attrs) for e in entries]


def find_previous_run(
    store: FrameStore, *, chain: frozenset[str], observed_at: dt.datetime
) -> PreviousRun | None:
    """Of the drift tables other runs stored, the one whose complete snapshots were taken last
    before `observed_at`: its run, day, access exceptions and issues."""
    stored = stored_drifts(store.entries_named(DRIFT))
    found = previous_observation(stored, chain=chain, observed_at=observed_at)
    if found is None:
        return None
    issues = store.read(DRIFT, found.day, found.run_id)
    return PreviousRun(
        found.run_id, found.day, issues, _exceptions_of(store, found), found.observed_at
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
