"""The deployment's own `dagster.yaml` on the throwaway PostgreSQL cluster.

`production_home` is a fresh DAGSTER_HOME holding a copy of the repository's `dagster.yaml`, its
storage in a fresh database owned by a role of its own, connected only through the
DAGSTER_POSTGRES_* variables. `app_membership_url` is a membership database built with the
original app's DDL (Prisma's migrations) and holding the scenario community.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from recon_pipeline.domain.columns import MemberCol, TeamCol
from recon_pipeline.sandbox.community import Community
from recon_pipeline_tests.app_schema import create_app_schema
from recon_pipeline_tests.postgres import PostgresServer
from recon_pipeline_tests.scenario import scenario_community

ROOT = Path(__file__).resolve().parents[2]
DAGSTER_YAML = ROOT / "dagster.yaml"
LOCATION = "recon_pipeline"
REPOSITORY = "__repository__"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
# dagster_graphql's client still calls gql's execute() the old way (dagster-graphql 1.13.27,
# gql 4); it works, and the warning is theirs to fix.
GRAPHQL_CLIENT_WARNING = pytest.mark.filterwarnings(
    "ignore:Using variable_values and operation_name arguments:DeprecationWarning"
)
# Dagster's storage gets a role of its own; a password with URL-special characters checks that
# it reaches the server intact (the test cluster trusts loopback logins, so it is not verified).
STORAGE_ROLE_PASSWORD = "s3cret:p@ss/w%rd"
_numbers = itertools.count()


@dataclass(frozen=True)
class ProductionHome:
    """A DAGSTER_HOME with the repository's dagster.yaml and the storage database behind it."""

    home: Path
    storage_url: str  # the storage database, as the test cluster's superuser
    env: dict[str, str]  # DAGSTER_HOME and DAGSTER_POSTGRES_*

    def query(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.storage_url) as conn:
            return conn.execute(statement, params).fetchall()


@pytest.fixture
def production_home(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> ProductionHome:
    n = next(_numbers)
    role, dbname = f"dagster_storage_{n}", f"dagster_storage_{n}"
    with postgres_server.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(STORAGE_ROLE_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(role)
            )
        )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_USER": role,
        "DAGSTER_POSTGRES_PASSWORD": STORAGE_ROLE_PASSWORD,
        "DAGSTER_POSTGRES_HOST": postgres_server.host,
        "DAGSTER_POSTGRES_PORT": str(postgres_server.port),
        "DAGSTER_POSTGRES_DB": dbname,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ProductionHome(home, postgres_server.url(dbname), env)


def seed_app_database(url: str, community: Community) -> None:
    """Write `community`'s members and teams into a database built by the app's migrations.

    The app's schema is stricter than what the pipeline maps: every member needs an email and
    `updatedAt`, every team an owner who is a member (`"Team"."ownerId"`, unique). Members go in
    first without their team, then the teams (owned by their first member), then the links.
    """
    members = _records(community.members)
    teams = _records(community.teams)
    owners: dict[str, str] = {}
    for m in members:
        if m[MemberCol.TEAM_ID] is not None:
            owners.setdefault(m[MemberCol.TEAM_ID], m[MemberCol.ID])
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    with psycopg.connect(url) as conn:
        for m in members:
            conn.execute(
                """INSERT INTO "Member" ("id", "email", "discordId", "stripeCustomerId",
                       "subscriptionStatus", "seatTier", "introCompleted", "isInDebtorState",
                       "updatedAt")
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    m[MemberCol.ID],
                    m[MemberCol.EMAIL],
                    m[MemberCol.DISCORD_ID],
                    m[MemberCol.STRIPE_CUSTOMER_ID],
                    m[MemberCol.SUBSCRIPTION_STATUS],
                    m[MemberCol.SEAT_TIER],
                    bool(m[MemberCol.INTRO_COMPLETED]),
                    bool(m[MemberCol.IS_IN_DEBTOR_STATE]),
                    now,
                ),
            )
        for t in teams:
            conn.execute(
                """INSERT INTO "Team" ("id", "name", "stripeCustomerId", "stripeSubscriptionId",
                       "subscriptionStatus", "ownerId", "updatedAt")
                   VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                (
                    t[TeamCol.ID],
                    t[TeamCol.NAME],
                    t[TeamCol.STRIPE_CUSTOMER_ID],
                    t[TeamCol.STRIPE_SUBSCRIPTION_ID],
                    t[TeamCol.SUBSCRIPTION_STATUS],
                    owners[t[TeamCol.ID]],
                    now,
                ),
            )
        for m in members:
            if m[MemberCol.TEAM_ID] is not None:
                conn.execute(
                    """UPDATE "Member" SET "teamId" = %s WHERE "id" = %s""",
                    (m[MemberCol.TEAM_ID], m[MemberCol.ID]),
                )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    frame = frame.astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


@pytest.fixture
def app_membership_url(postgres_url: str) -> Iterator[str]:
    """A membership database made by the app's own migrations, holding the scenario community."""
    create_app_schema(postgres_url, with_rows=False)
    seed_app_database(postgres_url, scenario_community())
    yield postgres_url
