"""Snapshot assets: today's state of the membership database, Stripe and Discord.

Only today's partition can be snapshotted: the outside systems have no history, so a past day's
snapshot would silently be today's data filed under the wrong date.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from recon_pipeline.clients.access_exceptions import load_exceptions
from recon_pipeline.clients.discord import DiscordClient, DiscordError
from recon_pipeline.clients.fixing_lease import fixing_mark
from recon_pipeline.clients.membership_db import load_members, load_teams
from recon_pipeline.clients.stripe import StripeSnapshotError
from recon_pipeline.defs.fix_config import launched_auto_fix
from recon_pipeline.defs.hooks import record_failed_run
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import (
    DiscordResource,
    MembershipDbResource,
    ReconciliationPolicyResource,
    StripeResource,
)
from recon_pipeline.domain.access_exceptions import live_exceptions
from recon_pipeline.domain.columns import ExceptionCol, GuildMemberRoleCol
from recon_pipeline.domain.fixes import count_role_holders
from recon_pipeline.domain.policy import RoleResolutionError, resolve_managed_role_ids
from recon_pipeline.domain.preflight import (
    CheckLine,
    preflight_failure,
    role_management_problems,
)
from recon_pipeline.domain.provenance import stamp_snapshot

GROUP = "membership_recon"


def refuse_past_day(context: dg.AssetExecutionContext, timezone: str) -> None:
    today = local_day(timezone)
    if context.partition_key != today:
        raise dg.Failure(
            description=(
                f"Cannot snapshot {context.partition_key}: Stripe and Discord can only be read "
                f"as they are now, and today is {today} ({timezone}). To recompute a past "
                "day's drift table from its stored snapshots, backfill drift_issues (and what "
                "follows it) without selecting the snapshot assets."
            ),
            metadata={"requested": context.partition_key, "today": today},
            allow_retries=False,
        )


def snapshot_stamper(membership_db: MembershipDbResource) -> Callable[[pd.DataFrame], None]:
    """Taken before a snapshot reads anything: stamps its frames with when it began and what
    the fixing lease showed then, so a fixing step can tell how fresh they are and whether
    another run fixed things after they were taken."""
    taken_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with membership_db.engine() as engine:
        mark = fixing_mark(engine)

    def stamp(frame: pd.DataFrame) -> None:
        stamp_snapshot(frame, taken_at=taken_at, mark=mark)

    return stamp


@dataclass(frozen=True)
class MembershipSnapshot:
    members: pd.DataFrame
    teams: pd.DataFrame
    exceptions: pd.DataFrame  # every access exception not removed, live or expired


def read_membership(membership_db: MembershipDbResource) -> MembershipSnapshot:
    """Members, teams and access exceptions, read in one transaction so they agree."""
    with membership_db.engine() as engine, engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot for both reads
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if conn.dialect.name == "sqlite":
                # pysqlite sends no BEGIN before a SELECT, so each read would see the database
                # as of its own moment; an explicit one holds both reads to one state.
                conn.exec_driver_sql("BEGIN")
            return MembershipSnapshot(load_members(conn), load_teams(conn), load_exceptions(conn))


def read_stripe(stripe: StripeResource) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every subscription, and the listing's request counts; a failure is a dg.Failure."""
    with stripe.client() as billing:
        try:
            return billing.list_subscriptions(), billing.stats.as_metadata()
        except StripeSnapshotError as exc:
            raise dg.Failure(
                description=f"Stripe snapshot incomplete, so no fix will be applied: {exc}"
            ) from None


@dataclass(frozen=True)
class DiscordSnapshot:
    roles: pd.DataFrame
    member_roles: pd.DataFrame
    managed: dict[str, str]  # managed role name -> id
    members_without_user: int  # skipped by the client, so they read as accounts not in the server
    preflight: list[CheckLine]  # what keeps the bot from managing a managed role


def read_discord(
    discord: DiscordResource, policy: ReconciliationPolicyResource, *, fixing: bool | None
) -> DiscordSnapshot:
    """Roles, the preflight, member roles and the managed role ids; a failure is a dg.Failure.

    A fixing run whose bot cannot manage a managed role stops at the preflight, before the
    member list is read (docs/behaviour.md §14); a dry run reports it; `fixing=None` (a
    verification, which changes nothing) skips it.
    """
    with discord.client() as client:
        try:
            roles = client.guild_roles()
            managed = resolve_managed_role_ids(roles, policy.managed_roles())
            problems = [] if fixing is None else _preflight(client, roles, discord, policy)
            if problems and fixing:
                raise dg.Failure(description=preflight_failure(problems), allow_retries=False)
            member_roles = client.guild_member_roles()
            return DiscordSnapshot(
                roles,
                member_roles,
                managed,
                int(getattr(client, "skipped_members", 0)),
                problems,
            )
        except RoleResolutionError as exc:
            raise dg.Failure(
                description=f"Discord roles cannot be matched, so no fix will be applied: {exc}"
            ) from None
        except DiscordError as exc:
            raise dg.Failure(
                description=f"Discord snapshot incomplete, so no fix will be applied: {exc}"
            ) from None


def _preflight(
    client: DiscordClient,
    roles: pd.DataFrame,
    discord: DiscordResource,
    policy: ReconciliationPolicyResource,
) -> list[CheckLine]:
    bot = str(client.current_user()["id"])
    held = set(client.member_role_ids(bot) or ())
    return role_management_problems(roles, held, discord.guild_id, policy.managed_roles())


