"""The membership database: the original app's tables, the pipeline's own tables, and reads.

The app's tables are mapped exactly as Prisma names them (quoted CamelCase) so the pipeline works
unchanged on the original app's database. The pipeline never alters or drops them; what it needs
beyond them lives in its own tables, all prefixed `recon_pipeline_`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from recon_pipeline.domain.columns import MemberCol, TeamCol
from recon_pipeline.domain.policy import SeatTier, SubscriptionStatus

metadata = sa.MetaData()

# On PostgreSQL these are real enum types, named as Prisma names them; elsewhere plain text.
subscription_status_type = sa.Enum(
    *(s.value for s in SubscriptionStatus),
    name="SubscriptionStatus",
    native_enum=True,
    create_constraint=False,
    validate_strings=False,
)
seat_tier_type = sa.Enum(
    *(t.value for t in SeatTier),
    name="SeatTier",
    native_enum=True,
    create_constraint=False,
    validate_strings=False,
)
# Prisma's DateTime is timestamp(3) without time zone, holding UTC.
timestamp_type = sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")
json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

team_table = sa.Table(
    "Team",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("stripeCustomerId", sa.Text, nullable=False),
    sa.Column("stripeSubscriptionId", sa.Text, nullable=True),
    sa.Column(
        "subscriptionStatus",
        subscription_status_type,
        nullable=False,
        server_default=SubscriptionStatus.NONE.value,
    ),
    sa.PrimaryKeyConstraint("id", name="Team_pkey"),
    sa.Index("Team_stripeCustomerId_key", "stripeCustomerId", unique=True),
)

member_table = sa.Table(
    "Member",
    metadata,
    sa.Column("id", sa.Text),
    sa.Column("discordId", sa.Text, nullable=True),
    sa.Column("stripeCustomerId", sa.Text, nullable=True),
    sa.Column("email", sa.Text, nullable=True),
    sa.Column(
        "subscriptionStatus",
        subscription_status_type,
        nullable=False,
        server_default=SubscriptionStatus.NONE.value,
    ),
    sa.Column("seatTier", seat_tier_type, nullable=True),
    sa.Column("introCompleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("teamId", sa.Text, nullable=True),
    sa.Column("isInDebtorState", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.PrimaryKeyConstraint("id", name="Member_pkey"),
    sa.ForeignKeyConstraint(
        ["teamId"], ["Team.id"], name="Member_teamId_fkey", ondelete="SET NULL", onupdate="CASCADE"
    ),
    sa.Index("Member_discordId_key", "discordId", unique=True),
    sa.Index("Member_stripeCustomerId_key", "stripeCustomerId", unique=True),
)

reconciliation_run_table = sa.Table(
    "ReconciliationRun",
    metadata,
    sa.Column("id", sa.Text),
    sa.Column("startedAt", timestamp_type, nullable=False, server_default=sa.func.now()),
    sa.Column("completedAt", timestamp_type, nullable=True),
    sa.Column("membersChecked", sa.Integer, nullable=False, server_default="0"),
    sa.Column("teamsChecked", sa.Integer, nullable=False, server_default="0"),
    sa.Column("issuesFound", sa.Integer, nullable=False, server_default="0"),
    sa.Column("issuesFixed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("autoFixEnabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("isVerificationRun", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("triggeredBy", sa.Text, nullable=False),
    sa.Column("issues", json_type, nullable=False),
    sa.PrimaryKeyConstraint("id", name="ReconciliationRun_pkey"),
    sa.Index("ReconciliationRun_startedAt_idx", "startedAt"),
)

APP_TABLES = (team_table, member_table, reconciliation_run_table)

# --- The pipeline's own tables -----------------------------------------------------------------

PREFIX = "recon_pipeline_"

pipeline_run_table = sa.Table(
    f"{PREFIX}run",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True, comment='= "ReconciliationRun".id'),
    sa.Column("job_name", sa.Text, nullable=False),
    sa.Column("partition_key", sa.Text, nullable=True),
    sa.Column("parent_run_id", sa.Text, nullable=True, comment="the run a verification checks"),
    sa.Column("status", sa.Text, nullable=False, comment="started | succeeded | failed"),
    sa.Column("failure", sa.Text, nullable=True, comment="why the run failed, when it did"),
    sa.Column(
        "fixes_withheld",
        sa.Text,
        nullable=True,
        comment="why a run launched with auto-fix applied no fix, when it applied none",
    ),
    sa.Column(
        "resolved_issues",
        sa.Integer,
        nullable=True,
        comment="issues the previous complete run found that this run did not",
    ),
    sa.Column("updated_at", timestamp_type, nullable=False, server_default=sa.func.now()),
)

fix_action_table = sa.Table(
    f"{PREFIX}fix_action",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("action_key", sa.Text, primary_key=True, comment="one role change or status write"),
    sa.Column("issue_type", sa.Text, nullable=False),
    sa.Column("member_id", sa.Text, nullable=True),
    sa.Column("team_id", sa.Text, nullable=True),
    sa.Column("discord_id", sa.Text, nullable=True),
    sa.Column("action", sa.Text, nullable=False, comment="add_role | remove_role | set_status"),
    sa.Column("value", sa.Text, nullable=False, comment="role name or status written"),
    sa.Column(
        "outcome", sa.Text, nullable=False, comment="fixed | failed | pending (call under way)"
    ),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("applied_at", timestamp_type, nullable=False, server_default=sa.func.now()),
)

# Every stored frame: one row per (frame, day, run). A frame belongs to the run that wrote it, so
# runs of one day never read or replace each other's frames; `attrs` is what the frame says of
# itself (when its snapshot was taken, what it was computed from, what its step decided).
stored_frame_table = sa.Table(
    f"{PREFIX}stored_frame",
    metadata,
    sa.Column("frame_name", sa.Text, primary_key=True),
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("columns", json_type, nullable=False, comment="[[name, kind], ...] in order"),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("attrs", json_type, nullable=False, comment="provenance and step decisions"),
    sa.Column("written_at", timestamp_type, nullable=False, comment="UTC, writer's clock"),
    sa.Index(f"{PREFIX}stored_frame_day_idx", "partition_key"),
)

# The frames a run read from outside its own chain (a backfill, an asset-graph launch of part
# of the job): chosen once per run and day, so every step of that run reads the same run's.
frame_choice_table = sa.Table(
    f"{PREFIX}input_choice",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True, comment="the run that reads"),
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("source_run_id", sa.Text, nullable=False, comment="the run whose frames it reads"),
)

# The fixing lease (one row): the run that may change roles and statuses now, until
# `expires_at` (seconds since the epoch on the database's clock, so hosts need not agree).
fixing_lease_table = sa.Table(
    f"{PREFIX}fixing_lease",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder_run_id", sa.Text, nullable=True),
    sa.Column("session_id", sa.BigInteger, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),
)

# Every time a run held the fixing lease, and how many changes it made (null while it holds it,
# and forever when it died holding it). Snapshots remember the newest session they saw, so a
# fixing step can tell whether another run changed things after its snapshots were taken.
fixing_session_table = sa.Table(
    f"{PREFIX}fixing_session",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("scope_id", sa.Text, nullable=False, comment="first run of its re-execution chain"),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("changes", sa.Integer, nullable=True, comment="role changes and status writes made"),
)

# Access exceptions (docs/behaviour.md §1): an account or member given a managed role without
# paying, managed with `recon-pipeline exceptions`. A removed one stays, with who removed it.
access_exception_table = sa.Table(
    f"{PREFIX}access_exception",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("discord_id", sa.Text, nullable=True, comment="the account it covers, or"),
    sa.Column("member_id", sa.Text, nullable=True, comment='the "Member".id it covers'),
    sa.Column("role", sa.Text, nullable=False, comment="squire | knight | lord"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("added_by", sa.Text, nullable=False),
    sa.Column("added_at", timestamp_type, nullable=False, comment="UTC"),
    sa.Column("expires_on", sa.Date, nullable=True, comment="the last day it counts"),
    sa.Column("removed_at", timestamp_type, nullable=True, comment="UTC; null while in force"),
    sa.Column("removed_by", sa.Text, nullable=True),
    sa.CheckConstraint(
        "(discord_id IS NULL) <> (member_id IS NULL)", name="access_exception_one_subject"
    ),
)

PIPELINE_TABLES = (
    pipeline_run_table,
    fix_action_table,
    stored_frame_table,
    frame_choice_table,
    fixing_lease_table,
    fixing_session_table,
    access_exception_table,
)


# --- Connecting ---------------------------------------------------------------------------------

# Query parameters of Prisma connection strings that libpq does not know.
_PRISMA_ONLY_PARAMS = frozenset(
    {
        "schema",
        "connection_limit",
        "pool_timeout",
        "pgbouncer",
        "socket_timeout",
        "sslaccept",
        "sslidentity",
        "sslpassword",
        "statement_cache_size",
    }
)


# Longer than the slowest single write (a million-row snapshot frame takes seconds).
SQLITE_BUSY_TIMEOUT_S = 300.0


class DatabaseUrlError(ValueError):
    """DATABASE_URL cannot be used."""


_URL_USERINFO_PASSWORD = re.compile(r"(?P<keep>^[^:/?#\s]+://[^:/?#@\s]*:)[^\s]*@")
_URL_QUERY_PASSWORD = re.compile(r"(?P<keep>[?&]password=)[^&#\s]*", re.IGNORECASE)


def hide_url_password(url: str) -> str:
    """`url` with any password in it replaced by `***`, for messages, logs and reprs."""
    url = _URL_USERINFO_PASSWORD.sub(r"\g<keep>***@", url)
    return _URL_QUERY_PASSWORD.sub(r"\g<keep>***", url)


@dataclass(frozen=True)
class DatabaseTarget:
    """A parsed DATABASE_URL: what SQLAlchemy connects to, plus the schema to search."""

    url: sa.URL
    schema: str | None = None

    def create_engine(self, **kwargs: object) -> sa.Engine:
        connect_args: dict[str, object] = {}
        if self.schema and self.url.get_backend_name() == "postgresql":
            connect_args["options"] = _search_path_option(self.schema)
        if self.url.get_backend_name() == "sqlite":
            # Steps of one run write their snapshots from parallel processes, and SQLite takes
            # one writer at a time: a writer waits this long for another's write to finish.
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        return sa.create_engine(self.url, connect_args=connect_args, **kwargs)

    @property
    def where(self) -> str:
        """The URL with its password hidden, for messages (a `?password=` too, which SQLAlchemy
        shows)."""
        return hide_url_password(self.url.render_as_string(hide_password=True))

    def failure(self, exc: sa.exc.DBAPIError) -> str:
        """The driver's first line about a failed connection, with no password in it: a driver
        may quote the connection string it was given."""
        text = str(exc.orig).strip()
        reason = text.splitlines()[0] if text else repr(exc)
        if self.url.password:
            reason = reason.replace(str(self.url.password), "***")
        return hide_url_password(reason)


def _search_path_option(schema: str) -> str:
    # Prisma's schema names are case-sensitive, so the name is quoted as an identifier; libpq
    # splits `options` on whitespace unless it is backslash-escaped.
    identifier = '"' + schema.replace('"', '""') + '"'
    return "-csearch_path=" + re.sub(r"([\\\s])", r"\\\1", identifier)


def parse_database_url(raw: str) -> DatabaseTarget:
    """Accept DATABASE_URL in the app's forms and SQLAlchemy's.

    `postgres://` and `postgresql://` (the app's, Prisma's) use psycopg 3; Prisma's `?schema=`
    becomes the search path; `file:path` (Prisma's SQLite form) means a SQLite file.
    """
    text = raw.strip()
    if not text:
        raise DatabaseUrlError("DATABASE_URL is empty")
    if text.startswith("file:"):
        text = f"sqlite:///{text.removeprefix('file:')}"
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise DatabaseUrlError(
            "DATABASE_URL is not a database URL; expected e.g. postgresql://user@host/db "
            "or sqlite:///path/to/file.db"
        ) from exc
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    backend = url.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise DatabaseUrlError(
            f"DATABASE_URL uses {url.drivername!r}; accepted: postgresql://, postgres:// "
            "(any SQLAlchemy postgresql+driver) or sqlite://"
        )
    schema = url.query.get("schema") if backend == "postgresql" else None
    if isinstance(schema, tuple):
        raise DatabaseUrlError("DATABASE_URL gives ?schema= more than once; give one schema")
    # Prisma accepts these on SQLite too; the SQLite driver would only warn and ignore them.
    url = url.difference_update_query(_PRISMA_ONLY_PARAMS)
    return DatabaseTarget(url, schema or None)


# --- Schema management --------------------------------------------------------------------------


def init_database(engine: sa.Engine) -> list[str]:
    """Create whatever of the app's and the pipeline's tables is missing; touch nothing else.

    Returns:
        The names of the tables created, in creation order (empty when all existed).
    """
    with engine.begin() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        missing = [t for t in metadata.sorted_tables if t.name not in existing]
        metadata.create_all(conn, tables=missing, checkfirst=True)
    return [t.name for t in missing]


# --- Reads ------------------------------------------------------------------------------------


def _as_text(column: sa.ColumnElement) -> sa.ColumnElement:
    # Read enums as text so a value outside the enum (possible on SQLite) reaches the engine.
    return sa.type_coerce(column, sa.Text)


_MEMBER_SELECT = sa.select(
    member_table.c.id.label(MemberCol.ID),
    member_table.c.discordId.label(MemberCol.DISCORD_ID),
    member_table.c.stripeCustomerId.label(MemberCol.STRIPE_CUSTOMER_ID),
    member_table.c.email.label(MemberCol.EMAIL),
    _as_text(member_table.c.subscriptionStatus).label(MemberCol.SUBSCRIPTION_STATUS),
    _as_text(member_table.c.seatTier).label(MemberCol.SEAT_TIER),
    member_table.c.introCompleted.label(MemberCol.INTRO_COMPLETED),
    member_table.c.teamId.label(MemberCol.TEAM_ID),
    member_table.c.isInDebtorState.label(MemberCol.IS_IN_DEBTOR_STATE),
).order_by(member_table.c.id)

_TEAM_SELECT = sa.select(
    team_table.c.id.label(TeamCol.ID),
    team_table.c.name.label(TeamCol.NAME),
    team_table.c.stripeCustomerId.label(TeamCol.STRIPE_CUSTOMER_ID),
    team_table.c.stripeSubscriptionId.label(TeamCol.STRIPE_SUBSCRIPTION_ID),
    _as_text(team_table.c.subscriptionStatus).label(TeamCol.SUBSCRIPTION_STATUS),
).order_by(team_table.c.id)


def load_members(conn: sa.Connection) -> pd.DataFrame:
    """All `"Member"` rows as a frame with `MemberCol` columns, in one query."""
    frame = _frame(conn, _MEMBER_SELECT, MemberCol.ALL)
    for col in (MemberCol.INTRO_COMPLETED, MemberCol.IS_IN_DEBTOR_STATE):
        frame[col] = frame[col].fillna(False).astype(bool)
    return frame


def load_teams(conn: sa.Connection) -> pd.DataFrame:
    """All `"Team"` rows as a frame with `TeamCol` columns, in one query."""
    return _frame(conn, _TEAM_SELECT, TeamCol.ALL)


def _frame(conn: sa.Connection, stmt: sa.Select, columns: tuple[str, ...]) -> pd.DataFrame:
    # Plain tuples: pandas probes SQLAlchemy Rows attribute by attribute (two caught KeyErrors a
    # row), which cost about 10 s at a million members.
    rows = [tuple(row) for row in conn.execute(stmt)]
    frame = pd.DataFrame.from_records(rows, columns=list(columns))
    text_columns = [
        c for c in columns if c not in (MemberCol.INTRO_COMPLETED, MemberCol.IS_IN_DEBTOR_STATE)
    ]
    return frame.astype({c: "str" for c in text_columns})


# --- Writes -----------------------------------------------------------------------------------


def _upsert(
    conn: sa.Connection, table: sa.Table, values: dict[str, object], *, update: bool = True
) -> None:
    """Insert a row, or on a primary-key clash update it (or leave it, when `update` is off)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values)
    else:  # pragma: no cover - parse_database_url admits only these two
        raise NotImplementedError(dialect)
    keys = [c.name for c in table.primary_key.columns]
    if update:
        changes = {k: stmt.excluded[k] for k in values if k not in keys}
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=changes)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt)


