"""What the security tests share: one live stack per module and backend, enrolment flows that
return every secret they produced, the routes of the running app, and concurrent bursts.

Everything runs against real components: a uvicorn server around the real runtime (SQLite or
PostgreSQL), a real SMTP server, a real HTTP SMS provider, a real HTTP push endpoint and, for
the leakage tests, a private nats-server.
"""

from __future__ import annotations

import http.server
import itertools
import json
import random
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from litestar import Litestar
from litestar.routes import HTTPRoute

from tests.api.helpers import code_at
from tests.api.test_push import App
from tests.api.test_webauthn_api import ORIGIN, register_key, start_registration
from tests.conftest import LiveServer, new_user
from tests.integration.nats_support import PrivateNats
from tests.support.delivery import SmsProvider, SmtpServer
from tests.support.soft_authenticator import SoftAuthenticator

ADMIN = "mfa:admin"
INTERNAL = "mfa:internal"
PUBLIC_PATHS = frozenset({"/health", "/ready", "/.well-known/jwks.json", "/demo", "/demo/session"})
PUBLIC_PREFIXES = ("/schema",)
PROBLEM_JSON = "application/problem+json"

_phone_numbers = itertools.count(random.randrange(10_000))


def unique_phone() -> str:
    """A valid E.164 number no other test of this process uses (per-destination limits)."""
    return f"+1415555{next(_phone_numbers) % 10_000:04d}"


def unique_email(user: str) -> str:
    return f"{user}.{secrets.token_hex(3)}@example.org"


_bare_clients: dict[str, httpx.Client] = {}


