"""Threat: a secret escapes where it must not be (information disclosure).

One user goes through every enrolment and uses every factor, through the real delivery
providers, with the service logging at DEBUG and publishing to a private nats-server. Then
every GET route of every area is read back. The secrets (TOTP secret, backup codes, SMS and
email codes, trusted-device token, push token, push and WebAuthn public keys, phone number,
email address) must appear in no log line, no NATS message, no stored row (read models, and
the event store, whose payloads are encrypted), and in no response after the one that has to
show them once.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from infra.event_store import event_store_env
from projections.audit import MASK, export_log
from tests.api.helpers import code_at
from tests.api.test_webauthn_api import ORIGIN
from tests.conftest import new_user
from tests.integration.nats_support import stream_messages
from tests.security.support import (
    ADMIN,
    INTERNAL,
    Enrolled,
    PushApp,
    Stack,
    app_routes,
    next_totp_code,
    unique_email,
    unique_phone,
)
from tests.support.soft_authenticator import SoftAuthenticator, b64url, cose_public_key

# Loggers of the test's own stand-ins for the outside world, not of the service.
TEST_DOUBLES = ("mail.log",)


@pytest.fixture(scope="module")
def with_nats() -> bool:
    return True


class Captured(logging.Handler):
    """Every log record of the process, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(TEST_DOUBLES):
            return
        line = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(line)


@dataclass
class Secret:
    name: str
    forms: list[str]  # every spelling it could leak in
    shown_at: int | None = None  # the index of the one response allowed to show it
    digits: bool = False  # a 6-digit code: matched as a whole number only

    def found_in(self, text: str) -> bool:
        for form in self.forms:
            if self.digits:
                if re.search(rf"(?<![0-9A-Za-z]){form}(?![0-9A-Za-z])", text):
                    return True
            elif form.lower() in text.lower():
                return True
        return False


