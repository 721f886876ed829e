"""The demo and the sandbox as a newcomer meets them: `demo` then `sandbox --ui` shows no failed
run, and SIGTERM stops every process they started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.processes import (
    alive,
    command,
    descendants,
    log_tail,
    start,
    wait_for,
    wait_until_loaded,
)

pytestmark = pytest.mark.slow

_SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 20) { status timestamp } } }
  }
}"""
_RUNS = """
query { runsOrError { ... on Runs { results { runId jobName status } } } }"""
_UNFINISHED = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DATABASE_URL")}
    # Verifications fall due within seconds of the demo's fixing runs.
    env["RECONCILIATION_VERIFY_DELAY_MINUTES"] = "0.05"
    env["HOME"] = str(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"  # the logs show each line as it is printed
    return env


@pytest.fixture(scope="module")
def ui_after_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """`recon-pipeline demo`, then `recon-pipeline sandbox --ui` in the same folder: the UI's
    process, its address and what the demo printed."""
    folder = tmp_path_factory.mktemp("newcomer")
    env = _environment(folder)
    demo = subprocess.run(
        [command("recon-pipeline"), "demo"], cwd=folder, env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    port = free_port()
    log = folder / "sandbox-ui.log"
    argv = [command("recon-pipeline"), "sandbox", "--ui", "--ui-port", str(port),
            "--stripe-port", str(free_port()), "--discord-port", str(free_port())]  # fmt: skip
    process = start(argv, cwd=folder, env=env, log_path=log)
    try:
        wait_until_loaded(f"http://127.0.0.1:{port}", [process])
        yield process, f"http://127.0.0.1:{port}", demo.stdout
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                        timeout=30)  # fmt: skip
    answer.raise_for_status()
    return answer.json()["data"]


def test_the_ui_after_the_demo_shows_no_failed_run(ui_after_demo) -> None:
    _, url, demo_output = ui_after_demo
    demo_runs = set(re.findall(r"^Run ([0-9a-f-]{36}) \(", demo_output, re.MULTILINE))
    assert len(demo_runs) >= 2, demo_output  # the dry run and the fixing run at least
    started = time.time()
    selector = {"repositoryLocationName": "recon_pipeline", "repositoryName": "__repository__",
                "sensorName": "verification_sensor"}  # fmt: skip

    def evaluated_since_start() -> bool:
        sensor = _graphql(url, _SENSOR_TICKS, {"selector": selector})["sensorOrError"]
        ticks = sensor["sensorState"]["ticks"]
        return any(t["timestamp"] > started + 3 for t in ticks)  # after the delay was due

    wait_for("verification_sensor to evaluate the demo's runs", evaluated_since_start, 180)

    def runs_settled() -> tuple[list[dict]] | None:
        runs = _graphql(url, _RUNS)["runsOrError"]["results"]
        return None if any(r["status"] in _UNFINISHED for r in runs) else (runs,)

    [runs] = wait_for("every launched run to finish", runs_settled, 180)
    # `sandbox --ui` starts afresh: the demo's runs are not shown, and nothing run since failed.
    assert demo_runs.isdisjoint(r["runId"] for r in runs)
    assert [r for r in runs if r["status"] == "FAILURE"] == []


def test_sigterm_stops_the_sandbox_ui_and_every_process_it_started(ui_after_demo) -> None:
    process, _, _ = ui_after_demo
    below = descendants(process.pid)
    assert len(below) >= 4  # dagster dev, its webserver, daemon and code server at least

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)

    wait_for("every process of the sandbox to stop", lambda: not alive(below), 10, every_s=0.2)


def test_sigterm_and_ctrl_c_stop_the_sandbox_and_free_its_ports(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    for signum in (signal.SIGTERM, signal.SIGINT):
        stripe_port = free_port()
        argv = [command("recon-pipeline"), "sandbox", "--stripe-port", str(stripe_port),
                "--discord-port", str(free_port())]  # fmt: skip
        process = start(argv, cwd=tmp_path, env=env, log_path=tmp_path / "sandbox.log")

        def serving(port: int = stripe_port) -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/subscriptions").status_code > 0
            except httpx.TransportError:
                return False

        wait_for("the sandbox's Stripe emulator", serving, 120)
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0, log_tail(tmp_path / "sandbox.log")
        assert not serving()


def _demo_runs(folder: Path) -> list[dg.DagsterRun]:
    home = folder / "data" / "demo" / "dagster_home"
    if not (home / "dagster.yaml").exists():
        return []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


@pytest.mark.parametrize(
    ("signum", "moment"),
    [
        (signal.SIGTERM, "as the dry run starts"),
        (signal.SIGTERM, "while the dry run executes"),
        (signal.SIGINT, "while the dry run executes"),  # Ctrl-C
    ],
)
def test_sigterm_or_ctrl_c_stops_the_demo_midway_with_nothing_left_running(
    tmp_path: Path, signum: int, moment: str
) -> None:
    log = tmp_path / "demo.log"
    process = start([command("recon-pipeline"), "demo"], cwd=tmp_path, env=_environment(tmp_path),
                    log_path=log)  # fmt: skip
    wait_for("the demo's first run", lambda: "== 1. Dry run ==" in log.read_text(), 300)
    if moment == "while the dry run executes":
        # Dagster holds the signal handlers while a run executes in the demo's process.
        def executing() -> bool:
            return any(r.status == dg.DagsterRunStatus.STARTED for r in _demo_runs(tmp_path))

        wait_for("the dry run to execute", executing, 120, every_s=0.05)
    below = descendants(process.pid)

    process.send_signal(signum)

    assert process.wait(timeout=10) == 130, log_tail(log)
    assert "Stopped." in log.read_text()
    assert "== 2. Run with fixes ==" not in log.read_text()
    wait_for("every process of the demo to stop", lambda: not alive(below), 10, every_s=0.2)
    assert not any(r.status == dg.DagsterRunStatus.STARTED for r in _demo_runs(tmp_path))
