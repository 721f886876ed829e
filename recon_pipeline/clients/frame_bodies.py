"""Where the rows of stored frames live: database tables, or Parquet files.

`SqlFrameBodies` keeps each frame in a `recon_pipeline_frame_<name>` table of a database (the
membership database by default, or the one `RECONCILIATION_STORAGE_URL` names), one set of rows
per (day, run). Rows go in through the driver itself: PostgreSQL (psycopg 3) gets one
`COPY … FROM STDIN`, SQLite one `executemany` of plain tuples; reads fetch plain tuples the same
way and restore the written order from the `_row` column in memory (an `ORDER BY` would make
PostgreSQL sort a million wide rows, on disk beyond `work_mem`).

`ParquetFrameBodies` keeps one Parquet file per (frame, day, run) under a folder or an object
store prefix (`s3://…`, `gs://…`: any fsspec file system universal_pathlib knows, as Dagster's
UPathIOManager does).

Neither knows which frames exist: the catalog (frame_store) says that, and is written after the
rows, so a reader never sees a frame whose rows are not all there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from fsspec.registry import get_filesystem_class, known_implementations
from upath import UPath

from recon_pipeline.clients.frame_codec import (
    CHUNK_ROWS,
    Columns,
    decode,
    empty_frame,
    encode_tuples,
    row_chunks,
)
from recon_pipeline.clients.membership_db import (
    PREFIX,
    DatabaseTarget,
    DatabaseUrlError,
    hide_url_password,
    parse_database_url,
)

PARTITION_COLUMN = "_partition_key"
RUN_COLUMN = "_run_id"
ROW_COLUMN = "_row"  # keeps the written row order
TABLE_PREFIX = f"{PREFIX}frame_"

_SQL_TYPES = {
    "str": sa.Text,
    "bool": sa.Boolean,
    "int": sa.BigInteger,
    "float": sa.Float,
    "tuple": sa.Text,  # JSON array text
}


_SQL_SCHEMES = ("postgres", "postgresql", "sqlite")

# Column → texts: a row matches when one of those columns contains one of its texts. A coarse
# test the storage runs on its own rows (one scan, no index needed); the caller applies the
# exact rule to the few rows it returns. Case counts except in the columns named as ignoring it
# (and SQLite's LIKE ignores ASCII case anyway, which only widens the match).
Contains = Mapping[str, Sequence[str]]


class StorageUrlError(ValueError):
    """RECONCILIATION_STORAGE_URL cannot be used."""


def parse_storage_url(raw: str) -> DatabaseTarget | str:
    """Where frames go: a database (`postgresql://…`, `sqlite:///…`), or a folder or object
    store prefix for Parquet files (an absolute path, `file:///…`, `s3://…`, `gs://…`, …).

    Raises:
        StorageUrlError: naming what is wrong, never the URL's password.
    """
    text = raw.strip()
    scheme = text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
    if scheme in _SQL_SCHEMES:
        try:
            return parse_database_url(text)
        except DatabaseUrlError as exc:
            raise StorageUrlError(str(exc).replace("DATABASE_URL", "the URL")) from None
    if not scheme:
        if not PurePosixPath(text).is_absolute():
            raise StorageUrlError(
                "is neither a database URL nor an absolute folder path or file-system URL"
            )
        return text
    if scheme not in known_implementations:
        raise StorageUrlError(f"uses {scheme}://, which is neither a database nor a file system")
    try:
        get_filesystem_class(scheme)
    except ImportError as exc:  # fsspec names the package to install (s3fs, gcsfs, …)
        raise StorageUrlError(f"uses {scheme}://: {exc}") from None
    return text


def open_frame_bodies(storage_url: str | None, membership: sa.Engine) -> FrameBodies:
    """The frame storage `storage_url` names; the membership database when it is empty."""
    if not storage_url or not storage_url.strip():
        return SqlFrameBodies(membership)
    target = parse_storage_url(storage_url)
    if isinstance(target, DatabaseTarget):
        if target.url.get_backend_name() == "sqlite" and target.url.database:
            Path(target.url.database).parent.mkdir(parents=True, exist_ok=True)
        return SqlFrameBodies(target.create_engine(), owned=True)
    return ParquetFrameBodies(target)


class FrameBodies(Protocol):
    """Rows of frames, addressed by (frame name, day, run id)."""

    where: str  # for messages and the deployment guide: where the rows live

    def write(self, name: str, day: str, run_id: str, frame: pd.DataFrame, columns: Columns): ...

    def read(self, name: str, day: str, run_id: str, columns: Columns) -> pd.DataFrame: ...

    def read_matching(
        self,
        name: str,
        stored: Sequence[tuple[str, str]],
        columns: Columns,
        contains: Contains,
        ignore_case: frozenset[str] = frozenset(),
    ) -> pd.DataFrame: ...

    def delete_days_before(self, cutoff_day: str, *, batch_rows: int) -> int: ...

    def delete_runs(self, name: str, day: str, run_ids: Sequence[str]) -> int: ...

    def close(self) -> None: ...


def table_name(frame_name: str) -> str:
    # 30 characters at most: the (day, run) index's name must fit PostgreSQL's 63.
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,29}", frame_name):
        raise ValueError(
            f"frame name {frame_name!r} must be at most 30 lower-case letters, digits and _"
        )
    return f"{TABLE_PREFIX}{frame_name}"


def frame_table(frame_name: str, columns: Columns) -> sa.Table:
    name = table_name(frame_name)
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column(PARTITION_COLUMN, sa.Text, nullable=False),
        sa.Column(RUN_COLUMN, sa.Text, nullable=True),  # null only in rows kept from before runs
        sa.Column(ROW_COLUMN, sa.BigInteger, nullable=False),
        *(sa.Column(column, _SQL_TYPES[kind]()) for column, kind in columns),
        sa.Index(f"{name}_day_run_idx", PARTITION_COLUMN, RUN_COLUMN),
    )


class SqlFrameBodies:
    """Frame rows in tables of one database."""

    def __init__(self, engine: sa.Engine, *, owned: bool = False) -> None:
        self.engine = engine
        self.where = hide_url_password(engine.url.render_as_string(hide_password=True))
        self._owned = owned  # an engine of its own (RECONCILIATION_STORAGE_URL): closed here

    def close(self) -> None:
        if self._owned:
            self.engine.dispose()

    def write(
        self, name: str, day: str, run_id: str, frame: pd.DataFrame, columns: Columns
    ) -> None:
        table = frame_table(name, columns)
        ensure_frame_table(self.engine, table)
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(table).where(
                    (table.c[PARTITION_COLUMN] == day) & (table.c[RUN_COLUMN] == run_id)
                )
            )
            names = [c.name for c in table.columns]
            _insert_rows(conn, table, names, row_chunks(frame, columns, day, run_id))

    def read(self, name: str, day: str, run_id: str, columns: Columns) -> pd.DataFrame:
        table = frame_table(name, columns)
        names = [ROW_COLUMN, *(column for column, _ in columns)]
        with self.engine.connect() as conn:
            parts = [
                pd.DataFrame.from_records(rows, columns=names, coerce_float=False)
                for rows in _select_rows(conn, table, names, day, run_id)
            ]
        return _assemble(parts, columns)

    def read_matching(
        self,
        name: str,
        stored: Sequence[tuple[str, str]],
        columns: Columns,
        contains: Contains,
        ignore_case: frozenset[str] = frozenset(),
    ) -> pd.DataFrame:
        table = frame_table(name, columns)
        # Plain LIKE wherever it will do: `lower()` or ILIKE on every row makes the scan several
        # times slower, and SQLite's LIKE ignores ASCII case by itself.
        sqlite = self.engine.dialect.name == "sqlite"
        tests = [
            (
                table.c[column].ilike
                if column in ignore_case and not sqlite
                else table.c[column].like
            )("%" + _escape_like(text) + "%", escape="\\")
            for column, texts in contains.items()
            if column in table.c
            for text in texts
        ]
        if not stored or not tests:
            return _matched([], columns, stored)
        days = sorted({day for day, _ in stored})
        runs = sorted({run for _, run in stored})
        picked = [table.c[PARTITION_COLUMN], table.c[RUN_COLUMN], *(table.c[c] for c, _ in columns)]
        stmt = sa.select(*picked).where(
            table.c[PARTITION_COLUMN].in_(days) & table.c[RUN_COLUMN].in_(runs) & sa.or_(*tests)
        )
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                return _matched([], columns, stored)
            rows = conn.execute(stmt).all()
        return _matched(rows, columns, stored)

    def delete_days_before(self, cutoff_day: str, *, batch_rows: int) -> int:
        with self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = [
                t
                for t in inspector.get_table_names()
                if t.startswith(TABLE_PREFIX)
                and PARTITION_COLUMN in {c["name"] for c in inspector.get_columns(t)}
            ]
        deleted = 0
        for name in tables:
            table = sa.table(name, sa.column(PARTITION_COLUMN))
            deleted += self._delete_in_batches(
                table, table.c[PARTITION_COLUMN] < cutoff_day, batch_rows
            )
        return deleted

    def delete_runs(self, name: str, day: str, run_ids: Sequence[str]) -> int:
        table = sa.table(table_name(name), sa.column(PARTITION_COLUMN), sa.column(RUN_COLUMN))
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                return 0
        where = (table.c[PARTITION_COLUMN] == day) & table.c[RUN_COLUMN].in_(list(run_ids))
        return self._delete_in_batches(table, where, CHUNK_ROWS)

    def _delete_in_batches(
        self, table: sa.TableClause, where: sa.ColumnElement[bool], batch_rows: int
    ) -> int:
        """Delete the rows matching `where`, `batch_rows` at a time, each batch committed on
        its own: no transaction holds a day's million rows, or SQLite's write lock, for long."""
        if self.engine.dialect.name == "postgresql":
            row = sa.literal_column("ctid")
        else:
            row = sa.literal_column("rowid")
        batch = sa.select(row).select_from(table).where(where).limit(batch_rows)
        statement = sa.delete(table).where(row.in_(batch.scalar_subquery()))
        deleted = 0
        while True:
            with self.engine.begin() as conn:
                count = conn.execute(statement).rowcount
            deleted += count
            if count < batch_rows:
                return deleted


def ensure_frame_table(engine: sa.Engine, table: sa.Table) -> None:
    """Create the frame's table, or add columns the frame gained since it was made.

    Runs in its own transaction; when another process makes the same change at the same
    moment, the loser's error is harmless once the table is as wanted.
    """
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                _make_table(conn, table)
            return
        except sa.exc.DBAPIError:
            if attempt:
                raise


def _make_table(conn: sa.Connection, table: sa.Table) -> None:
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name):
        table.create(conn)
        return
    existing = {c["name"] for c in inspector.get_columns(table.name)}
    for column in table.columns:
        if column.name not in existing:  # a column added since the table was made
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN {ddl}'))
    # A table from before frames belonged to runs lacks the (day, run) index.
    indexed = {i["name"] for i in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexed:
            index.create(conn, checkfirst=True)


def _insert_rows(
    conn: sa.Connection,
    table: sa.Table,
    names: list[str],
    chunks: Iterable[list[tuple[object, ...]]],
) -> None:
    """Append rows (values in `names` order) to `table` on `conn`'s transaction."""
    dbapi = conn.connection.dbapi_connection
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        statement = f"COPY {quote(table.name)} ({columns}) FROM STDIN"
        with dbapi.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for chunk in chunks:
                for row in chunk:
                    copy.write_row(row)
        return
    if conn.dialect.name == "sqlite":
        insert = (
            f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({', '.join('?' * len(names))})"
        )
        cursor = dbapi.cursor()  # type: ignore[union-attr]
        try:
            for chunk in chunks:
                cursor.executemany(insert, chunk)
        finally:
            cursor.close()
        return
    for chunk in chunks:
        conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in chunk])


