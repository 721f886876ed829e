"""The daemon dies before a fixing run's verification is due: the verification still runs, once.

Fault matrix: "the daemon restarted before a due verification". On the deployment's instance
(the repository's dagster.yaml, storage in PostgreSQL) a real `dagster-daemon` loads the location
from workspace.yaml; the membership database is PostgreSQL with the original app's schema; Stripe
and Discord are the loopback emulators, threads of this process, so the test reads every role
change Discord received. A fixing run is launched with `recon-pipeline run --auto-fix` (which
runs it on the instance in DAGSTER_HOME, no daemon needed). Once verification_sensor has seen the
run but before it is due, the daemon's whole process group is SIGKILLed; a new daemon must then
launch exactly one verification of the run, and keep launching none on later ticks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorTick,
    InstigatorType,
    TickStatus,
)

from recon_pipeline.defs import run_tags
from recon_pipeline.defs.jobs import RECONCILIATION_JOB
from recon_pipeline.sandbox.demo import Sandbox, running_sandbox
from recon_pipeline_tests.harness import TIMEZONE
from recon_pipeline_tests.processes import command, log_tail, start, stop, wait_for
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    REPORT_ONLY,
    ROLE_CHANGES,
    scenario_community,
)
from recon_pipeline_tests.test_production.conftest import FINISHED, ROOT, ProductionHome

pytestmark = pytest.mark.slow

VERIFICATION_JOB = "verification_job"
SENSOR = "verification_sensor"
# 18 s. The sensor's minimum interval is a quarter of the delay, but at least 5 s: here it ticks
# every 5-10 s, so it sees the fixing run a few seconds after it ends, well before it is due.
DELAY_MINUTES = 0.3
DELAY_S = DELAY_MINUTES * 60
# Deadlines in seconds. Measured on a 2-core box: the daemon's first sensor tick ~10 s after it
# starts, the fixing run (started with it) ~25 s, the kill 4-6 s after the run ended, the
# verification launched 1-7 s after it is due and done ~12 s later, two more ticks within 20 s.
RUN_S = 300
VERIFY_S = 180
TICKS_S = 60
# The sensor must have looked at the fixing run, and the daemon be dead, this long before the
# run's verification is due; otherwise the kill could land after the launch.
MARGIN_S = 3


@dataclass
class Deployment:
    """The production instance, the emulators and the membership database a daemon runs on."""

    instance: dg.DagsterInstance
    sandbox: Sandbox
    membership_url: str
    env: dict[str, str]
    tmp_path: Path
    logs: list[Path] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{name}.log"
        self.logs.append(log_path)
        process = start(argv, cwd=ROOT, env=self.env, log_path=log_path)
        self.processes.append(process)
        return process

    def start_daemon(self, name: str) -> subprocess.Popen[bytes]:
        workspace = str(ROOT / "workspace.yaml")
        return self.start(name, [command("dagster-daemon"), "run", "-w", workspace])

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Add the tail of every process's log to an assertion failing in the block."""
        try:
            yield
        except AssertionError as exc:
            for path in self.logs:
                exc.add_note(f"--- {path.name} (tail) ---\n{log_tail(path, 40)}")
            raise

    def runs(self, job_name: str, tags: dict[str, str] | None = None) -> list[dg.RunRecord]:
        return list(
            self.instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags=tags))
        )

    def failure(self, run_id: str) -> str:
        """What the run's event log says went wrong, for an assertion message."""
        events = self.instance.all_logs(run_id)
        return "\n".join(
            f"{e.dagster_event.event_type_value}: {e.message} {e.dagster_event.event_specific_data}"
            for e in events
            if e.dagster_event is not None and e.dagster_event.is_failure
        )

    def sensor_state(self) -> InstigatorState | None:
        states = self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        return next((s for s in states if s.instigator_name == SENSOR), None)

    def ticks(self, after: float | None = None) -> list[InstigatorTick]:
        state = self.sensor_state()
        if state is None:
            return []
        ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after)
        return [t for t in ticks if t.status != TickStatus.STARTED]

    def app_rows(self, run_id: str) -> dict[str, Any] | None:
        """The run's "ReconciliationRun" row and its recon_pipeline_run row, side by side."""
        with psycopg.connect(self.membership_url) as conn:
            cursor = conn.execute(
                "SELECT r.*, p.job_name, p.partition_key, p.parent_run_id, p.status, p.failure "
                'FROM "ReconciliationRun" r LEFT JOIN recon_pipeline_run p ON p.run_id = r.id '
                "WHERE r.id = %s",
                (run_id,),
            )
            row = cursor.fetchone()
            names = [c.name for c in cursor.description or ()]
        return dict(zip(names, row, strict=True)) if row else None

    def verification_records(self, parent_run_id: str) -> list[str]:
        """Ids of the ReconciliationRun rows with isVerificationRun that verify `parent_run_id`."""
        with psycopg.connect(self.membership_url) as conn:
            rows = conn.execute(
                'SELECT r.id FROM "ReconciliationRun" r '
                "JOIN recon_pipeline_run p ON p.run_id = r.id "
                'WHERE r."isVerificationRun" AND p.parent_run_id = %s',
                (parent_run_id,),
            ).fetchall()
        return [row[0] for row in rows]


