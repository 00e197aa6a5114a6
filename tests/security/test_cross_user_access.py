"""Threat: one user reads or changes another user's MFA state (broken object-level
authorization).

Alice enrols every factor and leaves one of everything open: a pending TOTP device, a
registration ceremony, a push challenge, generic challenges, SMS and email login codes, a
trusted device. Bob (enrolled himself) and Mallory (never enrolled) then call every
user-scoped route of the running app (read from its routes, so a new route is covered
automatically) with each of Alice's ids in every path parameter, and with bodies made of
Alice's ids, codes and proofs. Alice's ids answer as ids that do not exist (404; 403 for
`/mfa/status/{user_id}`), nothing of Alice's appears in any answer, and afterwards every view
of Alice is unchanged and every one of her open secrets still works for her.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.api.test_webauthn_api import ORIGIN
from tests.conftest import new_user
from tests.security.support import (
    Enrolled,
    PushApp,
    Route,
    Stack,
    app_routes,
    bodies,
    enrolled_user,
    next_totp_code,
    openapi,
    path_value_fits,
    pending_registration,
    registration_response,
)

# A body field that names a new thing of the caller's own, not an existing resource: the app
# picks its device id itself, and ids are per user.
CLIENT_CHOSEN = {("POST", "/mfa/devices/sync"): {"device_id"}}


@dataclass
class Alice:
    """The victim: enrolled in everything, with one of every open secret."""

    person: Enrolled
    ids: dict[str, str] = field(default_factory=dict)  # server-issued or client-chosen ids
    codes: dict[str, str] = field(default_factory=dict)  # one-time codes still unused
    proofs: dict[str, Any] = field(default_factory=dict)  # WebAuthn responses, push answers
    number: str = ""

    @property
    def private_values(self) -> dict[str, str]:
        """Every value of Alice's that no other user may ever see."""
        p = self.person
        assert p.app is not None
        values = {
            "user id": p.user,
            "totp secret": p.totp_secret,
            "trusted token": p.trusted_token,
            "phone": p.phone,
            "email": p.email,
            "push token": p.app.endpoint,
            "push public key": p.app.public_key,
            **{f"backup code {i}": code for i, code in enumerate(p.backup_codes)},
            **{f"id {k}": v for k, v in self.ids.items()},
            **{f"code {k}": v for k, v in self.codes.items()},
        }
        return values


def prepare_alice(stack: Stack) -> Alice:
    person = enrolled_user(stack)
    alice = Alice(person)
    client = person.client
    assert person.app is not None
    assert person.authenticator is not None
    alice.ids.update(
        totp_device=person.totp_device,
        webauthn_credential=person.credential_id,
        trusted_device=person.trusted_device,
        push_device=person.app.device_id,
    )
    pending = client.post("/mfa/totp/setup", json={"name": "tablet"})
    assert pending.status_code == 201
    alice.ids["pending_totp_device"] = pending.json()["device_id"]
    registration_id, options = pending_registration(client)
    alice.ids["registration"] = registration_id
    alice.proofs["registration"] = registration_response(options)

    push = client.post("/mfa/push/challenge")
    assert push.status_code == 201, push.text
    alice.ids["push_challenge"], alice.number = push.json()["challenge_id"], push.json()["number"]
    for method in ("totp", "backup_code", "webauthn"):
        opened = client.post("/mfa/challenge", json={"method": method})
        assert opened.status_code == 201, opened.text
        alice.ids[f"{method}_challenge"] = opened.json()["challenge_id"]
        if method == "webauthn":
            alice.proofs["assertion"] = person.authenticator.get(opened.json()["options"], ORIGIN)

    stack.server.clock.advance(61)  # past the resend cooldown of the enrolment codes
    for method, provider in (("sms", stack.sms), ("email", stack.smtp)):
        assert client.post(f"/mfa/{method}/send").status_code == 202
        destination = person.phone if method == "sms" else person.email
        alice.codes[method] = provider.last_code(destination)
    alice.codes["totp"] = next_totp_code(stack, person)
    alice.codes["backup"] = person.backup_codes[0]
    return alice


def body_pool(alice: Alice, intruder_app: PushApp) -> dict[str, list[Any]]:
    """Alice's ids, codes and proofs under the body field names the API uses."""
    app = alice.person.app
    assert app is not None
    cid = alice.ids["push_challenge"]
    return {
        "challenge_id": [alice.ids[k] for k in alice.ids if k.endswith("challenge")],
        "device_id": [
            alice.ids[k]
            for k in ("totp_device", "pending_totp_device", "trusted_device", "push_device")
        ],
        "registration_id": [alice.ids["registration"]],
        "credential_id": [alice.ids["webauthn_credential"]],
        "code": list(alice.codes.values()),
        "number": [alice.number],
        "signature": [app.sign(cid, "approve"), app.sign(cid, "deny")],
        "credential": [alice.proofs["assertion"], alice.proofs["registration"]],
        "name": ["mallory's"],
        "method": ["totp"],
        "phone_number": [alice.person.phone],
        "email": [alice.person.email],
        "platform": ["android"],
        "push_token": [intruder_app.endpoint],
        "public_key": [intruder_app.public_key],
        "revoke": [False, True],
        "ttl_days": [1],
    }


