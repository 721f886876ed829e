"""Finding a recorded reconciliation run: by id, the latest of a day, or the latest of all."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from recon_pipeline.clients.membership_db import (
    pipeline_run_table,
    read_run_record,
    reconciliation_run_table,
)


class RunNotFoundError(LookupError):
    """No recorded reconciliation run matches what was asked for."""


def find_run_record(
    conn: sa.Connection, *, run_id: str | None = None, day: str | None = None
) -> dict[str, Any]:
    """The record of run `run_id`, else of the latest reconciliation run of `day`, else of the
    latest reconciliation run of all (verifications are never picked by day or by default).

    Raises:
        RunNotFoundError: saying what was looked for.
    """
    if run_id is not None:
        record = read_run_record(conn, run_id.strip())
        if record is None:
            raise RunNotFoundError(f"no ReconciliationRun has id {run_id!r}")
        return record
    r, p = reconciliation_run_table, pipeline_run_table
    stmt = (
        sa.select(r.c.id)
        .outerjoin(p, p.c.run_id == r.c.id)
        .where(r.c.isVerificationRun.is_(False))
        .order_by(r.c.startedAt.desc(), r.c.id.desc())
        .limit(1)
    )
    if day is not None:
        stmt = stmt.where(p.c.partition_key == day)
    latest = conn.execute(stmt).scalar()
    if latest is None:
        where = f" of {day}" if day else ""
        raise RunNotFoundError(f"no reconciliation run{where} is recorded in this database")
    record = read_run_record(conn, latest)
    assert record is not None  # just read
    return record
