"""The vectorised engine equals the per-member reference implementation on random communities.

Communities are drawn from small pools of ids so that the interesting collisions happen often:
shared and dangling team ids, several subscriptions per customer with tied creation times,
unknown statuses, unlinked members, junk Discord ids, bots, exempt ids, unmanaged roles, access
exceptions (live and expired, on members and on accounts, several per subject) and a previous
run's findings for removal confirmation.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon_pipeline.domain.access_exceptions import EXCEPTION_ROLES, live_exceptions
from recon_pipeline.domain.columns import ExceptionCol, IssueCol
from recon_pipeline.domain.confirmation import await_confirmation
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.policy import AccessPolicy, ManagedRoles
from recon_pipeline_tests.builders import (
    ROLE_IDS,
    Snapshot,
    account,
    guild_roles,
    member,
    sub,
    team,
)
from recon_pipeline_tests.oracle import (
    engine_rows,
    oracle_rows,
    reference_confirmation,
    reference_drift_issues,
)

DISCORD_POOL = [str(1000 + i) for i in range(12)] + ["5001", "5002", "5003"]
JUNK_DISCORD_IDS = ["0", "abc", "12ab", "00", "01001"]
CUSTOMERS = [f"cus_{i}" for i in range(6)]
TEAM_CUSTOMERS = [f"cus_t{i}" for i in range(3)]
TEAM_IDS = ["t0", "t1", "t2", "t_gone"]
DB_STATUSES = ["NONE", "TRIALING", "ACTIVE", "PAST_DUE", "CANCELLED", "FROZEN"]
STRIPE_STATUSES = [
    "active",
    "trialing",
    "past_due",
    "canceled",
    "unpaid",
    "incomplete",
    "incomplete_expired",
    "paused",
    "mystery",
]
TIERS = ["INDIVIDUAL", "OWNER", "TEAM_MEMBER", None]
CUSTOM_ROLES = ManagedRoles(squire="Page", knight="Member", lord="Patron", debtor="Overdue")
DAY = "2026-11-30"
EXPIRIES = [None, "2026-11-29", "2026-11-30", "2026-12-31"]  # lapsed, last day, live
MEMBER_IDS = [f"m{i:02d}" for i in range(15)]


# Statuses a STALE_DATABASE_STATUS fix writes as CANCELLED. When only these grant, an entitled
# member whose column already says CANCELLED disagrees with Stripe on access, yet its fix would
# change nothing; mixed pools rarely produce that (an `active` subscription usually wins).
CANCELLED_IN_DATABASE = ["unpaid", "canceled", "incomplete", "incomplete_expired", "paused"]


@st.composite
def exception_lists(draw: st.DrawFn) -> pd.DataFrame:
    """Access exceptions in any order, with ids in a random order of addition."""
    rows = []
    for number in draw(st.lists(st.integers(1, 40), max_size=6, unique=True)):
        on_member = draw(st.booleans())
        rows.append(
            {
                ExceptionCol.ID: str(number),
                ExceptionCol.DISCORD_ID: None if on_member else draw(st.sampled_from(DISCORD_POOL)),
                ExceptionCol.MEMBER_ID: draw(st.sampled_from(MEMBER_IDS)) if on_member else None,
                ExceptionCol.ROLE: draw(st.sampled_from(EXCEPTION_ROLES)),
                ExceptionCol.REASON: "staff",
                ExceptionCol.ADDED_BY: "admin",
                ExceptionCol.ADDED_AT: "2026-11-01T00:00:00",
                ExceptionCol.EXPIRES_ON: draw(st.sampled_from(EXPIRIES)),
            }
        )
    return pd.DataFrame(rows, columns=list(ExceptionCol.ALL), dtype="str")


@st.composite
def communities(
    draw: st.DrawFn, granting_statuses: st.SearchStrategy[frozenset[str]] | None = None
) -> tuple[Snapshot, AccessPolicy, pd.DataFrame]:
    n_members = draw(st.integers(0, 14))
    discord_ids = draw(
        st.lists(
            st.sampled_from(DISCORD_POOL + JUNK_DISCORD_IDS),
            min_size=n_members,
            max_size=n_members,
            unique=True,
        )
        if n_members <= len(DISCORD_POOL) + len(JUNK_DISCORD_IDS)
        else st.just([])
    )
    members = [
        member(
            f"m{i:02d}",
            discord_id=draw(st.one_of(st.none(), st.just(discord_ids[i]))),
            customer=draw(st.one_of(st.none(), st.sampled_from(CUSTOMERS))),
            status=draw(st.sampled_from(DB_STATUSES)),
            tier=draw(st.sampled_from(TIERS)),
            intro=draw(st.booleans()),
            team=draw(st.one_of(st.none(), st.sampled_from(TEAM_IDS))),
            debtor=draw(st.booleans()),
        )
        for i in range(n_members)
    ]
    teams = [
        team(
            team_id,
            name=f"Team {team_id}",
            customer=draw(st.sampled_from(TEAM_CUSTOMERS + CUSTOMERS[:2])),
            status=draw(st.sampled_from(DB_STATUSES)),
        )
        for team_id in draw(st.lists(st.sampled_from(TEAM_IDS[:3]), max_size=3, unique=True))
    ]
    subs = [
        sub(
            draw(st.sampled_from(CUSTOMERS + TEAM_CUSTOMERS)),
            draw(st.sampled_from(STRIPE_STATUSES)),
            created=draw(st.integers(0, 3)),  # few values, so ties happen
            sub_id=f"sub_{draw(st.text('abcXYZ', min_size=1, max_size=3))}_{k}",
        )
        for k in range(draw(st.integers(0, 16)))
    ]
    rows: list[dict[str, Any]] = []
    for discord_id in draw(st.lists(st.sampled_from(DISCORD_POOL), max_size=14, unique=True)):
        roles = draw(st.lists(st.sampled_from(list(ROLE_IDS)), max_size=3, unique=True))
        rows.extend(account(discord_id, *roles, bot=draw(st.integers(0, 9)) == 0))
    exempt = frozenset(draw(st.lists(st.sampled_from(DISCORD_POOL), max_size=2)))
    granting = frozenset(
        draw(st.lists(st.sampled_from(STRIPE_STATUSES[:8]), min_size=1, max_size=4))
    )
    custom_names = draw(st.booleans())
    roles = (
        guild_roles(Squire="Page", Knight="Member", Lord="Patron", Debtor="Overdue")
        if custom_names
        else guild_roles()
    )
    if granting_statuses is None:
        granting_statuses = st.sampled_from([granting, AccessPolicy().granting_statuses])
    policy = AccessPolicy(
        roles=CUSTOM_ROLES if custom_names else ManagedRoles(),
        granting_statuses=draw(granting_statuses),
        exempt_discord_ids=exempt,
    )
    snapshot = Snapshot(members=members, teams=teams, subs=subs, guild=rows, roles=roles)
    return snapshot, policy, draw(exception_lists())


@st.composite
def previous_findings(draw: st.DrawFn, issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a previous run found: some of today's issues, some with other roles or statuses (a
    different removal of the same account), and none at all."""
    previous = []
    for issue in issues:
        fate = draw(st.sampled_from(["same", "same", "other roles", "other status", "gone"]))
        if fate == "same":
            previous.append(issue)
        elif fate == "other roles":
            previous.append(issue | {IssueCol.ROLES_TO_REMOVE: ("Squire", "Zzz")})
        elif fate == "other status":
            previous.append(issue | {IssueCol.STATUS_FIX: "NONE"})
    return previous


