"""One subject's access, explained from a run's snapshots (docs/behaviour.md §13): the records,
the billing customer and why, each subscription, the rule of the access policy that decided
the expected role, the roles held, the open issues and the history over the stored days.

The access policy is applied here row by row, in the words of docs/behaviour.md §1, for the
handful of records one subject has; the engine (domain/drift.py) applies it to whole columns.
A test holds the two to the same answers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recon_pipeline.domain.access_exceptions import live_exceptions, role_name
from recon_pipeline.domain.columns import (
    ExceptionCol,
    GuildMemberRoleCol,
    GuildRoleCol,
    IssueCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
)
from recon_pipeline.domain.drift import discord_id_keys
from recon_pipeline.domain.fixes import Outcome, OutcomeCol
from recon_pipeline.domain.identity import fingerprints, iso_utc
from recon_pipeline.domain.policy import AccessPolicy, SeatTier
from recon_pipeline.domain.report import issues_json
from recon_pipeline.domain.subject import Subject, snowflake


@dataclass(frozen=True)
class Snapshots:
    """The subject's rows of one run's snapshots (more rows are harmless: each is tested)."""

    members: pd.DataFrame
    teams: pd.DataFrame
    subscriptions: pd.DataFrame
    guild_member_roles: pd.DataFrame
    guild_roles: pd.DataFrame
    exceptions: pd.DataFrame  # every exception not removed, live or not
    day: str


@dataclass(frozen=True)
class RunSeen:
    """A stored run: its id, day and when its snapshots were taken."""

    run_id: str
    day: str
    observed_at: dt.datetime | None


RULES = {
    0: "not linked to a Discord account: only the cached status is checked",
    1: "isInDebtorState is true → Debtor",
    2: "not entitled → no role",
    3: "introCompleted is false → Squire",
    4: "seatTier is OWNER or INDIVIDUAL → Lord",
    5: "seatTier is TEAM_MEMBER, empty or unknown → Knight",
    6: "no member record has this Discord account → no role",
}


def _value(row: pd.Series | dict, column: str) -> Any:
    value = row.get(column)
    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return None
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip() or None


def _iso_time(unix: Any) -> str | None:
    try:
        return iso_utc(dt.datetime.fromtimestamp(int(unix), dt.UTC))
    except (TypeError, ValueError, OverflowError):
        return None


def subscriptions_of(
    customer: str | None, subscriptions: pd.DataFrame, policy: AccessPolicy
) -> list[dict[str, Any]]:
    """The customer's subscriptions, newest first, each saying whether it grants access and
    which one is the reported one (docs/behaviour.md §1: the newest granting, else the newest;
    ties broken by the larger id)."""
    if customer is None:
        return []
    own = subscriptions[subscriptions[SubscriptionCol.CUSTOMER_ID].astype("str") == customer]
    rows = [
        {
            "id": str(r[SubscriptionCol.ID]),
            "customerId": customer,
            "status": str(r[SubscriptionCol.STATUS]),
            "created": _iso_time(r[SubscriptionCol.CREATED]),
            "createdUnix": int(pd.to_numeric(r[SubscriptionCol.CREATED], errors="coerce") or 0),
            "grantsAccess": str(r[SubscriptionCol.STATUS]) in policy.granting_statuses,
        }
        for r in own.to_dict("records")
    ]
    rows.sort(key=lambda s: (s["createdUnix"], s["id"]), reverse=True)
    reported = max(rows, key=lambda s: (s["grantsAccess"], s["createdUnix"], s["id"]), default=None)
    for row in rows:
        row["reported"] = row is reported
    return rows


def _billing(member: dict, teams: pd.DataFrame) -> tuple[str | None, str, dict | None]:
    """The member's billing customer, why it is that one, and the member's team."""
    team_id = _text(_value(member, MemberCol.TEAM_ID))
    own = _text(_value(member, MemberCol.STRIPE_CUSTOMER_ID))
    if team_id is not None:
        match = teams[teams[TeamCol.ID].astype("str") == team_id]
        if len(match):
            team = match.iloc[0].to_dict()
            customer = _text(_value(team, TeamCol.STRIPE_CUSTOMER_ID))
            why = (
                f"billed through team {team_id} ({_value(team, TeamCol.NAME)}): every seat of a "
                "team is paid by the team's subscription, whatever the member's own customer"
            )
            return customer, why, _team_json(team)
        why = f"teamId {team_id} names no team, so the member's own customer counts (bad data)"
        return own, why, None
    if own is None:
        return None, "the member has no Stripe customer and no team", None
    return own, "the member's own Stripe customer (not in a team)", None


def _team_json(team: dict) -> dict[str, Any]:
    return {
        "id": str(team[TeamCol.ID]),
        "name": _value(team, TeamCol.NAME),
        "stripeCustomerId": _value(team, TeamCol.STRIPE_CUSTOMER_ID),
        "stripeSubscriptionId": _value(team, TeamCol.STRIPE_SUBSCRIPTION_ID),
        "subscriptionStatus": _value(team, TeamCol.SUBSCRIPTION_STATUS),
    }


def _counting_exception(
    exceptions: pd.DataFrame, member_id: str | None, account: int | None
) -> dict | None:
    """The live exception that counts: the member's own, else one on its account; of several,
    the one added last (the largest id)."""
    for column, wanted in ((ExceptionCol.MEMBER_ID, member_id), (ExceptionCol.DISCORD_ID, account)):
        if wanted is None:
            continue
        if column == ExceptionCol.DISCORD_ID:
            hit = exceptions[discord_id_keys(exceptions[column]) == wanted]
        else:
            hit = exceptions[exceptions[column].astype("str") == wanted]
        if len(hit):
            order = pd.to_numeric(hit[ExceptionCol.ID], errors="coerce")
            return hit.loc[order.sort_values(kind="stable").index[-1]].to_dict()
    return None


def _exception_json(row: dict, policy: AccessPolicy, day: str) -> dict[str, Any]:
    expires = _text(_value(row, ExceptionCol.EXPIRES_ON))
    return {
        "id": str(row[ExceptionCol.ID]),
        "discordId": _value(row, ExceptionCol.DISCORD_ID),
        "memberId": _value(row, ExceptionCol.MEMBER_ID),
        "role": role_name(str(row[ExceptionCol.ROLE]), policy.roles),
        "reason": _value(row, ExceptionCol.REASON),
        "addedBy": _value(row, ExceptionCol.ADDED_BY),
        "addedAt": _value(row, ExceptionCol.ADDED_AT),
        "expiresOn": expires,
        "inForce": expires is None or expires >= day,
    }


def decide(
    member: dict | None,
    *,
    entitled: bool,
    linked: bool,
    exception: dict | None,
    policy: AccessPolicy,
) -> tuple[str | None, int, str]:
    """The expected role, the number of the rule that gave it and that rule in words."""
    roles = policy.roles
    if member is None:
        if exception is not None:
            return _by_exception(exception, 6, policy)
        return None, 6, RULES[6]
    if not linked:
        return None, 0, RULES[0]
    if bool(_value(member, MemberCol.IS_IN_DEBTOR_STATE)):
        return roles.debtor, 1, RULES[1]
    if not entitled:
        if exception is not None:
            return _by_exception(exception, 2, policy)
        return None, 2, RULES[2]
    if not bool(_value(member, MemberCol.INTRO_COMPLETED)):
        return roles.squire, 3, RULES[3]
    if _value(member, MemberCol.SEAT_TIER) in (SeatTier.OWNER, SeatTier.INDIVIDUAL):
        return roles.lord, 4, RULES[4]
    return roles.knight, 5, RULES[5]


def _by_exception(exception: dict, rule: int, policy: AccessPolicy) -> tuple[str, int, str]:
    role = role_name(str(exception[ExceptionCol.ROLE]), policy.roles)
    reason = _value(exception, ExceptionCol.REASON)
    number = exception[ExceptionCol.ID]
    return role, rule, f"{RULES[rule]}, but access exception #{number} gives {role} ({reason})"


def held_roles(account: int | None, snapshots: Snapshots, policy: AccessPolicy) -> dict[str, Any]:
    """The account's roles in the snapshot, managed and other, by name."""
    if account is None:
        return {"discordId": None, "inGuild": False, "managed": [], "other": []}
    guild = snapshots.guild_member_roles
    rows = guild[discord_id_keys(guild[GuildMemberRoleCol.DISCORD_ID]) == account]
    names = role_names(snapshots.guild_roles)
    held = sorted({names.get(str(r), str(r)) for r in rows[GuildMemberRoleCol.ROLE_ID].dropna()})
    return {
        "discordId": str(account),
        "inGuild": bool(len(rows)),
        "isBot": bool(rows[GuildMemberRoleCol.IS_BOT].any()) if len(rows) else False,
        **_managed_and_other(held, set(policy.roles.names())),
    }


