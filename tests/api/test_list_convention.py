"""Every list answers `{"items": [...], "next_cursor": str | null}` and pages with `?limit=`
(1-200, default 50) and `?cursor=` (API.md): `GET /mfa/methods` and `GET /mfa/devices/sync`."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.api.test_push import App, push_endpoint, push_server  # noqa: F401 - fixtures
from tests.api.test_totp import enrol
from tests.conftest import LiveServer, new_user


def validation_error(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field in {e["field"] for e in problem["errors"]}, problem


def test_the_method_list_has_a_null_next_cursor_beside_the_primary_method(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    empty = client.get("/mfa/methods").json()
    assert empty["next_cursor"] is None
    assert empty["primary_method"] is None
    device_id, _ = enrol(client, server)
    assert client.post(f"/mfa/credentials/{device_id}/primary").status_code == 200
    listed = client.get("/mfa/methods").json()
    assert set(listed) == {"items", "next_cursor", "primary_method"}
    assert listed["next_cursor"] is None
    assert listed["primary_method"] == "totp"


def sync_devices(client: httpx.Client, endpoint: str, names: list[str]) -> None:
    for name in names:
        response = App(name, endpoint).sync(client)
        assert response.status_code == 200, response.text


def test_synced_devices_page_with_limit_and_cursor(
    push_server: LiveServer,  # noqa: F811 - the fixture
    push_endpoint: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    client = push_server.client(new_user())
    # Two at the same time (ordered by id), one later.
    sync_devices(client, push_endpoint[0], ["tablet", "phone"])
    push_server.clock.advance(1)
    sync_devices(client, push_endpoint[0], ["laptop"])

    everything = client.get("/mfa/devices/sync").json()
    assert [d["device_id"] for d in everything["items"]] == ["phone", "tablet", "laptop"]
    assert everything["next_cursor"] is None

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = client.get("/mfa/devices/sync", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [d["device_id"] for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["phone", "tablet", "laptop"]
    assert pages == 2

    # A re-sync of a listed device keeps its place; the cursor still leads on to the rest.
    first = client.get("/mfa/devices/sync", params={"limit": 1}).json()
    assert [d["device_id"] for d in first["items"]] == ["phone"]
    push_server.clock.advance(1)
    sync_devices(client, push_endpoint[0], ["phone"])
    rest = client.get("/mfa/devices/sync", params={"cursor": first["next_cursor"]}).json()
    assert [d["device_id"] for d in rest["items"]] == ["tablet", "laptop"]
    assert rest["next_cursor"] is None

    exact = client.get("/mfa/devices/sync", params={"limit": 3}).json()
    assert len(exact["items"]) == 3
    assert exact["next_cursor"] is None


def test_another_users_devices_are_not_on_a_page(
    push_server: LiveServer,  # noqa: F811 - the fixture
    push_endpoint: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    alice = push_server.client(new_user())
    bob = push_server.client(new_user())
    sync_devices(alice, push_endpoint[0], ["a1", "a2"])
    sync_devices(bob, push_endpoint[0], ["b1"])
    page = alice.get("/mfa/devices/sync", params={"limit": 1}).json()
    rest = bob.get("/mfa/devices/sync", params={"cursor": page["next_cursor"]}).json()
    assert [d["device_id"] for d in rest["items"]] == ["b1"]


@pytest.mark.parametrize("limit", ["0", "201", "-1", "two"])
def test_a_limit_out_of_bounds_is_a_validation_error_naming_limit(
    server: LiveServer, limit: str
) -> None:
    client = server.client(new_user())
    validation_error(client.get("/mfa/devices/sync", params={"limit": limit}), "limit")


def _cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        _cursor(["2026-03-01T12:00:00+00:00"]),
        _cursor([1, "phone"]),
        _cursor(["yesterday", "phone"]),
        _cursor(["0001-01-01T00:00:00+01:00", "phone"]),
        _cursor({"created_at": "2026-03-01T12:00:00+00:00"}),
        "x" * 513,
    ],
)
def test_a_malformed_cursor_is_a_validation_error(server: LiveServer, cursor: str) -> None:
    client = server.client(new_user())
    validation_error(client.get("/mfa/devices/sync", params={"cursor": cursor}), "cursor")


def test_the_limits_are_those_of_every_other_list(server: LiveServer) -> None:
    client = server.client(new_user())
    for limit in (1, 200):
        answer = client.get("/mfa/devices/sync", params={"limit": limit})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"items": [], "next_cursor": None}
    for path in ("/mfa/totp/devices", "/mfa/devices/sync"):
        validation_error(client.get(path, params={"limit": 201}), "limit")
