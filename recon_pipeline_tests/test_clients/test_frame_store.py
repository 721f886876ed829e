"""Stored frames that belong to the run that wrote them (`FrameStore`).

Every store test runs with the catalog on SQLite and on a real PostgreSQL; those about the rows
also run with the rows in tables of the same database and in Parquet files under `tmp_path`.
Covered: round trips (dtypes, awkward text through PostgreSQL's COPY, row order, chunked writes
and reads, empty frames, a frame that gains a column), names refused, runs of one day kept
apart (also when two write the same frame at once), the run a reader reads (`choose_source`),
frames damaged behind the store's back, retention (`delete_days_before`) and adopting frames
stored by earlier, day-keyed versions (`adopt_day_keyed_frames`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from recon_pipeline.clients import frame_bodies, frame_codec
from recon_pipeline.clients.frame_bodies import (
    PARTITION_COLUMN,
    RUN_COLUMN,
    SqlFrameBodies,
    open_frame_bodies,
    table_name,
)
from recon_pipeline.clients.frame_codec import column_kinds
from recon_pipeline.clients.frame_store import (
    LEGACY_RUN_ID,
    FrameDamagedError,
    FrameNotStoredError,
    FrameStore,
    adopt_day_keyed_frames,
)
from recon_pipeline.clients.membership_db import (
    ensure_pipeline_tables,
    json_type,
    parse_database_url,
    reconciliation_run_table,
    timestamp_type,
)
from recon_pipeline.domain.provenance import STORED

DAY_1, DAY_2, DAY_3 = "2026-03-01", "2026-03-02", "2026-03-03"
UNDATED = "latest"
MEMBERS, TEAMS = "members", "teams"


@pytest.fixture
def catalog(database_url: str) -> Iterator[sa.Engine]:
    engine = parse_database_url(database_url).create_engine()
    ensure_pipeline_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=["sql", "parquet"])
def store(
    request: pytest.FixtureRequest, catalog: sa.Engine, tmp_path: Path
) -> Iterator[FrameStore]:
    """The store with its rows in tables of the catalog's database, or in Parquet files."""
    storage_url = None if request.param == "sql" else str(tmp_path / "frames")
    store = FrameStore(catalog, open_frame_bodies(storage_url, catalog))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def sql_store(catalog: sa.Engine) -> FrameStore:
    """The store with its rows in tables of the catalog's database."""
    return FrameStore(catalog, SqlFrameBodies(catalog))


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


def _numbers(*values: int) -> pd.DataFrame:
    return pd.DataFrame({"n": pd.Series(values, dtype="int64")})


def _tagged(tag: str, rows: int) -> pd.DataFrame:
    """`rows` rows that all say which writer they came from."""
    return pd.DataFrame(
        {
            "writer": pd.Series([tag] * rows, dtype="str"),
            "i": pd.Series(range(rows), dtype="int64"),
        }
    )


def _let_the_clock_tick() -> None:
    """Catalog times are kept to the millisecond on PostgreSQL: make the next write later."""
    time.sleep(0.01)


def _is_sql(store: FrameStore) -> bool:
    return isinstance(store.bodies, SqlFrameBodies)


def _parquet_path(store: FrameStore, name: str, day: str, run_id: str) -> Path:
    return Path(store.bodies.where) / name / day / f"{run_id}.parquet"


def _rows_kept(store: FrameStore, name: str, day: str, run_id: str) -> int:
    """How many rows of the frame the storage still holds, whatever the catalog says."""
    if not _is_sql(store):
        path = _parquet_path(store, name, day, run_id)
        return pq.read_metadata(path).num_rows if path.exists() else 0
    count = sa.text(
        f'SELECT count(*) FROM "{table_name(name)}" WHERE "_partition_key" = :day '
        'AND "_run_id" = :run'
    )
    with store.catalog.connect() as conn:
        return conn.execute(count, {"day": day, "run": run_id}).scalar_one()


def _lose_rows(store: FrameStore, name: str, day: str, run_id: str, keep: int) -> None:
    """Delete all but the first `keep` rows of a stored frame without telling the store."""
    if not _is_sql(store):
        path = _parquet_path(store, name, day, run_id)
        pq.write_table(pq.read_table(path).slice(0, keep), path)
        return
    delete = sa.text(
        f'DELETE FROM "{table_name(name)}" WHERE "_partition_key" = :day '
        'AND "_run_id" = :run AND "_row" >= :keep'
    )
    with store.catalog.begin() as conn:
        conn.execute(delete, {"day": day, "run": run_id, "keep": keep})


# --- Round trips -------------------------------------------------------------------------------


