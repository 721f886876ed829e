"""The `recon-pipeline` command."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from filelock import FileLock

from recon_pipeline.check_cli import add_check_parser
from recon_pipeline.child_processes import (
    StopRequests,
    run_until_stopped,
    sigterm_as_interrupt,
)
from recon_pipeline.clients.access_exceptions import ExceptionInputError
from recon_pipeline.clients.frame_store import (
    FrameDamagedError,
    FrameNotStoredError,
    adopt_day_keyed_frames,
)
from recon_pipeline.clients.membership_db import (
    DatabaseUrlError,
    ensure_pipeline_tables,
    init_database,
    parse_database_url,
    read_run_record,
)
from recon_pipeline.clients.run_lookup import RunNotFoundError
from recon_pipeline.domain.fix_gate import WithheldCode
from recon_pipeline.domain.subject import AmbiguousSubjectError, UnknownSubjectError
from recon_pipeline.exceptions_cli import add_exceptions_parser
from recon_pipeline.explain_cli import LiveUnavailableError, add_explain_parser
from recon_pipeline.issues_cli import add_issues_parser
from recon_pipeline.member_lookup import NoStoredRunError
from recon_pipeline.settings import SettingsError, load_settings

DEFAULT_DAGSTER_HOME = Path("dagster_home")
DEMO_DIR = Path("data/demo")
_INSTANCE_YAML = """\
# Local instance of the embedded default (SQLite under this folder).
telemetry:
  enabled: false
concurrency:
  runs:
    # reconciliation_job and verification_job carry this tag: one runs, the others queue
    tag_concurrency_limits:
      - key: "recon/lock"
        limit: 1
  pools:
    # recon_fixes: only one step applies fixes at a time, backfills included (docs/behaviour.md §4)
    default_limit: 1
