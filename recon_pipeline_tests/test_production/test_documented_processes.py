"""The processes docs/deployment.md tells operators to run, on the deployment's dagster.yaml.

A code server (`dagster code-server start`), dagster-webserver and dagster-daemon loading the
location through docs/examples/workspace-grpc.yaml (its host and port pointed at the test's code
server), all on the PostgreSQL instance; plus the guide's one-off commands.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.processes import (
    READY_S,
    command,
    log_tail,
    start,
    stop,
    wait_for,
    wait_until_loaded,
)
from recon_pipeline_tests.test_production.conftest import ROOT, ProductionHome

pytestmark = pytest.mark.slow

WORKSPACE_EXAMPLE = ROOT / "docs" / "examples" / "workspace-grpc.yaml"
HEARTBEAT_S = 60


def _dagster(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [command("dagster"), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"dagster {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_instance_commands_of_the_guide_work_on_postgres(production_home: ProductionHome) -> None:
    env = {**os.environ, **production_home.env}

    _dagster("instance", "migrate", env=env)
    info = _dagster("instance", "info", env=env)
    _dagster("instance", "concurrency", "set", "recon_fixes", "1", env=env)

    assert "PostgresRunStorage" in info and "PostgresScheduleStorage" in info
    assert production_home.query(
        "SELECT concurrency_key, count(*) FROM concurrency_slots GROUP BY concurrency_key"
    ) == [("recon_fixes", 1)]


def test_code_server_webserver_and_daemon_serve_the_location_from_postgres(
    production_home: ProductionHome, app_membership_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **production_home.env,
        "DATABASE_URL": app_membership_url,
        "RECONCILIATION_PAUSED": "true",
    }
    code_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load(WORKSPACE_EXAMPLE.read_text())
    server = workspace["load_from"][0]["grpc_server"]
    server.update(host="127.0.0.1", port=code_port)
    workspace_path = tmp_path / "workspace.yaml"
    workspace_path.write_text(yaml.safe_dump(workspace))
    logs = {name: tmp_path / f"{name}.log" for name in ("code-server", "webserver", "daemon")}
    processes = []
    try:
        processes.append(
            start(
                [
                    command("dagster"),
                    "code-server",
                    "start",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(code_port),
                    "-m",
                    "recon_pipeline.definitions",
                    "--location-name",
                    server["location_name"],
                ],
                cwd=ROOT,
                env=env,
                log_path=logs["code-server"],
            )
        )

        # The guide's order: the code server first, serving before the others start.
        def code_server_serving() -> bool:
            if processes[0].poll() is not None:
                raise AssertionError(f"the code server exited with code {processes[0].returncode}")
            health = [command("dagster"), "api", "grpc-health-check"]
            check = subprocess.run(
                [*health, "-h", "127.0.0.1", "-p", str(code_port)],
                env=env,
                capture_output=True,
            )
            return check.returncode == 0

        wait_for("the code server to serve", code_server_serving, READY_S, every_s=1)
        # Neither of these two needs the project's settings or secrets.
        plain_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        processes.append(
            start(
                [
                    command("dagster-webserver"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(web_port),
                    "-w",
                    str(workspace_path),
                ],
                cwd=tmp_path,
                env=plain_env,
                log_path=logs["webserver"],
            )
        )
        processes.append(
            start(
                [command("dagster-daemon"), "run", "-w", str(workspace_path)],
                cwd=tmp_path,
                env=plain_env,
                log_path=logs["daemon"],
            )
        )

        names = wait_until_loaded(f"http://127.0.0.1:{web_port}", processes)
        assert names == ["recon_pipeline"]

        def daemons_beating() -> set[str] | None:
            rows = production_home.query("SELECT daemon_type FROM daemon_heartbeats")
            beating = {row[0] for row in rows}
            wanted = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"}
            return beating if wanted <= beating else None

        wait_for("the daemon's heartbeats in PostgreSQL", daemons_beating, HEARTBEAT_S)
    except AssertionError as exc:
        for name, path in logs.items():
            exc.add_note(f"--- {name} log (tail) ---\n{log_tail(path, 30)}")
        raise
    finally:
        for process in reversed(processes):
            stop(process)
