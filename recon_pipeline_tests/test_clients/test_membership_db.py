"""The membership database client and `recon-pipeline db init`, on SQLite and a real PostgreSQL.

The PostgreSQL tests also run against the original app's schema as `prisma migrate` builds it,
to show the pipeline reads that richer schema as is and never alters it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline import cli
from recon_pipeline.clients.membership_db import (
    APP_TABLES,
    PIPELINE_TABLES,
    DatabaseUrlError,
    init_database,
    load_members,
    load_teams,
    member_table,
    metadata,
    parse_database_url,
    team_table,
)
from recon_pipeline.domain.columns import MemberCol, TeamCol
from recon_pipeline.domain.policy import SeatTier, SubscriptionStatus
from recon_pipeline_tests.app_schema import create_app_schema
from recon_pipeline_tests.postgres import PostgresServer

ALL_TABLE_NAMES = {t.name for t in metadata.sorted_tables}
PIPELINE_TABLE_NAMES = [t.name for t in metadata.sorted_tables if t in PIPELINE_TABLES]
BOOL_COLUMNS = (MemberCol.INTRO_COMPLETED, MemberCol.IS_IN_DEBTOR_STATE)


@contextmanager
def connected(url: str) -> Iterator[sa.Engine]:
    engine = parse_database_url(url).create_engine()
    try:
        yield engine
    finally:
        engine.dispose()


def table_names(url: str, schema: str | None = None) -> set[str]:
    with connected(url) as engine:
        return set(sa.inspect(engine).get_table_names(schema=schema))


@contextmanager
def counting_statements(engine: sa.Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def catalog(url: str, tables: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Everything that defines `tables` in the current schema, and their rows as text.

    Object ids and file nodes are included, so a table dropped and recreated, or rewritten in
    place, shows up as a difference even when its definition reads the same.
    """
    params = {"tables": sorted(tables)}
    queries = {
        "columns": """
            SELECT c.table_name, c.column_name, c.ordinal_position, c.data_type, c.udt_name,
                   c.character_maximum_length, c.datetime_precision, c.is_nullable,
                   c.column_default, c.collation_name,
                   col_description(
                       format('%I.%I', c.table_schema, c.table_name)::regclass, c.ordinal_position
                   )
            FROM information_schema.columns c
            WHERE c.table_schema = current_schema() AND c.table_name = ANY(:tables)
            ORDER BY 1, 3""",
        "indexes": """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = current_schema() AND tablename = ANY(:tables) ORDER BY 1, 2""",
        "constraints": """
            SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
              AND t.relname = ANY(:tables)
            ORDER BY 1, 2""",
        "relations": """
            SELECT r.relname, r.relkind, r.oid::int8, r.relfilenode::int8,
                   obj_description(r.oid, 'pg_class'), r.relacl::text
            FROM pg_class r
            LEFT JOIN pg_index i ON i.indexrelid = r.oid
            LEFT JOIN pg_class t ON t.oid = i.indrelid
            WHERE r.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
              AND coalesce(t.relname, r.relname) = ANY(:tables)
            ORDER BY 1""",
        "triggers": """
            SELECT t.relname, g.tgname, pg_get_triggerdef(g.oid)
            FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
            WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
              AND t.relname = ANY(:tables) AND NOT g.tgisinternal
            ORDER BY 1, 2""",
        "enums": """
            SELECT t.typname, t.oid::int8, array_agg(e.enumlabel ORDER BY e.enumsortorder)
            FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
            WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
            GROUP BY 1, 2 ORDER BY 1""",
    }
    with connected(url) as engine, engine.connect() as conn:
        dump = {
            key: [tuple(r) for r in conn.execute(sa.text(q), params)] for key, q in queries.items()
        }
        for table in sorted(tables):
            quoted = conn.dialect.identifier_preparer.quote_identifier(table)
            dump[f"rows of {table}"] = conn.exec_driver_sql(
                f"SELECT row_to_json(t)::text AS r FROM {quoted} t ORDER BY r"
            ).all()
    return dump


def insert_members_and_teams(
    url: str, members: list[dict[str, Any]], teams: list[dict[str, Any]]
) -> None:
    with connected(url) as engine, engine.begin() as conn:
        if teams:
            conn.execute(team_table.insert(), teams)
        if members:
            conn.execute(member_table.insert(), members)


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts, with every kind of missing value as None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