def user_routes(stack: Stack) -> list[Route]:
    routes = [r for r in app_routes(stack.server) if r.area == "user"]
    assert len(routes) > 40, [str(r) for r in routes]
    return routes


def _sent(response: httpx.Response) -> str:
    request = response.request
    return str(request.url) + request.content.decode("utf-8", "replace")


def leaked(alice: Alice, response: httpx.Response) -> list[str]:
    """Alice's values in an answer to someone else (beyond what that request itself sent)."""
    sent = _sent(response)
    return [
        name
        for name, value in alice.private_values.items()
        if value and value in response.text and value not in sent
    ]


def _views(client: httpx.Client, routes: list[Route], ids: list[str], token: str) -> dict[str, Any]:
    """Everything a user can read: every GET route, with each id in its path parameters."""
    seen: dict[str, Any] = {}
    for route in routes:
        if route.method != "GET":
            continue
        for value in ids if route.params else [""]:
            url = route.url(**dict.fromkeys(route.params, value))
            response = client.get(url, headers={"X-MFA-Device-Token": token})
            seen[url] = (response.status_code, response.text)
    return seen


@dataclass(frozen=True)
class Call:
    route: Route
    response: httpx.Response
    hostile: bool  # it named one of Alice's ids, codes or proofs
    expected: int | None  # what an id in the path must answer (None: no id in the path)


def attack(stack: Stack, alice: Alice, intruder: httpx.Client, intruder_app: PushApp) -> list[Call]:
    """Every user route, called by the intruder with Alice's ids, codes and proofs."""
    document = openapi(stack.server)
    path_values = [*alice.ids.values(), alice.person.user]
    pool = body_pool(alice, intruder_app)
    hostile_values = {json.dumps(v) for v in alice.ids.values()} | {
        json.dumps(v) for v in alice.codes.values()
    }
    calls: list[Call] = []
    headers = {"X-MFA-Device-Token": alice.person.trusted_token}
    for route in user_routes(stack):
        chosen = CLIENT_CHOSEN.get((route.method, route.path), set())
        for value in path_values if route.params else [None]:
            url = route.url(**dict.fromkeys(route.params, value or ""))
            expected = None
            if value is not None:
                fits = all(path_value_fits(document, route, p, value) for p in route.params)
                expected = (
                    400 if not fits else 403 if route.path.startswith("/mfa/status/") else 404
                )
            for body in bodies(document, route, pool):
                response = intruder.request(route.method, url, json=body, headers=headers)
                named = {
                    json.dumps(v)
                    for k, v in (body or {}).items()
                    if k not in chosen and not isinstance(v, dict)
                }
                proof = any(k == "credential" for k in body or {})
                hostile = bool(route.params) or bool(named & hostile_values) or proof
                calls.append(Call(route, response, hostile, expected))
    return calls


def test_another_users_ids_answer_not_found_and_nothing_of_theirs_is_read_or_changed(
    stack: Stack,
) -> None:
    alice = prepare_alice(stack)
    routes = user_routes(stack)
    own_ids = [*alice.ids.values(), alice.person.user]
    before = _views(alice.person.client, routes, own_ids, alice.person.trusted_token)

    bob = enrolled_user(stack, "totp", "backup_code", "webauthn", "push", "trusted_device")
    bob_app = PushApp(stack.push)
    calls = attack(stack, alice, bob.client, bob_app)

    problems = []
    for call in calls:
        label, status = f"{call.route} {call.response.request.url.path}", call.response.status_code
        if status >= 500:
            problems.append((label, status, "server error"))
        if call.hostile and 200 <= status < 300:
            problems.append((label, status, "another user's id or code was accepted"))
        if call.expected is not None and status != call.expected:
            problems.append((label, status, f"expected {call.expected}", call.response.text[:150]))
        if leaked(alice, call.response):
            problems.append((label, status, "leaked", leaked(alice, call.response)))
    assert problems == [], "\n".join(map(str, problems))
    assert sum(1 for call in calls if call.hostile) > 250

    after = _views(alice.person.client, routes, own_ids, alice.person.trusted_token)
    assert after == before
    assert_everything_of_alice_still_works(stack, alice)


