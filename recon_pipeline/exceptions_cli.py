"""`recon-pipeline exceptions add|list|remove` (docs/behaviour.md §1).

What the operator got wrong is raised as `ExceptionInputError`, which the command's `main`
prints and turns into exit code 2 like any other bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.access_exceptions import (
    NewException,
    add_exception,
    list_exceptions,
    remove_exception,
    role_kind,
)
from recon_pipeline.clients.membership_db import ensure_pipeline_tables, parse_database_url
from recon_pipeline.domain.access_exceptions import role_name
from recon_pipeline.settings import Settings, load_settings


def add_exceptions_parser(commands: argparse._SubParsersAction) -> None:
    exceptions = commands.add_parser(
        "exceptions",
        help="access without paying: staff, sponsors, partners (add, list, remove)",
        description="Access exceptions give a Discord account or a member a managed role "
        "without a subscription; the reconciliation run treats holding it as no drift and "
        "grants it when missing.",
    )
    actions = exceptions.add_subparsers(dest="exceptions_command", required=True)

    add = actions.add_parser("add", help="give an account or member a role without paying")
    subject = add.add_mutually_exclusive_group(required=True)
    subject.add_argument("--discord-id", help="the Discord account (digits)")
    subject.add_argument("--member-id", help='the "Member".id')
    add.add_argument("--role", required=True, help="the managed role it gives, e.g. Lord")
    add.add_argument("--reason", required=True, help="why, for whoever reads the list later")
    add.add_argument("--expires", type=_date, help="the last day it counts (YYYY-MM-DD)")
    add.add_argument("--by", default=None, help="who adds it (default: this login's user)")
    add.set_defaults(handler=_add)

    listing = actions.add_parser("list", help="the exceptions in force")
    listing.add_argument("--all", action="store_true", help="expired and removed ones too")
    listing.set_defaults(handler=_list)

    remove = actions.add_parser("remove", help="take an exception out of force")
    remove.add_argument("id", help="the exception's id, as `exceptions list` shows it")
    remove.add_argument("--by", default=None, help="who removes it (default: this login's user)")
    remove.set_defaults(handler=_remove)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _user(given: str | None) -> str:
    if given and given.strip():
        return given.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a container: say so rather than guess
        return "unknown"


@contextmanager
def _database(settings: Settings) -> Iterator[sa.Engine]:
    engine = parse_database_url(settings.DATABASE_URL).create_engine()
    try:
        ensure_pipeline_tables(engine)
        yield engine
    finally:
        engine.dispose()


def _add(args: argparse.Namespace) -> int:
    settings = load_settings()
    roles = settings.managed_roles()
    with _database(settings) as engine:
        new_id = add_exception(
            engine,
            NewException(
                discord_id=args.discord_id,
                member_id=args.member_id,
                role=args.role,
                reason=args.reason,
                added_by=_user(args.by),
                expires_on=args.expires,
            ),
            roles=roles,
            today=settings.today(),
        )
    subject = (
        f"Discord account {args.discord_id}" if args.discord_id else f"member {args.member_id}"
    )
    until = f" until {args.expires.isoformat()}" if args.expires else ""
    role = role_name(role_kind(args.role, roles), roles)
    print(f"Added exception #{new_id}: {subject} may hold {role}{until}.")
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = load_settings()
    roles = settings.managed_roles()
    with _database(settings) as engine, engine.connect() as conn:
        rows = list_exceptions(conn, today=settings.today(), everything=args.all)
    if not rows:
        print("No access exceptions" + ("." if args.all else " in force."))
        return 0
    listed = []
    for row in rows:
        subject = (
            f"discord:{row['discord_id']}" if row["discord_id"] else f"member:{row['member_id']}"
        )
        added = f"{row['added_at']:%Y-%m-%d} by {row['added_by']}"
        if row["status"] == "removed":
            added += f"; removed {row['removed_at']:%Y-%m-%d} by {row['removed_by']}"
        listed.append(
            {
                "id": row["id"],
                "subject": subject,
                "role": role_name(str(row["role"]), roles),
                "expires": row["expires_on"].isoformat() if row["expires_on"] else "never",
                "status": row["status"],
                "added": added,
                "reason": row["reason"],
            }
        )
    print(pd.DataFrame(listed).astype(str).to_markdown(index=False, tablefmt="plain"))
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _database(load_settings()) as engine:
        row = remove_exception(engine, args.id, removed_by=_user(args.by))
    subject = (
        f"Discord account {row['discord_id']}"
        if row["discord_id"]
        else f"member {row['member_id']}"
    )
    print(
        f"Removed exception #{row['id']} ({subject}); the next reconciliation run treats the "
        "account as any other."
    )
    return 0
