"""TOTP over HTTP, on SQLite and on PostgreSQL: enrol, verify, validate, replay, lockout."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.api.helpers import code_at, wrong_code
from tests.conftest import LiveServer, new_user


def enrol(client: httpx.Client, server: LiveServer) -> tuple[str, str]:
    """Set up and verify a device; returns (device_id, secret)."""
    setup = client.post("/mfa/totp/setup", json={"name": "phone"})
    assert setup.status_code == 201, setup.text
    body = setup.json()
    verified = client.post(
        "/mfa/totp/verify",
        json={"device_id": body["device_id"], "code": code_at(body["secret"], server.clock.now())},
    )
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"device_id": body["device_id"], "enabled": True}
    return body["device_id"], body["secret"]


def test_setup_returns_the_secret_uri_and_a_qr_code_once(server: LiveServer) -> None:
    client = server.client(new_user())
    response = client.post("/mfa/totp/setup", json={"name": "phone"})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={body['secret']}" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg")
    listed = client.get("/mfa/totp/devices").json()["items"]
    assert [d["device_id"] for d in listed] == [body["device_id"]]
    assert body["secret"] not in str(listed)


def test_enrol_verify_validate_replay_lockout_and_auto_unlock(server: LiveServer) -> None:
    client = server.client(new_user())
    device_id, secret = enrol(client, server)
    server.clock.advance(30)

    code = code_at(secret, server.clock.now())
    ok = client.post("/mfa/totp/validate", json={"code": code})
    assert ok.status_code == 200
    assert ok.json() == {"verified": True, "device_id": device_id}

    replay = client.post("/mfa/totp/validate", json={"code": code})
    assert replay.status_code == 403
    assert replay.headers["content-type"].startswith("application/problem+json")
    assert replay.json()["code"] == "invalid_code"
    assert replay.json()["attempts_remaining"] == 4

    for remaining in (3, 2, 1, 0):
        bad = client.post(
            "/mfa/totp/validate", json={"code": wrong_code(secret, server.clock.now())}
        )
        assert bad.status_code == 403
        assert bad.json()["attempts_remaining"] == remaining

    next_step = code_at(secret, server.clock.now(), steps=1)
    locked = client.post("/mfa/totp/validate", json={"code": next_step})
    assert locked.status_code == 429
    assert locked.json()["code"] == "locked"
    assert int(locked.headers["Retry-After"]) == 30

    server.clock.advance(31)
    unlocked = client.post("/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())})
    assert unlocked.status_code == 200, unlocked.text


def test_lockouts_escalate_while_failures_continue(server: LiveServer) -> None:
    client = server.client(new_user())
    _, secret = enrol(client, server)
    retry_afters = []
    for _ in range(2):
        for _ in range(5):
            client.post("/mfa/totp/validate", json={"code": wrong_code(secret, server.clock.now())})
        locked = client.post("/mfa/totp/validate", json={"code": "123456"})
        assert locked.status_code == 429
        retry_afters.append(int(locked.headers["Retry-After"]))
        server.clock.advance(retry_afters[-1] + 1)
    assert retry_afters == [30, 60]


def test_waiting_the_retry_after_a_lock_gives_is_always_enough(server: LiveServer) -> None:
    """With 29.0005 s of the lock left, Retry-After said 29 (rounding that dropped fractions
    under a millisecond), and a client that waited exactly that long was refused again."""
    client = server.client(new_user())
    _, secret = enrol(client, server)
    server.clock.advance(30)
    for _ in range(5):
        client.post("/mfa/totp/validate", json={"code": wrong_code(secret, server.clock.now())})
    server.clock.advance(0.9995)
    locked = client.post("/mfa/totp/validate", json={"code": "123456"})
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "30"
    assert locked.json()["retry_after"] == 30
    server.clock.advance(int(locked.headers["Retry-After"]))
    code = code_at(secret, server.clock.now())
    assert client.post("/mfa/totp/validate", json={"code": code}).status_code == 200


def test_twenty_concurrent_validations_of_one_code_let_exactly_one_through(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    _, secret = enrol(client, server)
    server.clock.advance(30)
    code = code_at(secret, server.clock.now())

    def attempt(_: int) -> int:
        return client.post("/mfa/totp/validate", json={"code": code}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    assert statuses.count(200) == 1, statuses
    assert all(s in (200, 403, 409, 429) for s in statuses), statuses


def test_devices_can_be_named_listed_disabled_enabled_and_revoked(server: LiveServer) -> None:
    client = server.client(new_user())
    first, secret = enrol(client, server)
    second = client.post("/mfa/totp/devices", json={"name": "tablet"})
    assert second.status_code == 201
    second_id = second.json()["device_id"]

    names = {d["name"]: d["status"] for d in client.get("/mfa/totp/devices").json()["items"]}
    assert names == {"phone": "active", "tablet": "pending"}
    assert client.get(f"/mfa/totp/devices/{second_id}").json()["name"] == "tablet"

    assert client.post(f"/mfa/totp/devices/{first}/disable").json()["status"] == "disabled"
    server.clock.advance(30)
    refused = client.post("/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())})
    assert refused.status_code == 409
    assert refused.json()["code"] == "not_enrolled"
    assert client.post(f"/mfa/totp/devices/{first}/enable").json()["status"] == "active"

    assert client.delete(f"/mfa/totp/devices/{second_id}").status_code == 200
    assert client.get(f"/mfa/totp/devices/{second_id}").status_code == 404
    assert client.post(f"/mfa/totp/devices/{second_id}/disable").status_code == 404


def test_totp_can_be_switched_off_and_on(server: LiveServer) -> None:
    client = server.client(new_user())
    device_id, secret = enrol(client, server)
    off = client.post("/mfa/totp/disable")
    assert off.json() == {"enabled": False, "device_ids": [device_id]}
    server.clock.advance(30)
    assert (
        client.post(
            "/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())}
        ).status_code
        == 409
    )
    on = client.post("/mfa/totp/enable")
    assert on.json() == {"enabled": True, "device_ids": [device_id]}
    assert (
        client.post(
            "/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())}
        ).status_code
        == 200
    )


def test_another_users_device_is_not_found(server: LiveServer) -> None:
    alice = server.client(new_user())
    device_id, _ = enrol(alice, server)
    mallory = server.client(new_user())
    assert mallory.get(f"/mfa/totp/devices/{device_id}").status_code == 404
    assert mallory.delete(f"/mfa/totp/devices/{device_id}").status_code == 404
    assert mallory.post(f"/mfa/totp/devices/{device_id}/disable").status_code == 404
    assert alice.get(f"/mfa/totp/devices/{device_id}").status_code == 200


def test_internal_validation_and_admin_status_need_their_scopes(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    device_id, secret = enrol(client, server)
    server.clock.advance(30)
    code = code_at(secret, server.clock.now())

    plain = server.client("svc")
    assert (
        plain.post("/internal/mfa/totp/validate", json={"user_id": user, "code": code}).status_code
        == 403
    )
    internal = server.client("svc", "mfa:internal")
    ok = internal.post("/internal/mfa/totp/validate", json={"user_id": user, "code": code})
    assert ok.status_code == 200
    assert ok.json()["device_id"] == device_id
    devices = internal.get("/internal/mfa/totp/devices", params={"user_id": user}).json()
    assert [d["device_id"] for d in devices["items"]] == [device_id]

    assert plain.get(f"/admin/mfa/totp/{user}").status_code == 403
    admin = server.client("root", "mfa:admin")
    status = admin.get(f"/admin/mfa/totp/{user}").json()
    assert status["enabled"] is True
    assert status["devices"][0]["device_id"] == device_id

    disabled = internal.post("/internal/mfa/totp/disable", json={"user_id": user})
    assert disabled.json() == {"enabled": False, "device_ids": [device_id]}
    assert admin.get(f"/admin/mfa/totp/{user}").json()["enabled"] is False


def test_malformed_codes_are_validation_errors_that_change_nothing(server: LiveServer) -> None:
    client = server.client(new_user())
    _, secret = enrol(client, server)
    for body in (
        {"code": "12ab56"},
        {"code": ""},
        {},
        {"code": 123456},
        {"code": "1" * 50},
        {"code": "123456", "extra": 1},
    ):
        response = client.post("/mfa/totp/validate", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == "validation_error"
    response = client.post(
        "/mfa/totp/validate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    server.clock.advance(30)
    ok = client.post("/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())})
    assert ok.status_code == 200


def test_setup_for_a_long_non_ascii_user_id_fits_a_qr_code(server: LiveServer) -> None:
    """256 CJK characters are over 2,300 once percent-encoded in the URI's label, more than any
    QR code holds: setup answered 500 after saving the pending device. The label is now
    shortened for display; the device is the user's as always."""
    client = server.client("\u7528" * 256)
    setup = client.post("/mfa/totp/setup", json={"name": "phone"})
    assert setup.status_code == 201, setup.text
    body = setup.json()
    assert body["qr_svg"].startswith("<svg")
    assert "%E2%80%A6" in body["otpauth_uri"]  # the ellipsis of the shortened account
    verified = client.post(
        "/mfa/totp/verify",
        json={"device_id": body["device_id"], "code": code_at(body["secret"], server.clock.now())},
    )
    assert verified.status_code == 200, verified.text
    assert [d["device_id"] for d in client.get("/mfa/totp/devices").json()["items"]] == [
        body["device_id"]
    ]


