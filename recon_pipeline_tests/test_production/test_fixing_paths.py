"""Two runs that may fix, launched at the same moment on each launch path: one fixes, once.

At most one run applies fixes at a time, whoever launched it (docs/behaviour.md §4). Each test
starts two fixing runs together on one Dagster instance and one membership database, through
the paths an operator has: two `recon-pipeline run --auto-fix` commands on a fresh
DAGSTER_HOME, a command beside a launch from the UI (GraphQL, against `dagster dev`), and a
command beside the `daily_reconciliation` schedule's tick (its run drained from the queue by the
`dagster dev` daemon). Which run fixes is left to the race; what must hold is the same every
time: exactly one run applies every fix; the other applies none and says why (withheld, naming
the fixing run) or, having taken its snapshots after the fixes, finds only what cannot be
fixed; Discord gets each role change once, with the fixing run's id in its audit reason. A last
test SIGKILLs a fixing step while it holds the fixing lease: once the lease has expired, a new
run applies the remaining changes and no change is made twice.

Every test runs on both backends: "sqlite" (the membership database a SQLite file, DAGSTER_HOME
a fresh folder the command fills with its own instance config) and "postgres" (the membership
database built by the app's migrations, DAGSTER_HOME the repository's dagster.yaml with its
storage in PostgreSQL). Stripe and Discord are the loopback emulators, threads of this process,
so the test reads every role change Discord received.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster_graphql import DagsterGraphQLClient

from recon_pipeline.cli import _INSTANCE_YAML, EXIT_FIXES_WITHHELD
from recon_pipeline.clients.fixing_lease import fixing_mark
from recon_pipeline.clients.membership_db import fixing_lease_table
from recon_pipeline.defs import run_tags
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.sandbox.discord_emulator import RequestRecord
from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.harness import TIMEZONE, Pipeline, running_pipeline
from recon_pipeline_tests.processes import (
    command,
    kill_step_of_latest_run,
    log_tail,
    start,
    stop,
    wait_for,
    wait_until_loaded,
)
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    REPORT_ONLY,
    ROLE_CHANGES,
    ROLES_AFTER_FIX,
    STATUSES_AFTER_FIX,
    issue_subject,
    scenario_community,
)
from recon_pipeline_tests.scheduler import scheduler
from recon_pipeline_tests.test_production.conftest import (
    FINISHED,
    GRAPHQL_CLIENT_WARNING,
    LOCATION,
    REPOSITORY,
    ROOT,
)

pytestmark = [
    pytest.mark.slow,
    GRAPHQL_CLIENT_WARNING,
]

SCHEDULE = "daily_reconciliation"
FIXABLE = EXPECTED_ISSUES - REPORT_ONLY
WITHHELD_CODES = {"lease_held", "fixed_meanwhile"}
# Deadlines in seconds. Measured on a 2-core box: `dagster dev` ready in ~10 s; an in-process
# command ~5 s; two commands with a process per step, at once, ~35 s; the daemon looks at its
# queue every 5 s and a queued run then takes ~15-20 s.
RUNS_S = 300
LEASE_EXPIRY_S = 60
# The killed holder's lease lives this long after its last heartbeat.
LEASE_TTL_S = 3
_RUN_LINE = re.compile(r"^Run (\S+) ", re.MULTILINE)
_log = logging.getLogger(__name__)


# --- the two backends ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """Where the runs keep their records: the membership database and DAGSTER_HOME."""

    name: str
    membership_url: str
    home: Path
    env: dict[str, str]  # DAGSTER_HOME and, on PostgreSQL, DAGSTER_POSTGRES_*
    seed: bool  # whether running_pipeline seeds the membership database

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def prepare_home_for_dagster_dev(self) -> None:
        """`dagster dev` on the embedded default: the instance config `recon-pipeline` writes."""
        if self.name == "sqlite":
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "dagster.yaml").write_text(_INSTANCE_YAML)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        home = tmp_path / "dagster_home"  # not there yet: a fresh DAGSTER_HOME
        return Backend(
            "sqlite",
            f"sqlite:///{tmp_path / 'membership.sqlite3'}",
            home,
            {"DAGSTER_HOME": str(home)},
            seed=True,
        )
    production_home = request.getfixturevalue("production_home")
    return Backend(
        "postgres",
        request.getfixturevalue("app_membership_url"),
        production_home.home,
        dict(production_home.env),
        seed=False,
    )


@pytest.fixture
def pipeline(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(
        scenario_community(), backend.membership_url, monkeypatch, seed=backend.seed
    ) as pipeline:
        yield pipeline


def process_env(backend: Backend, pipeline: Pipeline, **overrides: str) -> dict[str, str]:
    """The environment of every process the test starts: the sandbox, the backend, auto-fix
    on and the schedule paused unless `overrides` say otherwise."""
    return {
        **os.environ,
        **pipeline.sandbox.env(),
        **backend.env,  # running_pipeline pointed DAGSTER_HOME at a throwaway instance
        "DATABASE_URL": backend.membership_url,
        "RECONCILIATION_TIMEZONE": TIMEZONE,
        "RECONCILIATION_AUTO_FIX": "true",
        "RECONCILIATION_PAUSED": "true",
        **overrides,
    }


# --- the processes ----------------------------------------------------------------------------


@dataclass
class Cli:
    """A `recon-pipeline run --auto-fix` process, its stdout and stderr kept apart."""

    name: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def run_id(self) -> str:
        """The run's id, from the report the command prints."""
        match = _RUN_LINE.search(self.stdout)
        assert match, f"{self.name} printed no run report"
        return match.group(1)

    def wait(self) -> int:
        wait_for(f"{self.name} to exit", lambda: self.process.poll() is not None, RUNS_S)
        return self.process.returncode

    def describe(self) -> str:
        return (
            f"--- {self.name} (exit {self.returncode}) stdout ---\n{_tail(self.stdout)}\n"
            f"--- {self.name} stderr ---\n{_tail(self.stderr)}"
        )


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def start_cli(name: str, env: dict[str, str], folder: Path, *options: str) -> Cli:
    """Start `recon-pipeline run --auto-fix [options]` in its own process group."""
    stdout_path, stderr_path = folder / f"{name}.stdout", folder / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [command("recon-pipeline"), "run", "--auto-fix", *options],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    return Cli(name, process, stdout_path, stderr_path)


