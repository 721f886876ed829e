"""Day-partitioned DataFrames kept in the membership database, in the pipeline's own tables.

Each stored frame `name` lives in `recon_pipeline_frame_<name>` with a `_partition_key` column;
`recon_pipeline_frame_catalog` says which days are stored and each column's kind, so a frame
reads back with the dtypes it was written with (booleans stay booleans on SQLite; tuples of role
names round-trip through JSON). Writing a day replaces that day's rows in one transaction, so a
reader never sees half a snapshot. Because it lives in the database every Dagster process
already reaches, runs work the same under the multiprocess executor and across hosts.

Rows go in through the driver itself, on the caller's connection and transaction: PostgreSQL
(psycopg 3) gets one `COPY … FROM STDIN`, SQLite one `executemany` of plain tuples; other
drivers fall back to SQLAlchemy inserts. Reads fetch plain tuples the same way and restore the
written order from the `_row` column in memory (an `ORDER BY` would make PostgreSQL sort a
million wide rows, on disk beyond `work_mem`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.membership_db import PREFIX
from recon_pipeline.clients.membership_db import frame_catalog_table as catalog_table

PARTITION_COLUMN = "_partition_key"
ROW_COLUMN = "_row"  # keeps the written row order
_INSERT_CHUNK = 50_000  # rows held as Python objects at a time, writing or reading

_SQL_TYPES = {
    "str": sa.Text,
    "bool": sa.Boolean,
    "int": sa.BigInteger,
    "float": sa.Float,
    "tuple": sa.Text,  # JSON array text
}


class FrameNotStoredError(LookupError):
    """No frame is stored under that name for one or more of the requested days."""


def table_name(frame_name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", frame_name):
        raise ValueError(f"frame name {frame_name!r} must be lower-case letters, digits and _")
    return f"{PREFIX}frame_{frame_name}"


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    if series.dtype == object:
        sample = series.dropna()
        if len(sample) and isinstance(sample.iloc[0], (tuple, list)):
            return "tuple"
    return "str"


def _encode(series: pd.Series, kind: str) -> list[object]:
    if kind == "tuple":
        # Few distinct role tuples, many rows: dump each distinct one once.
        dumped: dict[tuple[Any, ...], str] = {}
        out: list[object] = []
        for v in series.tolist():
            if v is None:
                out.append(None)
                continue
            key = tuple(v)
            text = dumped.get(key)
            if text is None:
                text = dumped[key] = json.dumps(list(key))
            out.append(text)
        return out
    if kind == "str":
        return series.astype(object).where(series.notna(), None).tolist()
    return series.tolist()


def _decode(series: pd.Series, kind: str) -> pd.Series:
    if kind == "tuple":
        loaded = {v: tuple(json.loads(v)) for v in series.dropna().unique() if isinstance(v, str)}
        return series.map(lambda v: loaded.get(v, ()) if isinstance(v, str) else ())
    if kind == "bool":
        return series.fillna(False).astype(bool)
    if kind == "int":
        return series.astype("int64")
    if kind == "float":
        return series.astype("float64")
    return series.astype("str")


def _table(frame_name: str, columns: Sequence[tuple[str, str]]) -> sa.Table:
    return sa.Table(
        table_name(frame_name),
        sa.MetaData(),
        sa.Column(PARTITION_COLUMN, sa.Text, nullable=False, index=True),
        sa.Column(ROW_COLUMN, sa.BigInteger, nullable=False),
        *(sa.Column(name, _SQL_TYPES[kind]()) for name, kind in columns),
    )


def write_frame(
    conn: sa.Connection,
    frame_name: str,
    partition_key: str,
    frame: pd.DataFrame,
    *,
    run_id: str | None = None,
) -> None:
    """Replace the rows stored for (`frame_name`, `partition_key`) with `frame`.

    Runs on the caller's connection; call it inside a transaction (`engine.begin()`).
    """
    columns = [(str(c), _kind(frame[c])) for c in frame.columns]
    table = _table(frame_name, columns)
    inspector = sa.inspect(conn)
    if inspector.has_table(table.name):
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:  # a column added since the table was made
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN {ddl}'))
        conn.execute(sa.delete(table).where(table.c[PARTITION_COLUMN] == partition_key))
    else:
        table.create(conn)
    _insert_rows(
        conn, table, [c.name for c in table.columns], _row_chunks(frame, columns, partition_key)
    )
    conn.execute(
        sa.delete(catalog_table).where(
            (catalog_table.c.frame_name == frame_name)
            & (catalog_table.c.partition_key == partition_key)
        )
    )
    conn.execute(
        catalog_table.insert().values(
            frame_name=frame_name,
            partition_key=partition_key,
            columns=[list(c) for c in columns],
            row_count=len(frame),
            run_id=run_id,
        )
    )


def _row_chunks(
    frame: pd.DataFrame, columns: list[tuple[str, str]], partition_key: str
) -> Iterator[list[tuple[object, ...]]]:
    """The rows to store, a chunk at a time: only one chunk is ever held as Python objects."""
    for start in range(0, len(frame), _INSERT_CHUNK):
        part = frame.iloc[start : start + _INSERT_CHUNK]
        encoded = [_encode(part[name], kind) for name, kind in columns]
        numbers = range(start, start + len(part))
        yield list(zip(itertools.repeat(partition_key), numbers, *encoded, strict=False))


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


def stored_partitions(conn: sa.Connection, frame_name: str) -> set[str]:
    if not sa.inspect(conn).has_table(catalog_table.name):
        return set()
    rows = conn.execute(
        sa.select(catalog_table.c.partition_key).where(catalog_table.c.frame_name == frame_name)
    )
    return {r[0] for r in rows}


def read_frame(conn: sa.Connection, frame_name: str, partition_keys: Sequence[str]) -> pd.DataFrame:
    """The rows stored for `frame_name` on `partition_keys`, with their written dtypes.

    Raises:
        FrameNotStoredError: naming the days for which nothing is stored.
    """
    keys = list(dict.fromkeys(partition_keys))
    catalog = {}
    if sa.inspect(conn).has_table(catalog_table.name):
        rows = conn.execute(
            sa.select(catalog_table.c.partition_key, catalog_table.c.columns).where(
                (catalog_table.c.frame_name == frame_name) & catalog_table.c.partition_key.in_(keys)
            )
        )
        catalog = {key: columns for key, columns in rows}
    missing = [k for k in keys if k not in catalog]
    if missing:
        raise FrameNotStoredError(
            f"no {frame_name} is stored for {', '.join(missing)}; only a day whose snapshots "
            "were taken (by a reconciliation run on that day) can be recomputed"
        )
    # Each day is read with the columns it was written with, so a day stored before a column
    # was added reads back with that column missing (NA), not with values of another kind.
    days = [_read_day(conn, frame_name, key, [tuple(c) for c in catalog[key]]) for key in keys]
    return pd.concat(days, ignore_index=True) if len(days) > 1 else days[0]


def _read_day(
    conn: sa.Connection, frame_name: str, key: str, columns: list[tuple[str, str]]
) -> pd.DataFrame:
    names = [ROW_COLUMN, *(name for name, _ in columns)]
    parts = [
        pd.DataFrame(
            {
                ROW_COLUMN: part[ROW_COLUMN].to_numpy(dtype="int64"),
                **{name: _decode(part[name], kind) for name, kind in columns},
            }
        )
        for part in (
            pd.DataFrame.from_records(rows, columns=names, coerce_float=False)
            for rows in _select_rows(conn, _table(frame_name, columns), names, key)
        )
    ]
    if not parts:
        empty = pd.Series(dtype=object)
        return pd.DataFrame({name: _decode(empty, kind) for name, kind in columns})
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    del parts
    order = np.argsort(frame[ROW_COLUMN].to_numpy(), kind="stable")
    if not (order[1:] > order[:-1]).all():
        frame = frame.take(order)
    frame = frame.drop(columns=ROW_COLUMN)
    frame.index = np.arange(len(frame))
    return frame


def _select_rows(
    conn: sa.Connection, table: sa.Table, names: list[str], key: str
) -> Iterator[list[Any]]:
    """That day's rows as plain tuples, in storage order, a chunk at a time."""
    quote = conn.dialect.identifier_preparer.quote
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
    if mark is None or conn.dialect.name not in ("sqlite", "postgresql"):
        stmt = sa.select(*(table.c[n] for n in names)).where(table.c[PARTITION_COLUMN] == key)
        result = conn.execute(stmt)
        while rows := result.fetchmany(_INSERT_CHUNK):
            yield [tuple(row) for row in rows]
        return
    sql = (
        f"SELECT {', '.join(quote(n) for n in names)} FROM {quote(table.name)} "
        f"WHERE {quote(PARTITION_COLUMN)} = {mark}"
    )
    dbapi: Any = conn.connection.dbapi_connection
    if conn.dialect.driver == "psycopg" and not dbapi.autocommit:
        # A server-side cursor streams the rows, so the driver never holds the whole day.
        cursor = dbapi.cursor(name=f"recon_frame_read_{id(table):x}")
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql, (key,))
        while rows := cursor.fetchmany(_INSERT_CHUNK):
            yield rows
    finally:
        cursor.close()


def stored_row_count(conn: sa.Connection, frame_name: str, partition_key: str) -> int | None:
    """How many rows were stored for that day, or None when nothing was."""
    if not sa.inspect(conn).has_table(catalog_table.name):
        return None
    return conn.execute(
        sa.select(catalog_table.c.row_count).where(
            (catalog_table.c.frame_name == frame_name)
            & (catalog_table.c.partition_key == partition_key)
        )
    ).scalar()


def writer_runs(
    conn: sa.Connection, frame_names: Sequence[str], partition_key: str
) -> dict[str, str | None]:
    """For each frame, the run that stored that day's rows (None when nothing is stored)."""
    writers: dict[str, str | None] = dict.fromkeys(frame_names)
    if not sa.inspect(conn).has_table(catalog_table.name):
        return writers
    rows = conn.execute(
        sa.select(catalog_table.c.frame_name, catalog_table.c.run_id).where(
            catalog_table.c.frame_name.in_(list(frame_names))
            & (catalog_table.c.partition_key == partition_key)
        )
    )
    writers.update({name: run_id for name, run_id in rows})
    return writers
