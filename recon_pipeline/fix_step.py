"""What the fixing step does, without Dagster: decide whether this run may fix, take the fixing
lease, apply the planned actions under it, and say what happened.

The order matters. The checks that need no database come first (auto-fix, day, where the
inputs came from, completeness, age), so a dry run or a recomputed past day never waits for the
lease. Once the lease is held, sessions of other runs since the snapshots were taken are looked
up: a run that waited while another fixed the same drift withholds its now stale plan instead
of repeating those changes. The lease is renewed while the actions run and released (with the
number of changes made) whatever happens.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.clients.fixing_lease import FixingLease
from recon_pipeline.clients.membership_db import utcnow
from recon_pipeline.domain.fix_gate import (
    Withheld,
    WithheldCode,
    fixed_meanwhile,
    lease_held,
    snapshot_marks,
    why_withheld,
)
from recon_pipeline.domain.fixes import (
    ActionCol,
    GuardDecision,
    GuardPolicy,
    Outcome,
    count_role_holders,
    evaluate_guard,
    issue_outcomes,
    plan_fix_actions,
    skipped_results,
)
from recon_pipeline.domain.policy import ManagedRoles, resolve_managed_role_ids
from recon_pipeline.domain.provenance import (
    COMPLETENESS,
    DECISION,
    LAPSED_EXCEPTIONS,
    PREVIOUS_RUN,
    RESOLVED,
    FrameOrigin,
    origin_of,
    set_sources,
    sources_of,
)
from recon_pipeline.fixing import FixRun, RoleWriter, apply_actions, changes_made


@dataclass(frozen=True)
class FixRequest:
    """The run asking to fix, and how."""

    run_id: str
    scope_id: str  # the first run of its re-execution chain: whose fixes these are
    chain: frozenset[str]  # this run and the runs it re-executes
    day: str
    today: str
    auto_fix: bool
    override_guard: bool = False


@dataclass(frozen=True)
class FixSettings:
    roles: ManagedRoles
    guard: GuardPolicy
    max_snapshot_age: dt.timedelta
    lease_wait: dt.timedelta
    lease_ttl_s: float


@dataclass(frozen=True)
class FixDecision:
    """What the fixing step decided; travels with its output to the run record."""

    auto_fix: bool  # requested
    withheld: Withheld | None  # why nothing was applied (None: fixes ran)
    guard: GuardDecision
    changes: int  # role changes and status writes made by this run
    planned: int = 0  # role changes and status writes the plan holds

    def to_json(self) -> dict[str, object]:
        return {
            "auto_fix": self.auto_fix,
            "withheld": {"code": self.withheld.code.value, "reason": self.withheld.reason}
            if self.withheld
            else None,
            "guard": asdict(self.guard),
            "changes": self.changes,
            "planned": self.planned,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FixDecision:
        withheld = data.get("withheld")
        return cls(
            auto_fix=bool(data["auto_fix"]),
            withheld=Withheld(WithheldCode(withheld["code"]), withheld["reason"])  # type: ignore[index]
            if withheld
            else None,
            guard=GuardDecision(**data["guard"]),  # type: ignore[arg-type]
            changes=int(data.get("changes", 0)),  # type: ignore[arg-type]
            planned=int(data.get("planned", 0)),  # type: ignore[arg-type]
        )

    @property
    def fixes_withheld(self) -> str | None:
        """Why a run with auto-fix on applied nothing (None for a dry run or a fixing run)."""
        if self.withheld is None or self.withheld.code == WithheldCode.DRY_RUN:
            return None
        return self.withheld.reason

    @property
    def warning(self) -> str | None:
        """What the step warns the operator of: fixes withheld from a run asked to fix, or
        removals the guard held back from a run that fixed the rest."""
        if self.fixes_withheld:
            return f"no fix applied: {self.fixes_withheld}"
        if self.guard.blocks_removals and self.withheld is None:
            return self.guard.describe()
        return None


def decision_of(fixed: pd.DataFrame) -> FixDecision | None:
    data = fixed.attrs.get(DECISION)
    return FixDecision.from_json(data) if data else None


def fix_inputs(
    issues: pd.DataFrame, roles: pd.DataFrame, member_roles: pd.DataFrame
) -> list[FrameOrigin | None]:
    """Every stored frame the fixes rest on: the drift table, the Discord frames this step read,
    and the snapshots the drift table was computed from."""
    return [origin_of(issues), origin_of(roles), origin_of(member_roles), *sources_of(issues)]


def run_fixing_step(
    issues: pd.DataFrame,
    roles: pd.DataFrame,
    member_roles: pd.DataFrame,
    *,
    request: FixRequest,
    settings: FixSettings,
    discord: RoleWriter,
    engine: sa.Engine,
    now: dt.datetime | None = None,
) -> tuple[pd.DataFrame, FixDecision]:
    """The drift table with each issue's outcome (`OutcomeCol`), and the decision behind it.

    The returned frame's attrs carry the decision and every input's origin.
    """
    role_ids = {
        name: role_id for role_id, name in resolve_managed_role_ids(roles, settings.roles).items()
    }
    holders = count_role_holders(member_roles, set(role_ids.values()))
    guard = evaluate_guard(issues, holders, settings.guard, override=request.override_guard)
    actions = plan_fix_actions(issues)
    inputs = fix_inputs(issues, roles, member_roles)
    withheld = why_withheld(
        auto_fix=request.auto_fix,
        day=request.day,
        today=request.today,
        chain=request.chain,
        inputs=inputs,
        snapshot_problems=issues.attrs.get(COMPLETENESS),
        now=now or utcnow(),
        max_age=settings.max_snapshot_age,
    )
    changes = 0
    if withheld:
        results = skipped_results(actions, Outcome.SKIPPED, withheld.reason)
    else:
        lease = FixingLease(
            engine, run_id=request.run_id, scope_id=request.scope_id, ttl_s=settings.lease_ttl_s
        )
        results, withheld, changes = _fix_under_lease(
            actions,
            lease,
            inputs,
            guard,
            settings,
            FixRun(
                scope_id=request.scope_id,
                audit_reason=f"recon_pipeline run {request.run_id}",
                role_ids=role_ids,
                # Snapshots of an earlier run of the chain already show what it fixed.
                trust_recorded_fixes=any(
                    o is not None and o.run_id != request.run_id for o in inputs
                ),
            ),
            discord=discord,
            engine=engine,
        )
    fixed = issue_outcomes(issues, actions, results)
    decision = FixDecision(request.auto_fix, withheld, guard, changes, planned=len(actions))
    fixed.attrs = {}  # pandas may have carried the drift table's attrs over
    set_sources(fixed, inputs)
    fixed.attrs[DECISION] = decision.to_json()
    for passed_on in (PREVIOUS_RUN, LAPSED_EXCEPTIONS, RESOLVED):  # for the record and notice
        fixed.attrs[passed_on] = issues.attrs.get(passed_on)
    return fixed, decision


def _fix_under_lease(
    actions: pd.DataFrame,
    lease: FixingLease,
    inputs: list[FrameOrigin | None],
    guard: GuardDecision,
    settings: FixSettings,
    run: FixRun,
    *,
    discord: RoleWriter,
    engine: sa.Engine,
) -> tuple[pd.DataFrame, Withheld | None, int]:
    started = time.monotonic()
    holder = lease.acquire(settings.lease_wait.total_seconds())
    if holder is not None:
        waited = dt.timedelta(seconds=time.monotonic() - started)
        withheld = lease_held(holder.run_id, waited)
        return skipped_results(actions, Outcome.SKIPPED, withheld.reason), withheld, 0
    # Unknown until the actions finish: a step that dies half-way may have changed things.
    changes: int | None = None
    try:
        others = lease.changed_since(snapshot_marks(inputs))
        if others:
            changes = 0
            withheld = fixed_meanwhile([s.run_id for s in others])
            return skipped_results(actions, Outcome.SKIPPED, withheld.reason), withheld, 0

        def halt(why: str) -> None:
            run.halted = why

        waits = (actions[ActionCol.AWAITING] != "").to_numpy()
        held = actions[ActionCol.REMOVAL_ONLY].to_numpy() & guard.blocks_removals & ~waits
        with lease.heartbeat(halt):
            applied = apply_actions(
                actions[~held & ~waits], discord=discord, engine=engine, run=run
            )
        changes = changes_made(applied)
        results = pd.concat(
            [
                skipped_results(
                    actions[waits], Outcome.SKIPPED, actions.loc[waits, ActionCol.AWAITING]
                ),
                skipped_results(actions[held], Outcome.SKIPPED, guard.describe()),
                applied,
            ],
            ignore_index=True,
        )
        return results, None, changes
    finally:
        lease.release(changes)
