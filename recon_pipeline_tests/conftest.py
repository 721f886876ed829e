"""Shared fixtures: throwaway SQLite and PostgreSQL databases, a loopback server, a fake clock.

Tests that touch PostgreSQL are marked `postgres` automatically. They are never skipped: if the
cluster cannot start, the fixture raises with the server's log and those tests fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recon_pipeline.sandbox.server import LoopbackServer
from recon_pipeline_tests.loopback import AppSwitch, FakeClock, Loopback
from recon_pipeline_tests.postgres import PostgresServer, running_postgres


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session (it starts in about a second)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database, as `postgresql://user@127.0.0.1:port/db`."""
    return postgres_server.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file under the test's tmp_path."""
    return f"sqlite:///{tmp_path / 'membership.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each supported kind, so one test covers both backends."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    """One server on 127.0.0.1 per test module; each test installs the app it talks to."""
    switch = AppSwitch()
    with LoopbackServer(switch) as server:
        yield Loopback(server, switch)


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock, for an emulator's rate limits and a client's sleeps alike."""
    return FakeClock()
