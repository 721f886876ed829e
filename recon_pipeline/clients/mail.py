"""Admin email over SMTP (the standard library's smtplib, which is all this needs).

STARTTLS with a verifying context and a login only after it, as a mail submission server
expects; both optional, for relays on a private network. Errors name the server, never the
password.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

DEFAULT_TIMEOUT_S = 15.0


class MailError(RuntimeError):
    """The notice could not be handed to the SMTP server."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)


def build_message(*, sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(body)
    return message


def send_email(server: SmtpServer, message: EmailMessage) -> None:
    """Hand `message` to `server`.

    Raises:
        MailError: naming the server and what went wrong, never the password.
    """
    # A non-ASCII address needs the server's SMTPUTF8, which smtplib checks for itself,
    # raising SMTPNotSupportedError (handled with the others) when the server lacks it.
    _session(server, lambda smtp: smtp.send_message(message), "send mail through")


def check_server(server: SmtpServer) -> None:
    """Connect, say EHLO, upgrade with STARTTLS and log in as configured, then say QUIT without
    sending anything (`recon-pipeline check`).

    Raises:
        MailError: as `send_email` does.
    """
    _session(server, lambda smtp: None, "reach")


def _session(server: SmtpServer, work: Callable[[smtplib.SMTP], object], doing: str) -> None:
    where = f"{server.host}:{server.port}"
    if server.username:
        _check_ascii_login(server, where)
    try:
        with smtplib.SMTP(server.host, server.port, timeout=server.timeout_s) as smtp:
            smtp.ehlo()
            if server.starttls:
                smtp.starttls(context=server.ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if server.username:
                smtp.login(server.username, server.password or "")
            work(smtp)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP server {where} refused the login ({exc.smtp_code})") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(f"SMTP server {where}: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"cannot {doing} {where}: {type(exc).__name__}: {exc}") from None
    except UnicodeError as exc:
        # The host name failing IDNA (an empty or over-long label), or a non-ASCII local host
        # name in EHLO. An encode error's text quotes the offending character, so only its
        # reason is kept.
        reason = getattr(exc, "reason", exc)
        raise MailError(
            f"cannot {doing} {where}: a host name cannot be encoded ({reason}); "
            "check the SMTP host name"
        ) from None


def _check_ascii_login(server: SmtpServer, where: str) -> None:
    """smtplib encodes the AUTH credentials as ASCII and would raise UnicodeEncodeError, whose
    text quotes a character of the password and where it is."""
    bad = [
        name
        for name, value in (("username", server.username), ("password", server.password))
        if value and not value.isascii()
    ]
    if bad:
        which = " and ".join(bad)
        raise MailError(
            f"cannot log in to SMTP server {where}: the SMTP {which} "
            f"{'has' if len(bad) == 1 else 'have'} non-ASCII characters, which the SMTP login "
            f"here (Python's smtplib) cannot send; use an ASCII-only {which}"
        )
