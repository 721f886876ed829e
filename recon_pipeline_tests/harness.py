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
    **discord_options: object,
) -> Iterator[Pipeline]:
    """Serve `community` from the emulators (and, with `seed`, the database) during the block."""
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
        yield Pipeline(database_url, sandbox, inst)