@dataclass(frozen=True)
class RunRecord:
    """One run, as `"ReconciliationRun"` and the pipeline's own run table hold it."""

    run_id: str
    job_name: str
    started_at: dt.datetime  # UTC, naive (Prisma's DateTime)
    completed_at: dt.datetime
    triggered_by: str  # scheduled | manual | verification
    auto_fix_enabled: bool
    is_verification_run: bool = False
    members_checked: int = 0
    teams_checked: int = 0
    issues_found: int = 0
    issues_fixed: int = 0
    issues: list[dict[str, Any]] = field(default_factory=list)
    partition_key: str | None = None
    parent_run_id: str | None = None
    failure: str | None = None
    fixes_withheld: str | None = None  # auto-fix was on, but the run applied nothing: why
    resolved_issues: int | None = None  # found by the previous complete run, gone in this one

    def app_row(self) -> dict[str, object]:
        return {
            "id": self.run_id,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "membersChecked": self.members_checked,
            "teamsChecked": self.teams_checked,
            "issuesFound": self.issues_found,
            "issuesFixed": self.issues_fixed,
            "autoFixEnabled": self.auto_fix_enabled,
            "isVerificationRun": self.is_verification_run,
            "triggeredBy": self.triggered_by,
            "issues": self.issues,
        }

    def pipeline_row(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "job_name": self.job_name,
            "partition_key": self.partition_key,
            "parent_run_id": self.parent_run_id,
            "status": "failed" if self.failure else "succeeded",
            "failure": self.failure,
            "fixes_withheld": self.fixes_withheld,
            "resolved_issues": self.resolved_issues,
            "updated_at": self.completed_at,
        }


