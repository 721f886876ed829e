"""The checks of `recon-pipeline check` (docs/behaviour.md §14), against the configured services:
read calls only, each answer turned into a report line by domain/preflight.py.

Messages come from the clients, which already keep secrets out of them (a key is shown as
`sk_test_****abcd` at most).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from recon_pipeline.clients.discord import DiscordClient, DiscordError
from recon_pipeline.clients.mail import MailError, SmtpServer, check_server
from recon_pipeline.clients.membership_db import APP_TABLES, DatabaseUrlError, parse_database_url
from recon_pipeline.clients.stripe import StripeBilling, StripeSnapshotError
from recon_pipeline.domain.preflight import (
    CheckLine,
    GuildRole,
    bot_permissions,
    can_post,
    channel_permissions,
    not_configured,
    ok,
    problem,
    role_checks,
    roles_from_frame,
    stripe_mode,
)
from recon_pipeline.settings import Settings, hide_url_password


def all_checks(settings: Settings) -> list[CheckLine]:
    return [
        *database_checks(settings),
        *stripe_checks(settings),
        *discord_checks(settings),
        *mail_checks(settings),
    ]


def database_checks(settings: Settings) -> list[CheckLine]:
    where = hide_url_password(settings.DATABASE_URL)
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
                f"cannot connect to {where}: {type(exc.orig).__name__}: {exc.orig}",
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
                f"{where} has no {listed} table",
                "Point DATABASE_URL at the membership app's database, or run "
                "`recon-pipeline db init` on a new one",
            )
        ]
    return [ok("database", f"{where} has the app's tables")]


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
    guild_id = str(settings.DISCORD_GUILD_ID)
    with DiscordClient(
        bot_token=settings.DISCORD_BOT_TOKEN.get_secret_value(),
        guild_id=guild_id,
        api_base=settings.DISCORD_API_BASE,
        max_retries=1,
    ) as discord:
        first = _discord_step(
            "bot token",
            lambda: discord.current_user(),
            "Set DISCORD_BOT_TOKEN to the bot's token (Developer Portal → your app → Bot)",
        )
        if isinstance(first, CheckLine):
            return [first]
        bot_id = str(first["id"])
        lines = [ok("bot token", f"accepted: the bot is user {bot_id}")]
        held = _discord_step("bot in server", lambda: discord.member_role_ids(bot_id), _INVITE)
        if isinstance(held, CheckLine):
            return [*lines, held]
        if held is None:
            detail = f"the bot is not a member of server {guild_id}"
            return [*lines, problem("bot in server", detail, _INVITE)]
        lines.append(ok("bot in server", f"the bot is in server {guild_id}"))
        roles = _discord_step(
            "managed roles", lambda: discord.guild_roles(), "Check DISCORD_GUILD_ID"
        )
        if isinstance(roles, CheckLine):
            return [*lines, roles]
        guild_roles = roles_from_frame(roles)
        lines += role_checks(guild_roles, set(held), guild_id, settings.managed_roles())
        listed = _discord_step(
            "member list",
            lambda: discord.read_one_member(),
            "Turn on the Server Members Intent (Developer Portal → your app → Bot → "
            "Privileged Gateway Intents)",
        )
        lines.append(
            listed
            if isinstance(listed, CheckLine)
            else ok("member list", "the bot can read the member list")
        )
        lines += _channel_checks(settings, discord, guild_roles, set(held), guild_id, bot_id)
    return lines


_INVITE = (
    "Invite the bot to the server with the OAuth2 URL generator (scope bot), or set "
    "DISCORD_GUILD_ID to the community's server"
)


def _discord_step(name: str, call: Callable[[], object], fix: str) -> object:
    """The call's answer, or the problem line its failure makes."""
    try:
        return call()
    except DiscordError as exc:
        return problem(name, str(exc), fix)


def _channel_not_set(settings: Settings) -> list[CheckLine]:
    if settings.DISCORD_ADMIN_CHANNEL_ID:
        return []
    return [not_configured("admin channel", "DISCORD_ADMIN_CHANNEL_ID is not set")]


def _channel_checks(
    settings: Settings,
    discord: DiscordClient,
    roles: list[GuildRole],
    held: set[str],
    guild_id: str,
    bot_id: str,
) -> list[CheckLine]:
    if not settings.DISCORD_ADMIN_CHANNEL_ID:
        return _channel_not_set(settings)
    channel_id = str(settings.DISCORD_ADMIN_CHANNEL_ID)
    found = _discord_step(
        "admin channel",
        lambda: discord.channel(channel_id),
        "Set DISCORD_ADMIN_CHANNEL_ID to a text channel of the server (right-click it → Copy "
        "Channel ID), one the bot can see",
    )
    if isinstance(found, CheckLine):
        return [found]
    base = bot_permissions(roles, held, guild_id)
    overwrites = found.get("permission_overwrites") or []
    if not can_post(channel_permissions(base, overwrites, held, guild_id, bot_id)):
        return [
            problem(
                "admin channel",
                f"the bot may not post in channel {channel_id}",
                "Allow the bot's role View Channel and Send Messages in that channel's permissions",
            )
        ]
    return [ok("admin channel", f"the bot may post in channel {channel_id}")]


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
