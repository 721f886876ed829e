"""Daily partitions in the configured time zone (docs/behaviour.md §6, §8).

A run fills the local date on which it takes its snapshots, so today's partition must exist:
`end_offset=1` adds it (by default Dagster's newest partition is the last complete day).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

FIRST_DAY = "2026-01-01"


def daily_partitions(timezone: str) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone=timezone, end_offset=1)


def local_day(timezone: str, at: dt.datetime | None = None) -> str:
    """The partition key of the local calendar day at `at` (default: now)."""
    moment = at or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    return moment.astimezone(ZoneInfo(timezone)).date().isoformat()
