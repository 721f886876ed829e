"""Carry out planned fix actions (docs/behaviour.md §3): one Discord call per role change, one
UPDATE per stale status, each result recorded durably before the next action starts.

Recording each step as it happens is what makes a re-executed run safe: a role change is noted
as pending before its call and as fixed or failed after it, and a status write commits together
with its note. When a run works from the snapshots of the run it re-executes, an action recorded
as fixed under the same scope (the first run of the chain) is not repeated, and one left pending
by a killed attempt is first looked up on Discord, so a change that went through is not made
twice. One member's failure never stops the others; within one issue, a failed action holds back
the ones after it (a swap whose grant failed keeps its old role). Only errors that make every
further call futile (Discord blocking the bot or rejecting its token, Discord unavailable again
and again, a managed role that vanished, a role the bot may not manage) stop the calls they
would doom, and those actions say why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.discord import (
    DiscordAuthError,
    DiscordBlockedError,
    DiscordError,
    DiscordUnavailableError,
    MissingPermissionsError,
    UnknownMemberError,
    UnknownRoleError,
)
from recon_pipeline.clients.membership_db import (
    fix_notes,
    record_fix_action,
    recorded_actions,
    write_cached_status,
)
from recon_pipeline.domain.fixes import ActionCol, ActionKind, Outcome, ResultCol

_log = logging.getLogger(__name__)
# Consecutive "Discord unavailable" failures (each already retried) after which the rest stop.
MAX_CONSECUTIVE_UNAVAILABLE = 3
PENDING = "pending"  # recorded outcome of a role change whose call is under way
ALREADY_APPLIED = "already applied earlier in this run"


class RoleWriter(Protocol):
    """What the fixer needs of a Discord client."""

    def add_role(self, user_id: str, role_id: str, *, reason: str) -> None: ...

    def remove_role(self, user_id: str, role_id: str, *, reason: str) -> None: ...

    def member_role_ids(self, user_id: str) -> frozenset[str] | None: ...


@dataclass
class FixRun:
    """The context of one run's fixes."""

    scope_id: str  # the run whose fixes these are (the root run of a re-execution chain)
    audit_reason: str  # sent with every role change, names the run
    role_ids: dict[str, str]  # managed role name → Discord role id
    # True when the snapshots come from an earlier run of the chain, whose recorded fixes are
    # then already part of what this run plans; False when this run took fresh snapshots.
    trust_recorded_fixes: bool = False
    stopped: str | None = None  # why every further Discord call is futile
    halted: str | None = None  # why no further change of any kind may be made (lease lost)
    unwritable_roles: dict[str, str] = field(default_factory=dict)  # role name → why
    consecutive_unavailable: int = 0


def apply_actions(
    actions: pd.DataFrame,
    *,
    discord: RoleWriter,
    engine: sa.Engine,
    run: FixRun,
) -> pd.DataFrame:
    """Perform `actions` (rows of `ActionCol`) and return one `ResultCol` row per action."""
    recorded: dict[str, str] = {}
    if run.trust_recorded_fixes:
        with engine.connect() as conn:
            recorded = recorded_actions(conn, run.scope_id)
    results = []
    held_back: dict[int, str] = {}  # issue → why its remaining actions wait
    for action in actions.itertuples(index=False):
        row = action._asdict()
        key, issue = row[ActionCol.KEY], int(row[ActionCol.ISSUE])
        if recorded.get(key) == Outcome.FIXED:
            outcome, detail = Outcome.FIXED, ALREADY_APPLIED
        elif run.halted:
            outcome, detail = Outcome.NOT_ATTEMPTED, f"not attempted: {run.halted}"
        elif issue in held_back:
            outcome, detail = Outcome.NOT_ATTEMPTED, held_back[issue]
        elif recorded.get(key) == PENDING and _already_in_effect(row, discord, run):
            outcome, detail = Outcome.FIXED, "applied by an interrupted attempt (seen on Discord)"
            _record(engine, run, row, outcome, detail)
        else:
            outcome, detail = _perform(row, discord=discord, engine=engine, run=run)
        if outcome != Outcome.FIXED:
            held_back.setdefault(
                issue,
                f"not attempted: an earlier change for this issue did not go through ({detail})",
            )
        results.append((key, outcome.value, detail))
    return pd.DataFrame(results, columns=list(ResultCol.ALL)).astype("str")