def _managed_and_other(names: Iterable[str], managed: set[str]) -> dict[str, list[str]]:
    ordered = sorted(names)
    return {
        "managed": [n for n in ordered if n in managed],
        "other": [n for n in ordered if n not in managed],
    }


def explain_member(member: dict, snapshots: Snapshots, policy: AccessPolicy) -> dict[str, Any]:
    """One member record: its fields, team, billing customer and why, subscriptions, whether
    entitled, the expected role and its rule, the roles its account holds."""
    customer, why, team = _billing(member, snapshots.teams)
    subscriptions = subscriptions_of(customer, snapshots.subscriptions, policy)
    entitled = any(s["grantsAccess"] for s in subscriptions)
    account = _account(_value(member, MemberCol.DISCORD_ID))
    live = live_exceptions(snapshots.exceptions, snapshots.day)
    exception = _counting_exception(live, str(member[MemberCol.ID]), account)
    linked = _value(member, MemberCol.DISCORD_ID) is not None  # an unusable id is linked too
    expected, rule, words = decide(
        member, entitled=entitled, linked=linked, exception=exception, policy=policy
    )
    return {
        "id": str(member[MemberCol.ID]),
        "email": _value(member, MemberCol.EMAIL),
        "discordId": _value(member, MemberCol.DISCORD_ID),
        "stripeCustomerId": _value(member, MemberCol.STRIPE_CUSTOMER_ID),
        "subscriptionStatus": _value(member, MemberCol.SUBSCRIPTION_STATUS),
        "seatTier": _value(member, MemberCol.SEAT_TIER),
        "introCompleted": bool(_value(member, MemberCol.INTRO_COMPLETED)),
        "isInDebtorState": bool(_value(member, MemberCol.IS_IN_DEBTOR_STATE)),
        "teamId": _value(member, MemberCol.TEAM_ID),
        "team": team,
        "billingCustomer": {"id": customer, "why": why},
        "subscriptions": subscriptions,
        "entitled": entitled,
        "expectedRole": expected,
        "rule": {"number": rule, "text": words},
        "accessException": None if exception is None else str(exception[ExceptionCol.ID]),
        "heldRoles": held_roles(account, snapshots, policy),
    }


