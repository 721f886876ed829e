"""Whom `recon-pipeline explain` is asked about (docs/behaviour.md §13): a member id, an email,
a Discord id or a Stripe customer id, told apart by what the snapshots hold.

The frames handed in may hold more rows than the subject's (the storage's coarse match); every
test here is the exact one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from recon_pipeline.domain.columns import (
    ExceptionCol,
    GuildMemberRoleCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
)
from recon_pipeline.domain.drift import discord_id_keys


class SubjectKind(StrEnum):
    MEMBER = "member"  # a member id
    EMAIL = "email"
    DISCORD = "discord"  # a Discord account id
    CUSTOMER = "customer"  # a Stripe customer id


class UnknownSubjectError(LookupError):
    """Nothing in the snapshots matches the subject."""


class AmbiguousSubjectError(LookupError):
    """The subject names several members, or different things as different kinds."""


@dataclass(frozen=True)
class Subject:
    """What the query names: its kind, the member records it covers, and the Discord account or
    Stripe customer it is (when it is one)."""

    query: str
    kind: SubjectKind
    member_ids: tuple[str, ...] = ()
    account: int | None = None  # Discord id as Discord compares it
    customer: str | None = None
    team_ids: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class SearchTerms:
    """What the storage's coarse match looks for, per kind of column: the query as typed in
    id columns; in email columns only a query with an @; in Discord id columns only a query
    that can be a Discord id, as its digits without leading zeros (which every spelling of that
    id contains). Fewer columns to test make the scan of a million rows shorter."""

    ids: tuple[str, ...]
    emails: tuple[str, ...]
    discord_ids: tuple[str, ...]


def search_terms(query: str) -> SearchTerms:
    text = query.strip()
    key = snowflake(text)
    return SearchTerms(
        ids=(text,),
        emails=(text,) if "@" in text else (),
        discord_ids=(str(key),) if key is not None else (),
    )


def snowflake(text: str) -> int | None:
    """`text` as a Discord id, or None when no account can have it."""
    key = int(discord_id_keys(pd.Series([text], dtype="str"))[0])
    return key or None


def members_named(query: str, members: pd.DataFrame) -> pd.DataFrame:
    """The member rows `query` names exactly as any kind (a member id, email, Discord id or
    customer id of theirs): the few rows whose teams, customers and accounts matter."""
    text = query.strip()
    named = np.zeros(len(members), dtype=bool)
    for kind in SubjectKind:
        named |= _named_as(kind, text, members)
    return members[named]


def _named_as(kind: SubjectKind, text: str, members: pd.DataFrame) -> np.ndarray:
    """Which member rows `text` (stripped) names exactly as `kind`."""
    if kind == SubjectKind.DISCORD:
        key = snowflake(text)
        if key is None:
            return np.zeros(len(members), dtype=bool)
        return discord_id_keys(members[MemberCol.DISCORD_ID]) == key
    if kind == SubjectKind.EMAIL:
        emails = members[MemberCol.EMAIL].astype("str").str.strip().str.lower()
        return (emails == text.lower()).to_numpy()
    column = MemberCol.ID if kind == SubjectKind.MEMBER else MemberCol.STRIPE_CUSTOMER_ID
    return (members[column].astype("str").str.strip() == text).to_numpy()


def find_subject(
    query: str,
    *,
    members: pd.DataFrame,
    teams: pd.DataFrame,
    subscriptions: pd.DataFrame,
    guild_member_roles: pd.DataFrame,
    exceptions: pd.DataFrame,
    kind: SubjectKind | None = None,
) -> Subject:
    """The subject `query` names in these snapshots (of `kind` only, when given).

    Raises:
        UnknownSubjectError: nothing matches; the message says what was looked for.
        AmbiguousSubjectError: an email of several members, or a query that is one thing as a
            member id and another as a Discord id (the message lists each; `kind` settles it).
    """
    text = query.strip()
    if not text:
        raise UnknownSubjectError("the subject is empty: give a member id, email, Discord id or "
                                  "Stripe customer id")  # fmt: skip
    kinds = [kind] if kind else list(SubjectKind)
    found = [
        s
        for s in (
            _match(k, text, members, teams, subscriptions, guild_member_roles, exceptions)
            for k in kinds
        )
        if s is not None
    ]
    if not found:
        what = f"as a {kind.value}" if kind else (
            "as a member id, email, Discord id or Stripe customer id")  # fmt: skip
        raise UnknownSubjectError(f"nothing in the snapshots matches {text!r} {what}")
    distinct = {(s.member_ids, s.account if not s.member_ids else None) for s in found}
    if len(distinct) > 1:
        listed = "; ".join(f"as a {s.kind.value}: {_names(s)}" for s in found)
        raise AmbiguousSubjectError(
            f"{text!r} names different things ({listed}); say which with --as "
            + "|".join(s.kind.value for s in found)
        )
    if len(found[0].member_ids) > 1 and found[0].kind == SubjectKind.EMAIL:
        raise AmbiguousSubjectError(
            f"the email {text!r} belongs to {len(found[0].member_ids)} member records "
            f"({', '.join(found[0].member_ids)}); explain one of them by its member id"
        )
    return found[0]


def _names(subject: Subject) -> str:
    if subject.member_ids:
        return "member " + ", ".join(subject.member_ids)
    if subject.account is not None:
        return f"Discord account {subject.account}"
    return f"Stripe customer {subject.customer}"


def _match(
    kind: SubjectKind,
    text: str,
    members: pd.DataFrame,
    teams: pd.DataFrame,
    subscriptions: pd.DataFrame,
    guild_member_roles: pd.DataFrame,
    exceptions: pd.DataFrame,
) -> Subject | None:
    if kind == SubjectKind.EMAIL and "@" not in text:
        return None
    if kind in (SubjectKind.MEMBER, SubjectKind.EMAIL):
        hit = members[_named_as(kind, text, members)]
        return Subject(text, kind, _ids(hit)) if len(hit) else None
    if kind == SubjectKind.DISCORD:
        key = snowflake(text)
        if key is None:
            return None
        hit = members[_named_as(kind, text, members)]
        in_guild = (discord_id_keys(guild_member_roles[GuildMemberRoleCol.DISCORD_ID]) == key).any()
        excepted = (discord_id_keys(exceptions[ExceptionCol.DISCORD_ID]) == key).any()
        if not (len(hit) or in_guild or excepted):
            return None
        return Subject(text, kind, _ids(hit), account=key)
    own = members[_named_as(kind, text, members)]
    team = teams[teams[TeamCol.STRIPE_CUSTOMER_ID].astype("str").str.strip() == text]
    billed = subscriptions[SubscriptionCol.CUSTOMER_ID].astype("str") == text
    if not (len(own) or len(team) or billed.any()):
        return None
    team_ids = tuple(sorted(team[TeamCol.ID].astype("str").unique()))
    seats = members[members[MemberCol.TEAM_ID].astype("str").isin(team_ids).to_numpy()]
    ids = tuple(sorted(set(_ids(own)) | set(_ids(seats))))
    return Subject(text, kind, ids, customer=text, team_ids=team_ids)


def _ids(members: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted(members[MemberCol.ID].astype("str").unique()))
