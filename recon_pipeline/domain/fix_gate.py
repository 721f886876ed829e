"""May this run apply fixes? The checks on a fixing step's inputs, and why fixes are withheld.

A run applies fixes only when auto-fix is on, for the day it took its snapshots, from snapshots
its own run (or the run it re-executes) took, that passed the completeness check and are still
fresh. Otherwise every issue is skipped with one of these reasons. The fixing lease adds two
more (another run holds it; another run fixed things after these snapshots were taken).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from recon_pipeline.domain.provenance import FixingMark, FrameOrigin


class WithheldCode(StrEnum):
    """Why a run applied no fix; the run tag `recon/fixes_withheld` carries it."""

    DRY_RUN = "dry_run"  # auto-fix off: not "withheld", but every fix is skipped
    PAST_DAY = "past_day"
    NOT_OWN_SNAPSHOTS = "not_own_snapshots"
    UNVERIFIED_SNAPSHOTS = "unverified_snapshots"
    STALE_SNAPSHOTS = "stale_snapshots"
    LEASE_HELD = "lease_held"
    FIXED_MEANWHILE = "fixed_meanwhile"

    @property
    def another_run(self) -> bool:
        """Withheld because of another run (`recon-pipeline run` exits non-zero)."""
        return self in (WithheldCode.LEASE_HELD, WithheldCode.FIXED_MEANWHILE)


@dataclass(frozen=True)
class Withheld:
    code: WithheldCode
    reason: str


def why_withheld(
    *,
    auto_fix: bool,
    day: str,
    today: str,
    chain: Collection[str],
    inputs: Sequence[FrameOrigin | None],
    snapshot_problems: Sequence[str] | None,
    now: dt.datetime,
    max_age: dt.timedelta,
) -> Withheld | None:
    """Why this run must not apply fixes, or None when its inputs allow it.

    Args:
        auto_fix: whether fixes were asked for (launch config, else the deployment's setting).
        day: the run's partition; `today` the local date now.
        chain: this run and the runs it re-executes.
        inputs: every stored frame the fixes rest on (None: one of unknown origin).
        snapshot_problems: what the completeness check found on those snapshots (None: it
            was never evaluated on them).
        now: UTC, naive; `max_age` the oldest a snapshot may be.
    """
    if not auto_fix:
        return Withheld(WithheldCode.DRY_RUN, "dry run: auto-fix is off")
    if day != today:
        return Withheld(
            WithheldCode.PAST_DAY,
            f"{day} is a past day: only a run on the day of its snapshots applies fixes",
        )
    if any(origin is None for origin in inputs):
        return Withheld(
            WithheldCode.NOT_OWN_SNAPSHOTS,
            "an input of the fixing step was not read from the frame store, so where it came "
            "from is unknown",
        )
    known = [o for o in inputs if o is not None]
    foreign = sorted({f"{o.frame} (run {o.run_id})" for o in known if o.run_id not in chain})
    if foreign:
        return Withheld(
            WithheldCode.NOT_OWN_SNAPSHOTS,
            f"{', '.join(foreign)} of {day} were not taken by this run or the run it "
            "re-executes: fixes are applied only from a run's own snapshots (run the whole "
            "reconciliation_job)",
        )
    if snapshot_problems is None:
        return Withheld(
            WithheldCode.UNVERIFIED_SNAPSHOTS,
            "the snapshots were never checked by snapshots_complete, so fixes are withheld",
        )
    if snapshot_problems:
        return Withheld(
            WithheldCode.UNVERIFIED_SNAPSHOTS,
            "the snapshots failed snapshots_complete: " + "; ".join(snapshot_problems),
        )
    snapshots = [o for o in known if o.taken_at is not None]
    if not snapshots or any(o.fixing_mark is None for o in snapshots):
        return Withheld(
            WithheldCode.UNVERIFIED_SNAPSHOTS,
            "the snapshots do not say when they were taken, so their age cannot be checked",
        )
    oldest = min(snapshots, key=lambda o: o.taken_at or now)
    age = now - (oldest.taken_at or now)
    if age > max_age:
        return Withheld(
            WithheldCode.STALE_SNAPSHOTS,
            f"{oldest.frame} was taken {_minutes(age)} ago (at {oldest.taken_at:%Y-%m-%d %H:%M} "
            f"UTC), more than RECONCILIATION_MAX_SNAPSHOT_AGE_MINUTES={_minutes(max_age)}: "
            "fixes are applied only from fresh snapshots (run the whole reconciliation_job)",
        )
    return None


def snapshot_marks(inputs: Sequence[FrameOrigin | None]) -> list[FixingMark]:
    """The fixing lease as each snapshot among `inputs` began."""
    return [o.fixing_mark for o in inputs if o is not None and o.fixing_mark is not None]


def lease_held(holder_run_id: str, waited: dt.timedelta) -> Withheld:
    return Withheld(
        WithheldCode.LEASE_HELD,
        f"run {holder_run_id} holds the fixing lease (only one run fixes at a time); this run "
        f"waited {_minutes(waited)} (RECONCILIATION_LEASE_WAIT_MINUTES) and fixed nothing",
    )


def fixed_meanwhile(run_ids: Sequence[str]) -> Withheld:
    runs = ", ".join(f"run {r}" for r in dict.fromkeys(run_ids))
    return Withheld(
        WithheldCode.FIXED_MEANWHILE,
        f"{runs} fixed drift after this run's snapshots were taken, so its plan may be out of "
        "date; fixes are withheld and the next run acts on fresh snapshots",
    )


def _minutes(span: dt.timedelta) -> str:
    minutes = span.total_seconds() / 60
    return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min"
