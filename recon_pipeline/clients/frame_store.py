"""Day-partitioned frames that belong to the run that wrote them.

Every stored frame is addressed by (frame name, day, run id): two runs of one day never read or
replace each other's frames. The catalog (`recon_pipeline_stored_frame`, in the membership
database) lists what is stored, each column's kind and what the frame says of itself (`attrs`:
when a snapshot was taken, what a drift table was computed from); the rows live in
`FrameBodies` (tables of a database, or Parquet files). A frame is catalogued only once its rows
are all stored, and read back only with as many rows as were catalogued.

Loaded frames carry their catalog entry in `DataFrame.attrs` (see `recon_pipeline.provenance`),
so a step can tell where each of its inputs came from.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from recon_pipeline.clients.frame_bodies import (
    PARTITION_COLUMN,
    RUN_COLUMN,
    Contains,
    FrameBodies,
    frame_table,
    open_frame_bodies,
)
from recon_pipeline.clients.frame_codec import Columns, column_kinds
from recon_pipeline.clients.membership_db import (
    PREFIX,
    ensure_pipeline_tables,
    frame_choice_table,
    parse_database_url,
    stored_frame_table,
    utcnow,
)
from recon_pipeline.domain.provenance import STORED

_LEGACY_CATALOG = f"{PREFIX}frame_catalog"  # day-keyed catalog of earlier versions
LEGACY_RUN_ID = "before-run-isolation"  # owner of frames stored by an unknown run
_ADOPT_LOCK_KEY = 7_310_455_112  # PostgreSQL advisory lock: one adopter at a time


class FrameNotStoredError(LookupError):
    """The requested frame is not stored."""


class FrameDamagedError(RuntimeError):
    """A stored frame reads back with another number of rows than was stored."""


@dataclass(frozen=True)
class StoredFrame:
    """One catalog entry."""

    name: str
    day: str
    run_id: str
    columns: Columns
    row_count: int
    written_at: dt.datetime
    attrs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What a loaded frame carries in `attrs[STORED]` (JSON-able)."""
        return {
            "frame": self.name,
            "day": self.day,
            "run_id": self.run_id,
            "row_count": self.row_count,
            "written_at": self.written_at.isoformat(),
        }


def _entry(row: Any) -> StoredFrame:
    return StoredFrame(
        name=row.frame_name,
        day=row.partition_key,
        run_id=row.run_id,
        columns=[tuple(c) for c in row.columns],
        row_count=int(row.row_count),
        written_at=row.written_at,
        attrs=dict(row.attrs or {}),
    )


@dataclass(frozen=True)
class RetentionResult:
    days: list[str]  # days whose frames were deleted
    frames: int  # catalog entries deleted
    body_rows: int  # rows (or files) deleted from the frame storage


