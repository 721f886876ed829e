"""`snapshot_retention_job` deletes stored frames past the horizon and keeps everything else."""

from __future__ import annotations

import datetime as dt

import pytest

from recon_pipeline.clients.frame_store import open_frame_store
from recon_pipeline.defs.io_managers import SNAPSHOT_FRAMES
from recon_pipeline.defs.partitions import local_day
from recon_pipeline_tests.harness import TIMEZONE, running_pipeline
from recon_pipeline_tests.scenario import scenario_community


def _day(days_ago: int) -> str:
    return (dt.date.fromisoformat(local_day(TIMEZONE)) - dt.timedelta(days=days_ago)).isoformat()


def test_retention_deletes_frames_past_the_horizon_and_keeps_newer_ones_and_run_records(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        today = pipeline.run()
        assert today.success
        # Today's snapshots, filed as two earlier days' daily runs: one past the 35-day
        # horizon, one inside it.
        old, recent = _day(36), _day(35)
        with open_frame_store(pipeline.database_url, None) as store:
            for name in SNAPSHOT_FRAMES:
                frame = store.read(name, local_day(TIMEZONE), today.run_id)
                store.write(name, old, "run-of-the-old-day", frame)
                store.write(name, recent, "run-of-the-recent-day", frame)
        runs_before = pipeline.scalar('SELECT count(*) FROM "ReconciliationRun"')

        defs = pipeline.definitions()
        retention = defs.resolve_job_def("snapshot_retention_job").execute_in_process(
            instance=pipeline.instance, resources=defs.resources
        )

        assert retention.success
        with open_frame_store(pipeline.database_url, None) as store:
            assert store.entries(old) == []
            assert {e.name for e in store.entries(recent)} == set(SNAPSHOT_FRAMES)
            assert len(store.entries(local_day(TIMEZONE))) > len(SNAPSHOT_FRAMES)
        rows_left = pipeline.scalar(
            "SELECT count(*) FROM recon_pipeline_frame_membership_members "
            "WHERE _partition_key = :day",
            day=old,
        )
        assert rows_left == 0
        assert pipeline.scalar('SELECT count(*) FROM "ReconciliationRun"') == runs_before
        [deleted] = [
            e.event_specific_data.metadata
            for e in retention.all_events
            if e.event_type_value == "STEP_OUTPUT"
        ]
        assert deleted["days_deleted"].value == [old]
        assert deleted["oldest_day_kept"].value == recent

        # The day inside the horizon can still be recomputed, from those stored snapshots.
        backfill = pipeline.recompute(recent)
        assert backfill.success
        assert (
            pipeline.record(backfill.run_id)["issuesFound"]
            == pipeline.record(today.run_id)["issuesFound"]
        )
