"""Discord REST client (sync httpx): the guild snapshot, per-role fixes and admin messages.

Works unchanged against Discord and against the sandbox emulator (`api_base` includes `/api/v10`).

Every call goes through one rate limiter that follows Discord's headers: per-route buckets learned
from `X-RateLimit-Bucket` and keyed with the major parameter (guild or channel id), a pre-emptive
wait when a bucket's `Remaining` reaches 0 until `Reset-After` has elapsed, a pause of every route
after a global 429, and a one-second sliding window that keeps the client under 50 requests/s.
A 429 waits `max(retry_after, Retry-After)` and retries; 500/502/503/504/524, timeouts and
connection errors retry with backoff (1, 3, 5, … seconds times `retry_backoff_s`). Both share
one bound: at most `max_retries` retries per call. The loop is hand-written rather than tenacity:
429 waits come from the response and feed the shared limiter, which tenacity's wait model does
not express. A message whose response was lost after sending is not resent (it may be posted).

Not thread-safe: use one client per thread.

Exceptions, all with `.status` (HTTP status or None), `.code` (Discord JSON code or None) and
`.kind` (a short machine-readable label); no message ever contains the bot token:

    DiscordError                  any other failure: kind "bad_request" (400), "not_found"
    │                             (other 404s), "rejected" (other 4xx), "bad_response"
    │                             (an answer that cannot be read)
    ├── DiscordAuthError          401: the token is missing or wrong (kind "auth")
    ├── MissingPermissionsError   403/50013 hierarchy, managed role or no MANAGE_ROLES;
    │                             403/50001 no access, e.g. Server Members Intent off
    │                             (kind "missing_permissions")
    ├── UnknownMemberError        404/10007: the account is not in the guild (kind "unknown_member")
    ├── UnknownRoleError          404/10011: the role is not in the guild (kind "unknown_role")
    ├── DiscordBlockedError       Cloudflare-style 429 (non-JSON or no `Via`) or 403/40333:
    │                             stop at once, never retried (kind "blocked")
    └── DiscordUnavailableError   5xx, timeouts or connection errors after the retries, or a
                                  rate-limit wait above `max_rate_limit_wait_s` (kind "unavailable")
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import pandas as pd

from recon_pipeline.clients.discord_errors import (
    DiscordAuthError,
    DiscordBlockedError,
    DiscordError,
    DiscordUnavailableError,
    MissingPermissionsError,
    UnknownMemberError,
    UnknownRoleError,
)
from recon_pipeline.clients.discord_rate_limits import RateLimiter, Route
from recon_pipeline.domain.columns import GuildMemberRoleCol, GuildRoleCol

__all__ = [
    "DiscordAuthError",
    "DiscordBlockedError",
    "DiscordClient",
    "DiscordError",
    "DiscordUnavailableError",
    "MissingPermissionsError",
    "UnknownMemberError",
    "UnknownRoleError",
]

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://discord.com/api/v10"
PROJECT_URL = "https://example.invalid/recon_pipeline"
MEMBERS_PAGE_SIZE = 1000
MAX_CONTENT_CHARS = 2000
MAX_AUDIT_REASON_CHARS = 512
RETRY_STATUSES = frozenset({500, 502, 503, 504, 524})
INTENT_HINT = (
    "enable the Server Members Intent on the bot's page of the Discord developer portal "
    "(Bot > Privileged Gateway Intents)"
)
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")


def _package_version() -> str:
    try:
        return version("recon_pipeline")
    except PackageNotFoundError:
        return "0"


USER_AGENT = f"DiscordBot ({PROJECT_URL}, {_package_version()}) python-httpx/{httpx.__version__}"


class DiscordClient:
    """The bot's view of one guild.

    Args:
        bot_token: the bot token (sent as `Authorization: Bot …`, never shown anywhere).
        guild_id: the guild to read and fix.
        api_base: API root including the version, e.g. `http://127.0.0.1:PORT/api/v10`.
        timeout_s: per-request timeout.
        max_retries: retries per call after a 429, a 5xx, a timeout or a connection error.
        max_rate_limit_wait_s: a single rate-limit wait longer than this fails the call with
            `DiscordUnavailableError` instead of sleeping.
        http: an `httpx.Client` to send through (the caller closes it); URLs are absolute.
        sleep: how to wait (tests inject a fake that advances a fake clock).
        clock: monotonic seconds, read with `sleep`'s notion of time.
        retry_backoff_s: scale of the 5xx backoff (waits of 1, 3, 5, … times this).
        global_requests_per_second: the bot's global limit, kept with a 1 s sliding window.

    After `guild_member_roles()`, `skipped_members` holds how many member objects had no `user`.
    The counters `requests_made`, `rate_limited_count`, `rate_limit_wait_s`, `backoff_wait_s`,
    `retries` and `invalid_requests` (401/403/429 answers) add up over the client's life;
    `stats()` returns them as a dict for run metadata.
    """

    def __init__(
        self,
        *,
        bot_token: str,
        guild_id: str,
        api_base: str = DEFAULT_API_BASE,
        timeout_s: float = 10.0,
        max_retries: int = 4,
        max_rate_limit_wait_s: float = 60.0,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        retry_backoff_s: float = 1.0,
        global_requests_per_second: int = 50,
    ) -> None:
        if not bot_token:
            raise ValueError("bot_token is empty")
        _require_snowflake(guild_id, "guild_id")
        self.guild_id = guild_id
        self.api_base = api_base.rstrip("/")
        self.max_retries = max_retries
        self._token = bot_token
        self._headers = {"Authorization": f"Bot {bot_token}", "User-Agent": USER_AGENT}
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._retry_backoff_s = retry_backoff_s
        self._limiter = RateLimiter(
            clock=clock,
            sleep=sleep,
            per_second=global_requests_per_second,
            max_wait_s=max_rate_limit_wait_s,
        )
        self.skipped_members = 0
        self.requests_made = 0
        self.rate_limited_count = 0
        self.backoff_wait_s = 0.0
        self.retries = 0
        self.invalid_requests = 0

    def __repr__(self) -> str:
        return f"DiscordClient(guild_id={self.guild_id!r}, api_base={self.api_base!r})"

    def __enter__(self) -> DiscordClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    @property
    def rate_limit_wait_s(self) -> float:
        """Seconds spent waiting for rate limits (pre-emptive waits and after 429s)."""
        return self._limiter.waited_s

    def stats(self) -> dict[str, float | int]:
        return {
            "requests_made": self.requests_made,
            "rate_limited_count": self.rate_limited_count,
            "rate_limit_wait_s": round(self.rate_limit_wait_s, 3),
            "backoff_wait_s": round(self.backoff_wait_s, 3),
            "retries": self.retries,
            "invalid_requests": self.invalid_requests,
        }

    # ----------------------------------------------------------------------------- endpoints

    def guild_roles(self) -> pd.DataFrame:
        """All the guild's roles: `GuildRoleCol` columns plus `position` (int), `managed` (bool)
        and `permissions` (int, the role's permission bits)."""
        route = self._guild_route("GET", "/roles")
        roles = self._json(route, self._request(route))
        if not isinstance(roles, list):
            raise DiscordError(f"{route}: expected a list of roles", kind="bad_response")
        return pd.DataFrame(
            {
                GuildRoleCol.ID: pd.Series([str(r["id"]) for r in roles], dtype="str"),
                GuildRoleCol.NAME: pd.Series([str(r["name"]) for r in roles], dtype="str"),
                "position": pd.Series([int(r["position"]) for r in roles], dtype="int64"),
                "managed": pd.Series([bool(r.get("managed")) for r in roles], dtype="bool"),
                "permissions": pd.Series(
                    [int(r.get("permissions") or 0) for r in roles], dtype="int64"
                ),
            }
        )

    def current_user(self) -> dict[str, Any]:
        """The bot's own user (`GET /users/@me`): its id, and proof the token is accepted."""
        route = Route("GET", "/users/@me", "/users/@me", "@me")
        user = self._json(route, self._request(route))
        if not isinstance(user, dict) or "id" not in user:
            raise DiscordError(f"{route}: expected a user object", kind="bad_response")
        return user

    def read_one_member(self) -> None:
        """List one member: raises `MissingPermissionsError` (403, code 50001) when the Server
        Members Intent is off, as it would on the full listing."""
        route = self._guild_route("GET", "/members")
        self._json(route, self._request(route, params={"limit": 1}))

    def channel(self, channel_id: str) -> dict[str, Any]:
        """The channel object (`GET /channels/{id}`): its guild and permission overwrites."""
        _require_snowflake(channel_id, "channel_id")
        path = f"/channels/{channel_id}"
        route = Route("GET", "/channels/{channel_id}", path, channel_id)
        found = self._json(route, self._request(route))
        if not isinstance(found, dict):
            raise DiscordError(f"{route}: expected a channel object", kind="bad_response")
        return found

    def guild_member_roles(self) -> pd.DataFrame:
        """Every guild account in `GuildMemberRoleCol` long form, paging 1000 at a time.

        An account without roles has one row with a missing `role_id`. A member object without
        `user` is skipped and counted in `skipped_members`. Any failure raises: a partial guild
        is never returned, since it would read as members who lost their roles.
        """
        route = self._guild_route("GET", "/members")
        ids: list[str] = []
        bots: list[bool] = []
        role_ids: list[str | None] = []
        seen: set[str] = set()
        skipped = 0
        after = 0
        while True:
            try:
                response = self._request(route, params={"limit": MEMBERS_PAGE_SIZE, "after": after})
            except MissingPermissionsError as exc:
                if exc.code != 50001:
                    raise
                raise MissingPermissionsError(
                    f"{route}: 403 Missing Access (code 50001): the bot may not list members; "
                    f"{INTENT_HINT}",
                    status=exc.status,
                    code=exc.code,
                ) from exc
            page = self._json(route, response)
            if not isinstance(page, list):
                raise DiscordError(f"{route}: expected a list of members", kind="bad_response")
            highest = after
            for member in page:
                user = member.get("user") if isinstance(member, dict) else None
                if not isinstance(user, dict) or "id" not in user:
                    skipped += 1
                    continue
                user_id = str(user["id"])
                highest = max(highest, int(user_id))
                if user_id in seen:
                    continue
                seen.add(user_id)
                is_bot = bool(user.get("bot", False))
                held = [str(r) for r in member.get("roles") or []] or [None]
                ids.extend([user_id] * len(held))
                bots.extend([is_bot] * len(held))
                role_ids.extend(held)
            if len(page) < MEMBERS_PAGE_SIZE:
                break
            if highest <= after:
                raise DiscordError(
                    f"{route}: a full page did not advance past user id {after}",
                    kind="bad_response",
                )
            after = highest
        self.skipped_members = skipped
        if skipped:
            logger.warning("%s: skipped %d member object(s) without a user", route, skipped)
        return pd.DataFrame(
            {
                GuildMemberRoleCol.DISCORD_ID: pd.Series(ids, dtype="str"),
                GuildMemberRoleCol.IS_BOT: pd.Series(bots, dtype="bool"),
                GuildMemberRoleCol.ROLE_ID: pd.Series(role_ids, dtype="str"),
            }
        )

    def add_role(self, user_id: str, role_id: str, *, reason: str) -> None:
        """Give `user_id` the role (idempotent); `reason` goes to the guild's audit log."""
        self._member_role("PUT", user_id, role_id, reason)

    def remove_role(self, user_id: str, role_id: str, *, reason: str) -> None:
        """Take the role from `user_id` (idempotent, also if it was not held)."""
        self._member_role("DELETE", user_id, role_id, reason)

    def member_role_ids(self, user_id: str) -> frozenset[str] | None:
        """The role ids `user_id` holds now, or None when the account is not in the guild."""
        _require_snowflake(user_id, "user_id")
        path = f"/guilds/{self.guild_id}/members/{user_id}"
        route = Route("GET", "/guilds/{guild_id}/members/{user_id}", path, self.guild_id)
        try:
            member = self._json(route, self._request(route))
        except UnknownMemberError:
            return None
        if not isinstance(member, dict) or not isinstance(member.get("roles"), list):
            raise DiscordError(f"{route}: expected a member object", kind="bad_response")
        return frozenset(str(r) for r in member["roles"])

    def send_message(self, channel_id: str, content: str) -> None:
        """Post `content` (1–2000 characters) to a channel, pinging nobody."""
        _require_snowflake(channel_id, "channel_id")
        if not content:
            raise ValueError("message content is empty")
        if len(content) > MAX_CONTENT_CHARS:
            raise ValueError(
                f"message content has {len(content)} characters; Discord allows {MAX_CONTENT_CHARS}"
            )
        path = f"/channels/{channel_id}/messages"
        route = Route("POST", "/channels/{channel_id}/messages", path, channel_id)
        body = {"content": content, "allowed_mentions": {"parse": []}}
        self._request(route, json=body)

    # ----------------------------------------------------------------------------- transport

    def _guild_route(self, method: str, suffix: str) -> Route:
        template = "/guilds/{guild_id}" + suffix
        return Route(method, template, f"/guilds/{self.guild_id}{suffix}", self.guild_id)

    def _member_role(self, method: str, user_id: str, role_id: str, reason: str) -> None:
        _require_snowflake(user_id, "user_id")
        _require_snowflake(role_id, "role_id")
        route = Route(
            method,
            "/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
            f"/guilds/{self.guild_id}/members/{user_id}/roles/{role_id}",
            self.guild_id,
        )
        headers = {"X-Audit-Log-Reason": audit_reason(reason)} if reason else None
        self._request(route, headers=headers)

    def _request(
        self,
        route: Route,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = self.api_base + route.path
        request_headers = {**self._headers, **(headers or {})}
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            self._limiter.acquire(route)
            self.requests_made += 1
            try:
                response = self._http.request(
                    route.method,
                    url,
                    params=params,
                    json=json,
                    headers=request_headers,
                    timeout=self._timeout_s,
                )
            except httpx.TransportError as exc:
                self._limiter.observe(route, httpx.Headers())
                described = f"{type(exc).__name__}: {self._redact(str(exc))}"
                if not _retryable_transport_error(exc, route) or attempt == attempts:
                    raise DiscordUnavailableError(
                        f"{route}: {described} (attempt {attempt} of {attempts})"
                    ) from exc
                self._back_off(route, attempt, described)
                continue
            self._limiter.observe(route, response.headers)
            status = response.status_code
            if status in (401, 403, 429):
                self.invalid_requests += 1
            if status == 429:
                self.rate_limited_count += 1
                wait, global_ = self._rate_limit_wait(route, response)
                if attempt == attempts:
                    raise DiscordUnavailableError(
                        f"{route}: still rate limited after {attempts} attempts", status=429
                    )
                logger.info(
                    "%s: 429 (%s), waiting %.3f s", route, "global" if global_ else "route", wait
                )
                self._limiter.rate_limited(route, wait, global_=global_)
                self.retries += 1
                continue
            if status in RETRY_STATUSES:
                if attempt == attempts:
                    raise DiscordUnavailableError(
                        f"{route}: answered {status} {response.reason_phrase} on all "
                        f"{attempts} attempts",
                        status=status,
                    )
                self._back_off(route, attempt, f"{status} {response.reason_phrase}")
                continue
            if status >= 400:
                raise self._error(route, response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _back_off(self, route: Route, attempt: int, what: str) -> None:
        wait = self._retry_backoff_s * (2 * attempt - 1)
        logger.warning("%s: %s; retrying in %.1f s", route, what, wait)
        self._sleep(wait)
        self.backoff_wait_s += wait
        self.retries += 1

    def _rate_limit_wait(self, route: Route, response: httpx.Response) -> tuple[float, bool]:
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        body: Any = None
        if content_type == "application/json":
            try:
                body = response.json()
            except ValueError:
                body = None
        if "via" not in response.headers or not isinstance(body, dict):
            raise DiscordBlockedError(
                f"{route}: 429 without a Discord JSON body or Via header: Cloudflare is "
                "blocking this client (too many invalid requests); stop and retry much later",
                status=429,
                code=40333 if isinstance(body, dict) and body.get("code") == 40333 else None,
            )
        try:
            body_wait = float(body.get("retry_after", 0) or 0)
            header_wait = float(response.headers.get("retry-after", 0) or 0)
        except (TypeError, ValueError):
            body_wait, header_wait = 1.0, 1.0
        global_ = body.get("global") is True or (
            response.headers.get("x-ratelimit-global", "").lower() == "true"
        )
        return max(body_wait, header_wait), global_

    def _json(self, route: Route, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise DiscordError(
                f"{route}: answered {response.status_code} without a JSON body",
                status=response.status_code,
                kind="bad_response",
            ) from None

    def _error(self, route: Route, response: httpx.Response) -> DiscordError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        code = code if isinstance(code, int) else None
        text = body.get("message") if isinstance(body, dict) else None
        text = text if isinstance(text, str) else response.reason_phrase
        message = self._redact(f"{route}: {status} {text}" + (f" (code {code})" if code else ""))
        if status == 401:
            return DiscordAuthError(
                f"{message}: the bot token was rejected", status=status, code=code
            )
        if status == 403 and code == 40333:
            return DiscordBlockedError(message, status=status, code=code)
        if status == 403:
            return MissingPermissionsError(message, status=status, code=code)
        if status == 404 and code == 10007:
            return UnknownMemberError(message, status=status, code=code)
        if status == 404 and code == 10011:
            return UnknownRoleError(message, status=status, code=code)
        kind = {400: "bad_request", 404: "not_found"}.get(status, "rejected")
        return DiscordError(message, status=status, code=code, kind=kind)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")


def audit_reason(reason: str) -> str:
    """`reason` percent-encoded as discord.py does, cut so the encoded form has ≤ 512 chars."""
    encoded = quote(reason, safe="/ ")
    while len(encoded) > MAX_AUDIT_REASON_CHARS:
        excess = len(encoded) - MAX_AUDIT_REASON_CHARS
        reason = reason[: -max(1, excess // 12)]
        encoded = quote(reason, safe="/ ")
    return encoded


def _retryable_transport_error(exc: httpx.TransportError, route: Route) -> bool:
    if route.method == "POST":
        # Only errors before anything was sent; otherwise the message may already be posted.
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def _require_snowflake(value: str, what: str) -> None:
    if not isinstance(value, str) or not _SNOWFLAKE.fullmatch(value):
        raise ValueError(f"{what} must be a Discord id (digits), got {value!r}")
