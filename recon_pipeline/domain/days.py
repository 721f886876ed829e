"""Local calendar days: the key of a daily partition (docs/behaviour.md §6)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def local_day(timezone: str, at: dt.datetime | None = None) -> str:
    """The partition key of the local calendar day at `at` (default: now)."""
    moment = at or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    return moment.astimezone(ZoneInfo(timezone)).date().isoformat()
