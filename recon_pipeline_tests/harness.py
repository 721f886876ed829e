"""Run the real job in-process against a seeded database and the emulators on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from recon_pipeline.clients.membership_db import parse_database_url, read_run_record
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.sandbox.community import Community
from recon_pipeline.sandbox.demo import Sandbox, running_sandbox, seed_membership_db
from recon_pipeline.settings import load_settings

TIMEZONE = "America/New_York"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def reconciliation_job_from_environment(environment: str = "") -> dg.JobDefinition:
    """For re-executions in tests: the job built from the settings in the environment now
    (the code location's `defs` keeps those of its first import). Dagster keeps the last
    reconstructed job, keyed by how it is reconstructed: `environment` names the settings, so
    another test's job is never reused."""
    from recon_pipeline.definitions import build_definitions

    return build_definitions(load_settings()).resolve_job_def("reconciliation_job")


@dataclass
class Pipeline:
    """A seeded community, its sandbox and a Dagster instance to run the job on."""

    database_url: str
    sandbox: Sandbox
    instance: dg.DagsterInstance

    def definitions(self) -> dg.Definitions:
        from recon_pipeline.definitions import build_definitions

        return build_definitions(load_settings())

    def run(
        self,
        *,
        auto_fix: bool | None = None,
        override_guard: bool = False,
        partition: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        config: dict[str, Any] = {"override_guard": override_guard}
        if auto_fix is not None:
            config["auto_fix"] = auto_fix
        job = self.definitions().resolve_job_def("reconciliation_job")
        return job.execute_in_process(
            instance=self.instance,
            partition_key=partition or local_day(TIMEZONE),
            run_config={"ops": {"reconciliation_fixes": {"config": config}}},
            tags=tags,
            raise_on_error=False,
        )

    def recompute(self, day: str) -> dg.ExecuteInProcessResult:
        """Recompute `day` from stored snapshots, as a backfill of the assets after the
        snapshots (or the UI's "Materialize" on them) does: an asset-graph run."""
        defs = self.definitions()
        return dg.materialize(
            list(defs.assets),
            selection=["drift_issues", "reconciliation_fixes", "reconciliation_run"],
            instance=self.instance,
            partition_key=day,
            resources=defs.resources,
            raise_on_error=False,
        )

    def reexecute(
        self,
        parent_run_id: str,
        steps: list[str],
        *,
        auto_fix: bool | None = None,
    ) -> dg.ExecutionResult:
        """Re-execute only `steps` of `parent_run_id`, in this process, as the UI's
        "Re-execute selected" does (the parent's partition; its config unless `auto_fix`)."""
        parent = self.instance.get_run_by_id(parent_run_id)
        assert parent is not None
        config: dict[str, Any] = {**(parent.run_config or {}), **IN_PROCESS}
        if auto_fix is not None:
            config["ops"] = {"reconciliation_fixes": {"config": {"auto_fix": auto_fix}}}
        job = dg.build_reconstructable_job(
            __name__,
            reconciliation_job_from_environment.__name__,
            reconstructable_kwargs={"environment": f"{self.database_url} {self.sandbox.env()}"},
        )
        return dg.execute_job(
            job,
            instance=self.instance,
            run_config=config,
            tags={"dagster/partition": parent.tags["dagster/partition"]},
            reexecution_options=dg.ReexecutionOptions(
                parent_run_id=parent_run_id, step_selection=steps
            ),
            raise_on_error=False,
        )

    def engine(self) -> sa.Engine:
        return parse_database_url(self.database_url).create_engine()

    def record(self, run_id: str) -> dict[str, Any] | None:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return read_run_record(conn, run_id)
        finally:
            engine.dispose()

    def execute(self, sql: str, **params: object) -> None:
        engine = self.engine()
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(sql), params)
        finally:
            engine.dispose()

    def scalar(self, sql: str, **params: object) -> Any:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql), params).scalar()
        finally:
            engine.dispose()


@contextmanager
def running_pipeline(
    community: Community,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    seed: bool = True,
    confirm_removals: bool = False,
    **discord_options: object,
) -> Iterator[Pipeline]:
    """Serve `community` from the emulators (and, with `seed`, the database) during the block.

    Removals apply on first sight unless `confirm_removals`: most tests here are about other
    parts of fixing; the confirmation tests turn it on, as deployments have it by default.
    """
    if seed:
        engine = parse_database_url(database_url).create_engine()
        try:
            seed_membership_db(engine, community)
        finally:
            engine.dispose()
    with running_sandbox(community, **discord_options) as sandbox, dg.instance_for_test() as inst:
        for name, value in sandbox.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("RECONCILIATION_TIMEZONE", TIMEZONE)
        monkeypatch.setenv("RECONCILIATION_CONFIRM_REMOVALS", str(confirm_removals).lower())
        yield Pipeline(database_url, sandbox, inst)
