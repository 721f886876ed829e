"""The embedded default: a demo community in a membership database and in both emulators.

`running_sandbox()` loads a community into the Stripe and Discord emulators, serves them on
loopback and gives the environment variables that point the real clients at them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.membership_db import init_database, member_table, team_table
from recon_pipeline.domain.columns import MemberCol, TeamCol
from recon_pipeline.sandbox.community import GUILD_ID, Community, synthetic_community
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline.sandbox.server import LoopbackServer
from recon_pipeline.sandbox.stripe_emulator import StripeEmulator

SANDBOX_STRIPE_KEY = "sk_test_sandbox"
SANDBOX_BOT_TOKEN = "sandbox-bot-token"
SANDBOX_ADMIN_CHANNEL_ID = "1100000000000000500"
DEMO_MEMBERS = 240
DEMO_SEED = 11


def demo_community() -> Community:
    """A small community in which every drift type occurs (checked by the tests)."""
    return synthetic_community(DEMO_MEMBERS, seed=DEMO_SEED, drift_rate=0.08)


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
