"""Bad configuration through the public interfaces (docs/behaviour.md §11, §12).

Each bad value is tried twice: loading the code location (`recon_pipeline/definitions.py`, run
as Dagster imports it) must refuse with a message naming the variable, its value and what is
accepted; and `recon-pipeline run`, as an operator starts it, must exit 2 with that message on
stderr, no Python traceback, and nothing started. Secrets set alongside never show.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recon_pipeline.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "recon_pipeline" / "definitions.py"
DB_PASSWORD = "db-pa55-SuperSecret"
SECRETS = {
    "STRIPE_SECRET_KEY": "sk_live_SuperSecretStripeKey",
    "DISCORD_BOT_TOKEN": "MTA5.SuperSecretBotToken",
    "DISCORD_GUILD_ID": "1100000000000000000",
    "SMTP_PASSWORD": "smtp-SuperSecret",
}
SECRET_VALUES = (*(v for k, v in SECRETS.items() if k != "DISCORD_GUILD_ID"), DB_PASSWORD)

# (environment, the message's `NAME=value`, a piece of what it says is accepted)
BAD_CONFIG = [
    pytest.param({"RECONCILIATION_HOUR": "25"}, "RECONCILIATION_HOUR='25'", "0 to 23", id="hour"),
    pytest.param(
        {"RECONCILIATION_TIMEZONE": "Mars/Olympus"},
        "RECONCILIATION_TIMEZONE='Mars/Olympus'",
        "IANA time zone",
        id="timezone",
    ),
    pytest.param(
        {"RECONCILIATION_AUTO_FIX": "yes"},
        "RECONCILIATION_AUTO_FIX='yes'",
        "true or false",
        id="auto-fix",
    ),
    pytest.param(
        {"RECONCILIATION_CONFIRM_REMOVALS": "1"},
        "RECONCILIATION_CONFIRM_REMOVALS='1'",
        "true or false",
        id="confirm-removals",
    ),
    pytest.param(
        {"RECONCILIATION_PAUSED": "maybe"},
        "RECONCILIATION_PAUSED='maybe'",
        "true or false",
        id="paused",
    ),
    pytest.param(
        {"RECONCILIATION_VERIFY_DELAY_MINUTES": "-5"},
        "RECONCILIATION_VERIFY_DELAY_MINUTES='-5'",
        "minutes ≥ 0",
        id="delay-negative",
    ),
    pytest.param(
        {"RECONCILIATION_VERIFY_DELAY_MINUTES": "soon"},
        "RECONCILIATION_VERIFY_DELAY_MINUTES='soon'",
        "minutes ≥ 0",
        id="delay-word",
    ),
    pytest.param(
        {"RECONCILIATION_GUARD_FLOOR": "-1"},
        "RECONCILIATION_GUARD_FLOOR='-1'",
        "whole number ≥ 0",
        id="guard-floor",
    ),
    pytest.param(
        {"RECONCILIATION_GUARD_FRACTION": "1.5"},
        "RECONCILIATION_GUARD_FRACTION='1.5'",
        "from 0 to 1",
        id="guard-fraction",
    ),
    pytest.param(
        {"DATABASE_URL": f"postgresql://recon:{DB_PASSWORD}@db.internal:notaport/community"},
        "DATABASE_URL='postgresql://recon:***@db.internal:notaport/community'",
        "postgresql://",
        id="database-url",
    ),
    pytest.param(
        {"DISCORD_GUILD_ID": "my-server"},
        "DISCORD_GUILD_ID='my-server'",
        "Discord id (digits)",
        id="guild-id",
    ),
    pytest.param(
        {"EMAIL_PROVIDER": "carrier-pigeon"},
        "EMAIL_PROVIDER='carrier-pigeon'",
        "console or smtp",
        id="email-provider",
    ),
    pytest.param(
        {"EMAIL_PROVIDER": "smtp"}, "EMAIL_PROVIDER='smtp'", "SMTP_HOST set to", id="smtp-no-host"
    ),
    pytest.param({"SMTP_PORT": "70000"}, "SMTP_PORT='70000'", "1 to 65535", id="smtp-port"),
    pytest.param(
        {"RECONCILIATION_EXEMPT_DISCORD_IDS": "123,abc"},
        "RECONCILIATION_EXEMPT_DISCORD_IDS='123,abc'",
        "comma-separated Discord ids",
        id="exempt-ids",
    ),
    pytest.param(
        {"DISCORD_ROLE_LORD": "Knight"},
        "DISCORD_ROLE_LORD='Knight'",
        "four different role names",
        id="duplicate-roles",
    ),
    pytest.param(
        {"RECONCILIATION_GRANTING_STATUSES": "active,paid"},
        "RECONCILIATION_GRANTING_STATUSES='active,paid'",
        "incomplete_expired",
        id="granting-status",
    ),
    pytest.param(
        {"ADMIN_EMAIL": "root"}, "ADMIN_EMAIL='root'", "an email address", id="admin-email"
    ),
    pytest.param(
        {"STRIPE_API_BASE": "ftp://stripe.internal"},
        "STRIPE_API_BASE='ftp://stripe.internal'",
        "http(s) URL",
        id="stripe-api-base",
    ),
    pytest.param(
        {"DISCORD_API_BASE": "discord.com"},
        "DISCORD_API_BASE='discord.com'",
        "http(s) URL",
        id="discord-api-base",
    ),
    pytest.param(
        {"RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES": "0"},
        "RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES='0'",
        "minutes > 0",
        id="max-snapshot-age",
    ),
    pytest.param(
        {"RECONCILIATION_SNAPSHOT_RETENTION_DAYS": "0"},
        "RECONCILIATION_SNAPSHOT_RETENTION_DAYS='0'",
        "whole number of days ≥ 1",
        id="retention-days",
    ),
    pytest.param(
        {"RECONCILIATION_STORAGE_URL": f"mysql://recon:{DB_PASSWORD}@db.internal/frames"},
        "RECONCILIATION_STORAGE_URL='mysql://recon:***@db.internal/frames'",
        "s3://bucket/prefix",
        id="storage-url-scheme",
    ),
    pytest.param(
        {"RECONCILIATION_STORAGE_URL": "frames/here"},
        "RECONCILIATION_STORAGE_URL='frames/here'",
        "an absolute folder path",
        id="storage-url-relative",
    ),
    pytest.param(
        {"RECONCILIATION_LEASE_WAIT_MINUTES": "-1"},
        "RECONCILIATION_LEASE_WAIT_MINUTES='-1'",
        "minutes ≥ 0",
        id="lease-wait",
    ),
    pytest.param(
        {"RECONCILIATION_LEASE_TTL_SECONDS": "0"},
        "RECONCILIATION_LEASE_TTL_SECONDS='0'",
        "seconds from 1 to 3600",
        id="lease-ttl",
    ),
    pytest.param(
        {"DAGSTER_WEBSERVER_URL": "localhost:3000"},
        "DAGSTER_WEBSERVER_URL='localhost:3000'",
        "http(s) URL",
        id="webserver-url",
    ),
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only the secrets set: whatever else the test process's environment holds never counts."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def load_code_location() -> None:
    """Execute `recon_pipeline/definitions.py` afresh, as loading the code location does."""
    spec = importlib.util.spec_from_file_location("recon_definitions_under_test", DEFINITIONS)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def operator_env(bad: dict[str, str]) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in Settings.model_fields and k != "DAGSTER_HOME"
    }
    return {**base, **SECRETS, **bad}


def assert_names_value_and_accepted(message: str, shown: str, accepted: str) -> None:
    [line] = [line for line in message.splitlines() if shown in line]
    assert "accepted: " in line
    assert accepted in line.split("accepted: ", 1)[1]


@pytest.mark.parametrize(("bad", "shown", "accepted"), BAD_CONFIG)
def test_code_location_refuses_to_load(
    clean_env: pytest.MonkeyPatch, bad: dict[str, str], shown: str, accepted: str
) -> None:
    for name, value in bad.items():
        clean_env.setenv(name, value)

    with pytest.raises(SettingsError) as refused:
        load_code_location()

    message = str(refused.value)
    assert_names_value_and_accepted(message, shown, accepted)
    for secret in SECRET_VALUES:
        assert secret not in message


@pytest.mark.parametrize(("bad", "shown", "accepted"), BAD_CONFIG)
def test_run_command_exits_2_with_the_message_and_no_traceback(
    tmp_path: Path, bad: dict[str, str], shown: str, accepted: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recon_pipeline.cli", "run", "--auto-fix"],
        cwd=tmp_path,
        env=operator_env(bad),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert_names_value_and_accepted(result.stderr, shown, accepted)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for secret in SECRET_VALUES:
        assert secret not in output
    assert not (tmp_path / "dagster_home").exists()  # nothing was started


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ({"RECONCILIATION_HOUR": "25"}, "RECONCILIATION_HOUR='25'"),
        (
            {"DATABASE_URL": f"mysql://recon:{DB_PASSWORD}@db.internal/community"},
            "DATABASE_URL='mysql://recon:***@db.internal/community'",
        ),
    ],
    ids=["hour", "database-url"],
)
def test_dagster_definitions_validate_names_the_bad_variable(
    tmp_path: Path, bad: dict[str, str], shown: str
) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "recon_pipeline.definitions"],
        cwd=ROOT,
        env={**operator_env(bad), "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"SettingsError: Invalid configuration:\n  - {shown}" in output
    for secret in SECRET_VALUES:
        assert secret not in output


def test_blank_managed_role_name_counts_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    # Documented: a blank variable takes its default (a copy of .env.example must load).
    clean_env.setenv("DISCORD_ROLE_KNIGHT", "   ")

    assert load_settings().DISCORD_ROLE_KNIGHT == "Knight"


@pytest.mark.parametrize(
    ("database_url", "reason"),
    [
        (f"postgresql://recon:{DB_PASSWORD}@127.0.0.1:1/community", "Connection refused"),
        ("sqlite:///no/such/folder/members.sqlite3", "unable to open database file"),
    ],
    ids=["postgres-refused", "sqlite-unopenable"],
)
def test_run_command_refuses_an_unusable_database_before_starting(
    tmp_path: Path, database_url: str, reason: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recon_pipeline.cli", "run", "--auto-fix"],
        cwd=tmp_path,
        env=operator_env({"DATABASE_URL": database_url}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("recon-pipeline: cannot use DATABASE_URL ")
    assert reason in result.stderr and "no run was started" in result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for secret in SECRET_VALUES:
        assert secret not in output
    assert not (tmp_path / "dagster_home").exists()
