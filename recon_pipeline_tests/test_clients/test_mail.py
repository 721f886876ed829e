"""send_email against a real SMTP server on loopback (aiosmtpd): what cannot be sent is a
MailError that says why, and never quotes the password."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from recon_pipeline.clients.mail import MailError, SmtpServer, build_message, send_email
from recon_pipeline_tests.smtp import smtp_server

USER, PASSWORD = "recon-mailer", "pässwörd-Zx9"


def _notice(recipient: str = "admins@example.org") -> EmailMessage:
    return build_message(
        sender="recon@example.org", recipient=recipient, subject="Reconciliation", body="10 issues"
    )


def _server(port: int, **login: str) -> SmtpServer:
    return SmtpServer(host="127.0.0.1", port=port, starttls=False, **login)


def test_a_non_ascii_password_is_a_mail_error_that_names_it_but_never_quotes_it() -> None:
    with (
        smtp_server(username=USER, password=PASSWORD) as (port, inbox),
        pytest.raises(MailError) as caught,
    ):
        send_email(_server(port, username=USER, password=PASSWORD), _notice())

    message = str(caught.value)
    assert "password" in message and "ASCII" in message and f"127.0.0.1:{port}" in message
    assert "username" not in message
    # Not even a character of it: an encode error's text would have quoted one.
    assert not set(message) & set("äö")
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert inbox.logins == [] and inbox.messages == []


def test_a_non_ascii_username_is_a_mail_error_that_names_it() -> None:
    with (
        smtp_server(username="ädmin", password="ascii-pa55") as (port, inbox),
        pytest.raises(MailError, match="username") as caught,
    ):
        send_email(_server(port, username="ädmin", password="ascii-pa55"), _notice())

    assert "password" not in str(caught.value)
    assert inbox.messages == []


def test_a_non_ascii_address_to_a_server_without_smtputf8_is_a_plain_mail_error() -> None:
    with smtp_server(smtputf8=False) as (port, inbox), pytest.raises(MailError) as caught:
        send_email(_server(port), _notice(recipient="ädmins@example.org"))

    assert str(caught.value).startswith(f"SMTP server 127.0.0.1:{port}: ")
    assert "SMTPUTF8" in str(caught.value)
    assert inbox.messages == []


def test_a_host_name_idna_cannot_encode_is_a_mail_error() -> None:
    with pytest.raises(MailError, match=r"smtp\.\.example\.org:587.*host name"):
        send_email(SmtpServer(host="smtp..example.org"), _notice())
