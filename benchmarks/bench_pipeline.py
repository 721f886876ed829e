"""Time the whole `reconciliation_job` through Dagster on synthetic communities.

Each configuration (members x database x emulator latency) runs in fresh processes:

* the Stripe emulator and the Discord emulator each serve from their own process, loaded with
  `synthetic_community(size, seed)`, so neither shares the pipeline's GIL or memory;
* the membership database (a SQLite file, or a database in a throwaway PostgreSQL cluster started
  like the tests' `recon_pipeline_tests/postgres.py`) is seeded once per size and copied for each
  run (SQLite: file copy; PostgreSQL: `CREATE DATABASE … TEMPLATE`), so every run starts from the
  same state; seeding and emulator loading are setup and not measured;
* the pipeline process imports the real definitions (`build_definitions(load_settings())`) and
  runs `reconciliation_job.execute_in_process()` for today's partition on a temporary on-disk
  Dagster instance (`DagsterInstance.local_temp`), as a dry run (auto-fix off: every drift issue
  is found, recorded and reported, no Discord role is changed).

Each run keeps its stored frames where `--storages` says: `database` (the membership database,
the default), `apart` (another database of the same kind: a second SQLite file, or another
PostgreSQL database; `RECONCILIATION_STORAGE_URL`) or `parquet` (Parquet files in a folder).
Stored bytes per day = what the run's frames take there afterwards (SQLite: the file's growth;
PostgreSQL: the frame tables' total relation size; Parquet: the files).

Measured per run: wall time of `execute_in_process`, each step's STEP_START → STEP_SUCCESS time
from the run's event log, and the pipeline process's peak RSS (`ru_maxrss`, which covers the
whole pipeline process: Python + Dagster imports, definitions, the instance and every step, since
the in-process executor runs all steps in it; not the emulators, the database server or seeding),
and the same process's VmHWM, its own high-water mark: on Linux ru_maxrss carries over from the
parent through fork+exec, so the markdown table shows VmHWM.

    python benchmarks/bench_pipeline.py --sizes 10000 100000 --databases sqlite postgresql \
        --latencies-ms 0 20 --storages database apart parquet --label after \
        --output benchmarks/results/pipeline.jsonl
    python benchmarks/bench_pipeline.py --markdown benchmarks/results/pipeline.md \
        --output benchmarks/results/pipeline.jsonl      # render only (no --sizes given)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIMEZONE = "America/New_York"
READY_TIMEOUT_S = 600.0
STEP_ORDER = (
    "membership_snapshot",
    "stripe_subscriptions",
    "discord_snapshot",
    "drift_issues",
    "reconciliation_fixes",
    "reconciliation_run",
)
_CONTEXT = multiprocessing.get_context("spawn")


# ---- emulator processes ---------------------------------------------------------------------


def _serve_emulator(
    kind: str, size: int, seed: int, latency_s: float, port: Any, ready: Event, stop: Event
) -> None:
    sys.path.insert(0, str(ROOT))
    from recon_pipeline.sandbox import demo
    from recon_pipeline.sandbox.community import GUILD_ID, synthetic_community
    from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
    from recon_pipeline.sandbox.server import LoopbackServer
    from recon_pipeline.sandbox.stripe_emulator import StripeEmulator

    community = synthetic_community(size, seed=seed)
    app: Any
    if kind == "stripe":
        stripe = StripeEmulator(api_keys=(demo.SANDBOX_STRIPE_KEY,), latency_s=latency_s)
        stripe.load_frame(community.subscriptions)
        app = stripe.app
    else:
        discord = DiscordEmulator(
            bot_token=demo.SANDBOX_BOT_TOKEN, guild_id=GUILD_ID, latency_s=latency_s
        )
        discord.load_frames(community.guild_member_roles, community.guild_roles)
        discord.add_channel(demo.SANDBOX_ADMIN_CHANNEL_ID)
        app = discord.app
    del community
    # The port is chosen only now, right before binding: chosen before loading a big community,
    # it could be taken meanwhile (by an outgoing connection's ephemeral port, for one).
    with LoopbackServer(app) as server:
        port.value = server.port
        ready.set()
        stop.wait()


@contextlib.contextmanager
def _emulators(size: int, seed: int, latency_ms: float) -> Iterator[dict[str, str]]:
    from recon_pipeline.sandbox import demo
    from recon_pipeline.sandbox.community import GUILD_ID

    stop = _CONTEXT.Event()
    started: list[tuple[multiprocessing.process.BaseProcess, Event]] = []
    ports = {}
    try:
        for kind in ("stripe", "discord"):
            ready = _CONTEXT.Event()
            ports[kind] = _CONTEXT.Value("i", 0)
            args = (kind, size, seed, latency_ms / 1000, ports[kind], ready, stop)
            process = _CONTEXT.Process(target=_serve_emulator, args=args, daemon=True)
            process.start()
            started.append((process, ready))
        for process, ready in started:
            if not ready.wait(READY_TIMEOUT_S):
                raise RuntimeError(f"emulator process {process.pid} did not start")
        yield {
            "STRIPE_SECRET_KEY": demo.SANDBOX_STRIPE_KEY,
            "STRIPE_API_BASE": f"http://127.0.0.1:{ports['stripe'].value}",
            "DISCORD_BOT_TOKEN": demo.SANDBOX_BOT_TOKEN,
            "DISCORD_GUILD_ID": GUILD_ID,
            "DISCORD_API_BASE": f"http://127.0.0.1:{ports['discord'].value}/api/v10",
            "DISCORD_ADMIN_CHANNEL_ID": demo.SANDBOX_ADMIN_CHANNEL_ID,
        }
    finally:
        stop.set()
        for process, _ in started:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()


# ---- the pipeline process -------------------------------------------------------------------


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _hwm_mb() -> float:
    """This process image's own peak RSS (VmHWM; unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_pipeline(env: dict[str, str], profile: str | None, out: Connection) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.update(env)
    import dagster as dg

    from recon_pipeline.definitions import build_definitions
    from recon_pipeline.defs.partitions import local_day
    from recon_pipeline.settings import load_settings

    job = build_definitions(load_settings()).resolve_job_def("reconciliation_job")
    rss_before = _maxrss_mb()
    samples: list[tuple[float, float]] = []  # (epoch s, VmRSS MB) every 0.1 s during the run
    sampling = threading.Event()

    def sample() -> None:
        status = Path("/proc/self/status")
        while not sampling.wait(0.1):
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append((time.time(), int(line.split()[1]) / 1024))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as home:
        instance = dg.DagsterInstance.local_temp(tempdir=home)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            partition_key=local_day(TIMEZONE),
            run_config={
                "ops": {"reconciliation_fixes": {"config": {"auto_fix": False}}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
        sampling.set()
        sampler.join()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        starts: dict[str, float] = {}
        steps: dict[str, float] = {}
        step_rss: dict[str, float] = {}
        failures: list[str] = []
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event is None or entry.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                starts[entry.step_key] = entry.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                steps[entry.step_key] = round(entry.timestamp - starts[entry.step_key], 3)
                during = [
                    mb for at, mb in samples if starts[entry.step_key] <= at <= entry.timestamp
                ]
                step_rss[entry.step_key] = round(max(during, default=float("nan")))
                if event.event_type_value == "STEP_FAILURE":
                    failures.append(f"{entry.step_key}: {event.event_specific_data.error.message}")
        rows = {
            m.asset_key.path[-1]: m.event_specific_data.materialization.metadata.get(
                "dagster/row_count"
            )
            for m in result.get_asset_materialization_events()
        }
        instance.dispose()
    out.send(
        {
            "success": result.success,
            "failures": failures,
            "wall_s": round(wall, 3),
            "steps_s": steps,
            "step_peak_rss_mb": step_rss,
            "peak_rss_mb": round(_maxrss_mb(), 1),
            "peak_vmhwm_mb": round(_hwm_mb(), 1),
            "rss_before_job_mb": round(rss_before, 1),
            "row_counts": {k: getattr(v, "value", v) for k, v in rows.items()},
        }
    )
    out.close()


def _measure(env: dict[str, str], profile: str | None) -> dict[str, Any]:
    receive, send = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_run_pipeline, args=(env, profile, send))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        raise RuntimeError(f"pipeline process died (exit {process.exitcode})") from None
    finally:
        process.join()
    return result


# ---- databases ------------------------------------------------------------------------------


class _Databases:
    """A seeded template per size, and a fresh copy of it for each run."""

    def __init__(self, kind: str, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.kind = kind
        self.workdir = workdir
        self._server: Any = None
        self._runs = 0
        if kind == "postgresql":
            from recon_pipeline_tests.postgres import running_postgres

            self._server = stack.enter_context(running_postgres())

    def seed(self, size: int, seed: int) -> float:
        import sqlalchemy as sa

        from recon_pipeline.clients.membership_db import parse_database_url
        from recon_pipeline.sandbox.community import synthetic_community
        from recon_pipeline.sandbox.demo import seed_membership_db

        started = time.perf_counter()
        if self.kind == "postgresql":
            with self._server.connect() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS seed_{size}")
                conn.execute(f"CREATE DATABASE seed_{size}")
            url = self._server.url(f"seed_{size}")
        else:
            path = self.workdir / f"seed_{size}.sqlite3"
            path.unlink(missing_ok=True)
            url = f"sqlite:///{path}"
        engine = parse_database_url(url).create_engine()
        try:
            seed_membership_db(
                engine, _without_dangling_teams(synthetic_community(size, seed=seed))
            )
            if self.kind == "postgresql":
                with engine.begin() as conn:
                    conn.execute(sa.text("ANALYZE"))
        finally:
            engine.dispose()
        return time.perf_counter() - started

    def copy(self, size: int) -> str:
        self._runs += 1
        if self.kind == "postgresql":
            name = f"run_{self._runs}"
            with self._server.connect() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")
                conn.execute(f"CREATE DATABASE {name} TEMPLATE seed_{size}")
            return self._server.url(name)
        path = self.workdir / f"run_{self._runs}.sqlite3"
        shutil.copyfile(self.workdir / f"seed_{size}.sqlite3", path)
        return f"sqlite:///{path}"

    def drop(self, url: str) -> None:
        if self.kind == "postgresql":
            with self._server.connect() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]}")
        else:
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)

    def frame_storage(self, storage: str) -> str | None:
        """RECONCILIATION_STORAGE_URL for `storage`: None keeps frames in the membership
        database."""
        if storage == "database":
            return None
        self._runs += 1
        if storage == "parquet":
            return str(self.workdir / f"frames_{self._runs}")
        if self.kind == "postgresql":
            name = f"frames_{self._runs}"
            with self._server.connect() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")
                conn.execute(f"CREATE DATABASE {name}")
            return self._server.url(name)
        return f"sqlite:///{self.workdir / f'frames_{self._runs}.sqlite3'}"

    def stored_bytes(self, size: int, url: str, storage_url: str | None) -> int:
        """What the run's stored frames take where they were stored."""
        if storage_url and not storage_url.startswith(("sqlite:", "postgresql")):
            return sum(f.stat().st_size for f in Path(storage_url).rglob("*") if f.is_file())
        where = storage_url or url
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(where) as conn:
                return int(
                    conn.execute(
                        """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
                           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.relkind = 'r' AND n.nspname = 'public'
                             AND c.relname LIKE 'recon_pipeline_frame_%'"""
                    ).fetchone()[0]
                )
        path = Path(where.removeprefix("sqlite:///"))
        seeded = 0 if storage_url else (self.workdir / f"seed_{size}.sqlite3").stat().st_size
        return path.stat().st_size - seeded


