"""The code location: `defs` is what `dagster dev` and `workspace.yaml` load
(docs/behaviour.md §12).

Settings are read and validated once, here: a bad value stops the location from loading with a
message naming the variable. Secrets are bound as `EnvVar`s so their values never enter run
config, the UI or the event log.
"""

from __future__ import annotations

import dagster as dg

from recon_pipeline.defs.assets.apply import build_apply_assets
from recon_pipeline.defs.assets.reconcile import build_drift_asset
from recon_pipeline.defs.assets.snapshots import build_snapshot_assets
from recon_pipeline.defs.assets.verify import verification_report
from recon_pipeline.defs.hooks import record_failed_runs_sensor
from recon_pipeline.defs.io_managers import FrameStoreIOManager
from recon_pipeline.defs.jobs import RECONCILIATION_JOB, reconciliation_job, verification_job
from recon_pipeline.defs.partitions import daily_partitions
from recon_pipeline.defs.resources import (
    DiscordResource,
    MembershipDbResource,
    NotifierResource,
    ReconciliationPolicyResource,
    StripeResource,
)
from recon_pipeline.defs.retention import build_retention_schedule, snapshot_retention_job
from recon_pipeline.defs.schedules import build_daily_schedule
from recon_pipeline.defs.sensors import build_verification_sensor
from recon_pipeline.settings import Settings, load_settings


def _bound_by_name(settings: Settings, name: str, *, required: bool = False) -> object:
    """A variable that may hold a secret, as resource config: bound by name when set (or
    required), so its value never enters run config, the UI or the event log; else its default.

    `settings` must come from this process's environment, as `load_settings()` reads it.
    """
    if required or name in settings.model_fields_set:
        return dg.EnvVar(name)
    return getattr(settings, name)


def build_resources(settings: Settings) -> dict[str, object]:
    """The one place where settings become resources."""
    discord = DiscordResource(
        bot_token=_bound_by_name(settings, "DISCORD_BOT_TOKEN", required=True),
        guild_id=settings.DISCORD_GUILD_ID or "",
        api_base=settings.DISCORD_API_BASE,
    )
    membership_db = MembershipDbResource(
        database_url=_bound_by_name(settings, "DATABASE_URL"),
        storage_url=_bound_by_name(settings, "RECONCILIATION_STORAGE_URL"),
    )
    roles = settings.managed_roles()
    policy = ReconciliationPolicyResource(
        squire_role=roles.squire,
        knight_role=roles.knight,
        lord_role=roles.lord,
        debtor_role=roles.debtor,
        granting_statuses=list(settings.RECONCILIATION_GRANTING_STATUSES),
        exempt_discord_ids=list(settings.RECONCILIATION_EXEMPT_DISCORD_IDS),
        auto_fix=settings.RECONCILIATION_AUTO_FIX,
        confirm_removals=settings.RECONCILIATION_CONFIRM_REMOVALS,
        notify=settings.RECONCILIATION_NOTIFY,
        guard_floor=settings.RECONCILIATION_GUARD_FLOOR,
        guard_fraction=settings.RECONCILIATION_GUARD_FRACTION,
        timezone=settings.RECONCILIATION_TIMEZONE,
        max_snapshot_age_minutes=settings.RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES,
        retention_days=settings.RECONCILIATION_SNAPSHOT_RETENTION_DAYS,
        lease_wait_minutes=settings.RECONCILIATION_LEASE_WAIT_MINUTES,
        lease_ttl_seconds=settings.RECONCILIATION_LEASE_TTL_SECONDS,
    )
    return {
        "membership_db": membership_db,
        "io_manager": FrameStoreIOManager(membership_db=membership_db, policy=policy),
        "stripe": StripeResource(
            secret_key=_bound_by_name(settings, "STRIPE_SECRET_KEY", required=True),
            api_base=settings.STRIPE_API_BASE,
            list_concurrency=settings.STRIPE_LIST_CONCURRENCY,
        ),
        "discord": discord,
        "notifier": NotifierResource(
            email_provider=settings.EMAIL_PROVIDER,
            admin_email=settings.ADMIN_EMAIL,
            from_address=settings.EMAIL_FROM_ADDRESS,
            smtp_host=settings.SMTP_HOST,
            smtp_port=settings.SMTP_PORT,
            smtp_username=settings.SMTP_USERNAME,
            smtp_password=_bound_by_name(settings, "SMTP_PASSWORD"),
            smtp_starttls=settings.SMTP_STARTTLS,
            admin_channel_id=settings.DISCORD_ADMIN_CHANNEL_ID,
            webserver_url=settings.DAGSTER_WEBSERVER_URL,
            discord=discord,
        ),
        "policy": policy,
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings.RECONCILIATION_TIMEZONE)
    return dg.Definitions(
        assets=[
            *build_snapshot_assets(partitions),
            build_drift_asset(partitions),
            *build_apply_assets(partitions),
            verification_report,
        ],
        jobs=[reconciliation_job, verification_job, snapshot_retention_job],
        schedules=[
            build_daily_schedule(
                hour=settings.RECONCILIATION_HOUR,
                timezone=settings.RECONCILIATION_TIMEZONE,
                paused=settings.RECONCILIATION_PAUSED,
            ),
            build_retention_schedule(
                hour=settings.RECONCILIATION_HOUR, timezone=settings.RECONCILIATION_TIMEZONE
            ),
        ],
        sensors=[
            build_verification_sensor(settings.RECONCILIATION_VERIFY_DELAY_MINUTES),
            record_failed_runs_sensor,
        ],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())


def get_reconciliation_job() -> dg.JobDefinition:
    """For `dg.reconstructable`: the job rebuilt from this module in every step process."""
    return defs.resolve_job_def(RECONCILIATION_JOB)