@dataclass
class DagsterDev:
    port: int
    log_path: Path

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def describe(self) -> str:
        return f"--- dagster dev log (tail) ---\n{log_tail(self.log_path)}"


@contextmanager
def running_dagster_dev(env: dict[str, str], folder: Path) -> Iterator[DagsterDev]:
    """`dagster dev` (webserver, daemon, code server) on the repository's workspace."""
    port = free_port()
    log_path = folder / "dagster-dev.log"
    process = start(
        [command("dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,  # workspace.yaml names the code location
        env=env,
        log_path=log_path,
    )
    dev = DagsterDev(port, log_path)
    try:
        with explained(dev.describe):
            wait_until_loaded(f"http://127.0.0.1:{port}", [process])
        yield dev
    finally:
        stop(process)


@contextmanager
def stopping(*clis: Cli) -> Iterator[None]:
    """Stop the commands' process groups whatever happens (a no-op once they exited)."""
    try:
        yield
    finally:
        for cli in clis:
            stop(cli.process)


@contextmanager
def explained(*evidence: Callable[[], str]) -> Iterator[None]:
    """On a failed assertion, attach what the processes said (enter it before `stopping`, so
    what they said last is in)."""
    try:
        yield
    except AssertionError as exc:
        for describe in evidence:
            exc.add_note(describe())
        raise


# --- what must hold ------------------------------------------------------------------------------


@dataclass
class Launched:
    """One of the two runs: how it was launched and, for a command, its process."""

    how: str
    run_id: str
    cli: Cli | None = None


def wait_for_runs(backend: Backend, run_ids: list[str]) -> None:
    with backend.instance() as instance:

        def finished() -> bool:
            runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
            return all(run is not None and run.status in FINISHED for run in runs)

        wait_for(f"runs {run_ids} to finish", finished, RUNS_S)


def cached_statuses(pipeline: Pipeline) -> dict[tuple[str, str], str]:
    return {
        (table, key): pipeline.scalar(
            f'SELECT CAST("subscriptionStatus" AS TEXT) FROM "{table}" WHERE id = :key', key=key
        )
        for table, key in STATUSES_AFTER_FIX
    }


def managed_roles_after(pipeline: Pipeline) -> dict[str, set[str]]:
    roles = pipeline.sandbox.discord.all_member_roles()
    return {uid: set(r) for uid, r in roles.items() if uid in ROLES_AFTER_FIX}


def issue_keys(record: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["type"], issue_subject(i)) for i in record["issues"]}


def assert_fixed_exactly_once(
    backend: Backend, pipeline: Pipeline, first: Launched, second: Launched
) -> None:
    """Both runs succeeded and left a record; one applied every fix, the other none and says
    why; Discord got each change once, from the fixing run."""
    launched = (first, second)
    with backend.instance() as instance:
        run_records = {r.run_id: instance.get_run_record_by_id(r.run_id) for r in launched}
    dagster_runs: dict[str, dg.DagsterRun] = {}
    for run in launched:
        run_record = run_records[run.run_id]
        assert run_record is not None, f"{run.how} run {run.run_id} is not in the instance"
        dagster_runs[run.run_id] = run_record.dagster_run
        assert run_record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, (
            f"{run.how} run {run.run_id} ended {run_record.dagster_run.status}"
        )
    records = {r.run_id: pipeline.record(r.run_id) for r in launched}
    for run in launched:
        record = records[run.run_id]
        assert record is not None, f"{run.how} run {run.run_id} left no ReconciliationRun row"
        assert record["autoFixEnabled"], f"{run.how} run {run.run_id} calls itself a dry run"
        assert record["status"] == "succeeded", record

    fixed = {r.run_id: records[r.run_id]["issuesFixed"] for r in launched}
    assert sorted(fixed.values()) == [0, len(FIXABLE)], f"issuesFixed per run: {fixed}"
    fixer = next(r for r in launched if fixed[r.run_id] == len(FIXABLE))
    other = second if fixer is first else first
    fixer_record, other_record = records[fixer.run_id], records[other.run_id]
    origin = min(r.start_time or 0.0 for r in run_records.values())

    def span(run: Launched) -> str:
        record = run_records[run.run_id]
        assert record is not None
        return f"+{(record.start_time or 0) - origin:.1f}-{(record.end_time or 0) - origin:.1f} s"

    _log.info(
        "%s: %s run %s (%s) fixed; %s run %s (%s): %s",
        backend.name,
        fixer.how,
        fixer.run_id,
        span(fixer),
        other.how,
        other.run_id,
        span(other),
        other_record["fixes_withheld"] or f"found {sorted(issue_keys(other_record))}",
    )

    # The fixing run fixed everything fixable and was held back by nothing.
    assert fixer_record["fixes_withheld"] is None
    assert issue_keys(fixer_record) == EXPECTED_ISSUES
    assert {
        (i["type"], issue_subject(i)) for i in fixer_record["issues"] if i["outcome"] == "fixed"
    } == FIXABLE
    assert run_tags.FIXES_WITHHELD not in dagster_runs[fixer.run_id].tags
    if fixer.cli:
        assert fixer.cli.returncode == 0

    # The other one applied nothing, and its row says why.
    reason = other_record["fixes_withheld"]
    other_tags = dagster_runs[other.run_id].tags
    if reason:
        # It raced the fixing run: its plan was withheld, naming that run.
        assert fixer.run_id in reason
        assert other_tags.get(run_tags.FIXES_WITHHELD) in WITHHELD_CODES, other_tags
        for issue in other_record["issues"]:
            if (issue["type"], issue_subject(issue)) not in FIXABLE:
                continue
            assert issue["outcome"] == "skipped", issue
            assert reason in (issue["outcomeDetail"] or ""), issue
        if other.cli:
            assert other.cli.returncode == EXIT_FIXES_WITHHELD
            assert f"recon-pipeline: no fix was applied: {reason}" in other.cli.stderr
            assert fixer.run_id in other.cli.stderr
    else:
        # It snapshotted after the fixes: only what cannot be fixed was left.
        assert issue_keys(other_record) == REPORT_ONLY, other_record["issues"]
        assert run_tags.FIXES_WITHHELD not in other_tags
        if other.cli:
            assert other.cli.returncode == 0

    # Discord: each change once, all by the fixing run.
    mutations = pipeline.sandbox.discord.mutations
    assert len(mutations) == ROLE_CHANGES, mutations
    assert all(m.status == 204 for m in mutations), mutations
    assert len({(m.method, m.user_id, m.role_id) for m in mutations}) == ROLE_CHANGES
    assert all(fixer.run_id in (m.reason or "") for m in mutations), mutations
    assert managed_roles_after(pipeline) == ROLES_AFTER_FIX
    assert cached_statuses(pipeline) == STATUSES_AFTER_FIX
    for run in launched:
        if run.cli:
            assert "Traceback" not in run.cli.stderr
            # Both asked to fix: neither report may call its run a dry run.
            assert "dry run" not in run.cli.stdout, run.cli.stdout


# --- the tests ---------------------------------------------------------------------------------


def test_two_commands_at_once_on_a_fresh_home_fix_once(
    backend: Backend, pipeline: Pipeline, tmp_path: Path
) -> None:
    env = process_env(backend, pipeline)
    # The default executor (a process per step) for both commands: the path on which two
    # commands on a fresh DAGSTER_HOME once collided setting up its storage.
    a = start_cli("cli-a", env, tmp_path)
    b = start_cli("cli-b", env, tmp_path)
    with explained(a.describe, b.describe), stopping(a, b):
        a.wait()
        b.wait()
        assert_fixed_exactly_once(
            backend,
            pipeline,
            Launched("CLI a", a.run_id(), a),
            Launched("CLI b", b.run_id(), b),
        )


def test_a_command_and_a_launch_from_the_ui_at_once_fix_once(
    backend: Backend, pipeline: Pipeline, tmp_path: Path
) -> None:
    env = process_env(backend, pipeline)
    backend.prepare_home_for_dagster_dev()
    today = local_day(TIMEZONE)
    with running_dagster_dev(env, tmp_path) as dev:
        client = dev.client()
        # Back to back: the launch from the UI, queued for the daemon, and the command, which
        # takes a few seconds to start its run.
        ui_run_id = client.submit_job_execution(
            "reconciliation_job",
            repository_location_name=LOCATION,
            repository_name=REPOSITORY,
            run_config={"ops": {"reconciliation_fixes": {"config": {"auto_fix": True}}}},
            tags={"dagster/partition": today},
        )
        cli = start_cli("cli", env, tmp_path, "--in-process")
        with explained(dev.describe, cli.describe), stopping(cli):
            cli.wait()
            wait_for_runs(backend, [ui_run_id])
            assert_fixed_exactly_once(
                backend,
                pipeline,
                Launched("CLI", cli.run_id(), cli),
                Launched("GraphQL", ui_run_id),
            )


def test_a_command_and_the_daily_schedule_tick_at_once_fix_once(
    backend: Backend, pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tick is due at the start of the current local hour: a time of today that has passed.
    due = dt.datetime.now(ZoneInfo(TIMEZONE)).replace(minute=0, second=0, microsecond=0)
    # This process's copy of the schedule fires at that hour and is not paused.
    for name, value in process_env(
        backend, pipeline, RECONCILIATION_PAUSED="false", RECONCILIATION_HOUR=str(due.hour)
    ).items():
        monkeypatch.setenv(name, value)
    backend.prepare_home_for_dagster_dev()
    # `dagster dev` drains the run queue. Its own copy of the schedule is paused and set to
    # another hour, and its daemon never moves the schedule's checkpoint past the due time: the
    # tick is this test's to produce.
    dev_env = process_env(
        backend,
        pipeline,
        RECONCILIATION_HOUR=str((due.hour + 12) % 24),
        DAGSTER_SCHEDULE_CHECKPOINT_INTERVAL_SECONDS=str(7 * 24 * 3600),
    )
    with (
        backend.instance() as instance,
        scheduler(instance, LOCATION) as iteration,
        ExitStack() as stack,
    ):
        # First clock reading, an hour before the tick: the schedule's state starts then.
        iteration(due - dt.timedelta(hours=1))
        dev = stack.enter_context(running_dagster_dev(dev_env, tmp_path))
        stack.enter_context(explained(dev.describe))
        # Back to back: the second clock reading, now (past the due time), which makes the tick
        # and queues its run for the daemon, and the command.
        iteration(dt.datetime.now(dt.UTC))
        cli = start_cli("cli", dev_env, tmp_path, "--in-process")
        stack.enter_context(explained(cli.describe))
        stack.enter_context(stopping(cli))
        [state] = [
            s
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
            if s.instigator_name == SCHEDULE
        ]
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        assert [(t.status, t.timestamp) for t in ticks] == [
            (TickStatus.SUCCESS, due.timestamp())
        ], [(t.status, t.timestamp, t.skip_reason, t.error) for t in ticks]
        [scheduled] = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE})
        )
        assert scheduled.tags[run_tags.TRIGGERED_BY] == "scheduled"
        assert scheduled.tags[run_tags.PARTITION] == local_day(TIMEZONE)
        cli.wait()
        wait_for_runs(backend, [scheduled.run_id])
        assert_fixed_exactly_once(
            backend,
            pipeline,
            Launched("CLI", cli.run_id(), cli),
            Launched("scheduled", scheduled.run_id),
        )


