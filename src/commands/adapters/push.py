"""Push delivery: a device's UnifiedPush endpoint, a push gateway, or the log (development).

The payload never carries the number to match: the user reads it on the login screen and
types it into the app, which is the point of number matching.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from domain.push import PushDevice

log = logging.getLogger("mfa.push")
TIMEOUT = httpx.Timeout(3.0, connect=2.0)


class UnsafeEndpointError(ValueError):
    """A push endpoint that is not HTTPS or points into a private network."""


def check_endpoint(url: str, *, allow_private: bool) -> None:
    """Refuse anything but HTTPS to a public address (unless private endpoints are allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeEndpointError("push endpoint must be an http(s) URL")
    if allow_private:
        return
    if parts.scheme != "https":
        raise UnsafeEndpointError("push endpoint must use HTTPS")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UnsafeEndpointError("push endpoint host does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise UnsafeEndpointError("push endpoint points into a private network")


class HttpPushSender:
    """Delivers push payloads; returns whether the push service accepted it."""

    def __init__(self, webhook_url: str | None, *, allow_private: bool = False) -> None:
        self.webhook_url = webhook_url
        self.allow_private = allow_private

    def send(self, device: PushDevice, payload: dict[str, Any]) -> bool:
        try:
            if device.push_token.startswith(("https://", "http://")):
                check_endpoint(device.push_token, allow_private=self.allow_private)
                response = httpx.post(device.push_token, json=payload, timeout=TIMEOUT)
            elif self.webhook_url:
                body = {"token": device.push_token, "platform": device.platform, "data": payload}
                response = httpx.post(self.webhook_url, json=body, timeout=TIMEOUT)
            else:
                log.info(
                    "push (development, not sent) to device %s: challenge %s",
                    device.device_id,
                    payload.get("challenge_id"),
                )
                return True
        except (httpx.HTTPError, UnsafeEndpointError) as exc:
            log.warning("push to device %s failed: %s", device.device_id, type(exc).__name__)
            return False
        if response.status_code >= 300:
            log.warning(
                "push to device %s refused: HTTP %s", device.device_id, response.status_code
            )
            return False
        return True
