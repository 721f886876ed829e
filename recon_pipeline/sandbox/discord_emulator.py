"""A stateful loopback emulator of the Discord REST endpoints the pipeline uses, under `/api/v10`.

It answers the way Discord does, as far as the pipeline can tell: the same paths, JSON bodies,
error codes, headers (`Via: 1.1 google`, `Content-Type: application/json`), per-route rate-limit
buckets, the global 50 requests/second limit, and the Cloudflare ban that follows too many
invalid requests. Served with `LoopbackServer(DiscordEmulator().app)`, the real client talks to
it unchanged through `DISCORD_API_BASE=http://127.0.0.1:PORT/api/v10`.

Endpoints: `GET /guilds/{g}/members`, `GET /guilds/{g}/members/{u}`, `GET /guilds/{g}/roles`,
`PUT|DELETE /guilds/{g}/members/{u}/roles/{r}`, `POST /channels/{c}/messages`,
`GET /channels/{c}` and `GET /users/@me`.

Each request is checked in this order: Cloudflare ban, `Authorization: Bot <token>`,
`User-Agent: DiscordBot (…)`, known route, injected fault, global limit, the route's bucket, then
the endpoint's own checks. Handlers never await between reading and changing state, so on
uvicorn's single event loop they need no locks. Times come from the injectable `clock`, so a test
can drive the rate limits with a fake clock shared with the client.

The guild always holds the bot's own member account with its managed role, as a real guild does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recon_pipeline.domain.columns import GuildMemberRoleCol, GuildRoleCol

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MANAGE_ROLES = 1 << 28
MAX_CONTENT_CHARS = 2000
MAX_EMBEDS = 10
MAX_EMBED_CHARS = 6000
INVALID_REQUEST_WINDOW_S = 600.0
_JOINED_AT = "2024-01-01T00:00:00.000000+00:00"
_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,19}")
_CLOUDFLARE_BODY = b"error code: 1015"
_INVALID_STATUSES = frozenset({401, 403, 429})


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered."""

    method: str
    path: str
    query: str
    status: int
    time: float


@dataclass(frozen=True)
class RoleMutation:
    """One PUT or DELETE on a member's role, whatever its outcome; `reason` is URL-decoded."""

    method: str
    user_id: str
    role_id: str
    status: int
    reason: str | None
    time: float


@dataclass
class _Role:
    id: str
    name: str
    position: int
    managed: bool = False


@dataclass
class _Member:
    user_id: str
    roles: set[str]
    bot: bool
    username: str
    without_user: bool = False  # listed without its `user` object


@dataclass
class _Bucket:
    remaining: int
    reset_at: float