"""
# `recon-pipeline run`: the run succeeded, but another run kept it from applying fixes.
EXIT_FIXES_WITHHELD = 3
# What a run cannot start without; each is named when missing.
_REQUIRED_FOR_A_RUN = ("STRIPE_SECRET_KEY", "DISCORD_BOT_TOKEN", "DISCORD_GUILD_ID")


def _db_init(_: argparse.Namespace) -> int:
    settings = load_settings()
    target = parse_database_url(settings.DATABASE_URL)
    if target.url.get_backend_name() == "sqlite" and target.url.database:
        Path(target.url.database).parent.mkdir(parents=True, exist_ok=True)
    where = target.where
    engine = target.create_engine()
    try:
        created = init_database(engine)
        ensure_pipeline_tables(engine)  # columns a newer version added to the pipeline's own
        adopted = adopt_day_keyed_frames(engine)
    except sa.exc.OperationalError as exc:
        # Unreachable server, refused login, unwritable file: the operator needs the reason,
        # not a traceback.
        print(f"recon-pipeline: cannot use DATABASE_URL {where}: {target.failure(exc)}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        engine.dispose()
    if created:
        print(f"Created {', '.join(created)} in {where}")
    else:
        print(f"Nothing to do: every table already exists in {where}")
    if adopted:
        print(f"Stored frames of earlier versions now belong to their runs: {adopted}")
    return 0


def _ensure_dagster_home(default: Path) -> Path:
    """DAGSTER_HOME, defaulting to a local folder with a minimal instance config."""
    home = Path(os.environ.get("DAGSTER_HOME") or default).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(_INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextmanager
def _instance_set_up(home: Path) -> Iterator[None]:
    """Hold the instance's set-up lock while the block runs.

    A new SQLite instance creates its storage on first use; two commands doing that at once
    on one DAGSTER_HOME collide (one dies with a unique-constraint error on Dagster's schema
    version). The first to come sets the storage up, the other waits for it.
    """
    with FileLock(home / ".recon-pipeline-setup.lock"):
        yield


def _set_up_instance(home: Path) -> None:
    import dagster as dg

    with _instance_set_up(home), dg.DagsterInstance.get() as instance:
        # Touch every storage, so each creates its schema now, under the lock.
        instance.get_runs(limit=1)
        instance.get_asset_keys(limit=1)
        instance.all_instigator_state()


def launch_reconciliation(
    *, auto_fix: bool | None, override_guard: bool, in_process: bool
) -> tuple[bool, str, dict[str, str]]:
    """Run `reconciliation_job` for today on the configured instance; (succeeded, run id, the
    run's tags)."""
    import dagster as dg

    from recon_pipeline.definitions import get_reconciliation_job
    from recon_pipeline.defs import run_tags

    settings = load_settings()
    fix_config: dict[str, object] = {"override_guard": override_guard}
    if auto_fix is not None:
        fix_config["auto_fix"] = auto_fix
    run_config: dict[str, object] = {
        "ops": {"reconciliation_fixes": {"config": fix_config}},
        # The report printed afterwards says what matters; the full log is in the Dagster UI.
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    if in_process:
        run_config["execution"] = {"config": {"in_process": {}}}
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(get_reconciliation_job),
            instance=instance,
            run_config=run_config,
            tags={
                run_tags.PARTITION: settings.today(),
                run_tags.TRIGGERED_BY: "manual",
            },
        )
        run = instance.get_run_by_id(result.run_id)
        return result.success, result.run_id, dict(run.tags) if run else {}


def print_run_report(run_id: str) -> dict | None:
    """Print the run's report from its `ReconciliationRun` row; the row (None when missing)."""
    from recon_pipeline.domain.report import format_run_report

    settings = load_settings()
    target = parse_database_url(settings.DATABASE_URL)
    engine = target.create_engine()
    try:
        with engine.connect() as conn:
            record = read_run_record(conn, run_id)
    finally:
        engine.dispose()
    where = target.where
    if record is None:
        print(f"Run {run_id} left no ReconciliationRun row in {where}: see the Dagster run log.")
        return None
    print(format_run_report(record))
    print(f'  run record: "ReconciliationRun" id {run_id!r} in {where}')
    return record


def _database_problem(database_url: str) -> str | None:
    """Why the membership database cannot be used, or None when one query goes through.

    Checked before a run starts: a run on an unreachable database can record nothing, and each
    of its steps would fail with the driver's traceback in the log.
    """
    target = parse_database_url(database_url)
    engine = target.create_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        return f"cannot use DATABASE_URL {target.where}: {target.failure(exc)}"
    finally:
        engine.dispose()
    return None


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()  # refuse bad settings before anything starts
    missing = [name for name in _REQUIRED_FOR_A_RUN if not os.environ.get(name, "").strip()]
    if missing:
        print(
            f"recon-pipeline: {', '.join(missing)} must be set to run reconciliation_job "
            "(see .env.example; `recon-pipeline sandbox` prints values for the local emulators)",
            file=sys.stderr,
        )
        return 2
    problem = _database_problem(settings.DATABASE_URL)
    if problem:
        print(f"recon-pipeline: {problem}; no run was started", file=sys.stderr)
        return 1
    _set_up_instance(_ensure_dagster_home(DEFAULT_DAGSTER_HOME))
    succeeded, run_id, tags = launch_reconciliation(
        auto_fix=True if args.auto_fix else None,
        override_guard=args.override_guard,
        in_process=args.in_process,
    )
    record = print_run_report(run_id)
    if not succeeded:
        return 1
    from recon_pipeline.defs.run_tags import FIXES_WITHHELD

    withheld = tags.get(FIXES_WITHHELD)
    if withheld and WithheldCode(withheld).another_run:
        reason = (record or {}).get("fixes_withheld") or withheld
        print(f"recon-pipeline: no fix was applied: {reason}", file=sys.stderr)
        return EXIT_FIXES_WITHHELD
    return 0


_DEMO_WORKSPACE = """load_from:
  - python_module:
      module_name: recon_pipeline.definitions
      location_name: recon_pipeline
"""


def _demo_environment() -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{DEMO_DIR / 'membership.sqlite3'}",
        "DAGSTER_HOME": str((DEMO_DIR / "dagster_home").resolve()),
        "RECONCILIATION_AUTO_FIX": "false",
    }


SANDBOX_PACKAGES = ("starlette", "uvicorn")  # the `sandbox` extra


