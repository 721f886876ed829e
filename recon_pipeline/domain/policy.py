"""The access policy (docs/behaviour.md §1) and the vocabulary shared by the engine and its
callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd

from recon_pipeline.domain.columns import GuildRoleCol, require_columns


class DriftType(StrEnum):
    MISSING_ACCESS = "MISSING_ACCESS"
    UNAUTHORIZED_ACCESS = "UNAUTHORIZED_ACCESS"
    ROLE_MISMATCH = "ROLE_MISMATCH"
    DEBTOR_MISMATCH = "DEBTOR_MISMATCH"
    ORPHANED_ACCESS = "ORPHANED_ACCESS"
    NOT_IN_GUILD = "NOT_IN_GUILD"
    STALE_DATABASE_STATUS = "STALE_DATABASE_STATUS"


class Severity(StrEnum):
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


class SubscriptionStatus(StrEnum):
    """The membership database's cached status enum (`"SubscriptionStatus"`)."""

    NONE = "NONE"
    TRIALING = "TRIALING"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    CANCELLED = "CANCELLED"


class SeatTier(StrEnum):
    """The membership database's seat tier enum (`"SeatTier"`)."""

    INDIVIDUAL = "INDIVIDUAL"
    OWNER = "OWNER"
    TEAM_MEMBER = "TEAM_MEMBER"


# docs/behaviour.md §1: the database check is fixed, whatever statuses grant access in Stripe.
DATABASE_GRANTING_STATUSES = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)

# Every status a Stripe subscription can have (API v1), in a fixed order for whoever lists them.
STRIPE_SUBSCRIPTION_STATUS_ORDER = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "paused",
)
STRIPE_SUBSCRIPTION_STATUSES = frozenset(STRIPE_SUBSCRIPTION_STATUS_ORDER)
DEFAULT_GRANTING_STATUSES = frozenset({"active", "trialing", "past_due"})

# What a STALE_DATABASE_STATUS fix writes; any other Stripe status becomes CANCELLED.
STRIPE_TO_DATABASE_STATUS = {
    "active": SubscriptionStatus.ACTIVE.value,
    "trialing": SubscriptionStatus.TRIALING.value,
    "past_due": SubscriptionStatus.PAST_DUE.value,
}


@dataclass(frozen=True)
class ManagedRoles:
    """Names of the four Discord roles this pipeline manages; every other role is left alone."""

    squire: str = "Squire"
    knight: str = "Knight"
    lord: str = "Lord"
    debtor: str = "Debtor"

    def names(self) -> tuple[str, str, str, str]:
        return (self.squire, self.knight, self.lord, self.debtor)

    def __post_init__(self) -> None:
        names = self.names()
        if any(not n or not n.strip() for n in names):
            raise ValueError("managed role names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"managed role names must be distinct, got {', '.join(names)}")


@dataclass(frozen=True)
class AccessPolicy:
    """Everything configurable that decides who should hold which role."""

    roles: ManagedRoles = field(default_factory=ManagedRoles)
    granting_statuses: frozenset[str] = DEFAULT_GRANTING_STATUSES
    exempt_discord_ids: frozenset[str] = frozenset()


class RoleResolutionError(ValueError):
    """The guild's roles do not let us tell which role is which managed role."""


def resolve_managed_role_ids(guild_roles: pd.DataFrame, roles: ManagedRoles) -> dict[str, str]:
    """Map each managed role's Discord id to its managed name.

    Raises `RoleResolutionError` naming the role when a managed role is missing from the guild or
    when its name matches several roles: either way the snapshot cannot say who holds it.
    """
    require_columns(guild_roles, GuildRoleCol.ALL, "guild roles")
    ids_by_name = guild_roles.groupby(GuildRoleCol.NAME, sort=False)[GuildRoleCol.ID].agg(list)
    problems = []
    resolved: dict[str, str] = {}
    for name in roles.names():
        ids = ids_by_name.get(name, [])
        if not ids:
            problems.append(f"managed role {name!r} does not exist in the guild")
        elif len(ids) > 1:
            problems.append(
                f"managed role {name!r} matches {len(ids)} guild roles "
                f"({', '.join(map(str, ids))}); rename the extra ones"
            )
        else:
            resolved[str(ids[0])] = name
    if problems:
        raise RoleResolutionError("; ".join(problems))
    return resolved
