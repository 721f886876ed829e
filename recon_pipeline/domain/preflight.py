"""What `recon-pipeline check` and every run's preflight conclude from what they read
(docs/behaviour.md §14): each check is ok, a problem (with the fix in plain words) or not
configured. No I/O here; clients/preflight_probes.py does the reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from recon_pipeline.domain.policy import ManagedRoles

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

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "state": self.state.value, "detail": self.detail,
                "fix": self.fix}  # fmt: skip


def ok(name: str, detail: str) -> CheckLine:
    return CheckLine(name, State.OK, detail)


def problem(name: str, detail: str, fix: str) -> CheckLine:
    return CheckLine(name, State.PROBLEM, detail, fix)


def not_configured(name: str, detail: str) -> CheckLine:
    return CheckLine(name, State.NOT_CONFIGURED, detail)


@dataclass(frozen=True)
class GuildRole:
    id: str
    name: str
    position: int
    permissions: int


def _rank(role: GuildRole) -> tuple[int, int]:
    # Discord orders roles by position, then by id: of two roles at one position, the one with
    # the lower id sits higher.
    return (role.position, -int(role.id))


def bot_permissions(roles: list[GuildRole], bot_role_ids: set[str], guild_id: str) -> int:
    """The bot's server-wide permissions: @everyone's and those of every role it holds."""
    bits = 0
    for role in roles:
        if role.id == guild_id or role.id in bot_role_ids:
            bits |= role.permissions
    return bits


def role_checks(
    roles: list[GuildRole], bot_role_ids: set[str], guild_id: str, managed: ManagedRoles
) -> list[CheckLine]:
    """The managed roles exist once each; the bot has Manage Roles (or Administrator); its
    highest role sits above every managed role (Discord refuses a change to a role at or above
    it, Administrator or not)."""
    lines = []
    by_name: dict[str, list[GuildRole]] = {}
    for role in roles:
        by_name.setdefault(role.name, []).append(role)
    missing = [n for n in managed.names() if not by_name.get(n)]
    doubled = [n for n in managed.names() if len(by_name.get(n, [])) > 1]
    if missing or doubled:
        found = [f"no role named {n!r}" for n in missing] + [
            f"{len(by_name[n])} roles named {n!r}" for n in doubled
        ]
        lines.append(
            problem(
                "managed roles",
                "; ".join(found),
                "Create each missing role, and rename extra ones, in Server Settings → Roles "
                "(or set DISCORD_ROLE_* to the names the server uses)",
            )
        )
    else:
        lines.append(ok("managed roles", f"all four exist: {', '.join(managed.names())}"))
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
    held = [r for r in roles if r.id in bot_role_ids]
    if not held:
        lines.append(
            problem(
                "bot role position",
                "the bot holds no role, so it sits below every managed role",
                "Give the bot a role above the managed roles in Server Settings → Roles",
            )
        )
        return lines
    top = max(held, key=_rank)
    above = [
        r.name
        for name in managed.names()
        for r in by_name.get(name, [])[:1]
        if _rank(r) >= _rank(top)
    ]
    if above:
        listed = ", ".join(f"'{n}'" for n in above)
        lines.append(
            problem(
                "bot role position",
                f"the bot's highest role '{top.name}' is not above {listed}",
                f"Move the bot's role above {listed} in Server Settings → Roles",
            )
        )
    else:
        lines.append(
            ok("bot role position", f"the bot's role '{top.name}' is above every managed role")
        )
    return lines


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
    for prefix in ("sk_", "rk_"):
        for mode in ("test", "live"):
            if key.startswith(f"{prefix}{mode}_"):
                return mode
    return None


def exit_code(lines: list[CheckLine]) -> int:
    return 1 if any(line.state == State.PROBLEM for line in lines) else 0


def roles_from_frame(frame: Any) -> list[GuildRole]:
    """The Discord client's roles frame (`guild_roles`) as `GuildRole`s."""
    return [
        GuildRole(str(r.id), str(r.name), int(r.position), int(getattr(r, "permissions", 0)))
        for r in frame.itertuples()
    ]


def role_management_problems(
    roles: list[GuildRole], bot_role_ids: set[str], guild_id: str, managed: ManagedRoles
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
    told = "; ".join(f"{line.detail} (fix: {line.fix})" for line in problems)
    return f"Preflight: the bot cannot manage every managed role, so this run fixes nothing: {told}"