@pytest.fixture
def deployment(
    production_home: ProductionHome, app_membership_url: str, tmp_path: Path
) -> Iterator[Deployment]:
    with (
        running_sandbox(scenario_community()) as sandbox,
        dg.DagsterInstance.from_config(str(production_home.home)) as instance,
    ):
        env = {
            **os.environ,
            **sandbox.env(),
            **production_home.env,
            "DATABASE_URL": app_membership_url,
            "RECONCILIATION_TIMEZONE": TIMEZONE,
            "RECONCILIATION_VERIFY_DELAY_MINUTES": str(DELAY_MINUTES),
            "RECONCILIATION_CONFIRM_REMOVALS": "false",  # the one fixing run makes every fix
            # No scheduled run may join in, whatever the time of day.
            "RECONCILIATION_PAUSED": "true",
        }
        deployment = Deployment(instance, sandbox, app_membership_url, env, tmp_path)
        try:
            yield deployment
        finally:
            for process in reversed(deployment.processes):
                stop(process)


def _kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its group (its code server), as a crash would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for("every process of the killed daemon's group to be gone", group_gone, 30, every_s=0.2)


def test_daemon_killed_before_a_due_verification_launches_it_once_after_restart(
    deployment: Deployment,
) -> None:
    with deployment.logs_on_failure():
        _kill_the_daemon_before_the_verification_is_due(deployment)


def _kill_the_daemon_before_the_verification_is_due(d: Deployment) -> None:
    """The scenario: daemon up, fixing run, SIGKILL before due, new daemon, one verification."""
    # The fixing run, on the instance in DAGSTER_HOME; the daemon starts meanwhile.
    daemon = d.start_daemon("daemon-1")
    cli = d.start("recon-pipeline-run", [command("recon-pipeline"), "run", "--auto-fix"])
    assert cli.wait(timeout=RUN_S) == 0, log_tail(d.logs[-1])
    [parent] = d.runs(RECONCILIATION_JOB)
    parent_id = parent.dagster_run.run_id
    assert parent.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert parent.dagster_run.tags[run_tags.FIXES_APPLIED] == "true"
    assert parent.end_time is not None
    due_at = parent.end_time + DELAY_S
    mutations = list(d.sandbox.discord.mutations)
    assert len(mutations) == ROLE_CHANGES
    parent_rows = d.app_rows(parent_id)
    assert parent_rows is not None
    assert parent_rows["issuesFixed"] == len(EXPECTED_ISSUES - REPORT_ONLY)
    assert parent_rows["status"] == "succeeded"
    assert not parent_rows["isVerificationRun"]

    # The sensor has seen the run and is waiting for it to be due; then the daemon crashes.
    def saw_the_run_waiting() -> list[InstigatorTick]:
        assert daemon.poll() is None, f"the daemon exited with code {daemon.returncode}"
        return [
            t
            for t in d.ticks(parent.end_time)
            if t.status == TickStatus.SKIPPED and "not yet" in (t.skip_reason or "")
        ]

    wait_for(
        f"a {SENSOR} tick that saw the fixing run not yet due",
        saw_the_run_waiting,
        max(1.0, due_at - MARGIN_S - time.time()),
        every_s=0.2,
    )
    _kill_process_group(daemon)
    killed_at = time.time()
    assert killed_at < due_at, f"the daemon died {killed_at - due_at:.1f} s after it was due"
    assert d.runs(VERIFICATION_JOB) == []

    # A new daemon verifies the run once it is due.
    d.start_daemon("daemon-2")

    def verified() -> dg.RunRecord | None:
        runs = d.runs(VERIFICATION_JOB)
        return runs[0] if runs and all(r.dagster_run.status in FINISHED for r in runs) else None

    verification = wait_for(f"the verification of run {parent_id}", verified, VERIFY_S)
    run = verification.dagster_run
    assert run.status == dg.DagsterRunStatus.SUCCESS, d.failure(run.run_id)
    assert run.tags[run_tags.PARENT_RUN_ID] == parent_id
    assert run.tags[run_tags.TRIGGERED_BY] == "verification"
    assert run.tags["dagster/sensor_name"] == SENSOR
    assert run.tags["dagster/run_key"] == f"verify-{parent_id}"
    assert verification.create_timestamp.timestamp() >= due_at
    assert verification.end_time is not None

    # Two more ticks of the new daemon launch nothing more.
    def two_more_ticks() -> list[InstigatorTick] | None:
        later = d.ticks(verification.end_time)
        return later if len(later) >= 2 else None

    later = wait_for(f"two more {SENSOR} ticks", two_more_ticks, TICKS_S)
    assert all(not t.run_ids for t in later), [(t.status, t.run_ids) for t in later]
    assert [r.dagster_run.run_id for r in d.runs(VERIFICATION_JOB)] == [run.run_id]
    # Of every tick of both daemons, one launched a run: this one.
    assert [t.run_ids for t in d.ticks() if t.run_ids] == [[run.run_id]]

    # Its app record: a verification of the parent run, which made no role change and left the
    # parent's record as it was.
    assert d.verification_records(parent_id) == [run.run_id]
    record = d.app_rows(run.run_id)
    assert record is not None
    assert record["isVerificationRun"] is True
    assert record["triggeredBy"] == "verification"
    assert record["parent_run_id"] == parent_id
    assert record["status"] == "succeeded"
    assert record["issuesFixed"] == 0
    assert record["issuesFound"] == 0  # none of the 9 fixes was undone
    assert d.sandbox.discord.mutations == mutations
    assert d.app_rows(parent_id) == parent_rows
    [parent_now] = d.runs(RECONCILIATION_JOB)
    assert parent_now.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert parent_now.dagster_run.tags == parent.dagster_run.tags