def bare_client(server: LiveServer) -> httpx.Client:
    """A client without credentials for this server (creating one per request is slow: each
    builds its own TLS context)."""
    client = _bare_clients.get(server.url)
    if client is None or client.is_closed:
        client = httpx.Client(base_url=server.url, timeout=30)
        server.clients.append(client)
        _bare_clients[server.url] = client
    return client


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    """An RFC 9457 problem with this status (and code)."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body


# ------------------------------------------------------------------------ push endpoint


@dataclass
class PushEndpoint:
    """A real HTTP server standing in for every device's UnifiedPush endpoint."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> PushEndpoint:
        received = self.received

        class Endpoint(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def new_token(self) -> str:
        """A device's push token: its own endpoint URL, with an unguessable path."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/up/{secrets.token_urlsafe(18)}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class PushApp(App):
    """An authenticator app whose push token is a fresh endpoint URL of `PushEndpoint`."""

    def __init__(self, endpoint: PushEndpoint, device_id: str | None = None) -> None:
        super().__init__(device_id or f"app-{secrets.token_hex(6)}", endpoint.new_token())


# ------------------------------------------------------------------------------- stack


@dataclass
class Stack:
    """A live service with real delivery providers around it (and NATS when asked)."""

    server: LiveServer
    sms: SmsProvider
    smtp: SmtpServer
    push: PushEndpoint
    nats: PrivateNats | None = None
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, sub: str | None = None, scope: str = "") -> httpx.Client:
        return self.server.client(sub, scope)

    def admin(self) -> httpx.Client:
        return self._cached("security-admin", ADMIN)

    def internal(self) -> httpx.Client:
        return self._cached("security-service", INTERNAL)

    def _cached(self, sub: str, scope: str) -> httpx.Client:
        client = self._clients.get(scope)
        if client is None or client.is_closed:
            client = self._clients[scope] = self.server.client(sub, scope)
        return client


# --------------------------------------------------------------------------- enrolment


@dataclass
class Enrolled:
    """A user with every factor, and each secret the service showed or sent them once."""

    user: str
    client: httpx.Client
    totp_device: str = ""
    totp_secret: str = ""
    backup_codes: list[str] = field(default_factory=list)
    phone: str = ""
    email: str = ""
    authenticator: SoftAuthenticator | None = None
    credential_id: str = ""
    trusted_device: str = ""
    trusted_token: str = ""
    app: PushApp | None = None


def enrol_totp(stack: Stack, person: Enrolled) -> None:
    client = person.client
    setup = client.post("/mfa/totp/setup", json={"name": "phone"})
    assert setup.status_code == 201, setup.text
    body = setup.json()
    code = code_at(body["secret"], stack.server.clock.now())
    verified = client.post("/mfa/totp/verify", json={"device_id": body["device_id"], "code": code})
    assert verified.status_code == 200, verified.text
    person.totp_device, person.totp_secret = body["device_id"], body["secret"]


def enrol_backup_codes(person: Enrolled) -> None:
    generated = person.client.post("/mfa/backup-codes/generate")
    assert generated.status_code == 201, generated.text
    person.backup_codes = generated.json()["codes"]


def enrol_sms(stack: Stack, person: Enrolled) -> None:
    person.phone = unique_phone()
    started = person.client.put("/mfa/sms/enroll", json={"phone_number": person.phone})
    assert started.status_code == 202, started.text
    code = stack.sms.last_code(person.phone)
    verified = person.client.post("/mfa/sms/verify", json={"code": code})
    assert verified.status_code == 200, verified.text


def enrol_email(stack: Stack, person: Enrolled) -> None:
    person.email = unique_email(person.user)
    started = person.client.put("/mfa/email/enroll", json={"email": person.email})
    assert started.status_code == 202, started.text
    code = stack.smtp.last_code(person.email)
    verified = person.client.post("/mfa/email/verify", json={"code": code})
    assert verified.status_code == 200, verified.text


def enrol_webauthn(person: Enrolled) -> None:
    person.authenticator = SoftAuthenticator()
    person.credential_id = register_key(person.client, person.authenticator)["credential_id"]


def enrol_push(stack: Stack, person: Enrolled) -> None:
    person.app = PushApp(stack.push)
    synced = person.app.sync(person.client)
    assert synced.status_code == 200, synced.text


def remember_device(person: Enrolled) -> None:
    remembered = person.client.post("/mfa/trusted-devices", json={"name": "laptop"})
    assert remembered.status_code == 201, remembered.text
    person.trusted_device = remembered.json()["device_id"]
    person.trusted_token = remembered.json()["device_token"]


FACTORS = ("totp", "backup_code", "sms", "email", "webauthn", "push", "trusted_device")


def enrolled_user(stack: Stack, *factors: str, user: str | None = None) -> Enrolled:
    """A fresh user with the factors named (all of them when none is named)."""
    user = user or new_user()
    person = Enrolled(user=user, client=stack.client(user))
    for factor in factors or FACTORS:
        if factor == "totp":
            enrol_totp(stack, person)
        elif factor == "backup_code":
            enrol_backup_codes(person)
        elif factor == "sms":
            enrol_sms(stack, person)
        elif factor == "email":
            enrol_email(stack, person)
        elif factor == "webauthn":
            enrol_webauthn(person)
        elif factor == "push":
            enrol_push(stack, person)
        elif factor == "trusted_device":
            remember_device(person)
        else:
            raise ValueError(factor)
    return person


def next_totp_code(stack: Stack, person: Enrolled) -> str:
    """Move to the next time step and return the code the user's app shows there."""
    stack.server.clock.advance(30)
    return code_at(person.totp_secret, stack.server.clock.now())


def pending_registration(client: httpx.Client) -> tuple[str, dict[str, Any]]:
    started = start_registration(client)
    return started["registration_id"], started["options"]


def registration_response(options: dict[str, Any]) -> dict[str, Any]:
    return SoftAuthenticator().register(options, ORIGIN)


# ------------------------------------------------------------------------------ routes


@dataclass(frozen=True)
class Route:
    """One method of one path of the running application."""

    method: str
    path: str  # `/mfa/totp/devices/{device_id}`
    params: tuple[str, ...]

    @property
    def area(self) -> str:
        """`public`, `admin`, `internal` or `user` (under `/mfa/`); anything else is `other`."""
        if self.path in PUBLIC_PATHS or self.path.startswith(PUBLIC_PREFIXES):
            return "public"
        for prefix, area in (("/admin/", "admin"), ("/internal/", "internal"), ("/mfa/", "user")):
            if self.path.startswith(prefix):
                return area
        return "other"

    def url(self, **values: str) -> str:
        path = self.path
        for name in self.params:
            path = path.replace("{" + name + "}", values.get(name, "x"))
        return path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def live_app(server: LiveServer) -> Litestar:
    """The application object the live server runs."""
    assert server._server is not None
    app = server._server.config.app
    assert isinstance(app, Litestar)
    return app


def app_routes(server: LiveServer) -> list[Route]:
    """Every (method, path) the running application answers, HEAD and OPTIONS aside."""
    found = set()
    for route in live_app(server).routes:
        if not isinstance(route, HTTPRoute):
            continue
        params = tuple(route.path_parameters)
        for handler in route.route_handlers:
            for method in handler.http_methods:
                if method not in ("HEAD", "OPTIONS"):
                    found.add(Route(method, route.path_format, params))
    return sorted(found, key=lambda r: (r.path, r.method))


def openapi(server: LiveServer) -> dict[str, Any]:
    document: dict[str, Any] = bare_client(server).get("/schema/openapi.json").json()
    return document


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return resolved
    for choice in schema.get("oneOf", []):
        if choice.get("type") != "null":
            return _resolve(document, choice)
    return schema


def path_value_fits(document: dict[str, Any], route: Route, name: str, value: str) -> bool:
    """Whether the OpenAPI document's schema of a path parameter admits the value."""
    operation = document["paths"].get(route.path, {}).get(route.method.lower()) or {}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") == name:
            schema = parameter.get("schema", {})
            if len(value) > schema.get("maxLength", len(value)):
                return False
            if len(value) < schema.get("minLength", 0):
                return False
            pattern = schema.get("pattern")
            return pattern is None or re.search(pattern, value) is not None
    return True


def body_fields(document: dict[str, Any], route: Route) -> tuple[list[str], set[str]] | None:
    """The JSON body's field names and the required ones; None when the route takes no body."""
    operation = document["paths"].get(route.path, {}).get(route.method.lower())
    body = (operation or {}).get("requestBody")
    if not body:
        return None
    schema = _resolve(document, body["content"]["application/json"]["schema"])
    return list(schema.get("properties", {})), set(schema.get("required", []))


def bodies(
    document: dict[str, Any], route: Route, pool: dict[str, list[Any]], limit: int = 200
) -> Iterator[dict[str, Any] | None]:
    """Request bodies for a route: every combination of the pool's values for its fields.

    A required field the pool does not know gets a placeholder string.
    """
    fields = body_fields(document, route)
    if fields is None:
        yield None
        return
    names, required = fields
    choices = []
    for name in names:
        if name in pool:
            choices.append([(name, value) for value in pool[name]])
        elif name in required:
            choices.append([(name, "x")])
    for count, combination in enumerate(itertools.product(*choices)):
        if count >= limit:
            return
        yield dict(combination)


# ------------------------------------------------------------------------------ bursts


def burst(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """`count` calls released together from `count` threads; their responses in call order."""
    barrier = threading.Barrier(count)

    def run(index: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counted: dict[int, int] = {}
    for response in responses:
        counted[response.status_code] = counted.get(response.status_code, 0) + 1
    return dict(sorted(counted.items()))


def events_of(stack: Stack, user: str) -> list[dict[str, Any]]:
    """The user's stored events, as auditors read them (every page)."""
    admin = stack.admin()
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = admin.get(f"/admin/mfa/users/{user}/events", params=params)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


def count_types(events: list[dict[str, Any]], suffix: str) -> int:
    return sum(1 for e in events if re.search(rf"\.{suffix}\.v\d+$", e["type"]))
