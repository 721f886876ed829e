"""The access exceptions table (docs/behaviour.md §1): add, list, remove, and the snapshot the
reconciliation run reads.

Adding checks everything an operator can get wrong and refuses with a message naming it: an id
that is not a Discord id, a member the database does not have, a role that is not one of the
managed roles an exception can give, an expiry already past, and a subject that already has an
exception in force. Two commands adding at once take turns, so the duplicate check holds.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.membership_db import (
    access_exception_table,
    member_table,
    utcnow,
)
from recon_pipeline.domain.access_exceptions import EXCEPTION_ROLES
from recon_pipeline.domain.columns import ExceptionCol
from recon_pipeline.domain.policy import ManagedRoles

_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,19}")
_LOCK_KEY = 7_310_455_113  # PostgreSQL advisory lock: one writer of exceptions at a time


class ExceptionInputError(ValueError):
    """An exceptions command was given something it cannot accept."""


@dataclass(frozen=True)
class NewException:
    discord_id: str | None
    member_id: str | None
    role: str  # as the operator wrote it: a managed role's name or squire / knight / lord
    reason: str
    added_by: str
    expires_on: dt.date | None = None


def role_kind(role: str, roles: ManagedRoles) -> str:
    """squire, knight or lord for a managed role's configured name or kind (any case).

    Raises:
        ExceptionInputError: naming the roles an exception can give.
    """
    wanted = role.strip().lower()
    for kind in EXCEPTION_ROLES:
        if wanted in (kind, getattr(roles, kind).lower()):
            return kind
    if wanted in ("debtor", roles.debtor.lower()):
        raise ExceptionInputError(
            f"role {role!r} marks members in debt; an exception gives access: use {_choices(roles)}"
        )
    raise ExceptionInputError(f"unknown role {role!r}: an exception gives {_choices(roles)}")


def _choices(roles: ManagedRoles) -> str:
    return ", ".join(repr(getattr(roles, kind)) for kind in EXCEPTION_ROLES)


def add_exception(engine: sa.Engine, new: NewException, *, roles: ManagedRoles, today: str) -> int:
    """Store `new`; its id.

    Raises:
        ExceptionInputError: a malformed id, an unknown member or role, a past expiry, an empty
            reason, or a subject with an exception in force already.
    """
    kind = role_kind(new.role, roles)
    discord_id, member_id = _subject(new)
    reason = new.reason.strip()
    if not reason:
        raise ExceptionInputError("--reason must say why this account has access without paying")
    if new.expires_on is not None and new.expires_on.isoformat() < today:
        raise ExceptionInputError(
            f"--expires {new.expires_on.isoformat()} is in the past (today is {today}); give "
            "the last day the exception should count"
        )
    t = access_exception_table
    with engine.connect() as conn:
        _take_turns(conn)
        if member_id is not None and not _member_exists(conn, member_id):
            raise ExceptionInputError(f"no member has id {member_id!r} in the membership database")
        same = (t.c.discord_id == discord_id) if discord_id else (t.c.member_id == member_id)
        clash = conn.execute(
            sa.select(t.c.id, t.c.expires_on)
            .where(same & t.c.removed_at.is_(None))
            .where(t.c.expires_on.is_(None) | (t.c.expires_on >= dt.date.fromisoformat(today)))
        ).first()
        if clash is not None:
            subject = f"Discord account {discord_id}" if discord_id else f"member {member_id}"
            raise ExceptionInputError(
                f"{subject} already has exception #{clash.id} in force; remove it first "
                f"(recon-pipeline exceptions remove {clash.id})"
            )
        new_id = conn.execute(
            t.insert()
            .values(
                discord_id=discord_id,
                member_id=member_id,
                role=kind,
                reason=reason,
                added_by=new.added_by.strip() or "unknown",
                added_at=utcnow(),
                expires_on=new.expires_on,
            )
            .returning(t.c.id)
        ).scalar_one()
        conn.commit()
    return int(new_id)


def _subject(new: NewException) -> tuple[str | None, str | None]:
    if (new.discord_id is None) == (new.member_id is None):
        raise ExceptionInputError("give exactly one of --discord-id and --member-id")
    if new.discord_id is not None:
        discord_id = new.discord_id.strip()
        if not _SNOWFLAKE.fullmatch(discord_id):
            raise ExceptionInputError(
                f"--discord-id {new.discord_id!r} is not a Discord id (digits only, as Discord "
                "shows with Developer Mode on: right-click the member, Copy User ID)"
            )
        return discord_id, None
    member_id = (new.member_id or "").strip()
    if not member_id or any(c.isspace() for c in member_id):
        raise ExceptionInputError(f"--member-id {new.member_id!r} is not a member id")
    return None, member_id


def _member_exists(conn: sa.Connection, member_id: str) -> bool:
    found = conn.execute(sa.select(member_table.c.id).where(member_table.c.id == member_id))
    return found.first() is not None


def remove_exception(engine: sa.Engine, exception_id: str, *, removed_by: str) -> dict:
    """Take exception `exception_id` out of force (it stays listed with `--all`); its row.

    Raises:
        ExceptionInputError: no such exception, or it was removed already.
    """
    if not exception_id.strip().isdigit():
        raise ExceptionInputError(f"{exception_id!r} is not an exception id (a number)")
    t = access_exception_table
    with engine.connect() as conn:
        _take_turns(conn)
        row = conn.execute(sa.select(t).where(t.c.id == int(exception_id))).mappings().first()
        if row is None:
            raise ExceptionInputError(f"no access exception has id {exception_id}")
        if row["removed_at"] is not None:
            raise ExceptionInputError(
                f"exception #{exception_id} was removed already, on {row['removed_at']:%Y-%m-%d} "
                f"by {row['removed_by']}"
            )
        conn.execute(
            t.update()
            .where(t.c.id == int(exception_id))
            .values(removed_at=utcnow(), removed_by=removed_by.strip() or "unknown")
        )
        conn.commit()
        return dict(row)


def list_exceptions(
    conn: sa.Connection, *, today: str, everything: bool = False
) -> list[dict[str, object]]:
    """Exceptions in force on `today` (with `everything`, expired and removed ones too), oldest
    first, each with its `status`: in force, expired or removed."""
    t = access_exception_table
    rows = conn.execute(sa.select(t).order_by(t.c.id)).mappings()
    listed = []
    for row in rows:
        if row["removed_at"] is not None:
            status = "removed"
        elif row["expires_on"] is not None and row["expires_on"].isoformat() < today:
            status = "expired"
        else:
            status = "in force"
        if everything or status == "in force":
            listed.append({**row, "status": status})
    return listed


def load_exceptions(conn: sa.Connection) -> pd.DataFrame:
    """Every exception not removed, live or expired (`ExceptionCol`): what a run snapshots, so
    it and a later recomputation of its day see the same list."""
    t = access_exception_table
    rows = conn.execute(
        sa.select(
            t.c.id,
            t.c.discord_id,
            t.c.member_id,
            t.c.role,
            t.c.reason,
            t.c.added_by,
            t.c.added_at,
            t.c.expires_on,
        )
        .where(t.c.removed_at.is_(None))
        .order_by(t.c.id)
    ).all()
    frame = pd.DataFrame.from_records(
        [
            (
                str(r.id),
                r.discord_id,
                r.member_id,
                r.role,
                r.reason,
                r.added_by,
                r.added_at.isoformat() if r.added_at else None,
                r.expires_on.isoformat() if r.expires_on else None,
            )
            for r in rows
        ],
        columns=list(ExceptionCol.ALL),
    )
    return frame.astype("str")


def _take_turns(conn: sa.Connection) -> None:
    """A transaction no other writer of exceptions runs beside, begun before the duplicate
    check reads, so two commands adding the same subject at once cannot both pass it."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