def test_a_user_who_never_enrolled_cannot_tell_another_users_ids_from_unknown_ones(
    stack: Stack,
) -> None:
    alice = prepare_alice(stack)
    mallory = stack.client(new_user())
    for route in user_routes(stack):
        if not route.params:
            continue
        for name, value in [*alice.ids.items(), ("user", alice.person.user)]:
            look_alike = str(uuid.uuid4()) if _is_uuid(value) else _same_shape(value)
            theirs = mallory.request(route.method, route.url(**dict.fromkeys(route.params, value)))
            unknown = mallory.request(
                route.method, route.url(**dict.fromkeys(route.params, look_alike))
            )
            assert theirs.status_code not in range(200, 300), (str(route), name)
            assert theirs.status_code < 500, (str(route), name, theirs.text)
            assert (theirs.status_code, _code(theirs)) == (unknown.status_code, _code(unknown)), (
                str(route),
                name,
                theirs.text,
                unknown.text,
            )
            assert leaked(alice, theirs) == [], (str(route), name)
    assert_everything_of_alice_still_works(stack, alice)


def test_the_intruders_own_requests_with_alices_proofs_are_refused_as_unknown(
    stack: Stack,
) -> None:
    alice = prepare_alice(stack)
    app = alice.person.app
    assert app is not None
    bob = enrolled_user(stack, "totp", "push", "webauthn")
    cid = alice.ids["push_challenge"]
    approve = {
        "challenge_id": cid,
        "device_id": app.device_id,
        "number": alice.number,
        "signature": app.sign(cid, "approve"),
    }
    deny = {**approve, "signature": app.sign(cid, "deny"), "reason": "not_me"}
    deny.pop("number")
    for path, body in (
        ("/mfa/push/approve", approve),
        ("/mfa/push/deny", deny),
        ("/mfa/step-up", {"challenge_id": alice.ids["totp_challenge"], "code": "000000"}),
        (
            "/mfa/step-up",
            {
                "challenge_id": alice.ids["webauthn_challenge"],
                "credential": alice.proofs["assertion"],
            },
        ),
        (
            "/mfa/webauthn/credentials/register/verify",
            {
                "registration_id": alice.ids["registration"],
                "credential": alice.proofs["registration"],
            },
        ),
        ("/mfa/totp/verify", {"device_id": alice.ids["pending_totp_device"], "code": "000000"}),
    ):
        response = bob.client.post(path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "not_found"
    assert_everything_of_alice_still_works(stack, alice)


# ----------------------------------------------------------------------------- helpers


def assert_everything_of_alice_still_works(stack: Stack, alice: Alice) -> None:
    """Each open secret of Alice's still works for her, once."""
    person = alice.person
    client = person.client
    app = person.app
    assert app is not None
    status = client.get(f"/mfa/status/{person.user}").json()
    assert status["locks"] == []
    assert {m["method"] for m in status["methods"] if m["enabled"]} == {
        "totp",
        "backup_code",
        "webauthn",
        "sms",
        "email",
        "push",
    }
    approved = app.approve(client, alice.ids["push_challenge"], alice.number)
    assert approved.status_code == 200, approved.text
    for method in ("sms", "email"):
        verified = client.post(f"/mfa/{method}/verify", json={"code": alice.codes[method]})
        assert verified.status_code == 200, (method, verified.text)
    assert client.post("/mfa/totp/validate", json={"code": alice.codes["totp"]}).status_code == 200
    backup = client.post(
        "/mfa/step-up",
        json={"challenge_id": alice.ids["backup_code_challenge"], "code": alice.codes["backup"]},
    )
    assert backup.status_code == 200, backup.text
    assertion = client.post(
        "/mfa/step-up",
        json={
            "challenge_id": alice.ids["webauthn_challenge"],
            "credential": alice.proofs["assertion"],
        },
    )
    assert assertion.status_code == 200, assertion.text
    totp = client.post(
        "/mfa/step-up",
        json={"challenge_id": alice.ids["totp_challenge"], "code": next_totp_code(stack, person)},
    )
    assert totp.status_code == 200, totp.text
    registered = client.post(
        "/mfa/webauthn/credentials/register/verify",
        json={
            "registration_id": alice.ids["registration"],
            "credential": alice.proofs["registration"],
        },
    )
    assert registered.status_code == 201, registered.text
    trusted = client.get(
        "/mfa/trusted-devices/check", headers={"X-MFA-Device-Token": person.trusted_token}
    ).json()
    assert trusted["trusted"] is True
    assert trusted["device_id"] == alice.ids["trusted_device"]


def _same_shape(value: str) -> str:
    """A random string as long as `value`, of the characters ids are made of."""
    return secrets.token_urlsafe(len(value))[: len(value)]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _code(response: httpx.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code: str = response.json()["code"]
        return code
    return None
