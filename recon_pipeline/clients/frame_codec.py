"""How a stored frame's columns are written and read back with the dtypes they had.

Each column gets a kind (str, bool, int, float, or tuple of role names) recorded in the frame's
catalog row; values are encoded to what every storage keeps (tuples as JSON array text) and
decoded by kind, so booleans stay booleans on SQLite and an empty frame keeps its columns.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pandas as pd

Columns = list[tuple[str, str]]  # (name, kind) in frame order

KINDS = ("str", "bool", "int", "float", "tuple")
CHUNK_ROWS = 50_000  # rows held as Python objects at a time, writing or reading


def column_kinds(frame: pd.DataFrame) -> Columns:
    return [(str(c), _kind(frame[c])) for c in frame.columns]


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


def encode(series: pd.Series, kind: str) -> list[object]:
    """The column's values as plain Python objects a database driver takes."""
    if kind == "tuple":
        return encode_tuples(series)
    if kind == "str":
        return series.astype(object).where(series.notna(), None).tolist()
    return series.tolist()


def encode_tuples(series: pd.Series) -> list[object]:
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


def decode(series: pd.Series, kind: str) -> pd.Series:
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


def empty_frame(columns: Columns) -> pd.DataFrame:
    empty = pd.Series(dtype=object)
    return pd.DataFrame({name: decode(empty, kind) for name, kind in columns})


def row_chunks(
    frame: pd.DataFrame, columns: Columns, *leading: object
) -> Iterator[list[tuple[object, ...]]]:
    """The rows to store, a chunk at a time (only one chunk is ever held as Python objects):
    `leading` values first, then the row number, then the encoded columns."""
    for start in range(0, len(frame), CHUNK_ROWS):
        part = frame.iloc[start : start + CHUNK_ROWS]
        encoded = [encode(part[name], kind) for name, kind in columns]
        numbers = range(start, start + len(part))
        repeated = [itertools.repeat(value) for value in leading]
        yield list(zip(*repeated, numbers, *encoded, strict=False))
