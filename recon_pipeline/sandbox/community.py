"""Synthetic communities: the four snapshot frames of a plausible paid community, at any size.

Built with numpy in whole columns so that a million-member community takes seconds. Most members
are in order; a few percent drift in each way the engine detects, so every drift type occurs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recon_pipeline.domain.columns import (
    GuildMemberRoleCol,
    GuildRoleCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
)
from recon_pipeline.domain.policy import ManagedRoles

GUILD_ID = "1100000000000000000"
ROLE_IDS = {
    "Squire": "1100000000000000001",
    "Knight": "1100000000000000002",
    "Lord": "1100000000000000003",
    "Debtor": "1100000000000000004",
    "Moderator": "1100000000000000010",  # unmanaged: never touched
    "Events": "1100000000000000011",  # unmanaged
}
_STRIPE_STATUSES = np.array(
    ["active", "trialing", "past_due", "canceled", "unpaid", "incomplete", "paused"]
)
_STATUS_WEIGHTS = np.array([0.72, 0.05, 0.04, 0.13, 0.02, 0.02, 0.02])
_DB_STATUS = {
    "active": "ACTIVE",
    "trialing": "TRIALING",
    "past_due": "PAST_DUE",
}
_BASE_SNOWFLAKE = 200_000_000_000_000_000
_CREATED_BASE = 1_700_000_000


@dataclass(frozen=True)
class Community:
    """The snapshot frames the drift engine reads."""

    members: pd.DataFrame
    teams: pd.DataFrame
    subscriptions: pd.DataFrame
    guild_member_roles: pd.DataFrame
    guild_roles: pd.DataFrame


def guild_roles_frame(roles: ManagedRoles | None = None) -> pd.DataFrame:
    """The synthetic guild's roles, the managed ones named as `roles` says."""
    roles = roles or ManagedRoles()
    rename = dict(zip(("Squire", "Knight", "Lord", "Debtor"), roles.names(), strict=True))
    return pd.DataFrame(
        {
            GuildRoleCol.ID: list(ROLE_IDS.values()),
            GuildRoleCol.NAME: [rename.get(name, name) for name in ROLE_IDS],
        },
        dtype="str",
    )


