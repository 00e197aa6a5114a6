"""Push MFA over HTTP with real Ed25519 keys and a real HTTP server as the push endpoint."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from api.settings import Settings
from commands.adapters.push import DEADLINE_SECONDS
from tests.commands.test_push_sender import Dripper
from tests.conftest import LiveServer, make_settings, new_user


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class App:
    """An authenticator app: a device id and its Ed25519 key."""

    def __init__(self, device_id: str, endpoint: str) -> None:
        self.device_id = device_id
        self.endpoint = endpoint
        self.key = Ed25519PrivateKey.generate()

    @property
    def public_key(self) -> str:
        return b64url(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, challenge_id: str, verb: str) -> str:
        return b64url(self.key.sign(f"mfa-push:{challenge_id}:{verb}".encode()))

    def sync(self, client: httpx.Client, **extra: Any) -> httpx.Response:
        body = {
            "device_id": self.device_id,
            "name": "My phone",
            "platform": "android",
            "push_token": self.endpoint,
            "public_key": self.public_key,
            "app_version": "1.4.0",
            **extra,
        }
        return client.post("/mfa/devices/sync", json=body)

    def approve(self, client: httpx.Client, challenge_id: str, number: str) -> httpx.Response:
        return client.post(
            "/mfa/push/approve",
            json={
                "challenge_id": challenge_id,
                "device_id": self.device_id,
                "number": number,
                "signature": self.sign(challenge_id, "approve"),
            },
        )

    def deny(
        self, client: httpx.Client, challenge_id: str, reason: str | None = None
    ) -> httpx.Response:
        body = {
            "challenge_id": challenge_id,
            "device_id": self.device_id,
            "signature": self.sign(challenge_id, "deny"),
        }
        if reason:
            body["reason"] = reason
        return client.post("/mfa/push/deny", json=body)


def with_app(server: LiveServer, endpoint: str) -> tuple[httpx.Client, App]:
    """A new user whose authenticator app ("phone") is synced."""
    client = server.client(new_user())
    app = App("phone", endpoint)
    assert app.sync(client).status_code == 200
    return client, app


@pytest.fixture
def push_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server standing in for the device's UnifiedPush endpoint."""
    received: list[dict[str, Any]] = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/push/device-1", received
    server.shutdown()


@pytest.fixture
def push_server(
    tmp_path: Path, database_url: str, start_server: Callable[[Settings], LiveServer]
) -> LiveServer:
    return start_server(make_settings(tmp_path, database_url, MFA_PUSH_ALLOW_PRIVATE="1"))


