"""Handing an email to the configured SMTP server (plain, STARTTLS or implicit TLS; optional login)."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from karnak_shared.config import SmtpConfig
from karnak_shared.errors import TransientDeliveryError

DEFAULT_TIMEOUT = 30.0


class SmtpUnavailable(TransientDeliveryError):
    """The SMTP server cannot be reached or talked to: every email would fail the same way for now."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to submit email."""

    host: str
    port: int
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_config(cls, config: SmtpConfig, timeout: float = DEFAULT_TIMEOUT) -> SmtpServer:
        return cls(
            host=config.host,
            port=config.port,
            starttls=config.starttls,
            tls=config.tls,
            username=config.username,
            password=config.password.get_secret_value() if config.password is not None else None,
            timeout=timeout,
        )

    def __repr__(self) -> str:  # the dataclass one would print the password
        return f"SmtpServer({self.host}:{self.port}, starttls={self.starttls}, tls={self.tls})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class SmtpMailer:
    """Submits each email on a connection of its own (a few emails per window do not need a pool)."""

    def __init__(self, server: SmtpServer, ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = server
        # The system's trust store and hostname checks unless the caller brings its own (tests, private CAs).
        self._ssl_context = ssl_context

    def send(self, message: EmailMessage) -> int:
        """Submit `message` to its To recipients; raise `TransientDeliveryError` unless the server took it.

        Returns how many recipients the server refused while taking the others: that counts as sent,
        since retrying would repeat the email to those who got it.
        """
        server = self.server
        try:
            client = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            raise SmtpUnavailable(f"cannot connect to the SMTP server {server.where}: {_describe(exc)}") from None
        try:
            if server.starttls and not server.tls:
                client.starttls(context=self._context())
                client.ehlo()
            if server.username:
                client.login(server.username, server.password or "")
            refused = client.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientDeliveryError(
                f"the SMTP server {server.where} refused the login of {server.username}: {_describe(exc)}"
            ) from None
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise TransientDeliveryError(
                f"the SMTP server {server.where} refused the email: {_describe(exc)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SmtpUnavailable(f"SMTP session with {server.where} failed: {_describe(exc)}") from None
        finally:
            _close(client)
        return len(refused)

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        if server.tls:
            return smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout, context=self._context())
        return smtplib.SMTP(server.host, server.port, timeout=server.timeout)

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()


def _close(client: smtplib.SMTP) -> None:
    # The email is taken once DATA is answered: a failing QUIT must not turn it into a retry (a duplicate).
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _describe(exc: BaseException) -> str:
    """An smtplib error in one short line: the server's reply code and text, which never hold our credentials."""
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {reply}"[:300]
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"every recipient refused ({len(exc.recipients)})"
    return f"{type(exc).__name__}: {exc}"[:300]
