"""What `recon-pipeline check` and every run's preflight conclude from what they read
(docs/behaviour.md §14): each check is ok, a problem (with the fix in plain words) or not
configured. No I/O here; recon_pipeline/preflight.py does the reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from recon_pipeline.domain.columns import GuildRoleCol
from recon_pipeline.domain.policy import ManagedRoles, RoleResolutionError, resolve_managed_role_ids

ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_ROLES = 1 << 28


class State(StrEnum):
    OK = "ok"
    PROBLEM = "problem"
    NOT_CONFIGURED = "not configured"


@dataclass(frozen=True)
class CheckLine:
    """One line of the report: what was checked, how it stands, what was found, how to fix it."""

    name: str
    state: State
    detail: str
    fix: str | None = None

    def __str__(self) -> str:
        return f"{self.detail} (fix: {self.fix})" if self.fix else self.detail

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "state": self.state.value, "detail": self.detail,
                "fix": self.fix}  # fmt: skip


def ok(name: str, detail: str) -> CheckLine:
    return CheckLine(name, State.OK, detail)


def problem(name: str, detail: str, fix: str) -> CheckLine:
    return CheckLine(name, State.PROBLEM, detail, fix)


def not_configured(name: str, detail: str) -> CheckLine:
    return CheckLine(name, State.NOT_CONFIGURED, detail)


def _ranks(roles: pd.DataFrame) -> pd.Series:
    """Each role's place from the bottom. Discord orders roles by position, then by id: of two
    roles at one position, the one with the lower id sits higher."""
    order = roles.assign(_id=roles[GuildRoleCol.ID].astype("int64")).sort_values(
        ["position", "_id"], ascending=[True, False]
    )
    return pd.Series(range(len(order)), index=order.index)


def bot_permissions(roles: pd.DataFrame, bot_role_ids: set[str], guild_id: str) -> int:
    """The bot's server-wide permissions: @everyone's and those of every role it holds."""
    bits = 0
    for value in roles.loc[roles[GuildRoleCol.ID].isin({*bot_role_ids, guild_id}), "permissions"]:
        bits |= int(value)
    return bits


def role_checks(
    roles: pd.DataFrame, bot_role_ids: set[str], guild_id: str, managed: ManagedRoles
) -> list[CheckLine]:
    """The managed roles exist once each; the bot has Manage Roles (or Administrator); its
    highest role sits above every managed role (Discord refuses a change to a role at or above
    it, Administrator or not). `roles` is the Discord client's `guild_roles` frame."""
    try:
        resolve_managed_role_ids(roles, managed)  # the rule every snapshot applies
        lines = [ok("managed roles", f"all four exist: {', '.join(managed.names())}")]
    except RoleResolutionError as exc:
        fix = ("Create each missing role, and rename extra ones, in Server Settings → Roles "
               "(or set DISCORD_ROLE_* to the names the server uses)")  # fmt: skip
        lines = [problem("managed roles", str(exc), fix)]
    permissions = bot_permissions(roles, bot_role_ids, guild_id)
    if permissions & ADMINISTRATOR:
        lines.append(ok("bot permission", "the bot has Administrator"))
    elif permissions & MANAGE_ROLES:
        lines.append(ok("bot permission", "the bot has Manage Roles"))
    else:
        lines.append(
            problem(
                "bot permission",
                "the bot has neither Manage Roles nor Administrator",
                "Give the bot's role the Manage Roles permission in Server Settings → Roles",
            )
        )
    return [*lines, _position_check(roles, bot_role_ids, managed)]


def _position_check(
    roles: pd.DataFrame, bot_role_ids: set[str], managed: ManagedRoles
) -> CheckLine:
    held = roles[GuildRoleCol.ID].isin(bot_role_ids)
    if not held.any():
        return problem(
            "bot role position",
            "the bot holds no role, so it sits below every managed role",
            "Give the bot a role above the managed roles in Server Settings → Roles",
        )
    ranks = _ranks(roles)
    top = ranks[held].idxmax()
    top_name = roles.at[top, GuildRoleCol.NAME]
    reached = roles[roles[GuildRoleCol.NAME].isin(managed.names()) & (ranks >= ranks[top])]
    above = [name for name in managed.names() if name in set(reached[GuildRoleCol.NAME])]
    if not above:
        return ok("bot role position", f"the bot's role '{top_name}' is above every managed role")
    listed = ", ".join(f"'{n}'" for n in above)
    return problem(
        "bot role position",
        f"the bot's highest role '{top_name}' is not above {listed}",
        f"Move the bot's role above {listed} in Server Settings → Roles",
    )


def channel_permissions(
    base: int, overwrites: list[dict[str, Any]], bot_role_ids: set[str], guild_id: str, bot_id: str
) -> int:
    """The bot's permissions in a channel: the server-wide ones with the channel's overwrites
    applied in Discord's order (@everyone, then the roles together, then the member)."""
    if base & ADMINISTRATOR:
        return base
    bits = base

    def apply(allow: int, deny: int) -> None:
        nonlocal bits
        bits = (bits & ~deny) | allow

    by_id = {str(o.get("id")): o for o in overwrites}
    everyone = by_id.get(guild_id)
    if everyone:
        apply(int(everyone.get("allow", 0)), int(everyone.get("deny", 0)))
    allow = deny = 0
    for role_id in bot_role_ids:
        o = by_id.get(role_id)
        if o and int(o.get("type", 0)) == 0:
            allow |= int(o.get("allow", 0))
            deny |= int(o.get("deny", 0))
    apply(allow, deny)
    member = by_id.get(bot_id)
    if member and int(member.get("type", 1)) == 1:
        apply(int(member.get("allow", 0)), int(member.get("deny", 0)))
    return bits


def can_post(permissions: int) -> bool:
    return bool(permissions & ADMINISTRATOR) or (
        permissions & (VIEW_CHANNEL | SEND_MESSAGES) == VIEW_CHANNEL | SEND_MESSAGES
    )


def stripe_mode(key: str) -> str | None:
    """`test` or `live` from the key's prefix (sk_/rk_), None for a key of another shape."""
    found = re.match(r"[sr]k_(test|live)_", key)
    return found.group(1) if found else None


def role_management_problems(
    roles: pd.DataFrame, bot_role_ids: set[str], guild_id: str, managed: ManagedRoles
) -> list[CheckLine]:
    """What keeps the bot from changing every managed role (docs/behaviour.md §14): the checks
    a run makes before it reads the member list, with the words `check` prints."""
    return [
        line
        for line in role_checks(roles, bot_role_ids, guild_id, managed)
        if line.state == State.PROBLEM
    ]


def preflight_failure(problems: list[CheckLine]) -> str:
    """Why a fixing run stops at its preflight, in the check's words."""
    told = "; ".join(map(str, problems))
    return f"Preflight: the bot cannot manage every managed role, so this run fixes nothing: {told}"
