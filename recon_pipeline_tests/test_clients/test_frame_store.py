"""Day-partitioned frames in the membership database, on SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.clients import frame_store
from recon_pipeline.clients.frame_store import (
    FrameNotStoredError,
    read_frame,
    stored_partitions,
    stored_row_count,
    write_frame,
    writer_runs,
)
from recon_pipeline.clients.membership_db import ensure_pipeline_tables, parse_database_url

DAY_1, DAY_2, DAY_3 = "2026-03-01", "2026-03-02", "2026-03-03"


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = parse_database_url(database_url).create_engine()
    ensure_pipeline_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _write(
    engine: sa.Engine, day: str, frame: pd.DataFrame, name: str = "snap", run_id: str | None = None
) -> None:
    with engine.begin() as conn:
        write_frame(conn, name, day, frame, run_id=run_id)


def _read(engine: sa.Engine, *days: str, name: str = "snap") -> pd.DataFrame:
    with engine.connect() as conn:
        return read_frame(conn, name, list(days))


def _mixed(offset: int = 0) -> pd.DataFrame:
    """Every kind of column the store keeps, with missing values where a kind allows them."""
    return pd.DataFrame(
        {
            "name": pd.Series([f"a{offset}", None, f"c{offset}"], dtype="str"),
            "flag": pd.Series([True, False, True], dtype="bool"),
            "count": pd.Series([offset, 2**62, -3], dtype="int64"),
            "ratio": pd.Series([0.1, np.nan, 2.5 + offset], dtype="float64"),
            "roles": pd.Series([("Knight", "Lord"), (), ("Squire",)], dtype=object),
        }
    )


def test_read_frame_round_trip_keeps_values_dtypes_and_row_order(engine: sa.Engine) -> None:
    frame = _mixed()

    _write(engine, DAY_1, frame)
    back = _read(engine, DAY_1)

    pd.testing.assert_frame_equal(back, frame)
    assert back["flag"].dtype == bool
    assert back["count"].dtype == "int64"
    assert back["ratio"].dtype == "float64"
    assert back["name"].isna().tolist() == [False, True, False]
    assert back["roles"].tolist() == [("Knight", "Lord"), (), ("Squire",)]


def test_read_frame_keeps_row_order_that_is_not_sorted(engine: sa.Engine) -> None:
    frame = pd.DataFrame({"id": pd.Series(["z", "a", "m", "b", "y"], dtype="str")})

    _write(engine, DAY_1, frame)

    assert _read(engine, DAY_1)["id"].tolist() == ["z", "a", "m", "b", "y"]


def test_write_frame_in_several_insert_chunks_keeps_every_row_in_order(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame_store, "_INSERT_CHUNK", 2)
    frame = pd.DataFrame({"n": pd.Series([5, 4, 3, 2, 1], dtype="int64")})

    _write(engine, DAY_1, frame)

    assert _read(engine, DAY_1)["n"].tolist() == [5, 4, 3, 2, 1]


def test_write_frame_rewriting_a_day_replaces_only_that_days_rows(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed(1))
    _write(engine, DAY_2, _mixed(2))
    replacement = _mixed(9).iloc[[2]].reset_index(drop=True)

    _write(engine, DAY_1, replacement)

    pd.testing.assert_frame_equal(_read(engine, DAY_1), replacement)
    pd.testing.assert_frame_equal(_read(engine, DAY_2), _mixed(2))
    with engine.connect() as conn:
        assert stored_row_count(conn, "snap", DAY_1) == 1
        assert stored_row_count(conn, "snap", DAY_2) == 3


def test_write_frame_keeps_frames_of_other_names_apart(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed(1), name="snap")
    _write(engine, DAY_1, pd.DataFrame({"x": pd.Series([1.5], dtype="float64")}), name="other")

    pd.testing.assert_frame_equal(_read(engine, DAY_1, name="snap"), _mixed(1))
    assert _read(engine, DAY_1, name="other")["x"].tolist() == [1.5]


def test_read_frame_of_several_days_concatenates_them(engine: sa.Engine) -> None:
    # Written out of order, so the rows' physical order is not the days' order.
    _write(engine, DAY_3, _mixed(3))
    _write(engine, DAY_2, _mixed(2))
    _write(engine, DAY_1, _mixed(1))

    both = _read(engine, DAY_1, DAY_3)

    expected = pd.concat([_mixed(1), _mixed(3)], ignore_index=True)
    pd.testing.assert_frame_equal(both, expected)


def test_read_frame_of_a_day_never_stored_names_the_day(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed())

    with pytest.raises(FrameNotStoredError, match=DAY_2) as raised:
        _read(engine, DAY_1, DAY_2)
    assert DAY_1 not in str(raised.value)
    with pytest.raises(FrameNotStoredError, match=DAY_1):
        _read(engine, DAY_1, name="never_written")


def test_read_frame_without_any_catalog_says_not_stored(database_url: str) -> None:
    engine = parse_database_url(database_url).create_engine()  # no pipeline tables at all
    try:
        with engine.connect() as conn, pytest.raises(FrameNotStoredError, match=DAY_1):
            read_frame(conn, "snap", [DAY_1])
    finally:
        engine.dispose()


def test_read_frame_empty_frame_round_trips_with_its_columns(engine: sa.Engine) -> None:
    empty = _mixed().iloc[0:0].drop(columns="roles")

    _write(engine, DAY_1, empty)
    back = _read(engine, DAY_1)

    assert len(back) == 0
    assert list(back.columns) == ["name", "flag", "count", "ratio"]
    assert back.dtypes.astype(str).to_dict() == empty.dtypes.astype(str).to_dict()
    with engine.connect() as conn:
        assert stored_row_count(conn, "snap", DAY_1) == 0


def test_write_frame_of_a_frame_that_gains_a_column_later(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed(1))
    grown = _mixed(2).assign(
        note=pd.Series(["x", None, "z"], dtype="str"),
        seen=pd.Series([False, True, False], dtype="bool"),
    )

    _write(engine, DAY_2, grown)

    pd.testing.assert_frame_equal(_read(engine, DAY_2), grown)
    pd.testing.assert_frame_equal(_read(engine, DAY_1), _mixed(1))


def test_read_frame_of_several_days_across_an_added_int_column(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed(1))
    _write(engine, DAY_2, _mixed(2).assign(extra=pd.Series([7, 8, 9], dtype="int64")))

    both = _read(engine, DAY_1, DAY_2)

    assert len(both) == 6
    pd.testing.assert_frame_equal(
        both[list(_mixed().columns)], pd.concat([_mixed(1), _mixed(2)], ignore_index=True)
    )
    assert both["extra"].tolist()[3:] == [7, 8, 9]


def test_stored_row_count_is_none_for_a_day_never_stored(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed())

    with engine.connect() as conn:
        assert stored_row_count(conn, "snap", DAY_1) == 3
        assert stored_row_count(conn, "snap", DAY_2) is None
        assert stored_row_count(conn, "other", DAY_1) is None


def test_stored_partitions_lists_the_days_of_one_frame(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed())
    _write(engine, DAY_3, _mixed())
    _write(engine, DAY_2, _mixed(), name="other")

    with engine.connect() as conn:
        assert stored_partitions(conn, "snap") == {DAY_1, DAY_3}
        assert stored_partitions(conn, "missing") == set()


def test_writer_runs_names_the_run_that_stored_each_frame(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed(), name="members", run_id="run-a")
    _write(engine, DAY_1, _mixed(), name="teams", run_id="run-a")
    _write(engine, DAY_1, _mixed(), name="teams", run_id="run-b")  # a later run replaced it
    _write(engine, DAY_2, _mixed(), name="guild", run_id="run-c")  # another day

    with engine.connect() as conn:
        writers = writer_runs(conn, ["members", "teams", "guild"], DAY_1)

    assert writers == {"members": "run-a", "teams": "run-b", "guild": None}


def test_writer_runs_without_a_run_id_is_none(engine: sa.Engine) -> None:
    _write(engine, DAY_1, _mixed(), run_id=None)

    with engine.connect() as conn:
        assert writer_runs(conn, ["snap"], DAY_1) == {"snap": None}


def test_write_frame_refuses_a_name_that_is_no_plain_identifier(engine: sa.Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="lower-case"):
        write_frame(conn, 'snap"; DROP TABLE x; --', DAY_1, _mixed())


def test_text_that_copy_must_escape_round_trips(engine: sa.Engine) -> None:
    # PostgreSQL gets these through COPY's text format, where tab, newline, backslash and \N
    # mean something; SQLite through plain parameters. Both must give back what was written.
    awkward = [
        "tab\there",
        "line\nbreak\r\nand return",
        "back\\slash \\N \\t",
        "\\N",
        "",
        None,
        "ünïcødé — 名前 🎉",
        "quote ' and \" and , comma",
    ]
    frame = pd.DataFrame(
        {
            "text": pd.Series(awkward, dtype="str"),
            "flag": pd.Series([True, False] * 4, dtype="bool"),
            "n": pd.Series(range(-4, 4), dtype="int64"),
            "x": pd.Series([0.5, np.nan, -1e300, 1e-300, 0.0, 2.0, 3.0, np.inf], dtype="float64"),
            "roles": pd.Series([("Knight",), (), ("a\tb", "c\\d"), ("ü",)] * 2, dtype=object),
        }
    )

    _write(engine, DAY_1, frame)
    back = _read(engine, DAY_1)

    pd.testing.assert_frame_equal(back, frame)
    assert back["text"].iloc[4] == "" and pd.isna(back["text"].iloc[5])  # "" is not NULL


def test_read_frame_restores_written_order_whatever_the_storage_order(engine: sa.Engine) -> None:
    frame = pd.DataFrame({"id": pd.Series([f"r{i}" for i in range(6)], dtype="str")})
    _write(engine, DAY_1, frame)
    table = frame_store.table_name("snap")
    with engine.begin() as conn:  # move the first rows to the end of the table's storage
        conn.execute(
            sa.text(f'CREATE TEMPORARY TABLE moved AS SELECT * FROM "{table}" WHERE "_row" < 2')
        )
        conn.execute(sa.text(f'DELETE FROM "{table}" WHERE "_row" < 2'))
        conn.execute(sa.text(f'INSERT INTO "{table}" SELECT * FROM moved'))

    assert _read(engine, DAY_1)["id"].tolist() == [f"r{i}" for i in range(6)]


def test_many_rows_round_trip_across_write_and_read_chunks(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame_store, "_INSERT_CHUNK", 7_000)  # 50,000 rows: 8 chunks each way
    n = 50_000
    frame = pd.DataFrame(
        {
            "id": pd.Series([f"mem_{i:07d}" for i in range(n)], dtype="str"),
            "roles": pd.Series([("Knight",) if i % 3 else () for i in range(n)], dtype=object),
            "n": pd.Series(np.arange(n)[::-1], dtype="int64"),
        }
    )

    _write(engine, DAY_1, frame)

    pd.testing.assert_frame_equal(_read(engine, DAY_1), frame)


def test_read_frame_on_an_autocommit_connection(engine: sa.Engine) -> None:
    # PostgreSQL streams reads through a server-side cursor inside the reader's transaction;
    # a connection without one still reads every row.
    _write(engine, DAY_1, _mixed())

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        back = read_frame(conn, "snap", [DAY_1])

    pd.testing.assert_frame_equal(back, _mixed())