def results_from_notes(actions: pd.DataFrame, engine: sa.Engine, scope_id: str) -> pd.DataFrame:
    """One `ResultCol` row per planned action, from what a run that ended while fixing noted:
    its fixing step's own result is lost, but each change was noted before and after its call."""
    with engine.connect() as conn:
        notes = fix_notes(conn, scope_id)
    merged = actions[[ActionCol.KEY]].merge(notes, on=ActionCol.KEY, how="left")
    outcome = merged["outcome"]
    results = pd.DataFrame({ResultCol.KEY: merged[ActionCol.KEY]})
    results[ResultCol.OUTCOME] = np.select(
        [outcome == Outcome.FIXED, outcome == Outcome.FAILED, outcome == PENDING],
        [Outcome.FIXED.value, Outcome.FAILED.value, Outcome.FAILED.value],
        default=Outcome.NOT_ATTEMPTED.value,
    )
    results[ResultCol.DETAIL] = np.select(
        [outcome == Outcome.FIXED, outcome == Outcome.FAILED, outcome == PENDING],
        [
            "",
            merged["error"].fillna("").astype("str"),
            "interrupted while the change was under way: it may or may not have gone through "
            "(a re-execution looks it up on Discord before repeating it)",
        ],
        default="not attempted: the run ended before this fix",
    )
    return results.astype("str")


def changes_made(results: pd.DataFrame) -> int:
    """Actions of `results` that reached Discord or the database (a failed call may still have
    gone through), not counting those an earlier attempt had already made."""
    reached = results[ResultCol.OUTCOME].isin([Outcome.FIXED.value, Outcome.FAILED.value])
    earlier = results[ResultCol.DETAIL] == ALREADY_APPLIED
    return int((reached & ~earlier).sum())


def _already_in_effect(action: dict[str, object], discord: RoleWriter, run: FixRun) -> bool:
    """Whether a role change left pending by a killed attempt is already true on Discord."""
    role_id = run.role_ids[str(action[ActionCol.VALUE])]
    try:
        held = discord.member_role_ids(str(action[ActionCol.DISCORD_ID]))
    except DiscordError as exc:
        _log.warning("could not look up %s: %s", action[ActionCol.DISCORD_ID], exc)
        return False
    if held is None:
        return False
    return (role_id in held) == (action[ActionCol.KIND] == ActionKind.ADD_ROLE)


def _perform(
    action: dict[str, object], *, discord: RoleWriter, engine: sa.Engine, run: FixRun
) -> tuple[Outcome, str]:
    """Make one change and record its outcome (a status write commits with its record)."""
    kind = action[ActionCol.KIND]
    if kind == ActionKind.SET_STATUS:
        return _write_status(action, engine, run)
    role = str(action[ActionCol.VALUE])
    if run.stopped:
        return Outcome.NOT_ATTEMPTED, f"not attempted: {run.stopped}"
    if role in run.unwritable_roles:
        return Outcome.NOT_ATTEMPTED, f"not attempted: {run.unwritable_roles[role]}"
    _record(engine, run, action, PENDING, "")
    outcome, detail = _call_discord(action, role, discord=discord, run=run)
    _record(engine, run, action, outcome, detail)
    return outcome, detail


