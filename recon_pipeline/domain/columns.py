"""Canonical column names of the snapshot frames and of the drift issue table.

Every module that builds or reads one of these frames uses the names here, never bare strings,
so a rename is one edit and a missing column is caught by `require_columns` with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


class MemberCol:
    """The membership database's `"Member"` rows, one per member."""

    ID = "id"
    DISCORD_ID = "discord_id"
    STRIPE_CUSTOMER_ID = "stripe_customer_id"
    EMAIL = "email"
    SUBSCRIPTION_STATUS = "subscription_status"
    SEAT_TIER = "seat_tier"
    INTRO_COMPLETED = "intro_completed"
    TEAM_ID = "team_id"
    IS_IN_DEBTOR_STATE = "is_in_debtor_state"

    ALL = (
        ID,
        DISCORD_ID,
        STRIPE_CUSTOMER_ID,
        EMAIL,
        SUBSCRIPTION_STATUS,
        SEAT_TIER,
        INTRO_COMPLETED,
        TEAM_ID,
        IS_IN_DEBTOR_STATE,
    )


class TeamCol:
    """The membership database's `"Team"` rows."""

    ID = "id"
    NAME = "name"
    STRIPE_CUSTOMER_ID = "stripe_customer_id"
    STRIPE_SUBSCRIPTION_ID = "stripe_subscription_id"
    SUBSCRIPTION_STATUS = "subscription_status"

    ALL = (ID, NAME, STRIPE_CUSTOMER_ID, STRIPE_SUBSCRIPTION_ID, SUBSCRIPTION_STATUS)


class SubscriptionCol:
    """Stripe subscriptions (every status), one row per subscription."""

    ID = "id"
    CUSTOMER_ID = "customer_id"
    STATUS = "status"
    CREATED = "created"  # unix seconds

    ALL = (ID, CUSTOMER_ID, STATUS, CREATED)


class GuildMemberRoleCol:
    """Discord guild members in long form: one row per (account, role) it holds.

    An account that holds no role at all still has one row, with `role_id` missing, so the frame
    also says who is in the guild.
    """

    DISCORD_ID = "discord_id"
    IS_BOT = "is_bot"
    ROLE_ID = "role_id"

    ALL = (DISCORD_ID, IS_BOT, ROLE_ID)


class GuildRoleCol:
    """The guild's roles (all of them, managed by this pipeline or not)."""

    ID = "id"
    NAME = "name"

    ALL = (ID, NAME)


class ExceptionCol:
    """Access exceptions: a Discord account or a member given a managed role without paying."""

    ID = "id"
    DISCORD_ID = "discord_id"  # one of the two subjects is set
    MEMBER_ID = "member_id"
    ROLE = "role"  # squire, knight or lord: the managed role it gives (not the role's name)
    REASON = "reason"
    ADDED_BY = "added_by"
    ADDED_AT = "added_at"  # UTC, ISO 8601
    EXPIRES_ON = "expires_on"  # ISO date, the last day it counts; empty: no expiry

    ALL = (ID, DISCORD_ID, MEMBER_ID, ROLE, REASON, ADDED_BY, ADDED_AT, EXPIRES_ON)


class IssueCol:
    """The drift issue table: one row per issue.

    The first eight are the original app's issue keys (in snake case); the rest say exactly what
    a fix would do and give context for reports.
    """

    TYPE = "type"
    MEMBER_ID = "member_id"
    DISCORD_ID = "discord_id"
    DESCRIPTION = "description"
    STRIPE_STATUS = "stripe_status"
    DATABASE_STATUS = "database_status"
    DISCORD_ROLES = "discord_roles"  # tuple of managed role names held, sorted
    SEVERITY = "severity"
    TEAM_ID = "team_id"
    TEAM_NAME = "team_name"
    EXPECTED_ROLE = "expected_role"
    ROLES_TO_ADD = "roles_to_add"  # tuple of role names, sorted
    ROLES_TO_REMOVE = "roles_to_remove"  # tuple of role names, sorted
    STATUS_FIX = "status_fix"  # the value a STALE_DATABASE_STATUS fix writes
    FIX_WITHHELD = "fix_withheld"  # why bad data withholds the fix; empty when nothing does
    ACCESS_EXCEPTION = "access_exception"  # id of the exception behind the expected role
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # why a removal waits; empty when it doesn't
    FINGERPRINT = "fingerprint"  # the same for the same account, type and wanted change
    FIRST_SEEN = "first_seen"  # when a run first saw it (its snapshots' time, UTC ISO 8601)
    ISSUE_STATUS = "issue_status"  # new (the previous complete run did not find it) or persisting

    ALL = (
        TYPE,
        SEVERITY,
        MEMBER_ID,
        TEAM_ID,
        DISCORD_ID,
        DESCRIPTION,
        STRIPE_STATUS,
        DATABASE_STATUS,
        DISCORD_ROLES,
        EXPECTED_ROLE,
        ROLES_TO_ADD,
        ROLES_TO_REMOVE,
        STATUS_FIX,
        TEAM_NAME,
        FIX_WITHHELD,
        ACCESS_EXCEPTION,
        AWAITING_CONFIRMATION,
        FINGERPRINT,
        FIRST_SEEN,
        ISSUE_STATUS,
    )


class MissingColumnsError(ValueError):
    """A frame handed to the domain lacks columns it needs."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], frame_name: str) -> None:
    """Raise `MissingColumnsError` naming the frame and every absent column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnsError(
            f"{frame_name} frame is missing column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns)) or 'no columns'}"
        )
