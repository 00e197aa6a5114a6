"""Methods, primary credential and status."""

from __future__ import annotations

from tests.api.test_totp import enrol
from tests.conftest import LiveServer, new_user


def test_methods_list_every_method_and_what_the_user_has(server: LiveServer) -> None:
    client = server.client(new_user())
    empty = client.get("/mfa/methods").json()
    assert {m["method"] for m in empty["items"]} == {
        "totp",
        "backup_code",
        "webauthn",
        "sms",
        "email",
        "push",
    }
    assert not any(m["enabled"] for m in empty["items"])
    enrol(client, server)
    client.post("/mfa/backup-codes/generate")
    enabled = {m["method"] for m in client.get("/mfa/methods").json()["items"] if m["enabled"]}
    assert enabled == {"totp", "backup_code"}


def test_a_method_can_be_removed_and_an_active_credential_made_primary(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    device_id, _ = enrol(client, server)
    primary = client.post(f"/mfa/credentials/{device_id}/primary")
    assert primary.status_code == 200
    assert primary.json() == {"credential_id": device_id, "method": "totp", "primary": True}
    status = client.get(f"/mfa/status/{user}").json()
    assert status["primary_method"] == "totp"
    assert status["primary_credential_id"] == device_id
    assert status["mfa_enabled"] is True

    assert client.post("/mfa/credentials/nope/primary").status_code == 404
    assert client.delete("/mfa/methods/totp").status_code == 200
    assert client.get("/mfa/totp/devices").json()["items"] == []
    after = client.get(f"/mfa/status/{user}").json()
    assert after["mfa_enabled"] is False
    assert after["primary_method"] is None
    assert client.delete("/mfa/methods/totp").status_code == 409
    assert client.delete("/mfa/methods/carrier-pigeon").status_code == 404


def test_status_is_for_the_user_or_an_admin_and_internal_services(server: LiveServer) -> None:
    user = new_user()
    enrol(server.client(user), server)
    assert server.client(new_user()).get(f"/mfa/status/{user}").status_code == 403
    assert server.client("root", "mfa:admin").get(f"/mfa/status/{user}").status_code == 200
    internal = server.client("svc", "mfa:internal").get(f"/internal/mfa/status/{user}")
    assert internal.status_code == 200
    assert internal.json()["mfa_enabled"] is True
    assert server.client(user).get(f"/internal/mfa/status/{user}").status_code == 403


def test_locks_show_in_the_status(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    enrol(client, server)
    for _ in range(5):
        client.post("/mfa/totp/validate", json={"code": "000000"})
    status = client.get(f"/mfa/status/{user}").json()
    assert [lock["factor"] for lock in status["locks"]] == ["otp"]


def test_a_disabled_primary_is_not_reported_until_it_is_enabled_again(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    device_id, _ = enrol(client, server)
    assert client.post(f"/mfa/credentials/{device_id}/primary").status_code == 200

    def primary() -> tuple[bool, str | None, str | None]:
        methods = client.get("/mfa/methods").json()
        totp = next(m for m in methods["items"] if m["method"] == "totp")
        status = client.get(f"/mfa/status/{user}").json()
        assert methods["primary_method"] == status["primary_method"]
        return totp["primary"], status["primary_method"], status["primary_credential_id"]

    assert primary() == (True, "totp", device_id)
    assert client.post(f"/mfa/totp/devices/{device_id}/disable").status_code == 200
    assert primary() == (False, None, None)  # it cannot be used, so it is not offered
    assert client.post(f"/mfa/totp/devices/{device_id}/enable").status_code == 200
    assert primary() == (True, "totp", device_id)  # the user's choice was kept