def test_read_gives_back_the_values_dtypes_and_row_order_written(store: FrameStore) -> None:
    frame = _mixed()

    store.write("snap", DAY_1, "run-a", frame)
    back = store.read("snap", DAY_1, "run-a")

    pd.testing.assert_frame_equal(back, frame)
    assert back["flag"].dtype == bool
    assert back["count"].dtype == "int64"
    assert back["ratio"].dtype == "float64"
    assert back["name"].isna().tolist() == [False, True, False]
    assert back["roles"].tolist() == [("Knight", "Lord"), (), ("Squire",)]


def test_read_keeps_row_order_that_is_not_sorted(store: FrameStore) -> None:
    frame = pd.DataFrame({"id": pd.Series(["z", "a", "m", "b", "y"], dtype="str")})

    store.write("snap", DAY_1, "run-a", frame)

    assert store.read("snap", DAY_1, "run-a")["id"].tolist() == ["z", "a", "m", "b", "y"]


def test_text_that_copy_must_escape_round_trips(store: FrameStore) -> None:
    # PostgreSQL gets these through COPY's text format, where tab, newline, backslash and \N
    # mean something; SQLite through plain parameters; Parquet as is. All give back the same.
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

    store.write("snap", DAY_1, "run-a", frame)
    back = store.read("snap", DAY_1, "run-a")

    pd.testing.assert_frame_equal(back, frame)
    assert back["text"].iloc[4] == "" and pd.isna(back["text"].iloc[5])  # "" is not NULL


def test_write_in_several_chunks_keeps_every_row_in_order(
    store: FrameStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame_codec, "CHUNK_ROWS", 2)
    monkeypatch.setattr(frame_bodies, "CHUNK_ROWS", 2)

    store.write("snap", DAY_1, "run-a", _numbers(5, 4, 3, 2, 1))

    assert store.read("snap", DAY_1, "run-a")["n"].tolist() == [5, 4, 3, 2, 1]


def test_many_rows_round_trip_across_write_and_read_chunks(
    store: FrameStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame_codec, "CHUNK_ROWS", 7_000)  # 50,000 rows: 8 chunks each way
    monkeypatch.setattr(frame_bodies, "CHUNK_ROWS", 7_000)
    n = 50_000
    frame = pd.DataFrame(
        {
            "id": pd.Series([f"mem_{i:07d}" for i in range(n)], dtype="str"),
            "roles": pd.Series([("Knight",) if i % 3 else () for i in range(n)], dtype=object),
            "n": pd.Series(np.arange(n)[::-1], dtype="int64"),
        }
    )

    store.write("snap", DAY_1, "run-a", frame)

    pd.testing.assert_frame_equal(store.read("snap", DAY_1, "run-a"), frame)


def test_empty_frame_round_trips_with_its_columns(store: FrameStore) -> None:
    empty = _mixed().iloc[0:0].drop(columns="roles")

    store.write("snap", DAY_1, "run-a", empty)
    back = store.read("snap", DAY_1, "run-a")

    assert len(back) == 0
    assert list(back.columns) == ["name", "flag", "count", "ratio"]
    assert back.dtypes.astype(str).to_dict() == empty.dtypes.astype(str).to_dict()
    entry = store.entry("snap", DAY_1, "run-a")
    assert (entry.row_count, entry.columns) == (0, column_kinds(empty))


def test_a_frame_that_gains_columns_later_reads_back_both_ways(store: FrameStore) -> None:
    store.write("snap", DAY_1, "run-a", _mixed(1))
    grown = _mixed(2).assign(
        note=pd.Series(["x", None, "z"], dtype="str"),
        seen=pd.Series([False, True, False], dtype="bool"),
    )

    store.write("snap", DAY_2, "run-b", grown)

    pd.testing.assert_frame_equal(store.read("snap", DAY_2, "run-b"), grown)
    pd.testing.assert_frame_equal(store.read("snap", DAY_1, "run-a"), _mixed(1))


def test_frames_of_other_names_are_kept_apart(store: FrameStore) -> None:
    store.write("snap", DAY_1, "run-a", _mixed(1))
    store.write("other", DAY_1, "run-a", pd.DataFrame({"x": pd.Series([1.5], dtype="float64")}))

    pd.testing.assert_frame_equal(store.read("snap", DAY_1, "run-a"), _mixed(1))
    assert store.read("other", DAY_1, "run-a")["x"].tolist() == [1.5]


