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


class HttpSmsSender:
    """Hands text messages to the provider behind `MFA_SMS_WEBHOOK_URL`."""

    def __init__(self, url: str, timeout: httpx.Timeout = TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("MFA_SMS_WEBHOOK_URL must be an http:// or https:// URL")
        # Credentials travel as an explicit Basic auth header, not in the URL: httpx logs URLs.
        self.auth: tuple[str, str] | None = None
        if parts.username or parts.password:
            self.auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # an IPv6 literal keeps its brackets
            netloc = f"[{netloc}]" if parts.port is None else f"[{parts.hostname}]:{parts.port}"
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
