"""The fixing step's launch options, and what a run was launched with."""

import dagster as dg
from pydantic import Field

FIXING_STEP = "reconciliation_fixes"


class FixConfig(dg.Config):
    """Launch options for this run's fixes."""

    auto_fix: bool | None = Field(
        default=None,
        description="Apply fixes in this run (true) or only report them (false). Leave empty "
        "to follow RECONCILIATION_AUTO_FIX, which is off unless the deployment turned it on.",
    )
    override_guard: bool = Field(
        default=False,
        description="Apply role removals even when they trip the blast-radius guard. For this "
        "run only; use it after checking that the planned removals are right.",
    )

    def auto_fix_or(self, default: bool) -> bool:
        """Whether this run fixes: its launch config's choice, else `default`."""
        return default if self.auto_fix is None else self.auto_fix


def launched_auto_fix(run: dg.DagsterRun, default: bool) -> bool:
    """Whether the run was launched to fix: its fixing step's launch config, else `default`
    (RECONCILIATION_AUTO_FIX). For a run that ended before its fixing step decided."""
    step = (run.run_config or {}).get("ops", {}).get(FIXING_STEP, {})
    return FixConfig.model_validate(step.get("config", {})).auto_fix_or(default)
