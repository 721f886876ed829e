"""Issue identity: the same account, type and wanted change keep one fingerprint (pure)."""

from __future__ import annotations

import pandas as pd

from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.identity import fingerprints, issue_keys
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
