"""The embedded default: a demo community in a membership database and in both emulators.

`running_sandbox()` loads a community into the Stripe and Discord emulators, serves them on
loopback and gives the environment variables that point the real clients at them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.access_exceptions import NewException, add_exception
from recon_pipeline.clients.membership_db import init_database, member_table, team_table
from recon_pipeline.domain.columns import GuildMemberRoleCol, MemberCol, SubscriptionCol, TeamCol
from recon_pipeline.domain.policy import ManagedRoles
from recon_pipeline.sandbox.community import GUILD_ID, ROLE_IDS, Community, synthetic_community
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline.sandbox.server import LoopbackServer
from recon_pipeline.sandbox.stripe_emulator import StripeEmulator

SANDBOX_STRIPE_KEY = "sk_test_sandbox"
SANDBOX_BOT_TOKEN = "sandbox-bot-token"
SANDBOX_ADMIN_CHANNEL_ID = "1100000000000000500"
DEMO_MEMBERS = 240
DEMO_SEED = 11


# Two comped accounts: a community manager with a member record and no subscription, and a
# sponsor's account with no member record; each holds the role its access exception gives.
COMPED_MEMBER_ID = "mem_comped_staff"
COMPED_STAFF_DISCORD_ID = "1190000000000000001"
COMPED_SPONSOR_DISCORD_ID = "1190000000000000002"
DEMO_EXCEPTIONS = (
    NewException(
        discord_id=None,
        member_id=COMPED_MEMBER_ID,
        role="lord",
        reason="staff: community manager",
        added_by="demo",
    ),
    NewException(
        discord_id=COMPED_SPONSOR_DISCORD_ID,
        member_id=None,
        role="knight",
        reason="sponsor: Acme Corp",
        added_by="demo",
    ),
)


def demo_community() -> Community:
    """A small community in which every drift type occurs (checked by the tests), with two
    comped accounts."""
    community = synthetic_community(DEMO_MEMBERS, seed=DEMO_SEED, drift_rate=0.08)
    staff = {
        MemberCol.ID: COMPED_MEMBER_ID,
        MemberCol.DISCORD_ID: COMPED_STAFF_DISCORD_ID,
        MemberCol.STRIPE_CUSTOMER_ID: None,
        MemberCol.EMAIL: "manager@example.org",
        MemberCol.SUBSCRIPTION_STATUS: "NONE",
        MemberCol.SEAT_TIER: "INDIVIDUAL",
        MemberCol.INTRO_COMPLETED: True,
        MemberCol.TEAM_ID: None,
        MemberCol.IS_IN_DEBTOR_STATE: False,
    }
    accounts = [
        (COMPED_STAFF_DISCORD_ID, ROLE_IDS["Lord"]),
        (COMPED_SPONSOR_DISCORD_ID, ROLE_IDS["Knight"]),
    ]
    held = pd.DataFrame(
        [
            {GuildMemberRoleCol.DISCORD_ID: d, GuildMemberRoleCol.IS_BOT: False,
             GuildMemberRoleCol.ROLE_ID: r}
            for d, r in accounts
        ]
    )  # fmt: skip
    return dataclasses.replace(
        community,
        members=pd.concat(
            [community.members, pd.DataFrame([staff]).astype(community.members.dtypes)],
            ignore_index=True,
        ),
        guild_member_roles=pd.concat(
            [community.guild_member_roles, held.astype(community.guild_member_roles.dtypes)],
            ignore_index=True,
        ),
    )


def seed_demo_exceptions(engine: sa.Engine, today: str) -> list[int]:
    """The comped accounts' access exceptions; their ids."""
    return [add_exception(engine, e, roles=ManagedRoles(), today=today) for e in DEMO_EXCEPTIONS]


def cancel_a_paying_member(sandbox: Sandbox, engine: sa.Engine, community: Community) -> str:
    """Cancel the subscription of a member in good standing, in Stripe and (as the app's webhook
    would) in the database; the member's id. Their roles are left: the next run finds a removal
    it has not seen before."""
    subs = community.subscriptions
    per_customer = subs.groupby(SubscriptionCol.CUSTOMER_ID)[SubscriptionCol.ID].transform("size")
    single_active = subs[(subs[SubscriptionCol.STATUS] == "active") & (per_customer == 1)]
    members = community.members
    candidates = members[
        members[MemberCol.TEAM_ID].isna()
        & members[MemberCol.DISCORD_ID].notna()
        & (members[MemberCol.SUBSCRIPTION_STATUS] == "ACTIVE")
        & ~members[MemberCol.IS_IN_DEBTOR_STATE].astype(bool)
        & members[MemberCol.STRIPE_CUSTOMER_ID].isin(single_active[SubscriptionCol.CUSTOMER_ID])
    ].sort_values(MemberCol.ID)
    holders = set(community.guild_member_roles[GuildMemberRoleCol.DISCORD_ID])
    chosen = candidates[candidates[MemberCol.DISCORD_ID].isin(holders)].iloc[0]
    customer = chosen[MemberCol.STRIPE_CUSTOMER_ID]
    sub_id = single_active.loc[single_active[SubscriptionCol.CUSTOMER_ID] == customer].iloc[0]
    sandbox.stripe.set_status(str(sub_id[SubscriptionCol.ID]), "canceled")
    with engine.begin() as conn:
        conn.execute(
            member_table.update()
            .where(member_table.c.id == chosen[MemberCol.ID])
            .values(subscriptionStatus="CANCELLED")
        )
    return str(chosen[MemberCol.ID])