# --- parse_database_url --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_parse_database_url_maps_app_postgres_urls_to_psycopg3(scheme: str) -> None:
    target = parse_database_url(f"{scheme}://app:pw@db.internal:5433/members?sslmode=require")

    assert target.url.drivername == "postgresql+psycopg"
    assert (target.url.username, target.url.password) == ("app", "pw")
    assert (target.url.host, target.url.port, target.url.database) == (
        "db.internal",
        5433,
        "members",
    )
    assert dict(target.url.query) == {"sslmode": "require"}
    assert target.schema is None


def test_parse_database_url_keeps_sqlalchemy_postgres_url_as_given() -> None:
    target = parse_database_url("postgresql+psycopg://app@localhost/members")

    assert target.url.render_as_string() == "postgresql+psycopg://app@localhost/members"


def test_parse_database_url_turns_prisma_schema_into_search_path_and_drops_prisma_params() -> None:
    target = parse_database_url(
        "postgresql://app@localhost/members?schema=billing&connection_limit=5&pool_timeout=10"
        "&pgbouncer=true&statement_cache_size=0&connect_timeout=7"
    )

    assert target.schema == "billing"
    # libpq's own parameters pass through; Prisma's would make libpq refuse to connect.
    assert dict(target.url.query) == {"connect_timeout": "7"}


@pytest.mark.parametrize(
    ("raw", "database"),
    [
        ("file:./dev.db", "./dev.db"),
        ("file:dev.db", "dev.db"),
        ("file:/var/lib/app/dev.db", "/var/lib/app/dev.db"),
        ("file:./dev.db?connection_limit=1&socket_timeout=10", "./dev.db"),
        ("sqlite:///data/app.sqlite3", "data/app.sqlite3"),
    ],
)
def test_parse_database_url_reads_prisma_and_sqlalchemy_sqlite_forms(
    raw: str, database: str
) -> None:
    target = parse_database_url(raw)

    assert target.url.get_backend_name() == "sqlite"
    assert target.url.database == database
    assert dict(target.url.query) == {}


def test_parse_database_url_prisma_sqlite_params_do_not_reach_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    # The SQLite driver warns about parameters it does not know; warnings are errors here.
    with connected("file:./dev.db?connection_limit=1") as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert (tmp_path / "dev.db").exists()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "DATABASE_URL is empty"),
        ("   ", "DATABASE_URL is empty"),
        ("not a url", "DATABASE_URL is not a database URL"),
        ("mysql://app@localhost/members", "DATABASE_URL uses 'mysql'; accepted: postgresql://"),
        ("mongodb://localhost/members", "DATABASE_URL uses 'mongodb'; accepted: postgresql://"),
        ("postgresql://app@localhost/db?schema=a&schema=b", "DATABASE_URL gives ?schema= more"),
    ],
)
def test_parse_database_url_rejects_unusable_urls_naming_the_variable(
    raw: str, message: str
) -> None:
    with pytest.raises(DatabaseUrlError) as excinfo:
        parse_database_url(raw)

    assert str(excinfo.value).startswith(message)


# Prisma quotes the schema name, so case, spaces and quotes are part of it.
@pytest.mark.parametrize("schema", ["billing", "AppData", "app data", 'we"ird\\name'])
def test_parse_database_url_prisma_schema_selects_that_schema_on_the_server(
    postgres_url: str, schema: str
) -> None:
    create_app_schema(postgres_url, schema=schema)

    with connected(f"{postgres_url}?schema={quote(schema)}") as engine, engine.connect() as conn:
        members = load_members(conn)
        teams = load_teams(conn)

    assert members[MemberCol.ID].tolist() == ["m_owner", "m_seat", "m_unlinked"]
    assert teams[TeamCol.ID].tolist() == ["t_acme"]
    assert table_names(postgres_url) == set()


# --- init_database -------------------------------------------------------------------------------


def test_init_database_creates_every_table_on_an_empty_database_once(database_url: str) -> None:
    with connected(database_url) as engine:
        first = init_database(engine)
    with connected(database_url) as engine:
        second = init_database(engine)

    assert sorted(first) == sorted(ALL_TABLE_NAMES)
    assert second == []
    assert table_names(database_url) == ALL_TABLE_NAMES