def test_a_killed_lease_holder_blocks_fixes_only_until_its_lease_expires(
    backend: Backend, pipeline: Pipeline, tmp_path: Path
) -> None:
    env = process_env(backend, pipeline, RECONCILIATION_LEASE_TTL_SECONDS=str(LEASE_TTL_S))
    discord = pipeline.sandbox.discord
    discord.latency_s = 0.1  # role changes in flight long enough to be cut off
    killed: list[tuple[str, int]] = []

    def applied() -> list[tuple[str, str, str]]:
        return [(m.method, m.user_id, m.role_id) for m in discord.mutations if m.status == 204]

    def kill_on_third_change(request: RequestRecord) -> None:
        # Discord has made the third change; the step dies before hearing the answer.
        if killed or len(applied()) < 3:
            return
        with backend.instance() as instance:
            killed.append(kill_step_of_latest_run(instance, "reconciliation_fixes"))

    # The default executor: the fixing step runs in a process of its own, which is killed.
    discord.after_request = kill_on_third_change
    first = start_cli("cli-killed", env, tmp_path)
    with explained(first.describe), stopping(first):
        first.wait()
    discord.after_request = None
    discord.latency_s = 0.0

    with explained(first.describe):
        assert first.returncode == 1
        assert len(killed) == 1
        killed_run_id = killed[0][0]
        assert len(applied()) == 3
        engine = pipeline.engine()
        try:
            with engine.connect() as conn:
                holder = conn.execute(sa.select(fixing_lease_table.c.holder_run_id)).scalar()
            # Nobody released it: the dead step still holds the lease until it expires.
            assert holder == killed_run_id
            wait_for(
                "the killed run's fixing lease to expire",
                lambda: fixing_mark(engine).active_session is None,
                LEASE_EXPIRY_S,
            )
        finally:
            engine.dispose()

    second = start_cli("cli-after", env, tmp_path, "--in-process")
    with explained(first.describe, second.describe), stopping(second):
        assert second.wait() == 0
        assert "Traceback" not in second.stderr
        record = pipeline.record(second.run_id())
        assert record is not None
        assert record["status"] == "succeeded"
        assert record["fixes_withheld"] is None
        # It acted on fresh snapshots: what the killed run did is no longer drift, the rest is
        # fixed, and only what cannot be fixed is left unfixed.
        assert issue_keys(record) <= EXPECTED_ISSUES
        unfixed = {
            (i["type"], issue_subject(i)) for i in record["issues"] if i["outcome"] != "fixed"
        }
        assert unfixed == REPORT_ONLY, record["issues"]
        assert record["issuesFixed"] == len(record["issues"]) - len(REPORT_ONLY) > 0

        mutations = discord.mutations
        assert all(m.status == 204 for m in mutations), mutations
        assert len(applied()) == len(set(applied())) == ROLE_CHANGES, applied()
        assert all(killed_run_id in (m.reason or "") for m in mutations[:3])
        assert all(second.run_id() in (m.reason or "") for m in mutations[3:])
        assert managed_roles_after(pipeline) == ROLES_AFTER_FIX
        assert cached_statuses(pipeline) == STATUSES_AFTER_FIX