def test_a_frame_with_any_index_reads_back_in_row_order(store: FrameStore) -> None:
    frame = _mixed().iloc[[2, 0]]  # as filtering or sorting leaves it: index [2, 0]

    store.write("snap", DAY_1, "run-a", frame)

    pd.testing.assert_frame_equal(store.read("snap", DAY_1, "run-a"), frame.reset_index(drop=True))


def test_a_frame_name_as_long_as_any_accepted_is_stored(store: FrameStore) -> None:
    longest = "f" * 30
    with pytest.raises(ValueError, match="lower-case"):
        table_name(longest + "f")

    store.write(longest, DAY_1, "run-a", _numbers(1, 2))

    assert store.read(longest, DAY_1, "run-a")["n"].tolist() == [1, 2]


def test_write_refuses_a_name_that_is_no_plain_identifier(store: FrameStore) -> None:
    bad = 'snap"; DROP TABLE x; --'

    with pytest.raises(ValueError, match="lower-case"):
        store.write(bad, DAY_1, "run-a", _mixed())

    assert store.entry(bad, DAY_1, "run-a") is None


def test_parquet_refuses_a_run_id_that_would_leave_its_folder(
    catalog: sa.Engine, tmp_path: Path
) -> None:
    store = FrameStore(catalog, open_frame_bodies(str(tmp_path / "frames"), catalog))

    with pytest.raises(ValueError, match="unusable day or run id"):
        store.write("snap", DAY_1, "../../escaped", _mixed())

    assert not list(tmp_path.rglob("*.parquet"))


def test_write_refuses_attrs_that_cannot_be_stored_before_writing_any_row(
    store: FrameStore,
) -> None:
    frame = _mixed()
    frame.attrs["opened"] = object()

    with pytest.raises(TypeError):
        store.write("snap", DAY_1, "run-a", frame)

    assert store.entry("snap", DAY_1, "run-a") is None
    if not _is_sql(store):
        assert not _parquet_path(store, "snap", DAY_1, "run-a").exists()
    else:
        assert not sa.inspect(store.catalog).has_table(table_name("snap"))


def test_read_of_a_frame_never_stored_names_frame_day_and_run(store: FrameStore) -> None:
    store.write("snap", DAY_1, "run-a", _mixed())

    with pytest.raises(FrameNotStoredError) as other_run:
        store.read("snap", DAY_1, "run-b")
    with pytest.raises(FrameNotStoredError) as other_day:
        store.read("snap", DAY_2, "run-a")
    with pytest.raises(FrameNotStoredError) as other_name:
        store.read("never_written", DAY_1, "run-a")

    assert all(s in str(other_run.value) for s in ("snap", DAY_1, "run-b"))
    assert all(s in str(other_day.value) for s in ("snap", DAY_2, "run-a"))
    assert all(s in str(other_name.value) for s in ("never_written", DAY_1, "run-a"))


def test_read_restores_written_order_whatever_the_storage_order(sql_store: FrameStore) -> None:
    frame = pd.DataFrame({"id": pd.Series([f"r{i}" for i in range(6)], dtype="str")})
    sql_store.write("snap", DAY_1, "run-a", frame)
    table = table_name("snap")
    with sql_store.catalog.begin() as conn:  # move the first rows to the end of the storage
        conn.execute(
            sa.text(f'CREATE TEMPORARY TABLE moved AS SELECT * FROM "{table}" WHERE "_row" < 2')
        )
        conn.execute(sa.text(f'DELETE FROM "{table}" WHERE "_row" < 2'))
        conn.execute(sa.text(f'INSERT INTO "{table}" SELECT * FROM moved'))
        stored = conn.execute(sa.text(f'SELECT "id" FROM "{table}"')).scalars().all()
    assert stored != frame["id"].tolist()  # the storage order really differs

    assert sql_store.read("snap", DAY_1, "run-a")["id"].tolist() == frame["id"].tolist()