def test_a_set_up_left_unverified_for_an_hour_expires_and_the_next_set_up_removes_it(
    server: LiveServer,
) -> None:
    """Its secret was shown once, an hour ago: 410 `challenge_expired`, whatever the code,
    and no failure counted; the listing said until when; the next set-up removes it (its
    slot and name are free again) and the device lists follow."""
    client = server.client(new_user())
    setup = client.post("/mfa/totp/setup", json={"name": "phone"}).json()
    created = client.get(f"/mfa/totp/devices/{setup['device_id']}").json()
    assert setup["expires_at"] == created["expires_at"]
    assert created["expires_at"] > created["created_at"]
    server.clock.advance(3600)

    for body in ({"device_id": setup["device_id"]}, {}):
        code = code_at(setup["secret"], server.clock.now())
        late = client.post("/mfa/totp/verify", json={**body, "code": code})
        assert late.status_code == 410, late.text
        assert late.json()["code"] == "challenge_expired"
    [listed] = client.get("/mfa/totp/devices").json()["items"]
    assert listed["status"] == "pending"

    again = client.post("/mfa/totp/setup", json={"name": "phone"})
    assert again.status_code == 201, again.text  # the name is free again
    listed = client.get("/mfa/totp/devices").json()["items"]
    assert [d["device_id"] for d in listed] == [again.json()["device_id"]]
    assert client.get(f"/mfa/totp/devices/{setup['device_id']}").status_code == 404
    code = code_at(again.json()["secret"], server.clock.now())
    verified = client.post("/mfa/totp/verify", json={"code": code})
    assert verified.status_code == 200, verified.text
    [active] = client.get("/mfa/totp/devices").json()["items"]
    assert active["status"] == "active"
    assert active["expires_at"] is None


def test_the_admin_view_lists_devices_in_the_order_of_the_users_own_list(
    server: LiveServer,
) -> None:
    """Set-ups that share a time (an instance whose clock is a little behind stamps the last
    event's) came out in one order for the admin and another for the user."""
    user = new_user()
    client = server.client(user)
    for name in "abcdef":
        assert client.post("/mfa/totp/setup", json={"name": name}).status_code == 201
        server.clock.advance(-0.5)
    listed = [d["device_id"] for d in client.get("/mfa/totp/devices").json()["items"]]
    admin = server.client("root", "mfa:admin").get(f"/admin/mfa/totp/{user}").json()
    assert [d["device_id"] for d in admin["devices"]] == listed