def _account(discord_id: Any) -> int | None:
    return None if discord_id is None else snowflake(str(discord_id))


def role_names(guild_roles: pd.DataFrame) -> dict[str, str]:
    """The guild's role ids → names."""
    return dict(
        zip(
            guild_roles[GuildRoleCol.ID].astype("str"),
            guild_roles[GuildRoleCol.NAME].astype("str"),
            strict=True,
        )
    )


def explain(
    subject: Subject,
    snapshots: Snapshots,
    policy: AccessPolicy,
    *,
    run: RunSeen,
    issues: pd.DataFrame,
    history: pd.DataFrame,
    runs: list[RunSeen],
) -> dict[str, Any]:
    """The whole explanation as one JSON-able object (the keys `explain --json` promises).

    `issues` is the run's issue table (with outcomes when it fixed); `history` the subject's
    issue rows of every stored run in `runs` (the frame store's day and run columns, `day` and
    `run_id`).
    """
    ids = set(subject.member_ids)
    members = snapshots.members[snapshots.members[MemberCol.ID].astype("str").isin(ids)]
    explained = [explain_member(m, snapshots, policy) for m in members.to_dict("records")]
    explained.sort(key=lambda m: m["id"])
    account = subject.account
    if account is None and len(explained) == 1:
        account = _account(explained[0]["discordId"])
    accounts = {a for a in (_account(m["discordId"]) for m in explained) if a is not None}
    if account is not None:
        accounts.add(account)
    teams = {m["team"]["id"] for m in explained if m["team"]} | set(subject.team_ids)
    single = explained[0] if len(explained) == 1 else None
    body: dict[str, Any] = {
        "subject": {"query": subject.query, "kind": subject.kind.value},
        "run": {
            "id": run.run_id,
            "day": run.day,
            "snapshotsTakenAt": _iso(run.observed_at),
        },
        "members": explained,
    }
    if single is not None:
        body.update(
            billingCustomer=single["billingCustomer"],
            subscriptions=single["subscriptions"],
            entitled=single["entitled"],
            expectedRole=single["expectedRole"],
            rule=single["rule"],
            heldRoles=single["heldRoles"],
        )
    elif subject.customer is not None:
        subscriptions = subscriptions_of(subject.customer, snapshots.subscriptions, policy)
        body.update(
            billingCustomer={"id": subject.customer, "why": _customer_why(subject, explained)},
            subscriptions=subscriptions,
            entitled=any(s["grantsAccess"] for s in subscriptions),
            expectedRole=None,
            rule=None,
            heldRoles=None,
        )
    else:  # a Discord account: no member record, or several claiming it
        live = live_exceptions(snapshots.exceptions, snapshots.day)
        exception = _counting_exception(live, None, account) if not explained else None
        expected, rule, words = (
            decide(None, entitled=False, linked=True, exception=exception, policy=policy)
            if not explained
            else (None, None, "several member records claim this account; see each one")
        )
        body.update(
            billingCustomer=None,
            subscriptions=[],
            entitled=False if not explained else None,
            expectedRole=expected,
            rule={"number": rule, "text": words},
            heldRoles=held_roles(account, snapshots, policy),
        )
    mine = _concerning(issues, ids, accounts, teams)
    body["openIssues"] = issues_json(mine)
    body["exceptions"] = [
        _exception_json(e, policy, snapshots.day)
        for e in _exceptions_on(snapshots.exceptions, ids, accounts).to_dict("records")
    ]
    body["history"] = summarize_history(_concerning(history, ids, accounts, teams), runs)
    return body