@dataclass
class Session:
    """What the flows left behind."""

    stack: Stack
    user: str
    secrets: list[Secret] = field(default_factory=list)
    responses: list[httpx.Response] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def record(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def client(self, sub: str, scope: str = "") -> httpx.Client:
        client = self.stack.server.client(sub, scope)
        client.event_hooks["response"].append(self.record)
        return client

    def secret(self, name: str, *forms: str, shown: bool = False, digits: bool = False) -> None:
        at = len(self.responses) - 1 if shown else None
        self.secrets.append(Secret(name, [f for f in forms if f], at, digits))


def _b64_forms(raw: bytes) -> list[str]:
    return [b64url(raw), base64.b64encode(raw).decode().rstrip("="), raw.hex()]


def run_every_flow(session: Session) -> None:
    stack, user = session.stack, session.user
    client = session.client(user)
    clock = stack.server.clock
    person = Enrolled(user=user, client=client)

    setup = client.post("/mfa/totp/setup", json={"name": "phone"}).json()
    raw = base64.b32decode(setup["secret"] + "=" * (-len(setup["secret"]) % 8))
    session.secret("TOTP secret", setup["secret"], *_b64_forms(raw), shown=True)
    person.totp_secret = setup["secret"]
    code = code_at(setup["secret"], clock.now())
    assert client.post("/mfa/totp/verify", json={"code": code}).status_code == 200
    assert (
        client.post("/mfa/totp/validate", json={"code": next_totp_code(stack, person)}).status_code
        == 200
    )

    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    for index, backup in enumerate(codes):
        session.secret(f"backup code {index}", backup, backup.replace("-", ""), shown=True)
    assert client.post("/mfa/backup-codes/verify", json={"code": codes[0]}).status_code == 200

    phone, email = unique_phone(), unique_email(user)
    session.secret("phone number", phone, phone.lstrip("+"))
    session.secret("email address", email)
    for method, field_name, destination in (
        ("sms", "phone_number", phone),
        ("email", "email", email),
    ):
        assert (
            client.put(f"/mfa/{method}/enroll", json={field_name: destination}).status_code == 202
        )
        sent = _last_code(stack, method, destination)
        session.secret(f"{method} enrolment code", sent, digits=True)
        assert client.post(f"/mfa/{method}/verify", json={"code": sent}).status_code == 200
        clock.advance(61)
        assert client.post(f"/mfa/{method}/send").status_code == 202
        login = _last_code(stack, method, destination)
        session.secret(f"{method} login code", login, digits=True)
        assert client.post(f"/mfa/{method}/verify", json={"code": login}).status_code == 200
        clock.advance(61)
        challenge = client.post("/mfa/challenge", json={"method": method}).json()
        step = _last_code(stack, method, destination)
        session.secret(f"{method} challenge code", step, digits=True)
        stepped = client.post(
            "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "code": step}
        )
        assert stepped.status_code == 200, stepped.text

    authenticator = SoftAuthenticator()
    started = client.post("/mfa/webauthn/credentials/register", json={"name": "key"}).json()
    registered = client.post(
        "/mfa/webauthn/credentials/register/verify",
        json={
            "registration_id": started["registration_id"],
            "credential": authenticator.register(started["options"], ORIGIN),
        },
    )
    assert registered.status_code == 201, registered.text
    [held] = authenticator.credentials.values()
    session.secret(
        "WebAuthn public key", *_b64_forms(cose_public_key(held.private_key.public_key()))
    )
    challenge = client.post("/mfa/challenge", json={"method": "webauthn"}).json()
    assertion = authenticator.get(challenge["options"], ORIGIN)
    passed = client.post(
        "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "credential": assertion}
    )
    assert passed.status_code == 200, passed.text

    remembered = client.post("/mfa/trusted-devices", json={"name": "laptop"}).json()
    token = remembered["device_token"]
    session.secret("trusted-device token", token, shown=True)
    checked = client.get("/mfa/trusted-devices/check", headers={"X-MFA-Device-Token": token})
    assert checked.json()["trusted"] is True

    app = PushApp(stack.push)
    assert app.sync(client).status_code == 200
    session.secret("push token", app.endpoint, app.endpoint.rsplit("/", 1)[1])
    session.secret(
        "push public key", app.public_key, base64.urlsafe_b64decode(app.public_key + "=").hex()
    )
    push = client.post("/mfa/push/challenge").json()
    assert app.approve(client, push["challenge_id"], push["number"]).status_code == 200
    pushed = client.post("/mfa/challenge", json={"method": "push"}).json()
    assert app.approve(client, pushed["challenge_id"], pushed["number"]).status_code == 200
    assert (
        client.post("/mfa/step-up", json={"challenge_id": pushed["challenge_id"]}).status_code
        == 200
    )

    # a wrong code of each kind, a lockout, and the risk engine given the device token
    for path in ("/mfa/totp/validate", "/mfa/backup-codes/verify", "/mfa/sms/verify"):
        assert client.post(path, json={"code": "000000"}).status_code in (403, 409)
    admin = session.client("leak-admin", ADMIN)
    evaluated = admin.post(
        "/admin/mfa/risk-policies/evaluate",
        json={"user_id": user, "ip": "203.0.113.7", "device_token": token, "user_agent": "x"},
    )
    assert evaluated.status_code == 200, evaluated.text

    read_everything(
        session,
        admin,
        ids=[
            setup["device_id"],
            held.id,
            remembered["device_id"],
            push["challenge_id"],
            app.device_id,
        ],
    )


def _last_code(stack: Stack, method: str, destination: str) -> str:
    return (
        stack.sms.last_code(destination) if method == "sms" else stack.smtp.last_code(destination)
    )


def read_everything(session: Session, admin: httpx.Client, ids: list[str]) -> None:
    """Every GET route of every area, with the user's ids in its path parameters."""
    user = session.user
    clients = {
        "user": session.client(user),
        "admin": admin,
        "internal": session.client("leak-service", INTERNAL),
        "public": session.client("nobody"),
    }
    for route in app_routes(session.stack.server):
        if (
            route.method != "GET"
            or route.area not in clients
            or route.path.startswith(("/demo", "/schema/"))
        ):
            continue
        others = [p for p in route.params if p != "user_id"]
        for value in ids if others else [""]:
            url = route.url(**{p: user if p == "user_id" else value for p in route.params})
            clients[route.area].get(url, params={"user_id": user, "limit": 200})


def caught_up(stack: Stack) -> None:
    runtime = stack.server.runtime
    head = runtime.services.app.max_position()
    assert runtime.read_models.wait_for(head, timeout=30)
    relay = runtime.relay
    assert relay is not None
    deadline = time.monotonic() + 30
    while relay.position() < head:
        assert time.monotonic() < deadline, "the NATS relay did not catch up"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def session(stack: Stack) -> Session:
    captured = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured)
    root.setLevel(logging.DEBUG)
    try:
        session = Session(stack=stack, user=f"leaky-{new_user()}")
        run_every_flow(session)
        caught_up(stack)
    finally:
        root.removeHandler(captured)
        root.setLevel(level)
    session.logs = captured.lines
    return session


