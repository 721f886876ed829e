"""`recon-pipeline check` against the emulators, SMTP on loopback and a real database: all ok on
the sandbox; each fault makes exactly its line a problem, with its fix, and a non-zero exit; no
secret is ever printed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recon_pipeline.cli import main
from recon_pipeline.clients.frame_store import open_engine
from recon_pipeline.sandbox.demo import (
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
    for secret in (SANDBOX_BOT_TOKEN, SANDBOX_STRIPE_KEY, RESTRICTED_KEY, SMTP_PASSWORD):
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


def test_the_sandbox_passes_every_check(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, body = _check(capsys)

    assert code == 0 and body["ok"] is True
    assert _states(body) == EVERYTHING
    assert "the key is valid (test mode)" in text
    assert text.rstrip().endswith("All set.")


def _no_manage_roles(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.discord.set_manage_roles(False)


def _bot_below_lord(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.discord.set_bot_top_position(sandbox.discord.position_of("Lord"))


def _no_members_intent(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.discord.set_members_intent(False)


def _unknown_channel(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_ADMIN_CHANNEL_ID", "1100000000000000777")


def _restricted_key(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.stripe.restricted_keys = frozenset({RESTRICTED_KEY})
    monkeypatch.setenv("STRIPE_SECRET_KEY", RESTRICTED_KEY)


def _renamed_role(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_ROLE_LORD", "Patron")


@pytest.mark.parametrize(
    ("fault", "line", "words", "fix"),
    [
        (_no_manage_roles, "bot permission", "neither Manage Roles nor Administrator",
         "Manage Roles permission"),
        (_bot_below_lord, "bot role position", "is not above", "Move the bot's role above"),
        (_no_members_intent, "member list", "Missing Access (code 50001)",
         "Server Members Intent"),
        (_unknown_channel, "admin channel", "Unknown Channel", "DISCORD_ADMIN_CHANNEL_ID"),
        (_restricted_key, "Stripe", "403", "Read access to Subscriptions"),
        (_renamed_role, "managed roles", "no role named 'Patron'", "Server Settings → Roles"),
    ],
)  # fmt: skip
def test_each_fault_makes_exactly_its_line_a_problem(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fault: Callable[[Sandbox, pytest.MonkeyPatch], None],
    line: str,
    words: str,
    fix: str,
) -> None:
    fault(sandbox, monkeypatch)

    code, text, body = _check(capsys)

    assert code == 1 and body["ok"] is False
    states = _states(body)
    assert {name for name, state in states.items() if state == "problem"} == {line}
    [found] = [c for c in body["checks"] if c["check"] == line]
    assert words in found["detail"] and fix in found["fix"]
    assert f"fix: {found['fix']}" in text


def test_a_bot_below_lord_is_told_which_roles_to_move_above(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.discord.set_bot_top_position(sandbox.discord.position_of("Lord"))

    _, _, body = _check(capsys)

    [found] = [c for c in body["checks"] if c["check"] == "bot role position"]
    assert "'Lord'" in found["detail"] and "'Squire'" not in found["detail"]
    assert found["fix"].startswith("Move the bot's role above") and "'Lord'" in found["fix"]


def test_a_database_without_the_apps_tables_is_a_problem(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")

    code, _, body = _check(capsys)

    assert code == 1
    [found] = [c for c in body["checks"] if c["state"] == "problem"]
    assert found["check"] == "database" and '"Member"' in found["detail"]
    assert "recon-pipeline db init" in found["fix"]


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


def test_an_smtp_server_that_does_not_answer_is_a_problem(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_smtp(monkeypatch, free_port(), "notices")

    code, _, body = _check(capsys)

    assert code == 1
    [found] = [c for c in body["checks"] if c["state"] == "problem"]
    assert found["check"] == "SMTP" and "cannot reach 127.0.0.1" in found["detail"]
    assert "SMTP_HOST" in found["fix"]


def _use_smtp(monkeypatch: pytest.MonkeyPatch, port: int, user: str | None) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("ADMIN_EMAIL", "admins@example.org")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("SMTP_STARTTLS", "false")
    if user:
        monkeypatch.setenv("SMTP_USERNAME", user)
        monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
