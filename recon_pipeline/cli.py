"""The `recon-pipeline` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from recon_pipeline.clients.membership_db import (
    DatabaseUrlError,
    init_database,
    parse_database_url,
)
from recon_pipeline.settings import SettingsError, load_settings


def _db_init(_: argparse.Namespace) -> int:
    settings = load_settings()
    target = parse_database_url(settings.DATABASE_URL)
    if target.url.get_backend_name() == "sqlite" and target.url.database:
        Path(target.url.database).parent.mkdir(parents=True, exist_ok=True)
    where = target.url.render_as_string(hide_password=True)
    engine = target.create_engine()
    try:
        created = init_database(engine)
    except sa.exc.OperationalError as exc:
        # Unreachable server, refused login, unwritable file: the operator needs the reason,
        # not a traceback. The driver's message names the host, never the password.
        print(f"recon-pipeline: cannot use DATABASE_URL {where}: {exc.orig}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if created:
        print(f"Created {', '.join(created)} in {where}")
    else:
        print(f"Nothing to do: every table already exists in {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recon-pipeline",
        description="Reconcile Stripe billing, the membership database and Discord roles.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="membership database chores")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    init = db_commands.add_parser(
        "init",
        help="create the missing tables (never alters an existing one)",
        description="Create the app's tables on an empty database and the pipeline's own "
        "recon_pipeline_* tables; existing tables are left exactly as they are.",
    )
    init.set_defaults(handler=_db_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (SettingsError, DatabaseUrlError) as exc:
        print(f"recon-pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
