"""`recon-pipeline check`: before the first run and after any change, whether the configured
database, Stripe key, Discord bot and SMTP server will do (docs/behaviour.md §14)."""

from __future__ import annotations

import argparse
import json
import sys

from recon_pipeline.domain.preflight import State
from recon_pipeline.preflight import all_checks
from recon_pipeline.settings import load_settings

_MARK = {State.OK: "ok", State.PROBLEM: "PROBLEM", State.NOT_CONFIGURED: "not configured"}


def add_check_parser(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="check the database, Stripe key, Discord bot and SMTP server (read calls only)",
        description=(
            "Check, with read calls only, that the configured database has the app's tables, "
            "the Stripe key can list subscriptions, the bot can read the server's members and "
            "manage every managed role, the admin channel takes the bot's messages and the "
            "SMTP server answers. Exit 0 only when nothing is a problem."
        ),
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    lines = all_checks(load_settings())
    problems = sum(line.state == State.PROBLEM for line in lines)
    code = 1 if problems else 0
    if args.json:
        body = {"ok": not problems, "checks": [line.to_json() for line in lines]}
        json.dump(body, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return code
    width = max(len(line.name) for line in lines)
    for line in lines:
        print(f"{_MARK[line.state]:<15} {line.name:<{width}}  {line.detail}")
        if line.fix:
            print(f"{'':<15} {'':<{width}}  fix: {line.fix}")
    print("\nAll set." if not problems else f"\n{problems} problem(s) to fix before a run.")
    return code
