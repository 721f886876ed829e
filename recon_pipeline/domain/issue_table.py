"""One day's drift table as `drift_issues` stores it (docs/behaviour.md §2 and §4).

The engine's issues over the day's snapshots and the access exceptions live that day, with the
fixes bad data would make wrong withheld and the removals the previous complete run did not
find marked as awaiting confirmation; the data anomalies in plain words, what the completeness
check found, the exceptions that lapsed since the previous run, and which stored snapshots the
table rests on, so a fixing step that reads it later (a re-execution) can check both where it
acts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

from recon_pipeline.domain.access_exceptions import (
    describe_exception,
    lapsed_since,
    live_exceptions,
)
from recon_pipeline.domain.anomalies import data_anomalies, withhold_unsafe_fixes
from recon_pipeline.domain.completeness import snapshot_problems
from recon_pipeline.domain.confirmation import await_confirmation
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.fixes import awaiting
from recon_pipeline.domain.identity import identify
from recon_pipeline.domain.policy import AccessPolicy
from recon_pipeline.domain.provenance import (
    COMPLETENESS,
    LAPSED_EXCEPTIONS,
    PREVIOUS_RUN,
    RESOLVED,
    origin_of,
    set_sources,
)


class DaySnapshots(NamedTuple):
    """The snapshots a day's drift table is computed from, in the engine's terms."""

    members: pd.DataFrame
    teams: pd.DataFrame
    subscriptions: pd.DataFrame
    guild_member_roles: pd.DataFrame
    guild_roles: pd.DataFrame
    exceptions: pd.DataFrame  # every access exception not removed, live or expired


@dataclass(frozen=True)
class PreviousRun:
    """The previous complete run: its id, its day, the drift table it found and the access
    exceptions it snapshotted."""

    run_id: str
    day: str
    issues: pd.DataFrame
    exceptions: pd.DataFrame | None = None  # None: it predates exceptions
    observed_at: dt.datetime | None = None  # when its snapshots were taken


@dataclass(frozen=True)
class Confirmation:
    """How removals are confirmed in this run."""

    required: bool  # RECONCILIATION_CONFIRM_REMOVALS
    run_id: str  # this run: where a removal found now was first seen
    previous: PreviousRun | None = None
    observed_at: dt.datetime | None = None  # when this run's snapshots were taken


@dataclass(frozen=True)
class DriftTable:
    issues: pd.DataFrame  # its attrs name the snapshots, completeness, previous run, lapses
    anomalies: list[str]  # one warning per kind of bad data
    problems: list[str]  # why the snapshots look incomplete; empty when whole
    lapsed: list[str] = field(default_factory=list)  # exceptions lapsed since the previous run
    resolved: int = 0  # issues the previous run found that this one does not

    @property
    def awaiting(self) -> int:
        """Removals that wait for the next run's confirmation."""
        return int(awaiting(self.issues).sum())


def drift_table(
    snapshots: DaySnapshots, policy: AccessPolicy, *, day: str, confirmation: Confirmation
) -> DriftTable:
    """The drift table of `day` from its snapshots.

    Raises:
        RoleResolutionError: a managed role is missing from, or ambiguous in, the guild.
    """
    members, teams, subscriptions, guild_member_roles, guild_roles, exceptions = snapshots
    issues = find_drift_issues(
        members,
        teams,
        subscriptions,
        guild_member_roles,
        guild_roles,
        policy,
        live_exceptions(exceptions, day),
    )
    issues = withhold_unsafe_fixes(issues, members, teams=teams, subscriptions=subscriptions)
    previous = confirmation.previous
    if confirmation.required:
        issues = await_confirmation(
            issues,
            previous.issues if previous else None,
            first_seen_in=confirmation.run_id,
        )
    identified = identify(
        issues,
        previous.issues if previous else None,
        observed_at=confirmation.observed_at or dt.datetime.now(dt.UTC),
        previous_observed_at=previous.observed_at if previous else None,
    )
    issues = identified.issues
    problems = snapshot_problems(members, teams, subscriptions, guild_member_roles)
    lapsed = [
        describe_exception(row, policy.roles)
        for row in lapsed_since(
            exceptions,
            previous.exceptions if previous else None,
            previous.day if previous else None,
            day,
        )
        .astype(object)
        .to_dict("records")
    ]
    issues.attrs = {}  # pandas may have carried an input's attrs over
    set_sources(issues, [origin_of(frame) for frame in snapshots])
    issues.attrs[COMPLETENESS] = problems
    issues.attrs[PREVIOUS_RUN] = previous.run_id if previous else None
    issues.attrs[LAPSED_EXCEPTIONS] = lapsed
    issues.attrs[RESOLVED] = identified.resolved
    return DriftTable(
        issues=issues,
        anomalies=data_anomalies(members, teams, subscriptions),
        problems=problems,
        lapsed=lapsed,
        resolved=identified.resolved,
    )