def synthetic_community(n_members: int, *, seed: int = 0, drift_rate: float = 0.03) -> Community:
    """Build a community of `n_members` members.

    Args:
        n_members: how many `"Member"` rows.
        seed: random seed; the same seed gives the same community.
        drift_rate: rough share of members whose Discord roles or cached status drift.
    """
    rng = np.random.default_rng(seed)
    n = n_members
    idx = np.arange(n)
    member_ids = _ids("mem_", idx)
    linked = rng.random(n) < 0.92
    discord_ids = np.where(linked, (_BASE_SNOWFLAKE + idx * 7).astype(str), None)

    # About 15% of members sit in teams of 2-10 seats; the first seat of a team is its owner.
    in_team = rng.random(n) < 0.15
    team_slots = np.flatnonzero(in_team)
    team_of_slot = np.cumsum(rng.random(len(team_slots)) < 1 / 6) if len(team_slots) else team_slots
    n_teams = int(team_of_slot.max()) + 1 if len(team_slots) else 0
    team_index = np.full(n, -1)
    team_index[team_slots] = team_of_slot
    team_ids = _ids("team_", np.arange(n_teams))
    owner = np.zeros(n, dtype=bool)
    if len(team_slots):
        first_of_team = np.r_[True, team_of_slot[1:] != team_of_slot[:-1]]
        owner[team_slots[first_of_team]] = True
    # A few members point at a team that no longer exists.
    dangling = in_team & (rng.random(n) < 0.01)
    member_team = np.where(
        in_team,
        np.array(team_ids, dtype=object)[np.maximum(team_index, 0)] if n_teams else None,
        None,
    )
    member_team = np.where(dangling, "team_deleted", member_team)

    # Customers: each solo member its own, each team one; a few solo members never paid.
    has_customer = ~in_team & (rng.random(n) < 0.9) | dangling
    member_customer = np.where(has_customer, _ids("cus_m", idx), None)
    team_customer = _ids("cus_t", np.arange(n_teams))

    customers = np.concatenate([member_customer[has_customer], team_customer]).astype(object)
    subs_per_customer = 1 + (rng.random(len(customers)) < 0.1)
    sub_customer = np.repeat(customers, subs_per_customer)
    n_subs = len(sub_customer)
    sub_status = rng.choice(_STRIPE_STATUSES, size=n_subs, p=_STATUS_WEIGHTS)
    subscriptions = pd.DataFrame(
        {
            SubscriptionCol.ID: _ids("sub_", np.arange(n_subs)),
            SubscriptionCol.CUSTOMER_ID: sub_customer,
            SubscriptionCol.STATUS: sub_status,
            SubscriptionCol.CREATED: _CREATED_BASE + rng.integers(0, 60_000_000, size=n_subs),
        }
    ).astype(
        {
            SubscriptionCol.ID: "str",
            SubscriptionCol.CUSTOMER_ID: "str",
            SubscriptionCol.STATUS: "str",
        }
    )

    # What Stripe grants, per customer (any granting subscription), to derive honest caches.
    granting = (
        pd.Series(np.isin(sub_status, ["active", "trialing", "past_due"]))
        .groupby(sub_customer)
        .any()
    )
    first_status = pd.Series(sub_status, index=sub_customer).groupby(level=0).last()
    cached = first_status.map(lambda s: _DB_STATUS.get(s, "CANCELLED")).where(
        granting.reindex(first_status.index), "CANCELLED"
    )
    member_status = pd.Series(member_customer).map(cached).fillna("NONE").to_numpy()
    team_status = pd.Series(team_customer, dtype=object).map(cached).fillna("NONE").to_numpy()
    # Drift in the cached status columns.
    flip = rng.random(n) < drift_rate / 3
    member_status = np.where(
        flip, np.where(member_status == "ACTIVE", "CANCELLED", "ACTIVE"), member_status
    )

    tier = np.where(in_team & ~dangling, np.where(owner, "OWNER", "TEAM_MEMBER"), "INDIVIDUAL")
    tier = np.where(rng.random(n) < 0.02, None, tier)
    intro = rng.random(n) < 0.95
    debtor = rng.random(n) < 0.01

    members = pd.DataFrame(
        {
            MemberCol.ID: member_ids,
            MemberCol.DISCORD_ID: discord_ids,
            MemberCol.STRIPE_CUSTOMER_ID: member_customer,
            MemberCol.EMAIL: [f"member{i}@example.org" for i in range(n)],
            MemberCol.SUBSCRIPTION_STATUS: member_status,
            MemberCol.SEAT_TIER: tier,
            MemberCol.INTRO_COMPLETED: intro,
            MemberCol.TEAM_ID: member_team,
            MemberCol.IS_IN_DEBTOR_STATE: debtor,
        }
    ).astype(
        {
            c: "str"
            for c in (
                MemberCol.ID,
                MemberCol.DISCORD_ID,
                MemberCol.STRIPE_CUSTOMER_ID,
                MemberCol.EMAIL,
                MemberCol.SUBSCRIPTION_STATUS,
                MemberCol.SEAT_TIER,
                MemberCol.TEAM_ID,
            )
        }
    )
    teams = pd.DataFrame(
        {
            TeamCol.ID: team_ids,
            TeamCol.NAME: [f"Team {i}" for i in range(n_teams)],
            TeamCol.STRIPE_CUSTOMER_ID: team_customer,
            TeamCol.STRIPE_SUBSCRIPTION_ID: None,
            TeamCol.SUBSCRIPTION_STATUS: team_status,
        }
    ).astype("str")

    # Discord: the role each member should hold, then drift.
    billing = np.where(
        in_team & ~dangling,
        np.array(team_customer, dtype=object)[np.maximum(team_index, 0)] if n_teams else None,
        member_customer,
    )
    entitled = pd.Series(billing).map(granting).fillna(False).astype(bool).to_numpy()
    role = np.select(
        [debtor, ~entitled, ~intro, np.isin(tier, ["OWNER", "INDIVIDUAL"])],
        ["Debtor", "", "Squire", "Lord"],
        default="Knight",
    )
    drift = rng.random(n)
    managed = np.array(["Squire", "Knight", "Lord", "Debtor"])
    role = np.where(drift < drift_rate, rng.choice(managed, size=n), role)  # wrong role
    role = np.where(drift > 1 - drift_rate / 2, "", role)  # role missing
    in_guild = linked & (rng.random(n) < 0.97)
    extra_unmanaged = rng.random(n) < 0.3

    guild_ids = discord_ids[in_guild]
    managed_role = role[in_guild]
    role_id_of = np.vectorize(lambda name: ROLE_IDS.get(name), otypes=[object])
    rows_ids = [guild_ids, guild_ids[extra_unmanaged[in_guild]]]
    rows_roles = [
        role_id_of(managed_role),
        np.full(int(extra_unmanaged[in_guild].sum()), ROLE_IDS["Events"], dtype=object),
    ]
    # Accounts with no member record: most hold nothing, some a managed role, some are bots.
    n_strangers = max(1, n // 50)
    strangers = (_BASE_SNOWFLAKE + 7 * n + 3 + np.arange(n_strangers) * 7).astype(str)
    stranger_role = np.where(
        rng.random(n_strangers) < 0.2,
        rng.choice(list(ROLE_IDS.values())[:4], size=n_strangers),
        None,
    )
    rows_ids.append(strangers)
    rows_roles.append(stranger_role)
    guild_ids_all = np.concatenate(rows_ids)
    bots = np.zeros(len(guild_ids_all), dtype=bool)
    bots[-n_strangers:] = rng.random(n_strangers) < 0.05
    guild_member_roles = pd.DataFrame(
        {
            GuildMemberRoleCol.DISCORD_ID: guild_ids_all,
            GuildMemberRoleCol.IS_BOT: bots,
            GuildMemberRoleCol.ROLE_ID: np.concatenate(rows_roles),
        }
    ).astype({GuildMemberRoleCol.DISCORD_ID: "str", GuildMemberRoleCol.ROLE_ID: "str"})
    return Community(members, teams, subscriptions, guild_member_roles, guild_roles_frame())


def _ids(prefix: str, numbers: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(numbers.astype(str), 7)).astype(object)
