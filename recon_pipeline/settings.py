"""Validated settings from the environment (docs/behaviour.md §11).

One `Settings` object holds every variable. `load_settings()` turns pydantic's errors into one
`SettingsError` whose lines name each bad variable, its value (never a secret's, and never the
password inside DATABASE_URL) and what is accepted, so a bad deployment fails at load with a
message an operator can act on. A variable set to an empty value counts as unset, so a copy of
`.env.example` loads with every default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from recon_pipeline.clients.frame_bodies import StorageUrlError, parse_storage_url
from recon_pipeline.clients.membership_db import (
    DatabaseUrlError,
    hide_url_password,
    parse_database_url,
)
from recon_pipeline.domain.days import local_day
from recon_pipeline.domain.policy import (
    DEFAULT_GRANTING_STATUSES,
    STRIPE_SUBSCRIPTION_STATUSES,
    AccessPolicy,
    ManagedRoles,
)

DEFAULT_DATA_DIR = Path("data")
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_DATA_DIR / 'recon_pipeline.sqlite3'}"

_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,19}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


# The password of a URL's `user:password@` part (up to the last `@`: masking too much is safe)
# and of a libpq-style `?password=` query parameter.
def _strict_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ValueError("must be true or false")


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "America" is a directory
        raise ValueError("is not a known IANA time zone") from exc
    return value


def _snowflake(value: str | None) -> str | None:
    if value is not None and not _SNOWFLAKE.fullmatch(value.strip()):
        raise ValueError("must be a Discord id (digits only)")
    return value.strip() if value else value


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value.strip()):
        raise ValueError("must be an http:// or https:// URL")
    return value.strip().rstrip("/")


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


StrictBool = Annotated[bool, BeforeValidator(_strict_bool)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_is_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]
Snowflake = Annotated[str | None, BeforeValidator(_blank_is_none), AfterValidator(_snowflake)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


# Variables that may hold a database URL, and so a password.
URL_VARIABLES = ("DATABASE_URL", "RECONCILIATION_STORAGE_URL")


def _setting(default: Any, accepted: str, description: str, **bounds: Any) -> Any:
    """A variable's field: its default, what `_explain` says is accepted, and any numeric bounds
    (`ge`, `gt`, `le`) pydantic checks; a float with bounds must be finite too."""
    if bounds and isinstance(default, float):
        bounds["allow_inf_nan"] = False
    return Field(
        default=default,
        description=description,
        json_schema_extra={"accepted": accepted},
        **bounds,
    )


class Settings(BaseModel):
    """Every environment variable the pipeline reads, validated.

    Field names are the variable names; `load_settings` picks them out of the environment.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    DATABASE_URL: str = _setting(
        DEFAULT_DATABASE_URL,
        "postgresql://…, postgres://…, sqlite:///path, file:path or any SQLAlchemy URL of those",
        "Membership database; defaults to a SQLite file under ./data",
    )
    STRIPE_SECRET_KEY: OptionalSecret = _setting(None, "a Stripe secret key", "Stripe API key")
    STRIPE_API_BASE: HttpUrl = _setting(
        "https://api.stripe.com",
        "an http(s) URL without /v1, e.g. https://api.stripe.com",
        "Stripe API base (the sandbox emulator's address in the demo)",
    )
    STRIPE_LIST_CONCURRENCY: int = _setting(
        4,
        "a whole number from 1 to 16",
        "Stripe listing requests in flight at once (1 = one page after another)",
        ge=1,
        le=16,
    )
    DISCORD_BOT_TOKEN: OptionalSecret = _setting(None, "a Discord bot token", "Bot token")
    DISCORD_GUILD_ID: Snowflake = _setting(None, "a Discord id (digits)", "The community's server")
    DISCORD_API_BASE: HttpUrl = _setting(
        "https://discord.com/api/v10",
        "an http(s) URL including the version path, e.g. https://discord.com/api/v10",
        "Discord API base",
    )
    DISCORD_ADMIN_CHANNEL_ID: Snowflake = _setting(
        None, "a Discord channel id (digits) or empty", "Channel for admin notices"
    )
    ADMIN_EMAIL: OptionalText = _setting(None, "an email address or empty", "Admin notice address")
    EMAIL_PROVIDER: Literal["console", "smtp"] = _setting(
        "console", "console or smtp", "How admin email is sent"
    )
    EMAIL_FROM_ADDRESS: OptionalText = _setting(
        None, "an email address or empty", "Sender of admin email"
    )
    SMTP_HOST: OptionalText = _setting(None, "a host name", "SMTP server (EMAIL_PROVIDER=smtp)")
    SMTP_PORT: int = _setting(587, "a port number from 1 to 65535", "SMTP port", ge=1, le=65535)
    SMTP_USERNAME: OptionalText = _setting(None, "a user name or empty", "SMTP login")
    SMTP_PASSWORD: OptionalSecret = _setting(None, "a password or empty", "SMTP password")
    SMTP_STARTTLS: StrictBool = _setting(True, "true or false", "Upgrade SMTP with STARTTLS")
    RECONCILIATION_AUTO_FIX: StrictBool = _setting(
        False, "true or false", "Apply fixes (otherwise dry run)"
    )
    RECONCILIATION_CONFIRM_REMOVALS: StrictBool = _setting(
        True,
        "true or false",
        "Remove access only once the previous complete run found the same removal",
    )
    RECONCILIATION_NOTIFY: Literal["changes", "always"] = _setting(
        "changes",
        "changes or always",
        "Notify when a run found something the previous run had not reported (changes), or "
        "whenever it found anything (always)",
    )
    RECONCILIATION_PAUSED: StrictBool = _setting(
        False, "true or false", "Skip scheduled runs, with a visible reason"
    )
    RECONCILIATION_TIMEZONE: Annotated[str, AfterValidator(_timezone)] = _setting(
        "America/New_York", "an IANA time zone name, e.g. America/New_York", "Schedule time zone"
    )
    RECONCILIATION_HOUR: int = _setting(
        3, "a whole hour from 0 to 23", "Hour of the daily run", ge=0, le=23
    )
    RECONCILIATION_VERIFY_DELAY_MINUTES: float = _setting(
        60.0,
        "a number of minutes ≥ 0 (fractions allowed)",
        "Delay before verifying fixes",
        ge=0,
    )
    RECONCILIATION_GUARD_FLOOR: int = _setting(
        5,
        "a whole number ≥ 0",
        "Planned removals always allowed before the guard can trip",
        ge=0,
    )
    RECONCILIATION_GUARD_FRACTION: float = _setting(
        0.25,
        "a number from 0 to 1",
        "Share of role holders whose removal trips the guard",
        ge=0,
        le=1,
    )
    RECONCILIATION_EXEMPT_DISCORD_IDS: Annotated[tuple[str, ...], BeforeValidator(_csv)] = _setting(
        (), "comma-separated Discord ids", "Accounts never reported as orphaned"
    )
    RECONCILIATION_GRANTING_STATUSES: Annotated[tuple[str, ...], BeforeValidator(_csv)] = _setting(
        tuple(sorted(DEFAULT_GRANTING_STATUSES)),
        f"comma-separated Stripe statuses from: {', '.join(sorted(STRIPE_SUBSCRIPTION_STATUSES))}",
        "Stripe subscription statuses that grant access",
    )
    DISCORD_ROLE_SQUIRE: str = _setting("Squire", "a role name", "Role before the intro is done")
    DISCORD_ROLE_KNIGHT: str = _setting("Knight", "a role name", "Role of team seats")
    DISCORD_ROLE_LORD: str = _setting("Lord", "a role name", "Role of owners and individuals")
    DISCORD_ROLE_DEBTOR: str = _setting("Debtor", "a role name", "Role of members in debt")
    RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES: float = _setting(
        120.0,
        "a number of minutes > 0 (fractions allowed)",
        "Snapshots older than this are never acted on (a late re-execution applies nothing)",
        gt=0,
    )
    RECONCILIATION_SNAPSHOT_RETENTION_DAYS: int = _setting(
        35,
        "a whole number of days ≥ 1",
        "Stored snapshots older than this are deleted",
        ge=1,
    )
    RECONCILIATION_STORAGE_URL: OptionalText = _setting(
        None,
        "empty (the membership database), postgresql://…, sqlite:///path, an absolute folder "
        "path, file:///…, s3://bucket/prefix or gs://bucket/prefix",
        "Where stored snapshots and drift tables live",
    )
    RECONCILIATION_LEASE_WAIT_MINUTES: float = _setting(
        10.0,
        "a number of minutes ≥ 0 (fractions allowed)",
        "How long a fixing run waits for another run's fixing lease before fixing nothing",
        ge=0,
    )
    RECONCILIATION_LEASE_TTL_SECONDS: float = _setting(
        60.0,
        "a number of seconds from 1 to 3600",
        "How long the fixing lease outlives its holder's last heartbeat",
        ge=1,
        le=3600,
    )
    DAGSTER_WEBSERVER_URL: Annotated[str | None, BeforeValidator(_blank_is_none)] = _setting(
        None, "an http(s) URL or empty", "Dagster UI address, for links in notices"
    )

    @field_validator("RECONCILIATION_STORAGE_URL")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_storage_url(value)
        except StorageUrlError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("RECONCILIATION_EXEMPT_DISCORD_IDS")
    @classmethod
    def _exempt(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not _SNOWFLAKE.fullmatch(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)} is not a Discord id (digits only)")
        return value

    @field_validator("RECONCILIATION_GRANTING_STATUSES")
    @classmethod
    def _granting(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in STRIPE_SUBSCRIPTION_STATUSES]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not a Stripe subscription status")
        if not value:
            raise ValueError("must name at least one status")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            parse_database_url(value)
        except DatabaseUrlError as exc:
            # Keep the reason ("uses 'mysql'", "is not a database URL", ...); _explain adds what
            # is accepted. The parser never quotes the URL, so no password can show.
            reason = str(exc).removeprefix("DATABASE_URL ").split(";", 1)[0]
            raise ValueError(reason) from None
        return value

    @field_validator("ADMIN_EMAIL", "EMAIL_FROM_ADDRESS")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value.strip()):
            raise ValueError("is not an email address")
        return value.strip() if value else value

    @field_validator("STRIPE_API_BASE")
    @classmethod
    def _stripe_base(cls, value: str) -> str:
        if value.endswith("/v1"):
            raise ValueError("must not end in /v1 (the SDK adds it)")
        return value

    @field_validator("DAGSTER_WEBSERVER_URL")
    @classmethod
    def _webserver(cls, value: str | None) -> str | None:
        return _http_url(value) if value is not None else None

    @field_validator(
        "DISCORD_ROLE_SQUIRE", "DISCORD_ROLE_KNIGHT", "DISCORD_ROLE_LORD", "DISCORD_ROLE_DEBTOR"
    )
    @classmethod
    def _role_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = _cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @field_serializer(*URL_VARIABLES, when_used="json")
    def _url_without_password(self, value: str | None) -> str | None:
        return hide_url_password(value) if value else value

    def managed_roles(self) -> ManagedRoles:
        """The four managed roles, as `DISCORD_ROLE_*` name them."""
        return ManagedRoles(
            self.DISCORD_ROLE_SQUIRE,
            self.DISCORD_ROLE_KNIGHT,
            self.DISCORD_ROLE_LORD,
            self.DISCORD_ROLE_DEBTOR,
        )

    def access_policy(self) -> AccessPolicy:
        """Who should hold which role, as these settings configure it (docs/behaviour.md §1)."""
        return AccessPolicy(
            roles=self.managed_roles(),
            granting_statuses=frozenset(self.RECONCILIATION_GRANTING_STATUSES),
            exempt_discord_ids=frozenset(self.RECONCILIATION_EXEMPT_DISCORD_IDS),
        )

    def today(self) -> str:
        """Today's date in `RECONCILIATION_TIMEZONE`: the day a run now would fill."""
        return local_day(self.RECONCILIATION_TIMEZONE)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            hide = name in URL_VARIABLES and isinstance(value, str)
            yield name, hide_url_password(value) if hide else value