class SandboxMissingError(RuntimeError):
    """The emulators' server packages are not installed."""


def _sandbox_demo():
    """`recon_pipeline.sandbox.demo`, which needs the `sandbox` extra."""
    try:
        from recon_pipeline.sandbox import demo
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in SANDBOX_PACKAGES:
            raise
        raise SandboxMissingError(
            f"the Stripe and Discord emulators need {package!r}, which a production install "
            "leaves out; install them with: pip install 'recon_pipeline[sandbox]'"
        ) from None
    return demo


def _fresh_demo() -> None:
    """A new demo: the membership database reseeded and the demo's Dagster instance emptied
    together, so no run in the UI names a record that is gone (a verification of an old run
    would fail on it)."""
    home = (DEMO_DIR / "dagster_home").resolve()
    if home.exists():
        for entry in home.iterdir():
            if entry.name == "dagster.yaml":  # keep the instance's config, drop what it stored
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    _set_up_instance(_ensure_dagster_home(home))
    _seed_demo_database()


def _seed_demo_database() -> None:
    from recon_pipeline.clients.frame_store import open_engine

    demo = _sandbox_demo()

    database = DEMO_DIR / "membership.sqlite3"
    database.unlink(missing_ok=True)
    engine = open_engine(_demo_environment()["DATABASE_URL"])
    try:
        demo.seed_membership_db(engine, demo.demo_community())
        demo.seed_demo_exceptions(engine, today=load_settings().today())
    finally:
        engine.dispose()


def _demo(_: argparse.Namespace) -> int:
    with sigterm_as_interrupt() as stop:
        try:
            return _run_demo(stop)
        except KeyboardInterrupt:
            print("Stopped.", file=sys.stderr)
            return 130


def _run_demo(stop: StopRequests) -> int:
    demo = _sandbox_demo()
    started = time.monotonic()
    os.environ.update(_demo_environment())
    _fresh_demo()
    community = demo.demo_community()
    print(
        f"Demo community: {len(community.members)} members, {len(community.teams)} teams, "
        f"{len(community.subscriptions)} Stripe subscriptions, "
        f"{community.guild_member_roles['discord_id'].nunique()} Discord accounts "
        f"(SQLite in {DEMO_DIR}/, emulators on loopback)"
    )
    print(
        f"Access exceptions: {len(demo.DEMO_EXCEPTIONS)} comped accounts keep their roles "
        "without paying (recon-pipeline exceptions list)\n"
    )
    with demo.running_sandbox(community) as sandbox:
        os.environ.update(sandbox.env())
        outcomes = []
        for title, auto_fix, cancel_first in (
            ("1. Dry run", False, False),
            ("2. Run with fixes", True, True),
            ("3. Run again", True, False),
        ):
            if cancel_first:
                _cancel_between_runs(demo, sandbox, community)
            print(f"== {title} ==")
            succeeded, run_id, _ = launch_reconciliation(
                auto_fix=auto_fix, override_guard=False, in_process=True
            )
            stop.raise_if_requested()  # an interrupt during the run failed it, not the demo
            print_run_report(run_id)
            print()
            outcomes.append(succeeded)
        role_calls = len(sandbox.discord.mutations)
    print(f"The fixing run changed roles with {role_calls} Discord call(s), one per role change.")
    print(f"Done in {time.monotonic() - started:.0f} s.")
    print(
        "Open the Dagster UI on this setup: `recon-pipeline sandbox --ui` (or `make ui`), then "
        "browse to http://127.0.0.1:3000."
    )
    return 0 if all(outcomes) else 1


def _cancel_between_runs(demo: ModuleType, sandbox: object, community: object) -> None:
    engine = parse_database_url(os.environ["DATABASE_URL"]).create_engine()
    try:
        member_id = demo.cancel_a_paying_member(sandbox, engine, community)
    finally:
        engine.dispose()
    print(
        f"(Meanwhile member {member_id} cancels. Run 2 finds that removal for the first time, "
        "so it waits for run 3 to confirm it; the removals run 1 found are applied.)\n"
    )


