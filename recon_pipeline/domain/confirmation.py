"""Removal confirmation (docs/behaviour.md §4): a removal is applied only once two runs saw it.

A pure removal (an UNAUTHORIZED_ACCESS or ORPHANED_ACCESS fix, a status downgrade from granting
to non-granting) that the previous complete run did not find as well waits: one bad observation
(a Stripe answer briefly wrong, a member linked to the wrong account for an hour, a webhook not
yet processed) never takes anyone's access away. Grants and swaps never wait.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.fixes import takes_access_away
from recon_pipeline.domain.identity import account_keys
from recon_pipeline.domain.provenance import COMPLETENESS, sources_of_attrs


@dataclass(frozen=True)
class StoredDrift:
    """A drift table in the frame store's catalog: which run stored it, for which day, and
    what it says of itself (the snapshots it rests on, what the completeness check found)."""

    run_id: str
    day: str
    attrs: dict[str, Any]

    @property
    def observed_at(self) -> dt.datetime | None:
        """When its snapshots were taken (the earliest); None when it does not say."""
        taken = [o.taken_at for o in sources_of_attrs(self.attrs) if o and o.taken_at]
        return min(taken) if taken else None

    @property
    def complete(self) -> bool:
        return self.attrs.get(COMPLETENESS) == []


def complete_observations(stored: Iterable[StoredDrift]) -> list[StoredDrift]:
    """The drift tables whose snapshots passed the completeness check and say when they were
    taken, in the order given."""
    return [s for s in stored if s.complete and s.observed_at is not None]


def last_observation(complete: Iterable[StoredDrift]) -> StoredDrift | None:
    """Of complete drift tables (`complete_observations`), the one whose snapshots were taken
    last (of two taken at once, the greater run id, so every reader picks the same one)."""
    return max(complete, key=lambda s: (s.observed_at, s.run_id), default=None)


def previous_observation(
    stored: list[StoredDrift], *, chain: frozenset[str], observed_at: dt.datetime
) -> StoredDrift | None:
    """The previous complete run's drift table: of other runs' tables whose snapshots passed the
    completeness check and were taken before `observed_at`, the one taken last."""
    complete = complete_observations(s for s in stored if s.run_id not in chain)
    return last_observation(s for s in complete if s.observed_at < observed_at)


def awaiting_reason(first_seen_in: str) -> str:
    return f"awaiting confirmation (first seen in run {first_seen_in})"


def removal_keys(issues: pd.DataFrame) -> pd.Series:
    """What makes two runs' removals the same: the account (`identity.account_keys`, as issue
    identity has it: the Discord id as Discord compares it, else the member; for a status, the
    member or team whose column is written), the type, the roles removed and the status
    written. Missing for issues that are no pure removal."""
    removal = takes_access_away(issues)
    frame = issues[removal.to_numpy()]
    removed = frame[IssueCol.ROLES_TO_REMOVE].map(lambda roles: ",".join(roles or ()))
    keys = (
        frame[IssueCol.TYPE].astype("str")
        + "|"
        + account_keys(frame)
        + "|"
        + removed.astype("str")
        + "|"
        + frame[IssueCol.STATUS_FIX].astype("str").fillna("")
    )
    return keys.reindex(issues.index)


def await_confirmation(
    issues: pd.DataFrame, previous: pd.DataFrame | None, *, first_seen_in: str
) -> pd.DataFrame:
    """The issue table with `awaiting_confirmation` set on each pure removal that `previous`
    (the previous complete run's drift table; None when there is none) did not find too.

    An awaiting issue keeps its planned changes, so the next run can match it; the fixing step
    skips them and the guard does not count them.
    """
    frame = issues.copy()
    keys = pa.array(removal_keys(frame).array, type=pa.large_string())
    seen = (
        removal_keys(previous).dropna()
        if previous is not None and len(previous)
        else pd.Series([], dtype="str")
    )
    # Arrow's set lookup: pandas' `isin` on strings walks the values in Python.
    found = pc.is_in(keys, value_set=pa.array(seen.array, type=pa.large_string()))
    waits = pd.Series(
        pc.and_(pc.is_valid(keys), pc.invert(found)).to_numpy(zero_copy_only=False),
        index=frame.index,
    )
    frame[IssueCol.AWAITING_CONFIRMATION] = pd.Series(None, index=frame.index, dtype="str").where(
        ~waits, awaiting_reason(first_seen_in)
    )
    return frame
