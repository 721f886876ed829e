"""Issue identity: the same account, type and wanted change keep one fingerprint (pure)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.confirmation import removal_keys
from recon_pipeline.domain.identity import fingerprints, identify, issue_keys
from recon_pipeline_tests.builders import Snapshot, account, guild, member, sub, team


def _snapshot(**changes: object) -> Snapshot:
    base: dict[str, object] = {
        "members": [
            member("m_unpaid", discord_id="1001", customer="cus_u", status="ACTIVE"),
            member("m_absent", discord_id="1002", customer="cus_a"),
            member("m_bad_id", discord_id="abc", customer="cus_b"),
        ],
        "teams": [team("t1", customer="cus_t", status="ACTIVE")],
        "subs": [sub("cus_u", "canceled"), sub("cus_a", "active"), sub("cus_b", "active")],
        "guild": guild(account("1001", "Lord"), account("2001", "Squire")),
    }
    return Snapshot(**(base | changes))


def _by_type(issues: pd.DataFrame) -> dict[tuple[str, str], str]:
    subject = (
        issues[IssueCol.MEMBER_ID]
        .fillna(issues[IssueCol.TEAM_ID])
        .fillna(issues[IssueCol.DISCORD_ID])
    )
    return dict(zip(zip(issues[IssueCol.TYPE], subject, strict=True), fingerprints(issues),
                    strict=True))  # fmt: skip


def test_the_same_issues_keep_their_fingerprints_across_runs_and_row_order() -> None:
    first = _snapshot().drift()
    again = _snapshot().drift().iloc[::-1].reset_index(drop=True)

    assert _by_type(first) == _by_type(again)
    assert fingerprints(first).str.fullmatch(r"[0-9a-f]{16}").all()
    assert fingerprints(first).is_unique


def test_a_different_wanted_change_is_a_different_issue() -> None:
    before = _by_type(_snapshot().drift())
    # The same account now holds Knight as well: the removal it needs is another one.
    after = _by_type(_snapshot(guild=guild(account("1001", "Lord", "Knight"),
                                           account("2001", "Squire"))).drift())  # fmt: skip

    assert before[("UNAUTHORIZED_ACCESS", "m_unpaid")] != after[("UNAUTHORIZED_ACCESS", "m_unpaid")]
    assert before[("ORPHANED_ACCESS", "2001")] == after[("ORPHANED_ACCESS", "2001")]


def test_unusable_ids_are_told_apart_by_member() -> None:
    keys = issue_keys(_snapshot().drift())

    assert "NOT_IN_GUILD|member:m_bad_id|Lord|||" in set(keys)
    assert "NOT_IN_GUILD|1002|Lord|||" in set(keys)
    assert "STALE_DATABASE_STATUS|team:t1||||NONE" in set(keys)


def test_a_fingerprint_stays_the_one_stored_tables_hold() -> None:
    # Literal on purpose: stored tables are matched by fingerprint, so a change of the key's text
    # or of the hash would turn every persisting issue into a new one.
    assert _by_type(_snapshot().drift())[("NOT_IN_GUILD", "m_absent")] == "08cd80cddb4b23b3"


def test_every_spelling_of_a_discord_id_gives_one_fingerprint() -> None:
    drift = _snapshot().drift()
    respelled = drift.copy()
    account = respelled[IssueCol.DISCORD_ID] == "1001"
    assert account.any()
    respelled.loc[account, IssueCol.DISCORD_ID] = "01001"

    assert fingerprints(respelled).tolist() == fingerprints(drift).tolist()


@pytest.mark.parametrize("unusable", ["abc", "0"])
def test_issue_and_removal_keys_name_the_same_account(unusable: str) -> None:
    drift = _snapshot().drift()
    drift.loc[drift[IssueCol.MEMBER_ID] == "m_unpaid", IssueCol.DISCORD_ID] = unusable
    removals = removal_keys(drift).dropna()

    def account(keys: pd.Series) -> pd.Series:
        return keys[removals.index].str.split("|").str[1]

    assert account(removals).tolist() == account(issue_keys(drift)).tolist()
    unauthorized = drift.index[drift[IssueCol.TYPE] == "UNAUTHORIZED_ACCESS"][0]
    assert account(removals)[unauthorized] == "member:m_unpaid"
    assert set(account(removals)) >= {"member:m_unpaid", "team:t1"}


MONDAY = dt.datetime(2026, 11, 30, 8, 0)
TUESDAY = dt.datetime(2026, 12, 1, 8, 0)


def test_issues_are_new_then_persisting_with_their_first_sighting() -> None:
    monday = identify(_snapshot().drift(), None, observed_at=MONDAY)
    assert set(monday.issues[IssueCol.ISSUE_STATUS]) == {"new"}
    assert set(monday.issues[IssueCol.FIRST_SEEN]) == {"2026-11-30T08:00:00"}

    # Tuesday: account 1001 paid again, and 1003 turned up with a role it should not have.
    tuesday_snapshot = _snapshot(
        subs=[sub("cus_u", "active"), sub("cus_a", "active"), sub("cus_b", "active")],
        guild=guild(account("1001", "Lord"), account("2001", "Squire"), account("2002", "Lord")),
    )
    tuesday = identify(tuesday_snapshot.drift(), monday.issues, observed_at=TUESDAY)

    rows = tuesday.issues.set_index(IssueCol.DISCORD_ID)
    assert rows.loc["2001", IssueCol.ISSUE_STATUS] == "persisting"
    assert rows.loc["2001", IssueCol.FIRST_SEEN] == "2026-11-30T08:00:00"
    assert rows.loc["2002", IssueCol.ISSUE_STATUS] == "new"
    assert rows.loc["2002", IssueCol.FIRST_SEEN] == "2026-12-01T08:00:00"
    # The unpaid member's removal and stale status are gone: resolved.
    assert tuesday.resolved == 2


def test_a_previous_table_without_ages_counts_its_issues_as_first_seen_then() -> None:
    old = _snapshot().drift()  # stored before issues had ages: no first_seen column
    old = old.drop(columns=[IssueCol.FINGERPRINT, IssueCol.FIRST_SEEN, IssueCol.ISSUE_STATUS])

    again = identify(_snapshot().drift(), old, observed_at=TUESDAY, previous_observed_at=MONDAY)

    assert set(again.issues[IssueCol.ISSUE_STATUS]) == {"persisting"}
    assert set(again.issues[IssueCol.FIRST_SEEN]) == {"2026-11-30T08:00:00"}