def test_no_secret_appears_in_any_log_line_even_at_debug(session: Session) -> None:
    assert len(session.logs) > 50  # the capture works: requests, projections, deliveries
    found = {
        secret.name: [line[:200] for line in session.logs if secret.found_in(line)]
        for secret in session.secrets
    }
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_no_secret_is_published_on_nats(session: Session) -> None:
    assert session.stack.nats is not None
    messages = stream_messages(session.stack.nats.url)
    mine = [m for m in messages if m["event"]["subject"] == session.user]
    assert len(mine) > 30
    text = json.dumps(messages)
    assert [s.name for s in session.secrets if s.found_in(text)] == []


def _stored_rows(stack: Stack) -> dict[str, str]:
    """Every row of every table the service stores: read models, keys, the event store."""
    settings = stack.server.runtime.settings
    tables: dict[str, str] = {}
    if settings.uses_postgres:
        with psycopg.connect(settings.database_url) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            ]
            for name in names:
                rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
                tables[name] = _text(rows)
        return tables
    paths = [settings.database_url.removeprefix("sqlite:///")]
    paths.append(event_store_env(settings.database_url)["SQLITE_DBNAME"])
    for path in paths:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for name in names:
                rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
                tables[f"{path.rsplit('/', 1)[1]}:{name}"] = _text(rows)
    return tables


def _text(rows: list[Any]) -> str:
    parts = []
    for row in rows:
        for value in row:
            if isinstance(value, bytes | bytearray | memoryview):
                parts.append(bytes(value).decode("latin-1"))
            else:
                parts.append(str(value))
    return "\n".join(parts)


def test_no_secret_or_contact_detail_is_stored_in_clear_in_any_table(session: Session) -> None:
    tables = _stored_rows(session.stack)
    assert any(session.user in text for text in tables.values())  # the scan reads real rows
    assert len(tables) >= 10, list(tables)
    found = {
        secret.name: [table for table, text in tables.items() if secret.found_in(text)]
        for secret in session.secrets
    }
    assert {name: where for name, where in found.items() if where} == {}


def test_each_secret_is_shown_once_and_in_no_later_response(session: Session) -> None:
    assert len(session.responses) > 60
    problems = []
    for secret in session.secrets:
        for index, response in enumerate(session.responses):
            if secret.shown_at is not None and index <= secret.shown_at:
                continue
            text = response.text + json.dumps(dict(response.headers))
            if secret.found_in(text):
                problems.append((secret.name, response.request.method, response.request.url.path))
    assert problems == [], "\n".join(map(str, problems))
    shown = [s for s in session.secrets if s.shown_at is not None]
    assert all(s.found_in(session.responses[s.shown_at].text) for s in shown)


def test_no_cache_may_keep_a_response(session: Session) -> None:
    """`Cache-Control: no-store` on the one response that shows each secret, and on every
    other one: each is about one user's state, problems included. (The one public document,
    the step-up keys at /.well-known/jwks.json, may be cached.)"""
    shown = [session.responses[s.shown_at] for s in session.secrets if s.shown_at is not None]
    assert len(shown) >= 5
    assert all(response.headers.get("cache-control") == "no-store" for response in shown)
    storable = {
        (r.request.method, r.request.url.path, r.status_code)
        for r in session.responses
        if r.headers.get("cache-control") != "no-store"
        and r.request.url.path != "/.well-known/jwks.json"
    }
    assert storable == set()


def test_the_auditors_export_shows_no_secret_and_no_push_number(session: Session) -> None:
    """`mfa audit export` (export_log) masks secrets; the push's number matching is shown
    once, to the login screen, and is masked there too."""
    exported = list(export_log(session.stack.server.runtime.services.app))
    created = [e for e in exported if e["type"] == "mfa.push.challenge_created.v1"]
    assert len(created) >= 2
    assert all(e["data"]["number"] == MASK for e in created)
    text = json.dumps(exported, default=str)
    assert session.user in text  # (the export is the user's)
    assert [s.name for s in session.secrets if s.found_in(text)] == []


def test_no_secret_is_in_the_repr_of_the_settings_or_the_services(session: Session) -> None:
    """One `log.debug("%r", runtime)` away from a log line: the JWT secret, the master key,
    URLs that may carry passwords and the key behind aggregate ids stay out of reprs."""
    runtime = session.stack.server.runtime
    settings = runtime.settings
    text = repr(runtime) + repr(settings) + repr(runtime.services)
    assert settings.jwt_secret
    for value in (settings.jwt_secret, settings.database_url, settings.nats_url):
        assert value
        assert value not in text
    for key in (settings.master_key, runtime.services.id_key):
        assert repr(key) not in text
        assert key.hex() not in text
