"""The checks of `recon-pipeline check` (docs/behaviour.md §14), against the configured services:
read calls only, each answer turned into a report line by domain/preflight.py.

Messages come from the clients, which already keep secrets out of them (a key is shown as
`sk_test_****abcd` at most).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.discord import DiscordClient, DiscordError
from recon_pipeline.clients.mail import MailError, SmtpServer, check_server
from recon_pipeline.clients.membership_db import APP_TABLES, DatabaseUrlError, parse_database_url
from recon_pipeline.clients.stripe import StripeBilling, StripeSnapshotError
from recon_pipeline.domain.preflight import (
    CheckLine,
    bot_permissions,
    can_post,
    channel_permissions,
    not_configured,
    ok,
    problem,
    role_checks,
    stripe_mode,
)
from recon_pipeline.settings import Settings

T = TypeVar("T")


def all_checks(settings: Settings) -> list[CheckLine]:
    return [
        *database_checks(settings),
        *stripe_checks(settings),
        *discord_checks(settings),
        *mail_checks(settings),
    ]


def database_checks(settings: Settings) -> list[CheckLine]:
    try:
        target = parse_database_url(settings.DATABASE_URL)
        engine = target.create_engine()
    except DatabaseUrlError as exc:
        return [problem("database", str(exc), "Set DATABASE_URL to the membership database")]
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            missing = [t.name for t in APP_TABLES if not inspector.has_table(t.name)]
    except sa.exc.DBAPIError as exc:
        return [
            problem(
                "database",
                f"cannot connect to {target.where}: {target.failure(exc)}",
                "Check DATABASE_URL, and that the database server is running and reachable",
            )
        ]
    finally:
        engine.dispose()
    if missing:
        listed = ", ".join(f'"{t}"' for t in missing)
        return [
            problem(
                "database",
                f"{target.where} has no {listed} table",
                "Point DATABASE_URL at the membership app's database, or run "
                "`recon-pipeline db init` on a new one",
            )
        ]
    return [ok("database", f"{target.where} has the app's tables")]


def stripe_checks(settings: Settings) -> list[CheckLine]:
    if settings.STRIPE_SECRET_KEY is None:
        return [not_configured("Stripe", "STRIPE_SECRET_KEY is not set")]
    key = settings.STRIPE_SECRET_KEY.get_secret_value()
    mode = stripe_mode(key)
    described = f"{mode} mode" if mode else "a key of unknown mode"
    try:
        with StripeBilling(key, api_base=settings.STRIPE_API_BASE, rate_limit_retries=1) as stripe:
            stripe.probe_subscriptions()
    except StripeSnapshotError as exc:
        if exc.http_status == 401:
            fix = "Set STRIPE_SECRET_KEY to a secret key (sk_…) of the community's account"
        elif exc.http_status == 403:
            fix = (
                "Give the restricted key Read access to Subscriptions in the Stripe dashboard "
                "(Developers → API keys), or use a secret key"
            )
        else:
            fix = "Check STRIPE_API_BASE and that Stripe is reachable from this host"
        return [problem("Stripe", f"{described}: {exc.detail}", fix)]
    return [ok("Stripe", f"the key is valid ({described}) and can list subscriptions")]


def discord_checks(settings: Settings) -> list[CheckLine]:
    if settings.DISCORD_BOT_TOKEN is None or not settings.DISCORD_GUILD_ID:
        lines = [not_configured("Discord", "DISCORD_BOT_TOKEN and DISCORD_GUILD_ID must be set")]
        return [*lines, *_channel_not_set(settings)]
    lines: list[CheckLine] = []
    with DiscordClient(
        bot_token=settings.DISCORD_BOT_TOKEN.get_secret_value(),
        guild_id=str(settings.DISCORD_GUILD_ID),
        api_base=settings.DISCORD_API_BASE,
        max_retries=1,
    ) as discord:
        try:
            _read_discord(settings, discord, lines)
        except _Stopped as stopped:  # the checks after this one would only fail the same way
            lines.append(stopped.line)
    return lines


def _read_discord(settings: Settings, discord: DiscordClient, lines: list[CheckLine]) -> None:
    guild_id = str(settings.DISCORD_GUILD_ID)
    bot_id = str(
        _step(
            "bot token",
            discord.current_user,
            "Set DISCORD_BOT_TOKEN to the bot's token (Developer Portal → your app → Bot)",
        )["id"]
    )
    lines.append(ok("bot token", f"accepted: the bot is user {bot_id}"))
    held = _step("bot in server", lambda: discord.member_role_ids(bot_id), _INVITE)
    if held is None:
        raise _Stopped(problem("bot in server", f"the bot is not a member of server {guild_id}",
                               _INVITE))  # fmt: skip
    lines.append(ok("bot in server", f"the bot is in server {guild_id}"))
    roles = _step("managed roles", discord.guild_roles, "Check DISCORD_GUILD_ID")
    lines.extend(role_checks(roles, set(held), guild_id, settings.managed_roles()))
    try:
        _step(
            "member list",
            discord.read_one_member,
            "Turn on the Server Members Intent (Developer Portal → your app → Bot → "
            "Privileged Gateway Intents)",
        )
        lines.append(ok("member list", "the bot can read the member list"))
    except _Stopped as stopped:  # the admin channel is still worth checking
        lines.append(stopped.line)
    lines.append(_channel_check(settings, discord, roles, set(held), bot_id))


_INVITE = (
    "Invite the bot to the server with the OAuth2 URL generator (scope bot), or set "
    "DISCORD_GUILD_ID to the community's server"
)


class _Stopped(Exception):
    """A Discord check failed; `line` says how."""

    def __init__(self, line: CheckLine) -> None:
        super().__init__(line.detail)
        self.line = line


def _step(name: str, call: Callable[[], T], fix: str) -> T:
    """The call's answer; its failure becomes the problem line `name`."""
    try:
        return call()
    except DiscordError as exc:
        raise _Stopped(problem(name, str(exc), fix)) from None


