"""One loopback server a test module shares, and a fake clock for the emulators and clients.

Starting uvicorn takes a moment, so a module starts one `LoopbackServer` (the `loopback` fixture
in conftest.py) and each test installs the app it wants behind it: a fresh emulator, or a
hand-written ASGI app that answers what no emulator would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from recon_pipeline.sandbox.server import LoopbackServer

App = Callable[[Any, Any, Any], Awaitable[None]]


class FakeClock:
    """Epoch seconds that move only when a test moves `now` or someone calls `sleep`.

    Pass it as an emulator's `clock` and a client's `clock`/`sleep`, and waits are instant:
    the client's sleeps advance the time the emulator's rate limits read.
    """

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class AppSwitch:
    """An ASGI app that forwards every request to whichever app was installed last.

    The server keeps one switch for its whole life; tests change `app`, not the server.
    """

    def __init__(self) -> None:
        self.app: App | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            raise RuntimeError("no app installed behind the loopback server")
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Loopback:
    """A running `LoopbackServer` and the `AppSwitch` it serves (the `loopback` fixture)."""

    server: LoopbackServer
    switch: AppSwitch

    @property
    def url(self) -> str:
        """The server's base URL, `http://127.0.0.1:<port>` (no trailing slash)."""
        return self.server.url

    def install(self, app: App) -> str:
        """Serve `app` from now on; returns the base URL to point a client at."""
        self.switch.app = app
        return self.url
