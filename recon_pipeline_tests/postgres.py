"""A throwaway PostgreSQL cluster for the tests: real server, private data directory, fast settings.

The cluster lives in a directory made with `tempfile.mkdtemp()` and owned by the `postgres` OS
user when the tests run as root, because `initdb` and `postgres` refuse to run as root. It listens
on 127.0.0.1 on a free port, keeps its sockets in its own directory and runs with fsync off. If the
server cannot start, `PostgresUnavailableError` carries its log, so the tests fail loudly instead
of being skipped.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 30.0
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    # Durability is pointless for a cluster deleted at the end of the session.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}


class PostgresUnavailableError(RuntimeError):
    """The test cluster could not be created or started."""


def find_bindir() -> Path:
    """The directory holding `initdb`, `postgres` and `pg_ctl` (newest installed version)."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if not candidates and shutil.which("pg_config"):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if bindir and (Path(bindir) / "initdb").exists():
            candidates.append(Path(bindir))
    if not candidates:
        raise PostgresUnavailableError(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin or via "
            "`pg_config --bindir`; install the server (e.g. apt-get install postgresql)"
        )
    return candidates[0]


@dataclass
class PostgresServer:
    """A running cluster. `create_database()` hands out a fresh, empty database."""

    bindir: Path
    root: Path
    port: int
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    process: subprocess.Popen[bytes] | None = None
    _counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str) -> str:
        """The database's URL in the app's form (`postgresql://user@host:port/db`)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        dbname = f"test_{next(self._counter)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return self.url(dbname)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"


def _as_server_user(command: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *command]
    return list(command)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hand_over(root: Path) -> None:
    try:
        shutil.chown(root, user=SUPERUSER)
    except LookupError as exc:
        raise PostgresUnavailableError(
            f"running as root, but there is no {SUPERUSER!r} OS user to run the server as"
        ) from exc


def _initdb(server: PostgresServer) -> None:
    result = subprocess.run(
        _as_server_user(
            [
                str(server.bindir / "initdb"),
                "--pgdata",
                str(server.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ]
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresUnavailableError(
            f"initdb failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def _start(server: PostgresServer) -> None:
    settings = {
        **_SERVER_SETTINGS,
        "port": str(server.port),
        "unix_socket_directories": str(server.root),
    }
    args = [str(server.bindir / "postgres"), "-D", str(server.data_dir)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            _as_server_user(args), stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            server.connect().close()
            return
        except psycopg.OperationalError as exc:
            last_error = exc
        if server.process.poll() is not None:
            raise PostgresUnavailableError(
                f"postgres exited with code {server.process.returncode}:\n{server.log_text()}"
            )
        if time.monotonic() > deadline:
            raise PostgresUnavailableError(
                f"postgres did not accept connections within {START_TIMEOUT_SECONDS:.0f} s "
                f"({last_error}):\n{server.log_text()}"
            )
        time.sleep(0.02)


def _stop(server: PostgresServer) -> None:
    if server.process is None or server.process.poll() is not None:
        return
    subprocess.run(
        _as_server_user(
            [str(server.bindir / "pg_ctl"), "stop", "-D", str(server.data_dir), "-m", "immediate"]
        ),
        capture_output=True,
        check=False,
    )
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway cluster, yield it, then stop it and delete its files."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="recon-pipeline-pg-"))
    server = PostgresServer(bindir=bindir, root=root, port=_free_port())
    try:
        if os.geteuid() == 0:
            _hand_over(root)
        _initdb(server)
        _start(server)
        yield server
    finally:
        _stop(server)
        shutil.rmtree(root, ignore_errors=True)
