"""The Discord emulator speaks the protocol the real API does (the parts of Discord's REST API v10
the pipeline uses: member and role listing, role changes, messages, errors, rate limits), over HTTP.

Every test talks plain httpx to the emulator on loopback. One server serves the whole module and
each test swaps in a fresh emulator; the rate limits run on a fake clock the test advances, so
nothing waits and nothing depends on timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from recon_pipeline.domain.columns import GuildMemberRoleCol, GuildRoleCol
from recon_pipeline.sandbox.community import synthetic_community
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline_tests.loopback import FakeClock, Loopback

GUILD = "1100000000000000000"
TOKEN = "sandbox-bot-token"
HEADERS = {"Authorization": f"Bot {TOKEN}", "User-Agent": "DiscordBot (https://example.invalid, 1)"}
CHANNEL = "1300000000000000001"
ROLE_LOW = "1200000000000000001"
ROLE_HIGH = "1200000000000000002"
ROLE_MANAGED = "1200000000000000003"
ALICE = "300000000000000001"
BOB = "300000000000000002"
ROLES_PATH = f"/guilds/{GUILD}/members/{{user}}/roles/{{role}}"


@pytest.fixture
def make(loopback: Loopback, clock: FakeClock) -> Iterator[Any]:
    """Install an emulator built with the given options; yields (emulator, http client)."""
    clients: list[httpx.Client] = []

    def factory(**options: Any) -> tuple[DiscordEmulator, httpx.Client]:
        emulator = DiscordEmulator(clock=clock, **options)
        emulator.add_role(ROLE_LOW, "Member", position=1)
        emulator.add_role(ROLE_MANAGED, "Booster", position=2, managed=True)
        emulator.add_role(ROLE_HIGH, "Admin", position=3)
        emulator.set_bot_top_position(3)
        emulator.add_member(ALICE, roles=[ROLE_LOW])
        emulator.add_member(BOB)
        emulator.add_channel(CHANNEL)
        url = loopback.install(emulator.app)
        http = httpx.Client(base_url=f"{url}/api/v10", headers=HEADERS)
        clients.append(http)
        return emulator, http

    yield factory
    for http in clients:
        http.close()


@pytest.fixture
def emulator_http(make: Any) -> tuple[DiscordEmulator, httpx.Client]:
    return make()


def assert_discord_json(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "application/json"
    assert response.headers["via"] == "1.1 google"


# ------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    "authorization", [None, "Bot wrong-token", f"Bearer {TOKEN}", TOKEN], ids=str
)
def test_requests_without_the_bot_token_get_401(
    emulator_http: tuple[DiscordEmulator, httpx.Client], authorization: str | None
) -> None:
    emulator, http = emulator_http
    headers = {"User-Agent": HEADERS["User-Agent"]}
    if authorization:
        headers["Authorization"] = authorization
    response = httpx.get(f"{http.base_url}guilds/{GUILD}/roles", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": "401: Unauthorized", "code": 0}
    assert_discord_json(response)
    assert emulator.count_status(401) == 1


def test_a_missing_discordbot_user_agent_gets_403_40333(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    _, http = emulator_http
    response = http.get(f"/guilds/{GUILD}/roles", headers={"User-Agent": "python-httpx"})
    assert response.status_code == 403
    assert response.json()["code"] == 40333


def test_unknown_paths_and_methods_get_json_404_and_405(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    _, http = emulator_http
    missing = http.get("/users/@me/guilds")
    assert (missing.status_code, missing.json()) == (404, {"message": "404: Not Found", "code": 0})
    wrong = http.post(f"/guilds/{GUILD}/roles")
    assert wrong.status_code == 405
    assert_discord_json(wrong)


# ------------------------------------------------------------------------------------ members


def test_members_page_in_ascending_integer_id_order_with_limit_and_after(make: Any) -> None:
    emulator, http = make()
    # Lexicographic order would differ from numeric order for these ids.
    for user_id in ("9", "100", "20", "1000000000000000000"):
        emulator.add_member(user_id)
    default = http.get(f"/guilds/{GUILD}/members")
    assert [m["user"]["id"] for m in default.json()] == ["9"]
    everyone = http.get(f"/guilds/{GUILD}/members", params={"limit": 1000}).json()
    ids = [m["user"]["id"] for m in everyone]
    assert ids == sorted(ids, key=int)
    assert ids[:3] == ["9", "20", "100"]
    assert emulator.bot_user_id in ids
    page = http.get(f"/guilds/{GUILD}/members", params={"limit": 2, "after": "20"}).json()
    assert [m["user"]["id"] for m in page] == ["100", ALICE]


def test_member_objects_are_full_and_flag_bots(make: Any) -> None:
    emulator, http = make()
    emulator.add_member("5", roles=[ROLE_LOW, GUILD], bot=True, username="helper")
    members = http.get(f"/guilds/{GUILD}/members", params={"limit": 1000}).json()
    by_id = {m["user"]["id"]: m for m in members}
    assert by_id["5"]["user"] == {
        "id": "5",
        "username": "helper",
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": True,
    }
    assert by_id["5"]["roles"] == [ROLE_LOW]  # @everyone is never listed
    assert "bot" not in by_id[ALICE]["user"]
    assert by_id[BOB]["roles"] == []
    for key in ("nick", "joined_at", "deaf", "mute", "flags", "pending"):
        assert key in by_id[ALICE]


@pytest.mark.parametrize(
    ("limit", "code"),
    [("0", "NUMBER_TYPE_MIN"), ("1001", "NUMBER_TYPE_MAX"), ("many", "NUMBER_TYPE_COERCE")],
)
def test_member_limit_outside_1_to_1000_is_an_invalid_form_body(
    emulator_http: tuple[DiscordEmulator, httpx.Client], limit: str, code: str
) -> None:
    _, http = emulator_http
    response = http.get(f"/guilds/{GUILD}/members", params={"limit": limit})
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["message"]) == (50035, "Invalid Form Body")
    assert body["errors"]["limit"]["_errors"][0]["code"] == code


def test_members_intent_off_gives_403_50001_and_unknown_guild_404_10004(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    unknown = http.get("/guilds/42/members")
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"message": "Unknown Guild", "code": 10004},
    )
    emulator.set_members_intent(False)
    response = http.get(f"/guilds/{GUILD}/members", params={"limit": 1000})
    assert response.status_code == 403
    assert response.json() == {"message": "Missing Access", "code": 50001}


# ------------------------------------------------------------------------------------ roles


def test_roles_include_everyone_and_a_managed_bot_role(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    roles = {r["id"]: r for r in http.get(f"/guilds/{GUILD}/roles").json()}
    assert roles[GUILD]["name"] == "@everyone"
    assert roles[GUILD]["position"] == 0
    assert roles[emulator.bot_role_id]["managed"] is True
    assert roles[emulator.bot_role_id]["tags"] == {"bot_id": emulator.bot_user_id}
    assert roles[ROLE_HIGH]["position"] == 3
    assert roles[ROLE_MANAGED]["managed"] is True
    assert all(isinstance(r["permissions"], str) for r in roles.values())


@pytest.mark.parametrize(
    ("guild", "user", "role", "status", "body"),
    [
        ("42", "77", "78", 404, {"message": "Unknown Guild", "code": 10004}),
        (GUILD, "77", "78", 404, {"message": "Unknown Role", "code": 10011}),
        (GUILD, "77", ROLE_LOW, 404, {"message": "Unknown Member", "code": 10007}),
        (GUILD, ALICE, ROLE_HIGH, 403, {"message": "Missing Permissions", "code": 50013}),
        (GUILD, ALICE, ROLE_MANAGED, 403, {"message": "Missing Permissions", "code": 50013}),
    ],
    ids=["unknown-guild", "unknown-role", "unknown-member", "at-bot-top", "managed"],
)
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_role_changes_are_checked_in_order(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
    method: str,
    guild: str,
    user: str,
    role: str,
    status: int,
    body: dict[str, Any],
) -> None:
    emulator, http = emulator_http
    response = http.request(method, f"/guilds/{guild}/members/{user}/roles/{role}")
    assert (response.status_code, response.json()) == (status, body)
    assert_discord_json(response)
    assert emulator.member_roles(ALICE) == {ROLE_LOW}


def test_without_manage_roles_every_role_change_is_403(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    emulator.set_manage_roles(False)
    response = http.put(ROLES_PATH.format(user=BOB, role=ROLE_LOW))
    assert response.json()["code"] == 50013


def test_role_permissions_say_what_the_bot_and_everyone_may_do(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http

    def permissions() -> dict[str, int]:
        roles = http.get(f"/guilds/{GUILD}/roles").json()
        return {r["id"]: int(r["permissions"]) for r in roles}

    assert permissions()[emulator.bot_role_id] == 1 << 28  # Manage Roles
    assert permissions()[GUILD] == (1 << 10) | (1 << 11)  # View Channel, Send Messages
    emulator.set_manage_roles(False)
    assert permissions()[emulator.bot_role_id] == 0


def test_the_bot_can_read_itself_and_a_channel_and_an_unknown_channel_is_404_10003(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    emulator.add_channel("1100000000000000500")

    me = http.get("/users/@me")
    channel = http.get("/channels/1100000000000000500")
    unknown = http.get("/channels/1100000000000000501")

    assert (me.status_code, me.json()["id"], me.json()["bot"]) == (200, emulator.bot_user_id, True)
    assert channel.status_code == 200
    assert (channel.json()["guild_id"], channel.json()["permission_overwrites"]) == (GUILD, [])
    assert (unknown.status_code, unknown.json()) == (
        404, {"message": "Unknown Channel", "code": 10003})  # fmt: skip
    assert_discord_json(unknown)


def test_role_changes_are_idempotent_204s_and_record_the_decoded_reason(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    path = ROLES_PATH.format(user=BOB, role=ROLE_LOW)
    reason = "Run 7 — grant ✓"
    encoded = {"X-Audit-Log-Reason": "Run 7 %E2%80%94 grant %E2%9C%93"}
    for _ in range(2):
        added = http.put(path, headers=encoded)
        assert (added.status_code, added.content) == (204, b"")
        assert "content-type" not in added.headers
        assert added.headers["via"] == "1.1 google"
        assert emulator.member_roles(BOB) == {ROLE_LOW}
    for _ in range(2):
        assert http.delete(path).status_code == 204
        assert emulator.member_roles(BOB) == frozenset()
    assert [(m.method, m.user_id, m.role_id, m.status) for m in emulator.mutations] == [
        ("PUT", BOB, ROLE_LOW, 204),
        ("PUT", BOB, ROLE_LOW, 204),
        ("DELETE", BOB, ROLE_LOW, 204),
        ("DELETE", BOB, ROLE_LOW, 204),
    ]
    assert [m.reason for m in emulator.mutations] == [reason, reason, None, None]


def test_a_member_who_left_gets_unknown_member(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    emulator.remove_member(ALICE)
    response = http.delete(ROLES_PATH.format(user=ALICE, role=ROLE_LOW))
    assert response.json()["code"] == 10007


# ------------------------------------------------------------------------------------ messages


def test_messages_are_stored_and_returned(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    body = {"content": "x" * 2000, "allowed_mentions": {"parse": []}}
    response = http.post(f"/channels/{CHANNEL}/messages", json=body)
    assert response.status_code == 200
    assert_discord_json(response)
    message = response.json()
    assert message["channel_id"] == CHANNEL
    assert message["content"] == "x" * 2000
    assert message["author"]["bot"] is True
    assert isinstance(message["id"], str)
    (stored,) = emulator.messages(CHANNEL)
    assert stored["id"] == message["id"]
    assert stored["allowed_mentions"] == {"parse": []}


def test_message_content_over_2000_characters_is_rejected_with_discords_body(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    response = http.post(f"/channels/{CHANNEL}/messages", json={"content": "x" * 2001})
    assert response.status_code == 400
    assert response.json() == {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {
            "content": {
                "_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                ]
            }
        },
    }
    assert emulator.messages(CHANNEL) == []


@pytest.mark.parametrize(
    ("channel", "kwargs", "status", "code"),
    [
        (CHANNEL, {"json": {"content": ""}}, 400, 50006),
        (CHANNEL, {"json": {}}, 400, 50006),
        (CHANNEL, {"data": {"content": "hi"}}, 400, 50035),
        (CHANNEL, {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, 50109),
        (CHANNEL, {"json": {"embeds": [{"title": "t"}] * 11}}, 400, 50035),
        (CHANNEL, {"json": {"embeds": [{"description": "d" * 4000}] * 2}}, 400, 50035),
        ("1300000000000000099", {"json": {"content": "hi"}}, 404, 10003),
    ],
    ids=["empty", "nothing", "form-encoded", "bad-json", "11-embeds", "embed-text", "unknown"],
)
def test_bad_messages_are_rejected(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
    channel: str,
    kwargs: dict[str, Any],
    status: int,
    code: int,
) -> None:
    emulator, http = emulator_http
    response = http.post(f"/channels/{channel}/messages", **kwargs)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert emulator.messages(CHANNEL) == []


# ------------------------------------------------------------------------------------ limits


def test_limited_responses_carry_bucket_headers_and_role_routes_share_a_bucket(
    make: Any, clock: FakeClock
) -> None:
    _, http = make(route_limit=10, route_window_s=2.0)
    put = http.put(ROLES_PATH.format(user=BOB, role=ROLE_LOW))
    delete = http.delete(ROLES_PATH.format(user=BOB, role=ROLE_LOW))
    members = http.get(f"/guilds/{GUILD}/members")
    failed = http.put(ROLES_PATH.format(user="77", role=ROLE_LOW))  # errors count too
    for response in (put, delete, members, failed):
        headers = response.headers
        assert headers["x-ratelimit-limit"] == "10"
        assert float(headers["x-ratelimit-reset-after"]) == pytest.approx(2.0)
        assert float(headers["x-ratelimit-reset"]) == pytest.approx(clock.now + 2.0)
        assert "." in headers["x-ratelimit-reset"]
    assert put.headers["x-ratelimit-bucket"] == delete.headers["x-ratelimit-bucket"]
    assert members.headers["x-ratelimit-bucket"] != put.headers["x-ratelimit-bucket"]
    remaining = [r.headers["x-ratelimit-remaining"] for r in (put, delete, members, failed)]
    assert remaining == ["9", "8", "9", "7"]
    other_guild = http.put("/guilds/42/members/1/roles/2")
    assert other_guild.headers["x-ratelimit-remaining"] == "9"  # limits are per guild


def test_an_exhausted_bucket_answers_429_until_it_resets(make: Any, clock: FakeClock) -> None:
    emulator, http = make(route_limit=3, route_window_s=1.5)
    path = ROLES_PATH.format(user=BOB, role=ROLE_LOW)
    assert [http.put(path).status_code for _ in range(3)] == [204, 204, 204]
    clock.now += 0.25
    limited = http.put(path)
    assert limited.status_code == 429
    assert_discord_json(limited)
    assert limited.json() == {
        "message": "You are being rate limited.",
        "retry_after": 1.25,
        "global": False,
    }
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["x-ratelimit-scope"] == "user"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-global" not in limited.headers
    assert http.get(f"/guilds/{GUILD}/roles").status_code == 200  # other buckets unaffected
    clock.now += 1.25
    assert http.put(path).status_code == 204
    assert emulator.count_status(429) == 1


def test_the_global_limit_is_a_sliding_second_across_routes(make: Any, clock: FakeClock) -> None:
    _, http = make(global_per_second=4)
    path = ROLES_PATH.format(user=BOB, role=ROLE_LOW)
    assert http.put(path).status_code == 204
    clock.now += 0.5
    for _ in range(3):
        assert http.get(f"/guilds/{GUILD}/roles").status_code == 200
    limited = http.put(path)
    assert limited.status_code == 429
    assert limited.json() == {
        "message": "You are being rate limited.",
        "retry_after": 0.5,
        "global": True,
    }
    assert limited.headers["x-ratelimit-global"] == "true"
    assert limited.headers["x-ratelimit-scope"] == "global"
    assert limited.headers["retry-after"] == "1"
    clock.now += 0.5  # the first request leaves the window
    assert http.put(path).status_code == 204
    assert http.put(path).status_code == 429


def test_too_many_invalid_requests_bring_a_cloudflare_ban(make: Any, clock: FakeClock) -> None:
    emulator, http = make(invalid_request_ban_threshold=3)
    for _ in range(4):
        response = http.get(f"/guilds/{GUILD}/roles", headers={"Authorization": "Bot x"})
        assert response.status_code == 401
    banned = http.get(f"/guilds/{GUILD}/roles")
    assert banned.status_code == 429
    assert "via" not in banned.headers
    assert not banned.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        banned.json()
    emulator.reset_faults()
    assert http.get(f"/guilds/{GUILD}/roles").status_code == 200


def test_invalid_requests_are_forgotten_after_ten_minutes(make: Any, clock: FakeClock) -> None:
    _, http = make(invalid_request_ban_threshold=2)
    bad = {"Authorization": "Bot x"}
    for _ in range(2):
        http.get(f"/guilds/{GUILD}/roles", headers=bad)
    clock.now += 601
    http.get(f"/guilds/{GUILD}/roles", headers=bad)
    assert http.get(f"/guilds/{GUILD}/roles").status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503])
def test_injected_server_errors_answer_the_next_n_requests(
    emulator_http: tuple[DiscordEmulator, httpx.Client], status: int
) -> None:
    emulator, http = emulator_http
    emulator.fail_next(2, status)
    responses = [http.get(f"/guilds/{GUILD}/roles") for _ in range(3)]
    assert [r.status_code for r in responses] == [status, status, 200]
    assert_discord_json(responses[0])


def test_injected_429s_look_like_discords(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    emulator.fail_next(1, 429, retry_after_s=0.3)
    emulator.fail_next(1, 429, global_=True, retry_after_s=2.5)
    emulator.fail_next(1, 429, cloudflare=True)
    route, global_, cloudflare = (http.get(f"/guilds/{GUILD}/roles") for _ in range(3))
    assert route.json()["retry_after"] == 0.3
    assert route.headers["retry-after"] == "1"
    assert global_.json()["global"] is True
    assert global_.headers["retry-after"] == "3"
    assert global_.headers["x-ratelimit-global"] == "true"
    assert cloudflare.status_code == 429
    assert "via" not in cloudflare.headers
    assert http.get(f"/guilds/{GUILD}/roles").status_code == 200
    emulator.fail_next(5, 500)
    emulator.reset_faults()
    assert http.get(f"/guilds/{GUILD}/roles").status_code == 200


def test_requests_are_recorded(emulator_http: tuple[DiscordEmulator, httpx.Client]) -> None:
    emulator, http = emulator_http
    http.get(f"/guilds/{GUILD}/members", params={"limit": 5})
    (record,) = emulator.requests
    assert (record.method, record.path, record.query, record.status) == (
        "GET",
        f"/api/v10/guilds/{GUILD}/members",
        "limit=5",
        200,
    )
    assert record.time == 1_700_000_000.0


# ------------------------------------------------------------------------------------ loading


def test_load_frames_reproduces_a_community(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    community = synthetic_community(2_000, seed=3)
    emulator.load_frames(community.guild_member_roles, community.guild_roles)

    frame = community.guild_member_roles
    expected: dict[str, set[str]] = {}
    for user_id, role_id in zip(
        frame[GuildMemberRoleCol.DISCORD_ID], frame[GuildMemberRoleCol.ROLE_ID], strict=True
    ):
        held = expected.setdefault(user_id, set())
        if isinstance(role_id, str):
            held.add(role_id)
    actual = emulator.all_member_roles()
    assert actual.pop(emulator.bot_user_id) == {emulator.bot_role_id}
    assert actual == expected
    assert ALICE not in actual  # loading replaces the guild

    bots = set(frame.loc[frame[GuildMemberRoleCol.IS_BOT], GuildMemberRoleCol.DISCORD_ID])
    members = http.get(f"/guilds/{GUILD}/members", params={"limit": 1000}).json()
    members += http.get(
        f"/guilds/{GUILD}/members", params={"limit": 1000, "after": members[-1]["user"]["id"]}
    ).json()
    flagged = {m["user"]["id"] for m in members if m["user"].get("bot")}
    assert flagged == bots | {emulator.bot_user_id}

    roles = http.get(f"/guilds/{GUILD}/roles").json()
    positions = {r["name"]: r["position"] for r in roles}
    names = list(community.guild_roles[GuildRoleCol.NAME])
    assert [positions[name] for name in names] == list(range(1, len(names) + 1))
    assert positions["Recon Bot"] == len(names) + 1


def test_load_frames_refuses_roles_missing_from_the_role_frame(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, _ = emulator_http
    member_roles = pd.DataFrame(
        {
            GuildMemberRoleCol.DISCORD_ID: ["5"],
            GuildMemberRoleCol.IS_BOT: [False],
            GuildMemberRoleCol.ROLE_ID: ["999"],
        }
    )
    roles = pd.DataFrame({GuildRoleCol.ID: ["998"], GuildRoleCol.NAME: ["x"]})
    with pytest.raises(ValueError, match="999"):
        emulator.load_frames(member_roles, roles)


def test_faults_limited_to_methods_wait_for_a_role_change(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    emulator.fail_next(1, 503, methods={"PUT", "DELETE"})
    assert http.get(f"/guilds/{GUILD}/roles").status_code == 200
    assert http.get(f"/guilds/{GUILD}/members").status_code == 200
    refused = http.put(ROLES_PATH.format(user=BOB, role=ROLE_LOW))
    assert refused.status_code == 503
    assert ROLE_LOW not in emulator.member_roles(BOB)
    assert http.put(ROLES_PATH.format(user=BOB, role=ROLE_LOW)).status_code == 204


def test_one_member_can_be_read(emulator_http: tuple[DiscordEmulator, httpx.Client]) -> None:
    emulator, http = emulator_http
    alice = http.get(f"/guilds/{GUILD}/members/{ALICE}")
    assert alice.status_code == 200
    assert alice.json()["user"]["id"] == ALICE
    assert alice.json()["roles"] == [ROLE_LOW]
    emulator.remove_member(ALICE)
    gone = http.get(f"/guilds/{GUILD}/members/{ALICE}")
    assert (gone.status_code, gone.json()["code"]) == (404, 10007)


def test_a_member_can_be_listed_without_its_user_object(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    emulator.list_without_user(BOB)
    listed = http.get(f"/guilds/{GUILD}/members", params={"limit": 10}).json()
    assert sum("user" not in m for m in listed) == 1
    assert {m["user"]["id"] for m in listed if "user" in m} >= {ALICE}


def test_after_request_sees_each_answer_in_order(
    emulator_http: tuple[DiscordEmulator, httpx.Client],
) -> None:
    emulator, http = emulator_http
    seen: list[tuple[str, int]] = []
    emulator.after_request = lambda record: seen.append((record.method, record.status))
    http.get(f"/guilds/{GUILD}/roles")
    http.delete(ROLES_PATH.format(user=ALICE, role=ROLE_LOW))
    assert seen == [("GET", 200), ("DELETE", 204)]
