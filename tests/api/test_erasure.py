"""Reset and erasure: factors removed, data crypto-shredded, nothing linkable left behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import commands.erase as erase_module
from api.settings import Settings
from commands import push
from commands.app import (
    MfaApplication,
    aggregate_id,
    epoch_aggregate_id,
    get_aggregate,
    load_user,
)
from commands.erase import erase_user
from commands.totp import validate_totp
from commands.trusted_devices import remember_device, revoke_device
from domain.errors import DomainError, InvalidCodeError
from projections.audit import export_log
from projections.rebuild import rebuild_projection
from tests.api.helpers import code_at, wrong_code
from tests.api.test_oob import PHONE, enrol_sms
from tests.api.test_persistence import _stored_text
from tests.api.test_push import App, push_endpoint, push_server  # noqa: F401 - fixtures
from tests.api.test_totp import enrol
from tests.conftest import NATS_URL, LiveServer, make_settings, new_user, require_service
from tests.integration.nats_support import PrivateNats, nats_problem, stream_messages
from tests.support.delivery import SmsProvider


@pytest.fixture
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNats]:
    """A private NATS whose store lies outside the folder scanned for the service's data."""
    require_service("NATS with JetStream", nats_problem(NATS_URL))
    server = PrivateNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


def _caught_up(server: LiveServer) -> None:
    runtime = server.runtime
    head = runtime.services.app.max_position()
    assert runtime.read_models.wait_for(head, timeout=30)
    relay = runtime.relay
    if relay is not None:
        import time

        deadline = time.monotonic() + 30
        while relay.position() < head:
            assert time.monotonic() < deadline, "relay did not catch up"
            time.sleep(0.05)


@pytest.fixture
def sms() -> Iterator[SmsProvider]:
    provider = SmsProvider().start()
    yield provider
    provider.stop()


def test_erasure_shreds_every_secret_and_the_user_id_and_the_log_still_replays(
    tmp_path: Path,
    database_url: str,
    nats: PrivateNats,
    sms: SmsProvider,
    start_server: Callable[[Settings], LiveServer],
) -> None:
    settings = make_settings(
        tmp_path, database_url, MFA_NATS_URL=nats.url, MFA_SMS_WEBHOOK_URL=sms.url
    )
    server = start_server(settings)
    user = f"erase-me-{new_user()}"
    client = server.client(user)
    device_id, secret = enrol(client, server)
    enrol_sms(client, sms, PHONE)
    phone_digits = PHONE.lstrip("+")
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    token = client.post("/mfa/trusted-devices", json={"name": "laptop"}).json()["device_token"]
    _caught_up(server)
    assert user in _stored_text(settings)

    internal = server.client("svc", "mfa:internal")
    erased = internal.post("/internal/mfa/erase", json={"user_id": user})
    assert erased.status_code == 200
    assert erased.json() == {"erased": True}
    assert internal.post("/internal/mfa/erase", json={"user_id": user}).json() == {"erased": True}

    status = internal.get(f"/internal/mfa/status/{user}").json()
    assert status["mfa_enabled"] is False
    assert not any(m["enabled"] or m["credentials"] for m in status["methods"])
    assert client.get("/mfa/totp/devices").json()["items"] == []
    assert client.get("/mfa/backup-codes/count").json() == {"remaining": 0, "total": 0}
    check = client.get("/mfa/trusted-devices/check", headers={"X-MFA-Device-Token": token})
    assert check.json() == {"trusted": False}

    _caught_up(server)
    stored = _stored_text(settings)
    for value in (
        user,
        secret,
        token,
        PHONE,
        phone_digits,
        *codes,
        *(c.replace("-", "") for c in codes),
    ):
        assert value not in stored
    on_nats = str([m["event"] for m in stream_messages(nats.url)])
    for value in (secret, token, PHONE, phone_digits, *codes):
        assert value not in on_nats
    erased_messages = [
        m["event"] for m in stream_messages(nats.url) if m["event"]["type"] == "mfa.user.erased"
    ]
    assert [m["subject"] for m in erased_messages] == [user]

    app: MfaApplication = server.runtime.services.app
    exported = list(export_log(app))
    assert len(exported) == app.max_position()
    mine = [e for e in exported if e["type"] == "mfa.user.erased.v1"]
    assert len(mine) == 1
    for projection in server.runtime.read_models.projections:
        report = rebuild_projection(app, server.runtime.read_models, projection.name, compare=True)
        assert report.matched_live is True, projection.name

    history = server.client("root", "mfa:admin").get(f"/admin/mfa/users/{user}/events").json()
    types = [(e["type"], e["redacted"]) for e in history["items"]]
    assert types[-1] == ("mfa.user.erased.v1", False)
    assert all(redacted for _, redacted in types[:-1])
    assert all(e["data"] is None for e in history["items"][:-1])
    assert device_id not in str(history)

    again = client.post("/mfa/totp/setup", json={"name": "new phone"})
    assert again.status_code == 201
    assert [d["name"] for d in client.get("/mfa/totp/devices").json()["items"]] == ["new phone"]


