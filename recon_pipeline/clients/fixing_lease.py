"""The fixing lease: at most one run changes roles and statuses at a time, whoever launched it.

The run queue's tag limit only sees runs launched through the queue; `recon-pipeline run`,
`dagster job execute`, re-executions and asset-graph launches pass it by. So the fixing step
takes this lease itself, in the membership database that every run already reaches: one row
naming the holder and when its lease expires, renewed by a heartbeat while the step fixes. A
holder that dies stops renewing, and its lease expires. Times are the database's clock, so
hosts need not agree on the time.

Each holding is a session, with the number of changes it made. A snapshot notes the newest
session and the active one when it began (`fixing_mark`); a fixing step that gets the lease
asks which sessions of other runs may have changed things since its snapshots were taken
(`changed_since`): acting on snapshots older than another run's fixes would repeat them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import tenacity
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from recon_pipeline.clients.membership_db import fixing_lease_table, fixing_session_table
from recon_pipeline.domain.provenance import FixingMark

_log = logging.getLogger(__name__)
LEASE = "fixing"


class db_epoch(FunctionElement[float]):
    """Seconds since the epoch, as a float, on the database server's clock."""

    type = sa.Float()
    inherit_cache = True


@compiles(db_epoch, "postgresql")
def _pg_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_epoch, "sqlite")
def _sqlite_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds the lease another run asked for."""

    run_id: str
    expires_in_s: float


@dataclass(frozen=True)
class FixingSession:
    id: int
    run_id: str
    scope_id: str
    changes: int | None  # None: still holding, or died holding the lease


def fixing_mark(engine: sa.Engine) -> FixingMark:
    """What a snapshot notes before it reads: the newest session, then the active one (in this
    order, so a session that starts in between is seen as active)."""
    lease, session = fixing_lease_table, fixing_session_table
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.coalesce(sa.func.max(session.c.id), 0))).scalar()
        active = conn.execute(
            sa.select(lease.c.session_id).where(
                (lease.c.name == LEASE)
                & lease.c.holder_run_id.is_not(None)
                & (lease.c.expires_at > db_epoch())
            )
        ).scalar()
    return FixingMark(newest_session=int(newest or 0), active_session=active)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


class FixingLease:
    """The lease as one run asks for it."""

    def __init__(self, engine: sa.Engine, *, run_id: str, scope_id: str, ttl_s: float) -> None:
        self.engine = engine
        self.run_id = run_id
        self.scope_id = scope_id  # the first run of its re-execution chain
        self.ttl_s = ttl_s
        self.session_id: int | None = None

    def try_acquire(self) -> LeaseHolder | None:
        """Take the lease if it is free, expired, or already this run's; else who holds it."""
        lease = fixing_lease_table
        with self.engine.begin() as conn:
            conn.execute(_insert(conn, lease).values(name=LEASE).on_conflict_do_nothing())
            now = db_epoch()
            taken = conn.execute(
                sa.update(lease)
                .where(
                    (lease.c.name == LEASE)
                    & (
                        lease.c.holder_run_id.is_(None)
                        | (lease.c.expires_at < now)
                        | (lease.c.holder_run_id == self.run_id)
                    )
                )
                .values(holder_run_id=self.run_id, expires_at=now + self.ttl_s)
            ).rowcount
            if taken:
                started = conn.execute(
                    fixing_session_table.insert().values(
                        run_id=self.run_id, scope_id=self.scope_id, started_at=db_epoch()
                    )
                )
                self.session_id = int(started.inserted_primary_key[0])
                conn.execute(
                    sa.update(lease).where(lease.c.name == LEASE).values(session_id=self.session_id)
                )
                return None
            holder = conn.execute(
                sa.select(lease.c.holder_run_id, lease.c.expires_at - db_epoch()).where(
                    lease.c.name == LEASE
                )
            ).one()
        return LeaseHolder(run_id=holder[0], expires_in_s=max(0.0, float(holder[1])))

    def acquire(self, wait_s: float, *, poll_s: float = 1.0) -> LeaseHolder | None:
        """`try_acquire` until it succeeds or `wait_s` has passed; None once acquired, else the
        run that still holds the lease."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(wait_s),
            wait=tenacity.wait_fixed(min(poll_s, max(wait_s, 0.01))),
            retry=tenacity.retry_if_result(lambda holder: holder is not None),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        return retrying(self.try_acquire)

    def _held_by_this_session(self) -> sa.ColumnElement[bool]:
        lease = fixing_lease_table
        return (
            (lease.c.name == LEASE)
            & (lease.c.holder_run_id == self.run_id)
            & (lease.c.session_id == self.session_id)
        )

    def renew(self) -> bool:
        """Push the expiry on; False when the lease is no longer this session's."""
        renewal = (
            sa.update(fixing_lease_table)
            .where(self._held_by_this_session())
            .values(expires_at=db_epoch() + self.ttl_s)
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(renewal).rowcount)

    def release(self, changes: int | None) -> None:
        """End the session, noting how many changes it made (None: unknown, as when the step
        failed half-way), and free the lease."""
        lease, session = fixing_lease_table, fixing_session_table
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(session)
                .where(session.c.id == self.session_id)
                .values(ended_at=db_epoch(), changes=changes)
            )
            conn.execute(
                sa.update(lease)
                .where(self._held_by_this_session())
                .values(holder_run_id=None, session_id=None, expires_at=None)
            )

    def changed_since(self, marks: list[FixingMark]) -> list[FixingSession]:
        """Sessions of other chains that began after, or were active when, any of the
        snapshots behind `marks` began, and made (or may have made) a change."""
        if not marks:
            return []
        session = fixing_session_table
        newest = min(mark.newest_session for mark in marks)
        active = sorted({m.active_session for m in marks if m.active_session is not None})
        return self._sessions(
            (session.c.scope_id != self.scope_id)
            & (session.c.id != (self.session_id or -1))
            & ((session.c.id > newest) | session.c.id.in_(active))
            & (session.c.changes.is_(None) | (session.c.changes > 0))
        )

    def _sessions(self, where: sa.ColumnElement[bool]) -> list[FixingSession]:
        session = fixing_session_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(session.c.id, session.c.run_id, session.c.scope_id, session.c.changes)
                .where(where)
                .order_by(session.c.id)
            )
            return [FixingSession(*row) for row in rows]

    @contextmanager
    def heartbeat(self, on_lost: Callable[[str], None]) -> Iterator[None]:
        """Renew the lease every third of its time to live while the block runs; `on_lost` is
        told once when it cannot (another run took it, or the database stayed unreachable
        until it expired)."""
        stop = threading.Event()

        def beat() -> None:
            last_ok = time.monotonic()
            while not stop.wait(self.ttl_s / 3):
                try:
                    if self.renew():
                        last_ok = time.monotonic()
                        continue
                    on_lost("another run took the fixing lease while this run held it")
                    return
                except sa.exc.SQLAlchemyError as exc:
                    _log.warning("could not renew the fixing lease: %s", exc)
                    if time.monotonic() - last_ok >= self.ttl_s:
                        on_lost(f"the fixing lease expired: the database was unreachable ({exc})")
                        return

        thread = threading.Thread(target=beat, name=f"fixing-lease-{self.run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
