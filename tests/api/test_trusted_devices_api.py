"""Trusted devices over HTTP, on SQLite and on PostgreSQL: remember (token shown once), check,
list, get, revoke one or all, clean up the expired ones, and the per-user cap."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.trusted_devices import hash_device_token
from tests.conftest import LiveServer, new_user

BASE = "/mfa/trusted-devices"
HEADER = "X-MFA-Device-Token"
DAY = 86_400


def remember(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post(BASE, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def check(client: httpx.Client, token: str | None) -> httpx.Response:
    headers = {HEADER: token} if token is not None else {}
    response = client.get(f"{BASE}/check", headers=headers)
    assert response.status_code == 200, response.text
    return response


def trusted(client: httpx.Client, token: str | None) -> bool:
    verdict: bool = check(client, token).json()["trusted"]
    return verdict


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if code is not None:
        assert response.json()["code"] == code


def test_remembering_a_device_returns_a_256_bit_token_once(server: LiveServer) -> None:
    client = server.client(new_user())
    response = client.post(BASE, json={"name": "work laptop"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert {"device_id", "device_token", "expires_at"} <= set(created)
    token = created["device_token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) >= 22
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128
    assert created["name"] == "work laptop"
    assert at(created["expires_at"]) == server.clock.now() + timedelta(days=30)

    another = remember(client)
    assert another["device_token"] != token
    assert another["device_id"] != created["device_id"]
    assert another["name"]


def test_a_remembered_token_checks_as_trusted(server: LiveServer) -> None:
    client = server.client(new_user())
    created = remember(client)
    verdict = check(client, created["device_token"]).json()
    assert verdict["trusted"] is True
    assert verdict["device_id"] == created["device_id"]
    assert at(verdict["expires_at"]) == at(created["expires_at"])


@pytest.mark.parametrize(
    "token",
    [None, "", "unknown", "A" * 43, "not a token at all!", "x" * 256, "x" * 257, "x" * 8000],
    ids=lambda token: repr(token)[:20],
)
def test_a_missing_or_unknown_token_is_not_trusted_and_not_an_error(
    server: LiveServer, token: str | None
) -> None:
    client = server.client(new_user())
    remember(client)
    assert check(client, token).json() == {"trusted": False}


def test_a_user_without_any_mfa_state_gets_not_trusted(server: LiveServer) -> None:
    assert check(server.client(new_user()), "whatever").json() == {"trusted": False}


def test_another_users_token_is_not_trusted_for_me(server: LiveServer) -> None:
    alice, bob = server.client(new_user()), server.client(new_user())
    alices = remember(alice)
    remember(bob)
    assert trusted(alice, alices["device_token"])
    assert check(bob, alices["device_token"]).json() == {"trusted": False}
    assert_problem(bob.get(f"{BASE}/{alices['device_id']}"), 404, "not_found")
    assert_problem(bob.delete(f"{BASE}/{alices['device_id']}"), 404, "not_found")
    assert trusted(alice, alices["device_token"])


def test_a_device_expires_after_thirty_days_by_default(server: LiveServer) -> None:
    client = server.client(new_user())
    created = remember(client)
    server.clock.advance(30 * DAY - 1)
    assert trusted(client, created["device_token"])
    server.clock.advance(1)
    assert check(client, created["device_token"]).json() == {"trusted": False}


def test_ttl_days_sets_the_expiry_and_is_capped_at_ninety(server: LiveServer) -> None:
    client = server.client(new_user())
    now = server.clock.now()
    assert at(remember(client, ttl_days=1)["expires_at"]) == now + timedelta(days=1)
    assert at(remember(client, ttl_days=90)["expires_at"]) == now + timedelta(days=90)
    for ttl in (91, 365, 0, -1, 1.5):
        assert_problem(client.post(BASE, json={"ttl_days": ttl}), 400, "validation_error")
    assert len(client.get(BASE).json()["items"]) == 2


def test_unknown_fields_and_bad_names_are_refused(server: LiveServer) -> None:
    client = server.client(new_user())
    assert_problem(client.post(BASE, json={"device_token": "mine"}), 400, "validation_error")
    assert_problem(client.post(BASE, json={"name": ""}), 400, "validation_error")
    assert_problem(client.post(BASE, json={"name": "x" * 65}), 400, "validation_error")
    assert client.get(BASE).json()["items"] == []


def test_list_and_get_come_from_the_projection_without_secrets(server: LiveServer) -> None:
    client = server.client(new_user())
    first = remember(client, name="phone")
    server.clock.advance(60)
    second = remember(client, name="laptop", ttl_days=7)

    listed = client.get(BASE)
    assert listed.status_code == 200
    body = listed.json()
    assert body["next_cursor"] is None
    assert [d["device_id"] for d in body["items"]] == [first["device_id"], second["device_id"]]
    assert [d["name"] for d in body["items"]] == ["phone", "laptop"]
    for item, created in zip(body["items"], (first, second), strict=True):
        assert set(item) == {"device_id", "name", "created_at", "expires_at"}
        assert at(item["expires_at"]) == at(created["expires_at"])

    page = client.get(BASE, params={"limit": 1}).json()
    assert [d["device_id"] for d in page["items"]] == [first["device_id"]]
    assert page["next_cursor"]
    rest = client.get(BASE, params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [d["device_id"] for d in rest["items"]] == [second["device_id"]]

    fetched = client.get(f"{BASE}/{second['device_id']}")
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "laptop"
    assert at(fetched.json()["created_at"]) == server.clock.now()
    assert_problem(client.get(f"{BASE}/no-such-device"), 404, "not_found")


def test_revoking_one_device_stops_only_its_token(server: LiveServer) -> None:
    client = server.client(new_user())
    kept, revoked = remember(client), remember(client)
    response = client.delete(f"{BASE}/{revoked['device_id']}")
    assert response.status_code == 200
    assert response.json() == {"revoked": 1}
    assert check(client, revoked["device_token"]).json() == {"trusted": False}
    assert trusted(client, kept["device_token"])
    assert_problem(client.get(f"{BASE}/{revoked['device_id']}"), 404)
    assert_problem(client.delete(f"{BASE}/{revoked['device_id']}"), 404, "not_found")
    assert [d["device_id"] for d in client.get(BASE).json()["items"]] == [kept["device_id"]]


def test_revoking_all_devices_reports_how_many(server: LiveServer) -> None:
    client = server.client(new_user())
    devices = [remember(client) for _ in range(3)]
    response = client.delete(BASE)
    assert response.status_code == 200
    assert response.json() == {"revoked": 3}
    for device in devices:
        assert not trusted(client, device["device_token"])
    assert client.get(BASE).json()["items"] == []
    assert client.delete(BASE).json() == {"revoked": 0}
    assert server.client(new_user()).delete(BASE).json() == {"revoked": 0}


def test_cleanup_removes_only_the_expired_devices(server: LiveServer) -> None:
    client = server.client(new_user())
    short = [remember(client, ttl_days=1) for _ in range(2)]
    long = remember(client, ttl_days=60)
    assert client.post(f"{BASE}/cleanup").json() == {"removed": 0}

    server.clock.advance(2 * DAY)
    response = client.post(f"{BASE}/cleanup")
    assert response.status_code == 200
    assert response.json() == {"removed": 2}
    assert [d["device_id"] for d in client.get(BASE).json()["items"]] == [long["device_id"]]
    assert trusted(client, long["device_token"])
    for device in short:
        assert not trusted(client, device["device_token"])
        assert_problem(client.get(f"{BASE}/{device['device_id']}"), 404)
    assert client.post(f"{BASE}/cleanup").json() == {"removed": 0}
    assert server.client(new_user()).post(f"{BASE}/cleanup").json() == {"removed": 0}


def test_expired_devices_stay_listed_until_cleanup(server: LiveServer) -> None:
    client = server.client(new_user())
    device = remember(client, ttl_days=1)
    server.clock.advance(DAY + 1)
    assert not trusted(client, device["device_token"])
    assert [d["device_id"] for d in client.get(BASE).json()["items"]] == [device["device_id"]]
    assert client.post(f"{BASE}/cleanup").json() == {"removed": 1}
    assert client.get(BASE).json()["items"] == []


def test_at_most_ten_valid_devices_per_user(server: LiveServer) -> None:
    client = server.client(new_user())
    devices = [remember(client, ttl_days=1) for _ in range(10)]
    assert_problem(client.post(BASE, json={}), 409, "limit_exceeded")
    assert len(client.get(BASE).json()["items"]) == 10

    # another user is not affected by my cap
    remember(server.client(new_user()))

    assert client.delete(f"{BASE}/{devices[0]['device_id']}").json() == {"revoked": 1}
    remember(client, ttl_days=1)
    assert_problem(client.post(BASE, json={}), 409, "limit_exceeded")

    # expired devices do not count against the cap, even before cleanup
    server.clock.advance(DAY)
    fresh = remember(client)
    assert trusted(client, fresh["device_token"])


def test_no_token_or_token_hash_appears_in_any_response_but_creation(server: LiveServer) -> None:
    client = server.client(new_user())
    created = [remember(client, name=f"device {n}", ttl_days=1 + n) for n in range(3)]
    secrets = set()
    for device in created:
        secrets |= {device["device_token"], hash_device_token(device["device_token"])}

    responses = [
        client.get(BASE),
        client.get(BASE, params={"limit": 1}),
        *(client.get(f"{BASE}/{d['device_id']}") for d in created),
        *(check(client, d["device_token"]) for d in created),
        client.get("/mfa/methods"),
        client.delete(f"{BASE}/{created[0]['device_id']}"),
    ]
    server.clock.advance(3 * DAY)
    responses += [
        check(client, created[1]["device_token"]),
        client.post(f"{BASE}/cleanup"),
        client.get(BASE),
        client.delete(BASE),
    ]
    for response in responses:
        assert response.status_code < 400, response.text
        for secret in secrets:
            assert secret not in response.text
            assert secret.lower() not in response.text.lower()


def test_the_trusted_device_endpoints_need_a_token(server: LiveServer) -> None:
    anonymous = server.client()
    for method, path in (
        ("POST", BASE),
        ("GET", BASE),
        ("DELETE", BASE),
        ("GET", f"{BASE}/check"),
        ("POST", f"{BASE}/cleanup"),
        ("GET", f"{BASE}/some-id"),
        ("DELETE", f"{BASE}/some-id"),
    ):
        assert_problem(anonymous.request(method, path), 401, "unauthorized")


@pytest.mark.parametrize("suffix", ["/%2F", "/%2f", "/", "//", "//x"])
def test_a_delete_that_does_not_name_one_device_exactly_revokes_nothing(
    server: LiveServer, suffix: str
) -> None:
    """The server decodes `%2F` and the router drops empty segments: without the exact-path
    rule these reached `DELETE /mfa/trusted-devices`, which revokes every device."""
    client = server.client(new_user())
    tokens = [remember(client)["device_token"] for _ in range(2)]
    refused = client.delete(BASE + suffix)
    assert refused.status_code == 404, refused.text
    assert refused.json()["code"] == "not_found"
    assert all(trusted(client, token) for token in tokens)


def test_revoking_all_refuses_a_body_naming_one_device(server: LiveServer) -> None:
    """The handler reads no body: `{"device_id": ...}` revoked every device, not the one."""
    client = server.client(new_user())
    keep, drop = remember(client, name="laptop"), remember(client, name="old phone")
    for body in ({"json": {"device_id": drop["device_id"]}}, {"json": [drop["device_id"]]}):
        refused = client.request("DELETE", BASE, **body)
        assert refused.status_code == 400, refused.text
    as_text = client.request(
        "DELETE", BASE, content=b"device_id=x", headers={"Content-Type": "text/plain"}
    )
    assert as_text.status_code == 415
    assert check(client, keep["device_token"]).json()["trusted"] is True
    assert client.request("DELETE", BASE, json={}).json() == {"revoked": 2}


@pytest.mark.parametrize("body", [b"{", b"  ", b"\xff\xfe", b"NaN", b"1" * 5000])
def test_a_delete_with_a_broken_json_body_is_a_400(server: LiveServer, body: bytes) -> None:
    """The input hook reads a DELETE's body: broken JSON raised there was a 500."""
    client = server.client(new_user())
    remember(client, name="laptop")
    headers = {"Content-Type": "application/json"}
    refused = client.request("DELETE", BASE, content=body, headers=headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "validation_error"
    assert len(client.get(BASE).json()["items"]) == 1
