"""Day-partitioned DataFrames kept in the membership database, in the pipeline's own tables.

Each stored frame `name` lives in `recon_pipeline_frame_<name>` with a `_partition_key` column;
`recon_pipeline_frame_catalog` says which days are stored and each column's kind, so a frame
reads back with the dtypes it was written with (booleans stay booleans on SQLite; tuples of role
names round-trip through JSON). Writing a day replaces that day's rows in one transaction, so a
reader never sees half a snapshot. Because it lives in the database every Dagster process
already reaches, runs work the same under the multiprocess executor and across hosts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.membership_db import PREFIX
from recon_pipeline.clients.membership_db import frame_catalog_table as catalog_table

PARTITION_COLUMN = "_partition_key"
ROW_COLUMN = "_row"  # keeps the written row order
_INSERT_CHUNK = 20_000

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
        return [None if v is None else json.dumps(list(v)) for v in series.tolist()]
    if kind == "str":
        return series.astype(object).where(series.notna(), None).tolist()
    return series.tolist()


def _decode(series: pd.Series, kind: str) -> pd.Series:
    if kind == "tuple":
        return series.map(lambda v: tuple(json.loads(v)) if isinstance(v, str) else ())
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
    encoded = {name: _encode(frame[name], kind) for name, kind in columns}
    for start in range(0, len(frame), _INSERT_CHUNK):
        stop = min(start + _INSERT_CHUNK, len(frame))
        rows = [
            {
                PARTITION_COLUMN: partition_key,
                ROW_COLUMN: i,
                **{n: encoded[n][i] for n, _ in columns},
            }
            for i in range(start, stop)
        ]
        conn.execute(table.insert(), rows)
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
    table = _table(frame_name, columns)
    stmt = (
        sa.select(*(table.c[name] for name, _ in columns))
        .where(table.c[PARTITION_COLUMN] == key)
        .order_by(table.c[ROW_COLUMN])
    )
    frame = pd.DataFrame.from_records(conn.execute(stmt).all(), columns=[n for n, _ in columns])
    if not len(frame):
        frame = pd.DataFrame({name: pd.Series(dtype=object) for name, _ in columns})
    return pd.DataFrame(
        {name: _decode(frame[name], kind) for name, kind in columns},
        index=np.arange(len(frame)),
    )


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
