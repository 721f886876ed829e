"""Resources: typed clients for the three systems, and the reconciliation policy.

`definitions.build_resources` configures them from the settings: the one place where a variable
meets a resource field. Secrets reach them only through `dg.EnvVar`, so run config, the UI and
the event log hold the variable's name, never its value.
"""

import datetime as dt
import logging
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import dagster as dg
import sqlalchemy as sa
from pydantic import ConfigDict, Field

from recon_pipeline.clients.discord import DiscordClient, DiscordError
from recon_pipeline.clients.frame_store import FrameStore, open_engine, open_frame_store
from recon_pipeline.clients.mail import MailError, SmtpServer, build_message, send_email
from recon_pipeline.clients.stripe import StripeBilling
from recon_pipeline.domain.fixes import GuardPolicy
from recon_pipeline.domain.notices import Notice, discord_message
from recon_pipeline.domain.policy import AccessPolicy, ManagedRoles
from recon_pipeline.fix_step import FixSettings

# Dagster 1.13's own set-up of nested resources (ResourceDependency) calls this deprecated
# property; nothing of ours does, and the warning would repeat in every step's log.
warnings.filterwarnings(
    "ignore", message="InitResourceContext.dagster_run is deprecated", category=DeprecationWarning
)


class MembershipDbResource(dg.ConfigurableResource):
    """The membership database: the app's `"Member"`, `"Team"` and `"ReconciliationRun"`, and
    the pipeline's own tables (stored frames' catalog, the fixing lease, run status)."""

    model_config = ConfigDict(hide_input_in_errors=True)
    database_url: str = Field(description="The database's URL (may hold a password)", repr=False)
    storage_url: str | None = Field(
        default=None,
        description="Where stored frames' rows live (empty: in this database)",
        repr=False,
    )

    @contextmanager
    def engine(self) -> Iterator[sa.Engine]:
        engine = open_engine(self.database_url)
        try:
            yield engine
        finally:
            engine.dispose()

    def frame_store(self) -> AbstractContextManager[FrameStore]:
        """The stored frames: catalog in this database, rows where `storage_url` says."""
        return open_frame_store(self.database_url, self.storage_url)


class StripeResource(dg.ConfigurableResource):
    """Stripe, read only: every subscription of every status."""

    model_config = ConfigDict(hide_input_in_errors=True)
    secret_key: str = Field(description="Secret API key", repr=False)
    api_base: str = Field(description="API base, without /v1")
    list_concurrency: int = Field(default=4, description="Listing requests in flight at once")

    def client(self) -> StripeBilling:
        return StripeBilling(
            self.secret_key, api_base=self.api_base, concurrency=self.list_concurrency
        )


class DiscordResource(dg.ConfigurableResource):
    """The community's Discord server, through the bot."""

    model_config = ConfigDict(hide_input_in_errors=True)
    bot_token: str = Field(description="The bot's token", repr=False)
    guild_id: str = Field(description="The community's server")
    api_base: str = Field(description="API base, with the version path")

    def client(self) -> DiscordClient:
        return DiscordClient(
            bot_token=self.bot_token, guild_id=self.guild_id, api_base=self.api_base
        )


class ReconciliationPolicyResource(dg.ConfigurableResource):
    """Who should hold which role, and how fixes are allowed."""

    squire_role: str = Field(description="Role before the intro is done")
    knight_role: str = Field(description="Role of team seats")
    lord_role: str = Field(description="Role of owners and individuals")
    debtor_role: str = Field(description="Role of members in debt")
    granting_statuses: list[str] = Field(description="Subscription statuses that grant access")
    exempt_discord_ids: list[str] = Field(description="Accounts never reported as orphaned")
    auto_fix: bool = Field(description="Fix unless a run's launch config says otherwise")
    confirm_removals: bool = Field(
        default=True, description="Remove only what the previous complete run found too"
    )
    notify: str = Field(default="changes", description="changes or always: when runs notify")
    guard_floor: int = Field(description="Removals always allowed before the guard can trip")
    guard_fraction: float = Field(description="Share of role holders whose removal trips it")
    timezone: str = Field(description="Time zone of the daily partitions and schedule")
    max_snapshot_age_minutes: float = Field(description="Oldest snapshots a fix may act on")
    retention_days: int = Field(description="Days of stored snapshots kept")
    lease_wait_minutes: float = Field(description="Wait for another run's fixing lease")
    lease_ttl_seconds: float = Field(description="Lease lifetime after its last heartbeat")

    def access_policy(self) -> AccessPolicy:
        return AccessPolicy(
            roles=self.managed_roles(),
            granting_statuses=frozenset(self.granting_statuses),
            exempt_discord_ids=frozenset(self.exempt_discord_ids),
        )

    def managed_roles(self) -> ManagedRoles:
        return ManagedRoles(self.squire_role, self.knight_role, self.lord_role, self.debtor_role)

    def guard_policy(self) -> GuardPolicy:
        return GuardPolicy(floor=self.guard_floor, fraction=self.guard_fraction)

    def fix_settings(self) -> FixSettings:
        return FixSettings(
            roles=self.managed_roles(),
            guard=self.guard_policy(),
            max_snapshot_age=dt.timedelta(minutes=self.max_snapshot_age_minutes),
            lease_wait=dt.timedelta(minutes=self.lease_wait_minutes),
            lease_ttl_s=self.lease_ttl_seconds,
        )