def write_run_record(conn: sa.Connection, record: RunRecord) -> None:
    """Write the run's `"ReconciliationRun"` row and its status row; re-writing replaces them."""
    _upsert(conn, reconciliation_run_table, record.app_row())
    _upsert(conn, pipeline_run_table, record.pipeline_row())


def write_failed_run_record(conn: sa.Connection, record: RunRecord, *, append: bool = True) -> bool:
    """Record a failure; True when it is the run's first recorded failure.

    The `"ReconciliationRun"` row is kept if the run already wrote one, else written from
    `record`. The pipeline's row says failed and why; with `append` a failure already recorded
    there is kept and this one added, without it that row is kept.
    """
    _upsert(conn, reconciliation_run_table, record.app_row(), update=False)
    existing = conn.execute(
        sa.select(pipeline_run_table.c.status, pipeline_run_table.c.failure).where(
            pipeline_run_table.c.run_id == record.run_id
        )
    ).first()
    row = record.pipeline_row()
    first = not (existing and existing.status == "failed" and existing.failure)
    if not first:
        if not append or (record.failure or "") in existing.failure:
            return False
        row["failure"] = f"{existing.failure}; {record.failure}"
    _upsert(conn, pipeline_run_table, row)
    return first


def read_run_record(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    """The run's `"ReconciliationRun"` row joined with its status row, or None."""
    stmt = (
        sa.select(
            reconciliation_run_table,
            pipeline_run_table.c.status,
            pipeline_run_table.c.failure,
            pipeline_run_table.c.fixes_withheld,
            pipeline_run_table.c.resolved_issues,
        )
        .outerjoin(pipeline_run_table, pipeline_run_table.c.run_id == reconciliation_run_table.c.id)
        .where(reconciliation_run_table.c.id == run_id)
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def write_cached_status(
    conn: sa.Connection, *, status: str, team_id: str | None = None, member_id: str | None = None
) -> int:
    """Set one team's or member's `"subscriptionStatus"` (and nothing else); rows changed."""
    if (team_id is None) == (member_id is None):
        raise ValueError("give exactly one of team_id and member_id")
    table, key = (team_table, team_id) if team_id is not None else (member_table, member_id)
    result = conn.execute(
        sa.update(table).where(table.c.id == key).values(subscriptionStatus=status)
    )
    return result.rowcount


def recorded_actions(conn: sa.Connection, scope_id: str) -> dict[str, str]:
    """Outcome of each action recorded under `scope_id` (the first run of a chain of
    re-executions): `fixed`, `failed`, or `pending` for a change whose call was under way."""
    rows = conn.execute(
        sa.select(fix_action_table.c.action_key, fix_action_table.c.outcome).where(
            fix_action_table.c.run_id == scope_id
        )
    )
    return {key: outcome for key, outcome in rows}


def fix_notes(conn: sa.Connection, scope_id: str) -> pd.DataFrame:
    """Every action recorded under `scope_id`: `action_key`, `outcome`, `error`."""
    t = fix_action_table
    rows = conn.execute(
        sa.select(t.c.action_key, t.c.outcome, t.c.error).where(t.c.run_id == scope_id)
    )
    return pd.DataFrame([tuple(r) for r in rows], columns=["action_key", "outcome", "error"])


def record_fix_action(conn: sa.Connection, scope_id: str, values: dict[str, object]) -> None:
    """Record (or update) one action's outcome under `scope_id`."""
    _upsert(conn, fix_action_table, {"run_id": scope_id, **values, "applied_at": utcnow()})


def utcnow() -> dt.datetime:
    """Now in UTC without a zone, as Prisma's DateTime columns hold it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def ensure_pipeline_tables(engine: sa.Engine) -> None:
    """Create whichever of the pipeline's own tables (or their columns) is missing, never the
    app's. Checked once per database and process: a run opens the database a few dozen times.

    Steps of one run start in parallel processes; when two create the same table at once, the
    loser's error is harmless as long as the table exists afterwards.
    """
    key = engine.url.render_as_string(hide_password=False)
    if key in _ENSURED:
        return
    try:
        _create_missing(engine, PIPELINE_TABLES)
    except sa.exc.DBAPIError:
        _create_missing(engine, PIPELINE_TABLES)
    _ENSURED.add(key)


_ENSURED: set[str] = set()  # databases whose pipeline tables this process has checked


def _create_missing(engine: sa.Engine, tables: tuple[sa.Table, ...]) -> None:
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names())
        missing = [t for t in tables if t.name not in existing]
        if missing:
            metadata.create_all(conn, tables=missing, checkfirst=True)
        for table in tables:
            if table.name in existing:
                _add_missing_columns(conn, inspector, table)


def _add_missing_columns(conn: sa.Connection, inspector: Any, table: sa.Table) -> None:
    """Columns a newer version added to one of the pipeline's own tables (all nullable)."""
    have = {c["name"] for c in inspector.get_columns(table.name)}
    for column in table.columns:
        if column.name not in have and column.nullable:
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN {ddl}'))
