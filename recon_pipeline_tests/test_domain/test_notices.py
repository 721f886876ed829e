"""Admin notices: when one is due, what it says, and Discord's 2000-character limit."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from recon_pipeline.domain.notices import compose_notice, discord_message, needs_notice


def _issue(kind: str, n: int, outcome: str = "fixed") -> dict[str, Any]:
    return {"type": kind, "description": f"{kind} example {n} " + "x" * 60, "outcome": outcome}


def _record(issues: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "run-123",
        "triggeredBy": "scheduled",
        "autoFixEnabled": True,
        "issuesFound": len(issues),
        "issuesFixed": sum(i["outcome"] == "fixed" for i in issues),
        "issues": issues,
        **extra,
    }


@pytest.mark.parametrize(
    ("record", "guard", "due"),
    [
        (_record([]), False, False),
        (_record([_issue("MISSING_ACCESS", 1)]), False, True),
        (_record([], failure="step x failed"), False, True),
        (_record([]), True, True),
    ],
)
def test_needs_notice_only_for_issues_failures_or_a_tripped_guard(
    record: dict[str, Any], guard: bool, due: bool
) -> None:
    assert needs_notice(record, guard_tripped=guard, notify="always") is due


def test_notice_groups_by_type_with_counts_examples_fix_status_and_link() -> None:
    issues = [_issue("ROLE_MISMATCH", n) for n in range(5)] + [
        _issue("NOT_IN_GUILD", 1, "not_attempted")
    ]

    notice = compose_notice(_record(issues), run_url="http://ui.example/runs/run-123")

    assert notice.subject == "[recon_pipeline] Reconciliation: 6 issue(s) found"
    text = notice.text
    assert "run-123" in text and "auto-fix on: 5 of 6 issue(s) fixed" in text
    assert "ROLE_MISMATCH: 5 (5 fixed)" in text and "NOT_IN_GUILD: 1 (0 fixed)" in text
    assert "ROLE_MISMATCH example 2" in text and "ROLE_MISMATCH example 3" not in text
    assert "… and 2 more" in text
    assert text.splitlines()[-1] == "Run: http://ui.example/runs/run-123"
    # types in the order of docs/behaviour.md §2
    assert text.index("ROLE_MISMATCH:") < text.index("NOT_IN_GUILD:")


def test_notice_of_a_failed_dry_run_says_so() -> None:
    record = _record([], failure="step stripe_subscriptions failed: boom", autoFixEnabled=False)

    notice = compose_notice(record, guard_text="guard tripped, removals held back: …")

    assert notice.subject == "[recon_pipeline] Reconciliation run failed"
    assert "The run FAILED: step stripe_subscriptions failed: boom" in notice.text
    assert "dry run: nothing was changed" in notice.text
    assert "Blast-radius guard: guard tripped" in notice.text


@pytest.mark.parametrize("count", [1, 50, 500, 10_000])
def test_discord_message_stays_within_the_limit_and_keeps_counts_and_link(count: int) -> None:
    kinds = ["MISSING_ACCESS", "UNAUTHORIZED_ACCESS", "ROLE_MISMATCH", "ORPHANED_ACCESS"]
    issues = [_issue(kinds[n % 4], n) for n in range(count)]
    notice = compose_notice(_record(issues), run_url="http://ui.example/runs/run-123", examples=50)

    message = discord_message(notice)

    assert len(message) <= 2000
    assert message.startswith("**[recon_pipeline] Reconciliation:")
    assert message.endswith("Run: http://ui.example/runs/run-123")
    for kind in {kinds[n % 4] for n in range(count)}:
        assert f"{kind}: " in message
    if len(notice.text) > 2000:
        assert "left out to fit Discord's limit" in message


def test_discord_message_cuts_an_enormous_failure_text() -> None:
    notice = compose_notice(_record([], failure="x" * 5000))

    message = discord_message(notice)

    assert len(message) == 2000
    assert message.endswith("(cut to fit Discord's limit)")


def _aged(status: str, *, outcome: str = "skipped", **more: Any) -> dict[str, Any]:
    return {"type": "MISSING_ACCESS", "severity": "HIGH", "status": status, "outcome": outcome,
            "description": f"a {status} one"} | more  # fmt: skip


@pytest.mark.parametrize(
    ("issues", "changes", "always"),
    [
        pytest.param([_aged("persisting")], False, True, id="repeat"),
        pytest.param([_aged("persisting"), _aged("new")], True, True, id="something-new"),
        pytest.param([_aged("persisting", outcome="failed")], True, True, id="a-fix-failed"),
        pytest.param([], False, False, id="clean"),
    ],
)
def test_under_changes_only_news_and_failures_call_for_a_notice(
    issues: list[dict[str, Any]], changes: bool, always: bool
) -> None:
    record = {"id": "r", "issuesFound": len(issues), "issues": issues}

    assert needs_notice(record, guard_tripped=False, notify="changes") is changes
    assert needs_notice(record, guard_tripped=False, notify="always") is always
    assert needs_notice({**record, "failure": "boom"}, guard_tripped=False, notify="changes")


def test_a_notice_leads_with_new_issues_and_long_open_high_ones() -> None:
    now = dt.datetime(2026, 11, 30, 8, 0)
    issues = [
        _aged("persisting", firstSeen="2026-11-27T08:00:00", description="open three days"),
        _aged("persisting", firstSeen="2026-11-29T08:00:00", description="open one day"),
        _aged("persisting", firstSeen="2026-11-01T08:00:00", description="old", severity="MEDIUM"),
        _aged("persisting", firstSeen="2026-11-28T08:00:00", description="open two days"),
        _aged("persisting", firstSeen="2026-11-28T08:00:01", description="a second short"),
        _aged("new", firstSeen="2026-11-30T08:00:00", description="just found"),
    ]
    record = {"id": "r", "issuesFound": len(issues), "issues": issues, "completedAt": now}

    lines = compose_notice(record).lines

    assert lines[1:3] == ("New since the previous run: 1", "  - MISSING_ACCESS: just found")
    # Open two days exactly counts, a second less does not; a MEDIUM issue never does.
    assert lines[3:6] == (
        "HIGH issues open for 2 days or more: 2",
        "  - since 2026-11-27: open three days",
        "  - since 2026-11-28: open two days",
    )