_ROLE_VARIABLES = (
    "DISCORD_ROLE_SQUIRE",
    "DISCORD_ROLE_KNIGHT",
    "DISCORD_ROLE_LORD",
    "DISCORD_ROLE_DEBTOR",
)


def _cross_field_problems(settings: Settings) -> list[str]:
    """What is wrong with combinations of variables that are each valid on their own."""
    problems = []
    holders: dict[str, list[str]] = {}
    for name in _ROLE_VARIABLES:
        holders.setdefault(getattr(settings, name), []).append(name)
    for role, names in holders.items():
        if len(names) > 1:
            problems.append(
                f"{' and '.join(f'{name}={role!r}' for name in names)}: one role name for "
                f"{len(names)} managed roles; "
                "accepted: four different role names for DISCORD_ROLE_SQUIRE, "
                "DISCORD_ROLE_KNIGHT, DISCORD_ROLE_LORD and DISCORD_ROLE_DEBTOR"
            )
    if settings.EMAIL_PROVIDER == "smtp" and not settings.SMTP_HOST:
        problems.append(
            "EMAIL_PROVIDER='smtp' needs SMTP_HOST, which is empty; accepted: SMTP_HOST set to "
            "the SMTP server's host name, or EMAIL_PROVIDER=console"
        )
    return problems


