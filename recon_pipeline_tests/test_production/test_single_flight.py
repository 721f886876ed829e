"""Two fixing runs launched at once on the deployment's instance: one fixes, the other waits.

A real `dagster dev` (webserver, daemon and a code server for the location) runs on the
repository's dagster.yaml with its storage in PostgreSQL; the membership database is PostgreSQL
with the original app's schema; Stripe and Discord are the loopback emulators, threads of this
process, so the test reads every role change Discord received. Runs are launched through the
GraphQL client, the way the UI launches them, and waited for by polling with a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_graphql import DagsterGraphQLClient

from recon_pipeline.defs.jobs import FIXING_LOCK_TAG
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.sandbox.demo import Sandbox
from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.harness import TIMEZONE, running_pipeline
from recon_pipeline_tests.processes import (
    command,
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
    scenario_community,
)
from recon_pipeline_tests.test_production.conftest import (
    FINISHED,
    GRAPHQL_CLIENT_WARNING,
    LOCATION,
    REPOSITORY,
    ROOT,
    ProductionHome,
)

pytestmark = [
    pytest.mark.slow,
    GRAPHQL_CLIENT_WARNING,
]

# Deadline in seconds for both runs. Measured on a 2-core box: each run ~20 s.
RUNS_S = 300


@dataclass
class Deployment:
    """`dagster dev` on the production instance, and what it talks to."""

    port: int
    log_path: Path
    sandbox: Sandbox
    membership_url: str


@pytest.fixture
def deployment(
    production_home: ProductionHome,
    app_membership_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Deployment]:
    with running_pipeline(
        scenario_community(), app_membership_url, monkeypatch, seed=False
    ) as pipeline:
        env = {
            **os.environ,
            **pipeline.sandbox.env(),
            **production_home.env,  # running_pipeline pointed DAGSTER_HOME elsewhere
            "DATABASE_URL": app_membership_url,
            "RECONCILIATION_TIMEZONE": TIMEZONE,
            # No scheduled run may join in, whatever the time of day.
            "RECONCILIATION_PAUSED": "true",
        }
        port = free_port()
        log_path = tmp_path / "dagster-dev.log"
        process = start(
            [command("dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,  # workspace.yaml names the code location
            env=env,
            log_path=log_path,
        )
        try:
            wait_until_loaded(f"http://127.0.0.1:{port}", [process])
            yield Deployment(port, log_path, pipeline.sandbox, app_membership_url)
        except AssertionError as exc:
            exc.add_note(f"--- dagster dev log (tail) ---\n{log_tail(log_path)}")
            raise
        finally:
            stop(process)


def test_two_fixing_runs_launched_at_once_run_one_after_the_other_and_fix_once(
    deployment: Deployment, production_home: ProductionHome
) -> None:
    today = local_day(TIMEZONE)

    def client() -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=deployment.port, timeout=60)

    def submit(_: int) -> str:
        # A client per thread: one client's transport serves one request at a time.
        return client().submit_job_execution(
            "reconciliation_job",
            repository_location_name=LOCATION,
            repository_name=REPOSITORY,
            run_config={"ops": {"reconciliation_fixes": {"config": {"auto_fix": True}}}},
            tags={"dagster/partition": today},
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        run_ids = list(pool.map(submit, range(2)))

    seen: dict[str, set[dg.DagsterRunStatus]] = {run_id: set() for run_id in run_ids}
    poller = client()

    def both_finished() -> bool:
        for run_id in run_ids:
            seen[run_id].add(poller.get_run_status(run_id))
        return all(statuses & FINISHED for statuses in seen.values())

    wait_for("both runs to finish", both_finished, RUNS_S)

    with dg.DagsterInstance.from_config(str(production_home.home)) as instance:
        records = {run_id: instance.get_run_record_by_id(run_id) for run_id in run_ids}
    for record in records.values():
        assert record is not None
        status = record.dagster_run.status
        assert status == dg.DagsterRunStatus.SUCCESS, log_tail(deployment.log_path)
        assert record.dagster_run.tags[FIXING_LOCK_TAG] == "fixing"
        assert record.start_time is not None and record.end_time is not None
    first, second = sorted(records.values(), key=lambda r: r.start_time)
    # One ran to its end before the other started; the other waited in the queue meanwhile.
    assert second.start_time >= first.end_time, (
        f"runs overlapped: {first.dagster_run.run_id} {first.start_time}-{first.end_time}, "
        f"{second.dagster_run.run_id} {second.start_time}-{second.end_time}"
    )
    assert dg.DagsterRunStatus.QUEUED in seen[second.dagster_run.run_id]

    # Discord received each role change exactly once, all from the first run, during it.
    mutations = deployment.sandbox.discord.mutations
    assert len(mutations) == ROLE_CHANGES
    assert len({(m.method, m.user_id, m.role_id) for m in mutations}) == ROLE_CHANGES
    assert all(m.status == 204 for m in mutations)
    assert all(first.dagster_run.run_id in (m.reason or "") for m in mutations)
    assert all(first.start_time <= m.time <= first.end_time for m in mutations)
    roles = deployment.sandbox.discord.all_member_roles()
    assert {uid: set(r) for uid, r in roles.items() if uid in ROLES_AFTER_FIX} == ROLES_AFTER_FIX

    # The app's run records: the first fixed everything fixable, the second found only what
    # cannot be fixed and fixed nothing.
    with psycopg.connect(deployment.membership_url) as conn:
        rows = dict(
            conn.execute(
                """SELECT id, "issuesFixed" FROM "ReconciliationRun" WHERE id = ANY(%s)""",
                (run_ids,),
            ).fetchall()
        )
    assert rows == {
        first.dagster_run.run_id: len(EXPECTED_ISSUES - REPORT_ONLY),
        second.dagster_run.run_id: 0,
    }