def _call_discord(
    action: dict[str, object], role: str, *, discord: RoleWriter, run: FixRun
) -> tuple[Outcome, str]:
    kind = action[ActionCol.KIND]
    call = discord.add_role if kind == ActionKind.ADD_ROLE else discord.remove_role
    try:
        call(str(action[ActionCol.DISCORD_ID]), run.role_ids[role], reason=run.audit_reason)
        run.consecutive_unavailable = 0
    except DiscordUnavailableError as exc:
        run.consecutive_unavailable += 1
        if run.consecutive_unavailable >= MAX_CONSECUTIVE_UNAVAILABLE:
            run.stopped = f"Discord unavailable for {run.consecutive_unavailable} changes in a row"
            _log.error("stopping fixes: %s", run.stopped)
        return Outcome.FAILED, f"Discord unavailable: {exc}"
    except DiscordAuthError as exc:
        run.stopped = f"Discord rejected the bot token ({exc})"
        _log.error("stopping fixes: %s", run.stopped)
        return Outcome.FAILED, run.stopped
    except UnknownMemberError:
        return Outcome.FAILED, "the account is no longer in the server (Discord 10007)"
    except UnknownRoleError:
        run.unwritable_roles[role] = f"role {role!r} no longer exists in the server"
        return Outcome.FAILED, f"role {role!r} no longer exists in the server (Discord 10011)"
    except MissingPermissionsError as exc:
        why = (
            f"the bot may not manage role {role!r} (Discord {exc.code}: check the bot's "
            "Manage Roles permission and that its own role sits above this one)"
        )
        run.unwritable_roles[role] = why
        return Outcome.FAILED, why
    except DiscordBlockedError as exc:
        run.stopped = f"Discord blocked the bot's requests ({exc})"
        _log.error("stopping fixes: %s", run.stopped)
        return Outcome.FAILED, run.stopped
    except DiscordError as exc:
        return Outcome.FAILED, f"Discord error: {exc}"
    return Outcome.FIXED, ""


def _write_status(action: dict[str, object], engine: sa.Engine, run: FixRun) -> tuple[Outcome, str]:
    status = str(action[ActionCol.VALUE])
    team_id = action[ActionCol.TEAM_ID]
    member_id = action[ActionCol.MEMBER_ID]
    subject = {"team_id": str(team_id)} if pd.notna(team_id) else {"member_id": str(member_id)}
    try:
        with engine.begin() as conn:
            if write_cached_status(conn, status=status, **subject):
                record_fix_action(conn, run.scope_id, _action_row(action, Outcome.FIXED, ""))
                return Outcome.FIXED, ""
        what = next(iter(subject)).removesuffix("_id")
        outcome, detail = Outcome.FAILED, f"no such {what} in the database"
    except sa.exc.SQLAlchemyError as exc:
        outcome, detail = Outcome.FAILED, f"database error: {_db_error(exc)}"
    _record(engine, run, action, outcome, detail)
    return outcome, detail


def _record(
    engine: sa.Engine, run: FixRun, action: dict[str, object], outcome: str, detail: str
) -> None:
    # Failing to note a change must not stop the other members' fixes. Without the note a
    # re-execution makes the change again, which Discord treats as a no-op.
    try:
        with engine.begin() as conn:
            record_fix_action(conn, run.scope_id, _action_row(action, outcome, detail))
    except sa.exc.SQLAlchemyError as exc:
        _log.error("could not record fix %s: %s", action[ActionCol.KEY], _db_error(exc))


def _db_error(exc: sa.exc.SQLAlchemyError) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"


def _action_row(action: dict[str, object], outcome: str, detail: str) -> dict[str, object]:
    def text(value: object) -> str | None:
        return None if value is None or pd.isna(value) else str(value)

    return {
        "action_key": action[ActionCol.KEY],
        "issue_type": action[ActionCol.TYPE],
        "member_id": text(action[ActionCol.MEMBER_ID]),
        "team_id": text(action[ActionCol.TEAM_ID]),
        "discord_id": text(action[ActionCol.DISCORD_ID]),
        "action": action[ActionCol.KIND],
        "value": action[ActionCol.VALUE],
        "outcome": str(outcome),
        "error": detail or None,
    }
