"""A plain, per-member reference implementation of docs/behaviour.md §1, §2, used as a test oracle.

Written for obviousness, not speed: loops and dicts, straight from the document's wording, sharing
nothing with the engine but the vocabulary (enum values and column names).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pandas as pd

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.policy import AccessPolicy

_TYPE_ORDER = [
    "MISSING_ACCESS",
    "UNAUTHORIZED_ACCESS",
    "ROLE_MISMATCH",
    "DEBTOR_MISMATCH",
    "ORPHANED_ACCESS",
    "NOT_IN_GUILD",
    "STALE_DATABASE_STATUS",
]
_DB_GRANTING = {"TRIALING", "ACTIVE", "PAST_DUE"}
_FIX_STATUS = {"active": "ACTIVE", "trialing": "TRIALING", "past_due": "PAST_DUE"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def discord_key(value: Any) -> int | None:
    """Discord compares ids as integers; anything that is not 1-19 digits (or is 0) matches none.
    Surrounding whitespace is not part of an id."""
    text = _text(value)
    text = text.strip() if text is not None else None
    if text is None or not re.fullmatch(r"[0-9]{1,19}", text) or int(text) == 0:
        return None
    return int(text)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(frame.columns, row, strict=True)) for row in frame.itertuples(index=False)]


def reference_drift_issues(
    members: pd.DataFrame,
    teams: pd.DataFrame,
    subscriptions: pd.DataFrame,
    guild_member_roles: pd.DataFrame,
    guild_roles: pd.DataFrame,
    policy: AccessPolicy,
    exceptions: pd.DataFrame | None = None,
    day: str = "2026-01-01",
) -> list[dict[str, Any]]:
    """The issues the rules call for, as dicts keyed by `IssueCol` names, in the table's order
    (docs/behaviour.md §2). `exceptions` are all access exceptions, live or not, on `day`."""
    squire, knight, lord, debtor = policy.roles.names()
    role_of_kind = {"squire": squire, "knight": knight, "lord": lord}

    # Access exceptions that count on `day`; per subject the one added last (the highest id).
    by_member: dict[str, dict[str, Any]] = {}
    by_account: dict[int, dict[str, Any]] = {}
    for exception in sorted(_records(exceptions) if exceptions is not None else [],
                            key=lambda e: int(e["id"])):  # fmt: skip
        expires = _text(exception["expires_on"])
        if expires is not None and dt.date.fromisoformat(expires) < dt.date.fromisoformat(day):
            continue
        if _text(exception["member_id"]) is not None:
            by_member[str(exception["member_id"])] = exception
        elif discord_key(exception["discord_id"]) is not None:
            by_account[discord_key(exception["discord_id"])] = exception
    managed_names = {squire, knight, lord, debtor}
    role_name_by_id: dict[int, str] = {}
    for role in _records(guild_roles):
        key = discord_key(role["id"])
        if role["name"] in managed_names and key is not None:
            role_name_by_id[key] = role["name"]

    # Stripe: every subscription of each customer.
    subs_by_customer: dict[str, list[dict[str, Any]]] = {}
    for sub in _records(subscriptions):
        customer = _text(sub["customer_id"])
        if customer is not None:
            subs_by_customer.setdefault(customer, []).append(sub)

    def stripe_view(customer: str | None) -> tuple[bool, str | None]:
        subs = subs_by_customer.get(customer, []) if customer is not None else []
        if not subs:
            return False, None

        def newest(candidates: list[dict[str, Any]]) -> dict[str, Any]:
            return max(candidates, key=lambda s: (_created(s["created"]), str(s["id"])))

        granting = [s for s in subs if s["status"] in policy.granting_statuses]
        if granting:
            return True, _text(newest(granting)["status"])
        return False, _text(newest(subs)["status"])

    teams_by_id: dict[str, dict[str, Any]] = {}
    for team in _records(teams):
        teams_by_id.setdefault(str(team["id"]), team)

    # Discord: what each account holds, and who is in the guild.
    held: dict[int, set[str]] = {}
    bots: set[int] = set()
    first_id_text: dict[int, str] = {}
    for row in _records(guild_member_roles):
        key = discord_key(row["discord_id"])
        if key is None:
            continue
        first_id_text.setdefault(key, str(row["discord_id"]))
        roles = held.setdefault(key, set())
        role = role_name_by_id.get(discord_key(row["role_id"]))
        if role is not None:
            roles.add(role)
        if row["is_bot"] is True or row["is_bot"] == 1:
            bots.add(key)

    issues: list[dict[str, Any]] = []
    claimed: set[int] = set()
    for member in _records(members):
        team = teams_by_id.get(_text(member["team_id"]))
        own_customer = _text(member["stripe_customer_id"])
        customer = _text(team["stripe_customer_id"]) if team else own_customer
        entitled, stripe_status = stripe_view(customer)
        member_status = _text(member["subscription_status"])
        base = {
            IssueCol.MEMBER_ID: str(member["id"]),
            IssueCol.TEAM_ID: str(team["id"]) if team else None,
            IssueCol.TEAM_NAME: _text(team["name"]) if team else None,
        }

        if team is None:  # the member's own cached status, checked linked or not
            own_entitled, own_status = stripe_view(own_customer)
            if (member_status in _DB_GRANTING) != own_entitled:
                issues.extend(
                    _stale(
                        base | {IssueCol.DISCORD_ID: _text(member["discord_id"])},
                        member_status,
                        own_status,
                    )
                )

        discord_id = _text(member["discord_id"])
        if discord_id is None:
            continue  # unlinked: valid, no access check
        key = discord_key(discord_id)
        if key is not None:
            claimed.add(key)

        exception = by_member.get(str(member["id"])) or by_account.get(key)
        granted_by = None
        if member["is_in_debtor_state"]:
            expected = {debtor}
        elif not entitled and exception is not None:
            expected = {role_of_kind[exception["role"]]}
            granted_by = str(exception["id"])
        elif not entitled:
            expected = set()
        elif not member["intro_completed"]:
            expected = {squire}
        elif _text(member["seat_tier"]) in ("OWNER", "INDIVIDUAL"):
            expected = {lord}
        else:
            expected = {knight}

        in_guild = key is not None and key in held
        actual = held.get(key, set()) if in_guild else set()
        kind = severity = None
        if expected and not in_guild:
            kind, severity = "NOT_IN_GUILD", "LOW"
        elif expected == {debtor}:
            if actual != expected:
                kind, severity = "DEBTOR_MISMATCH", "MEDIUM"
        elif expected and not actual:
            kind, severity = "MISSING_ACCESS", "HIGH"
        elif not expected and actual:
            kind = "UNAUTHORIZED_ACCESS"
            severity = "LOW" if actual == {debtor} else "HIGH"
        elif expected and actual != expected:
            kind, severity = "ROLE_MISMATCH", "MEDIUM"
        if kind is None:
            continue
        fixes = kind != "NOT_IN_GUILD"
        issues.append(
            base
            | {
                IssueCol.TYPE: kind,
                IssueCol.SEVERITY: severity,
                IssueCol.DISCORD_ID: discord_id,
                IssueCol.STRIPE_STATUS: stripe_status,
                IssueCol.DATABASE_STATUS: _text(team["subscription_status"])
                if team
                else member_status,
                IssueCol.DISCORD_ROLES: tuple(sorted(actual)),
                IssueCol.EXPECTED_ROLE: next(iter(expected)) if expected else None,
                IssueCol.ROLES_TO_ADD: tuple(sorted(expected - actual)) if fixes else (),
                IssueCol.ROLES_TO_REMOVE: tuple(sorted(actual - expected)) if fixes else (),
                IssueCol.STATUS_FIX: None,
                IssueCol.ACCESS_EXCEPTION: granted_by,
            }
        )

    exempt = {discord_key(i) for i in policy.exempt_discord_ids}
    for key, roles in held.items():
        exception = by_account.get(key)
        if key not in claimed and exception is not None:
            expected = {role_of_kind[exception["role"]]}
            if roles == expected:
                continue
            issues.append(
                _unclaimed(first_id_text[key], roles)
                | {
                    IssueCol.TYPE: "ROLE_MISMATCH" if roles else "MISSING_ACCESS",
                    IssueCol.SEVERITY: "MEDIUM" if roles else "HIGH",
                    IssueCol.EXPECTED_ROLE: next(iter(expected)),
                    IssueCol.ROLES_TO_ADD: tuple(sorted(expected - roles)),
                    IssueCol.ROLES_TO_REMOVE: tuple(sorted(roles - expected)),
                    IssueCol.ACCESS_EXCEPTION: str(exception["id"]),
                }
            )
            continue
        if roles and key not in claimed and key not in bots and key not in exempt:
            issues.append(
                _unclaimed(first_id_text[key], roles)
                | {
                    IssueCol.TYPE: "ORPHANED_ACCESS",
                    IssueCol.SEVERITY: "HIGH",
                    IssueCol.EXPECTED_ROLE: None,
                    IssueCol.ROLES_TO_ADD: (),
                    IssueCol.ROLES_TO_REMOVE: tuple(sorted(roles)),
                }
            )

    for team in teams_by_id.values():
        entitled, stripe_status = stripe_view(_text(team["stripe_customer_id"]))
        status = _text(team["subscription_status"])
        if (status in _DB_GRANTING) != entitled:
            issues.extend(
                _stale(
                    {
                        IssueCol.MEMBER_ID: None,
                        IssueCol.TEAM_ID: str(team["id"]),
                        IssueCol.TEAM_NAME: _text(team["name"]),
                        IssueCol.DISCORD_ID: None,
                    },
                    status,
                    stripe_status,
                )
            )

    issues.sort(key=sort_key)
    return issues


def _unclaimed(discord_id: str, roles: set[str]) -> dict[str, Any]:
    """The fields of an issue of a server account no member record claims."""
    return {
        IssueCol.MEMBER_ID: None,
        IssueCol.TEAM_ID: None,
        IssueCol.TEAM_NAME: None,
        IssueCol.DISCORD_ID: discord_id,
        IssueCol.STRIPE_STATUS: None,
        IssueCol.DATABASE_STATUS: None,
        IssueCol.DISCORD_ROLES: tuple(sorted(roles)),
        IssueCol.STATUS_FIX: None,
    }


def _stale(base: dict[str, Any], db_status: str | None, stripe_status: str | None) -> list[dict]:
    """The STALE_DATABASE_STATUS issue of a column that disagrees with Stripe on access, if any."""
    fix = "NONE" if stripe_status is None else _FIX_STATUS.get(stripe_status, "CANCELLED")
    if fix == db_status:
        return []  # its fix would write the value already there: nothing to fix, no issue
    return [
        base
        | {
            IssueCol.TYPE: "STALE_DATABASE_STATUS",
            IssueCol.SEVERITY: "LOW",
            IssueCol.STRIPE_STATUS: stripe_status,
            IssueCol.DATABASE_STATUS: db_status,
            IssueCol.DISCORD_ROLES: (),
            IssueCol.EXPECTED_ROLE: None,
            IssueCol.ROLES_TO_ADD: (),
            IssueCol.ROLES_TO_REMOVE: (),
            IssueCol.STATUS_FIX: fix,
        }
    ]


def _created(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return min(max(number, 0), 2**33 - 1)


def sort_key(issue: dict[str, Any]) -> tuple:
    """The engine's row order: type as listed in docs/behaviour.md §2, then member, team and
    Discord ids."""

    def missing_first(value: str | None) -> tuple[int, str]:
        return (0, "") if value is None else (1, value)

    return (
        _TYPE_ORDER.index(issue[IssueCol.TYPE]),
        missing_first(issue[IssueCol.MEMBER_ID]),
        missing_first(issue[IssueCol.TEAM_ID]),
        missing_first(issue[IssueCol.DISCORD_ID]),
    )


COMPARED = (
    IssueCol.TYPE,
    IssueCol.SEVERITY,
    IssueCol.MEMBER_ID,
    IssueCol.TEAM_ID,
    IssueCol.DISCORD_ID,
    IssueCol.STRIPE_STATUS,
    IssueCol.DATABASE_STATUS,
    IssueCol.DISCORD_ROLES,
    IssueCol.EXPECTED_ROLE,
    IssueCol.ROLES_TO_ADD,
    IssueCol.ROLES_TO_REMOVE,
    IssueCol.STATUS_FIX,
    IssueCol.TEAM_NAME,
    IssueCol.ACCESS_EXCEPTION,
    IssueCol.AWAITING_CONFIRMATION,
)


def engine_rows(issues: pd.DataFrame) -> list[dict[str, Any]]:
    """The engine's table as dicts of the compared columns, missing values as None."""
    return [
        {
            col: (None if _missing(value) else value)
            for col, value in zip(COMPARED, row, strict=True)
        }
        for row in issues[list(COMPARED)].itertuples(index=False)
    ]