def test_read_through_an_autocommit_engine_gets_every_row(
    sql_store: FrameStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL streams reads through a server-side cursor inside a transaction; a connection
    # in autocommit mode has none, and still reads every row (across several fetches).
    monkeypatch.setattr(frame_bodies, "CHUNK_ROWS", 2)
    sql_store.write("snap", DAY_1, "run-a", _mixed())
    autocommit = sql_store.catalog.execution_options(isolation_level="AUTOCOMMIT")
    reader = FrameStore(autocommit, SqlFrameBodies(autocommit))

    pd.testing.assert_frame_equal(reader.read("snap", DAY_1, "run-a"), _mixed())


# --- The catalog -------------------------------------------------------------------------------


def test_read_carries_the_frames_attrs_and_its_catalog_entry(store: FrameStore) -> None:
    frame = _mixed()
    frame.attrs = {"snapshot": {"taken_at": "2026-03-01T10:00:00"}, "note": [1, "two"]}

    store.write("snap", DAY_1, "run-a", frame)
    back = store.read("snap", DAY_1, "run-a")

    written_at = store.entry("snap", DAY_1, "run-a").written_at  # as the catalog keeps it
    assert back.attrs == {
        "snapshot": {"taken_at": "2026-03-01T10:00:00"},
        "note": [1, "two"],
        STORED: {
            "frame": "snap",
            "day": DAY_1,
            "run_id": "run-a",
            "row_count": 3,
            "written_at": written_at.isoformat(),
        },
    }


def test_a_loaded_frame_written_again_keeps_only_its_own_attrs(store: FrameStore) -> None:
    frame = _mixed()
    frame.attrs = {"note": "kept"}
    store.write("snap", DAY_1, "run-a", frame)
    loaded = store.read("snap", DAY_1, "run-a")

    entry = store.write("snap", DAY_1, "run-b", loaded)

    assert entry.attrs == {"note": "kept"}
    assert store.read("snap", DAY_1, "run-b").attrs[STORED]["run_id"] == "run-b"


def test_entries_and_latest_writer_list_what_is_stored(store: FrameStore) -> None:
    store.write(MEMBERS, DAY_1, "run-z", _numbers(1, 2))
    _let_the_clock_tick()
    store.write(TEAMS, DAY_1, "run-z", _numbers(3))
    _let_the_clock_tick()
    store.write(TEAMS, DAY_1, "run-a", _numbers(4, 5, 6))  # a later run of the same day
    store.write(MEMBERS, DAY_2, "run-c", _numbers(7))  # another day

    stored = [(e.name, e.run_id, e.row_count) for e in store.entries(DAY_1)]
    assert stored == [(MEMBERS, "run-z", 2), (TEAMS, "run-z", 1), (TEAMS, "run-a", 3)]
    assert [e.run_id for e in store.entries(DAY_1, names=[TEAMS])] == ["run-z", "run-a"]
    assert [e.name for e in store.entries(DAY_1, run_ids=["run-a"])] == [TEAMS]
    assert store.latest_writer(TEAMS, DAY_1) == "run-a"
    assert store.latest_writer(MEMBERS, DAY_1) == "run-z"
    assert store.latest_writer(MEMBERS, DAY_3) is None
    assert store.entry(MEMBERS, DAY_1, "run-a") is None


# --- Runs of one day ---------------------------------------------------------------------------


def test_two_runs_of_one_day_each_read_back_their_own_rows_and_attrs(store: FrameStore) -> None:
    first, second = _mixed(1), _mixed(2).iloc[[0, 2]].reset_index(drop=True)
    first.attrs, second.attrs = {"by": "run-a"}, {"by": "run-b"}

    store.write("snap", DAY_1, "run-a", first)
    store.write("snap", DAY_1, "run-b", second)

    back_a, back_b = store.read("snap", DAY_1, "run-a"), store.read("snap", DAY_1, "run-b")
    pd.testing.assert_frame_equal(back_a, first)
    pd.testing.assert_frame_equal(back_b, second)
    assert back_a.attrs["by"] == "run-a" and back_b.attrs["by"] == "run-b"


def test_rewriting_by_one_run_replaces_only_its_own_frame(store: FrameStore) -> None:
    store.write("snap", DAY_1, "run-a", _mixed(1))
    store.write("snap", DAY_1, "run-b", _mixed(2))
    store.write("snap", DAY_2, "run-a", _mixed(3))
    replacement = _mixed(9).iloc[[2]].reset_index(drop=True)

    store.write("snap", DAY_1, "run-a", replacement)

    pd.testing.assert_frame_equal(store.read("snap", DAY_1, "run-a"), replacement)
    pd.testing.assert_frame_equal(store.read("snap", DAY_1, "run-b"), _mixed(2))
    pd.testing.assert_frame_equal(store.read("snap", DAY_2, "run-a"), _mixed(3))
    assert store.entry("snap", DAY_1, "run-a").row_count == 1
    assert _rows_kept(store, "snap", DAY_1, "run-a") == 1


def test_two_runs_writing_one_frame_at_once_each_read_back_their_own(
    store: FrameStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first round races to create the frame's table too; later rounds race on rows only.
    monkeypatch.setattr(frame_codec, "CHUNK_ROWS", 50)  # many small inserts to interleave
    frames = {"run-a": _tagged("run-a", 300), "run-b": _tagged("run-b", 200)}

    for day in (DAY_1, DAY_2, DAY_3):
        start = threading.Barrier(len(frames))

        def write(run_id: str, day: str = day, start: threading.Barrier = start) -> None:
            start.wait(timeout=30)
            store.write("snap", day, run_id, frames[run_id])

        with ThreadPoolExecutor(max_workers=len(frames)) as pool:
            for done in [pool.submit(write, run_id) for run_id in frames]:
                done.result(timeout=120)

        for run_id, frame in frames.items():
            pd.testing.assert_frame_equal(store.read("snap", day, run_id), frame)


# --- Choosing the run a reader reads -----------------------------------------------------------


def _store_snapshots(store: FrameStore, day: str, run_id: str, *names: str) -> None:
    for name in names:
        store.write(name, day, run_id, _tagged(run_id, 2))
    _let_the_clock_tick()


def test_choose_source_picks_the_days_last_run_that_stored_every_frame(
    sql_store: FrameStore,
) -> None:
    # Named so that the later run sorts first: only the write times can pick it.
    _store_snapshots(sql_store, DAY_1, "run-z", MEMBERS, TEAMS)
    _store_snapshots(sql_store, DAY_1, "run-a", MEMBERS, TEAMS)
    _store_snapshots(sql_store, DAY_2, "run-other-day", MEMBERS, TEAMS)

    assert sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS]) == "run-a"


