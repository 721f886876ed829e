"""`explain`'s row-by-row reading of the access policy gives the engine's answers, and a query is
resolved to the subject it names (or refused, saying why)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from recon_pipeline.domain import explain as ex
from recon_pipeline.domain.access_exceptions import live_exceptions
from recon_pipeline.domain.columns import IssueCol, MemberCol
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.explain import (
    ATTEMPT,
    RUN,
    RunSeen,
    Snapshots,
    explain_member,
    subscriptions_of,
    summarize_history,
)
from recon_pipeline.domain.fixes import OutcomeCol
from recon_pipeline.domain.identity import identify
from recon_pipeline.domain.policy import AccessPolicy, DriftType
from recon_pipeline.domain.subject import (
    AmbiguousSubjectError,
    SubjectKind,
    UnknownSubjectError,
    find_subject,
)
from recon_pipeline_tests.builders import Snapshot, account, member, sub, team
from recon_pipeline_tests.test_domain.test_drift_property import DAY, communities

ACCESS_TYPES = {
    DriftType.MISSING_ACCESS,
    DriftType.UNAUTHORIZED_ACCESS,
    DriftType.ROLE_MISMATCH,
    DriftType.DEBTOR_MISMATCH,
    DriftType.NOT_IN_GUILD,
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(communities())
def test_explained_expected_role_is_the_engines(
    community: tuple[Snapshot, AccessPolicy, pd.DataFrame],
) -> None:
    snapshot, policy, exceptions = community
    frames = snapshot.frames()
    live = live_exceptions(exceptions, DAY)
    issues = find_drift_issues(**frames | {"exceptions": live}, policy=policy)
    access = issues[issues[IssueCol.TYPE].isin(list(ACCESS_TYPES))]
    by_member = access.set_index(IssueCol.MEMBER_ID)
    snapshots = Snapshots(
        members=frames["members"],
        teams=frames["teams"],
        subscriptions=frames["subscriptions"],
        guild_member_roles=frames["guild_member_roles"],
        guild_roles=frames["guild_roles"],
        exceptions=exceptions,
        day=DAY,
    )
    for row in frames["members"].to_dict("records"):
        if row[MemberCol.DISCORD_ID] is None:
            continue
        told = explain_member(row, snapshots, policy)
        if row[MemberCol.ID] in by_member.index:
            issue = by_member.loc[row[MemberCol.ID]]
            wanted = issue[IssueCol.EXPECTED_ROLE]
            assert told["expectedRole"] == (None if pd.isna(wanted) else wanted), told["rule"]
            reported = [s["status"] for s in told["subscriptions"] if s["reported"]]
            stripe = issue[IssueCol.STRIPE_STATUS]
            assert reported == ([] if pd.isna(stripe) else [stripe])
        else:  # in sync: it holds exactly what it should
            held = told["heldRoles"]["managed"]
            assert held == ([told["expectedRole"]] if told["expectedRole"] else []), told["rule"]


def test_the_reported_subscription_is_the_newest_granting_one() -> None:
    subs = pd.DataFrame(
        [
            sub("cus_1", "active", created=100, sub_id="sub_old"),
            sub("cus_1", "incomplete", created=200, sub_id="sub_new"),
            sub("cus_2", "active", created=100, sub_id="sub_other"),
        ]
    )

    listed = subscriptions_of("cus_1", subs, AccessPolicy())

    assert [(s["id"], s["grantsAccess"], s["reported"]) for s in listed] == [
        ("sub_new", False, False),
        ("sub_old", True, True),
    ]


def _resolve(query: str, kind: SubjectKind | None = None):
    frames = Snapshot(
        members=[
            member("m1", discord_id="1001", customer="cus_1", email="Ann@Example.com"),
            member("m2", discord_id=None, customer=None, email="twin@example.com"),
            member("m3", discord_id=None, customer=None, email="twin@example.com"),
            member("4004", discord_id=None, customer=None),
            member("m5", discord_id="1005", customer=None, team="t1"),
        ],
        teams=[team("t1", customer="cus_t1")],
        subs=[sub("cus_1"), sub("cus_t1"), sub("cus_lone")],
        guild=account("1001", "Lord") + account("4004") + account("2002", "Squire"),
    ).frames()
    return find_subject(
        query,
        members=frames["members"],
        teams=frames["teams"],
        subscriptions=frames["subscriptions"],
        guild_member_roles=frames["guild_member_roles"],
        exceptions=frames["exceptions"],
        kind=kind,
    )


@pytest.mark.parametrize(
    ("query", "kind", "members", "account"),
    [
        ("m1", SubjectKind.MEMBER, ("m1",), None),
        (" ann@example.COM ", SubjectKind.EMAIL, ("m1",), None),
        ("01001", SubjectKind.DISCORD, ("m1",), 1001),
        ("2002", SubjectKind.DISCORD, (), 2002),
        ("cus_t1", SubjectKind.CUSTOMER, ("m5",), None),
        ("cus_lone", SubjectKind.CUSTOMER, (), None),
    ],
)
def test_each_kind_of_subject_is_found(query, kind, members, account) -> None:
    subject = _resolve(query)

    assert (subject.kind, subject.member_ids, subject.account) == (kind, members, account)


def test_unknown_and_ambiguous_subjects_are_refused_saying_which() -> None:
    with pytest.raises(UnknownSubjectError, match="nothing in the snapshots matches 'nobody'"):
        _resolve("nobody")
    with pytest.raises(AmbiguousSubjectError, match="belongs to 2 member records"):
        _resolve("twin@example.com")
    with pytest.raises(AmbiguousSubjectError, match=r"names different things.*--as member\|disc"):
        _resolve("4004")
    assert _resolve("4004", SubjectKind.DISCORD).account == 4004
    assert _resolve("4004", SubjectKind.MEMBER).member_ids == ("4004",)


def test_history_spans_runs_old_and_new_and_lists_each_attempt() -> None:
    issue = Snapshot(
        members=[member("m1", discord_id="1001", customer="cus_1")],
        subs=[sub("cus_1")],
        guild=account("1001"),
    ).drift()
    day1, day2 = dt.datetime(2026, 11, 28, 8), dt.datetime(2026, 11, 29, 8)
    old = issue.assign(**{RUN: "run-1", ex.DAY: "2026-11-28"})  # stored before fingerprints
    new = identify(issue, None, observed_at=day2).issues.assign(
        **{RUN: "run-2", ex.DAY: "2026-11-29", OutcomeCol.OUTCOME: "failed",
           OutcomeCol.OUTCOME_DETAIL: "HTTP 403", ATTEMPT: "run-2"}
    )  # fmt: skip
    retry = new.assign(**{OutcomeCol.OUTCOME: "fixed", OutcomeCol.OUTCOME_DETAIL: None,
                          ATTEMPT: "run-2-again"})  # fmt: skip
    runs = [RunSeen("run-1", "2026-11-28", day1), RunSeen("run-2", "2026-11-29", day2)]

    told = summarize_history(pd.concat([old, new, retry], ignore_index=True), runs)

    [span] = told["issues"]
    assert (span["type"], span["runs"]) == ("MISSING_ACCESS", 2)
    assert span["fingerprint"] == new[IssueCol.FINGERPRINT].iloc[0]
    assert (told["firstSeen"], told["lastSeen"]) == ("2026-11-28T08:00:00", "2026-11-29T08:00:00")
    assert [(a["runId"], a["outcome"], a["detail"]) for a in told["fixAttempts"]] == [
        ("run-2", "failed", "HTTP 403"),
        ("run-2-again", "fixed", None),
    ]


def test_history_lists_the_exceptions_its_issues_carried() -> None:
    issue = Snapshot(
        members=[member("m1", discord_id="1001", customer=None)],
        guild=account("1001"),
    ).drift()
    seen = dt.datetime(2026, 11, 29, 8)
    stored = identify(issue, None, observed_at=seen).issues.assign(
        **{RUN: "run-1", ex.DAY: "2026-11-29", IssueCol.ACCESS_EXCEPTION: "3"}
    )

    told = summarize_history(stored, [RunSeen("run-1", "2026-11-29", seen)])

    assert told["exceptions"] == ["3"]
    assert told["fixAttempts"] == []  # a drift table alone holds no attempt