def oracle_rows(issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The oracle's issues restricted to the compared columns, missing values as None."""
    return [
        {col: (None if _missing(issue.get(col)) else issue.get(col)) for col in COMPARED}
        for issue in issues
    ]


_GRANTING_DB = {"TRIALING", "ACTIVE", "PAST_DUE"}


def _pure_removal(issue: dict[str, Any]) -> bool:
    """An UNAUTHORIZED_ACCESS or ORPHANED_ACCESS fix, or a status downgrade that ends access."""
    if issue[IssueCol.TYPE] in ("UNAUTHORIZED_ACCESS", "ORPHANED_ACCESS"):
        return bool(issue[IssueCol.ROLES_TO_REMOVE])
    return (
        issue[IssueCol.TYPE] == "STALE_DATABASE_STATUS"
        and issue[IssueCol.DATABASE_STATUS] in _GRANTING_DB
        and _text(issue[IssueCol.STATUS_FIX]) is not None
        and issue[IssueCol.STATUS_FIX] not in _GRANTING_DB
    )


def _removal(issue: dict[str, Any]) -> tuple:
    """The account, the type, the roles removed and the status written."""
    if issue[IssueCol.TYPE] == "STALE_DATABASE_STATUS":
        account: Any = _text(issue[IssueCol.MEMBER_ID]) or f"team:{issue[IssueCol.TEAM_ID]}"
    else:
        account = discord_key(issue[IssueCol.DISCORD_ID])
    return (
        issue[IssueCol.TYPE],
        account,
        tuple(issue[IssueCol.ROLES_TO_REMOVE] or ()),
        _text(issue[IssueCol.STATUS_FIX]),
    )


def reference_confirmation(
    issues: list[dict[str, Any]], previous: list[dict[str, Any]] | None, run_id: str
) -> list[dict[str, Any]]:
    """`issues` with each pure removal the previous run did not find marked as awaiting
    confirmation (docs/behaviour.md §4)."""
    seen = {_removal(i) for i in previous or [] if _pure_removal(i)}
    return [
        issue
        | {
            IssueCol.AWAITING_CONFIRMATION: (
                f"awaiting confirmation (first seen in run {run_id})"
                if _pure_removal(issue) and _removal(issue) not in seen
                else None
            )
        }
        for issue in issues
    ]
