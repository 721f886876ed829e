"""Daily partitions in the configured time zone (docs/behaviour.md §6, §8).

A run fills the local date on which it takes its snapshots, so today's partition must exist:
`end_offset=1` adds it (by default Dagster's newest partition is the last complete day).
"""

from __future__ import annotations

import dagster as dg

from recon_pipeline.domain.days import local_day

__all__ = ["FIRST_DAY", "daily_partitions", "local_day"]

FIRST_DAY = "2026-01-01"


def daily_partitions(timezone: str) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone=timezone, end_offset=1)