@dataclass(frozen=True)
class _Fault:
    status: int
    global_: bool
    cloudflare: bool
    retry_after_s: float
    methods: frozenset[str] | None = None  # None: any request

    def meets(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class _Reply(Exception):
    """Raised inside a handler to answer at once with a JSON error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> _Reply:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _Reply(status, body)


def _form_error(field: str, code: str, message: str) -> _Reply:
    errors = {field: {"_errors": [{"code": code, "message": message}]}}
    return _error(400, 50035, "Invalid Form Body", errors)


def _bucket_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


# (methods, path under the API prefix, endpoint name, bucket hash). `major` is the top-level
# resource id that, with the hash, keys a bucket; both role routes share one hash.
_ROUTES: tuple[tuple[frozenset[str], re.Pattern[str], str, str], ...] = (
    (
        frozenset({"GET"}),
        re.compile(r"/guilds/(?P<major>[0-9]+)/members"),
        "list_members",
        _bucket_hash("guild members list"),
    ),
    (
        frozenset({"GET"}),
        re.compile(r"/guilds/(?P<major>[0-9]+)/members/(?P<user_id>[0-9]+)"),
        "get_member",
        _bucket_hash("guild member get"),
    ),
    (
        frozenset({"GET"}),
        re.compile(r"/guilds/(?P<major>[0-9]+)/roles"),
        "list_roles",
        _bucket_hash("guild roles list"),
    ),
    (
        frozenset({"PUT", "DELETE"}),
        re.compile(
            r"/guilds/(?P<major>[0-9]+)/members/(?P<user_id>[0-9]+)"
            r"/roles/(?P<role_id>[0-9]+)"
        ),
        "member_role",
        _bucket_hash("guild member role"),
    ),
    (
        frozenset({"POST"}),
        re.compile(r"/channels/(?P<major>[0-9]+)/messages"),
        "create_message",
        _bucket_hash("channel messages create"),
    ),
    (
        frozenset({"GET"}),
        re.compile(r"/channels/(?P<major>[0-9]+)"),
        "get_channel",
        _bucket_hash("channel get"),
    ),
    (
        frozenset({"GET"}),
        re.compile(r"/users/(?P<major>@me)"),
        "current_user",
        _bucket_hash("current user get"),
    ),
)
VIEW_AND_SEND = (1 << 10) | (1 << 11)  # what @everyone may do in a new server's text channels


class DiscordEmulator:
    """One guild, its roles, members and channels, behind Discord's REST protocol.

    Args:
        bot_token: the token the client must send as `Authorization: Bot <token>`.
        guild_id: the only guild that exists; other guild ids get 404/10004.
        route_limit: requests per bucket window, for every route bucket.
        route_window_s: length of a bucket window; it starts with the first request after reset.
        global_per_second: requests per sliding second across all routes.
        latency_s: delay before each request is handled (settable later through `latency_s`).
        invalid_request_ban_threshold: 401/403/429 answers allowed within ten minutes; past it
            every request gets a Cloudflare-style ban (non-JSON 429 without `Via`).
        clock: epoch seconds; inject a fake one to drive the rate limits deterministically.
        bot_user_id: the bot's own user id (a guild member holding the managed bot role).
        check_user_agent: answer 403/40333 unless `User-Agent` starts with `DiscordBot (`.
        ban_duration_s: how long a Cloudflare ban lasts.
    """

    def __init__(
        self,
        *,
        bot_token: str = "sandbox-bot-token",
        guild_id: str = "1100000000000000000",
        route_limit: int = 50,
        route_window_s: float = 1.0,
        global_per_second: int = 50,
        latency_s: float = 0.0,
        invalid_request_ban_threshold: int = 10_000,
        clock: Callable[[], float] = time.time,
        bot_user_id: str = "1100000000000000900",
        check_user_agent: bool = True,
        ban_duration_s: float = 3600.0,
    ) -> None:
        self.bot_token = bot_token
        self.guild_id = guild_id
        self.route_limit = route_limit
        self.route_window_s = route_window_s
        self.global_per_second = global_per_second
        self.latency_s = latency_s
        self.invalid_request_ban_threshold = invalid_request_ban_threshold
        self.clock = clock
        self.bot_user_id = bot_user_id
        self.bot_role_id = str(int(bot_user_id) + 1)
        self.check_user_agent = check_user_agent
        self.ban_duration_s = ban_duration_s

        self.requests: list[RequestRecord] = []
        self.mutations: list[RoleMutation] = []
        # Called with each answered request, on the server's event loop: lets a test change the
        # guild at an exact point of a client's work (a member leaving after the listing).
        self.after_request: Callable[[RequestRecord], None] | None = None
        self._roles: dict[str, _Role] = {}
        self._members: dict[str, _Member] = {}
        self._sorted_ids: list[int] | None = None
        self._channels: dict[str, list[dict[str, Any]]] = {}
        self._bot_top: int | None = None
        self._members_intent = True
        self._manage_roles = True
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._global_window: deque[float] = deque()
        self._invalid_times: deque[float] = deque()
        self._banned_until = -math.inf
        self._faults: deque[_Fault] = deque()
        self._message_seq = 0
        self._reset_guild()
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._handle,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )

    # ----------------------------------------------------------------------------- state setup

    def _reset_guild(self) -> None:
        self._roles = {
            self.guild_id: _Role(self.guild_id, "@everyone", 0),
            self.bot_role_id: _Role(self.bot_role_id, "Recon Bot", 1, managed=True),
        }
        self._members = {
            self.bot_user_id: _Member(self.bot_user_id, {self.bot_role_id}, True, "recon-bot")
        }
        self._sorted_ids = None

    def add_role(self, role_id: str, name: str, *, position: int, managed: bool = False) -> None:
        """Create (or replace) a role; unless `set_bot_top_position` was called, the bot's own
        role stays above every role added."""
        _require_snowflake(role_id, "role_id")
        self._roles[role_id] = _Role(role_id, name, position, managed)

    def add_member(
        self,
        user_id: str,
        *,
        roles: Iterable[str] = (),
        bot: bool = False,
        username: str | None = None,
    ) -> None:
        """Add (or replace) a guild member holding `roles` (ids of existing roles)."""
        _require_snowflake(user_id, "user_id")
        held = set(roles)
        unknown = held - self._roles.keys()
        if unknown:
            raise ValueError(f"unknown role id(s) {', '.join(sorted(unknown))}")
        held.discard(self.guild_id)
        self._members[user_id] = _Member(user_id, held, bot, username or f"user{user_id}")
        self._sorted_ids = None

    def list_without_user(self, user_id: str) -> None:
        """List this member's object without its `user` (malformed data, as a client sees it)."""
        self._members[user_id].without_user = True

    def remove_member(self, user_id: str) -> None:
        """The member leaves the guild (no error if it was not in it)."""
        if self._members.pop(user_id, None) is not None:
            self._sorted_ids = None

    def add_channel(self, channel_id: str) -> None:
        """Create a text channel the bot may post in."""
        _require_snowflake(channel_id, "channel_id")
        self._channels.setdefault(channel_id, [])

    def set_bot_top_position(self, position: int) -> None:
        """Fix the bot's highest role position; roles at or above it get 403/50013."""
        self._bot_top = position

    def set_members_intent(self, enabled: bool) -> None:
        """Switch the Server Members Intent; off, listing members gets 403/50001."""
        self._members_intent = enabled

    def set_manage_roles(self, enabled: bool) -> None:
        """Grant or withdraw the bot's MANAGE_ROLES permission."""
        self._manage_roles = enabled

    def load_frames(self, guild_member_roles: pd.DataFrame, guild_roles: pd.DataFrame) -> None:
        """Replace the guild's roles and members with a community's snapshot frames.

        `guild_roles` (`GuildRoleCol`) get positions 1, 2, … in row order, below the bot's role.
        `guild_member_roles` is the `GuildMemberRoleCol` long form; a row with a missing role id
        is an account that holds no role. The bot's own member and role are kept.
        """
        role_ids = guild_roles[GuildRoleCol.ID].astype("str").tolist()
        names = guild_roles[GuildRoleCol.NAME].astype("str").tolist()
        if len(set(role_ids)) != len(role_ids):
            raise ValueError("guild_roles has duplicate role ids")
        for role_id in role_ids:
            _require_snowflake(role_id, "role id")

        ids = guild_member_roles[GuildMemberRoleCol.DISCORD_ID]
        if ids.isna().any():
            raise ValueError("guild_member_roles has rows without a discord_id")
        ids = ids.astype("str")
        bad = ~ids.str.fullmatch(_SNOWFLAKE.pattern)
        if bad.any():
            raise ValueError(f"invalid discord_id {ids[bad].iloc[0]!r}")
        held = guild_member_roles[GuildMemberRoleCol.ROLE_ID]
        has_role = held.notna().to_numpy()
        held_ids = held[has_role].astype("str").to_numpy(dtype=object)
        unknown = set(held_ids) - set(role_ids) - {self.guild_id}
        if unknown:
            raise ValueError(f"roles held but not in guild_roles: {', '.join(sorted(unknown))}")
        bots = guild_member_roles[GuildMemberRoleCol.IS_BOT].fillna(False).astype(bool)

        self._reset_guild()
        for position, (role_id, name) in enumerate(zip(role_ids, names, strict=True), start=1):
            if role_id != self.guild_id:
                self._roles[role_id] = _Role(role_id, name, position)
        self._bot_top = None
        bot_ids = set(ids[bots.to_numpy()].tolist())
        members = self._members
        for user_id in pd.unique(ids.to_numpy(dtype=object)):
            members[user_id] = _Member(user_id, set(), user_id in bot_ids, f"user{user_id}")
        for user_id, role_id in zip(ids[has_role].to_numpy(dtype=object), held_ids, strict=True):
            if role_id != self.guild_id:
                members[user_id].roles.add(role_id)
        self._sorted_ids = None

    # ----------------------------------------------------------------------------- faults

    def fail_next(
        self,
        n: int,
        status: int = 500,
        *,
        global_: bool = False,
        cloudflare: bool = False,
        retry_after_s: float = 0.05,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer the next `n` authorised requests to a known route with `status`.

        A 429 is a route limit (`global_=False`), a global one, or with `cloudflare=True` a
        non-JSON body without `Via`. `retry_after_s` is the wait a JSON 429 asks for. With
        `methods` (e.g. `{"PUT", "DELETE"}`, the role changes) only requests using one of them
        meet the faults; faults are met in the order they were queued.
        """
        only = frozenset(m.upper() for m in methods) if methods is not None else None
        fault = _Fault(status, global_, cloudflare, retry_after_s, only)
        self._faults.extend([fault] * n)

    def reset_faults(self) -> None:
        """Drop pending faults, lift a ban and forget counted invalid requests."""
        self._faults.clear()
        self._banned_until = -math.inf
        self._invalid_times.clear()

    # ----------------------------------------------------------------------------- inspection

    @property
    def bot_top_position(self) -> int:
        if self._bot_top is not None:
            return self._bot_top
        others = [r.position for r in self._roles.values() if r.id != self.bot_role_id]
        return max(others, default=0) + 1

    def position_of(self, role_name: str) -> int:
        """The position of the role named `role_name` (KeyError if there is none)."""
        for role in self._roles.values():
            if role.name == role_name:
                return role.position
        raise KeyError(role_name)

    def member_roles(self, user_id: str) -> frozenset[str]:
        """Role ids `user_id` holds (KeyError if not a member)."""
        return frozenset(self._members[user_id].roles)

    def all_member_roles(self) -> dict[str, frozenset[str]]:
        return {uid: frozenset(m.roles) for uid, m in self._members.items()}

    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Messages posted to the channel: message objects plus the request's `allowed_mentions`."""
        return list(self._channels.get(channel_id, []))

    def count_status(self, status: int) -> int:
        return sum(1 for r in self.requests if r.status == status)

    # ----------------------------------------------------------------------------- protocol

    async def _handle(self, request: Request) -> Response:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        body = await request.body()
        # From here on nothing awaits, so the state below changes atomically.
        now = self.clock()
        path = request.url.path
        response, route = self._answer(request, body, now)
        record = RequestRecord(request.method, path, request.url.query, response.status_code, now)
        self.requests.append(record)
        # Cloudflare's own answers (no `Via`) are not Discord's to count.
        if (
            response.status_code in _INVALID_STATUSES
            and "via" in response.headers
            and response.headers.get("x-ratelimit-scope") != "shared"
        ):
            self._invalid_times.append(now)
            self._forget_old_invalid(now)
            if len(self._invalid_times) > self.invalid_request_ban_threshold:
                self._banned_until = now + self.ban_duration_s
        if route is not None and route[0] == "member_role":
            reason = request.headers.get("x-audit-log-reason")
            self.mutations.append(
                RoleMutation(
                    request.method,
                    route[1]["user_id"],
                    route[1]["role_id"],
                    response.status_code,
                    unquote(reason) if reason is not None else None,
                    now,
                )
            )
        if self.after_request is not None:
            self.after_request(record)
        return response

    def _forget_old_invalid(self, now: float) -> None:
        while self._invalid_times and self._invalid_times[0] <= now - INVALID_REQUEST_WINDOW_S:
            self._invalid_times.popleft()

    def _answer(
        self, request: Request, body: bytes, now: float
    ) -> tuple[Response, tuple[str, dict[str, str]] | None]:
        if now < self._banned_until:
            return _cloudflare_ban(), None
        if request.headers.get("authorization") != f"Bot {self.bot_token}":
            return _json(401, {"message": "401: Unauthorized", "code": 0}), None
        if self.check_user_agent and not request.headers.get("user-agent", "").startswith(
            "DiscordBot ("
        ):
            message = "Cloudflare is blocking your request"
            return _json(403, {"message": message, "code": 40333}), None
        path = request.url.path
        if not path.startswith(API_PREFIX + "/"):
            return _json(404, {"message": "404: Not Found", "code": 0}), None
        sub_path = path[len(API_PREFIX) :]
        for methods, pattern, name, bucket_hash in _ROUTES:
            match = pattern.fullmatch(sub_path)
            if match is None:
                continue
            if request.method not in methods:
                return _json(405, {"message": "405: Method Not Allowed", "code": 0}), None
            params = match.groupdict()
            return self._limited(request, body, now, name, bucket_hash, params), (name, params)
        return _json(404, {"message": "404: Not Found", "code": 0}), None

    def _limited(
        self,
        request: Request,
        body: bytes,
        now: float,
        name: str,
        bucket_hash: str,
        params: dict[str, str],
    ) -> Response:
        if self._faults and self._faults[0].meets(request.method):
            return _fault_response(self._faults.popleft())

        window = self._global_window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.global_per_second:
            wait = _ceil_ms(window[0] + 1.0 - now)
            return _rate_limited(wait, global_=True, headers={})
        window.append(now)

        key = (bucket_hash, params["major"])
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.reset_at:
            bucket = _Bucket(self.route_limit, now + self.route_window_s)
            self._buckets[key] = bucket
        reset_after = _ceil_ms(bucket.reset_at - now)
        headers = {
            "X-RateLimit-Limit": str(self.route_limit),
            "X-RateLimit-Reset": f"{now + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash,
        }
        if bucket.remaining <= 0:
            headers["X-RateLimit-Remaining"] = "0"
            return _rate_limited(reset_after, global_=False, headers=headers)
        bucket.remaining -= 1
        headers["X-RateLimit-Remaining"] = str(bucket.remaining)

        try:
            status, payload = getattr(self, f"_{name}")(request, body, now, params)
        except _Reply as reply:
            status, payload = reply.status, reply.body
        if status == 204:
            return Response(status_code=204, headers={"Via": "1.1 google", **headers})
        return _json(status, payload, headers)

    # ----------------------------------------------------------------------------- endpoints

    def _check_guild(self, guild_id: str) -> None:
        if guild_id != self.guild_id:
            raise _error(404, 10004, "Unknown Guild")

    def _list_members(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        self._check_guild(params["major"])
        if not self._members_intent:
            raise _error(403, 50001, "Missing Access")
        limit = _int_param(request, "limit", 1)
        if limit < 1:
            raise _form_error(
                "limit", "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1."
            )
        if limit > 1000:
            raise _form_error(
                "limit", "NUMBER_TYPE_MAX", "int value should be less than or equal to 1000."
            )
        after = _int_param(request, "after", 0)
        if self._sorted_ids is None:
            self._sorted_ids = sorted(int(uid) for uid in self._members)
        start = bisect_right(self._sorted_ids, after)
        page = self._sorted_ids[start : start + limit]
        return 200, [self._member_object(self._members[str(uid)]) for uid in page]

    def _get_member(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        self._check_guild(params["major"])
        member = self._members.get(params["user_id"])
        if member is None:
            raise _error(404, 10007, "Unknown Member")
        return 200, self._member_object(member)

    def _member_object(self, member: _Member) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": member.user_id,
            "username": member.username,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
        }
        if member.bot:
            user["bot"] = True
        return {
            **({} if member.without_user else {"user": user}),
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": sorted(member.roles, key=int),
            "joined_at": _JOINED_AT,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _list_roles(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        self._check_guild(params["major"])
        top = self.bot_top_position

        def position(role: _Role) -> int:
            return top if role.id == self.bot_role_id else role.position

        roles = []
        for role in sorted(self._roles.values(), key=lambda r: (position(r), int(r.id))):
            is_bot_role = role.id == self.bot_role_id
            roles.append(
                {
                    "id": role.id,
                    "name": role.name,
                    "color": 0,
                    "colors": {
                        "primary_color": 0,
                        "secondary_color": None,
                        "tertiary_color": None,
                    },
                    "hoist": False,
                    "icon": None,
                    "unicode_emoji": None,
                    "position": position(role),
                    "permissions": str(self._role_permissions(role)),
                    "managed": role.managed,
                    "mentionable": False,
                    "flags": 0,
                    **({"tags": {"bot_id": self.bot_user_id}} if is_bot_role else {}),
                }
            )
        return 200, roles

    def _role_permissions(self, role: _Role) -> int:
        if role.id == self.bot_role_id:
            return MANAGE_ROLES if self._manage_roles else 0
        return VIEW_AND_SEND if role.id == self.guild_id else 0

    def _get_channel(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        channel_id = params["major"]
        if channel_id not in self._channels:
            raise _error(404, 10003, "Unknown Channel")
        return 200, {
            "id": channel_id,
            "type": 0,
            "guild_id": self.guild_id,
            "name": f"channel-{channel_id}",
            "position": 0,
            "permission_overwrites": [],
        }

    def _current_user(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        return 200, {
            "id": self.bot_user_id,
            "username": "recon-bot",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
        }

    def _member_role(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        self._check_guild(params["major"])
        role = self._roles.get(params["role_id"])
        if role is None:
            raise _error(404, 10011, "Unknown Role")
        member = self._members.get(params["user_id"])
        if member is None:
            raise _error(404, 10007, "Unknown Member")
        if (
            not self._manage_roles
            or role.managed
            or role.id == self.bot_role_id
            or role.position >= self.bot_top_position
        ):
            raise _error(403, 50013, "Missing Permissions")
        if role.id != self.guild_id:
            if request.method == "PUT":
                member.roles.add(role.id)
            else:
                member.roles.discard(role.id)
        return 204, None

    def _create_message(
        self, request: Request, body: bytes, now: float, params: dict[str, str]
    ) -> tuple[int, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _error(400, 50035, "Invalid Form Body")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise _error(400, 50109, "The request body contains invalid JSON.") from exc
        if not isinstance(payload, dict):
            raise _error(400, 50035, "Invalid Form Body")
        content = payload.get("content")
        embeds = payload.get("embeds") or []
        if content is not None and not isinstance(content, str):
            raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if not isinstance(embeds, list):
            raise _form_error("embeds", "BASE_TYPE_LIST", "Must be a list.")
        others = ("sticker_ids", "components", "files", "attachments", "poll")
        if not content and not embeds and not any(payload.get(k) for k in others):
            raise _error(400, 50006, "Cannot send an empty message")
        if content is not None and len(content) > MAX_CONTENT_CHARS:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        if len(embeds) > MAX_EMBEDS:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if sum(_embed_chars(e) for e in embeds) > MAX_EMBED_CHARS:
            raise _form_error(
                "embeds", "BASE_TYPE_MAX_LENGTH", "Embed size exceeds maximum size of 6000"
            )
        channel = self._channels.get(params["major"])
        if channel is None:
            raise _error(404, 10003, "Unknown Channel")
        self._message_seq += 1
        millis = max(int(now * 1000) - DISCORD_EPOCH_MS, 0)
        message_id = (millis << 22) | (self._message_seq & 0xFFF)
        message = {
            "id": str(message_id),
            "type": 0,
            "channel_id": params["major"],
            "author": {
                "id": self.bot_user_id,
                "username": "recon-bot",
                "discriminator": "0",
                "global_name": None,
                "avatar": None,
                "bot": True,
            },
            "content": content or "",
            "timestamp": datetime.fromtimestamp(now, tz=UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": embeds,
            "pinned": False,
            "flags": 0,
        }
        channel.append({**message, "allowed_mentions": payload.get("allowed_mentions")})
        return 200, message


def _require_snowflake(value: str, what: str) -> None:
    if not isinstance(value, str) or not _SNOWFLAKE.fullmatch(value):
        raise ValueError(f"{what} must be a snowflake string, got {value!r}")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise _form_error(name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.') from None


def _embed_chars(embed: Any) -> int:
    if not isinstance(embed, dict):
        return 0
    texts = [embed.get("title"), embed.get("description")]
    texts += [(embed.get("footer") or {}).get("text"), (embed.get("author") or {}).get("name")]
    for field in embed.get("fields") or []:
        texts += [field.get("name"), field.get("value")]
    return sum(len(t) for t in texts if isinstance(t, str))


def _ceil_ms(seconds: float) -> float:
    return max(math.ceil(seconds * 1000) / 1000, 0.001)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(payload, separators=(",", ":")).encode(),
        status_code=status,
        headers={"Content-Type": "application/json", "Via": "1.1 google", **(headers or {})},
    )


def _rate_limited(retry_after: float, *, global_: bool, headers: dict[str, str]) -> Response:
    limit_headers = {
        **headers,
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Scope": "global" if global_ else "user",
    }
    if global_:
        limit_headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": global_}
    return _json(429, body, limit_headers)


def _cloudflare_ban() -> Response:
    return Response(
        content=_CLOUDFLARE_BODY,
        status_code=429,
        headers={"Content-Type": "text/plain; charset=UTF-8", "Retry-After": "3600"},
    )


def _fault_response(fault: _Fault) -> Response:
    if fault.status == 429:
        if fault.cloudflare:
            return _cloudflare_ban()
        return _rate_limited(fault.retry_after_s, global_=fault.global_, headers={})
    messages = {500: "500: Internal Server Error", 502: "502: Bad Gateway"}
    message = messages.get(fault.status, f"{fault.status}: Service Unavailable")
    return _json(fault.status, {"message": message, "code": 0})