def _select_rows(
    conn: sa.Connection, table: sa.Table, names: list[str], day: str, run_id: str
) -> Iterator[list[Any]]:
    """That day's and run's rows as plain tuples, in storage order, a chunk at a time."""
    quote = conn.dialect.identifier_preparer.quote
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
    if mark is None or conn.dialect.name not in ("sqlite", "postgresql"):
        stmt = sa.select(*(table.c[n] for n in names)).where(
            (table.c[PARTITION_COLUMN] == day) & (table.c[RUN_COLUMN] == run_id)
        )
        result = conn.execute(stmt)
        while rows := result.fetchmany(CHUNK_ROWS):
            yield [tuple(row) for row in rows]
        return
    sql = (
        f"SELECT {', '.join(quote(n) for n in names)} FROM {quote(table.name)} "
        f"WHERE {quote(PARTITION_COLUMN)} = {mark} AND {quote(RUN_COLUMN)} = {mark}"
    )
    dbapi: Any = conn.connection.dbapi_connection
    if conn.dialect.driver == "psycopg" and not dbapi.autocommit:
        # A server-side cursor streams the rows, so the driver never holds the whole day.
        cursor = dbapi.cursor(name=f"recon_frame_read_{id(table):x}")
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql, (day, run_id))
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield rows
    finally:
        cursor.close()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _matched(rows: Sequence[Any], columns: Columns, stored: Sequence[tuple[str, str]]):
    """Rows of (day, run, encoded columns) → decoded frame of the `stored` (day, run) pairs."""
    raw = pd.DataFrame.from_records(list(rows), columns=_matched_names(columns), coerce_float=False)
    # The query asks for the days and the runs apart, so it also finds a run's rows of a day
    # that is not that run's.
    wanted = pd.MultiIndex.from_tuples(list(stored) or [("", "")])
    return _decoded(
        raw[pd.MultiIndex.from_frame(raw[[PARTITION_COLUMN, RUN_COLUMN]]).isin(wanted)], columns
    )


