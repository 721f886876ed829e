"""The repository's dagster.yaml, on a real PostgreSQL: runs, events and schedule ticks land there.

The membership database is PostgreSQL too, built with the original app's migrations.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster_postgres import (
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

from recon_pipeline.cli import _INSTANCE_YAML
from recon_pipeline.defs.jobs import FIXING_LOCK_TAG, reconciliation_job, verification_job
from recon_pipeline.defs.partitions import local_day
from recon_pipeline_tests.harness import TIMEZONE, running_pipeline
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    RECONCILIATION_ASSETS,
    REPORT_ONLY,
    ROLE_CHANGES,
    STATUSES_AFTER_FIX,
    scenario_community,
)
from recon_pipeline_tests.scheduler import scheduler
from recon_pipeline_tests.test_production.conftest import DAGSTER_YAML, LOCATION, ProductionHome

POSTGRES_VARIABLES = {
    "username": "DAGSTER_POSTGRES_USER",
    "password": "DAGSTER_POSTGRES_PASSWORD",
    "hostname": "DAGSTER_POSTGRES_HOST",
    "port": "DAGSTER_POSTGRES_PORT",
    "db_name": "DAGSTER_POSTGRES_DB",
}


# --- the file itself ---------------------------------------------------------------------------


def test_dagster_yaml_validates_and_reads_its_connection_only_from_the_environment(
    production_home: ProductionHome,
) -> None:
    config, custom_class = dagster_instance_config(str(production_home.home))

    assert custom_class is None
    raw = yaml.safe_load(DAGSTER_YAML.read_text())
    postgres_db = raw["storage"]["postgres"]["postgres_db"]
    assert postgres_db.pop("scheme") == "postgresql+psycopg2"
    assert postgres_db == {key: {"env": name} for key, name in POSTGRES_VARIABLES.items()}
    assert config["telemetry"] == {"enabled": False}
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 1,
        "retry_on_asset_or_op_failure": False,
    }
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": FIXING_LOCK_TAG, "limit": 1}
    ]
    # The tag the queue limits is the one both fixing jobs carry.
    for job in (reconciliation_job, verification_job):
        assert FIXING_LOCK_TAG in job.tags


def test_instance_from_dagster_yaml_uses_postgres_and_the_queue(
    production_home: ProductionHome,
) -> None:
    with dg.DagsterInstance.get() as instance:
        assert instance.root_directory == str(production_home.home)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert limits == [{"key": FIXING_LOCK_TAG, "limit": 1}]
    # Dagster created its tables in the storage database, owned by the storage role.
    owners = dict(
        production_home.query(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s", "public"
        )
    )
    assert {"runs", "run_tags", "event_logs", "job_ticks", "instigators"} <= set(owners)
    assert set(owners.values()) == {production_home.env["DAGSTER_POSTGRES_USER"]}


def test_embedded_default_instance_stays_on_sqlite(tmp_path) -> None:
    (tmp_path / "dagster.yaml").write_text(_INSTANCE_YAML)

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
    assert "postgres" not in _INSTANCE_YAML


# --- a real run and a real schedule tick ------------------------------------------------------


@pytest.mark.slow
def test_reconciliation_job_on_the_postgres_instance_records_runs_and_events_there(
    production_home: ProductionHome,
    app_membership_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recon_pipeline.definitions import get_reconciliation_job

    today = local_day(TIMEZONE)
    with (
        running_pipeline(
            scenario_community(), app_membership_url, monkeypatch, seed=False
        ) as pipeline,
        dg.DagsterInstance.from_config(str(production_home.home)) as instance,
    ):
        # (running_pipeline points DAGSTER_HOME at a throwaway instance: load this one by path.)
        # The job's own executor (a process per step): each step reloads this instance from
        # DAGSTER_HOME and the DAGSTER_POSTGRES_* variables it inherits.
        result = dg.execute_job(
            dg.reconstructable(get_reconciliation_job),
            instance=instance,
            tags={"dagster/partition": today},
            run_config={"ops": {"reconciliation_fixes": {"config": {"auto_fix": True}}}},
        )

        assert result.success
        run_id = result.run_id
        assert len(pipeline.sandbox.discord.mutations) == ROLE_CHANGES
        record = pipeline.record(run_id)

    # Dagster's side, read straight from its PostgreSQL tables.
    assert production_home.query(
        "SELECT pipeline_name, status, partition FROM runs WHERE run_id = %s", run_id
    ) == [("reconciliation_job", "SUCCESS", today)]
    tags = dict(production_home.query("SELECT key, value FROM run_tags WHERE run_id = %s", run_id))
    assert tags[FIXING_LOCK_TAG] == "fixing"
    events = dict(
        production_home.query(
            """SELECT dagster_event_type, count(*) FROM event_logs
               WHERE run_id = %s GROUP BY dagster_event_type""",
            run_id,
        )
    )
    # (stored under Dagster's legacy names: RUN_START is "PIPELINE_START")
    assert events[dg.DagsterEventType.RUN_START.value] == 1
    assert events[dg.DagsterEventType.RUN_SUCCESS.value] == 1
    assert events[dg.DagsterEventType.STEP_SUCCESS.value] >= 6
    assert dg.DagsterEventType.STEP_FAILURE.value not in events
    materialized = production_home.query(
        """SELECT asset_key FROM event_logs
           WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'""",
        run_id,
    )
    assert sorted(dg.AssetKey.from_db_string(row[0]).path[-1] for row in materialized) == sorted(
        RECONCILIATION_ASSETS
    )

    # The app's side: its own tables, as its migrations made them.
    assert record is not None
    assert record["issuesFound"] == len(EXPECTED_ISSUES)
    assert record["issuesFixed"] == len(EXPECTED_ISSUES - REPORT_ONLY)
    with psycopg.connect(app_membership_url) as conn:
        for (table, key), status in STATUSES_AFTER_FIX.items():
            row = conn.execute(
                f'SELECT "subscriptionStatus"::text FROM "{table}" WHERE id = %s', (key,)
            ).fetchone()
            assert row == (status,)