def test_choose_source_skips_a_run_that_stored_only_some_frames(sql_store: FrameStore) -> None:
    _store_snapshots(sql_store, DAY_1, "run-complete", MEMBERS, TEAMS)
    _store_snapshots(sql_store, DAY_1, "run-partial", MEMBERS)

    assert sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS]) == "run-complete"


def test_choose_source_keeps_a_readers_choice_after_a_newer_run_completes(
    sql_store: FrameStore,
) -> None:
    _store_snapshots(sql_store, DAY_1, "run-first", MEMBERS, TEAMS)
    assert sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS]) == "run-first"

    _store_snapshots(sql_store, DAY_1, "run-second", MEMBERS, TEAMS)

    assert sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS]) == "run-first"
    assert sql_store.choose_source("new-reader", DAY_1, [MEMBERS, TEAMS]) == "run-second"


def test_choose_source_without_a_complete_run_names_the_day_and_remembers_nothing(
    sql_store: FrameStore,
) -> None:
    _store_snapshots(sql_store, DAY_1, "run-a", MEMBERS)
    _store_snapshots(sql_store, DAY_1, "run-b", TEAMS)
    _store_snapshots(sql_store, DAY_2, "run-c", MEMBERS, TEAMS)

    with pytest.raises(FrameNotStoredError, match=DAY_1):
        sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS])

    _store_snapshots(sql_store, DAY_1, "run-d", MEMBERS, TEAMS)
    assert sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS]) == "run-d"


# --- Damage ------------------------------------------------------------------------------------


def test_a_frame_with_rows_deleted_behind_the_stores_back_is_damaged(store: FrameStore) -> None:
    store.write("snap", DAY_1, "run-a", _numbers(1, 2, 3, 4, 5))
    _lose_rows(store, "snap", DAY_1, "run-a", keep=2)

    with pytest.raises(FrameDamagedError, match=r"reads back 2 row\(s\), but 5 were stored") as e:
        store.read("snap", DAY_1, "run-a")

    assert all(s in str(e.value) for s in ("snap", DAY_1, "run-a"))


def test_a_frame_whose_rows_are_no_longer_where_the_storage_points_is_damaged(
    catalog: sa.Engine, tmp_path: Path
) -> None:
    """The storage setting changed after the frame was written: the catalog still lists it."""
    before = FrameStore(catalog, open_frame_bodies(str(tmp_path / "before"), catalog))
    before.write("snap", DAY_1, "run-a", _numbers(1, 2, 3))
    moved = FrameStore(catalog, open_frame_bodies(str(tmp_path / "after"), catalog))

    with pytest.raises(FrameDamagedError, match="RECONCILIATION_STORAGE_URL changed") as e:
        moved.read("snap", DAY_1, "run-a")

    assert all(s in str(e.value) for s in ("snap", DAY_1, "run-a", str(tmp_path / "after")))


# --- Retention ---------------------------------------------------------------------------------

LONG_AGO = dt.datetime(2000, 1, 1)


