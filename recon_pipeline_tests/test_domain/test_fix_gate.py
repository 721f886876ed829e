"""May a run apply fixes? Each reason to withhold them, and the one way through."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from recon_pipeline.domain.fix_gate import (
    Withheld,
    WithheldCode,
    fixed_meanwhile,
    lease_held,
    snapshot_marks,
    why_withheld,
)
from recon_pipeline.domain.provenance import FixingMark, FrameOrigin

NOW = dt.datetime(2026, 11, 30, 12, 0)
TODAY = "2026-11-30"
RUN, PARENT, OTHER = "run-b", "run-a", "run-x"
MARK = FixingMark(newest_session=4, active_session=None)


def _snapshot(frame: str, run_id: str = RUN, minutes_ago: float = 5) -> FrameOrigin:
    return FrameOrigin(frame, TODAY, run_id, 10, NOW - dt.timedelta(minutes=minutes_ago), MARK)


def _inputs(**changes: Any) -> list[FrameOrigin | None]:
    """The drift table, the two Discord frames and the five snapshots behind the drift table."""
    snapshots = [
        _snapshot(name)
        for name in (
            "membership_members",
            "membership_teams",
            "stripe_subscriptions",
            "discord_member_roles",
            "discord_roles",
        )
    ]
    inputs: list[FrameOrigin | None] = [
        FrameOrigin("drift_issues", TODAY, RUN, 3),
        snapshots[4],
        snapshots[3],
        *snapshots,
    ]
    for index, origin in changes.items():
        position = int(index.removeprefix("at_"))
        current = inputs[position]
        inputs[position] = origin(current) if callable(origin) else origin
    return inputs


def _decide(**overrides: Any) -> Withheld | None:
    arguments: dict[str, Any] = {
        "auto_fix": True,
        "day": TODAY,
        "today": TODAY,
        "chain": {RUN},
        "inputs": _inputs(),
        "snapshot_problems": [],
        "now": NOW,
        "max_age": dt.timedelta(minutes=120),
    }
    return why_withheld(**{**arguments, **overrides})


def test_a_run_with_its_own_complete_fresh_snapshots_may_fix() -> None:
    assert _decide() is None


def test_auto_fix_off_is_a_dry_run() -> None:
    assert _decide(auto_fix=False) == Withheld(WithheldCode.DRY_RUN, "dry run: auto-fix is off")


def test_a_past_day_is_never_fixed() -> None:
    withheld = _decide(day="2026-11-29")

    assert withheld is not None and withheld.code == WithheldCode.PAST_DAY
    assert "2026-11-29 is a past day" in withheld.reason


@pytest.mark.parametrize("position", [0, 1, 5])
def test_an_input_another_run_took_withholds_fixes_naming_it(position: int) -> None:
    withheld = _decide(
        inputs=_inputs(**{f"at_{position}": lambda o: dataclasses.replace(o, run_id=OTHER)})
    )

    assert withheld is not None and withheld.code == WithheldCode.NOT_OWN_SNAPSHOTS
    assert f"(run {OTHER})" in withheld.reason


def test_inputs_of_the_run_a_reexecution_continues_are_its_own() -> None:
    parents = _inputs(at_3=lambda o: dataclasses.replace(o, run_id=PARENT))

    assert _decide(inputs=parents, chain={RUN, PARENT}) is None
    assert _decide(inputs=parents, chain={RUN}) is not None


def test_an_input_of_unknown_origin_withholds_fixes() -> None:
    withheld = _decide(inputs=_inputs(at_2=None))

    assert withheld is not None and withheld.code == WithheldCode.NOT_OWN_SNAPSHOTS


def test_snapshots_that_failed_the_completeness_check_withhold_fixes_with_its_words() -> None:
    withheld = _decide(snapshot_problems=["Stripe returned no subscriptions at all"])

    assert withheld is not None and withheld.code == WithheldCode.UNVERIFIED_SNAPSHOTS
    assert withheld.reason.endswith("Stripe returned no subscriptions at all")


def test_snapshots_never_checked_withhold_fixes() -> None:
    withheld = _decide(snapshot_problems=None)

    assert withheld is not None and withheld.code == WithheldCode.UNVERIFIED_SNAPSHOTS


def test_a_snapshot_without_its_time_or_lease_mark_withholds_fixes() -> None:
    unstamped = _decide(inputs=_inputs(at_4=lambda o: dataclasses.replace(o, fixing_mark=None)))

    assert unstamped is not None and unstamped.code == WithheldCode.UNVERIFIED_SNAPSHOTS


@pytest.mark.parametrize(("minutes_ago", "fresh"), [(119, True), (120, True), (121, False)])
def test_snapshots_older_than_the_maximum_age_withhold_fixes(
    minutes_ago: float, fresh: bool
) -> None:
    old = _inputs(
        at_6=lambda o: dataclasses.replace(o, taken_at=NOW - dt.timedelta(minutes=minutes_ago))
    )

    withheld = _decide(inputs=old)

    assert (withheld is None) is fresh
    if not fresh:
        assert withheld is not None and withheld.code == WithheldCode.STALE_SNAPSHOTS
        assert "discord_member_roles was taken 121 min ago" in withheld.reason
        assert "RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES=120 min" in withheld.reason


def test_only_withholding_because_of_another_run_counts_as_another_run() -> None:
    assert lease_held(OTHER, dt.timedelta(minutes=10)).code.another_run
    assert fixed_meanwhile([OTHER]).code.another_run
    assert not WithheldCode.STALE_SNAPSHOTS.another_run
    assert not WithheldCode.DRY_RUN.another_run


def test_the_lease_reasons_name_the_other_run() -> None:
    assert (
        f"run {OTHER} holds the fixing lease" in lease_held(OTHER, dt.timedelta(seconds=3)).reason
    )
    assert fixed_meanwhile([OTHER, OTHER, PARENT]).reason.startswith(
        f"run {OTHER}, run {PARENT} fixed drift after this run's snapshots were taken"
    )


def test_snapshot_marks_are_those_of_the_snapshots_among_the_inputs() -> None:
    inputs = _inputs(at_1=None)

    assert snapshot_marks(inputs) == [MARK] * 6  # the drift table itself has none