def membership_snapshot(
    context: dg.AssetExecutionContext,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
):
    """Members, teams and access exceptions, read in one transaction so they agree."""
    refuse_past_day(context, policy.timezone)
    stamp = snapshot_stamper(membership_db)
    now = read_membership(membership_db)
    for frame in (now.members, now.teams, now.exceptions):
        stamp(frame)
    linked = int(now.members["discord_id"].notna().sum())
    yield dg.Output(
        now.members,
        output_name="membership_members",
        metadata={"dagster/row_count": len(now.members), "linked_to_discord": linked},
    )
    yield dg.Output(
        now.teams, output_name="membership_teams", metadata={"dagster/row_count": len(now.teams)}
    )
    yield dg.Output(
        now.exceptions,
        output_name="access_exceptions",
        metadata=exceptions_metadata(now.exceptions, context.partition_key),
    )


def stripe_subscriptions(
    context: dg.AssetExecutionContext,
    stripe: StripeResource,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
) -> dg.MaterializeResult:
    """Every Stripe subscription of every status (`status=all`), all pages."""
    refuse_past_day(context, policy.timezone)
    stamp = snapshot_stamper(membership_db)
    subscriptions, stats = read_stripe(stripe)
    stamp(subscriptions)
    return dg.MaterializeResult(
        value=subscriptions,
        metadata={
            **stats,
            "dagster/row_count": len(subscriptions),
            "customers": int(subscriptions["customer_id"].nunique()),
            "by_status": dg.MetadataValue.json(
                subscriptions["status"].value_counts().sort_index().to_dict()
            ),
        },
    )


def discord_snapshot(
    context: dg.AssetExecutionContext,
    discord: DiscordResource,
    membership_db: MembershipDbResource,
    policy: ReconciliationPolicyResource,
):
    """Roles and member roles; a managed role missing from the guild fails the snapshot."""
    refuse_past_day(context, policy.timezone)
    stamp = snapshot_stamper(membership_db)
    now = read_discord(discord, policy, fixing=launched_auto_fix(context.run, policy.auto_fix))
    for line in now.preflight:  # a dry run reports it and goes on; a fixing run stopped above
        context.log.warning(f"Preflight: {line}")
    stamp(now.roles)
    stamp(now.member_roles)
    if now.members_without_user:
        context.log.warning(
            f"Discord listed {now.members_without_user} member object(s) without a user; "
            "they are left out of the snapshot (their roles are neither read nor changed)"
        )
    yield dg.Output(
        now.roles,
        output_name="discord_roles",
        metadata={
            "dagster/row_count": len(now.roles),
            "preflight": dg.MetadataValue.json([line.to_json() for line in now.preflight]),
        },
    )
    yield dg.Output(
        now.member_roles,
        output_name="discord_member_roles",
        metadata={
            "dagster/row_count": len(now.member_roles),
            "accounts": int(now.member_roles[GuildMemberRoleCol.DISCORD_ID].nunique()),
            "managed_role_holders": count_role_holders(now.member_roles, set(now.managed)),
            "bots": int(_bots(now.member_roles)),
            "members_without_user": now.members_without_user,
        },
    )


def _multi_frame_snapshot(
    step: Callable[..., object], partitions: dg.PartitionsDefinition, kind: str, **frames: str
) -> dg.AssetsDefinition:
    """A snapshot step that stores frames read together (`frames`: name → description)."""
    outs = {
        name: dg.AssetOut(description=description, group_name=GROUP, kinds={kind})
        for name, description in frames.items()
    }
    return dg.multi_asset(
        outs=outs, partitions_def=partitions, can_subset=False, hooks={record_failed_run}
    )(step)


def build_snapshot_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The three snapshot steps on the configured day partitions."""
    return [
        _multi_frame_snapshot(
            membership_snapshot,
            partitions,
            "pandas",
            membership_members="Every `Member` row (the columns the policy reads).",
            membership_teams="Every `Team` row.",
            access_exceptions="Every access exception not removed (live or expired): accounts "
            "and members given a managed role without paying (`recon-pipeline exceptions`).",
        ),
        dg.asset(
            partitions_def=partitions, group_name=GROUP, kinds={"stripe"}, hooks={record_failed_run}
        )(stripe_subscriptions),
        _multi_frame_snapshot(
            discord_snapshot,
            partitions,
            "discord",
            discord_roles="The guild's roles (id, name, position, managed).",
            discord_member_roles="Each guild account and each role it holds (one row per pair; "
            "an account holding no role has one row with no role).",
        ),
    ]


def exceptions_metadata(exceptions: pd.DataFrame, day: str) -> dict[str, object]:
    """How many exceptions count today and when the next one lapses, for the asset's page."""
    live = live_exceptions(exceptions, day)
    expiring = live[ExceptionCol.EXPIRES_ON].dropna()
    return {
        "dagster/row_count": len(exceptions),
        "in_force": len(live),
        "next_expiry": str(expiring.min()) if len(expiring) else "none",
        "by_role": dg.MetadataValue.json(live[ExceptionCol.ROLE].value_counts().to_dict()),
    }


def _bots(member_roles: pd.DataFrame) -> int:
    bots = member_roles[member_roles[GuildMemberRoleCol.IS_BOT]]
    return bots[GuildMemberRoleCol.DISCORD_ID].nunique()
