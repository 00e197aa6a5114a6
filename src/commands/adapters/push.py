"""Push delivery: a device's UnifiedPush endpoint, a push gateway, or the log (development).

The payload never carries the number to match: the user reads it on the login screen and
types it into the app, which is the point of number matching.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
# Host names of device endpoints are resolved in one pool that every request shares
# (getaddrinfo has no timeout of its own): a lookup that outlives the deadline is abandoned to
# its thread, which the resolver's own timeouts end, often 10-30 s later. Bounded, so that slow
# lookups cannot pile up threads; and since a device's owner chooses its host name (up to 10
# devices, all under a nameserver that never answers), no delivery may hold more than
# LOOKUPS_PER_DELIVERY of its threads: its other names wait their turn, within its deadline.
RESOLVER_THREADS = 32
LOOKUPS_PER_DELIVERY = 2
_RESOLVER = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="push-dns")
# A name whose lookup ran this long and then failed, or was abandoned at the deadline, is
# refused at once for SLOW_HOST_SECONDS (the last SLOW_HOSTS_KEPT such names are kept): the
# next push to it would only hold a thread again. A name that merely waited for a thread is
# not held against it.
SLOW_LOOKUP_SECONDS = 2.0
SLOW_HOST_SECONDS = 60.0
SLOW_HOSTS_KEPT = 1024


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
    target = _parse_endpoint(url, allow_private=allow_private)
    return target if isinstance(target, Endpoint) else _pin(target)


@dataclass(frozen=True)
class _Target:
    """An HTTPS endpoint whose host name is yet to be resolved and checked."""

    url: httpx.URL
    host: str  # an international name in its IDNA form
    port: int


def _parse_endpoint(url: str, *, allow_private: bool) -> Endpoint | _Target:
    """The checks that need no lookup: the endpoint as written if private ones are allowed."""
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
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or 443
    if not 0 < port < 65536:
        raise UnsafeEndpointError("push endpoint port is out of range")
    return _Target(parsed, host, port)


def _pin(target: _Target) -> Endpoint:
    """Resolve the host name (blocking) and pin the endpoint to its address if every address
    it has is public."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    except (OSError, UnicodeError, ValueError) as exc:
        raise UnsafeEndpointError("push endpoint host does not resolve") from exc
    if not addresses or not all(_is_public(address) for address in addresses):
        raise UnsafeEndpointError("push endpoint points into a private network")
    pinned = target.url.copy_with(
        host=str(addresses[0]), port=target.port, username=None, password=None, fragment=None
    )
    return Endpoint(
        str(pinned),
        headers={"Host": target.url.netloc.decode("ascii")},
        extensions={"sni_hostname": target.host},
    )


class _SlowHosts:
    """Host names whose lookup was too slow, each remembered for `seconds` (the last `kept`
    names; the oldest is forgotten first). Shared by every request's thread."""

    def __init__(
        self, seconds: float, kept: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seconds = seconds
        self._kept = kept
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()  # in order of expiry
        self._lock = threading.Lock()

    def add(self, host: str) -> None:
        key = host.rstrip(".")
        with self._lock:
            now = self._clock()
            self._until.pop(key, None)
            self._until[key] = now + self._seconds
            while self._until and (
                len(self._until) > self._kept or next(iter(self._until.values())) <= now
            ):
                self._until.popitem(last=False)

    def __contains__(self, host: str) -> bool:
        with self._lock:
            return self._until.get(host.rstrip("."), float("-inf")) > self._clock()


_SLOW_HOSTS = _SlowHosts(SLOW_HOST_SECONDS, SLOW_HOSTS_KEPT)


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
        lookups = asyncio.Semaphore(LOOKUPS_PER_DELIVERY)
        async with httpx.AsyncClient(transport=self._transport, timeout=TIMEOUT) as client:
            tasks = [asyncio.create_task(self._send(client, d, payload, lookups)) for d in devices]
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
        self,
        client: httpx.AsyncClient,
        device: PushDevice,
        payload: dict[str, Any],
        lookups: asyncio.Semaphore,
    ) -> bool:
        try:
            if device.push_token.startswith(("https://", "http://")):
                endpoint = await self._check(device.push_token, lookups)
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

    async def _check(self, url: str, lookups: asyncio.Semaphore) -> Endpoint:
        """`check_endpoint`, its lookup in the shared pool, at most `LOOKUPS_PER_DELIVERY` of
        this delivery's at once (`lookups`)."""
        target = _parse_endpoint(url, allow_private=self.allow_private)
        if isinstance(target, Endpoint):
            return target
        async with lookups:
            if target.host in _SLOW_HOSTS:
                raise UnsafeEndpointError("push endpoint host resolved too slowly a moment ago")
            started: list[float] = []  # when a thread took the lookup up

            def pin() -> Endpoint:
                started.append(time.monotonic())
                return _pin(target)

            try:
                return await asyncio.get_running_loop().run_in_executor(_RESOLVER, pin)
            except (asyncio.CancelledError, UnsafeEndpointError):
                # Failed or abandoned (the thread stays busy until the resolver gives up).
                if started and time.monotonic() - started[0] >= SLOW_LOOKUP_SECONDS:
                    _SLOW_HOSTS.add(target.host)
                    log.warning(
                        "push endpoint host %r did not resolve within %.0f s: refused for %.0f s",
                        target.host,
                        SLOW_LOOKUP_SECONDS,
                        SLOW_HOST_SECONDS,
                    )
                raise

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
