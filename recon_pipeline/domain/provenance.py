"""Where a frame came from, carried with it in `DataFrame.attrs`.

A stored frame is read back with its catalog entry (which run stored it, for which day, how many
rows); a snapshot also says when the outside system was read and what the fixing lease showed
then; a drift table lists the snapshots it was computed from and whether they passed the
completeness check. The fixing step decides from these whether its inputs are its own, whole and
fresh. Everything here is JSON-able, since the frame store keeps `attrs` with the frame.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

STORED = "stored"  # the catalog entry of a loaded frame (set by the frame store)
SNAPSHOT = "snapshot"  # set by a snapshot step on its outputs
SOURCES = "sources"  # the stored frames a derived frame was computed from
COMPLETENESS = "snapshot_problems"  # set on the drift table: why its snapshots look incomplete
DECISION = "fixing"  # set on the fixes frame: what the fixing step decided
PREVIOUS_RUN = "previous_run"  # set on the drift table: the run its removals were confirmed by
LAPSED_EXCEPTIONS = "lapsed_exceptions"  # set on the drift table: exceptions lapsed since then
RESOLVED = "resolved_since_previous_run"  # set on the drift table: the previous run's issues gone


@dataclass(frozen=True)
class FixingMark:
    """The fixing lease as a snapshot began: the newest fixing session by then, and the session
    holding the lease at that moment (None when free)."""

    newest_session: int
    active_session: int | None


@dataclass(frozen=True)
class FrameOrigin:
    """One stored frame a step read."""

    frame: str
    day: str
    run_id: str
    row_count: int
    taken_at: dt.datetime | None = None  # snapshots only: when the system was read (UTC)
    fixing_mark: FixingMark | None = None  # snapshots only

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameOrigin:
        mark = data.get("fixing_mark")
        taken = data.get("taken_at")
        return cls(
            frame=data["frame"],
            day=data["day"],
            run_id=data["run_id"],
            row_count=int(data.get("row_count", 0)),
            taken_at=dt.datetime.fromisoformat(taken) if taken else None,
            fixing_mark=FixingMark(**mark) if mark else None,
        )


def stamp_snapshot(frame: pd.DataFrame, *, taken_at: dt.datetime, mark: FixingMark) -> None:
    """Record on a snapshot frame when it was taken and what the fixing lease showed then."""
    frame.attrs[SNAPSHOT] = {"taken_at": taken_at.isoformat(), "fixing_mark": asdict(mark)}


def origin_of(frame: pd.DataFrame) -> FrameOrigin | None:
    """Where a loaded frame came from; None for a frame that was not read from the store."""
    stored = frame.attrs.get(STORED)
    if not stored:
        return None
    snapshot = frame.attrs.get(SNAPSHOT) or {}
    return FrameOrigin.from_json({**stored, **snapshot})


def set_sources(frame: pd.DataFrame, origins: list[FrameOrigin | None]) -> None:
    """Record the stored frames `frame` was computed from (None: an input of unknown origin)."""
    frame.attrs[SOURCES] = [o.to_json() if o else None for o in origins]


def sources_of(frame: pd.DataFrame) -> list[FrameOrigin | None]:
    return sources_of_attrs(frame.attrs)


def sources_of_attrs(attrs: dict[str, Any]) -> list[FrameOrigin | None]:
    """The sources a stored frame's attrs (its catalog entry) name."""
    return [FrameOrigin.from_json(o) if o else None for o in attrs.get(SOURCES) or []]