SECRET_VARIABLES = frozenset(
    name for name, field in Settings.model_fields.items() if "Secret" in repr(field.annotation)
)


class SettingsError(ValueError):
    """One or more environment variables hold values the pipeline cannot accept."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from `environ` (default: the process environment).

    A variable set to an empty (or all-blank) value counts as unset and takes its default.

    Raises:
        SettingsError: naming every bad variable, its value and what is accepted.
    """
    env = dict(os.environ if environ is None else environ)
    known = {name: env[name] for name in Settings.model_fields if name in env and env[name].strip()}
    try:
        return Settings.model_validate(known)
    except ValidationError as exc:
        errors = exc.errors()
    bad = {str(error["loc"][0]) for error in errors if error.get("loc")}
    problems = [_explain(error, known) for error in errors if error.get("loc")]
    # Pydantic checks combinations only once every variable is valid on its own: check them on
    # the valid ones (the bad ones at their defaults) so that one error lists every problem.
    try:
        Settings.model_validate({name: value for name, value in known.items() if name not in bad})
    except ValidationError as exc:
        problems += [line for error in exc.errors() for line in _explain(error, known).splitlines()]
    raise SettingsError(problems) from None


def _explain(error: Any, values: Mapping[str, str]) -> str:
    location = error.get("loc") or ()
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not location:
        return reason
    name = str(location[0])
    field = Settings.model_fields.get(name)
    if field is not None and error.get("type") in _OUT_OF_RANGE:
        reason = _range_reason(name, field)
    accepted = (field.json_schema_extra or {}).get("accepted") if field else None
    value = values.get(name)
    if name in SECRET_VARIABLES:
        shown = "(hidden)"
    elif name in URL_VARIABLES and isinstance(value, str):
        shown = repr(hide_url_password(value))
    else:
        shown = repr(value)
    message = f"{name}={shown}: {reason}"
    return f"{message}; accepted: {accepted}" if accepted else message


# Pydantic's errors for a number outside a field's bounds, or not finite: "Input should be less
# than or equal to 23" names one side only, so the message names the whole range instead.
_OUT_OF_RANGE = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)


def _range_reason(name: str, field: FieldInfo) -> str:
    bounds = {
        key: getattr(item, key)
        for item in field.metadata
        for key in ("ge", "gt", "le")
        if getattr(item, key, None) is not None
    }
    if "le" in bounds:
        return f"must be from {bounds.get('ge', bounds.get('gt'))} to {bounds['le']}"
    number = "a finite number" if isinstance(field.default, float) else ""
    if number and name.endswith("_MINUTES"):
        number += " of minutes"
    if "gt" in bounds:
        return f"must be {number or 'a number'} above {bounds['gt']}"
    return f"must be {number + ', ' if number else ''}{bounds['ge']} or more"
