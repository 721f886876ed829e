"""One day's drift table as `drift_issues` stores it (docs/behaviour.md §2 and §4).

The engine's issues with the fixes bad data would make wrong withheld, the data anomalies in
plain words, what the completeness check found, and which stored snapshots the table rests on,
so a fixing step that reads it later (a re-execution) can check both where it acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

from recon_pipeline.domain.anomalies import data_anomalies, withhold_unsafe_fixes
from recon_pipeline.domain.completeness import snapshot_problems
from recon_pipeline.domain.drift import find_drift_issues
from recon_pipeline.domain.policy import AccessPolicy
from recon_pipeline.domain.provenance import COMPLETENESS, origin_of, set_sources


class DaySnapshots(NamedTuple):
    """The five snapshots a day's drift table is computed from, in the engine's terms."""

    members: pd.DataFrame
    teams: pd.DataFrame
    subscriptions: pd.DataFrame
    guild_member_roles: pd.DataFrame
    guild_roles: pd.DataFrame


@dataclass(frozen=True)
class DriftTable:
    issues: pd.DataFrame  # its attrs name the snapshots and the completeness problems
    anomalies: list[str]  # one warning per kind of bad data
    problems: list[str]  # why the snapshots look incomplete; empty when whole


def drift_table(snapshots: DaySnapshots, policy: AccessPolicy) -> DriftTable:
    """The day's drift table from its snapshots.

    Raises:
        RoleResolutionError: a managed role is missing from, or ambiguous in, the guild.
    """
    members, teams, subscriptions, guild_member_roles, _ = snapshots
    issues = find_drift_issues(**snapshots._asdict(), policy=policy)
    issues = withhold_unsafe_fixes(issues, members, teams=teams, subscriptions=subscriptions)
    problems = snapshot_problems(members, teams, subscriptions, guild_member_roles)
    issues.attrs = {}  # pandas may have carried an input's attrs over
    set_sources(issues, [origin_of(frame) for frame in snapshots])
    issues.attrs[COMPLETENESS] = problems
    return DriftTable(
        issues=issues,
        anomalies=data_anomalies(members, teams, subscriptions),
        problems=problems,
    )