def test_a_signed_approval_with_the_right_number_approves_and_nothing_else_does(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = push_endpoint
    client = push_server.client(new_user())
    app = App("device-1", url)
    assert app.sync(client).json()["created"] is True

    created = client.post(
        "/mfa/push/challenge", json={"context": {"ip": "203.0.113.7", "app": "webmail"}}
    )
    assert created.status_code == 201
    challenge = created.json()
    assert challenge["status"] == "pending"
    assert len(challenge["number"]) == 2
    assert challenge["number"].isdigit()
    assert received[-1]["challenge_id"] == challenge["challenge_id"]
    delivered = received[-1]
    assert set(delivered) == {"type", "challenge_id", "expires_at", "context"}
    assert challenge["number"] not in [str(v) for v in delivered.values()]
    assert challenge["number"] not in [str(v) for v in delivered["context"].values()]

    cid, number = challenge["challenge_id"], challenge["number"]
    wrong = f"{(int(number) + 1 - 10) % 90 + 10:02d}"
    assert app.approve(client, cid, wrong).status_code == 403
    forger = App("device-1", url)
    assert forger.approve(client, cid, number).status_code == 403
    ok = app.approve(client, cid, number)
    assert ok.status_code == 200
    assert ok.json()["status"] == "approved"
    again = app.approve(client, cid, number)
    assert again.status_code == 409
    assert client.get(f"/mfa/push/challenge/{cid}").json()["status"] == "approved"


def test_another_users_device_or_challenge_cannot_answer(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    alice, mallory = push_server.client(new_user()), push_server.client(new_user())
    alice_app, mallory_app = App("alice-phone", url), App("mallory-phone", url)
    alice_app.sync(alice)
    mallory_app.sync(mallory)
    challenge = alice.post("/mfa/push/challenge").json()
    cid, number = challenge["challenge_id"], challenge["number"]

    assert mallory_app.approve(mallory, cid, number).status_code == 404
    assert mallory.get(f"/mfa/push/challenge/{cid}").status_code == 404
    stolen = App("mallory-phone", url)
    stolen.key = mallory_app.key
    assert stolen.approve(alice, cid, number).status_code == 403
    assert alice.get(f"/mfa/push/challenge/{cid}").json()["status"] == "pending"


def test_an_unanswered_push_expires_after_two_minutes(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    challenge = client.post("/mfa/push/challenge").json()
    push_server.clock.advance(121)
    assert (
        client.get(f"/mfa/push/challenge/{challenge['challenge_id']}").json()["status"] == "expired"
    )
    late = app.approve(client, challenge["challenge_id"], challenge["number"])
    assert late.status_code == 410
    assert late.json()["code"] == "challenge_expired"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_device_endpoint_that_never_finishes_answering_cannot_hold_the_request(
    push_server: LiveServer,
) -> None:
    """Twelve such pushes used to hold every handler thread of the API for as long as the
    endpoint's owner liked (httpx's timeouts bound each read, not a request)."""
    dripper = Dripper("headers")
    try:
        client = push_server.client(new_user())
        App("slow", dripper.url).sync(client)
        started = time.monotonic()
        refused = client.post("/mfa/push/challenge")
        assert time.monotonic() - started < DEADLINE_SECONDS + 2
        assert refused.status_code == 502, refused.text
    finally:
        dripper.close()


def test_push_bombing_is_throttled(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client, _ = with_app(push_server, url)
    for _ in range(3):
        assert client.post("/mfa/push/challenge").status_code == 201
    fourth = client.post("/mfa/push/challenge")
    assert fourth.status_code == 429
    assert fourth.json()["code"] == "rate_limited"
    assert 1 <= int(fourth.headers["Retry-After"]) <= 120

    push_server.clock.advance(121)
    assert client.post("/mfa/push/challenge").status_code == 201
    assert client.post("/mfa/push/challenge").status_code == 201
    sixth = client.post("/mfa/push/challenge")
    assert sixth.status_code == 429
    assert int(sixth.headers["Retry-After"]) > 120
    push_server.clock.advance(600)
    assert client.post("/mfa/push/challenge").status_code == 201


def test_a_throttled_push_through_the_generic_challenge_opens_nothing(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """A client retrying its 429s used to open a challenge each time, until the user's open
    challenges were used up and every other method answered 409 for five minutes."""
    url, received = push_endpoint
    client, _ = with_app(push_server, url)
    assert client.post("/mfa/backup-codes/generate").status_code == 201
    for _ in range(3):
        assert client.post("/mfa/push/challenge").status_code == 201
    for _ in range(12):
        refused = client.post("/mfa/challenge", json={"method": "push"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
    assert len(received) == 3
    assert client.post("/mfa/challenge", json={"method": "backup_code"}).status_code == 201


def test_a_push_denied_by_rejected_responses_no_longer_counts_as_unanswered(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    challenges = [client.post("/mfa/push/challenge").json() for _ in range(3)]
    assert client.post("/mfa/push/challenge").status_code == 429
    cid, number = challenges[0]["challenge_id"], challenges[0]["number"]
    wrong = f"{(int(number) + 1 - 10) % 90 + 10:02d}"
    for _ in range(3):
        assert app.approve(client, cid, wrong).status_code == 403
    assert client.get(f"/mfa/push/challenge/{cid}").json()["status"] == "denied"
    assert client.post("/mfa/push/challenge").status_code == 201


def test_a_push_through_the_generic_challenge_shows_the_login_context(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = push_endpoint
    client, _ = with_app(push_server, url)
    headers = {"User-Agent": "Firefox/140"}
    generic = client.post("/mfa/challenge", json={"method": "push"}, headers=headers)
    assert generic.status_code == 201
    cid = generic.json()["challenge_id"]
    shown = {"ip": "127.0.0.1", "user_agent": "Firefox/140"}
    assert client.get(f"/mfa/push/challenge/{cid}").json()["context"] == shown
    assert received[-1]["context"] == shown

    given = {"ip": "203.0.113.7", "user_agent": "Safari/18", "app": "webmail"}
    generic = client.post("/mfa/challenge", json={"method": "push", "context": given})
    assert received[-1]["challenge_id"] == generic.json()["challenge_id"]
    assert received[-1]["context"] == given


def test_a_login_context_that_would_spoof_the_prompt_is_refused_or_cleaned(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """The phone shows the context to the user who approves: no terminal escapes, controls
    or bidi overrides from the app, and none from the caller's own user agent."""
    url, received = push_endpoint
    client, _ = with_app(push_server, url)
    for hostile in (
        {"user_agent": "\x1b[2J\x1b[31mApproved by IT"},
        {"app": "\x07bank"},
        {"ip": "203.0.113.9\x00"},
        {"app": "bank\u202emoc.live"},
        {"user_agent": "Firefox\u0085"},
    ):
        refused = client.post("/mfa/push/challenge", json={"context": hostile})
        assert refused.status_code == 400, (hostile, refused.text)
    sent = len(received)
    created = client.post("/mfa/push/challenge", headers={"User-Agent": b"Firefox/1\x85\xa0x"})
    assert created.status_code == 201
    shown = client.get(f"/mfa/push/challenge/{created.json()['challenge_id']}").json()
    assert shown["context"]["user_agent"] == "Firefox/1\xa0x"
    assert received[sent:][-1]["context"]["user_agent"] == "Firefox/1\xa0x"


def test_a_not_me_denial_is_a_fraud_report_that_raises_the_risk(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    user = new_user()
    client = push_server.client(user)
    app = App("phone", url)
    app.sync(client)
    admin = push_server.client("root", "mfa:admin")
    evaluate = {"user_id": user, "ip": "198.51.100.20"}
    before = admin.post("/admin/mfa/risk-policies/evaluate", json=evaluate).json()["score"]

    challenge = client.post("/mfa/push/challenge").json()
    denied = app.deny(client, challenge["challenge_id"], "not_me")
    assert denied.status_code == 200
    assert denied.json()["status"] == "denied"
    assert denied.json()["reason"] == "not_me"
    after = admin.post("/admin/mfa/risk-policies/evaluate", json=evaluate).json()
    assert after["score"] > before
    assert "fraud_reports" in {r["signal"] for r in after["reasons"]}

    history = client.get("/mfa/push/history").json()["items"]
    assert history[0]["fraud"] is True
    stats = admin.get("/admin/mfa/push/stats").json()
    assert stats["fraud_reports"] >= 1
    assert stats["by_status"]["denied"] >= 1


def test_history_stats_and_status_views(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    user = new_user()
    client = push_server.client(user)
    app = App("phone", url)
    app.sync(client)
    opened = push_server.clock.now()
    first = client.post("/mfa/push/challenge").json()
    push_server.clock.advance(4)
    assert app.approve(client, first["challenge_id"], first["number"]).status_code == 200
    second = client.post("/mfa/push/challenge").json()
    push_server.clock.advance(200)

    items = client.get("/mfa/push/history").json()["items"]
    assert [(i["challenge_id"], i["status"]) for i in items] == [
        (second["challenge_id"], "expired"),
        (first["challenge_id"], "approved"),
    ]
    internal = push_server.client("svc", "mfa:internal")
    seen = internal.get(f"/internal/mfa/push/challenge/{first['challenge_id']}").json()
    assert seen["status"] == "approved"
    assert seen["device_id"] == "phone"
    admin = push_server.client("root", "mfa:admin")
    listed = admin.get("/admin/mfa/push/challenges", params={"limit": 200}).json()["items"]
    assert {first["challenge_id"], second["challenge_id"]} <= {i["challenge_id"] for i in listed}
    stats = admin.get("/admin/mfa/push/stats").json()
    assert stats["median_response_s"] == 4.0
    assert 0 < stats["approval_rate"] <= 1
    # `since` is an instant, whatever its offset (it used to be compared as text).
    for since in (opened, opened.astimezone(timezone(timedelta(hours=1)))):
        assert admin.get("/admin/mfa/push/stats", params={"since": since.isoformat()}).json() == (
            stats
        ), since
    later = (opened + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=1)))
    assert admin.get("/admin/mfa/push/stats", params={"since": later.isoformat()}).json()[
        "total"
    ] == (stats["total"] - 1)
    assert "number" not in json.dumps(items)
    assert client.get("/admin/mfa/push/stats").status_code == 403


def test_resync_rotates_the_key_and_revocation_stops_approvals(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    old_key = app.key
    app.key = Ed25519PrivateKey.generate()
    assert app.sync(client).json()["created"] is False
    challenge = client.post("/mfa/push/challenge").json()
    rotated = App("phone", url)
    rotated.key = old_key
    assert (
        rotated.approve(client, challenge["challenge_id"], challenge["number"]).status_code == 403
    )

    listed = client.get("/mfa/devices/sync").json()["items"]
    assert [d["device_id"] for d in listed] == ["phone"]
    assert "public_key" not in listed[0]
    assert "push_token" not in listed[0]
    assert app.sync(client, revoke=True).json()["revoked"] is True
    assert client.get("/mfa/devices/sync").json()["items"] == []
    # The push was sent to that device alone: the revocation withdrew it.
    late = app.approve(client, challenge["challenge_id"], challenge["number"])
    assert late.status_code == 409, late.text
    assert client.get(f"/mfa/push/challenge/{challenge['challenge_id']}").json()["status"] == (
        "denied"
    )


def test_push_works_through_the_generic_challenge_and_step_up(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    challenge = client.post("/mfa/challenge", json={"method": "push"})
    assert challenge.status_code == 201
    body = challenge.json()
    cid = body["challenge_id"]
    pending = client.post("/mfa/step-up", json={"challenge_id": cid})
    assert pending.status_code == 409
    assert pending.json()["code"] == "challenge_pending"
    number = body["number"]
    assert app.approve(client, cid, number).status_code == 200
    stepped = client.post("/mfa/step-up", json={"challenge_id": cid})
    assert stepped.status_code == 200
    assert stepped.json()["amr"] == ["swk", "mfa"]
    assert client.post("/mfa/step-up", json={"challenge_id": cid}).status_code == 409


def test_a_generic_push_challenge_expires_with_its_push(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """It said 5 minutes while the push behind it died after 2: the app was told a wrong
    expiry, and the dead challenge held one of the open-challenge slots for 3 more minutes.
    At its expiry the push is refused as expired, the challenge too."""
    url, _ = push_endpoint
    client, _app = with_app(push_server, url)
    opened = client.post("/mfa/challenge", json={"method": "push"}).json()
    push = client.get(f"/mfa/push/challenge/{opened['challenge_id']}").json()
    assert opened["expires_at"] == push["expires_at"]

    push_server.clock.advance(120)
    late = client.post("/mfa/step-up", json={"challenge_id": opened["challenge_id"]})
    assert late.status_code == 410, late.text


@pytest.mark.parametrize("removal", ["delete_method", "revoke_sync"])
def test_a_push_sent_only_to_removed_devices_is_withdrawn(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]], removal: str
) -> None:
    """Otherwise an app synced again under the removed device's id (with a new key) could
    approve a login begun before the removal."""
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    pending = client.post("/mfa/push/challenge").json()
    if removal == "delete_method":
        assert client.delete("/mfa/methods/push").status_code in (200, 204)
    else:
        assert app.sync(client, revoke=True).json()["revoked"] is True
    newcomer = App(app.device_id, url)  # the same device id, another key
    assert newcomer.sync(client).status_code == 200

    late = newcomer.approve(client, pending["challenge_id"], pending["number"])
    assert late.status_code == 409, late.text
    seen = client.get(f"/mfa/push/challenge/{pending['challenge_id']}").json()
    assert (seen["status"], seen["reason"], seen["device_id"]) == ("denied", "device_removed", None)
    assert client.post("/mfa/push/challenge").status_code == 201  # it no longer counts


def test_a_push_sent_to_a_device_that_remains_stays_pending(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client, phone = with_app(push_server, url)
    tablet = App("tablet", url)
    assert tablet.sync(client).status_code == 200
    pending = client.post("/mfa/push/challenge").json()
    assert tablet.sync(client, revoke=True).json()["revoked"] is True

    assert client.get(f"/mfa/push/challenge/{pending['challenge_id']}").json()["status"] == (
        "pending"
    )
    assert phone.approve(client, pending["challenge_id"], pending["number"]).status_code == 200


@pytest.mark.parametrize(
    "reason", ["reset", "too_many_rejected_responses", "device_removed", "key_rotated"]
)
def test_an_app_cannot_deny_with_a_reason_only_the_service_gives(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]], reason: str
) -> None:
    """On the stream and in the history such a denial would pass for an admin reset or the
    service's own ending of the push."""
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    cid = client.post("/mfa/push/challenge").json()["challenge_id"]
    refused = app.deny(client, cid, reason=reason)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "validation_error"
    assert client.get(f"/mfa/push/challenge/{cid}").json()["status"] == "pending"
    assert app.deny(client, cid, reason="not_me").status_code == 200


def test_a_push_step_up_token_dates_from_the_approval_not_from_the_poll(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """An approved push stays approved until its challenge expires (5 minutes): a login that
    polled minutes later got a token whose `auth_time` said "just now", past any max age."""
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    ttl = push_server.runtime.services.step_up_ttl_seconds = 120  # (MFA_STEP_UP_TTL_SECONDS)
    # 0.4 s before the end of its lifetime from an approval at x.9 s, the token's `exp`
    # (whole seconds) would already have passed: refused as well
    for late in (100, 150, ttl - 0.4):
        body = client.post("/mfa/challenge", json={"method": "push"}).json()
        push_server.clock.advance((0.9 - push_server.clock.now().microsecond / 1e6) % 1)  # x.9 s
        approved_at = push_server.clock.now()
        assert app.approve(client, body["challenge_id"], body["number"]).status_code == 200
        push_server.clock.advance(late)
        stepped = client.post("/mfa/step-up", json={"challenge_id": body["challenge_id"]})
        if late >= ttl - 1:  # its token would be born expired
            assert stepped.status_code == 410, stepped.text
            assert stepped.json()["code"] == "challenge_expired"
            continue
        assert stepped.status_code == 200, stepped.text
        claims = jwt.decode(stepped.json()["step_up_token"], options={"verify_signature": False})
        assert claims["auth_time"] == int(approved_at.timestamp())
        assert claims["exp"] == int(approved_at.timestamp()) + ttl
        assert claims["iat"] == int(push_server.clock.now().timestamp())


def test_bad_keys_and_signatures_are_validation_errors(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client = push_server.client(new_user())
    app = App("phone", url)
    for key in ("short", b64url(b"x" * 31), "!" * 43):
        assert app.sync(client, public_key=key).status_code == 400
    app.sync(client)
    challenge = client.post("/mfa/push/challenge").json()
    garbage = client.post(
        "/mfa/push/approve",
        json={
            "challenge_id": challenge["challenge_id"],
            "device_id": "phone",
            "number": challenge["number"],
            "signature": "A" * 86,
        },
    )
    assert garbage.status_code == 403
    assert client.post("/mfa/push/approve", json={"challenge_id": "x"}).status_code == 400


# The Ed25519 points of small order (and a non-canonical encoding of one): OpenSSL accepts a
# signature from anyone under such a key, e.g. R = the neutral point and S = 0 under it.
SMALL_ORDER_KEYS = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_small_order_key_under_which_anyone_can_sign_is_refused(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = push_endpoint
    client = push_server.client(new_user())
    neutral = bytes.fromhex(SMALL_ORDER_KEYS[0])
    Ed25519PublicKey.from_public_bytes(neutral).verify(
        neutral + bytes(32), b"mfa-push:any:approve"
    )  # (what the check protects against: this does not raise)
    for key in SMALL_ORDER_KEYS:
        refused = App("weak", url).sync(client, public_key=b64url(bytes.fromhex(key)))
        assert refused.status_code == 400, key
        assert refused.json()["code"] == "validation_error"
    assert client.get("/mfa/devices/sync").json()["items"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_only_the_challenge_id_as_issued_answers_a_push(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """`UUID()` also reads upper case, bare hex and `urn:uuid:`; such a form used to deny the
    push without resolving it for the throttle, under an id no event of the push carried."""
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    cid = client.post("/mfa/push/challenge").json()["challenge_id"]
    for other in (cid.upper(), cid.replace("-", ""), f"urn:uuid:{cid}"):
        assert app.deny(client, other).status_code == 404
        assert client.get(f"/mfa/push/challenge/{other}").status_code == 404
    assert app.deny(client, cid).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_push_endpoint_whose_host_idna_refuses_fails_the_push_not_the_server(
    push_server: LiveServer,
) -> None:
    client = push_server.client(new_user())
    assert App("phone", "https://xn--/").sync(client).status_code == 200
    created = client.post("/mfa/push/challenge")
    assert created.status_code == 502, created.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_id", "dev-1\n"),
        ("name", "My phone\n"),
        ("platform", "android\n"),
        ("push_token", "https://push.example/t\n"),
        ("app_version", "1.4.0\n"),
    ],
)
def test_a_trailing_newline_in_a_device_field_is_a_validation_error(
    push_server: LiveServer, field: str, value: str
) -> None:
    """Python's `$` also matches before a final newline; the patterns must not let one in."""
    client = push_server.client(new_user())
    app = App("dev-1", "https://push.example/t")

    refused = app.sync(client, **{field: value})

    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == "validation_error"
    assert [e["field"] for e in body["errors"]] == [field]
    assert client.get("/mfa/devices/sync").json()["items"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_platform_is_taken_in_any_case_and_kept_in_lower_case(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """API.md sets no format for `platform`; an app that says "iOS" got a 400."""
    url, _ = push_endpoint
    client = push_server.client(new_user())
    synced = App("phone", url).sync(client, platform="iOS")
    assert synced.status_code == 200, synced.text
    assert synced.json()["platform"] == "ios"
    assert client.get("/mfa/devices/sync").json()["items"][0]["platform"] == "ios"


def test_a_removed_device_synced_again_cannot_answer_a_push_also_sent_to_another(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """The push stays pending for the device that remains; the one removed and synced again
    under its old id, with another key, is not a device it was sent to."""
    url, _ = push_endpoint
    client, phone = with_app(push_server, url)
    tablet = App("tablet", url)
    assert tablet.sync(client).status_code == 200
    pending = client.post("/mfa/push/challenge").json()
    push_server.clock.advance(1)
    assert phone.sync(client, revoke=True).json()["revoked"] is True
    newcomer = App(phone.device_id, url)
    assert newcomer.sync(client).status_code == 200

    late = newcomer.approve(client, pending["challenge_id"], pending["number"])
    assert late.status_code == 403, late.text
    assert client.get(f"/mfa/push/challenge/{pending['challenge_id']}").json()["status"] == (
        "pending"
    )
    assert tablet.approve(client, pending["challenge_id"], pending["number"]).status_code == 200


def test_a_key_given_to_a_device_after_a_push_was_sent_cannot_answer_it(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """A sync under an existing device id with another key (no removal, any clocks) does not
    make the new key one the push was sent to."""
    url, _ = push_endpoint
    client, phone = with_app(push_server, url)
    tablet = App("tablet", url)
    assert tablet.sync(client).status_code == 200
    pending = client.post("/mfa/push/challenge").json()
    rogue = App(phone.device_id, url)  # the same id, another key, not removed first
    assert rogue.sync(client).json()["created"] is False

    late = rogue.approve(client, pending["challenge_id"], pending["number"])
    assert late.status_code == 403, late.text
    assert tablet.approve(client, pending["challenge_id"], pending["number"]).status_code == 200


def test_a_push_whose_devices_all_have_new_keys_is_withdrawn(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """No device could answer it any more: it was left pending for its two minutes, taking
    one of the user's three pending pushes, while the app showed a prompt it could not
    answer. A sync under the same key keeps it pending."""
    url, _ = push_endpoint
    client, phone = with_app(push_server, url)
    pending = client.post("/mfa/push/challenge").json()
    assert phone.sync(client).json()["created"] is False  # the same key: nothing changes
    status = f"/mfa/push/challenge/{pending['challenge_id']}"
    assert client.get(status).json()["status"] == "pending"

    phone.key = Ed25519PrivateKey.generate()
    assert phone.sync(client).json()["created"] is False

    seen = client.get(status).json()
    assert (seen["status"], seen["reason"], seen["device_id"]) == ("denied", "key_rotated", None)
    late = phone.approve(client, pending["challenge_id"], pending["number"])
    assert late.status_code == 409, late.text
    assert phone.deny(client, pending["challenge_id"], reason="key_rotated").status_code == 400


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("reserved", ["sms", "email", "backup_code", "totp"])
def test_a_device_cannot_take_a_methods_name_as_its_id(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]], reserved: str
) -> None:
    """`sms` and `email` name those credentials for the primary method: a push device under
    such an id made `POST /mfa/credentials/sms/primary` pick the push device."""
    url, _ = push_endpoint
    client = push_server.client(new_user())
    refused = App(reserved, url).sync(client)
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["field"] == "device_id"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_internal_status_of_a_push_names_its_user_and_can_be_asked_for_one(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """A login service that took the challenge id from the client could not tell that the
    approved push was the attacker's own, on the attacker's account."""
    url, _ = push_endpoint
    attacker = new_user()
    client = push_server.client(attacker)
    app = App("phone", url)
    assert app.sync(client).status_code == 200
    pushed = client.post("/mfa/push/challenge").json()
    assert app.approve(client, pushed["challenge_id"], pushed["number"]).status_code == 200
    internal = push_server.client("svc", "mfa:internal")
    path = f"/internal/mfa/push/challenge/{pushed['challenge_id']}"

    seen = internal.get(path).json()
    assert (seen["status"], seen["user_id"]) == ("approved", attacker)
    assert internal.get(path, params={"user_id": attacker}).status_code == 200
    assert internal.get(path, params={"user_id": "the-victim"}).status_code == 404


def test_push_stats_count_each_status_once_with_expiry_and_fraud(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """The stats are counted in SQL now; the same numbers as the challenges themselves."""
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    approved = client.post("/mfa/push/challenge").json()
    assert app.approve(client, approved["challenge_id"], approved["number"]).status_code == 200
    denied = client.post("/mfa/push/challenge").json()
    assert app.deny(client, denied["challenge_id"], reason="not_me").status_code == 200
    client.post("/mfa/push/challenge")  # left unanswered: expired after 2 minutes
    push_server.clock.advance(121)
    client.post("/mfa/push/challenge")  # still pending
    admin = push_server.client("root", "mfa:admin")

    stats = admin.get("/admin/mfa/push/stats").json()
    assert stats["total"] == 4
    assert stats["by_status"] == {"pending": 1, "approved": 1, "denied": 1, "expired": 1}
    assert stats["fraud_reports"] == 1
    assert stats["approval_rate"] == round(1 / 3, 4)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_same_key_synced_again_in_another_spelling_still_answers(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """A push keeps a fingerprint of each device's key bytes, not of its text: the same key
    padded with `=` is the same key."""
    url, _ = push_endpoint
    client, app = with_app(push_server, url)
    pending = client.post("/mfa/push/challenge").json()
    assert app.sync(client, public_key=app.public_key + "=").status_code == 200
    assert app.approve(client, pending["challenge_id"], pending["number"]).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_device_stored_under_a_methods_name_before_the_rule_can_still_be_revoked(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    from commands.push import PushDeviceSync, sync_device

    url, _ = push_endpoint
    user = new_user()
    client = push_server.client(user)
    app = App("sms", url)
    sync = PushDeviceSync("sms", "old", "android", url, app.public_key, "1.0")
    sync_device(push_server.runtime.services, user, sync)  # as it could be stored before
    assert app.sync(client, revoke=True).json()["revoked"] is True


def test_a_revoke_by_sync_answers_with_the_device_as_it_was(
    push_server: LiveServer, push_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    """It answered the request's name and app version and the clock's time as the device's
    own `created_at` and `updated_at`."""
    url, _ = push_endpoint
    client = push_server.client(new_user())
    app = App("phone", url)
    assert app.sync(client).status_code == 200
    [listed] = client.get("/mfa/devices/sync").json()["items"]
    push_server.clock.advance(3600)

    gone = app.sync(client, name="something else", app_version="", revoke=True)

    assert gone.status_code == 200, gone.text
    body = gone.json()
    assert {key: body[key] for key in listed} == listed
    assert body["revoked"] is True
    assert body["created"] is False