def _seed(url: str, size: int, seed: int) -> None:
    sys.path.insert(0, str(ROOT))
    import sqlalchemy as sa

    from recon_pipeline.clients.membership_db import parse_database_url
    from recon_pipeline.sandbox.community import synthetic_community
    from recon_pipeline.sandbox.demo import seed_membership_db

    engine = parse_database_url(url).create_engine()
    try:
        seed_membership_db(engine, _without_dangling_teams(synthetic_community(size, seed=seed)))
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
    finally:
        engine.dispose()


def _without_dangling_teams(community: Any) -> Any:
    """PostgreSQL enforces `"Member"."teamId"`'s foreign key; seed both databases alike."""
    import dataclasses

    from recon_pipeline.domain.columns import MemberCol, TeamCol

    members = community.members.copy()
    team = members[MemberCol.TEAM_ID]
    members[MemberCol.TEAM_ID] = team.where(team.isin(community.teams[TeamCol.ID]), None)
    return dataclasses.replace(community, members=members)


# ---- reporting ------------------------------------------------------------------------------


def _git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain") else "")


def _load(paths: list[Path]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def _peak(record: dict[str, Any]) -> float:
    return record.get("peak_vmhwm_mb") or record["peak_rss_mb"]


def render_markdown(
    records: list[dict[str, Any]],
    commands: list[str],
    baseline: str = "before",
    compared: str | None = None,
) -> str:
    """One table of every configuration's latest run per label, plus before/after walls."""
    latest: dict[tuple[str, str, str, float, int], dict[str, Any]] = {}
    for r in records:
        if r.get("profiled"):  # cProfile slows the run down; those runs are for reading only
            continue
        storage = r.get("storage", "database")
        latest[(r["label"], r["database"], storage, r["latency_ms"], r["members"])] = r
    machine = records[-1]["machine"] if records else platform.platform()
    lines = [
        "# reconciliation_job end to end (benchmarks/bench_pipeline.py)",
        "",
        f"Rendered {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine}.",
        "Dry run (auto-fix off) of the real job, in-process executor, temporary on-disk Dagster",
        "instance; the Stripe and Discord emulators each run in their own process. Wall = the",
        "job's `execute_in_process`; steps = STEP_START → STEP_SUCCESS; peak RSS = the pipeline",
        "process's own high-water mark (VmHWM: imports, definitions, instance and all steps; not",
        "the emulators, the database server or seeding). `ru_maxrss` is in the JSON lines too, but",
        "on Linux it carries over from the parent through fork+exec, so it can show the parent's",
        "size instead. Growth = wall time ratio against the next smaller size. Storage = where the",
        "stored frames live (`database`: the membership database; `apart`: another database of",
        "the same kind; `parquet`: Parquet files); stored MB = what one run's frames take there.",
        "The machine has 2 cores and other test suites ran at the same time: expect ±20% noise.",
        "",
        "| label | db | storage | latency | members | wall s | rows/s | growth | peak RSS MB | "
        "stored MB/day | " + " | ".join(STEP_ORDER) + " | ok | when |",
        "|" + "---|" * (13 + len(STEP_ORDER)),
    ]
    for key in sorted(latest, key=lambda k: (k[0] != baseline, k)):
        r = latest[key]
        label, db, storage, latency, members = key
        smaller = [
            latest[k] for k in latest if k[:4] == key[:4] and k[4] < members and latest[k]["ok"]
        ]
        growth = ""
        if smaller and r["ok"]:
            prev = max(smaller, key=lambda x: x["members"])
            growth = f"{r['wall_s'] / prev['wall_s']:.1f}× ({members // prev['members']}× rows)"
        steps = [f"{r['steps_s'].get(s, float('nan')):.1f}" for s in STEP_ORDER]
        stored = r.get("stored_bytes_per_day")
        lines.append(
            f"| {label} | {db} | {storage} | {latency:g} ms | {members:,} | {r['wall_s']:.1f} | "
            f"{r['rows_per_s']:,.0f} | {growth} | {_peak(r):,.0f} | "
            f"{'' if stored is None else f'{stored / 1e6:,.1f}'} | "
            + " | ".join(steps)
            + f" | {'yes' if r['ok'] else 'FAILED'} | {r['date'][:16]} |"
        )
    newest = {k[0]: r["date"] for k, r in sorted(latest.items(), key=lambda kv: kv[1]["date"])}
    others = [label for label in newest if label != baseline]
    if compared is not None:
        others = [label for label in others if label == compared]
    if baseline in newest and others:
        after = others[-1]
        lines += [
            "",
            f"## {baseline} → {after} (wall s, peak RSS MB; frames in the membership database)",
            "",
            f"| db | latency | members | {baseline} | {after} | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for key in sorted(k for k in latest if k[0] == baseline):
            other = latest.get((after, *key[1:]))
            if other is None:
                continue
            b = latest[key]
            lines.append(
                f"| {key[1]} | {key[3]:g} ms | {key[4]:,} | {b['wall_s']:.1f} s, "
                f"{_peak(b):,.0f} MB | {other['wall_s']:.1f} s, "
                f"{_peak(other):,.0f} MB | {other['wall_s'] / b['wall_s']:.2f}× |"
            )
    with_steps = [k for k in sorted(latest) if latest[k].get("step_peak_rss_mb")]
    if with_steps:
        lines += [
            "",
            "## Peak RSS during each step (MB, VmRSS sampled every 0.1 s)",
            "",
            "| label | db | storage | latency | members | " + " | ".join(STEP_ORDER) + " |",
            "|" + "---|" * (5 + len(STEP_ORDER)),
        ]
        for key in with_steps:
            rss = latest[key]["step_peak_rss_mb"]
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} ms | {key[4]:,} | "
                + " | ".join(f"{rss.get(s, float('nan')):,.0f}" for s in STEP_ORDER)
                + " |"
            )
    if commands:
        lines += ["", "## Commands", "", "```sh", *commands, "```"]
    return "\n".join(lines) + "\n"


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument(
        "--databases", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--latencies-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument(
        "--storages",
        nargs="+",
        choices=("database", "apart", "parquet"),
        default=["database"],
        help="where stored frames live (RECONCILIATION_STORAGE_URL)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="after", help="e.g. before/after, kept in each record")
    parser.add_argument("--output", type=Path, help="append one JSON line per run to this file")
    parser.add_argument(
        "--markdown", type=Path, help="render every record of --output (+ --inputs) to this file"
    )
    parser.add_argument("--inputs", type=Path, nargs="*", default=[], help="more JSON lines")
    parser.add_argument("--commands", nargs="*", default=[], help="commands to list in markdown")
    parser.add_argument("--notes", type=Path, help="markdown appended to the rendered file")
    parser.add_argument(
        "--baseline", default="before", help="label the newest other label is compared with"
    )
    parser.add_argument(
        "--compare", default=None, help="the label compared with --baseline (default: the newest)"
    )
    parser.add_argument("--profile-dir", type=Path, help="write a cProfile of each job run here")
    args = parser.parse_args()

    sizes = [10_000, 100_000] if args.sizes is None and not args.markdown else args.sizes or []
    if sizes:
        _run_all(args, sizes)
    if args.markdown:
        paths = [*([args.output] if args.output else []), *args.inputs]
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        text = render_markdown(_load(paths), args.commands, args.baseline, args.compare)
        if args.notes:
            text += "\n" + args.notes.read_text()
        args.markdown.write_text(text)
        print(f"wrote {args.markdown}", flush=True)


def _run_all(args: argparse.Namespace, sizes: list[int]) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    revision = _git_revision()
    print(f"{machine}, revision {revision}", flush=True)
    print(
        f"{'db':>10} {'storage':>8} {'members':>9} {'latency':>8} {'wall s':>7} {'rows/s':>8} "
        f"{'RSS MB':>7} {'stored MB':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, contextlib.ExitStack() as st:
        for kind in args.databases:
            databases = _Databases(kind, Path(tmp), st)
            for size in sizes:
                seeded_s = databases.seed(size, args.seed)
                for latency_ms, storage in itertools.product(args.latencies_ms, args.storages):
                    url = databases.copy(size)
                    storage_url = databases.frame_storage(storage)
                    with _emulators(size, args.seed, latency_ms) as env:
                        env |= {"DATABASE_URL": url, "RECONCILIATION_TIMEZONE": TIMEZONE}
                        if storage_url:
                            env["RECONCILIATION_STORAGE_URL"] = storage_url
                        profile = None
                        if args.profile_dir:
                            args.profile_dir.mkdir(parents=True, exist_ok=True)
                            name = f"{args.label}-{kind}-{storage}-{size}-{latency_ms:g}ms.prof"
                            profile = str(args.profile_dir / name)
                        measured = _measure(env, profile)
                    stored = databases.stored_bytes(size, url, storage_url)
                    databases.drop(url)
                    if storage_url and storage != "parquet":
                        databases.drop(storage_url)
                    elif storage_url:
                        shutil.rmtree(storage_url, ignore_errors=True)
                    record = {
                        "label": args.label,
                        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        "machine": machine,
                        "revision": revision,
                        "database": kind,
                        "storage": storage,
                        "stored_bytes_per_day": stored,
                        "members": size,
                        "latency_ms": latency_ms,
                        "mode": "dry run",
                        "profiled": profile is not None,
                        "ok": measured["success"],
                        "rows_per_s": round(size / measured["wall_s"]),
                        "seed_s": round(seeded_s, 1),
                        "loadavg_1m": os.getloadavg()[0],
                        **measured,
                    }
                    print(
                        f"{kind:>10} {storage:>8} {size:>9,} {latency_ms:>6.0f}ms "
                        f"{measured['wall_s']:>7.1f} {record['rows_per_s']:>8,} "
                        f"{_peak(measured):>7,.0f} {stored / 1e6:>9,.1f} "
                        f"{'' if measured['success'] else 'FAILED'} {measured['steps_s']}",
                        flush=True,
                    )
                    for failure in measured["failures"]:
                        print(f"    {failure[:300]}", flush=True)
                    if args.output:
                        args.output.parent.mkdir(parents=True, exist_ok=True)
                        with args.output.open("a") as out:
                            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
