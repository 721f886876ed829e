"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""

from __future__ import annotations

import email
import email.policy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from recon_pipeline.sandbox.server import free_port


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class _LoopbackController(Controller):
    def factory(self) -> Any:
        # aiosmtpd warns, for every connection, that a login without TLS is unsafe: true, and
        # what a loopback test server does (production mail uses STARTTLS).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return super().factory()


@contextmanager
def smtp_server(
    *, username: str | None = None, password: str | None = None, smtputf8: bool = True
) -> Iterator[tuple[int, Inbox]]:
    """An SMTP server on 127.0.0.1; with credentials it requires a login (no TLS on loopback).

    `smtputf8=False` makes it one of the servers that take ASCII addresses only.
    """
    inbox = Inbox()

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (
            data.login.decode(),
            data.password.decode(),
        ) == (username, password)
        if ok:
            inbox.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=ok)

    port = free_port()
    options: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
    if username is not None:
        options |= {"authenticator": authenticate, "auth_required": True, "auth_require_tls": False}
    controller = _LoopbackController(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


@contextmanager
def admin_mail(
    monkeypatch: pytest.MonkeyPatch, *, username: str | None = None, password: str | None = None
) -> Iterator[Inbox]:
    """A loopback SMTP server that the pipeline's admin notices are configured to go to."""
    with smtp_server(username=username, password=password) as (port, inbox):
        settings = {
            "ADMIN_EMAIL": "admins@example.org",
            "EMAIL_FROM_ADDRESS": "recon@example.org",
            "EMAIL_PROVIDER": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_STARTTLS": "false",
        }
        if username is not None:
            settings |= {"SMTP_USERNAME": username, "SMTP_PASSWORD": password or ""}
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield inbox
