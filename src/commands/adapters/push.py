"""Push delivery: a device's UnifiedPush endpoint, a push gateway, or the log (development).

The payload never carries the number to match: the user reads it on the login screen and
types it into the app, which is the point of number matching.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from domain.push import PushDevice

log = logging.getLogger("mfa.push")
TIMEOUT = httpx.Timeout(3.0, connect=2.0)
# The whole delivery of one challenge, to every device at once, DNS included. httpx's timeouts
# bound each read, not a request: an endpoint that drips a byte a second would otherwise hold
# the request's worker thread (and with a few accounts, every worker) for as long as it likes.
DEADLINE_SECONDS = 5.0
# Host names of device endpoints are resolved here (getaddrinfo has no timeout of its own); a
# lookup that outlives the deadline is abandoned to its thread, which the resolver's own
# timeouts end. Bounded, so that slow lookups cannot pile up threads.
_RESOLVER = ThreadPoolExecutor(max_workers=8, thread_name_prefix="push-dns")


class UnsafeEndpointError(ValueError):
    """A push endpoint that is not HTTPS or points into a private network."""


@dataclass(frozen=True)
class Endpoint:
    """Where to send a push: the URL to connect to and how to present the original host.

    For a checked public endpoint the URL names the address that was checked, so that the
    host name is not resolved a second time (a DNS answer that changes between the check and
    the connection, DNS rebinding, cannot point the request into a private network); the
    `Host` header and the TLS server name (`sni_hostname`, which the certificate is verified
    against) stay the endpoint's own.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def check_endpoint(url: str, *, allow_private: bool) -> Endpoint:
    """Refuse anything but HTTPS to a public address (unless private endpoints are allowed)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UnsafeEndpointError("push endpoint is not a valid URL") from exc
    if parsed.scheme not in ("https", "http") or not parsed.raw_host:
        raise UnsafeEndpointError("push endpoint must be an http(s) URL")
    if allow_private:
        return Endpoint(url)
    if parsed.scheme != "https":
        raise UnsafeEndpointError("push endpoint must use HTTPS")
    host = parsed.raw_host.decode("ascii")  # an international name in its IDNA form
    port = parsed.port or 443
    if not 0 < port < 65536:
        raise UnsafeEndpointError("push endpoint port is out of range")
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    except (OSError, UnicodeError, ValueError) as exc:
        raise UnsafeEndpointError("push endpoint host does not resolve") from exc
    if not addresses or not all(_is_public(address) for address in addresses):
        raise UnsafeEndpointError("push endpoint points into a private network")
    pinned = parsed.copy_with(
        host=str(addresses[0]), port=port, username=None, password=None, fragment=None
    )
    return Endpoint(
        str(pinned),
        headers={"Host": parsed.netloc.decode("ascii")},
        extensions={"sni_hostname": host},
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global address, and, for IPv6 that carries an IPv4 address, a global one inside too.

    `is_global` passes NAT64 (64:ff9b::7f00:1) and 6to4 (2002:7f00:1::) addresses whose IPv4
    part is loopback or private; a gateway that translates them would reach that network.
    """
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if address in _NAT64:
            inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(v4 is None or v4.is_global for v4 in inner)
    return True


class HttpPushSender:
    """Delivers push payloads; says for each device whether its push service accepted it."""

    def __init__(
        self,
        webhook_url: str | None,
        *,
        allow_private: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        deadline: float = DEADLINE_SECONDS,
    ) -> None:
        self.webhook_url = webhook_url
        self.allow_private = allow_private
        self.deadline = deadline
        self._transport = transport  # tests: httpx.MockTransport, or one with its own TLS

    def send(self, device: PushDevice, payload: dict[str, Any]) -> bool:
        """Deliver to one device (see `send_all`)."""
        return self.send_all([device], payload)[0]

    def send_all(self, devices: Sequence[PushDevice], payload: dict[str, Any]) -> list[bool]:
        """Deliver to every device at once; what has not been accepted within the deadline
        failed. Called from worker threads, which have no event loop of their own."""
        if not devices:
            return []
        return asyncio.run(self._send_all(devices, payload))

    async def _send_all(self, devices: Sequence[PushDevice], payload: dict[str, Any]) -> list[bool]:
        async with httpx.AsyncClient(transport=self._transport, timeout=TIMEOUT) as client:
            tasks = [asyncio.create_task(self._send(client, d, payload)) for d in devices]
            done, late = await asyncio.wait(tasks, timeout=self.deadline)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for device, task in zip(devices, tasks, strict=True):
            if task not in done:
                log.warning(
                    "push to device %s failed: not accepted within %.0f s",
                    device.device_id,
                    self.deadline,
                )
        return [task in done and task.result() for task in tasks]

    async def _send(
        self, client: httpx.AsyncClient, device: PushDevice, payload: dict[str, Any]
    ) -> bool:
        try:
            if device.push_token.startswith(("https://", "http://")):
                check = functools.partial(
                    check_endpoint, device.push_token, allow_private=self.allow_private
                )
                endpoint = await asyncio.get_running_loop().run_in_executor(_RESOLVER, check)
                status = await self._post(client, endpoint, payload)
            elif self.webhook_url:
                body = {"token": device.push_token, "platform": device.platform, "data": payload}
                status = await self._post(client, Endpoint(self.webhook_url), body)
            else:
                log.info(
                    "push (development, not sent) to device %s: challenge %s",
                    device.device_id,
                    payload.get("challenge_id"),
                )
                return True
        # ValueError: what httpx lets through from a host name IDNA refuses (`https://xn--/`)
        except (httpx.HTTPError, httpx.InvalidURL, UnsafeEndpointError, ValueError) as exc:
            log.warning("push to device %s failed: %s", device.device_id, type(exc).__name__)
            return False
        if status >= 300:
            log.warning("push to device %s refused: HTTP %s", device.device_id, status)
            return False
        return True

    @staticmethod
    async def _post(client: httpx.AsyncClient, endpoint: Endpoint, body: dict[str, Any]) -> int:
        # Redirects are not followed (httpx's default): a 3xx is a refusal, and cannot send
        # the payload on to an address that was never checked. The status line is the answer:
        # the response body is never read.
        async with client.stream(
            "POST",
            endpoint.url,
            json=body,
            headers=endpoint.headers,
            extensions=endpoint.extensions,
        ) as response:
            return response.status_code
