"""The preflight's conclusions from what Discord answers: the bot's permissions in a channel
(overwrites in Discord's order) and its role position against the managed roles."""

from __future__ import annotations

import pandas as pd

from recon_pipeline.domain.policy import ManagedRoles
from recon_pipeline.domain.preflight import (
    ADMINISTRATOR,
    MANAGE_ROLES,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    State,
    can_post,
    channel_permissions,
    role_checks,
)

GUILD, BOT_ROLE, BOT = "100", "900", "901"
BASE = VIEW_CHANNEL | SEND_MESSAGES


def _overwrite(target: str, kind: int, allow: int = 0, deny: int = 0) -> dict:
    return {"id": target, "type": kind, "allow": str(allow), "deny": str(deny)}


def test_overwrites_apply_everyone_then_roles_then_the_member() -> None:
    def posts(*overwrites: dict) -> bool:
        return can_post(channel_permissions(BASE, list(overwrites), {BOT_ROLE}, GUILD, BOT))

    assert posts()
    assert not posts(_overwrite(GUILD, 0, deny=SEND_MESSAGES))
    assert posts(
        _overwrite(GUILD, 0, deny=SEND_MESSAGES), _overwrite(BOT_ROLE, 0, allow=SEND_MESSAGES)
    )
    assert not posts(
        _overwrite(BOT_ROLE, 0, allow=SEND_MESSAGES), _overwrite(BOT, 1, deny=VIEW_CHANNEL)
    )
    # Administrator passes every overwrite.
    admin = channel_permissions(
        ADMINISTRATOR, [_overwrite(GUILD, 0, deny=BASE)], {BOT_ROLE}, GUILD, BOT
    )
    assert can_post(admin)


def _roles(bot_position: int) -> pd.DataFrame:
    """As the Discord client's `guild_roles` gives them: id, name, position, permissions."""
    return pd.DataFrame(
        [
            (GUILD, "@everyone", 0, BASE),
            ("11", "Squire", 1, 0),
            ("12", "Knight", 2, 0),
            ("13", "Lord", 3, 0),
            ("14", "Debtor", 4, 0),
            (BOT_ROLE, "Recon Bot", bot_position, MANAGE_ROLES),
        ],
        columns=["id", "name", "position", "permissions"],
    )


def test_every_managed_role_at_or_above_the_bot_is_named() -> None:
    def position_line(bot_position: int):
        lines = role_checks(_roles(bot_position), {BOT_ROLE}, GUILD, ManagedRoles())
        return next(line for line in lines if line.name == "bot role position")

    assert position_line(5).state == State.OK
    below_lord = position_line(3)  # a tie at Lord's position: the lower id (Lord) sits higher
    assert below_lord.state == State.PROBLEM
    assert "'Lord', 'Debtor'" in below_lord.detail and "'Knight'" not in below_lord.detail