class FrameStore:
    """The catalog in `catalog` (the membership database), the rows in `bodies`."""

    def __init__(self, catalog: sa.Engine, bodies: FrameBodies) -> None:
        self.catalog = catalog
        self.bodies = bodies

    def close(self) -> None:
        self.bodies.close()

    def write(self, name: str, day: str, run_id: str, frame: pd.DataFrame) -> StoredFrame:
        """Store `frame` as `run_id`'s `name` of `day` (replacing that run's earlier write);
        `frame.attrs` (JSON-able) are kept with it."""
        columns = column_kinds(frame)
        attrs = {k: v for k, v in frame.attrs.items() if k != STORED}
        json.dumps(attrs)  # fail here, before any row is written, if attrs cannot be stored
        self.bodies.write(name, day, run_id, frame, columns)
        entry = StoredFrame(name, day, run_id, columns, len(frame), utcnow(), attrs)
        with self.catalog.begin() as conn:
            _upsert_entry(conn, entry)
        return entry

    def entry(self, name: str, day: str, run_id: str) -> StoredFrame | None:
        with self.catalog.connect() as conn:
            row = conn.execute(
                sa.select(stored_frame_table).where(
                    (stored_frame_table.c.frame_name == name)
                    & (stored_frame_table.c.partition_key == day)
                    & (stored_frame_table.c.run_id == run_id)
                )
            ).first()
        return _entry(row) if row else None

    def entries(
        self, day: str, *, run_ids: list[str] | None = None, names: list[str] | None = None
    ) -> list[StoredFrame]:
        """The day's catalog entries (of those runs, of those frames), oldest first."""
        t = stored_frame_table
        where = t.c.partition_key == day
        if run_ids is not None:
            where &= t.c.run_id.in_(run_ids)
        if names is not None:
            where &= t.c.frame_name.in_(names)
        with self.catalog.connect() as conn:
            rows = conn.execute(sa.select(t).where(where).order_by(t.c.written_at, t.c.run_id))
            return [_entry(row) for row in rows]

    def entries_named(self, name: str) -> list[StoredFrame]:
        """Every stored `name`, any day and run, oldest first."""
        t = stored_frame_table
        with self.catalog.connect() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.frame_name == name).order_by(t.c.written_at, t.c.run_id)
            )
            return [_entry(row) for row in rows]

    def read(self, name: str, day: str, run_id: str) -> pd.DataFrame:
        """The frame `run_id` stored as `name` of `day`, with its catalog entry in `attrs`.

        Raises:
            FrameNotStoredError: naming the frame, the day and the run.
            FrameDamagedError: the rows read back are not the rows stored, or none are there.
        """
        entry = self.entry(name, day, run_id)
        if entry is None:
            raise FrameNotStoredError(f"no {name} of {day} is stored for run {run_id}")
        with self._bodies_listed(name, [(day, run_id)]):
            frame = self.bodies.read(name, day, run_id, entry.columns)
        if len(frame) != entry.row_count:
            raise FrameDamagedError(
                f"{name} of {day} stored by run {run_id} reads back {len(frame)} row(s), but "
                f"{entry.row_count} were stored ({self.bodies.where})"
            )
        frame.attrs = {**entry.attrs, STORED: entry.describe()}
        return frame

    def read_matching(
        self,
        name: str,
        stored: list[StoredFrame],
        contains: Contains,
        ignore_case: frozenset[str] = frozenset(),
    ) -> pd.DataFrame:
        """The rows of the `stored` frames (all named `name`) where a column of `contains`
        contains one of its texts (case ignored in the `ignore_case` columns), each with its day
        (`PARTITION_COLUMN`) and run (`RUN_COLUMN`): a few rows out of a million without
        reading the rest into memory.

        Raises:
            FrameDamagedError: a frame the catalog lists is missing from the storage.
        """
        named = [entry for entry in stored if entry.name == name]
        columns: dict[str, str] = {}
        for entry in named:  # a column a later version added reads as missing in older frames
            columns.update(dict(entry.columns))
        keys = [(entry.day, entry.run_id) for entry in named]
        with self._bodies_listed(name, keys):
            return self.bodies.read_matching(
                name, keys, list(columns.items()), contains, ignore_case
            )

    @contextmanager
    def _bodies_listed(self, name: str, keys: list[tuple[str, str]]) -> Iterator[None]:
        """A body the catalog lists but the storage lacks (a Parquet file) is damage, not a
        frame never stored."""
        try:
            yield
        except FileNotFoundError:
            if len(keys) == 1:
                what = f"{name} of {keys[0][0]} stored by run {keys[0][1]}"
            else:  # no storage names the missing (day, run) in a form to read back
                days = sorted({day for day, _ in keys})
                span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
                what = f"one of the {len(keys)} {name} frames stored for {span}"
            raise FrameDamagedError(
                f"{what} is not in {self.bodies.where} (was "
                "RECONCILIATION_STORAGE_URL changed since, or the file deleted?)"
            ) from None

    def latest_writer(self, name: str, day: str) -> str | None:
        """The run that most recently stored `name` of `day`."""
        stored = self.entries(day, names=[name])
        return stored[-1].run_id if stored else None

    def choose_source(self, reader_run_id: str, day: str, names: list[str]) -> str:
        """The run whose `names` of `day` `reader_run_id` reads: the day's last run that stored
        all of them, chosen on the first call and the same on every later one, so all steps of
        the reading run see one run's frames even while other runs store new ones.

        Raises:
            FrameNotStoredError: no run stored all of them that day.
        """
        t, choice = stored_frame_table, frame_choice_table
        mine = (choice.c.run_id == reader_run_id) & (choice.c.partition_key == day)
        with self.catalog.begin() as conn:
            chosen = conn.execute(sa.select(choice.c.source_run_id).where(mine)).scalar()
            if chosen:
                return chosen
            complete = (
                sa.select(t.c.run_id)
                .where((t.c.partition_key == day) & t.c.frame_name.in_(names))
                .group_by(t.c.run_id)
                .having(sa.func.count(sa.distinct(t.c.frame_name)) == len(set(names)))
                .order_by(sa.func.max(t.c.written_at).desc(), t.c.run_id.desc())
                .limit(1)
            )
            source = conn.execute(complete).scalar()
            if source is None:
                raise FrameNotStoredError(
                    f"no run of {day} stored all of {', '.join(sorted(set(names)))}; only a day "
                    "whose snapshots were all taken (by a reconciliation run on that day) can be "
                    "recomputed"
                )
            values = {"run_id": reader_run_id, "partition_key": day, "source_run_id": source}
            conn.execute(_insert(conn, choice).values(**values).on_conflict_do_nothing())
            return conn.execute(sa.select(choice.c.source_run_id).where(mine)).scalar_one()

    def delete_days_before(
        self, cutoff_day: str, *, latest_before: dt.datetime, batch_rows: int = 50_000
    ) -> RetentionResult:
        """Delete every frame of a day before `cutoff_day`, and every unpartitioned frame
        (stored under a day that is no date) written before `latest_before`.

        Catalog entries go first, so no reader finds a frame whose rows are being deleted; the
        rows follow in batches of `batch_rows`. Run records are never touched.
        """
        t, choice = stored_frame_table, frame_choice_table
        dated = t.c.partition_key < cutoff_day
        undated_old = ~t.c.partition_key.like("____-__-__") & (t.c.written_at < latest_before)
        with self.catalog.begin() as conn:
            rows = conn.execute(
                sa.select(t.c.frame_name, t.c.partition_key, t.c.run_id).where(dated | undated_old)
            ).all()
            conn.execute(sa.delete(t).where(dated | undated_old))
            conn.execute(sa.delete(choice).where(choice.c.partition_key < cutoff_day))
        body_rows = self.bodies.delete_days_before(cutoff_day, batch_rows=batch_rows)
        for name, day, run_id in rows:
            if not day < cutoff_day:
                body_rows += self.bodies.delete_runs(name, day, [run_id])
        days = sorted({day for _, day, _ in rows if day < cutoff_day})
        return RetentionResult(days=days, frames=len(rows), body_rows=body_rows)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _entry_values(entry: StoredFrame) -> dict[str, Any]:
    return {
        "frame_name": entry.name,
        "partition_key": entry.day,
        "run_id": entry.run_id,
        "columns": [list(c) for c in entry.columns],
        "row_count": entry.row_count,
        "attrs": entry.attrs,
        "written_at": entry.written_at,
    }