def _frame(issues: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(issues, columns=list(IssueCol.ALL))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(communities(), st.data())
def test_find_drift_issues_equals_reference_implementation(
    community: tuple[Snapshot, AccessPolicy, pd.DataFrame], data: st.DataObject
) -> None:
    snapshot, policy, exceptions = community
    frames = snapshot.frames()
    engine = find_drift_issues(
        **frames | {"exceptions": live_exceptions(exceptions, DAY)}, policy=policy
    )
    oracle = reference_drift_issues(**frames | {"exceptions": exceptions}, policy=policy, day=DAY)
    assert engine_rows(engine) == oracle_rows(oracle)

    previous = data.draw(st.one_of(st.none(), previous_findings(oracle)))
    confirmed = await_confirmation(
        engine, None if previous is None else _frame(previous), first_seen_in="run-2"
    )
    assert engine_rows(confirmed) == oracle_rows(reference_confirmation(oracle, previous, "run-2"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(communities(st.frozensets(st.sampled_from(CANCELLED_IN_DATABASE), min_size=1, max_size=3)))
def test_find_drift_issues_equals_reference_when_only_cancelled_statuses_grant(
    community: tuple[Snapshot, AccessPolicy, pd.DataFrame],
) -> None:
    snapshot, policy, exceptions = community
    frames = snapshot.frames()
    engine = find_drift_issues(
        **frames | {"exceptions": live_exceptions(exceptions, DAY)}, policy=policy
    )
    oracle = reference_drift_issues(**frames | {"exceptions": exceptions}, policy=policy, day=DAY)
    assert engine_rows(engine) == oracle_rows(oracle)


@settings(max_examples=50, deadline=None)
@given(communities())
def test_find_drift_issues_does_not_depend_on_input_row_order(
    community: tuple[Snapshot, AccessPolicy, pd.DataFrame],
) -> None:
    snapshot, policy, exceptions = community
    frames = snapshot.frames() | {"exceptions": live_exceptions(exceptions, DAY)}
    shuffled = {
        name: frame.sample(frac=1, random_state=7).reset_index(drop=True)
        for name, frame in frames.items()
    }
    pd.testing.assert_frame_equal(
        find_drift_issues(**frames, policy=policy), find_drift_issues(**shuffled, policy=policy)
    )
