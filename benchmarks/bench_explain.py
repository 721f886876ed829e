"""Time `recon-pipeline explain` on a stored day of a large synthetic community.

Set-up (not timed): `synthetic_community(size)` is stored the way runs store it, in the frame
store of a SQLite file, a PostgreSQL database (a throwaway cluster, started like the tests'), or
Parquet files: the five snapshot frames and the access exceptions for each of `--days` days
(one run per day, so the lookups must find their run's rows among the other days'), and for each
day the run's drift table (fingerprints, first sightings, completeness and sources as a run
writes them) and its fixes frame (outcomes).

Timed: `look_up` (everything `explain` does after start-up: find the latest complete run, read
the subject's rows, explain) for one subject of each kind, `--repeat` times each in one process;
and `recon-pipeline explain SUBJECT --json` as a fresh process, once per subject (Python start-up
and imports included).

    python benchmarks/bench_explain.py --sizes 1000000 --storages sqlite postgresql parquet \
        --output benchmarks/results/explain.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recon_pipeline.clients.frame_store import FrameStore, open_frame_store  # noqa: E402
from recon_pipeline.domain.access_exceptions import empty_exceptions  # noqa: E402
from recon_pipeline.domain.columns import IssueCol, MemberCol, TeamCol  # noqa: E402
from recon_pipeline.domain.drift import find_drift_issues  # noqa: E402
from recon_pipeline.domain.fixes import OutcomeCol  # noqa: E402
from recon_pipeline.domain.identity import identify  # noqa: E402
from recon_pipeline.domain.policy import AccessPolicy, DriftType  # noqa: E402
from recon_pipeline.domain.provenance import COMPLETENESS, FrameOrigin  # noqa: E402
from recon_pipeline.member_lookup import look_up  # noqa: E402
from recon_pipeline.sandbox.community import synthetic_community  # noqa: E402

SNAPSHOTS = {
    "membership_members": "members",
    "membership_teams": "teams",
    "stripe_subscriptions": "subscriptions",
    "discord_roles": "guild_roles",
    "discord_member_roles": "guild_member_roles",
}


def _store_days(store: FrameStore, size: int, days: int) -> dict[str, str]:
    """Store `days` runs of the community; the subjects to look up, by kind."""
    community = synthetic_community(size)
    frames = {name: getattr(community, attr) for name, attr in SNAPSHOTS.items()}
    frames["access_exceptions"] = empty_exceptions()
    policy = AccessPolicy()
    issues = find_drift_issues(
        community.members, community.teams, community.subscriptions,
        community.guild_member_roles, community.guild_roles, policy,
    )  # fmt: skip
    today = dt.date(2026, 11, 30)
    previous = None
    for back in range(days - 1, -1, -1):
        day = (today - dt.timedelta(days=back)).isoformat()
        run_id = f"bench-run-{day}"
        taken_at = dt.datetime(2026, 11, 30, 6) - dt.timedelta(days=back)
        origins = []
        for name, frame in frames.items():
            frame = frame.copy()
            frame.attrs = {"snapshot": {"taken_at": taken_at.isoformat(), "fixing_mark": None}}
            entry = store.write(name, day, run_id, frame)
            origins.append(FrameOrigin(name, day, run_id, entry.row_count, taken_at).to_json())
        drift = identify(issues, previous, observed_at=taken_at).issues
        drift.attrs = {"sources": origins, COMPLETENESS: []}
        drift_entry = store.write("drift_issues", day, run_id, drift)
        fixes = drift.assign(
            **{
                OutcomeCol.OUTCOME: "skipped",
                OutcomeCol.OUTCOME_DETAIL: "dry run (auto-fix off)",
                OutcomeCol.ACTIONS_TAKEN: [()] * len(drift),
            }
        )
        drift_origin = FrameOrigin("drift_issues", day, run_id, drift_entry.row_count)
        fixes.attrs = {"sources": [drift_origin.to_json()]}
        store.write("reconciliation_fixes", day, run_id, fixes)
        previous = drift
    members = community.members
    drifted = issues[issues[IssueCol.TYPE] == DriftType.MISSING_ACCESS][IssueCol.MEMBER_ID].iloc[0]
    row = members[members[MemberCol.ID] == drifted].iloc[0]
    orphan = issues[issues[IssueCol.TYPE] == DriftType.ORPHANED_ACCESS][IssueCol.DISCORD_ID]
    return {
        "member id": str(drifted),
        "email": str(row[MemberCol.EMAIL]),
        "Discord id": str(row[MemberCol.DISCORD_ID]),
        "team customer": str(community.teams[TeamCol.STRIPE_CUSTOMER_ID].iloc[0]),
        "orphaned account": str(orphan.iloc[0]),
    }


@contextlib.contextmanager
def _storage(kind: str, folder: Path) -> Iterator[tuple[str, str | None]]:
    """(DATABASE_URL, RECONCILIATION_STORAGE_URL) of an empty storage of `kind`."""
    if kind == "postgresql":
        from recon_pipeline_tests.postgres import running_postgres

        with running_postgres() as server:
            yield server.create_database(), None
        return
    database = f"sqlite:///{folder / 'membership.sqlite3'}"
    yield database, (str(folder / "frames") if kind == "parquet" else None)


def _measure(kind: str, size: int, days: int, repeat: int) -> list[dict]:
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        _storage(kind, Path(tmp)) as (database, storage),
        open_frame_store(database, storage) as store,
    ):
        started = time.perf_counter()
        subjects = _store_days(store, size, days)
        setup_s = time.perf_counter() - started
        for what, query in subjects.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                found = look_up(store, query, AccessPolicy())
                times.append(time.perf_counter() - started)
            assert found.explanation["subject"]["query"] == query
            env = {**os.environ, "DATABASE_URL": database}
            if storage:
                env["RECONCILIATION_STORAGE_URL"] = storage
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "recon_pipeline.cli", "explain", query, "--json"],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            process_s = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"explain {query} failed: {done.stderr}")
            rows.append(
                {
                    "size": size,
                    "storage": kind,
                    "days": days,
                    "subject": what,
                    "look_up_median_s": round(statistics.median(times), 3),
                    "look_up_max_s": round(max(times), 3),
                    "command_s": round(process_s, 3),
                    "setup_s": round(setup_s, 1),
                    "open_issues": len(found.explanation["openIssues"]),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument(
        "--storages", nargs="+", default=["sqlite", "postgresql", "parquet"],
        choices=["sqlite", "postgresql", "parquet"],
    )  # fmt: skip
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", type=Path, help="append the results as JSON lines")
    args = parser.parse_args()
    for size in args.sizes:
        for kind in args.storages:
            rows = _measure(kind, size, args.days, args.repeat)
            if args.output:
                with args.output.open("a") as out:
                    out.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
