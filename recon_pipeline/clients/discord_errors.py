"""The Discord client's exceptions (the hierarchy is drawn in `recon_pipeline.clients.discord`)."""

from __future__ import annotations


class DiscordError(Exception):
    """A Discord call failed; `.status`, `.code` and `.kind` say how."""

    kind = "rejected"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        if kind is not None:
            self.kind = kind


class DiscordAuthError(DiscordError):
    kind = "auth"


class MissingPermissionsError(DiscordError):
    kind = "missing_permissions"


class UnknownMemberError(DiscordError):
    kind = "unknown_member"


class UnknownRoleError(DiscordError):
    kind = "unknown_role"


class DiscordBlockedError(DiscordError):
    kind = "blocked"


class DiscordUnavailableError(DiscordError):
    kind = "unavailable"
