"""Settings from the environment (docs/behaviour.md §11): defaults, parsing, refusals, secrets,
immutability.

Every test passes its own `environ`, so whatever the process environment holds never matters
(except in the one test that proves the process environment is the default source).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recon_pipeline.definitions import build_resources
from recon_pipeline.domain.policy import AccessPolicy, ManagedRoles
from recon_pipeline.settings import (
    SECRET_VARIABLES,
    Settings,
    SettingsError,
    _explain,
    hide_url_password,
    load_settings,
)

STRIPE_KEY = "sk_test_51SuperSecretStripeKey"
BOT_TOKEN = "MTA5.bot-token.SuperSecretDiscord"
SMTP_PASS = "smtp-pass-SuperSecret"
DB_PASSWORD = "db-pass-SuperSecret"
SECRETS = {
    "STRIPE_SECRET_KEY": STRIPE_KEY,
    "DISCORD_BOT_TOKEN": BOT_TOKEN,
    "SMTP_PASSWORD": SMTP_PASS,
}


def refusal(environ: dict[str, str]) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    return caught.value


# --- Defaults ------------------------------------------------------------------------------------


def test_load_settings_empty_environment_gives_spec_defaults() -> None:
    settings = load_settings({})

    assert settings.DATABASE_URL == "sqlite:///data/recon_pipeline.sqlite3"
    assert settings.RECONCILIATION_AUTO_FIX is False
    assert settings.RECONCILIATION_PAUSED is False
    assert settings.RECONCILIATION_TIMEZONE == "America/New_York"
    assert settings.RECONCILIATION_HOUR == 3
    assert settings.RECONCILIATION_VERIFY_DELAY_MINUTES == 60
    assert settings.RECONCILIATION_GUARD_FLOOR == 5
    assert settings.RECONCILIATION_GUARD_FRACTION == 0.25
    assert set(settings.RECONCILIATION_GRANTING_STATUSES) == {"active", "trialing", "past_due"}
    assert settings.RECONCILIATION_EXEMPT_DISCORD_IDS == ()
    assert (
        settings.DISCORD_ROLE_SQUIRE,
        settings.DISCORD_ROLE_KNIGHT,
        settings.DISCORD_ROLE_LORD,
        settings.DISCORD_ROLE_DEBTOR,
    ) == ("Squire", "Knight", "Lord", "Debtor")
    assert settings.DISCORD_API_BASE == "https://discord.com/api/v10"
    assert settings.STRIPE_API_BASE == "https://api.stripe.com"
    assert settings.STRIPE_LIST_CONCURRENCY == 4
    assert settings.EMAIL_PROVIDER == "console"
    assert settings.STRIPE_SECRET_KEY is None
    assert settings.DISCORD_BOT_TOKEN is None
    assert settings.SMTP_PASSWORD is None


def test_load_settings_empty_environment_gives_the_default_access_policy() -> None:
    assert build_resources(load_settings({}))["policy"].access_policy() == AccessPolicy()


@pytest.mark.parametrize("blank", ["", "   "])
def test_load_settings_blank_variables_take_their_defaults(blank: str) -> None:
    # `.env.example` sets every variable to an empty value: a copy of it must load.
    every_variable_blank = dict.fromkeys(Settings.model_fields, blank)

    assert load_settings(every_variable_blank) == load_settings({})


def test_load_settings_ignores_unrelated_variables() -> None:
    settings = load_settings({"PATH": "/usr/bin", "RECONCILIATION_HOURS": "banana"})

    assert settings == load_settings({})


def test_load_settings_without_argument_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECONCILIATION_HOUR", "7")
    monkeypatch.setenv("RECONCILIATION_AUTO_FIX", "true")

    settings = load_settings()

    assert settings.RECONCILIATION_HOUR == 7
    assert settings.RECONCILIATION_AUTO_FIX is True


def test_load_settings_without_argument_refuses_a_bad_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECONCILIATION_HOUR", "25")

    with pytest.raises(SettingsError, match="RECONCILIATION_HOUR='25'"):
        load_settings()


# --- Good values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("TRUE", True), ("False", False), (" true ", True)],
)
def test_load_settings_parses_true_and_false_in_any_case(text: str, expected: bool) -> None:
    settings = load_settings(
        {"RECONCILIATION_AUTO_FIX": text, "RECONCILIATION_PAUSED": text, "SMTP_STARTTLS": text}
    )

    assert settings.RECONCILIATION_AUTO_FIX is expected
    assert settings.RECONCILIATION_PAUSED is expected
    assert settings.SMTP_STARTTLS is expected


def test_load_settings_parses_numbers_time_zone_and_fractional_delay() -> None:
    settings = load_settings(
        {
            "RECONCILIATION_HOUR": "0",
            "RECONCILIATION_TIMEZONE": "Europe/Berlin",
            "RECONCILIATION_VERIFY_DELAY_MINUTES": "0.05",
            "RECONCILIATION_GUARD_FLOOR": "0",
            "RECONCILIATION_GUARD_FRACTION": "1",
        }
    )

    assert settings.RECONCILIATION_HOUR == 0
    assert settings.RECONCILIATION_TIMEZONE == "Europe/Berlin"
    assert pytest.approx(0.05) == settings.RECONCILIATION_VERIFY_DELAY_MINUTES
    assert settings.RECONCILIATION_GUARD_FLOOR == 0
    assert settings.RECONCILIATION_GUARD_FRACTION == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:secret@db.internal:5432/community?schema=public",
        "postgresql://app@localhost/community",
        "postgresql+psycopg://app@localhost/community",
        "sqlite:////var/lib/recon/members.sqlite3",
        "file:./dev.db",
    ],
)
def test_load_settings_keeps_database_url_as_given(url: str) -> None:
    assert url == load_settings({"DATABASE_URL": url}).DATABASE_URL


def test_load_settings_splits_comma_separated_lists_tolerating_spaces() -> None:
    settings = load_settings(
        {
            "RECONCILIATION_EXEMPT_DISCORD_IDS": " 123456789012345678 , 42,,",
            "RECONCILIATION_GRANTING_STATUSES": "active , unpaid",
        }
    )

    assert settings.RECONCILIATION_EXEMPT_DISCORD_IDS == ("123456789012345678", "42")
    assert settings.RECONCILIATION_GRANTING_STATUSES == ("active", "unpaid")


def test_load_settings_accepts_smtp_with_its_host() -> None:
    settings = load_settings(
        {
            "EMAIL_PROVIDER": "smtp",
            "SMTP_HOST": "smtp.example.org",
            "SMTP_PORT": "465",
            "SMTP_USERNAME": "mailer",
            "SMTP_PASSWORD": SMTP_PASS,
            "SMTP_STARTTLS": "false",
            "ADMIN_EMAIL": " admins@example.org ",
            "EMAIL_FROM_ADDRESS": "recon@example.org",
        }
    )

    assert settings.EMAIL_PROVIDER == "smtp"
    assert settings.SMTP_HOST == "smtp.example.org"
    assert settings.SMTP_PORT == 465
    assert settings.SMTP_USERNAME == "mailer"
    assert settings.SMTP_STARTTLS is False
    assert settings.ADMIN_EMAIL == "admins@example.org"
    assert settings.EMAIL_FROM_ADDRESS == "recon@example.org"


def test_load_settings_normalises_ids_and_urls() -> None:
    settings = load_settings(
        {
            "DISCORD_GUILD_ID": " 1100000000000000001 ",
            "DISCORD_ADMIN_CHANNEL_ID": "1100000000000000002",
            "DISCORD_API_BASE": "http://127.0.0.1:8790/api/v10/",
            "STRIPE_API_BASE": "http://127.0.0.1:8791/",
            "DAGSTER_WEBSERVER_URL": "http://localhost:3000/",
        }
    )

    assert settings.DISCORD_GUILD_ID == "1100000000000000001"
    assert settings.DISCORD_ADMIN_CHANNEL_ID == "1100000000000000002"
    assert settings.DISCORD_API_BASE == "http://127.0.0.1:8790/api/v10"
    assert settings.STRIPE_API_BASE == "http://127.0.0.1:8791"
    assert settings.DAGSTER_WEBSERVER_URL == "http://localhost:3000"


def test_settings_access_policy_reflects_roles_statuses_and_exempt_ids() -> None:
    settings = load_settings(
        {
            "DISCORD_ROLE_SQUIRE": "Page",
            "DISCORD_ROLE_KNIGHT": " Paladin ",
            "DISCORD_ROLE_LORD": "Baron",
            "DISCORD_ROLE_DEBTOR": "Pauper",
            "RECONCILIATION_GRANTING_STATUSES": "active,trialing",
            "RECONCILIATION_EXEMPT_DISCORD_IDS": "111,222",
        }
    )

    assert build_resources(settings)["policy"].access_policy() == AccessPolicy(
        roles=ManagedRoles(squire="Page", knight="Paladin", lord="Baron", debtor="Pauper"),
        granting_statuses=frozenset({"active", "trialing"}),
        exempt_discord_ids=frozenset({"111", "222"}),
    )


# --- Bad values ----------------------------------------------------------------------------------

# (environment, what the message shows as `NAME=value`, a piece of what it says is accepted)
BAD_VALUES = [
    pytest.param(
        {"RECONCILIATION_HOUR": "25"}, "RECONCILIATION_HOUR='25'", "0 to 23", id="hour-25"
    ),
    pytest.param(
        {"RECONCILIATION_HOUR": "-1"}, "RECONCILIATION_HOUR='-1'", "0 to 23", id="hour-neg"
    ),
    pytest.param(
        {"RECONCILIATION_HOUR": "three"}, "RECONCILIATION_HOUR='three'", "0 to 23", id="hour-word"
    ),
    pytest.param(
        {"RECONCILIATION_TIMEZONE": "Mars/Olympus"},
        "RECONCILIATION_TIMEZONE='Mars/Olympus'",
        "IANA time zone",
        id="tz-mars",
    ),
    pytest.param(
        {"RECONCILIATION_TIMEZONE": "America"},
        "RECONCILIATION_TIMEZONE='America'",
        "IANA time zone",
        id="tz-directory",
    ),
    pytest.param(
        {"RECONCILIATION_AUTO_FIX": "yes"},
        "RECONCILIATION_AUTO_FIX='yes'",
        "true or false",
        id="autofix-yes",
    ),
    pytest.param(
        {"RECONCILIATION_PAUSED": "1"}, "RECONCILIATION_PAUSED='1'", "true or false", id="paused-1"
    ),
    pytest.param(
        {"RECONCILIATION_VERIFY_DELAY_MINUTES": "-5"},
        "RECONCILIATION_VERIFY_DELAY_MINUTES='-5'",
        "minutes ≥ 0",
        id="delay-neg",
    ),
    pytest.param(
        {"RECONCILIATION_VERIFY_DELAY_MINUTES": "soon"},
        "RECONCILIATION_VERIFY_DELAY_MINUTES='soon'",
        "minutes ≥ 0",
        id="delay-word",
    ),
    pytest.param(
        {"RECONCILIATION_VERIFY_DELAY_MINUTES": "nan"},
        "RECONCILIATION_VERIFY_DELAY_MINUTES='nan'",
        "minutes ≥ 0",
        id="delay-nan",
    ),
    pytest.param(
        {"RECONCILIATION_VERIFY_DELAY_MINUTES": "inf"},
        "RECONCILIATION_VERIFY_DELAY_MINUTES='inf'",
        "minutes ≥ 0",
        id="delay-inf",
    ),
    pytest.param(
        {"RECONCILIATION_GUARD_FRACTION": "1.5"},
        "RECONCILIATION_GUARD_FRACTION='1.5'",
        "from 0 to 1",
        id="fraction-1.5",
    ),
    pytest.param(
        {"RECONCILIATION_GUARD_FRACTION": "nan"},
        "RECONCILIATION_GUARD_FRACTION='nan'",
        "from 0 to 1",
        id="fraction-nan",
    ),
    pytest.param(
        {"STRIPE_LIST_CONCURRENCY": "0"},
        "STRIPE_LIST_CONCURRENCY='0'",
        "from 1 to 16",
        id="stripe-concurrency-0",
    ),
    pytest.param(
        {"RECONCILIATION_GUARD_FLOOR": "-1"},
        "RECONCILIATION_GUARD_FLOOR='-1'",
        "whole number ≥ 0",
        id="floor-neg",
    ),
    pytest.param(
        {"RECONCILIATION_GRANTING_STATUSES": "active,actve"},
        "RECONCILIATION_GRANTING_STATUSES='active,actve'",
        "incomplete_expired",
        id="status-typo",
    ),
    pytest.param(
        {"RECONCILIATION_GRANTING_STATUSES": " , "},
        "RECONCILIATION_GRANTING_STATUSES=' , '",
        "comma-separated Stripe statuses",
        id="status-none",
    ),
    pytest.param(
        {"RECONCILIATION_EXEMPT_DISCORD_IDS": "123, 12ab"},
        "RECONCILIATION_EXEMPT_DISCORD_IDS='123, 12ab'",
        "comma-separated Discord ids",
        id="exempt-12ab",
    ),
    pytest.param(
        {"DISCORD_GUILD_ID": "my-server"},
        "DISCORD_GUILD_ID='my-server'",
        "Discord id (digits)",
        id="guild-name",
    ),
    pytest.param(
        {"DISCORD_ADMIN_CHANNEL_ID": "#admins"},
        "DISCORD_ADMIN_CHANNEL_ID='#admins'",
        "Discord channel id",
        id="channel-name",
    ),
    pytest.param(
        {"STRIPE_API_BASE": "https://api.stripe.com/v1"},
        "STRIPE_API_BASE='https://api.stripe.com/v1'",
        "without /v1",
        id="stripe-v1",
    ),
    pytest.param(
        {"DISCORD_API_BASE": "discord.com"},
        "DISCORD_API_BASE='discord.com'",
        "http(s) URL",
        id="discord-no-scheme",
    ),
    pytest.param(
        {"DAGSTER_WEBSERVER_URL": "localhost:3000"},
        "DAGSTER_WEBSERVER_URL='localhost:3000'",
        "http(s) URL",
        id="webserver-no-scheme",
    ),
    pytest.param(
        {"DATABASE_URL": "mysql://db.internal/community"},
        "DATABASE_URL='mysql://db.internal/community'",
        "postgresql://",
        id="database-mysql",
    ),
    pytest.param(
        {"DATABASE_URL": "members.db"},
        "DATABASE_URL='members.db'",
        "sqlite:///path",
        id="database-not-a-url",
    ),
    pytest.param(
        {"EMAIL_PROVIDER": "pigeon"}, "EMAIL_PROVIDER='pigeon'", "console or smtp", id="provider"
    ),
    pytest.param({"SMTP_PORT": "70000"}, "SMTP_PORT='70000'", "1 to 65535", id="port-70000"),
    pytest.param(
        {"ADMIN_EMAIL": "not-an-email"},
        "ADMIN_EMAIL='not-an-email'",
        "an email address",
        id="admin-email",
    ),
    pytest.param(
        {"DISCORD_ROLE_LORD": "Knight"},
        "DISCORD_ROLE_LORD='Knight'",
        "four different role names",
        id="roles-duplicate",
    ),
    pytest.param(
        {"EMAIL_PROVIDER": "smtp"},
        "EMAIL_PROVIDER='smtp'",
        "SMTP_HOST set to",
        id="smtp-without-host",
    ),
]


@pytest.mark.parametrize(("environ", "shown", "accepted"), BAD_VALUES)
def test_load_settings_refuses_bad_value_naming_variable_value_and_accepted(
    environ: dict[str, str], shown: str, accepted: str
) -> None:
    error = refusal(environ)

    assert len(error.problems) == 1
    [problem] = error.problems
    assert shown in problem
    assert "accepted: " in problem
    assert accepted in problem.split("accepted: ", 1)[1]
    assert problem in str(error)


def test_load_settings_refuses_duplicate_roles_naming_both_variables() -> None:
    error = refusal({"DISCORD_ROLE_SQUIRE": "Member", "DISCORD_ROLE_DEBTOR": "Member"})

    [problem] = error.problems
    assert "DISCORD_ROLE_SQUIRE='Member'" in problem
    assert "DISCORD_ROLE_DEBTOR='Member'" in problem


def test_load_settings_lists_every_bad_variable_in_one_error() -> None:
    error = refusal(
        {
            "RECONCILIATION_HOUR": "25",
            "RECONCILIATION_TIMEZONE": "Mars/Olympus",
            "RECONCILIATION_AUTO_FIX": "yes",
            "SMTP_PORT": "0",
            "RECONCILIATION_GRANTING_STATUSES": "actve",
            "DISCORD_ROLE_KNIGHT": "Lord",
            "EMAIL_PROVIDER": "smtp",
        }
    )

    shown = [
        "RECONCILIATION_HOUR='25'",
        "RECONCILIATION_TIMEZONE='Mars/Olympus'",
        "RECONCILIATION_AUTO_FIX='yes'",
        "SMTP_PORT='0'",
        "RECONCILIATION_GRANTING_STATUSES='actve'",
        "DISCORD_ROLE_KNIGHT='Lord'",
        "EMAIL_PROVIDER='smtp'",
    ]
    assert len(error.problems) == len(shown)
    for piece in shown:
        assert sum(piece in problem for problem in error.problems) == 1, piece
        assert piece in str(error)


def test_settings_error_message_has_one_line_per_problem() -> None:
    error = refusal({"RECONCILIATION_HOUR": "25", "RECONCILIATION_PAUSED": "1"})

    lines = str(error).splitlines()
    assert lines[0] == "Invalid configuration:"
    assert lines[1:] == [f"  - {problem}" for problem in error.problems]
    assert len(lines) == 3


# --- Secrets -------------------------------------------------------------------------------------


def test_secret_variables_are_the_three_credentials() -> None:
    assert {"STRIPE_SECRET_KEY", "DISCORD_BOT_TOKEN", "SMTP_PASSWORD"} == SECRET_VARIABLES


def test_settings_secrets_never_appear_in_repr_str_or_json() -> None:
    settings = load_settings(SECRETS)

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in SECRETS.values():
            assert secret not in text


def test_settings_secrets_stay_readable_on_purpose() -> None:
    settings = load_settings(SECRETS)

    assert settings.STRIPE_SECRET_KEY is not None
    assert settings.DISCORD_BOT_TOKEN is not None
    assert settings.SMTP_PASSWORD is not None
    assert settings.STRIPE_SECRET_KEY.get_secret_value() == STRIPE_KEY
    assert settings.DISCORD_BOT_TOKEN.get_secret_value() == BOT_TOKEN
    assert settings.SMTP_PASSWORD.get_secret_value() == SMTP_PASS


def test_settings_error_never_shows_secrets_set_alongside_bad_values() -> None:
    error = refusal(
        {
            **SECRETS,
            "RECONCILIATION_HOUR": "25",
            "DISCORD_ROLE_LORD": "Knight",
            "EMAIL_PROVIDER": "smtp",
        }
    )

    message = str(error)
    assert "RECONCILIATION_HOUR='25'" in message
    for secret in SECRETS.values():
        assert secret not in message


@pytest.mark.parametrize("name", sorted(SECRET_VARIABLES))
def test_explain_hides_the_value_of_a_bad_secret_variable(name: str) -> None:
    # No secret can fail validation today; the message must still hide it if one ever does.
    problem = _explain({"loc": (name,), "msg": "Value error, is malformed"}, SECRETS)

    assert problem.startswith(f"{name}=(hidden): is malformed")
    for secret in SECRETS.values():
        assert secret not in problem


def test_settings_database_password_never_appears_in_repr_str_or_json() -> None:
    url = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/community"
    settings = load_settings({"DATABASE_URL": url})

    assert url == settings.DATABASE_URL
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert DB_PASSWORD not in text
        assert "postgresql://app:***@db.internal:5432/community" in text


def test_settings_error_hides_the_password_of_a_bad_database_url() -> None:
    error = refusal({"DATABASE_URL": f"mysql://app:{DB_PASSWORD}@db.internal/community"})

    [problem] = error.problems
    assert DB_PASSWORD not in str(error)
    assert "DATABASE_URL='mysql://app:***@db.internal/community'" in problem


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://app:pw@db/x", "postgres://app:***@db/x"),
        ("postgres://:pw@db/x", "postgres://:***@db/x"),
        ("postgresql://app:p%40ss@db:5432/x?schema=s", "postgresql://app:***@db:5432/x?schema=s"),
        ("postgresql://db/x?user=app&password=pw", "postgresql://db/x?user=app&password=***"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("sqlite:///data/x.sqlite3", "sqlite:///data/x.sqlite3"),
    ],
)
def test_hide_url_password_masks_only_the_password(url: str, shown: str) -> None:
    assert hide_url_password(url) == shown


# --- Immutability --------------------------------------------------------------------------------


def test_settings_refuse_assignment() -> None:
    settings = load_settings({})

    with pytest.raises(ValidationError, match="frozen"):
        settings.RECONCILIATION_AUTO_FIX = True  # type: ignore[misc]
    assert settings.RECONCILIATION_AUTO_FIX is False


def test_settings_lists_are_immutable_and_settings_hashable() -> None:
    settings = load_settings({"RECONCILIATION_EXEMPT_DISCORD_IDS": "111"})

    assert isinstance(settings.RECONCILIATION_EXEMPT_DISCORD_IDS, tuple)
    assert isinstance(settings.RECONCILIATION_GRANTING_STATUSES, tuple)
    assert hash(settings) == hash(load_settings({"RECONCILIATION_EXEMPT_DISCORD_IDS": "111"}))
