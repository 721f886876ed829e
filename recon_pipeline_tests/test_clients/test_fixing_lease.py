"""The fixing lease (`FixingLease`), on SQLite and a real PostgreSQL.

Covers taking, refusing, releasing and re-taking the lease; waiting for it (`acquire`); a holder
that dies (a real child process, killed with SIGKILL) and whose lease expires; runs racing for a
free lease; a lease lost to another run (`renew`, `heartbeat`); and which fixing sessions of
other runs a fixing step must take into account (`fixing_mark`, `changed_since`).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from recon_pipeline.clients.fixing_lease import (
    FixingLease,
    FixingSession,
    LeaseHolder,
    fixing_mark,
)
from recon_pipeline.clients.membership_db import ensure_pipeline_tables, parse_database_url
from recon_pipeline.domain.provenance import FixingMark
from recon_pipeline_tests.processes import wait_for

LONG_TTL_S = 60.0
SHORT_TTL_S = 0.3  # for leases a test lets expire
BOUND_S = 20.0  # the longest any wait in these tests may take


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = parse_database_url(database_url).create_engine()
    ensure_pipeline_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _lease(
    engine: sa.Engine, run_id: str, *, scope_id: str | None = None, ttl_s: float = LONG_TTL_S
) -> FixingLease:
    return FixingLease(engine, run_id=run_id, scope_id=scope_id or run_id, ttl_s=ttl_s)


def _taken(
    engine: sa.Engine, run_id: str, *, scope_id: str | None = None, ttl_s: float = LONG_TTL_S
) -> FixingLease:
    """A run's lease, taken (the lease must be free)."""
    lease = _lease(engine, run_id, scope_id=scope_id, ttl_s=ttl_s)
    assert lease.try_acquire() is None, f"{run_id} could not take the lease"
    return lease


def _session(
    engine: sa.Engine, run_id: str, *, changes: int | None, scope_id: str | None = None
) -> FixingLease:
    """A fixing session: the run takes the free lease and releases it having made `changes`."""
    lease = _taken(engine, run_id, scope_id=scope_id)
    lease.release(changes)
    return lease


def _holder(engine: sa.Engine) -> str | None:
    """Who holds the lease now, as another run is told (None: it was free, and the asking run
    took and released it)."""
    asker = _lease(engine, "asker")
    holder = asker.try_acquire()
    if holder is None:
        asker.release(0)
        return None
    return holder.run_id


def _wait_and_take(engine: sa.Engine, run_id: str, *, scope_id: str | None = None) -> FixingLease:
    """A run's lease, taken once it is free or expired."""
    lease = _lease(engine, run_id, scope_id=scope_id)
    assert lease.acquire(wait_s=BOUND_S, poll_s=0.05) is None, f"{run_id} never got the lease"
    return lease


# --- Taking and releasing ----------------------------------------------------------------------


def test_a_free_lease_is_taken_and_a_second_run_is_told_who_holds_it(engine: sa.Engine) -> None:
    first = _lease(engine, "run-first")

    assert first.try_acquire() is None
    told = _lease(engine, "run-second").try_acquire()

    assert isinstance(told, LeaseHolder)
    assert told.run_id == "run-first"
    assert 0 < told.expires_in_s <= LONG_TTL_S


def test_after_release_the_second_run_takes_it(engine: sa.Engine) -> None:
    first, second = _taken(engine, "run-first"), _lease(engine, "run-second")
    assert second.try_acquire() is not None

    first.release(0)

    assert second.try_acquire() is None
    assert _holder(engine) == "run-second"


def test_the_holder_asking_again_gets_it_again(engine: sa.Engine) -> None:
    first = _taken(engine, "run-first")

    assert first.try_acquire() is None
    assert _holder(engine) == "run-first"


def test_a_release_by_a_run_that_lost_the_lease_frees_nothing(engine: sa.Engine) -> None:
    stale = _taken(engine, "run-stale", ttl_s=SHORT_TTL_S)
    _wait_and_take(engine, "run-new")

    stale.release(3)

    assert _holder(engine) == "run-new"


# --- Waiting -----------------------------------------------------------------------------------


def test_acquire_returns_the_holder_after_the_wait_when_it_keeps_the_lease(
    engine: sa.Engine,
) -> None:
    _taken(engine, "run-holder")
    waiter = _lease(engine, "run-waiter")

    started = time.monotonic()
    told = waiter.acquire(wait_s=1.0, poll_s=0.1)
    waited = time.monotonic() - started

    assert told is not None and told.run_id == "run-holder"
    assert 0.9 <= waited < BOUND_S