def test_an_admin_reset_removes_every_factor_and_records_who_and_why(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    enrol(client, server)
    client.post("/mfa/backup-codes/generate")
    admin = server.client("root-admin", "mfa:admin")

    short = admin.delete(f"/admin/mfa/reset/{user}", params={"reason": "x"})
    assert short.status_code == 400
    assert [e["field"] for e in short.json()["errors"]] == ["reason"]  # (no "data" artifact)
    assert (
        client.delete(f"/admin/mfa/reset/{user}", params={"reason": "lost phone"}).status_code
        == 403
    )
    reset = admin.delete(f"/admin/mfa/reset/{user}", params={"reason": "lost phone"})
    assert reset.status_code == 200
    assert reset.json() == {
        "user_id": user,
        "reset": True,
        "removed_methods": ["totp", "backup_code"],
    }

    assert client.get("/mfa/totp/devices").json()["items"] == []
    assert client.get("/mfa/backup-codes/count").json()["remaining"] == 0
    assert client.get(f"/mfa/status/{user}").json()["mfa_enabled"] is False
    history = admin.get(f"/admin/mfa/users/{user}/events").json()["items"]
    assert history[-1]["type"] == "mfa.user.reset.v1"
    assert history[-1]["data"]["actor"] == "root-admin"
    assert history[-1]["data"]["reason"] == "lost phone"
    unknown = admin.delete("/admin/mfa/reset/nobody-here", params={"reason": "cleanup"})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


def test_an_admin_reset_needs_no_reason(server: LiveServer) -> None:
    """API.md names no parameter for the reset: a call without `?reason=` was 400."""
    user = new_user()
    enrol(server.client(user), server)
    admin = server.client("root-admin", "mfa:admin")
    reset = admin.delete(f"/admin/mfa/reset/{user}")
    assert reset.status_code == 200, reset.text
    assert reset.json()["removed_methods"] == ["totp"]
    history = admin.get(f"/admin/mfa/users/{user}/events").json()["items"]
    assert (history[-1]["data"]["actor"], history[-1]["data"]["reason"]) == ("root-admin", "")


def test_a_user_whose_id_holds_a_c1_control_can_be_reached_and_erased(
    server: LiveServer,
) -> None:
    """Such ids were accepted, so such users exist: refusing C1 (briefly considered, as for
    C0) would leave them with data no one could erase."""
    user = "legacy\x85user"
    client = server.client(user)
    assert client.post("/mfa/backup-codes/generate").status_code == 201
    internal = server.client("svc", "mfa:internal")
    erased = internal.post("/internal/mfa/erase", json={"user_id": user})
    assert erased.status_code == 200, erased.text
    assert client.get("/mfa/backup-codes/count").json()["remaining"] == 0


def test_erasure_needs_the_internal_scope(server: LiveServer) -> None:
    user = new_user()
    assert (
        server.client(user).post("/internal/mfa/erase", json={"user_id": user}).status_code == 403
    )
    admin = server.client("root", "mfa:admin")
    assert admin.post("/internal/mfa/erase", json={"user_id": user}).status_code == 403
    assert httpx.post(server.url + "/internal/mfa/erase", json={"user_id": user}).status_code == 401


def test_an_erased_users_push_challenges_are_gone_even_from_the_process_that_cached_them(
    push_server: LiveServer,  # noqa: F811 - the fixture
    push_endpoint: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    """Push challenges are aggregates of their own, encrypted with the user's key; one this
    process had loaded (a status poll, the generic challenge) stayed readable from its cache,
    context (IP, user agent) included, after the key was destroyed."""
    url, _ = push_endpoint
    user = new_user()
    client = push_server.client(user)
    internal = push_server.client("svc", "mfa:internal")
    assert App("device-1", url).sync(client).status_code == 200
    context = {"ip": "203.0.113.77", "user_agent": "Victim Browser/1.0", "app": "bank"}
    old = client.post("/mfa/push/challenge", json={"context": context}).json()["challenge_id"]
    push_server.clock.advance(15 * 60)  # older than the push throttle remembers
    polled = client.post("/mfa/push/challenge", json={"context": context}).json()["challenge_id"]
    generic = client.post("/mfa/challenge", json={"method": "push"})
    assert generic.status_code == 201, generic.text
    challenge_ids = [old, polled, generic.json()["challenge_id"]]
    for challenge_id in challenge_ids:  # each is now in this process's aggregate cache
        seen = internal.get(f"/internal/mfa/push/challenge/{challenge_id}")
        assert seen.status_code == 200, seen.text

    assert internal.post("/internal/mfa/erase", json={"user_id": user}).status_code == 200

    for challenge_id in challenge_ids:
        gone = internal.get(f"/internal/mfa/push/challenge/{challenge_id}")
        assert gone.status_code == 404, (challenge_id, gone.text)
        assert "203.0.113.77" not in gone.text


# --------------------------------------------------------------- races with an erasure


def _grow_to(services: Any, user: str, version: int) -> None:
    """Trusted devices remembered and revoked until the user's aggregate stands at
    `version` (one event each)."""
    while (mfa := load_user(services, user)) is not None and mfa.version < version - 1:
        device = remember_device(services, user, "laptop", 30).value.device
        revoke_device(services, user, device.device_id)
    while (mfa := load_user(services, user)) is not None and mfa.version < version:
        remember_device(services, user, "laptop", 30)
    mfa = load_user(services, user)
    assert mfa is not None
    assert mfa.version == version


def _readable(app: MfaApplication, agg_id: Any) -> str:
    """Everything stored under the aggregate id that still decrypts: events and snapshots."""
    assert app.snapshots is not None
    rows = [
        *app.events.recorder.select_events(agg_id),
        *app.snapshots.recorder.select_events(agg_id),
    ]
    return str([vars(app.mapper.to_domain_event(row)) for row in rows])


def erased_first(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, services: Any, user: str
) -> list[bool]:
    """Make `owner.name` erase the user the first time it is called, then do its work: the
    erasure lands right there. The list says whether it happened."""
    original = getattr(owner, name)
    erased: list[bool] = []

    def erase_then_call(*args: Any, **kwargs: Any) -> Any:
        if not erased:
            erased.append(True)
            erase_user(services, user)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, erase_then_call)
    return erased


def test_a_snapshot_due_just_as_the_user_is_erased_is_not_stored_under_a_new_key(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot of the 100th event is written after that event is stored. An erasure in
    between used to make the vault create the destroyed key again and store the whole
    decrypted state (the TOTP secret) readable under it."""
    services = server.runtime.services
    app = services.app
    user = new_user()
    _, secret = enrol(server.client(user), server)
    agg_id = aggregate_id(services, user)
    _grow_to(services, user, 99)
    assert app.snapshots is not None
    erased = erased_first(monkeypatch, app.snapshots, "put", services, user)
    remember_device(services, user, "laptop", 30)  # the 100th event: a snapshot is due
    assert erased
    assert secret not in _readable(app, agg_id)
    assert app.vault.get(str(agg_id)) is None


def test_a_command_whose_events_pass_the_snapshot_version_succeeds_if_erased_meanwhile(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several events past version 100 make the library reload the aggregate to snapshot it;
    erased in between, that reload failed the request (500) after its events were stored."""
    services = server.runtime.services
    app = services.app
    user = new_user()
    _, secret = enrol(server.client(user), server)
    _grow_to(services, user, 95)
    for _ in range(4):  # wrong codes: versions 96-99
        with pytest.raises(InvalidCodeError):
            validate_totp(services, user, wrong_code(secret, server.clock.now()))
    erased = erased_first(monkeypatch, app, "_take_snapshots", services, user)
    with pytest.raises(InvalidCodeError):  # the 5th: VerificationFailed and FactorLocked
        validate_totp(services, user, wrong_code(secret, server.clock.now()))
    assert erased


def test_a_refused_push_answer_stored_after_the_erasure_does_not_create_the_key_again(
    push_server: LiveServer,  # noqa: F811 - the fixture
    push_endpoint: tuple[str, list[dict[str, Any]]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = push_endpoint
    services = push_server.runtime.services
    app = services.app
    user = new_user()
    client = push_server.client(user)
    App("phone", url).sync(client)
    challenge_id = client.post("/mfa/push/challenge").json()["challenge_id"]
    agg_id = aggregate_id(services, user)
    erased = erased_first(monkeypatch, app, "save", services, user)
    with pytest.raises(DomainError):
        push.respond(
            services, user, challenge_id, "phone", approve=True, signature="AA", number="00"
        )
    assert erased
    assert app.vault.get(str(agg_id)) is None


def test_an_erasure_that_finds_the_user_erased_and_enrolled_again_leaves_the_new_enrolment(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Erasure A looks the user up; erasure B (a client's retry) erases them, and the user
    enrols again. A used to append `UserErased` to the new enrolment but destroy only the
    old epoch's key: an aggregate marked erased whose secret still decrypted."""
    services = server.runtime.services
    user = new_user()
    client = server.client(user)
    enrol(client, server)
    enrolled_again: list[str] = []

    def lookup_then_race(services_: Any, agg_id: Any) -> Any:
        found = get_aggregate(services_, agg_id)
        if not enrolled_again:
            monkeypatch.setattr(erase_module, "get_aggregate", get_aggregate)
            erase_user(services, user)  # B
            _, secret = enrol(client, server)
            enrolled_again.append(secret)
        return found

    monkeypatch.setattr(erase_module, "get_aggregate", lookup_then_race)
    assert erase_user(services, user).value is True  # A
    [secret] = enrolled_again

    current = epoch_aggregate_id(services, user, 1)
    mfa = load_user(services, user)
    assert mfa is not None
    assert mfa.id == current
    assert not mfa.erased
    assert services.app.vault.get(str(current)) is not None
    assert services.app.vault.get(str(epoch_aggregate_id(services, user, 0))) is None
    validated = client.post(
        "/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())}
    )
    assert validated.status_code in (200, 403), validated.text  # (403: the step was used)
    assert client.get(f"/mfa/status/{user}").json()["mfa_enabled"] is True


def test_erasing_an_unknown_user_or_erasing_twice_does_not_keep_them_from_enrolling(
    server: LiveServer,
) -> None:
    internal = server.client("svc", "mfa:internal")
    for erasures in (1, 2):
        user = new_user()
        for _ in range(erasures):
            assert internal.post("/internal/mfa/erase", json={"user_id": user}).status_code == 200
        enrol(server.client(user), server)
        erased_once = new_user()
        enrol(server.client(erased_once), server)
        for _ in range(erasures):
            erased = internal.post("/internal/mfa/erase", json={"user_id": erased_once})
            assert erased.status_code == 200
        enrol(server.client(erased_once), server)


def test_a_push_pending_at_an_admin_reset_can_no_longer_be_approved(
    push_server: LiveServer,  # noqa: F811 - the fixture
    push_endpoint: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    url, _ = push_endpoint
    user = new_user()
    client = push_server.client(user)
    device = App("device-1", url)
    assert device.sync(client).status_code == 200
    pending = client.post("/mfa/push/challenge", json={"context": {"app": "bank"}}).json()
    admin = push_server.client("root", "mfa:admin")
    reset = admin.delete(f"/admin/mfa/reset/{user}", params={"reason": "lost phone"})
    assert reset.status_code == 200
    assert device.sync(client).status_code == 200  # the same app enrolled again

    late = device.approve(client, pending["challenge_id"], pending["number"])
    assert late.status_code == 409, late.text
    internal = push_server.client("svc", "mfa:internal")
    seen = internal.get(f"/internal/mfa/push/challenge/{pending['challenge_id']}").json()
    assert seen["status"] == "denied"
    assert seen["reason"] == "reset"
    assert seen["device_id"] is None  # no device answered it
    assert client.post("/mfa/push/challenge").status_code == 201


def test_an_admin_reset_takes_its_reason_from_a_json_body_too(server: LiveServer) -> None:
    user = new_user()
    enrol(server.client(user), server)
    admin = server.client("root-admin", "mfa:admin")
    reset = admin.request("DELETE", f"/admin/mfa/reset/{user}", json={"reason": "lost phone"})
    assert reset.status_code == 200, reset.text
    history = admin.get(f"/admin/mfa/users/{user}/events").json()["items"]
    assert history[-1]["data"]["reason"] == "lost phone"
    other = new_user()
    enrol(server.client(other), server)
    unknown = admin.request("DELETE", f"/admin/mfa/reset/{other}", json={"why": "x"})
    assert unknown.status_code == 400


def test_an_admin_reset_is_in_the_config_audit_log_and_leaves_no_user_id_after_erasure(
    server: LiveServer,
) -> None:
    """API.md: the reset is "(audited)", and the admin's `sub` is the actor recorded in the
    config audit log. An erasure of the user then leaves the fact and the admin, not the id."""
    user = new_user()
    enrol(server.client(user), server)
    admin = server.client("helpdesk-7", "mfa:admin")
    assert admin.delete(f"/admin/mfa/reset/{user}", params={"reason": "lost phone"}).is_success
    logs = admin.get("/admin/mfa/config-audit-logs", params={"resource_type": "user"}).json()
    [entry] = [e for e in logs["items"] if e["resource_id"] == user]
    assert (entry["actor"], entry["action"], entry["resource_type"]) == (
        "helpdesk-7",
        "user.reset",
        "user",
    )
    assert entry["before"]["methods"] == ["totp"]
    assert entry["after"] == {"methods": []}
    assert "lost phone" not in str(logs)  # the reason stays in the user's own events

    internal = server.client("svc", "mfa:internal")
    assert internal.post("/internal/mfa/erase", json={"user_id": user}).status_code == 200
    logs = admin.get("/admin/mfa/config-audit-logs", params={"resource_type": "user"}).json()
    [after] = [e for e in logs["items"] if e["id"] == entry["id"]]
    assert after["resource_id"] == "urn:mfa:erased-user"
    assert after["actor"] == "helpdesk-7"
    assert after["before"] == {"methods": ["totp"]}  # the aggregate id went too
    assert user not in str(logs)
    app = server.runtime.services.app
    report = rebuild_projection(app, server.runtime.read_models, "config_audit_log", compare=True)
    assert report.matched_live is True


def test_an_admin_reset_takes_an_empty_body_and_answers_its_request_id(
    server: LiveServer,
) -> None:
    """A console that sends `{}` when no reason was typed got a 400; and the request id the
    audit log records was not in the answer, as it is for every admin config change."""
    user = new_user()
    enrol(server.client(user), server)
    admin = server.client("root-admin", "mfa:admin")
    reset = admin.request(
        "DELETE", f"/admin/mfa/reset/{user}", json={}, headers={"X-Request-ID": "ticket-42"}
    )
    assert reset.status_code == 200, reset.text
    assert reset.headers["x-request-id"] == "ticket-42"
    logs = admin.get("/admin/mfa/config-audit-logs", params={"resource_type": "user"}).json()
    [entry] = [e for e in logs["items"] if e["resource_id"] == user]
    assert entry["actor"] == "root-admin"
