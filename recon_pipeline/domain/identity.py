"""Issue identity (docs/behaviour.md §2): which of today's issues is the same as yesterday's.

Two runs' issues are the same when the account, the type and the wanted change agree: the
Discord account as Discord compares ids (the member, for an id no account can have; the member
or team whose column is written, for a stale status), the expected role, the roles to add, the
roles to remove and the status to write. The fingerprint is a short hash of that key, stable
across runs, versions and databases.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import pandas as pd

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.drift import discord_id_keys
from recon_pipeline.domain.policy import DriftType


def account_keys(issues: pd.DataFrame) -> pd.Series:
    """Whose each issue is, as text, for `issue_keys` and `confirmation.removal_keys` alike: the
    Discord id as Discord compares it; `member:<id>` for an id no account can have (so two such
    members stay apart); for a stale status the member or team whose column is written
    (`member:<id>`, else `team:<id>`). Empty when none is known."""
    discord = pd.Series(discord_id_keys(issues[IssueCol.DISCORD_ID]), index=issues.index)
    member = "member:" + issues[IssueCol.MEMBER_ID].astype("str")
    account = discord.astype("str").where(discord != 0, member)
    stale = issues[IssueCol.TYPE] == DriftType.STALE_DATABASE_STATUS
    status_subject = member.fillna("team:" + issues[IssueCol.TEAM_ID].astype("str"))
    return account.where(~stale, status_subject).fillna("").astype("str")


def issue_keys(issues: pd.DataFrame) -> pd.Series:
    """Each issue's identity as readable text: type|account|expected|added|removed|status (the
    expected role tells apart report-only issues, which plan no change)."""
    return (
        issues[IssueCol.TYPE].astype("str")
        + "|"
        + account_keys(issues)
        + "|"
        + issues[IssueCol.EXPECTED_ROLE].astype("str").fillna("")
        + "|"
        + _roles(issues[IssueCol.ROLES_TO_ADD])
        + "|"
        + _roles(issues[IssueCol.ROLES_TO_REMOVE])
        + "|"
        + issues[IssueCol.STATUS_FIX].astype("str").fillna("")
    )


def fingerprints(issues: pd.DataFrame) -> pd.Series:
    """A 16-character fingerprint per issue (a hash of its `issue_keys`)."""
    keys = issue_keys(issues)
    # hashlib, not pandas' own hashing: the same issue must keep its fingerprint across pandas
    # versions, which pandas does not promise.
    return keys.map(lambda key: hashlib.blake2b(key.encode(), digest_size=8).hexdigest()).astype(
        "str"
    )


def _roles(column: pd.Series) -> pd.Series:
    return column.map(lambda roles: ",".join(roles) if isinstance(roles, (tuple, list)) else "")


NEW = "new"
PERSISTING = "persisting"


@dataclass(frozen=True)
class Identified:
    issues: pd.DataFrame  # with fingerprint, first_seen and issue_status filled in
    resolved: int  # issues the previous run found that this one does not


def identify(
    issues: pd.DataFrame,
    previous: pd.DataFrame | None,
    *,
    observed_at: dt.datetime,
    previous_observed_at: dt.datetime | None = None,
) -> Identified:
    """Give each issue its fingerprint and age: persisting (with the previous run's first
    sighting) when the previous complete run found it too, else new, first seen at
    `observed_at` (this run's snapshots). A previous table stored before issues had ages counts
    its issues as first seen then."""
    frame = issues.copy()
    frame[IssueCol.FINGERPRINT] = fingerprints(frame)
    seen_now = iso_utc(observed_at)
    if previous is None or not len(previous):
        frame[IssueCol.FIRST_SEEN] = seen_now
        frame[IssueCol.ISSUE_STATUS] = NEW
        return Identified(frame, resolved=0)
    seen_then = iso_utc(previous_observed_at) if previous_observed_at else seen_now
    before = pd.Series(
        previous[IssueCol.FIRST_SEEN].to_numpy() if IssueCol.FIRST_SEEN in previous else pd.NA,
        index=fingerprints(previous).to_numpy(),
        dtype="str",
    ).fillna(seen_then)
    before = before[~before.index.duplicated()]
    persisting = frame[IssueCol.FINGERPRINT].isin(before.index)
    first = frame[IssueCol.FINGERPRINT].map(before)
    frame[IssueCol.FIRST_SEEN] = first.where(persisting, seen_now).astype("str")
    frame[IssueCol.ISSUE_STATUS] = pd.Series(NEW, index=frame.index).where(~persisting, PERSISTING)
    resolved = int((~before.index.isin(frame[IssueCol.FINGERPRINT])).sum())
    return Identified(frame, resolved=resolved)


def iso_utc(moment: dt.datetime) -> str:
    """A UTC moment as the issue table writes it: ISO 8601 to the second, no offset."""
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")