def _channel_not_set(settings: Settings) -> list[CheckLine]:
    if settings.DISCORD_ADMIN_CHANNEL_ID:
        return []
    return [not_configured("admin channel", "DISCORD_ADMIN_CHANNEL_ID is not set")]


def _channel_check(
    settings: Settings,
    discord: DiscordClient,
    roles: pd.DataFrame,
    held: set[str],
    bot_id: str,
) -> CheckLine:
    if not settings.DISCORD_ADMIN_CHANNEL_ID:
        return _channel_not_set(settings)[0]
    guild_id = str(settings.DISCORD_GUILD_ID)
    channel_id = str(settings.DISCORD_ADMIN_CHANNEL_ID)
    try:
        found = _step(
            "admin channel",
            lambda: discord.channel(channel_id),
            "Set DISCORD_ADMIN_CHANNEL_ID to a text channel of the server (right-click it → "
            "Copy Channel ID), one the bot can see",
        )
    except _Stopped as stopped:
        return stopped.line
    base = bot_permissions(roles, held, guild_id)
    overwrites = found.get("permission_overwrites") or []
    if not can_post(channel_permissions(base, overwrites, held, guild_id, bot_id)):
        return problem(
            "admin channel",
            f"the bot may not post in channel {channel_id}",
            "Allow the bot's role View Channel and Send Messages in that channel's permissions",
        )
    return ok("admin channel", f"the bot may post in channel {channel_id}")


def mail_checks(settings: Settings) -> list[CheckLine]:
    if settings.EMAIL_PROVIDER != "smtp":
        return [not_configured("SMTP", "EMAIL_PROVIDER is console: notices go to the run log")]
    server = SmtpServer(
        host=str(settings.SMTP_HOST),
        port=settings.SMTP_PORT,
        starttls=settings.SMTP_STARTTLS,
        username=settings.SMTP_USERNAME,
        password=settings.SMTP_PASSWORD.get_secret_value() if settings.SMTP_PASSWORD else None,
        timeout_s=10.0,
    )
    try:
        check_server(server)
    except MailError as exc:
        return [
            problem(
                "SMTP",
                str(exc),
                "Check SMTP_HOST, SMTP_PORT, SMTP_STARTTLS and the SMTP login",
            )
        ]
    login = f", logged in as {server.username}" if server.username else ""
    return [ok("SMTP", f"{server.host}:{server.port} answers{login} (nothing was sent)")]
