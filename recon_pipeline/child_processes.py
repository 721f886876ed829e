"""Commands that start child processes stop them all on Ctrl-C and on SIGTERM.

Python ends at once on SIGTERM by default, running no `finally` and leaving its children (and
theirs: `dagster dev`'s webserver, daemon and code servers) behind. Here SIGTERM interrupts the
main thread as Ctrl-C does, and a child runs in a process group of its own, which is told to
stop, given a few seconds, and then killed.

A Dagster run executed in this process swaps the SIGINT and SIGTERM handlers for its own while
it runs: an interrupt then fails the run instead of reaching the command, and one arriving
between Dagster's checkpoints is forgotten when the run ends. The interpreter's wakeup fd hears
of every handled signal whichever handler took it, so a command asks it after each run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType

STOP_GRACE_S = 8.0  # what `dagster dev` needs to stop its processes on a 2-core machine


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


class StopRequests:
    """Whether Ctrl-C or SIGTERM arrived while the block ran, even if another handler took it."""

    _STOP = frozenset({signal.SIGINT, signal.SIGTERM})

    def __init__(self, reader: socket.socket) -> None:
        self._reader = reader
        self._received: set[int] = set()

    def raise_if_requested(self) -> None:
        """Raise KeyboardInterrupt when a stop was asked for since the block began."""
        while True:
            try:
                chunk = self._reader.recv(4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._received.update(chunk)
        if self._received & self._STOP:
            raise KeyboardInterrupt("a stop was requested while a run was executing")


@contextmanager
def sigterm_as_interrupt() -> Iterator[StopRequests]:
    """While the block runs, SIGTERM raises KeyboardInterrupt in the main thread, so context
    managers and `finally` blocks (the emulators, a child process) clean up as on Ctrl-C; the
    StopRequests it yields tells whether one arrived while a Dagster run held the handlers."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)  # the interpreter requires it of a wakeup fd
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield StopRequests(reader)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()


def run_until_stopped(
    command: Sequence[str], env: Mapping[str, str], *, grace_s: float = STOP_GRACE_S
) -> int:
    """Run `command` until it exits (its exit code), or until Ctrl-C or SIGTERM (0): then its
    whole process group gets SIGTERM, and SIGKILL for whatever is left after `grace_s`."""
    child = subprocess.Popen(list(command), env=dict(env), start_new_session=True)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        _stop_group(child, grace_s)
        return 0
    _stop_group(child, grace_s)  # processes it left behind, if any
    return code


def _stop_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    group = child.pid  # start_new_session: the child leads a group of its own
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        child.poll()  # reap the leader, so an exited one no longer counts as in the group
        if not _signal_group(group, 0):
            return
        time.sleep(0.1)
    _signal_group(group, signal.SIGKILL)
    child.wait()


def _signal_group(group: int, signum: int) -> bool:
    """Send `signum` to the group (0: only ask whether any process is left in it)."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True