def test_init_database_second_run_leaves_the_schema_unchanged(postgres_url: str) -> None:
    with connected(postgres_url) as engine:
        init_database(engine)
    before = catalog(postgres_url, ALL_TABLE_NAMES)

    with connected(postgres_url) as engine:
        init_database(engine)

    assert catalog(postgres_url, ALL_TABLE_NAMES) == before


def test_init_database_uses_prisma_enum_types_on_postgres(postgres_url: str) -> None:
    with connected(postgres_url) as engine:
        init_database(engine)
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text(
                    "SELECT table_name, column_name, data_type, udt_name "
                    "FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND column_name IN ('subscriptionStatus', 'seatTier')"
                )
            ).all()
            labels = dict(
                conn.execute(
                    sa.text(
                        "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
                        "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY 1"
                    )
                ).all()
            )

    assert sorted(map(tuple, columns)) == [
        ("Member", "seatTier", "USER-DEFINED", "SeatTier"),
        ("Member", "subscriptionStatus", "USER-DEFINED", "SubscriptionStatus"),
        ("Team", "subscriptionStatus", "USER-DEFINED", "SubscriptionStatus"),
    ]
    assert labels == {
        "SubscriptionStatus": [s.value for s in SubscriptionStatus],
        "SeatTier": [t.value for t in SeatTier],
    }


def test_init_database_builds_app_tables_as_prisma_does(postgres_server: PostgresServer) -> None:
    prisma_url, pipeline_url = postgres_server.create_database(), postgres_server.create_database()
    create_app_schema(prisma_url, with_rows=False)
    with connected(pipeline_url) as engine:
        init_database(engine)
    app_names = {t.name for t in APP_TABLES}

    prisma, ours = catalog(prisma_url, app_names), catalog(pipeline_url, app_names)

    def types(dump: dict[str, list[tuple[Any, ...]]]) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {(row[0], row[1]): (row[3], row[4], row[6]) for row in dump["columns"]}

    # Same type for every column the pipeline maps; every index and key it creates is Prisma's.
    assert types(ours).items() <= types(prisma).items()
    assert set(ours["indexes"]) <= set(prisma["indexes"])
    assert set(ours["constraints"]) <= set(prisma["constraints"])
    assert [(r[0], r[2]) for r in ours["enums"]] == [(r[0], r[2]) for r in prisma["enums"]]


def test_init_database_on_the_app_database_adds_only_pipeline_tables(postgres_url: str) -> None:
    create_app_schema(postgres_url)
    app_tables = table_names(postgres_url)
    before = catalog(postgres_url, app_tables)

    with connected(postgres_url) as engine:
        created = init_database(engine)

    assert created == PIPELINE_TABLE_NAMES
    assert table_names(postgres_url) == app_tables | set(PIPELINE_TABLE_NAMES)
    assert catalog(postgres_url, app_tables) == before


def test_init_database_on_an_older_app_adds_reconciliation_run(postgres_url: str) -> None:
    create_app_schema(postgres_url, with_reconciliation_run=False)
    app_tables = table_names(postgres_url)
    before = catalog(postgres_url, app_tables)

    with connected(postgres_url) as engine:
        created = init_database(engine)

    assert "ReconciliationRun" not in app_tables
    assert sorted(created) == sorted(["ReconciliationRun", *PIPELINE_TABLE_NAMES])
    assert catalog(postgres_url, app_tables) == before


def test_init_database_in_a_prisma_schema_stays_in_that_schema(postgres_url: str) -> None:
    create_app_schema(postgres_url, schema="App")
    app_tables = table_names(postgres_url, schema="App")
    before = catalog(f"{postgres_url}?schema=App", app_tables)

    with connected(f"{postgres_url}?schema=App") as engine:
        created = init_database(engine)

    assert created == PIPELINE_TABLE_NAMES
    assert set(PIPELINE_TABLE_NAMES) <= table_names(postgres_url, schema="App")
    assert table_names(postgres_url) == set()
    assert catalog(f"{postgres_url}?schema=App", app_tables) == before


# --- load_members / load_teams -------------------------------------------------------------------