def _customer_why(subject: Subject, explained: list[dict]) -> str:
    if subject.team_ids:
        return f"the Stripe customer of team {', '.join(subject.team_ids)}, billing its seats"
    if explained:
        return "the Stripe customer of the members listed"
    return "a Stripe customer no member record or team uses"


def _concerning(
    issues: pd.DataFrame, member_ids: set[str], accounts: set[int], team_ids: set[str]
) -> pd.DataFrame:
    """The issues about these members, accounts or teams."""
    if not len(issues):
        return issues
    member = issues[IssueCol.MEMBER_ID]
    about = (
        member.astype("str").isin(member_ids).to_numpy()
        | pd.Series(discord_id_keys(issues[IssueCol.DISCORD_ID])).isin(accounts).to_numpy()
        | (member.isna() & issues[IssueCol.TEAM_ID].astype("str").isin(team_ids)).to_numpy()
    )
    return issues[about]


def _exceptions_on(
    exceptions: pd.DataFrame, member_ids: set[str], accounts: set[int]
) -> pd.DataFrame:
    on_member = exceptions[ExceptionCol.MEMBER_ID].astype("str").isin(member_ids).to_numpy()
    on_account = pd.Series(discord_id_keys(exceptions[ExceptionCol.DISCORD_ID])).isin(accounts)
    return exceptions[on_member | on_account.to_numpy()]


# The history frame's own columns: the day and the run whose snapshots showed the issue, and
# the run that tried to fix it (a re-execution has an id of its own; empty when none tried).
DAY, RUN, ATTEMPT = "day", "run_id", "attempt_run_id"
_ATTEMPTED = {Outcome.FIXED, Outcome.FAILED, Outcome.SKIPPED}


def summarize_history(history: pd.DataFrame, runs: list[RunSeen]) -> dict[str, Any]:
    """First and last sighting of the subject's issues over the stored runs, each issue's span,
    every fix attempt (run, outcome, error) and the exceptions its issues carried."""
    seen_at = {r.run_id: r for r in runs}
    frame = history[history[RUN].isin(seen_at)] if len(history) else history
    if not len(frame):
        return {"firstSeen": None, "lastSeen": None, "runsStored": len(runs), "issues": [],
                "fixAttempts": [], "exceptions": []}  # fmt: skip
    # A drift table stored before issues had fingerprints gets them now: the same hash.
    known = frame.get(IssueCol.FINGERPRINT, pd.Series(None, index=frame.index, dtype="str"))
    frame = frame.assign(**{IssueCol.FINGERPRINT: known.fillna(fingerprints(frame))})
    observed = frame[RUN].map(lambda r: _iso(seen_at[r].observed_at))
    first = frame.get(IssueCol.FIRST_SEEN, observed)
    frame = frame.assign(_observed=observed.to_numpy(), _first=first.fillna(observed).to_numpy())
    per_issue = [
        {
            "fingerprint": key,
            "type": str(rows[IssueCol.TYPE].iloc[-1]),
            "description": str(rows[IssueCol.DESCRIPTION].iloc[-1]),
            "firstSeen": min(rows["_first"].dropna(), default=None),
            "lastSeen": max(rows["_observed"].dropna(), default=None),
            "runs": int(rows[RUN].nunique()),
        }
        for key, rows in frame.groupby(IssueCol.FINGERPRINT, sort=False)
    ]
    per_issue.sort(key=lambda i: (i["firstSeen"] or "", i["fingerprint"]))
    return {
        "firstSeen": min(frame["_first"].dropna(), default=None),
        "lastSeen": max(frame["_observed"].dropna(), default=None),
        "runsStored": len(runs),
        "issues": per_issue,
        "fixAttempts": _attempts(frame),
        "exceptions": sorted(
            {str(e) for e in frame.get(IssueCol.ACCESS_EXCEPTION, pd.Series()).dropna() if e}
        ),
    }