def seed_membership_db(engine: sa.Engine, community: Community) -> None:
    """Create the app's tables if needed and replace their members and teams with `community`'s."""
    init_database(engine)
    members = _rows(community.members, _MEMBER_COLUMNS)
    teams = _rows(community.teams, _TEAM_COLUMNS)
    with engine.begin() as conn:
        conn.execute(sa.delete(member_table))
        conn.execute(sa.delete(team_table))
        if teams:
            conn.execute(team_table.insert(), teams)
        if members:
            conn.execute(member_table.insert(), members)


_MEMBER_COLUMNS = {
    MemberCol.ID: "id",
    MemberCol.DISCORD_ID: "discordId",
    MemberCol.STRIPE_CUSTOMER_ID: "stripeCustomerId",
    MemberCol.EMAIL: "email",
    MemberCol.SUBSCRIPTION_STATUS: "subscriptionStatus",
    MemberCol.SEAT_TIER: "seatTier",
    MemberCol.INTRO_COMPLETED: "introCompleted",
    MemberCol.TEAM_ID: "teamId",
    MemberCol.IS_IN_DEBTOR_STATE: "isInDebtorState",
}
_TEAM_COLUMNS = {
    TeamCol.ID: "id",
    TeamCol.NAME: "name",
    TeamCol.STRIPE_CUSTOMER_ID: "stripeCustomerId",
    TeamCol.STRIPE_SUBSCRIPTION_ID: "stripeSubscriptionId",
    TeamCol.SUBSCRIPTION_STATUS: "subscriptionStatus",
}


def _rows(frame: pd.DataFrame, columns: dict[str, str]) -> list[dict[str, object]]:
    picked = frame[list(columns)].rename(columns=columns).astype(object)
    return picked.where(picked.notna(), None).to_dict("records")


@dataclass
class Sandbox:
    """Both emulators, serving on loopback."""

    stripe: StripeEmulator
    discord: DiscordEmulator
    stripe_url: str
    discord_url: str

    def env(self) -> dict[str, str]:
        """The variables that point the pipeline at this sandbox."""
        return {
            "STRIPE_SECRET_KEY": SANDBOX_STRIPE_KEY,
            "STRIPE_API_BASE": self.stripe_url,
            "DISCORD_BOT_TOKEN": SANDBOX_BOT_TOKEN,
            "DISCORD_GUILD_ID": GUILD_ID,
            "DISCORD_API_BASE": f"{self.discord_url}/api/v10",
            "DISCORD_ADMIN_CHANNEL_ID": SANDBOX_ADMIN_CHANNEL_ID,
        }


def build_emulators(
    community: Community, **discord_options: object
) -> tuple[StripeEmulator, DiscordEmulator]:
    stripe = StripeEmulator(api_keys=(SANDBOX_STRIPE_KEY,))
    stripe.load_frame(community.subscriptions)
    discord = DiscordEmulator(bot_token=SANDBOX_BOT_TOKEN, guild_id=GUILD_ID, **discord_options)
    discord.load_frames(community.guild_member_roles, community.guild_roles)
    discord.add_channel(SANDBOX_ADMIN_CHANNEL_ID)
    return stripe, discord


@contextmanager
def running_sandbox(
    community: Community,
    *,
    stripe_port: int | None = None,
    discord_port: int | None = None,
    **discord_options: object,
) -> Iterator[Sandbox]:
    """Serve emulators loaded with `community` while the block runs."""
    stripe, discord = build_emulators(community, **discord_options)
    with ExitStack() as stack:
        stripe_server = stack.enter_context(LoopbackServer(stripe.app, port=stripe_port))
        discord_server = stack.enter_context(LoopbackServer(discord.app, port=discord_port))
        yield Sandbox(stripe, discord, stripe_server.url, discord_server.url)
