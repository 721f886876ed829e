"""Fix planning (docs/behaviour.md §3, §4): issue table → one action per role change or status
write, the blast-radius guard, and each issue's outcome once the actions have run.

Pure functions over frames; the caller performs the actions and hands back their results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

import numpy as np
import pandas as pd

from recon_pipeline.domain.columns import GuildMemberRoleCol, IssueCol, require_columns
from recon_pipeline.domain.policy import DATABASE_GRANTING_STATUSES, DriftType


class ActionKind(StrEnum):
    ADD_ROLE = "add_role"
    REMOVE_ROLE = "remove_role"
    SET_STATUS = "set_status"


class Outcome(StrEnum):
    """What happened to an issue (or one of its actions) in a run."""

    FIXED = "fixed"
    FAILED = "failed"
    SKIPPED = "skipped"  # a fix exists but was deliberately not applied; the reason says why
    NOT_ATTEMPTED = "not_attempted"  # no fix exists, or the run stopped before reaching it


class ActionCol:
    """One planned action: a single Discord role change or a single status-column write."""

    ISSUE = "issue"  # row position of the issue in the drift issue table
    KEY = "action_key"  # stable across re-executions of the same run
    KIND = "action"
    TYPE = "issue_type"
    MEMBER_ID = "member_id"
    TEAM_ID = "team_id"
    DISCORD_ID = "discord_id"
    VALUE = "value"  # role name, or the status written
    # The issue's fix only takes access away (roles, or a cached status that granted it):
    # the blast-radius guard holds these back.
    REMOVAL_ONLY = "removal_only"
    AWAITING = "awaiting"  # why the issue's removal waits for confirmation; empty: it does not

    ALL = (ISSUE, KEY, KIND, TYPE, MEMBER_ID, TEAM_ID, DISCORD_ID, VALUE, REMOVAL_ONLY, AWAITING)


class ResultCol:
    """The result of one action, as the applier reports it."""

    KEY = ActionCol.KEY
    OUTCOME = "outcome"
    DETAIL = "detail"  # error text for failed, reason for skipped / not attempted

    ALL = (KEY, OUTCOME, DETAIL)


class OutcomeCol:
    """Columns added to the drift issue table once fixing is done."""

    OUTCOME = "outcome"
    OUTCOME_DETAIL = "outcome_detail"
    ACTIONS_TAKEN = "actions_taken"  # tuple of "add_role Knight" / "set_status ACTIVE" done

    ALL = (OUTCOME, OUTCOME_DETAIL, ACTIONS_TAKEN)


# Fixes that only take roles away: the ones the blast-radius guard holds back.
REMOVAL_ONLY_TYPES = frozenset({DriftType.UNAUTHORIZED_ACCESS, DriftType.ORPHANED_ACCESS})
REPORT_ONLY_TYPES = frozenset({DriftType.NOT_IN_GUILD})


@dataclass(frozen=True)
class GuardPolicy:
    """Removals above both `floor` and `fraction` × holders trip the guard."""

    floor: int = 5
    fraction: float = 0.25


@dataclass(frozen=True)
class GuardDecision:
    planned_removals: int
    holders: int
    floor: int
    fraction: float
    overridden: bool = False

    @property
    def _share(self) -> Fraction:
        # The fraction as written (0.29 is 29/100), so "exceeds 29% of 100" is exact arithmetic.
        return Fraction(str(self.fraction)) * self.holders

    @property
    def limit(self) -> int:
        """The most removals a run may apply without tripping the guard."""
        return max(self.floor, math.floor(self._share))

    @property
    def tripped(self) -> bool:
        return self.planned_removals > self.floor and self.planned_removals > self._share

    @property
    def blocks_removals(self) -> bool:
        return self.tripped and not self.overridden

    @property
    def state(self) -> str:
        """ "ok", "tripped" (removals held back) or "overridden" (applied all the same)."""
        if not self.tripped:
            return "ok"
        return "overridden" if self.overridden else "tripped"

    def describe(self) -> str:
        numbers = (
            f"{self.planned_removals} planned removal(s), limit {self.limit} "
            f"(floor {self.floor}, {self.fraction:g} × {self.holders} role holders)"
        )
        if not self.tripped:
            return f"guard not tripped: {numbers}"
        if self.overridden:
            return f"guard tripped but overridden for this run: {numbers}"
        return f"guard tripped, removals held back: {numbers}"


def count_role_holders(guild_member_roles: pd.DataFrame, managed_role_ids: set[str]) -> int:
    """Guild accounts holding at least one managed role."""
    require_columns(guild_member_roles, GuildMemberRoleCol.ALL, "guild member roles")
    holds = guild_member_roles[GuildMemberRoleCol.ROLE_ID].isin(list(managed_role_ids))
    return int(guild_member_roles.loc[holds, GuildMemberRoleCol.DISCORD_ID].nunique())


def status_downgrades(issues: pd.DataFrame) -> pd.Series:
    """STALE_DATABASE_STATUS issues whose fix rewrites a granting cached status to a
    non-granting one: a removal of access as far as the app is concerned (a Stripe key of the
    wrong account would otherwise rewrite every paying member's status)."""
    granting = [s.value for s in DATABASE_GRANTING_STATUSES]
    fix = issues[IssueCol.STATUS_FIX]
    return (
        (issues[IssueCol.TYPE] == DriftType.STALE_DATABASE_STATUS)
        & issues[IssueCol.DATABASE_STATUS].isin(granting)
        & fix.notna()  # missing where bad data withheld it
        & ~fix.isin(granting)
    )


def takes_access_away(issues: pd.DataFrame) -> pd.Series:
    """Issues whose planned fix only takes access away: the ones the guard counts and holds."""
    removal_only = issues[IssueCol.TYPE].isin(list(REMOVAL_ONLY_TYPES))
    has_removal = pd.Series(False, index=issues.index)
    # Sized only where the type allows a removal: a Python call per row, so not on every row.
    has_removal[removal_only] = (
        issues.loc[removal_only, IssueCol.ROLES_TO_REMOVE].map(len).astype("bool")
    )  # empty where bad data withheld the fix
    return (removal_only & has_removal) | status_downgrades(issues)


def awaiting(issues: pd.DataFrame) -> pd.Series:
    """Issues whose removal waits for the next run's confirmation (domain/confirmation.py); none
    in tables stored before confirmation existed."""
    if IssueCol.AWAITING_CONFIRMATION not in issues:
        return pd.Series(False, index=issues.index)
    reason = issues[IssueCol.AWAITING_CONFIRMATION]
    return reason.notna() & (reason.astype("str") != "")


def evaluate_guard(
    issues: pd.DataFrame, holders: int, policy: GuardPolicy, *, override: bool = False
) -> GuardDecision:
    """Count the issues whose fix only takes access away (role removals and status downgrades)
    and would be applied this run (not awaiting confirmation), and decide whether the guard
    trips."""
    removals = int((takes_access_away(issues) & ~awaiting(issues)).sum())
    return GuardDecision(removals, holders, policy.floor, policy.fraction, overridden=override)


def plan_fix_actions(issues: pd.DataFrame) -> pd.DataFrame:
    """One row per action: each role to add, each role to remove, each status to write.

    Within an issue the grant comes before the removals: if the grant fails, the applier holds
    the removals back, so a failed swap never leaves a paying member with no role at all.
    """
    require_columns(issues, IssueCol.ALL, "drift issues")
    frame = issues.reset_index(drop=True)
    guarded = takes_access_away(frame).to_numpy()
    parts = []
    for kind, column in ((ActionKind.REMOVE_ROLE, IssueCol.ROLES_TO_REMOVE),
                         (ActionKind.ADD_ROLE, IssueCol.ROLES_TO_ADD)):  # fmt: skip
        roles = frame[column].map(lambda v: tuple(v) if isinstance(v, (tuple, list)) else ())
        exploded = roles.explode().dropna()
        rows = exploded.index.to_numpy()
        parts.append(_actions(frame, rows, kind, exploded.to_numpy(), guarded[rows]))
    stale = (frame[IssueCol.TYPE] == DriftType.STALE_DATABASE_STATUS) & (
        frame[IssueCol.STATUS_FIX].notna()  # missing where bad data withheld it: nothing to write
    )
    rows = np.flatnonzero(stale.to_numpy())
    statuses = frame[IssueCol.STATUS_FIX].to_numpy()[rows]
    parts.append(_actions(frame, rows, ActionKind.SET_STATUS, statuses, guarded[rows]))
    actions = pd.concat(parts, ignore_index=True)
    order = {ActionKind.ADD_ROLE: 0, ActionKind.REMOVE_ROLE: 1, ActionKind.SET_STATUS: 2}
    actions["_order"] = actions[ActionCol.KIND].map(order)
    actions = actions.sort_values([ActionCol.ISSUE, "_order", ActionCol.VALUE], kind="stable")
    return actions.drop(columns="_order").reset_index(drop=True)


def _actions(
    frame: pd.DataFrame,
    rows: np.ndarray,
    kind: ActionKind,
    values: np.ndarray,
    guarded: np.ndarray,
) -> pd.DataFrame:
    picked = frame.iloc[rows]
    subject = (
        picked[IssueCol.MEMBER_ID]
        .fillna("team:" + picked[IssueCol.TEAM_ID])
        .fillna("discord:" + picked[IssueCol.DISCORD_ID])
    )
    values = pd.Series(values, index=picked.index, dtype="str")
    waits = awaiting(picked)
    reason = picked[IssueCol.AWAITING_CONFIRMATION].where(waits, "") if waits.any() else ""
    return pd.DataFrame(
        {
            ActionCol.ISSUE: rows.astype("int64"),
            ActionCol.KEY: picked[IssueCol.TYPE] + "|" + subject + "|" + kind.value + "|" + values,
            ActionCol.KIND: kind.value,
            ActionCol.TYPE: picked[IssueCol.TYPE],
            ActionCol.MEMBER_ID: picked[IssueCol.MEMBER_ID],
            ActionCol.TEAM_ID: picked[IssueCol.TEAM_ID],
            ActionCol.DISCORD_ID: picked[IssueCol.DISCORD_ID],
            ActionCol.VALUE: values,
            ActionCol.REMOVAL_ONLY: guarded.astype(bool),
            ActionCol.AWAITING: reason,
        },
        columns=list(ActionCol.ALL),
    ).astype(
        {c: "str" for c in ActionCol.ALL if c not in (ActionCol.ISSUE, ActionCol.REMOVAL_ONLY)}
    )


def skipped_results(
    actions: pd.DataFrame, outcome: Outcome, detail: str | pd.Series
) -> pd.DataFrame:
    """The same outcome for every action in `actions`, with one reason for all or, given a
    Series aligned with `actions`, each its own."""
    details = detail.to_numpy() if isinstance(detail, pd.Series) else detail
    return pd.DataFrame(
        {
            ResultCol.KEY: actions[ActionCol.KEY].to_numpy(),
            ResultCol.OUTCOME: outcome.value,
            ResultCol.DETAIL: details,
        },
        columns=list(ResultCol.ALL),
    ).astype("str")


def issue_outcomes(
    issues: pd.DataFrame, actions: pd.DataFrame, results: pd.DataFrame
) -> pd.DataFrame:
    """The issue table with `OutcomeCol` columns, from its actions' results.

    An issue is fixed when all its actions were, failed when any failed, otherwise skipped or
    not attempted as its actions were; an issue with no action (report only) is not attempted.
    """
    frame = issues.reset_index(drop=True).copy()
    merged = actions.merge(results, on=ResultCol.KEY, how="left", validate="one_to_one")
    merged[ResultCol.OUTCOME] = merged[ResultCol.OUTCOME].fillna(Outcome.NOT_ATTEMPTED.value)
    merged[ResultCol.DETAIL] = merged[ResultCol.DETAIL].fillna("")
    rank = {Outcome.FAILED: 0, Outcome.SKIPPED: 1, Outcome.NOT_ATTEMPTED: 2, Outcome.FIXED: 3}
    merged["_rank"] = merged[ResultCol.OUTCOME].map(rank)
    worst = merged.sort_values(["_rank"], kind="stable").drop_duplicates(ActionCol.ISSUE)
    worst = worst.set_index(ActionCol.ISSUE)

    done = merged[merged[ResultCol.OUTCOME] == Outcome.FIXED]
    taken = (done[ActionCol.KIND] + " " + done[ActionCol.VALUE]).groupby(done[ActionCol.ISSUE])
    taken = taken.agg(tuple)

    positions = pd.RangeIndex(len(frame))
    frame[OutcomeCol.OUTCOME] = (
        worst[ResultCol.OUTCOME].reindex(positions).fillna(Outcome.NOT_ATTEMPTED.value).to_numpy()
    )
    # An issue with no action is report only, unless bad data withheld its fix.
    no_fix = pd.Series("report only: nothing to fix", index=positions, dtype="str")
    if IssueCol.FIX_WITHHELD in frame:  # tables stored by earlier versions lack the column
        reason = frame[IssueCol.FIX_WITHHELD].astype("str")
        withheld = (reason.notna() & (reason != "")).to_numpy(dtype=bool)
        no_fix[withheld] = "fix withheld: " + reason[withheld]
    frame[OutcomeCol.OUTCOME_DETAIL] = (
        worst[ResultCol.DETAIL].reindex(positions).fillna(no_fix).to_numpy()
    )
    frame[OutcomeCol.ACTIONS_TAKEN] = (
        taken.reindex(positions).map(lambda v: v if isinstance(v, tuple) else ()).to_numpy()
    )
    frame = frame.astype({OutcomeCol.OUTCOME: "str", OutcomeCol.OUTCOME_DETAIL: "str"})
    return frame
