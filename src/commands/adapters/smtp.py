"""Email through SMTP (aiosmtplib), configured by one URL.

`MFA_SMTP_URL`:

- `smtps://user:password@host[:465]`: TLS from the first byte (implicit TLS).
- `smtp+starttls://user:password@host[:587]`, or `smtp://...?starttls=1`: STARTTLS is
  required; a server that does not offer it fails the delivery.
- `smtp://host[:25]`: STARTTLS when the server offers it; `?starttls=0` never upgrades
  (a local relay without TLS).
- `?timeout=SECONDS` (default 10) bounds connecting and each command.

User name and password are URL-encoded; without them no AUTH is attempted. Certificates are
always verified.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from commands.adapters.sms_http import UNREADABLE
from commands.ports import DeliveryError

log = logging.getLogger("mfa.delivery.email")
DEFAULT_TIMEOUT = 10.0
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect; `start_tls` None means: when the server offers it."""

    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None
    timeout: float


def parse_smtp_url(url: str) -> SmtpConfig:
    """Read `MFA_SMTP_URL` (see the module docstring); ValueError when it makes no sense."""
    try:
        parts = urlsplit(url)
    except ValueError:  # ("Invalid IPv6 URL"), naming neither the variable nor the fix
        raise ValueError(UNREADABLE.format("MFA_SMTP_URL")) from None
    if parts.scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
        raise ValueError("MFA_SMTP_URL must look like smtp://, smtps:// or smtp+starttls://host")
    query = {k: v[-1].lower() for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"starttls", "timeout"}
    if unknown:
        if not all(re.fullmatch(r"[A-Za-z_]{1,32}", name) for name in unknown):
            # a `?` or `#` in the password starts the query early: what follows is the rest
            # of the password, not parameter names to quote back
            raise ValueError(UNREADABLE.format("MFA_SMTP_URL"))
        raise ValueError(f"MFA_SMTP_URL: unknown parameters {sorted(unknown)}")
    start_tls: bool | None = None
    if parts.scheme == "smtp+starttls" or query.get("starttls") in _TRUE:
        start_tls = True
    elif query.get("starttls") in _FALSE:
        start_tls = False
    elif "starttls" in query:
        raise ValueError("MFA_SMTP_URL: starttls must be 1 or 0")
    use_tls = parts.scheme == "smtps"
    if use_tls and start_tls:
        raise ValueError("MFA_SMTP_URL: smtps:// is TLS already; STARTTLS does not apply")
    if use_tls:
        start_tls = False
    try:
        timeout = float(query.get("timeout") or DEFAULT_TIMEOUT)
        port = parts.port or (465 if use_tls else 587 if start_tls else 25)
    except ValueError:
        raise ValueError("MFA_SMTP_URL: bad port or timeout") from None
    if not 0 < timeout <= 120:
        raise ValueError("MFA_SMTP_URL: timeout must be more than 0 and at most 120 seconds")
    return SmtpConfig(
        hostname=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
        start_tls=start_tls,
        timeout=timeout,
    )


class SmtpEmailSender:
    """Sends plain-text emails from `MFA_EMAIL_FROM` (called from worker threads)."""

    def __init__(self, url: str, sender: str) -> None:
        self.config = parse_smtp_url(url)
        self.sender = sender

    def send_email(self, to: str, subject: str, body: str) -> None:
        """Mail `body` to the mailbox `to`; any failure, building the message included, is a
        DeliveryError."""
        try:
            message = self._message(to, subject, body)
            # Command handlers run in worker threads without an event loop of their own.
            asyncio.run(self._send(message, to))
        except (aiosmtplib.SMTPException, MessageError, OSError, TimeoutError, ValueError) as exc:
            # Header defects (an address the parser refuses, CR/LF in a header) are ValueErrors.
            log.warning("SMTP delivery failed: %s", type(exc).__name__)
            raise DeliveryError("the email could not be handed to the SMTP server") from None

    def _message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        # An Address, not a string: a string header is parsed, and RFC 2047 encoded words in it
        # decoded, so the mail could go to another mailbox than the one given (and throttled).
        message["To"] = Address(addr_spec=to)
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        return message

    async def _send(self, message: EmailMessage, to: str) -> None:
        config = self.config
        await aiosmtplib.send(
            message,
            recipients=[to],  # the envelope names `to` itself, never what the headers decode to
            hostname=config.hostname,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            timeout=config.timeout,
        )
