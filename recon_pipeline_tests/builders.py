"""Tiny builders for snapshot frames, so a test states only what matters to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recon_pipeline.domain.columns import (
    ExceptionCol,
    GuildMemberRoleCol,
    GuildRoleCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
)
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.policy import AccessPolicy

ROLE_IDS = {
    "Squire": "9001",
    "Knight": "9002",
    "Lord": "9003",
    "Debtor": "9004",
    "Moderator": "9100",  # unmanaged
    "Events": "9101",  # unmanaged
}


def member(
    member_id: str = "m1",
    *,
    discord_id: str | None = "1001",
    customer: str | None = "cus_1",
    status: str = "ACTIVE",
    tier: str | None = "INDIVIDUAL",
    intro: bool = True,
    team: str | None = None,
    debtor: bool = False,
    email: str | None = None,
) -> dict[str, Any]:
    return {
        MemberCol.ID: member_id,
        MemberCol.DISCORD_ID: discord_id,
        MemberCol.STRIPE_CUSTOMER_ID: customer,
        MemberCol.EMAIL: email or f"{member_id}@example.org",
        MemberCol.SUBSCRIPTION_STATUS: status,
        MemberCol.SEAT_TIER: tier,
        MemberCol.INTRO_COMPLETED: intro,
        MemberCol.TEAM_ID: team,
        MemberCol.IS_IN_DEBTOR_STATE: debtor,
    }


def team(
    team_id: str = "t1", *, name: str = "Acme", customer: str = "cus_t1", status: str = "ACTIVE"
) -> dict[str, Any]:
    return {
        TeamCol.ID: team_id,
        TeamCol.NAME: name,
        TeamCol.STRIPE_CUSTOMER_ID: customer,
        TeamCol.STRIPE_SUBSCRIPTION_ID: None,
        TeamCol.SUBSCRIPTION_STATUS: status,
    }


_sub_counter = iter(range(10**9))


def sub(
    customer: str = "cus_1",
    status: str = "active",
    *,
    created: int = 1_700_000_000,
    sub_id: str | None = None,
) -> dict[str, Any]:
    return {
        SubscriptionCol.ID: sub_id or f"sub_{next(_sub_counter):06d}",
        SubscriptionCol.CUSTOMER_ID: customer,
        SubscriptionCol.STATUS: status,
        SubscriptionCol.CREATED: created,
    }


def account(discord_id: str = "1001", *roles: str, bot: bool = False) -> list[dict[str, Any]]:
    """A guild account's rows: one per role (names from ROLE_IDS), or one with no role."""
    role_ids = [ROLE_IDS[name] for name in roles] or [None]
    return [
        {
            GuildMemberRoleCol.DISCORD_ID: discord_id,
            GuildMemberRoleCol.IS_BOT: bot,
            GuildMemberRoleCol.ROLE_ID: role_id,
        }
        for role_id in role_ids
    ]


def guild_roles(**renamed: str) -> pd.DataFrame:
    """The guild's roles; `renamed` maps a default name to the name the guild uses."""
    return pd.DataFrame(
        {
            GuildRoleCol.ID: list(ROLE_IDS.values()),
            GuildRoleCol.NAME: [renamed.get(name, name) for name in ROLE_IDS],
        },
        dtype="str",
    )


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    bool_columns = {
        MemberCol.INTRO_COMPLETED,
        MemberCol.IS_IN_DEBTOR_STATE,
        GuildMemberRoleCol.IS_BOT,
    }
    return frame.astype(
        {
            c: ("bool" if c in bool_columns else "int64" if c == SubscriptionCol.CREATED else "str")
            for c in columns
        }
    )


@dataclass
class Snapshot:
    """The engine's inputs, built from rows."""

    members: list[dict[str, Any]] = field(default_factory=list)
    teams: list[dict[str, Any]] = field(default_factory=list)
    subs: list[dict[str, Any]] = field(default_factory=list)
    guild: list[dict[str, Any]] = field(default_factory=list)
    roles: pd.DataFrame = field(default_factory=guild_roles)
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # all live, as given

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            "members": _frame(self.members, MemberCol.ALL),
            "teams": _frame(self.teams, TeamCol.ALL),
            "subscriptions": _frame(self.subs, SubscriptionCol.ALL),
            "guild_member_roles": _frame(self.guild, GuildMemberRoleCol.ALL),
            "guild_roles": self.roles,
            "exceptions": pd.DataFrame(
                self.exceptions, columns=list(ExceptionCol.ALL), dtype="str"
            ),
        }

    def drift(self, policy: AccessPolicy | None = None) -> pd.DataFrame:
        return find_drift_issues(**self.frames(), policy=policy or AccessPolicy())


def comped(
    exception_id: int,
    *,
    discord_id: str | None = None,
    member_id: str | None = None,
    role: str = "lord",
    expires_on: str | None = None,
    reason: str = "staff",
) -> dict[str, Any]:
    """An access exception's row."""
    return {
        ExceptionCol.ID: str(exception_id),
        ExceptionCol.DISCORD_ID: discord_id,
        ExceptionCol.MEMBER_ID: member_id,
        ExceptionCol.ROLE: role,
        ExceptionCol.REASON: reason,
        ExceptionCol.ADDED_BY: "admin",
        ExceptionCol.ADDED_AT: "2026-11-01T09:00:00",
        ExceptionCol.EXPIRES_ON: expires_on,
    }


def guild(*accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for rows in accounts for row in rows]