@pytest.mark.slow
def test_daily_schedule_tick_lands_in_postgres_and_its_run_waits_in_the_queue(
    production_home: ProductionHome,
    app_membership_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_pipeline(scenario_community(), app_membership_url, monkeypatch, seed=False):
        monkeypatch.setenv("RECONCILIATION_HOUR", "3")
        monkeypatch.setenv("RECONCILIATION_PAUSED", "false")
        tz = ZoneInfo(TIMEZONE)
        today = dt.datetime.now(tz).date()
        due = dt.datetime.combine(today, dt.time(3), tz)
        # The scheduler daemon's own iteration (`launch_scheduled_runs`, what dagster-daemon
        # runs every few seconds) against a real code server for the location, called with two
        # clock readings instead of the wall clock: before 03:00 it only records the schedule's
        # state; after 03:00 it evaluates the 03:00 tick, stores it and submits its run.
        with (
            dg.DagsterInstance.from_config(str(production_home.home)) as instance,
            scheduler(instance, LOCATION) as iteration,
        ):
            for now in (due - dt.timedelta(hours=1), due + dt.timedelta(minutes=5)):
                iteration(now)

    ticks = production_home.query("SELECT status, timestamp FROM job_ticks")
    assert ticks == [
        ("SUCCESS", dt.datetime.fromtimestamp(due.timestamp(), dt.UTC).replace(tzinfo=None))
    ]
    runs = production_home.query("SELECT run_id, pipeline_name, status, partition FROM runs")
    assert [r[1:] for r in runs] == [("reconciliation_job", "QUEUED", today.isoformat())]
    tags = dict(
        production_home.query("SELECT key, value FROM run_tags WHERE run_id = %s", runs[0][0])
    )
    assert tags["dagster/schedule_name"] == "daily_reconciliation"
    assert tags["recon/triggered_by"] == "scheduled"
    assert tags[FIXING_LOCK_TAG] == "fixing"
    states = production_home.query("SELECT instigator_type, status FROM instigators")
    assert ("SCHEDULE", "DECLARED_IN_CODE") in states
