"""Starting and stopping Dagster's long-running processes in tests, and waiting on them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg
import httpx

T = TypeVar("T")
READY_S = 120  # measured: ~10 s to LOADED on a 2-core box with PostgreSQL storage

_WORKSPACE = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}"""


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


@contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """Start children with SIGINT at its default: Dagster's commands map SIGTERM to their SIGINT
    handler, and a shell's background job would otherwise pass SIGINT on as ignored."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def command(name: str) -> str:
    """The path of one of the virtualenv's console scripts (`dagster`, `dagster-daemon`, …)."""
    return str(Path(sys.executable).parent / name)


def start(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Run `argv` in its own process group, its output going to `log_path`."""
    with log_path.open("wb") as log, _sigint_not_ignored():
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """TERM the process group (its servers, code servers and run workers), KILL after 60 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def kill_step_of_latest_run(instance: dg.DagsterInstance, step_key: str) -> tuple[str, int]:
    """SIGKILL the process running `step_key` of the instance's latest run, as a crashed host
    would; returns (run id, pid)."""
    [run] = instance.get_runs(limit=1)
    starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START)
    [pid] = [
        r.event_log_entry.dagster_event.pid
        for r in starts.records
        if r.event_log_entry.step_key == step_key
    ]
    os.kill(pid, signal.SIGKILL)
    return run.run_id, pid


def log_tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_loaded(
    url: str, processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = READY_S
) -> list[str]:
    """Until the webserver at `url` answers and reports every code location LOADED; their names."""

    def ready() -> list[str] | None:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args} exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/server_info", timeout=10).status_code != 200:
                return None
            body = httpx.post(f"{url}/graphql", json={"query": _WORKSPACE}, timeout=10).json()
        except httpx.TransportError:
            return None
        entries = (body.get("data") or {}).get("workspaceOrError", {}).get("locationEntries", [])
        for entry in entries:
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise AssertionError(f"location {entry['name']} failed: {loaded['message']}")
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return [e["name"] for e in entries]
        return None

    return wait_for("the webserver with every code location loaded", ready, timeout_s)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, theirs, …), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie waiting to be reaped counts as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running
