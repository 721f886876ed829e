"""The code location: what it defines, its schedule across DST, and refusing bad settings."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

# No public API lists a schedule's future ticks; this is the iterator the scheduler daemon uses.
from dagster._utils.schedules import schedule_execution_time_iterator

from recon_pipeline.definitions import build_definitions
from recon_pipeline.settings import load_settings
from recon_pipeline_tests.scenario import RECONCILIATION_ASSETS

NEW_YORK = ZoneInfo("America/New_York")


def _defs(**env: str) -> dg.Definitions:
    return build_definitions(load_settings(env))


def test_definitions_load_with_the_stable_names() -> None:
    defs = _defs()
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("reconciliation_job") is not None
    schedule = defs.resolve_schedule_def("daily_reconciliation")
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        "0 3 * * *",
        "America/New_York",
    )
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(RECONCILIATION_ASSETS) <= keys


def _ticks(defs: dg.Definitions, start: dt.datetime, days: int) -> list[tuple[dt.datetime, str]]:
    schedule = defs.resolve_schedule_def("daily_reconciliation")
    ticks = schedule_execution_time_iterator(
        start.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    )
    out = []
    for tick in ticks:
        local = tick.astimezone(NEW_YORK)
        if local >= start + dt.timedelta(days=days):
            break
        with dg.build_schedule_context(
            scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        ) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        out.append((local, request.partition_key))
    return out


@pytest.mark.parametrize(
    "first_day",
    [dt.datetime(2026, 3, 6, tzinfo=NEW_YORK), dt.datetime(2026, 10, 30, tzinfo=NEW_YORK)],
)
def test_one_tick_per_local_day_at_the_hour_across_dst(first_day: dt.datetime) -> None:
    ticks = _ticks(_defs(), first_day, days=5)

    days = [local.date() for local, _ in ticks]
    assert days == [(first_day + dt.timedelta(days=i)).date() for i in range(5)]
    assert all((local.hour, local.minute) == (3, 0) for local, _ in ticks)
    # each run fills the local date on which it runs
    assert [key for _, key in ticks] == [d.isoformat() for d in days]


def test_schedule_honours_hour_and_timezone_settings() -> None:
    defs = _defs(RECONCILIATION_HOUR="22", RECONCILIATION_TIMEZONE="Asia/Tokyo")
    schedule = defs.resolve_schedule_def("daily_reconciliation")
    tick = dt.datetime(2026, 11, 24, 22, tzinfo=ZoneInfo("Asia/Tokyo"))
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 22 * * *", "Asia/Tokyo")
    assert request.partition_key == "2026-11-24"
    assert request.tags["recon/triggered_by"] == "scheduled"


def test_paused_schedule_skips_with_a_reason() -> None:
    defs = _defs(RECONCILIATION_PAUSED="true")
    schedule = defs.resolve_schedule_def("daily_reconciliation")
    with dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 24, 3, tzinfo=NEW_YORK),
        repository_def=defs.get_repository_def(),
    ) as context:
        data = schedule.evaluate_tick(context)
    assert data.run_requests == []
    assert "RECONCILIATION_PAUSED=true" in data.skip_message


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RECONCILIATION_HOUR", "25", "RECONCILIATION_HOUR='25': must be from 0 to 23"),
        ("RECONCILIATION_TIMEZONE", "Mars/Olympus", "is not a known IANA time zone"),
        ("RECONCILIATION_AUTO_FIX", "yes", "RECONCILIATION_AUTO_FIX='yes': must be true or false"),
    ],
)
def test_code_location_refuses_to_load_with_a_bad_setting(
    variable: str, value: str, message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILIATION_", "DISCORD_"))}
    result = subprocess.run(
        [sys.executable, "-c", "import recon_pipeline.definitions"],
        env={**env, variable: value},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "accepted:" in result.stderr


@pytest.mark.parametrize(("env", "expected"), [({}, 4), ({"STRIPE_LIST_CONCURRENCY": "1"}, 1)])
def test_stripe_listing_concurrency_comes_from_the_setting(
    env: dict[str, str], expected: int
) -> None:
    stripe = _defs(**env).resources["stripe"]
    assert stripe.list_concurrency == expected
    with stripe.client() as client:
        assert client._concurrency == expected
