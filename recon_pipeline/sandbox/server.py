"""Serve an ASGI app on loopback from a background thread, for the emulators and the demo.

uvicorn runs the app on its own event loop in a daemon thread; `LoopbackServer` starts it on a
free port (or a given one), waits until it accepts connections, and stops it cleanly. One event
loop means the emulators' handlers never run concurrently, so their state needs no locks.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

START_TIMEOUT_SECONDS = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """An ASGI app listening on 127.0.0.1 while the `with` block (or start/stop) lasts."""

    def __init__(self, app: object, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # Keep-alive long enough that a paused client reuses its connection.
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(
            target=self._server.run, name=f"loopback-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._thread = None

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (the `sandbox` command)."""
        self._server.run()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
