"""`recon-pipeline issues`: a run's issue table with outcomes, for people, spreadsheets and
scripts (docs/behaviour.md §5)."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from recon_pipeline.clients.frame_store import open_engine
from recon_pipeline.clients.run_lookup import find_run_record
from recon_pipeline.settings import load_settings

_TABLE_COLUMNS = ["type", "severity", "status", "outcome", "memberId", "discordId", "description"]


def add_issues_parser(commands: argparse._SubParsersAction) -> None:
    issues = commands.add_parser(
        "issues",
        help="print a run's issue table with outcomes (default: the latest run)",
        description="Print the issues a reconciliation run recorded, with what happened to each.",
    )
    which = issues.add_mutually_exclusive_group()
    which.add_argument("--run", help="a run id (the ReconciliationRun id)")
    which.add_argument("--day", help="the latest run of this day (YYYY-MM-DD)")
    issues.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="default: table"
    )
    issues.set_defaults(handler=_issues)


def _issues(args: argparse.Namespace) -> int:
    engine = open_engine(load_settings().DATABASE_URL)
    try:
        with engine.connect() as conn:
            record = find_run_record(conn, run_id=args.run, day=args.day)
    finally:
        engine.dispose()
    issues = list(record.get("issues") or [])
    if args.format == "json":
        body = {
            "runId": record["id"],
            "resolvedSincePreviousRun": record.get("resolved_issues"),
            "issues": issues,
        }
        json.dump(body, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    # role lists as "Knight; Lord", for a cell of a spreadsheet
    frame = pd.DataFrame(issues).map(lambda v: "; ".join(map(str, v)) if isinstance(v, list) else v)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
        return 0
    print(f"Run {record['id']}: {len(issues)} issue(s)")
    if len(frame):
        shown = frame.reindex(columns=_TABLE_COLUMNS).astype(object)
        print(shown.where(shown.notna(), "").to_string(index=False))
    return 0
