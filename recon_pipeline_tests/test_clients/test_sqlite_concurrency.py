"""SQLite under the multiprocess executor: writers wait for each other, and the membership
snapshot reads one state of the database."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.clients import membership_db
from recon_pipeline.clients.frame_bodies import SqlFrameBodies
from recon_pipeline.clients.frame_store import FrameStore
from recon_pipeline.clients.membership_db import ensure_pipeline_tables, parse_database_url
from recon_pipeline.defs.assets import snapshots
from recon_pipeline.defs.resources import MembershipDbResource
from recon_pipeline.sandbox.demo import seed_membership_db
from recon_pipeline_tests.scenario import scenario_community

# Longer than pysqlite's own default busy timeout (5 s), which a million-row frame outlasts.
HELD_S = 6.0


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = parse_database_url(sqlite_url).create_engine()
    ensure_pipeline_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_frame_write_waits_for_another_processes_long_write(
    engine: sa.Engine, sqlite_url: str
) -> None:
    held = threading.Event()

    def long_write() -> None:
        # Another step's long write: a separate connection holding SQLite's write lock.
        other = parse_database_url(sqlite_url).create_engine()
        try:
            with other.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                held.set()
                threading.Event().wait(HELD_S)
                conn.rollback()
        finally:
            other.dispose()

    store = FrameStore(engine, SqlFrameBodies(engine))
    store.write("snap", "2026-03-01", "run-a", pd.DataFrame({"n": [0]}))  # the table exists
    writer = threading.Thread(target=long_write)
    writer.start()
    held.wait()
    try:
        store.write("snap", "2026-03-01", "run-a", pd.DataFrame({"n": [1, 2, 3]}))
    finally:
        writer.join()

    assert store.read("snap", "2026-03-01", "run-a")["n"].tolist() == [1, 2, 3]


def test_the_membership_snapshot_reads_members_and_teams_as_of_one_moment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = parse_database_url(sqlite_url).create_engine()
    try:
        seed_membership_db(engine, scenario_community())
    finally:
        engine.dispose()
    load_members = membership_db.load_members
    outcome: list[str] = []

    def then_a_team_arrives(conn: sa.Connection) -> object:
        members = load_members(conn)
        # Between the two reads another process adds a team (it may wait a moment for the
        # reader's lock, but not for long).
        writer = sa.create_engine(sqlite_url, connect_args={"timeout": 0.5})
        try:
            with writer.begin() as other:
                other.execute(
                    sa.text(
                        """INSERT INTO "Team" (id, name, "stripeCustomerId", "subscriptionStatus")
                           VALUES ('t_new', 'New', 'cus_new', 'ACTIVE')"""
                    )
                )
            outcome.append("written")
        except sa.exc.OperationalError:
            outcome.append("waited for the reader")
        finally:
            writer.dispose()
        return members

    monkeypatch.setattr(snapshots, "load_members", then_a_team_arrives)

    teams = snapshots.read_membership(MembershipDbResource(database_url=sqlite_url)).teams

    assert outcome == ["waited for the reader"]
    assert "t_new" not in set(teams["id"])
