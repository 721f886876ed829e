"""Access exceptions (docs/behaviour.md §1): accounts given a managed role without paying.

An exception names a Discord account or a member, the managed role it gives (squire, knight or
lord), why, who added it and, optionally, the last day it counts. The drift engine reads the
exceptions live on the day it checks; the notice names the ones that lapsed since the previous
run. Dates are the local calendar days of the partitions (ISO strings compare as dates).
"""

from __future__ import annotations

import pandas as pd

from recon_pipeline.domain.columns import ExceptionCol
from recon_pipeline.domain.policy import ManagedRoles

EXCEPTION_ROLES = ("squire", "knight", "lord")  # Debtor marks debt; an exception gives access


def empty_exceptions() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype="str") for col in ExceptionCol.ALL})


def live_exceptions(exceptions: pd.DataFrame, day: str) -> pd.DataFrame:
    """The exceptions that count on `day`: no expiry, or expiring on `day` or later."""
    expires = exceptions[ExceptionCol.EXPIRES_ON]
    return exceptions[expires.isna() | (expires.astype("str") >= day)]


def lapsed_since(
    exceptions: pd.DataFrame, previous: pd.DataFrame | None, previous_day: str | None, day: str
) -> pd.DataFrame:
    """Exceptions that counted in the previous run (`previous`, its snapshot, on its day) and
    have expired by `day`; a removed one is not listed (it is gone from `exceptions`)."""
    if previous is None or previous_day is None:
        return exceptions.iloc[0:0]
    counted = set(live_exceptions(previous, previous_day)[ExceptionCol.ID].astype("str"))
    ids = exceptions[ExceptionCol.ID].astype("str")
    still = set(live_exceptions(exceptions, day)[ExceptionCol.ID].astype("str"))
    return exceptions[ids.isin(counted).to_numpy() & ~ids.isin(still).to_numpy()]


def role_name(kind: str, roles: ManagedRoles) -> str:
    """The configured name of the managed role an exception gives."""
    return getattr(roles, kind)


def describe_exception(row: dict[str, object], roles: ManagedRoles) -> str:
    """One line for a notice or a listing: id, subject, role, reason, expiry."""

    def given(col: str) -> bool:
        value = row.get(col)
        return value is not None and not pd.isna(value) and value != ""

    subject = (
        f"Discord account {row[ExceptionCol.DISCORD_ID]}"
        if given(ExceptionCol.DISCORD_ID)
        else f"member {row[ExceptionCol.MEMBER_ID]}"
    )
    until = f" until {row[ExceptionCol.EXPIRES_ON]}" if given(ExceptionCol.EXPIRES_ON) else ""
    return (
        f"#{row[ExceptionCol.ID]} {subject}: {role_name(str(row[ExceptionCol.ROLE]), roles)}"
        f"{until} ({row[ExceptionCol.REASON]})"
    )
