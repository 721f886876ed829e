"""`recon-pipeline check` against the emulators, SMTP on loopback and a real database: all ok on
the sandbox, with read calls only; each fault makes exactly its line a problem, with its fix,
and a non-zero exit; a service that is not configured is no problem; no secret is ever printed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recon_pipeline.cli import main
from recon_pipeline.clients.frame_store import open_engine
from recon_pipeline.sandbox.demo import (
    SANDBOX_ADMIN_CHANNEL_ID,
    SANDBOX_BOT_TOKEN,
    SANDBOX_STRIPE_KEY,
    Sandbox,
    demo_community,
    running_sandbox,
    seed_membership_db,
)
from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.smtp import smtp_server

SMTP_PASSWORD = "smtp-s3cret-pw"
RESTRICTED_KEY = "rk_test_51Restricted0000000000abcd"
UNKNOWN_KEY = "sk_test_51Unknown00000000000000wxyz"
LIVE_KEY = "sk_live_51Live000000000000000000efgh"
WRONG_BOT_TOKEN = "wrong-bot-token-0000"
SECRETS = (SANDBOX_BOT_TOKEN, SANDBOX_STRIPE_KEY, RESTRICTED_KEY, UNKNOWN_KEY, LIVE_KEY,
           WRONG_BOT_TOKEN, SMTP_PASSWORD)  # fmt: skip


@pytest.fixture
def sandbox(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    engine = open_engine(database_url)
    try:
        seed_membership_db(engine, demo_community())
    finally:
        engine.dispose()
    with running_sandbox(demo_community()) as served:
        for name, value in served.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DATABASE_URL", database_url)
        yield served


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, dict]:
    code = main(["check", *args])
    text = capsys.readouterr().out
    assert main(["check", "--json"]) == code
    body = json.loads(capsys.readouterr().out)
    for secret in SECRETS:
        assert secret not in text and secret not in json.dumps(body)
    return code, text, body


def _states(body: dict) -> dict[str, str]:
    return {c["check"]: c["state"] for c in body["checks"]}


EVERYTHING = {
    "database": "ok",
    "Stripe": "ok",
    "bot token": "ok",
    "bot in server": "ok",
    "managed roles": "ok",
    "bot permission": "ok",
    "bot role position": "ok",
    "member list": "ok",
    "admin channel": "ok",
    "SMTP": "not configured",
}
# The Discord lines after "bot token": a refused token stops them all, and a bot outside the
# server stops those after "bot in server" (recon_pipeline/preflight.py).
AFTER_BOT_TOKEN = ("bot in server", "managed roles", "bot permission", "bot role position",
                   "member list", "admin channel")  # fmt: skip
AFTER_BOT_IN_SERVER = AFTER_BOT_TOKEN[1:]


def test_the_sandbox_passes_every_check_with_read_calls_only(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, body = _check(capsys)

    assert code == 0 and body["ok"] is True
    assert _states(body) == EVERYTHING
    assert "the key is valid (test mode)" in text
    assert text.rstrip().endswith("All set.")
    discord, stripe = sandbox.discord, sandbox.stripe
    assert discord.requests and {r.method for r in discord.requests} == {"GET"}
    assert discord.mutations == []
    assert discord.messages(SANDBOX_ADMIN_CHANNEL_ID) == []  # the channel is checked, not posted to
    assert stripe.requests and {r.method for r in stripe.requests} == {"GET"}


@dataclass(frozen=True)
class Setting:
    """What a fault may change: the emulators, the environment, a scratch directory."""

    sandbox: Sandbox
    env: pytest.MonkeyPatch
    tmp_path: Path


@dataclass(frozen=True)
class Fault:
    """A fault, the one line it makes a problem, the words of that line's detail (and those it
    must not say), its fix (which starts with `fix[0]` and holds every piece), and the lines the
    fault keeps out of the report."""

    make: Callable[[Setting], None]
    line: str
    words: tuple[str, ...]
    fix: tuple[str, ...]
    unsaid: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()


def _bot_below_lord(s: Setting) -> None:
    s.sandbox.discord.set_bot_top_position(s.sandbox.discord.position_of("Lord"))


def _lord_twice(s: Setting) -> None:
    s.sandbox.discord.add_role("1100000000000000888", "Lord", position=1)


def _use_tables_free_database(s: Setting) -> None:
    s.env.setenv("DATABASE_URL", f"sqlite:///{s.tmp_path / 'empty.sqlite3'}")


def _restricted_key(s: Setting) -> None:
    s.sandbox.stripe.restricted_keys = frozenset({RESTRICTED_KEY})
    s.env.setenv("STRIPE_SECRET_KEY", RESTRICTED_KEY)


FAULTS = [
    pytest.param(
        Fault(lambda s: s.sandbox.discord.set_manage_roles(False), "bot permission",
              ("neither Manage Roles nor Administrator",),
              ("Give the bot's role the Manage Roles permission",)),
        id="manage-roles-withdrawn",
    ),
    pytest.param(
        Fault(_bot_below_lord, "bot role position", ("is not above", "'Lord'"),
              ("Move the bot's role above", "'Lord'"), unsaid=("'Squire'",)),
        id="bot-below-lord",
    ),
    pytest.param(
        Fault(lambda s: s.sandbox.discord.set_members_intent(False), "member list",
              ("Missing Access (code 50001)",), ("Turn on the Server Members Intent",)),
        id="members-intent-off",
    ),
    pytest.param(
        Fault(lambda s: s.env.setenv("DISCORD_ADMIN_CHANNEL_ID", "1100000000000000777"),
              "admin channel", ("Unknown Channel",), ("Set DISCORD_ADMIN_CHANNEL_ID",)),
        id="unknown-channel",
    ),
    pytest.param(
        Fault(lambda s: s.env.setenv("DISCORD_BOT_TOKEN", WRONG_BOT_TOKEN), "bot token",
              ("GET /users/@me", "401"), ("Set DISCORD_BOT_TOKEN",), stopped=AFTER_BOT_TOKEN),
        id="bot-token-refused",
    ),
    pytest.param(
        Fault(lambda s: s.env.setenv("DISCORD_GUILD_ID", "1100000000000000777"), "bot in server",
              ("Unknown Guild",), ("Invite the bot to the server", "DISCORD_GUILD_ID"),
              stopped=AFTER_BOT_IN_SERVER),
        id="wrong-guild",
    ),
    pytest.param(
        Fault(lambda s: s.sandbox.discord.remove_member(s.sandbox.discord.bot_user_id),
              "bot in server", ("the bot is not a member of server",),
              ("Invite the bot to the server",), stopped=AFTER_BOT_IN_SERVER),
        id="bot-left-the-server",
    ),
    pytest.param(
        Fault(lambda s: s.env.setenv("DISCORD_ROLE_LORD", "Patron"), "managed roles",
              ("managed role 'Patron' does not exist",), ("Create each missing role",
              "Server Settings → Roles")),
        id="renamed-role",
    ),
    pytest.param(
        Fault(_lord_twice, "managed roles", ("managed role 'Lord' matches 2 guild roles",),
              ("Create each missing role, and rename extra ones",)),
        id="role-name-held-twice",
    ),
    pytest.param(
        Fault(_restricted_key, "Stripe", ("test mode", "403"),
              ("Give the restricted key Read access to Subscriptions",)),
        id="restricted-stripe-key",
    ),
    pytest.param(
        Fault(lambda s: s.env.setenv("STRIPE_SECRET_KEY", UNKNOWN_KEY), "Stripe",
              ("test mode", "401", "Invalid API Key"), ("Set STRIPE_SECRET_KEY",)),
        id="stripe-key-refused",
    ),
    pytest.param(
        Fault(lambda s: s.env.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{free_port()}"),
              "Stripe", ("no answer from Stripe",), ("Check STRIPE_API_BASE",)),
        id="stripe-unreachable",
    ),
    pytest.param(
        Fault(_use_tables_free_database, "database", ('"Member"',),
              ("Point DATABASE_URL at", "recon-pipeline db init")),
        id="database-without-the-apps-tables",
    ),
    pytest.param(
        Fault(lambda s: _use_smtp(s.env, free_port(), "notices"), "SMTP",
              ("cannot reach 127.0.0.1",), ("Check SMTP_HOST",)),
        id="smtp-not-answering",
    ),
]  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_makes_exactly_its_line_a_problem(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fault: Fault,
) -> None:
    fault.make(Setting(sandbox, monkeypatch, tmp_path))

    code, text, body = _check(capsys)

    assert code == 1 and body["ok"] is False
    expected = {name: state for name, state in EVERYTHING.items() if name not in fault.stopped}
    assert _states(body) == {**expected, fault.line: "problem"}
    [found] = [c for c in body["checks"] if c["check"] == fault.line]
    for word in fault.words:
        assert word in found["detail"]
    for word in fault.unsaid:
        assert word not in found["detail"]
    assert found["fix"].startswith(fault.fix[0])
    for piece in fault.fix:
        assert piece in found["fix"]
    assert f"fix: {found['fix']}" in text
    assert text.rstrip().endswith("1 problem(s) to fix before a run.")


def test_without_a_bot_token_discord_is_not_configured_and_no_problem(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_BOT_TOKEN")

    code, text, body = _check(capsys)

    assert code == 0 and body["ok"] is True
    assert _states(body) == {
        "database": "ok",
        "Stripe": "ok",
        "Discord": "not configured",
        "SMTP": "not configured",
    }
    assert "DISCORD_BOT_TOKEN" in text and text.rstrip().endswith("All set.")
    assert sandbox.discord.requests == []  # nothing to ask Discord with


def test_a_live_mode_key_is_reported_as_live_mode(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.stripe.api_keys = frozenset({LIVE_KEY})
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)

    code, text, body = _check(capsys)

    assert code == 0 and _states(body) == EVERYTHING
    [stripe] = [c for c in body["checks"] if c["check"] == "Stripe"]
    assert "live mode" in stripe["detail"] and "test mode" not in stripe["detail"]
    assert "the key is valid (live mode)" in text


@pytest.mark.parametrize("login", [False, True])
def test_smtp_answers_with_and_without_login_and_nothing_is_sent(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    login: bool,
) -> None:
    user = "notices" if login else None
    with smtp_server(username=user, password=SMTP_PASSWORD if login else None) as (port, inbox):
        _use_smtp(monkeypatch, port, user)

        code, text, body = _check(capsys)

    assert code == 0 and _states(body)["SMTP"] == "ok"
    assert inbox.messages == []
    assert inbox.logins == ([(user, SMTP_PASSWORD)] * 2 if login else [])  # plain and --json
    assert ("logged in as notices" in text) is login


def _use_smtp(monkeypatch: pytest.MonkeyPatch, port: int, user: str | None) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("ADMIN_EMAIL", "admins@example.org")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("SMTP_STARTTLS", "false")
    if user:
        monkeypatch.setenv("SMTP_USERNAME", user)
        monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
