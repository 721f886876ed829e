"""Discord's rate limits as a client must honour them (as Discord documents them: per-route
buckets keyed with the major parameter, learned from `X-RateLimit-Bucket`; the global pause; 50
requests/s)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from recon_pipeline.clients.discord_errors import DiscordUnavailableError

# Added to every computed wait: absorbs float rounding and clock granularity.
MARGIN_S = 0.005


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. "/guilds/{guild_id}/roles": with `method`, names the route
    path: str
    major: str  # the top-level resource id: limits are per route and per major id

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Bucket:
    limit: int
    remaining: int
    reset_at: float  # client clock


class RateLimiter:
    """Discord's per-route buckets, the global pause and a 1 s sliding window (one thread)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        per_second: int,
        max_wait_s: float,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._per_second = per_second
        self._max_wait_s = max_wait_s
        self._hashes: dict[str, str] = {}  # route key -> X-RateLimit-Bucket
        self._template_hashes: dict[str, str] = {}  # path template -> last hash seen on it
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._global_until = 0.0
        self._recent: deque[float] = deque()
        self.waited_s = 0.0

    def _key(self, route: Route) -> tuple[str, str]:
        # Until a route's own hash is known, assume it shares the bucket of another method on
        # the same path (as PUT and DELETE on a member's role do): waiting once too many is
        # cheaper than a 429, which counts as an invalid request.
        bucket_hash = self._hashes.get(route.key) or self._template_hashes.get(route.template)
        return bucket_hash or route.key, route.major

    def acquire(self, route: Route) -> None:
        """Sleep until a request on `route` is allowed, then take its token."""
        while True:
            now = self._clock()
            wait = self._global_until - now
            bucket = self._buckets.get(self._key(route))
            if bucket is not None:
                if now >= bucket.reset_at:
                    bucket.remaining = max(bucket.remaining, bucket.limit)
                elif bucket.remaining <= 0:
                    wait = max(wait, bucket.reset_at - now)
            recent = self._recent
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= self._per_second:
                wait = max(wait, recent[0] + 1.0 - now + MARGIN_S)
            if wait <= 0:
                if bucket is not None:
                    bucket.remaining -= 1
                return
            if wait > self._max_wait_s:
                raise DiscordUnavailableError(
                    f"{route}: rate limit asks to wait {wait:.1f} s, more than the "
                    f"{self._max_wait_s:g} s allowed",
                    status=429,
                )
            self._sleep(wait)
            self.waited_s += wait

    def observe(self, route: Route, headers: httpx.Headers) -> None:
        """Count a finished request and learn its bucket from the response headers."""
        now = self._clock()
        self._recent.append(now)
        bucket_hash = headers.get("x-ratelimit-bucket")
        if bucket_hash:
            old = self._buckets.pop((route.key, route.major), None)
            self._hashes[route.key] = bucket_hash
            self._template_hashes[route.template] = bucket_hash
            if old is not None:
                self._buckets.setdefault(self._key(route), old)
        try:
            limit = int(headers["x-ratelimit-limit"])
            remaining = int(headers["x-ratelimit-remaining"])
            reset_after = float(headers["x-ratelimit-reset-after"])
        except (KeyError, ValueError):
            return
        self._buckets[self._key(route)] = Bucket(limit, remaining, now + reset_after + MARGIN_S)

    def rate_limited(self, route: Route, wait: float, *, global_: bool) -> None:
        """A 429 asked for `wait` seconds: block the route (or everything) that long."""
        if wait > self._max_wait_s:
            raise DiscordUnavailableError(
                f"{route}: 429 asks to wait {wait:.1f} s, more than the "
                f"{self._max_wait_s:g} s allowed",
                status=429,
            )
        until = self._clock() + wait + MARGIN_S
        if global_:
            self._global_until = max(self._global_until, until)
            return
        key = self._key(route)
        bucket = self._buckets.setdefault(key, Bucket(1, 0, until))
        bucket.remaining = 0
        bucket.reset_at = max(bucket.reset_at, until)