def test_delete_days_before_deletes_older_days_and_keeps_the_rest(store: FrameStore) -> None:
    for day in (DAY_1, DAY_2, DAY_3):
        for run_id in ("run-a", "run-b"):
            _store_snapshots(store, day, run_id, MEMBERS, TEAMS)

    result = store.delete_days_before(DAY_3, latest_before=LONG_AGO)

    assert result.days == [DAY_1, DAY_2]
    assert result.frames == 8
    assert store.entries(DAY_1) == [] and store.entries(DAY_2) == []
    for day in (DAY_1, DAY_2):
        assert _rows_kept(store, MEMBERS, day, "run-a") == 0
        with pytest.raises(FrameNotStoredError):
            store.read(MEMBERS, day, "run-a")
    assert len(store.entries(DAY_3)) == 4
    for run_id in ("run-a", "run-b"):
        for name in (MEMBERS, TEAMS):
            pd.testing.assert_frame_equal(store.read(name, DAY_3, run_id), _tagged(run_id, 2))


def test_delete_days_before_deletes_rows_the_catalog_never_listed(store: FrameStore) -> None:
    # A writer that died after storing the rows and before cataloguing them.
    frame = _numbers(1, 2, 3)
    store.bodies.write(MEMBERS, DAY_1, "run-died", frame, column_kinds(frame))
    store.bodies.write(MEMBERS, DAY_3, "run-died", frame, column_kinds(frame))

    store.delete_days_before(DAY_2, latest_before=LONG_AGO)

    assert _rows_kept(store, MEMBERS, DAY_1, "run-died") == 0
    assert _rows_kept(store, MEMBERS, DAY_3, "run-died") == 3


def test_delete_days_before_deletes_in_small_batches_to_the_last_row(store: FrameStore) -> None:
    for day in (DAY_1, DAY_2, DAY_3):
        for run_id in ("run-a", "run-b"):
            store.write(MEMBERS, day, run_id, _numbers(*range(5)))

    result = store.delete_days_before(DAY_3, latest_before=LONG_AGO, batch_rows=2)

    for day in (DAY_1, DAY_2):
        for run_id in ("run-a", "run-b"):
            assert _rows_kept(store, MEMBERS, day, run_id) == 0
    assert _rows_kept(store, MEMBERS, DAY_3, "run-a") == 5
    assert result.body_rows == (20 if _is_sql(store) else 4)  # rows, or Parquet files


def test_delete_days_before_never_touches_reconciliation_runs(store: FrameStore) -> None:
    reconciliation_run_table.create(store.catalog, checkfirst=True)
    run = {
        "id": "run-a",
        "startedAt": dt.datetime(2026, 3, 1, 4, 0),
        "completedAt": dt.datetime(2026, 3, 1, 4, 5),
        "triggeredBy": "scheduled",
        "issues": [{"type": "missing_role"}],
    }
    with store.catalog.begin() as conn:
        conn.execute(reconciliation_run_table.insert().values(**run))
    _store_snapshots(store, DAY_1, "run-a", MEMBERS)

    store.delete_days_before(DAY_3, latest_before=dt.datetime(2100, 1, 1))

    with store.catalog.connect() as conn:
        kept = conn.execute(sa.select(reconciliation_run_table)).mappings().all()
    assert [{k: row[k] for k in run} for row in kept] == [run]
    assert store.entries(DAY_1) == []


def test_delete_days_before_deletes_undated_frames_written_before_latest_before(
    store: FrameStore,
) -> None:
    store.write(MEMBERS, UNDATED, "run-old", _numbers(1))
    _let_the_clock_tick()
    store.write(MEMBERS, UNDATED, "run-new", _numbers(2))
    latest_before = store.entry(MEMBERS, UNDATED, "run-new").written_at  # as the catalog keeps it

    result = store.delete_days_before(DAY_3, latest_before=latest_before)

    assert store.entry(MEMBERS, UNDATED, "run-old") is None
    assert _rows_kept(store, MEMBERS, UNDATED, "run-old") == 0
    assert store.read(MEMBERS, UNDATED, "run-new")["n"].tolist() == [2]
    assert result.frames == 1 and result.days == []


def test_delete_days_before_forgets_the_choices_of_deleted_days(sql_store: FrameStore) -> None:
    _store_snapshots(sql_store, DAY_1, "run-a", MEMBERS, TEAMS)
    _store_snapshots(sql_store, DAY_3, "run-a", MEMBERS, TEAMS)
    assert sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS]) == "run-a"
    assert sql_store.choose_source("reader", DAY_3, [MEMBERS, TEAMS]) == "run-a"

    sql_store.delete_days_before(DAY_2, latest_before=LONG_AGO)

    with pytest.raises(FrameNotStoredError, match=DAY_1):
        sql_store.choose_source("reader", DAY_1, [MEMBERS, TEAMS])
    assert sql_store.choose_source("reader", DAY_3, [MEMBERS, TEAMS]) == "run-a"


