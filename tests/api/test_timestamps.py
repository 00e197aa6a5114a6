"""Every time in every answer is written one way: RFC 3339 in UTC with `Z`, as msgspec writes an
aware UTC datetime. A resource read from a read model (whose rows keep `isoformat()` text, with
`+00:00`) shows the very same strings as the answer to the write that made it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import code_at
from tests.api.test_oob import enrol_sms
from tests.api.test_push import App, push_endpoint, push_server  # noqa: F401 - fixtures
from tests.api.test_totp import enrol
from tests.api.test_webauthn_api import register_key, step_up, step_up_with_key
from tests.conftest import LiveServer, make_settings, new_user
from tests.support.delivery import SmsProvider
from tests.support.soft_authenticator import SoftAuthenticator

# Anything that looks like a time, with or without a zone.
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$")
Z_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def times_in(value: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """(path, text) of every string in a JSON value that looks like a time."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from times_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from times_in(item, f"{path}[{i}]")
    elif isinstance(value, str) and TIME.match(value):
        yield path, value


def body(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body, once every time in it is checked to be in the `Z` form."""
    assert response.status_code == status, response.text
    parsed = response.json()
    found = list(times_in(parsed))
    wrong = [(p, t) for p, t in found if not Z_TIME.match(t)]
    assert not wrong, f"{response.request.method} {response.request.url.path}: {wrong}"
    return parsed


def test_a_webauthn_credentials_times_read_the_same_in_every_answer(server: LiveServer) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    created = register_key(client, authenticator, "key")
    credential_id = created["credential_id"]
    server.clock.advance(10)
    assert step_up_with_key(client, authenticator).status_code == 200

    renamed = body(client.put(f"/mfa/webauthn/credentials/{credential_id}", json={"name": "k2"}))
    [listed] = body(client.get("/mfa/webauthn/credentials"))["items"]
    fetched = body(client.get(f"/mfa/webauthn/credentials/{credential_id}"))

    assert created["created_at"] == "2026-03-01T12:00:00Z"
    assert renamed["created_at"] == listed["created_at"] == fetched["created_at"]
    assert renamed["created_at"] == created["created_at"]
    assert listed["last_used_at"] == fetched["last_used_at"] == "2026-03-01T12:00:10Z"
    assert renamed["last_used_at"] == listed["last_used_at"]


def test_totp_device_times_read_the_same_in_every_answer(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    device_id, secret = enrol(client, server)
    server.clock.advance(60)
    code = code_at(secret, server.clock.now())
    assert client.post("/mfa/totp/validate", json={"code": code}).status_code == 200

    disabled = body(client.post(f"/mfa/totp/devices/{device_id}/disable"))
    [listed] = body(client.get("/mfa/totp/devices"))["items"]
    fetched = body(client.get(f"/mfa/totp/devices/{device_id}"))
    internal = server.client("svc", "mfa:internal")
    [served] = body(internal.get("/internal/mfa/totp/devices", params={"user_id": user}))["items"]
    admin = server.client("root", "mfa:admin")
    [admin_view] = body(admin.get(f"/admin/mfa/totp/{user}"))["devices"]

    for field in ("created_at", "verified_at", "last_used_at"):
        texts = {v[field] for v in (disabled, listed, fetched, served, admin_view)}
        assert len(texts) == 1, (field, texts)
    assert listed["created_at"] == "2026-03-01T12:00:00Z"
    assert listed["last_used_at"] == "2026-03-01T12:01:00Z"


def test_trusted_device_times_read_the_same_in_every_answer(server: LiveServer) -> None:
    client = server.client(new_user())
    remembered = body(client.post("/mfa/trusted-devices", json={"name": "laptop"}), 201)
    token, device_id = remembered["device_token"], remembered["device_id"]

    checked = body(client.get("/mfa/trusted-devices/check", headers={"X-MFA-Device-Token": token}))
    [listed] = body(client.get("/mfa/trusted-devices"))["items"]
    fetched = body(client.get(f"/mfa/trusted-devices/{device_id}"))

    assert remembered["expires_at"] == "2026-03-31T12:00:00Z"
    expiries = {v["expires_at"] for v in (remembered, checked, listed, fetched)}
    assert expiries == {remembered["expires_at"]}
    assert listed["created_at"] == fetched["created_at"] == "2026-03-01T12:00:00Z"


def test_backup_code_times_read_the_same_in_every_answer(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    generated = body(client.post("/mfa/backup-codes/generate"), 201)
    server.clock.advance(5)
    used = client.post("/mfa/backup-codes/verify", json={"code": generated["codes"][0]})
    assert used.status_code == 200, used.text

    own = body(client.get("/mfa/backup-codes"))
    admin = server.client("root", "mfa:admin")
    one = body(admin.get(f"/admin/mfa/backup-codes/{user}"))
    every = body(admin.get("/admin/mfa/backup-codes", params={"limit": 200}))["items"]
    [listed] = [item for item in every if item["user_id"] == user]

    assert generated["generated_at"] == "2026-03-01T12:00:00Z"
    assert {v["generated_at"] for v in (own, one, listed)} == {generated["generated_at"]}
    assert {v["last_used_at"] for v in (own, one, listed)} == {"2026-03-01T12:00:05Z"}


def test_push_device_and_challenge_times_read_the_same_in_every_answer(
    push_server: LiveServer,  # noqa: F811 - the fixture
    push_endpoint: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    user = new_user()
    client = push_server.client(user)
    app = App("phone", push_endpoint[0])
    synced = body(app.sync(client))
    [device] = body(client.get("/mfa/devices/sync"))["items"]
    assert synced["created_at"] == device["created_at"] == "2026-03-01T12:00:00Z"
    assert synced["updated_at"] == device["updated_at"]

    created = body(client.post("/mfa/push/challenge", json={}), 201)
    challenge_id = created["challenge_id"]
    push_server.clock.advance(3)
    number = created["number"]
    approved = body(app.approve(client, challenge_id, number))
    status = body(client.get(f"/mfa/push/challenge/{challenge_id}"))
    [mine] = body(client.get("/mfa/push/history"))["items"]
    admin = push_server.client("root", "mfa:admin")
    everyone = body(admin.get("/admin/mfa/push/challenges", params={"limit": 200}))["items"]
    [theirs] = [c for c in everyone if c["challenge_id"] == challenge_id]
    internal = push_server.client("svc", "mfa:internal")
    served = body(internal.get(f"/internal/mfa/push/challenge/{challenge_id}"))

    views = (approved, status, mine, theirs, served)
    for field in ("created_at", "expires_at", "responded_at"):
        texts = {v[field] for v in views}
        assert len(texts) == 1, (field, texts)
    assert created["expires_at"] == mine["expires_at"]
    assert mine["responded_at"] == "2026-03-01T12:00:03Z"


def test_the_config_audit_log_shows_times_as_the_allowlist_does(server: LiveServer) -> None:
    admin = server.client("root", "mfa:admin")
    entry = body(
        admin.post(
            "/admin/mfa/ip-whitelist",
            json={"cidr": "192.0.2.0/24", "expires_at": "2026-06-30T02:00:00+02:00"},
        ),
        201,
    )
    fetched = body(admin.get(f"/admin/mfa/ip-whitelist/{entry['id']}"))
    [listed] = body(admin.get("/admin/mfa/ip-whitelist"))["items"]
    [change] = body(admin.get("/admin/mfa/config-audit-logs"))["items"]

    assert entry["expires_at"] == "2026-06-30T00:00:00Z"
    assert entry["created_at"] == "2026-03-01T12:00:00Z"
    for field in ("created_at", "updated_at", "expires_at"):
        assert entry[field] == fetched[field] == listed[field] == change["after"][field]
    assert change["at"] == entry["created_at"]


def test_status_methods_and_the_event_history_write_times_with_z(server: LiveServer) -> None:
    """The answers built from the aggregate or the log: checked by `body`."""
    user = new_user()
    client = server.client(user)
    device_id, secret = enrol(client, server)
    challenge = body(client.post("/mfa/challenge", json={"method": "totp"}), 201)
    proof = {"code": code_at(secret, server.clock.now(), 1)}
    body(step_up(client, challenge["challenge_id"], **proof))
    for _ in range(5):  # lock TOTP out
        client.post("/mfa/totp/validate", json={"code": "000000"})

    status = body(client.get(f"/mfa/status/{user}"))
    assert status["locks"], status
    body(client.get("/mfa/methods"))
    admin = server.client("root", "mfa:admin")
    events = body(admin.get(f"/admin/mfa/users/{user}/events", params={"limit": 200}))["items"]
    assert events[0]["time"] == "2026-03-01T12:00:00Z"
    body(server.client("svc", "mfa:internal").get(f"/internal/mfa/status/{user}"))
    assert device_id


@pytest.fixture
def sms_server(
    tmp_path: Path, database_url: str, start_server: Callable[..., LiveServer]
) -> Iterator[tuple[LiveServer, SmsProvider]]:
    provider = SmsProvider().start()
    settings = make_settings(tmp_path, database_url, MFA_SMS_WEBHOOK_URL=provider.url)
    yield start_server(settings), provider
    provider.stop()


def test_the_last_use_of_an_sms_factor_is_written_with_z(
    sms_server: tuple[LiveServer, SmsProvider],
) -> None:
    server, sms = sms_server
    user = new_user()
    client = server.client(user)
    enrol_sms(client, sms)
    server.clock.advance(61)
    assert client.post("/mfa/sms/send").status_code == 202
    phone = "+14155550123"
    verified = client.post("/mfa/sms/verify", json={"code": sms.last_code(phone)})
    assert verified.status_code == 200, verified.text

    methods = {m["method"]: m for m in body(client.get("/mfa/methods"))["items"]}
    assert methods["sms"]["details"]["last_used_at"] == "2026-03-01T12:01:01Z"
    status = body(client.get(f"/mfa/status/{user}"))
    [sms_status] = [m for m in status["methods"] if m["method"] == "sms"]
    assert sms_status["details"]["last_used_at"] == "2026-03-01T12:01:01Z"


def test_a_locked_problem_writes_its_locked_until_with_z(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    enrol(client, server)
    for _ in range(5):
        client.post("/mfa/totp/validate", json={"code": "000000"})
    [lock] = body(client.get(f"/mfa/status/{user}"))["locks"]
    locked = client.post("/mfa/totp/validate", json={"code": "000000"})
    assert locked.status_code == 429, locked.text
    assert locked.json()["locked_until"] == lock["locked_until"]
