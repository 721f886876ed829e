"""The Discord client against the emulator on loopback, and a mock transport where needed.

The client and the emulator share a fake clock: the client's sleeps advance it and the emulator's
rate limits read it, so waits are instant and every assertion is on recorded requests, not on
how long the test took. One test repeats the small-bucket run on the real clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from recon_pipeline.clients.discord import (
    USER_AGENT,
    DiscordAuthError,
    DiscordBlockedError,
    DiscordClient,
    DiscordError,
    DiscordUnavailableError,
    MissingPermissionsError,
    UnknownMemberError,
    UnknownRoleError,
    audit_reason,
)
from recon_pipeline.domain.columns import GuildMemberRoleCol, GuildRoleCol
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline_tests.loopback import FakeClock, Loopback

GUILD = "1100000000000000000"
TOKEN = "sandbox-bot-token-Zx9"
CHANNEL = "1300000000000000001"
ROLE_MEMBER = "1200000000000000001"
ROLE_EVENTS = "1200000000000000002"
ROLE_ADMIN = "1200000000000000003"
ROLE_BOOSTER = "1200000000000000004"
ALICE = "300000000000000001"
BOB = "300000000000000002"
GONE = "300000000000000099"


Setup = Callable[..., tuple[DiscordEmulator, DiscordClient]]


@pytest.fixture
def setup(loopback: Loopback, clock: FakeClock) -> Iterator[Setup]:
    """Install a fresh emulator (options as given) and a client on the shared fake clock."""
    clients: list[DiscordClient] = []

    def factory(
        *, token: str = TOKEN, real_time: bool = False, client_options: Any = None, **options: Any
    ) -> tuple[DiscordEmulator, DiscordClient]:
        emulator_clock: dict[str, Any] = {} if real_time else {"clock": clock}
        emulator = DiscordEmulator(bot_token=TOKEN, guild_id=GUILD, **emulator_clock, **options)
        emulator.add_role(ROLE_MEMBER, "Member", position=1)
        emulator.add_role(ROLE_EVENTS, "Events", position=2)
        emulator.add_role(ROLE_ADMIN, "Admin", position=3)
        emulator.add_role(ROLE_BOOSTER, "Booster", position=1, managed=True)
        emulator.set_bot_top_position(3)
        emulator.add_member(ALICE, roles=[ROLE_MEMBER])
        emulator.add_member(BOB)
        emulator.add_channel(CHANNEL)
        api_base = f"{loopback.install(emulator.app)}/api/v10"
        client_clock: dict[str, Any] = {} if real_time else {"clock": clock, "sleep": clock.sleep}
        client = DiscordClient(
            bot_token=token,
            guild_id=GUILD,
            api_base=api_base,
            **client_clock,
            **(client_options or {}),
        )
        clients.append(client)
        return emulator, client

    yield factory
    for client in clients:
        client.close()


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> DiscordClient:
    clock = FakeClock()
    return DiscordClient(
        bot_token=TOKEN,
        guild_id=GUILD,
        api_base="https://discord.test/api/v10",
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        clock=clock,
        sleep=clock.sleep,
        **options,
    )


def discord_json(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Via": "1.1 google", **headers})


# ------------------------------------------------------------------------------------ snapshot


def test_snapshot_pages_a_large_guild_and_keeps_bots_and_roleless_accounts(setup: Setup) -> None:
    emulator, client = setup()
    # 2,997 more accounts plus Alice, Bob and the bot's own: 3,000, so the last page is empty.
    held_by_rest = ([ROLE_MEMBER, ROLE_EVENTS], [ROLE_EVENTS], [])
    for n in range(2_997):
        user_id = str(400_000_000_000_000_000 + n * 13)
        emulator.add_member(user_id, roles=held_by_rest[n % 3], bot=n % 500 == 7)

    frame = client.guild_member_roles()

    member_gets = [r for r in emulator.requests if r.path.endswith("/members")]
    ordered = sorted(emulator.all_member_roles(), key=int)
    cursors = ["0", ordered[999], ordered[1999], ordered[2999]]
    assert [r.query for r in member_gets] == [f"limit=1000&after={c}" for c in cursors]
    assert client.requests_made == 4
    assert client.skipped_members == 0

    assert list(frame.columns) == list(GuildMemberRoleCol.ALL)
    assert frame[GuildMemberRoleCol.IS_BOT].dtype == bool
    assert frame[GuildMemberRoleCol.DISCORD_ID].nunique() == 3_000
    expected = {
        (user_id, role)
        for user_id, roles in emulator.all_member_roles().items()
        for role in (roles or {None})
    }
    actual = {
        (user_id, role if isinstance(role, str) else None)
        for user_id, role in zip(
            frame[GuildMemberRoleCol.DISCORD_ID], frame[GuildMemberRoleCol.ROLE_ID], strict=True
        )
    }
    assert actual == expected
    assert len(frame) == len(expected)
    bots = set(frame.loc[frame[GuildMemberRoleCol.IS_BOT], GuildMemberRoleCol.DISCORD_ID])
    expected_bots = {str(400_000_000_000_000_000 + n * 13) for n in range(7, 2_997, 500)}
    assert bots == expected_bots | {emulator.bot_user_id}
    bob = frame[frame[GuildMemberRoleCol.DISCORD_ID] == BOB]
    assert len(bob) == 1
    assert bob[GuildMemberRoleCol.ROLE_ID].isna().all()


def test_snapshot_with_the_members_intent_off_says_to_enable_it(setup: Setup) -> None:
    emulator, client = setup()
    emulator.set_members_intent(False)
    with pytest.raises(MissingPermissionsError, match="Server Members Intent") as caught:
        client.guild_member_roles()
    assert (caught.value.status, caught.value.code) == (403, 50001)
    assert emulator.count_status(403) == 1  # not retried


def test_guild_roles_frame(setup: Setup) -> None:
    emulator, client = setup()
    roles = client.guild_roles()
    assert list(roles.columns) == [*GuildRoleCol.ALL, "position", "managed", "permissions"]
    assert roles[GuildRoleCol.ID].dtype == "str"
    assert roles["position"].dtype == "int64"
    by_id = roles.set_index(GuildRoleCol.ID)
    assert by_id.loc[GUILD, GuildRoleCol.NAME] == "@everyone"
    assert by_id.loc[GUILD, "position"] == 0
    assert by_id.loc[GUILD, "permissions"] == (1 << 10) | (1 << 11)  # View Channel, Send Messages
    assert bool(by_id.loc[emulator.bot_role_id, "managed"]) is True
    assert by_id.loc[ROLE_ADMIN, "position"] == 3


def test_members_without_a_user_are_skipped_and_counted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        members = [
            {"user": {"id": "10", "username": "a"}, "roles": ["7"]},
            {"roles": ["7"]},
            {"user": {"id": "11", "username": "b", "bot": True}, "roles": []},
        ]
        return discord_json(200, members)

    with mock_client(handler) as client:
        frame = client.guild_member_roles()
    assert client.skipped_members == 1
    assert list(frame[GuildMemberRoleCol.DISCORD_ID]) == ["10", "11"]
    assert list(frame[GuildMemberRoleCol.IS_BOT]) == [False, True]


def test_a_failure_mid_snapshot_raises_instead_of_returning_part_of_the_guild() -> None:
    full_page = [{"user": {"id": str(10 + i)}, "roles": []} for i in range(1000)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["after"] == "0":
            return discord_json(200, full_page)
        return discord_json(403, {"message": "Missing Permissions", "code": 50013})

    with mock_client(handler) as client, pytest.raises(MissingPermissionsError):
        client.guild_member_roles()


# ------------------------------------------------------------------------------------ roles


def test_add_and_remove_roles_with_an_audit_reason(setup: Setup) -> None:
    emulator, client = setup()
    reason = "recon run 2024-05-01 — grant Member ✓"
    client.add_role(BOB, ROLE_MEMBER, reason=reason)
    client.add_role(BOB, ROLE_MEMBER, reason=reason)  # harmless again
    assert emulator.member_roles(BOB) == {ROLE_MEMBER}
    client.remove_role(ALICE, ROLE_MEMBER, reason="recon run: revoke")
    client.remove_role(ALICE, ROLE_MEMBER, reason="recon run: revoke")
    assert emulator.member_roles(ALICE) == frozenset()
    assert [(m.method, m.user_id, m.status, m.reason) for m in emulator.mutations] == [
        ("PUT", BOB, 204, reason),
        ("PUT", BOB, 204, reason),
        ("DELETE", ALICE, 204, "recon run: revoke"),
        ("DELETE", ALICE, 204, "recon run: revoke"),
    ]


def test_member_role_ids_reads_one_account_now(setup: Setup) -> None:
    emulator, client = setup()
    assert client.member_role_ids(ALICE) == {ROLE_MEMBER}
    client.add_role(ALICE, ROLE_EVENTS, reason="r")
    assert client.member_role_ids(ALICE) == {ROLE_MEMBER, ROLE_EVENTS}
    assert client.member_role_ids(GONE) is None
    assert [r.method for r in emulator.requests].count("GET") == 3


def test_requests_carry_the_bot_token_a_discordbot_user_agent_and_an_encoded_reason() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204, headers={"Via": "1.1 google"})

    with mock_client(handler) as client:
        client.add_role(ALICE, ROLE_MEMBER, reason="Grant ✓ / ok")
    (request,) = seen
    assert request.method == "PUT"
    assert request.url.path == f"/api/v10/guilds/{GUILD}/members/{ALICE}/roles/{ROLE_MEMBER}"
    assert request.headers["authorization"] == f"Bot {TOKEN}"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("DiscordBot (https://")
    assert request.headers["x-audit-log-reason"] == "Grant %E2%9C%93 / ok"
    assert request.content == b""


def test_audit_reasons_are_cut_to_512_encoded_characters() -> None:
    assert len(audit_reason("é" * 400)) <= 512
    assert audit_reason("é" * 400).startswith("%C3%A9")
    assert audit_reason("a" * 600) == "a" * 512
    assert audit_reason("short") == "short"


@pytest.mark.parametrize(
    ("user", "role", "error", "status", "code"),
    [
        (GONE, ROLE_MEMBER, UnknownMemberError, 404, 10007),
        (ALICE, "1200000000000000077", UnknownRoleError, 404, 10011),
        (ALICE, ROLE_ADMIN, MissingPermissionsError, 403, 50013),
        (ALICE, ROLE_BOOSTER, MissingPermissionsError, 403, 50013),
    ],
    ids=["member-left", "unknown-role", "above-bot", "managed"],
)
def test_role_errors_are_classified_and_not_retried(
    setup: Setup, user: str, role: str, error: type[DiscordError], status: int, code: int
) -> None:
    emulator, client = setup()
    with pytest.raises(error) as caught:
        client.add_role(user, role, reason="r")
    assert (caught.value.status, caught.value.code) == (status, code)
    assert len(emulator.requests) == 1


def test_a_rejected_token_is_an_auth_error_that_never_shows_the_token(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-Qp7"
    emulator, client = setup(token=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DiscordAuthError) as caught:
        client.guild_roles()
    assert caught.value.kind == "auth"
    assert caught.value.status == 401
    assert len(emulator.requests) == 1
    for text in (str(caught.value), repr(caught.value), repr(client), caplog.text):
        assert wrong not in text


def test_the_token_never_shows_in_errors_logs_or_reprs(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    emulator, client = setup(client_options={"max_retries": 1})
    caplog.set_level(logging.DEBUG)
    emulator.fail_next(10, 503)
    with pytest.raises(DiscordUnavailableError) as unavailable:
        client.guild_roles()
    unreachable = DiscordClient(
        bot_token=TOKEN, guild_id=GUILD, api_base="http://127.0.0.1:9/api/v10", max_retries=0
    )
    with unreachable, pytest.raises(DiscordUnavailableError) as refused:
        unreachable.guild_roles()
    texts = [caplog.text, repr(client), repr(unreachable), str(client.stats())]
    for exc in (unavailable.value, refused.value):
        texts += [str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)]
    assert "503" in caplog.text
    assert all(TOKEN not in text for text in texts)


def test_other_client_errors_are_plain_discord_errors(setup: Setup) -> None:
    emulator, client = setup()
    with pytest.raises(DiscordError) as caught:
        client.send_message("1300000000000000099", "hello")
    assert (caught.value.kind, caught.value.status, caught.value.code) == ("not_found", 404, 10003)
    assert len(emulator.requests) == 1


# ------------------------------------------------------------------------------------ retries


def test_a_burst_of_server_errors_is_retried_with_backoff(setup: Setup, clock: FakeClock) -> None:
    emulator, client = setup()
    emulator.fail_next(1, 500)
    emulator.fail_next(1, 502)
    emulator.fail_next(1, 503)
    client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert emulator.member_roles(BOB) == {ROLE_MEMBER}
    assert [m.status for m in emulator.mutations] == [500, 502, 503, 204]
    assert clock.sleeps == [1.0, 3.0, 5.0]
    assert (client.retries, client.backoff_wait_s) == (3, 9.0)


def test_server_errors_that_persist_give_up_after_bounded_attempts(
    setup: Setup, clock: FakeClock
) -> None:
    emulator, client = setup(client_options={"max_retries": 3})
    emulator.fail_next(100, 503)
    with pytest.raises(DiscordUnavailableError) as caught:
        client.remove_role(ALICE, ROLE_MEMBER, reason="r")
    assert caught.value.status == 503
    assert caught.value.kind == "unavailable"
    assert len(emulator.requests) == 4
    assert emulator.member_roles(ALICE) == {ROLE_MEMBER}


def test_connection_errors_are_retried_but_a_lost_message_is_not_resent() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "PUT" and len(calls) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "POST":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(204, headers={"Via": "1.1 google"})

    with mock_client(handler) as client:
        client.add_role(ALICE, ROLE_MEMBER, reason="r")
        assert calls == ["PUT", "PUT", "PUT"]
        with pytest.raises(DiscordUnavailableError, match="ReadTimeout"):
            client.send_message(CHANNEL, "hello")
    assert calls == ["PUT", "PUT", "PUT", "POST"]


# ------------------------------------------------------------------------------------ limits


def test_a_route_429_is_waited_out_and_retried(setup: Setup, clock: FakeClock) -> None:
    # A second client shares the bucket, so this one meets a 429 it could not foresee.
    emulator, client = setup(route_limit=3, route_window_s=2.0)
    other = DiscordClient(
        bot_token=TOKEN, guild_id=GUILD, api_base=client.api_base, clock=clock, sleep=clock.sleep
    )
    with other:
        for _ in range(3):
            other.add_role(BOB, ROLE_EVENTS, reason="other")
    client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert [m.status for m in emulator.mutations] == [204, 204, 204, 429, 204]
    assert client.rate_limited_count == 1
    assert clock.sleeps and clock.sleeps[0] >= 2.0  # max(retry_after 2.0, Retry-After 2)
    assert client.rate_limit_wait_s >= 2.0
    limited, retried = emulator.mutations[3:]
    assert retried.time - limited.time >= 2.0


def test_retry_after_header_is_honoured_when_longer_than_the_body(
    setup: Setup, clock: FakeClock
) -> None:
    emulator, client = setup()
    emulator.fail_next(1, 429, retry_after_s=0.3)
    client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert clock.sleeps and clock.sleeps[0] >= 1.0  # Retry-After: 1 beats retry_after 0.3
    assert [m.status for m in emulator.mutations] == [429, 204]


def test_a_global_429_pauses_every_route(setup: Setup, clock: FakeClock) -> None:
    emulator, client = setup()
    emulator.fail_next(1, 429, global_=True, retry_after_s=2.5)
    client.guild_roles()
    assert client.rate_limited_count == 1
    assert clock.sleeps and clock.sleeps[0] >= 3.0
    first, second = emulator.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 3.0


def test_a_natural_global_429_is_honoured(setup: Setup, clock: FakeClock) -> None:
    emulator, client = setup(global_per_second=3)
    # Another process has used the bot's global budget for this second.
    other = DiscordClient(
        bot_token=TOKEN, guild_id=GUILD, api_base=client.api_base, clock=clock, sleep=clock.sleep
    )
    with other:
        for _ in range(3):
            other.guild_roles()
    client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert [r.status for r in emulator.requests] == [200, 200, 200, 429, 204]
    assert emulator.member_roles(BOB) == {ROLE_MEMBER}


def test_a_cloudflare_429_stops_at_once(setup: Setup, clock: FakeClock) -> None:
    emulator, client = setup()
    emulator.fail_next(1, 429, cloudflare=True)
    with pytest.raises(DiscordBlockedError) as caught:
        client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert caught.value.kind == "blocked"
    assert len(emulator.requests) == 1
    assert clock.sleeps == []


def test_a_429_asking_for_too_long_a_wait_fails_without_sleeping(
    setup: Setup, clock: FakeClock
) -> None:
    emulator, client = setup(client_options={"max_rate_limit_wait_s": 30.0})
    emulator.fail_next(1, 429, retry_after_s=120.0)
    with pytest.raises(DiscordUnavailableError, match="120"):
        client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert clock.sleeps == []


def test_429s_that_persist_give_up_after_bounded_attempts(setup: Setup, clock: FakeClock) -> None:
    emulator, client = setup(client_options={"max_retries": 2})
    emulator.fail_next(10, 429, retry_after_s=0.5)
    with pytest.raises(DiscordUnavailableError, match="rate limited"):
        client.add_role(BOB, ROLE_MEMBER, reason="r")
    assert len(emulator.requests) == 3


def _max_calls_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))


def _forty_changes(client: DiscordClient) -> None:
    users = [str(500_000_000_000_000_000 + n) for n in range(20)]
    for user_id in users:
        client.add_role(user_id, ROLE_MEMBER, reason="grant")
    for user_id in users[::2]:
        client.remove_role(user_id, ROLE_MEMBER, reason="revoke")
    for user_id in users[::2]:
        client.add_role(user_id, ROLE_EVENTS, reason="grant")


def test_a_small_bucket_is_used_fully_without_being_throttled(
    setup: Setup, clock: FakeClock
) -> None:
    emulator, client = setup(route_limit=5, route_window_s=0.5)
    for n in range(20):
        emulator.add_member(str(500_000_000_000_000_000 + n))
    _forty_changes(client)

    assert len(emulator.mutations) == 40 + emulator.count_status(429)
    assert sum(m.status == 204 for m in emulator.mutations) == 40
    assert emulator.count_status(429) == 0
    accepted = [m.time for m in emulator.mutations if m.status == 204]
    assert _max_calls_in_any_window(accepted, 0.5) == 5
    # Eight windows of five: seven waits of about one window each, and no more.
    assert accepted[-1] - accepted[0] == pytest.approx(7 * 0.5, abs=0.1)
    assert client.rate_limit_wait_s == pytest.approx(7 * 0.5, abs=0.1)
    assert all(
        emulator.member_roles(str(500_000_000_000_000_000 + n))
        == ({ROLE_EVENTS} if n % 2 == 0 else {ROLE_MEMBER})
        for n in range(20)
    )


def test_a_small_bucket_on_the_real_clock(setup: Setup) -> None:
    emulator, client = setup(route_limit=5, route_window_s=0.2, real_time=True)
    for n in range(20):
        emulator.add_member(str(500_000_000_000_000_000 + n))
    _forty_changes(client)
    assert sum(m.status == 204 for m in emulator.mutations) == 40
    assert emulator.count_status(429) <= 2
    accepted = [m.time for m in emulator.mutations if m.status == 204]
    # Discord's windows are fixed, each opened by the first call after the last one closed.
    windows: list[list[float]] = []
    for t in accepted:
        if not windows or t >= windows[-1][0] + 0.2:
            windows.append([])
        windows[-1].append(t)
    assert max(len(w) for w in windows) <= 5
    assert len(windows) >= 8
    assert accepted[-1] - accepted[0] >= 7 * 0.2
    assert client.rate_limit_wait_s > 0


def test_the_client_stays_under_the_global_limit_on_its_own(setup: Setup, clock: FakeClock) -> None:
    emulator, client = setup(global_per_second=50, route_limit=1000)
    for _ in range(120):
        client.guild_roles()
    assert emulator.count_status(429) == 0
    assert _max_calls_in_any_window([r.time for r in emulator.requests], 1.0) <= 50
    assert client.stats()["requests_made"] == 120


# ------------------------------------------------------------------------------------ messages


def test_send_message_posts_without_pinging_anyone(setup: Setup) -> None:
    emulator, client = setup()
    client.send_message(CHANNEL, "3 issues found @everyone")
    (message,) = emulator.messages(CHANNEL)
    assert message["content"] == "3 issues found @everyone"
    assert message["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize("content", ["", "x" * 2001])
def test_send_message_refuses_content_discord_would_reject(setup: Setup, content: str) -> None:
    emulator, client = setup()
    with pytest.raises(ValueError):
        client.send_message(CHANNEL, content)
    assert emulator.requests == []


def test_ids_that_are_not_snowflakes_are_refused_before_any_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with mock_client(handler) as client:
        for call in (
            lambda: client.add_role("../../x", ROLE_MEMBER, reason="r"),
            lambda: client.remove_role(ALICE, "everyone", reason="r"),
            lambda: client.send_message("#general", "hi"),
        ):
            with pytest.raises(ValueError):
                call()


def test_a_non_json_success_body_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>", headers={"Via": "1.1 google"})

    with mock_client(handler) as client, pytest.raises(DiscordError) as caught:
        client.guild_roles()
    assert caught.value.kind == "bad_response"


def test_members_snapshot_frame_is_empty_but_typed_for_an_empty_page() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return discord_json(200, [])

    with mock_client(handler) as client:
        frame = client.guild_member_roles()
    assert frame.empty
    assert list(frame.columns) == list(GuildMemberRoleCol.ALL)
    assert frame[GuildMemberRoleCol.IS_BOT].dtype == bool
    assert isinstance(frame, pd.DataFrame)
    assert json.dumps(client.stats())