# --- Frames stored by earlier, day-keyed versions ----------------------------------------------

OLD_CATALOG = "recon_pipeline_frame_catalog"
OLD_COLUMNS = [["id", "str"], ["active", "bool"], ["roles", "tuple"]]


def _old_layout(engine: sa.Engine) -> tuple[sa.Table, sa.Table]:
    """The old catalog and an old frame table (no `_run_id`), as earlier versions made them."""
    metadata = sa.MetaData()
    catalog = sa.Table(
        OLD_CATALOG,
        metadata,
        sa.Column("frame_name", sa.Text, primary_key=True),
        sa.Column("partition_key", sa.Text, primary_key=True),
        sa.Column("columns", json_type, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.Text, nullable=True),
        sa.Column("written_at", timestamp_type, nullable=False, server_default=sa.func.now()),
    )
    rows = sa.Table(
        table_name(MEMBERS),
        metadata,
        sa.Column("_partition_key", sa.Text, nullable=False, index=True),
        sa.Column("_row", sa.BigInteger, nullable=False),
        sa.Column("id", sa.Text),
        sa.Column("active", sa.Boolean),
        sa.Column("roles", sa.Text),
    )
    metadata.create_all(engine)
    return catalog, rows


def _old_members(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="str"),
            "active": pd.Series([i % 2 == 0 for i in range(len(ids))], dtype="bool"),
            "roles": pd.Series([("Knight",) if i % 2 else () for i in range(len(ids))]),
        }
    )


def _store_the_old_way(
    engine: sa.Engine, day: str, run_id: str | None, frame: pd.DataFrame
) -> None:
    catalog, rows = _old_layout(engine)
    values = [
        {
            "_partition_key": day,
            "_row": i,
            "id": member.id,
            "active": member.active,
            "roles": "[]" if not member.roles else f'["{member.roles[0]}"]',
        }
        for i, member in reversed(list(enumerate(frame.itertuples())))  # stored last row first
    ]
    entry = {"frame_name": MEMBERS, "partition_key": day, "columns": OLD_COLUMNS}
    with engine.begin() as conn:
        conn.execute(rows.insert(), values)
        conn.execute(catalog.insert().values(**entry, row_count=len(frame), run_id=run_id))


def test_adopt_day_keyed_frames_reads_old_frames_back_under_their_run(
    sql_store: FrameStore,
) -> None:
    engine = sql_store.catalog
    named, anonymous = _old_members(["m1", "m2", "m3"]), _old_members(["m4", "m5"])
    _store_the_old_way(engine, DAY_1, "run-old", named)
    _store_the_old_way(engine, DAY_2, None, anonymous)

    assert adopt_day_keyed_frames(engine) == 2

    pd.testing.assert_frame_equal(sql_store.read(MEMBERS, DAY_1, "run-old"), named)
    pd.testing.assert_frame_equal(sql_store.read(MEMBERS, DAY_2, LEGACY_RUN_ID), anonymous)
    assert sql_store.latest_writer(MEMBERS, DAY_1) == "run-old"
    assert not sa.inspect(engine).has_table(OLD_CATALOG)


def test_adopted_frames_live_alongside_frames_of_new_runs(sql_store: FrameStore) -> None:
    engine = sql_store.catalog
    old = _old_members(["m1", "m2"])
    _store_the_old_way(engine, DAY_1, "run-old", old)
    adopt_day_keyed_frames(engine)

    sql_store.write(MEMBERS, DAY_1, "run-new", _old_members(["n1"]))

    pd.testing.assert_frame_equal(sql_store.read(MEMBERS, DAY_1, "run-old"), old)
    pd.testing.assert_frame_equal(sql_store.read(MEMBERS, DAY_1, "run-new"), _old_members(["n1"]))


def test_adopt_day_keyed_frames_a_second_time_adopts_nothing(sql_store: FrameStore) -> None:
    engine = sql_store.catalog
    old = _old_members(["m1", "m2"])
    _store_the_old_way(engine, DAY_1, "run-old", old)
    assert adopt_day_keyed_frames(engine) == 1

    assert adopt_day_keyed_frames(engine) == 0

    pd.testing.assert_frame_equal(sql_store.read(MEMBERS, DAY_1, "run-old"), old)
    assert [e.run_id for e in sql_store.entries(DAY_1)] == ["run-old"]


def test_adopt_day_keyed_frames_without_old_frames_adopts_nothing(catalog: sa.Engine) -> None:
    assert adopt_day_keyed_frames(catalog) == 0