def _upsert_entry(conn: sa.Connection, entry: StoredFrame) -> None:
    values = _entry_values(entry)
    stmt = _insert(conn, stored_frame_table).values(**values)
    keys = ["frame_name", "partition_key", "run_id"]
    changes = {k: stmt.excluded[k] for k in values if k not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))


def adopt_day_keyed_frames(engine: sa.Engine) -> int:
    """Bring frames stored by earlier versions (one per frame and day, in the membership
    database) into the per-run catalog, under the run that wrote them; then drop the old
    catalog. Safe to run again, and from several processes at once (the steps of the first
    run after an upgrade): they take turns, and the first does the work. Returns the frames
    adopted."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _ADOPTED:
        return 0
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(_LEGACY_CATALOG):
            _ADOPTED.add(key)
            return 0
    with engine.connect() as conn:
        _take_turns(conn)
        try:
            adopted = _adopt(conn)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    _ADOPTED.add(key)
    return adopted


_ADOPTED: set[str] = set()  # databases this process found without frames of earlier versions


def _take_turns(conn: sa.Connection) -> None:
    """Start a transaction that no other adopter runs beside."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ADOPT_LOCK_KEY)))
    else:
        # SQLite's write lock, taken before the old catalog is read (pysqlite would only take
        # it at the first write, after another adopter could have read the same rows).
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _adopt(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table(_LEGACY_CATALOG):
        return 0  # another process adopted them while this one waited
    legacy = sa.table(
        _LEGACY_CATALOG,
        *(
            sa.column(c)
            for c in ("frame_name", "partition_key", "columns", "row_count", "run_id", "written_at")
        ),
    )
    adopted = 0
    tables: dict[str, sa.Table] = {}
    for row in conn.execute(sa.select(legacy)).all():
        columns = row.columns if isinstance(row.columns, list) else json.loads(row.columns)
        columns = [tuple(c) for c in columns]
        run_id = row.run_id or LEGACY_RUN_ID
        table = tables.setdefault(row.frame_name, frame_table(row.frame_name, columns))
        _adopt_rows(conn, table, row.partition_key, run_id)
        entry = StoredFrame(
            row.frame_name,
            row.partition_key,
            run_id,
            columns,
            int(row.row_count),
            _as_datetime(row.written_at),
        )
        insert = _insert(conn, stored_frame_table).values(**_entry_values(entry))
        conn.execute(insert.on_conflict_do_nothing())
        adopted += 1
    for table in tables.values():
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{_LEGACY_CATALOG}"'))
    return adopted


def _adopt_rows(conn: sa.Connection, table: sa.Table, day: str, run_id: str) -> None:
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name):
        return
    if RUN_COLUMN not in {c["name"] for c in inspector.get_columns(table.name)}:
        conn.execute(sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN "{RUN_COLUMN}" TEXT'))
    rows = sa.table(table.name, sa.column(PARTITION_COLUMN), sa.column(RUN_COLUMN))
    conn.execute(
        sa.update(rows)
        .where((rows.c[PARTITION_COLUMN] == day) & rows.c[RUN_COLUMN].is_(None))
        .values({RUN_COLUMN: run_id})
    )


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def open_engine(database_url: str) -> sa.Engine:
    """An engine for DATABASE_URL with the pipeline's own tables in place."""
    target = parse_database_url(database_url)
    if target.url.get_backend_name() == "sqlite" and target.url.database:
        Path(target.url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = target.create_engine()
    ensure_pipeline_tables(engine)
    return engine


@contextmanager
def open_frame_store(database_url: str, storage_url: str | None) -> Iterator[FrameStore]:
    engine = open_engine(database_url)
    store = FrameStore(engine, open_frame_bodies(storage_url, engine))
    try:
        adopt_day_keyed_frames(engine)
        yield store
    finally:
        store.close()
        engine.dispose()
