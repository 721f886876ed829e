"""The `recon-pipeline` command as an operator runs it: a separate process, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from recon_pipeline.domain.policy import DriftType
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, ROLE_CHANGES, scenario_community

ROOT = Path(__file__).resolve().parents[1]


def _command(
    *args: str, cwd: Path, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the command as an operator would; DAGSTER_HOME unset so the default is used."""
    base = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", *drop)}
    return subprocess.run(
        [sys.executable, "-m", "recon_pipeline.cli", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as p:
        yield p


@pytest.mark.slow
def test_run_uses_the_multiprocess_executor_and_fixes_with_auto_fix(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    dry = _command("run", cwd=tmp_path)

    assert dry.returncode == 0, dry.stderr
    assert f"{len(EXPECTED_ISSUES)} issue(s) found, 0 fixed" in dry.stdout
    assert "(manual, dry run (auto-fix off))" in dry.stdout
    assert pipeline.sandbox.discord.mutations == []

    fixing = _command("run", "--auto-fix", cwd=tmp_path)

    assert fixing.returncode == 0, fixing.stderr
    assert f"{len(EXPECTED_ISSUES)} issue(s) found, {len(EXPECTED_ISSUES) - 1} fixed" in (
        fixing.stdout
    )
    assert len(pipeline.sandbox.discord.mutations) == ROLE_CHANGES
    # The runs went to the default instance in ./dagster_home, every step in its own process.
    assert "telemetry" in (tmp_path / "dagster_home" / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        assert {run.tags["recon/triggered_by"] for run in runs} == {"manual"}
        step_pids = {
            entry.dagster_event.pid
            for entry in instance.all_logs(runs[0].run_id)
            if entry.is_dagster_event and entry.dagster_event.step_key
        }
    assert len(step_pids) >= 3


def test_run_exits_non_zero_when_the_run_fails(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.sandbox.stripe.fail_next(20, status=500, should_retry=False)

    result = _command("run", "--auto-fix", "--in-process", cwd=tmp_path)

    assert result.returncode == 1
    assert ": failed" in result.stdout
    assert "Stripe snapshot incomplete" in result.stdout
    assert pipeline.sandbox.discord.mutations == []


def test_run_names_the_missing_secrets_before_starting(tmp_path: Path) -> None:
    result = _command(
        "run", cwd=tmp_path, drop=("STRIPE_SECRET_KEY", "DISCORD_BOT_TOKEN", "DISCORD_GUILD_ID")
    )

    assert result.returncode == 2
    assert "STRIPE_SECRET_KEY, DISCORD_BOT_TOKEN, DISCORD_GUILD_ID must be set" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dagster_home").exists()


def test_run_refuses_bad_settings_before_starting(tmp_path: Path) -> None:
    result = _command("run", cwd=tmp_path, env={"RECONCILIATION_HOUR": "25"})

    assert result.returncode == 2
    assert "RECONCILIATION_HOUR='25': must be from 0 to 23" in result.stderr
    assert not (tmp_path / "dagster_home").exists()


@pytest.mark.slow
def test_demo_runs_on_a_fresh_checkout_with_no_configuration(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "STRIPE_", "DISCORD_", "RECONCILIATION_", "DAGSTER_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "recon_pipeline.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    dry, fixing, again = result.stdout.split("== ")[1:4]
    for kind in DriftType:
        assert f"{kind.value}:" in dry
    assert "0 fixed" in dry and "auto-fix on" in fixing
    assert "1 removal(s) await confirmation" in fixing
    assert "NOT_IN_GUILD" in again
    assert "MISSING_ACCESS" not in again and "STALE_DATABASE_STATUS" not in again
    assert (tmp_path / "data" / "demo" / "membership.sqlite3").exists()


@pytest.mark.parametrize("command", ["demo", "sandbox"])
@pytest.mark.parametrize("package", ["starlette", "uvicorn"])
def test_sandbox_commands_without_the_sandbox_extra_say_what_to_install(
    command: str, package: str, tmp_path: Path
) -> None:
    # A production install leaves the emulators' server packages out; hiding one from the
    # import system is what such an install looks like to the command.
    hide_and_run = (
        f"import sys; sys.modules[{package!r}] = None; "
        f"from recon_pipeline.cli import main; sys.exit(main([{command!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_and_run],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert f"need {package!r}" in result.stderr
    assert "pip install 'recon_pipeline[sandbox]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing set up before the refusal
