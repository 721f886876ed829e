"""Whether a day's snapshots are plausible enough to act on.

A snapshot that "succeeded" can still be empty for the wrong reason (a bot that lost the
members intent on a new server, a Stripe key of another account). Acting on it would remove
everyone's roles, so an empty side facing a paying other side stops the fixes.
"""

from __future__ import annotations

import pandas as pd

from recon_pipeline.domain.columns import GuildMemberRoleCol, MemberCol, SubscriptionCol, TeamCol
from recon_pipeline.domain.policy import DATABASE_GRANTING_STATUSES


def snapshot_problems(
    members: pd.DataFrame,
    teams: pd.DataFrame,
    subscriptions: pd.DataFrame,
    guild_member_roles: pd.DataFrame,
) -> list[str]:
    """Reasons the snapshots look incomplete; empty when they look whole."""
    problems = []
    paying_members = members[MemberCol.SUBSCRIPTION_STATUS].isin(list(DATABASE_GRANTING_STATUSES))
    paying_teams = teams[TeamCol.SUBSCRIPTION_STATUS].isin(list(DATABASE_GRANTING_STATUSES))
    paying = int(paying_members.sum() + paying_teams.sum())
    if subscriptions[SubscriptionCol.ID].empty and paying:
        problems.append(
            f"Stripe returned no subscriptions at all, but the database has {paying} paying "
            "member(s) or team(s): is STRIPE_SECRET_KEY the community's account?"
        )
    humans = guild_member_roles.loc[~guild_member_roles[GuildMemberRoleCol.IS_BOT].astype(bool)]
    linked_paying = int((paying_members & members[MemberCol.DISCORD_ID].notna()).sum())
    if humans[GuildMemberRoleCol.DISCORD_ID].nunique() == 0 and linked_paying:
        problems.append(
            "the Discord snapshot has no member accounts, but the database has "
            f"{linked_paying} paying member(s) with a Discord id: is DISCORD_GUILD_ID the "
            "community's server?"
        )
    return problems
