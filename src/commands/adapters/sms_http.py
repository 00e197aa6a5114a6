"""SMS through an HTTP provider: POST `{"to": "+E164", "body": "..."}` as JSON.

Any 2xx is success; anything else, a timeout or a connection failure is a DeliveryError.
Credentials go in the URL (`https://user:password@sms.example/send`, sent as HTTP Basic).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from commands.ports import DeliveryError

log = logging.getLogger("mfa.delivery.sms")
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
# A URL urllib cannot split is named, never quoted: it holds the provider's password.
UNREADABLE = (
    "{} cannot be read as a URL: percent-encode any /, @, :, ? or # in the user name and password"
)


class HttpSmsSender:
    """Hands text messages to the provider behind `MFA_SMS_WEBHOOK_URL`."""

    def __init__(self, url: str, timeout: httpx.Timeout = TIMEOUT) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # (its message quotes the "port": an unescaped password's start)
            raise ValueError(UNREADABLE.format("MFA_SMS_WEBHOOK_URL")) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("MFA_SMS_WEBHOOK_URL must be an http:// or https:// URL")
        # Credentials travel as an explicit Basic auth header, not in the URL: httpx logs URLs.
        self.auth: tuple[str, str] | None = None
        if parts.username or parts.password:
            self.auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # an IPv6 literal keeps its brackets
            netloc = f"[{netloc}]" if port is None else f"[{parts.hostname}]:{port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        self.timeout = timeout

    def send_sms(self, to: str, body: str) -> None:
        try:
            response = httpx.post(
                self.url, json={"to": to, "body": body}, auth=self.auth, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            log.warning("SMS provider unreachable: %s", type(exc).__name__)
            raise DeliveryError("the SMS provider could not be reached") from None
        if not response.is_success:
            log.warning("SMS provider refused the message: HTTP %s", response.status_code)
            raise DeliveryError(f"the SMS provider answered HTTP {response.status_code}")