def _sandbox(args: argparse.Namespace) -> int:
    with sigterm_as_interrupt():
        try:
            return _serve_sandbox(args)
        except KeyboardInterrupt:
            return 0


def _serve_sandbox(args: argparse.Namespace) -> int:
    demo = _sandbox_demo()
    env = _demo_environment()
    os.environ.update(env)
    if args.keep_data:
        _ensure_dagster_home(DEMO_DIR / "dagster_home")
    else:
        _fresh_demo()
    with demo.running_sandbox(
        demo.demo_community(), stripe_port=args.stripe_port, discord_port=args.discord_port
    ) as sandbox:
        env.update(sandbox.env())
        env_file = DEMO_DIR / "sandbox.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        print("Sandbox emulators are serving. Environment for the pipeline:")
        print("".join(f"  export {k}={v}\n" for k, v in env.items()), end="")
        print(f"(also in {env_file}: `set -a; . {env_file}; set +a; dagster dev`)")
        if not args.ui:
            print("Press Ctrl-C to stop.")
            while True:
                time.sleep(3600)
        dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
        # Its own workspace file, so the UI starts from any folder, not only the repository's.
        workspace = DEMO_DIR / "workspace.yaml"
        workspace.write_text(_DEMO_WORKSPACE)
        command = [dagster, "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(args.ui_port)]
        print(f"Starting the Dagster UI on http://127.0.0.1:{args.ui_port} (Ctrl-C stops it all)")
        return run_until_stopped(command, {**os.environ, **env})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recon-pipeline",
        description="Reconcile Stripe billing, the membership database and Discord roles.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run reconciliation_job for today on the configured Dagster instance",
        description="Launch reconciliation_job for the current local day on the Dagster "
        "instance in DAGSTER_HOME (default ./dagster_home), recorded as triggeredBy='manual'; "
        "print a summary; exit 1 if the run failed.",
    )
    run.add_argument("--auto-fix", action="store_true", help="apply fixes in this run")
    run.add_argument(
        "--override-guard",
        action="store_true",
        help="apply removals even when they trip the blast-radius guard (this run only)",
    )
    run.add_argument("--in-process", action="store_true", help="run every step in this process")
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo",
        help="seed a demo community, start the emulators, run the job (dry run, then fixes)",
        description=f"Everything local: a demo community in SQLite under {DEMO_DIR}/, Stripe "
        "and Discord emulators on loopback, and three runs of reconciliation_job.",
    )
    demo.set_defaults(handler=_demo)

    sandbox = commands.add_parser(
        "sandbox",
        help="serve the emulators with the demo community (and optionally the Dagster UI)",
    )
    sandbox.add_argument("--stripe-port", type=int, default=8711)
    sandbox.add_argument("--discord-port", type=int, default=8712)
    sandbox.add_argument("--ui", action="store_true", help="also run `dagster dev` on this setup")
    sandbox.add_argument("--ui-port", type=int, default=3000)
    sandbox.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the demo database and the demo's Dagster runs instead of starting afresh",
    )
    sandbox.set_defaults(handler=_sandbox)

    db = commands.add_parser("db", help="membership database chores")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    init = db_commands.add_parser(
        "init",
        help="create the missing tables (never alters an existing one)",
        description="Create the app's tables on an empty database and the pipeline's own "
        "recon_pipeline_* tables; existing tables are left exactly as they are.",
    )
    init.set_defaults(handler=_db_init)
    add_exceptions_parser(commands)
    add_issues_parser(commands)
    add_explain_parser(commands)
    add_check_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (
        SettingsError,
        DatabaseUrlError,
        SandboxMissingError,
        ExceptionInputError,
        RunNotFoundError,
        NoStoredRunError,
        UnknownSubjectError,
        AmbiguousSubjectError,
        LiveUnavailableError,
    ) as exc:
        print(f"recon-pipeline: {exc}", file=sys.stderr)
        return 2
    except (FrameDamagedError, FrameNotStoredError) as exc:
        print(f"recon-pipeline: {exc}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:
        target = parse_database_url(load_settings().DATABASE_URL)
        print(f"recon-pipeline: the membership database is unreachable: {target.failure(exc)}",
              file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