class NotifierResource(dg.ConfigurableResource):
    """Admin notices: email (SMTP or printed) and a message in the Discord admin channel.

    A notice that cannot be sent is logged and never fails the run.
    """

    model_config = ConfigDict(hide_input_in_errors=True)
    email_provider: str = Field(description="console (printed to the log) or smtp")
    admin_email: str | None = Field(default=None, description="Admin notice address")
    from_address: str | None = Field(default=None, description="Sender of admin email")
    smtp_host: str | None = Field(default=None, description="SMTP server")
    smtp_port: int = Field(default=587, description="SMTP port")
    smtp_username: str | None = Field(default=None, description="SMTP login")
    smtp_password: str | None = Field(default=None, description="SMTP password", repr=False)
    smtp_starttls: bool = Field(default=True, description="Upgrade SMTP with STARTTLS")
    admin_channel_id: str | None = Field(default=None, description="Channel for admin notices")
    webserver_url: str | None = Field(default=None, description="Dagster UI, for run links")
    discord: dg.ResourceDependency[DiscordResource]  # posts to the admin channel

    def run_url(self, run_id: str) -> str | None:
        return f"{self.webserver_url.rstrip('/')}/runs/{run_id}" if self.webserver_url else None

    def send(self, notice: Notice, log: logging.Logger | dg.DagsterLogManager) -> dict[str, str]:
        """Send `notice` wherever configured (the admin channel through the Discord bot); what
        happened per channel.

        Never raises: each channel is tried on its own, and one that fails is logged and
        reported as "failed: …" while the other still goes out.
        """
        secrets = [value for value in (self.smtp_password, self.discord.bot_token) if value]

        def failed(channel: str, exc: Exception) -> str:
            if isinstance(exc, MailError | DiscordError):
                text = str(exc)  # the clients' own errors, written to be shown
            else:
                # Anything else (a client's argument check, or something unforeseen) may quote a
                # configured value: logged with the secrets masked, and without a traceback,
                # which would repeat the text unmasked.
                text = f"{type(exc).__name__}: {exc}"
            for secret in secrets:
                text = text.replace(secret, "***")
            log.error(f"admin notice {channel} failed: {text}")
            return f"failed: {text}"

        sent = {"email": "not configured", "discord": "not configured"}
        # A notice never fails the run (docs/behaviour.md §9), whatever a channel raises.
        if self.admin_email:
            try:
                sent["email"] = self._email(notice, log)
            except Exception as exc:
                sent["email"] = failed(f"email to {self.admin_email}", exc)
        if self.admin_channel_id:
            try:
                with self.discord.client() as client:
                    client.send_message(self.admin_channel_id, discord_message(notice))
                sent["discord"] = "sent"
            except Exception as exc:
                sent["discord"] = failed(f"to Discord channel {self.admin_channel_id}", exc)
        return sent

    def _email(self, notice: Notice, log: logging.Logger | dg.DagsterLogManager) -> str:
        """Returns "printed" or "sent"; raises when the mail cannot go out (MailError, as a
        rule)."""
        message = build_message(
            sender=self.from_address or self.admin_email or "",
            recipient=self.admin_email or "",
            subject=notice.subject,
            body=notice.text,
        )
        if self.email_provider != "smtp" or not self.smtp_host:
            log.info(f"admin notice (EMAIL_PROVIDER=console):\n{message}")
            return "printed"
        server = SmtpServer(
            host=self.smtp_host,
            port=self.smtp_port,
            starttls=self.smtp_starttls,
            username=self.smtp_username,
            password=self.smtp_password,
        )
        send_email(server, message)
        return "sent"