def test_acquire_returns_none_once_the_holder_releases_during_the_wait(engine: sa.Engine) -> None:
    holder = _taken(engine, "run-holder")
    waiter = _lease(engine, "run-waiter")

    def release_soon() -> None:
        time.sleep(0.5)
        holder.release(1)

    with ThreadPoolExecutor(max_workers=1) as pool:
        released = pool.submit(release_soon)
        told = waiter.acquire(wait_s=BOUND_S, poll_s=0.1)
        released.result(timeout=BOUND_S)

    assert told is None
    assert _holder(engine) == "run-waiter"


# --- A holder that dies ------------------------------------------------------------------------

_HOLDER_PROCESS = """
import sys, time
from recon_pipeline.clients.fixing_lease import FixingLease
from recon_pipeline.clients.membership_db import parse_database_url

engine = parse_database_url(sys.argv[1]).create_engine()
lease = FixingLease(engine, run_id="run-doomed", scope_id="run-doomed", ttl_s=float(sys.argv[2]))
if lease.try_acquire() is not None:
    sys.exit("the lease was not free")
with lease.heartbeat(on_lost=lambda why: print("lost:", why, flush=True)):
    print("holding", flush=True)
    time.sleep(600)
"""


@contextmanager
def _lease_holding_process(database_url: str, ttl_s: float) -> Iterator[subprocess.Popen[str]]:
    """A child process that takes the lease and keeps it with a heartbeat until killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_PROCESS, database_url, str(ttl_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=BOUND_S)


def _next_line(child: subprocess.Popen[str], timeout_s: float) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout_s)
    line = child.stdout.readline() if ready else ""
    if not line:
        child.kill()
        _, errors = child.communicate(timeout=BOUND_S)
        raise AssertionError(f"the lease-holding process said nothing; stderr:\n{errors}")
    return line.strip()


@pytest.mark.slow
def test_a_holder_that_dies_stops_renewing_and_its_lease_expires(
    engine: sa.Engine, database_url: str
) -> None:
    ttl_s = 2.0
    survivor = _lease(engine, "run-survivor")
    with _lease_holding_process(database_url, ttl_s) as child:
        assert _next_line(child, timeout_s=60) == "holding"

        # The heartbeat keeps the lease well past its time to live.
        kept = survivor.acquire(wait_s=ttl_s * 1.5, poll_s=0.2)
        assert kept is not None and kept.run_id == "run-doomed"

        seen = survivor.try_acquire()
        seen_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert child.wait(timeout=BOUND_S) == -signal.SIGKILL

    got = survivor.acquire(wait_s=30, poll_s=0.05)
    got_at = time.monotonic()

    assert got is None
    assert seen is not None and seen.run_id == "run-doomed"
    # Not before the expiry last seen; renewed every ttl/3, the lease outlives its holder by at
    # least two thirds of its time to live.
    assert got_at - seen_at >= seen.expires_in_s - 0.1
    assert got_at - killed_at >= ttl_s * 2 / 3 - 0.1


# --- Racing ------------------------------------------------------------------------------------


def test_runs_racing_for_a_free_lease_exactly_one_gets_it(database_url: str) -> None:
    racers = 4
    engines = [parse_database_url(database_url).create_engine() for _ in range(racers)]
    try:
        ensure_pipeline_tables(engines[0])
        leases = [_lease(e, f"run-{i}") for i, e in enumerate(engines)]
        for _ in range(5):  # the first round races to create the lease row too
            start = threading.Barrier(racers)

            def race(lease: FixingLease, start: threading.Barrier = start) -> LeaseHolder | None:
                start.wait(timeout=BOUND_S)
                return lease.try_acquire()

            with ThreadPoolExecutor(max_workers=racers) as pool:
                told = list(pool.map(race, leases, timeout=60))

            winners = [lease for lease, holder in zip(leases, told, strict=True) if holder is None]
            assert len(winners) == 1, told
            assert {h.run_id for h in told if h is not None} == {winners[0].run_id}
            winners[0].release(0)
    finally:
        for e in engines:
            e.dispose()


# --- Losing the lease --------------------------------------------------------------------------


def test_renew_is_false_once_another_run_took_the_expired_lease(engine: sa.Engine) -> None:
    lapsing = _taken(engine, "run-lapsing", ttl_s=SHORT_TTL_S)
    assert lapsing.renew() is True

    _wait_and_take(engine, "run-taker")

    assert lapsing.renew() is False
    assert _holder(engine) == "run-taker"


def test_heartbeat_tells_on_lost_when_another_run_took_the_lease(engine: sa.Engine) -> None:
    lapsing = _taken(engine, "run-lapsing", ttl_s=SHORT_TTL_S)
    _wait_and_take(engine, "run-taker")
    reasons: list[str] = []
    told = threading.Event()

    def on_lost(why: str) -> None:
        reasons.append(why)
        told.set()

    with lapsing.heartbeat(on_lost):
        assert told.wait(timeout=BOUND_S), "on_lost was never called"

    assert len(reasons) == 1
    assert "another run took the fixing lease" in reasons[0]
    assert _holder(engine) == "run-taker"


# --- Fixing sessions since a snapshot ----------------------------------------------------------


def test_fixing_mark_names_the_newest_session_and_the_one_holding_the_lease(
    engine: sa.Engine,
) -> None:
    assert fixing_mark(engine) == FixingMark(newest_session=0, active_session=None)
    done = _session(engine, "run-done", changes=1)

    holding = _taken(engine, "run-holding", ttl_s=SHORT_TTL_S)
    while_held = fixing_mark(engine)
    wait_for(
        "the unrenewed lease to expire",
        lambda: fixing_mark(engine).active_session is None,
        BOUND_S,
        every_s=0.05,
    )

    assert holding.session_id is not None and done.session_id is not None
    assert holding.session_id > done.session_id
    assert while_held == FixingMark(holding.session_id, holding.session_id)
    assert fixing_mark(engine) == FixingMark(holding.session_id, None)


def _changed_runs(engine: sa.Engine, marks: list[FixingMark]) -> list[str]:
    """The runs whose sessions a fixing step of run-me (scope-me) must take into account."""
    me = _wait_and_take(engine, "run-me", scope_id="scope-me")
    return [session.run_id for session in me.changed_since(marks)]


def test_changed_since_returns_another_scopes_session_begun_after_the_mark(
    engine: sa.Engine,
) -> None:
    mark = fixing_mark(engine)
    other = _session(engine, "run-other", changes=2)

    me = _taken(engine, "run-me", scope_id="scope-me")

    assert me.changed_since([mark]) == [
        FixingSession(other.session_id, "run-other", "run-other", 2)
    ]


def test_changed_since_returns_a_session_active_at_the_mark(engine: sa.Engine) -> None:
    other = _taken(engine, "run-other")
    mark = fixing_mark(engine)
    other.release(1)

    assert mark.active_session == other.session_id
    assert _changed_runs(engine, [mark]) == ["run-other"]


def test_changed_since_skips_a_session_that_made_no_changes(engine: sa.Engine) -> None:
    mark = fixing_mark(engine)
    _session(engine, "run-idle", changes=0)
    _session(engine, "run-busy", changes=4)

    assert _changed_runs(engine, [mark]) == ["run-busy"]


def test_changed_since_skips_sessions_of_its_own_scope(engine: sa.Engine) -> None:
    mark = fixing_mark(engine)
    _session(engine, "run-me-earlier-attempt", scope_id="scope-me", changes=5)
    _session(engine, "run-other", changes=1)

    assert _changed_runs(engine, [mark]) == ["run-other"]


def test_changed_since_skips_a_session_released_before_the_mark(engine: sa.Engine) -> None:
    _session(engine, "run-before", changes=7)
    mark = fixing_mark(engine)
    _session(engine, "run-after", changes=1)

    assert _changed_runs(engine, [mark]) == ["run-after"]


def test_changed_since_counts_a_session_that_died_holding_the_lease(engine: sa.Engine) -> None:
    mark = fixing_mark(engine)
    died = _taken(engine, "run-died", ttl_s=SHORT_TTL_S)  # never released: changes unknown

    me = _wait_and_take(engine, "run-me", scope_id="scope-me")

    assert me.changed_since([mark]) == [
        FixingSession(died.session_id, "run-died", "run-died", None)
    ]


def test_changed_since_counts_a_session_whose_changes_are_unknown(engine: sa.Engine) -> None:
    mark = fixing_mark(engine)
    _session(engine, "run-failed-half-way", changes=None)

    assert _changed_runs(engine, [mark]) == ["run-failed-half-way"]


def test_changed_since_takes_the_oldest_of_several_marks(engine: sa.Engine) -> None:
    older = fixing_mark(engine)
    _session(engine, "run-between", changes=1)
    newer = fixing_mark(engine)
    _session(engine, "run-after", changes=1)

    assert _changed_runs(engine, [newer, older]) == ["run-between", "run-after"]
    assert _changed_runs(engine, []) == []