def _attempts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if OutcomeCol.OUTCOME not in frame:
        return []
    tried = frame[frame[OutcomeCol.OUTCOME].isin([o.value for o in _ATTEMPTED])]
    attempts = [
        {
            "runId": _value(row, ATTEMPT) or row[RUN],
            "day": row[DAY],
            "at": row["_observed"],
            "type": row[IssueCol.TYPE],
            "fingerprint": _value(row, IssueCol.FINGERPRINT),
            "outcome": row[OutcomeCol.OUTCOME],
            "detail": _value(row, OutcomeCol.OUTCOME_DETAIL),
            "actionsTaken": list(_value(row, OutcomeCol.ACTIONS_TAKEN) or ()),
        }
        for row in tried.to_dict("records")
    ]
    attempts.sort(key=lambda a: (a["at"] or "", a["runId"]))
    return attempts


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment)


def live_changes(
    explanation: dict[str, Any],
    subscriptions_now: pd.DataFrame,
    roles_now: dict[str, list[str] | None],
    policy: AccessPolicy,
) -> dict[str, Any]:
    """What changed since the snapshot, from the subject's subscriptions and roles now
    (`roles_now`: Discord id → role names held, None when the account is not in the server)."""
    then = {s["id"]: s for s in _all_subscriptions(explanation)}
    customers = sorted({s["customerId"] for s in _all_subscriptions(explanation)} | set(
        subscriptions_now[SubscriptionCol.CUSTOMER_ID].astype("str")))  # fmt: skip
    now = [s for c in customers for s in subscriptions_of(c, subscriptions_now, policy)]
    changes = []
    for sub in now:
        before = then.get(sub["id"])
        if before is None:
            changes.append(f"subscription {sub['id']} is new ({sub['status']})")
        elif before["status"] != sub["status"]:
            changes.append(f"subscription {sub['id']}: {before['status']} → {sub['status']}")
    gone = sorted(set(then) - {s["id"] for s in now})
    changes += [f"subscription {sub_id} is no longer listed" for sub_id in gone]
    held = {}
    managed = set(policy.roles.names())
    for account, names in sorted(roles_now.items()):
        before = _held_then(explanation, account)
        held[account] = {"inGuild": names is not None, **_managed_and_other(names or (), managed)}
        if before is None:
            continue
        if before["inGuild"] != (names is not None):
            verb = "joined" if names is not None else "left"
            changes.append(f"Discord account {account} {verb} the server")
        was = set(before["managed"]) | set(before["other"])
        changes += [f"{account} gained role {n}" for n in sorted(set(names or ()) - was)]
        changes += [f"{account} lost role {n}" for n in sorted(was - set(names or ()))]
    entitled = {c: any(s["grantsAccess"] for s in now if s["customerId"] == c) for c in customers}
    return {
        "subscriptions": now,
        "heldRoles": held,
        "entitledNow": entitled,
        "changes": changes,
    }


def _all_subscriptions(explanation: dict[str, Any]) -> list[dict[str, Any]]:
    found = {}
    for sub in [*(explanation.get("subscriptions") or [])] + [
        s for m in explanation["members"] for s in m["subscriptions"]
    ]:
        found[sub["id"]] = sub
    return list(found.values())


def _held_then(explanation: dict[str, Any], account: str) -> dict[str, Any] | None:
    for held in [explanation.get("heldRoles")] + [m["heldRoles"] for m in explanation["members"]]:
        if held and held.get("discordId") == account:
            return held
    return None


def live_subjects(explanation: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The billing customers and Discord accounts `--live` asks about."""
    customers = {m["billingCustomer"]["id"] for m in explanation["members"]}
    if explanation.get("billingCustomer"):
        customers.add(explanation["billingCustomer"]["id"])
    accounts = {m["heldRoles"]["discordId"] for m in explanation["members"]}
    if explanation.get("heldRoles"):
        accounts.add(explanation["heldRoles"]["discordId"])
    return sorted(c for c in customers if c), sorted(a for a in accounts if a)