MEMBERS = [
    {
        "id": "m1",
        "discordId": "1001",
        "stripeCustomerId": "cus_1",
        "email": "one@example.org",
        "subscriptionStatus": "ACTIVE",
        "seatTier": "OWNER",
        "introCompleted": True,
        "teamId": "t1",
        "isInDebtorState": False,
    },
    {
        "id": "m2",
        "discordId": None,
        "stripeCustomerId": None,
        "email": None,
        "subscriptionStatus": "NONE",
        "seatTier": None,
        "introCompleted": False,
        "teamId": None,
        "isInDebtorState": True,
    },
]
TEAMS = [
    {
        "id": "t1",
        "name": "Acme",
        "stripeCustomerId": "cus_t1",
        "stripeSubscriptionId": None,
        "subscriptionStatus": "PAST_DUE",
    }
]


def test_load_members_returns_member_columns_and_values(database_url: str) -> None:
    with connected(database_url) as engine:
        init_database(engine)
    insert_members_and_teams(database_url, MEMBERS, TEAMS)

    with connected(database_url) as engine, engine.connect() as conn:
        members = load_members(conn)

    assert tuple(members.columns) == MemberCol.ALL
    assert {c: str(members[c].dtype) for c in MemberCol.ALL} == {
        c: "bool" if c in BOOL_COLUMNS else "str" for c in MemberCol.ALL
    }
    assert as_records(members) == [
        dict(zip(MemberCol.ALL, m.values(), strict=True)) for m in MEMBERS
    ]


def test_load_teams_returns_team_columns_and_values(database_url: str) -> None:
    with connected(database_url) as engine:
        init_database(engine)
    insert_members_and_teams(database_url, [], TEAMS)

    with connected(database_url) as engine, engine.connect() as conn:
        teams = load_teams(conn)

    assert tuple(teams.columns) == TeamCol.ALL
    assert {str(dtype) for dtype in teams.dtypes} == {"str"}
    assert as_records(teams) == [dict(zip(TeamCol.ALL, t.values(), strict=True)) for t in TEAMS]


def test_load_members_and_teams_on_an_empty_database_keep_columns_and_dtypes(
    database_url: str,
) -> None:
    with connected(database_url) as engine:
        init_database(engine)
        with engine.connect() as conn:
            members, teams = load_members(conn), load_teams(conn)

    assert (members.shape, teams.shape) == ((0, len(MemberCol.ALL)), (0, len(TeamCol.ALL)))
    assert str(members[MemberCol.IS_IN_DEBTOR_STATE].dtype) == "bool"
    assert str(members[MemberCol.ID].dtype) == str(teams[TeamCol.NAME].dtype) == "str"


def test_load_members_reads_the_app_schema_ignoring_extra_columns(postgres_url: str) -> None:
    create_app_schema(postgres_url)

    with connected(postgres_url) as engine, engine.connect() as conn:
        members, teams = load_members(conn), load_teams(conn)

    assert as_records(members)[1] == {
        MemberCol.ID: "m_seat",
        MemberCol.DISCORD_ID: "1002",
        MemberCol.STRIPE_CUSTOMER_ID: None,
        MemberCol.EMAIL: "seat@example.org",
        MemberCol.SUBSCRIPTION_STATUS: "NONE",
        MemberCol.SEAT_TIER: "TEAM_MEMBER",
        MemberCol.INTRO_COMPLETED: False,
        MemberCol.TEAM_ID: "t_acme",
        MemberCol.IS_IN_DEBTOR_STATE: True,
    }
    assert as_records(teams) == [
        {
            TeamCol.ID: "t_acme",
            TeamCol.NAME: "Acme",
            TeamCol.STRIPE_CUSTOMER_ID: "cus_acme",
            TeamCol.STRIPE_SUBSCRIPTION_ID: "sub_acme",
            TeamCol.SUBSCRIPTION_STATUS: "PAST_DUE",
        }
    ]


@pytest.mark.parametrize("n_members", [3, 3000])
def test_load_members_and_teams_issue_one_statement_each(database_url: str, n_members: int) -> None:
    teams = [{**TEAMS[0], "id": f"t{i:03}", "stripeCustomerId": f"cus_t{i}"} for i in range(50)]
    members = [
        {
            **MEMBERS[i % 2],
            "id": f"m{i:05}",
            "discordId": None if i % 7 == 0 else str(10_000 + i),
            "stripeCustomerId": None if i % 2 else f"cus_{i}",
            "teamId": f"t{i % 50:03}" if i % 3 == 0 else None,
        }
        for i in range(n_members)
    ]
    with connected(database_url) as engine:
        init_database(engine)
    insert_members_and_teams(database_url, members, teams)

    with connected(database_url) as engine, engine.connect() as conn:
        with counting_statements(engine) as member_statements:
            loaded_members = load_members(conn)
        with counting_statements(engine) as team_statements:
            loaded_teams = load_teams(conn)

    assert (len(member_statements), len(team_statements)) == (1, 1)
    assert loaded_members[MemberCol.ID].tolist() == [m["id"] for m in members]
    assert loaded_members[MemberCol.DISCORD_ID].isna().sum() == sum(
        m["discordId"] is None for m in members
    )
    assert len(loaded_teams) == len(teams)