def _matched_names(columns: Columns) -> list[str]:
    return [PARTITION_COLUMN, RUN_COLUMN, *(c for c, _ in columns)]


def _decoded(raw: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    """(day, run, encoded columns) → the decoded frame, with a fresh index."""
    return pd.DataFrame(
        {
            PARTITION_COLUMN: raw[PARTITION_COLUMN].astype("str").to_numpy(),
            RUN_COLUMN: raw[RUN_COLUMN].astype("str").to_numpy(),
            **{c: decode(raw[c], kind).to_numpy() for c, kind in columns},
        }
    )


def _assemble(parts: list[pd.DataFrame], columns: Columns) -> pd.DataFrame:
    """One frame from chunks of (row number, encoded columns), in the written row order."""
    if not parts:
        return empty_frame(columns)
    decoded = [
        pd.DataFrame(
            {
                ROW_COLUMN: part[ROW_COLUMN].to_numpy(dtype="int64"),
                **{name: decode(part[name], kind) for name, kind in columns},
            }
        )
        for part in parts
    ]
    del parts
    frame = pd.concat(decoded, ignore_index=True) if len(decoded) > 1 else decoded[0]
    del decoded
    order = np.argsort(frame[ROW_COLUMN].to_numpy(), kind="stable")
    if not (order[1:] > order[:-1]).all():
        frame = frame.take(order)
    frame = frame.drop(columns=ROW_COLUMN)
    frame.index = np.arange(len(frame))
    return frame


class ParquetFrameBodies:
    """Frame rows as `<base>/<frame>/<day>/<run id>.parquet`."""

    def __init__(self, base: str) -> None:
        self.base = UPath(base)
        self.where = str(base)

    def close(self) -> None:
        pass

    def _path(self, name: str, day: str, run_id: str) -> UPath:
        table_name(name)  # the same names as tables: no path tricks
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", f"{day}{run_id}") or ".." in f"{day}{run_id}":
            raise ValueError(f"unusable day or run id for a file name: {day!r}, {run_id!r}")
        return self.base / name / day / f"{run_id}.parquet"

    def write(
        self, name: str, day: str, run_id: str, frame: pd.DataFrame, columns: Columns
    ) -> None:
        by_position = frame.reset_index(drop=True)  # rows in order, whatever the index
        encoded = {
            column: (
                pd.Series(encode_tuples(by_position[column]), dtype=object)
                if kind == "tuple"
                else by_position[column]
            )
            for column, kind in columns
        }
        table = pa.Table.from_pandas(pd.DataFrame(encoded), preserve_index=False)
        path = self._path(name, day, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            pq.write_table(table, out)

    def read(self, name: str, day: str, run_id: str, columns: Columns) -> pd.DataFrame:
        with self._path(name, day, run_id).open("rb") as source:
            stored = pq.read_table(source).to_pandas()
        if not len(stored):
            return empty_frame(columns)
        return pd.DataFrame({column: decode(stored[column], kind) for column, kind in columns})

    def read_matching(
        self,
        name: str,
        stored: Sequence[tuple[str, str]],
        columns: Columns,
        contains: Contains,
        ignore_case: frozenset[str] = frozenset(),
    ) -> pd.DataFrame:
        names = _matched_names(columns)
        parts = []
        for day, run_id in stored:
            with self._path(name, day, run_id).open("rb") as source:
                table = pq.read_table(source)
            hits = None
            for column, texts in contains.items():
                if column not in table.column_names:
                    continue
                values = table[column].cast(pa.large_string())
                folded = column in ignore_case
                for text in texts:
                    hit = pc.match_substring(values, text, ignore_case=folded)
                    hit = pc.fill_null(hit, False)
                    hits = hit if hits is None else pc.or_(hits, hit)
            if hits is None:
                continue
            found = table.filter(hits).to_pandas()
            rows = found.reindex(columns=[c for c, _ in columns]).assign(
                **{PARTITION_COLUMN: day, RUN_COLUMN: run_id}
            )
            parts.append(rows[names])
        # Each file is one (day, run): nothing of another pair to filter out.
        merged = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
        return _decoded(merged, columns)

    def delete_days_before(self, cutoff_day: str, *, batch_rows: int) -> int:
        deleted = 0
        if not self.base.exists():
            return 0
        for frame_dir in self.base.iterdir():
            for day_dir in frame_dir.iterdir() if frame_dir.is_dir() else ():
                if day_dir.name < cutoff_day:
                    deleted += sum(1 for _ in day_dir.iterdir())
                    day_dir.fs.rm(day_dir.path, recursive=True)
        return deleted

    def delete_runs(self, name: str, day: str, run_ids: Sequence[str]) -> int:
        deleted = 0
        for run_id in run_ids:
            path = self._path(name, day, run_id)
            if path.exists():
                path.unlink()
                deleted += 1
        return deleted
