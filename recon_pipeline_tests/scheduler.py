"""The scheduler daemon's own iteration, driven with a chosen clock reading."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.controller import create_daemon_grpc_server_registry
from dagster._scheduler.scheduler import launch_scheduled_runs

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def scheduler(
    instance: dg.DagsterInstance, location_name: str
) -> Iterator[Callable[[dt.datetime], None]]:
    """`launch_scheduled_runs` (what dagster-daemon runs every few seconds) against a code
    server for the location, called with the clock reading given instead of the wall clock.

    The block ends only once the code server process has exited, even when the block fails:
    the registry alone signals shutdown without waiting, and a code server still running
    when its handle is collected is a leak the suite reports."""
    target = ModuleTarget(
        module_name="recon_pipeline.definitions",
        attribute=None,
        working_directory=str(ROOT),
        location_name=location_name,
    )
    logger = logging.getLogger("recon_pipeline_tests.scheduler")
    with create_daemon_grpc_server_registry(instance) as registry:
        try:
            with WorkspaceProcessContext(
                instance, target, grpc_server_registry=registry
            ) as workspace:

                def iteration(now: dt.datetime) -> None:
                    list(launch_scheduled_runs(workspace, logger, now.astimezone(dt.UTC), {}))

                yield iteration
        finally:
            registry.shutdown_all_processes()
            registry.wait_for_processes()