def test_load_members_reads_a_status_outside_the_enum_as_text_on_sqlite(sqlite_url: str) -> None:
    with connected(sqlite_url) as engine:
        init_database(engine)
        with engine.begin() as conn:
            # SQLite has no enum types, so the app (or a hand edit) can store any text.
            conn.exec_driver_sql(
                'INSERT INTO "Member" (id, "subscriptionStatus", "seatTier") '
                "VALUES ('m1', 'FROZEN', 'EMPEROR')"
            )
        with engine.connect() as conn:
            members = load_members(conn)

    assert members.loc[0, MemberCol.SUBSCRIPTION_STATUS] == "FROZEN"
    assert members.loc[0, MemberCol.SEAT_TIER] == "EMPEROR"
    assert str(members[MemberCol.SUBSCRIPTION_STATUS].dtype) == "str"


# --- recon-pipeline db init ----------------------------------------------------------------------


def test_cli_db_init_creates_tables_then_has_nothing_to_do(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)

    first_code = cli.main(["db", "init"])
    first = capsys.readouterr()
    second_code = cli.main(["db", "init"])
    second = capsys.readouterr()

    assert (first_code, second_code) == (0, 0)
    assert first.out.startswith("Created ")
    assert all(name in first.out for name in ALL_TABLE_NAMES)
    assert second.out.startswith("Nothing to do")
    assert first.err == second.err == ""
    assert table_names(database_url) == ALL_TABLE_NAMES


def test_cli_db_init_accepts_the_app_url_form_and_hides_the_password(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test cluster trusts local logins, so any password is accepted and must stay hidden.
    app_form = postgres_url.replace("postgresql://postgres@", "postgres://postgres:s3cret@", 1)
    create_app_schema(postgres_url)
    monkeypatch.setenv("DATABASE_URL", app_form)

    code = cli.main(["db", "init"])
    out = capsys.readouterr().out

    assert code == 0
    assert out.startswith(f"Created {', '.join(PIPELINE_TABLE_NAMES)} in ")
    assert "s3cret" not in out


@pytest.mark.parametrize(
    "raw", ["mysql://app@localhost/members", "not a url", "postgresql://h/db?schema=a&schema=b"]
)
def test_cli_db_init_rejects_a_bad_database_url_with_exit_code_2(
    raw: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", raw)

    code = cli.main(["db", "init"])
    captured = capsys.readouterr()

    assert code == 2
    assert "DATABASE_URL" in captured.err
    assert captured.out == ""


def test_cli_db_init_reports_an_unreachable_database_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bound socket that never listens: connections to it are refused at once.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.setenv("DATABASE_URL", f"postgresql://app:s3cret@127.0.0.1:{port}/members")

        code = cli.main(["db", "init"])

    err = capsys.readouterr().err
    assert code == 1
    assert "DATABASE_URL" in err
    assert "Connection refused" in err
    assert "s3cret" not in err


def test_cli_db_init_defaults_to_a_sqlite_file_under_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    code = cli.main(["db", "init"])
    capsys.readouterr()

    files = list((tmp_path / "data").iterdir())
    assert code == 0
    assert len(files) == 1
    assert table_names(f"sqlite:///{files[0]}") == ALL_TABLE_NAMES


def test_a_failed_connection_is_told_without_the_password() -> None:
    # No loopback server quotes the connection string back; some drivers do.
    target = parse_database_url(
        "postgresql://recon:s3cret-pw@db.example:5432/app?password=s3cret-pw"
    )
    quoted = Exception(
        "could not connect: host=db.example password=s3cret-pw dbname=app\nDETAIL: more lines"
    )
    told = target.failure(sa.exc.OperationalError("SELECT 1", {}, quoted))

    assert "s3cret-pw" not in told and "s3cret-pw" not in target.where
    assert told == "could not connect: host=db.example password=*** dbname=app"