def _day_and_run_indexed(engine: sa.Engine) -> bool:
    indexes = sa.inspect(engine).get_indexes(table_name(MEMBERS))
    return ["_partition_key", "_run_id"] in [index["column_names"] for index in indexes]


def test_a_new_frame_table_is_indexed_by_day_and_run(sql_store: FrameStore) -> None:
    sql_store.write(MEMBERS, DAY_1, "run-new", _old_members(["n1"]))

    assert _day_and_run_indexed(sql_store.catalog)


def test_an_adopted_frame_table_is_indexed_by_day_and_run(sql_store: FrameStore) -> None:
    _store_the_old_way(sql_store.catalog, DAY_1, "run-old", _old_members(["m1"]))
    adopt_day_keyed_frames(sql_store.catalog)

    sql_store.write(MEMBERS, DAY_2, "run-new", _old_members(["n1"]))

    assert _day_and_run_indexed(sql_store.catalog)


def _block_changes_to(conn: sa.Connection, table: str) -> None:
    """Until `conn`'s transaction ends, no other connection can alter `table` (SQLite: the
    database's write lock; PostgreSQL: a share lock on the table)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql(f'LOCK TABLE "{table}" IN ACCESS SHARE MODE')


def _signal_alter_table(engine: sa.Engine, seen: threading.Semaphore) -> None:
    def observe(conn: sa.Connection, cursor: object, statement: str, *rest: object) -> None:
        if statement.lstrip().upper().startswith("ALTER TABLE"):
            seen.release()

    sa.event.listen(engine, "before_cursor_execute", observe)


def test_adopt_day_keyed_frames_from_two_processes_at_once(database_url: str) -> None:
    engines = [parse_database_url(database_url).create_engine() for _ in range(3)]
    gate, *adopters = engines
    try:
        ensure_pipeline_tables(gate)
        old = _old_members(["m1", "m2"])
        _store_the_old_way(gate, DAY_1, "run-old", old)
        altering = threading.Semaphore(0)
        for engine in adopters:
            _signal_alter_table(engine, altering)

        with gate.connect() as held, ThreadPoolExecutor(max_workers=len(adopters)) as pool:
            _block_changes_to(held, table_name(MEMBERS))
            adoptions = [pool.submit(adopt_day_keyed_frames, engine) for engine in adopters]
            # Once both ask to alter the frame table, both have read the old catalog; an
            # adoption that serialises itself never lets the second get that far.
            for _ in adopters:
                altering.acquire(timeout=5)
            held.rollback()
            adopted = [adoption.result(timeout=60) for adoption in adoptions]

        assert sorted(adopted) == [0, 1]  # one adopted the frame; the other found it done
        store = FrameStore(gate, SqlFrameBodies(gate))
        pd.testing.assert_frame_equal(store.read(MEMBERS, DAY_1, "run-old"), old)
    finally:
        for engine in engines:
            engine.dispose()


def _people(*rows: tuple[str, str | None, tuple[str, ...]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series([r[0] for r in rows], dtype="str"),
            "email": pd.Series([r[1] for r in rows], dtype="str"),
            "roles": pd.Series([r[2] for r in rows], dtype=object),
        }
    )


def test_read_matching_returns_the_rows_containing_a_text_of_the_runs_asked_for(
    store: FrameStore,
) -> None:
    store.write("people", DAY_1, "run-a", _people(("m1", "Ann@Example.com", ("Lord",)),
                                                  ("m2", None, ())))  # fmt: skip
    store.write("people", DAY_2, "run-b", _people(("m1", "ann@example.com", ("Knight",)),
                                                  ("m_1", "x%y@example.com", ())))  # fmt: skip
    store.write("people", DAY_2, "run-c", _people(("m1", "ann@example.com", ())))
    entries = [e for e in store.entries_named("people") if e.run_id != "run-c"]

    found = store.read_matching(
        "people", entries, {"email": ["ANN@"], "id": ["m2"]}, ignore_case=frozenset({"email"})
    )
    rows = found.sort_values([PARTITION_COLUMN, "id"])
    assert list(zip(rows[PARTITION_COLUMN], rows[RUN_COLUMN], rows["id"], strict=True)) == [
        (DAY_1, "run-a", "m1"),
        (DAY_1, "run-a", "m2"),
        (DAY_2, "run-b", "m1"),
    ]
    assert sorted(map(tuple, rows["roles"])) == [(), ("Knight",), ("Lord",)]

    # % and _ are plain characters, not patterns
    escaped = store.read_matching("people", entries, {"email": ["x%y"], "id": ["m_"]})
    assert escaped["id"].tolist() == ["m_1"]
    assert len(store.read_matching("people", entries, {"id": []})) == 0
