"""WebAuthn and step-up over HTTP, on SQLite and on PostgreSQL: registration ceremonies,
credential management, the generic challenge for every method and the signed step-up token."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import httpx
import jwt
import pytest

from tests.api.helpers import code_at, wrong_code
from tests.api.test_totp import enrol
from tests.conftest import LiveServer, new_user
from tests.support.soft_authenticator import SoftAuthenticator, unb64url

ORIGIN = "http://localhost:8000"
PHISHING_RESISTANT = "urn:mfa:acr:phishing-resistant"
MFA = "urn:mfa:acr:mfa"


# ------------------------------------------------------------------------------- helpers


def start_registration(client: httpx.Client, name: str | None = None) -> dict[str, Any]:
    response = client.post(
        "/mfa/webauthn/credentials/register", json={"name": name} if name else {}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finish_registration(
    client: httpx.Client, registration_id: str, credential: dict[str, Any], **extra: Any
) -> httpx.Response:
    return client.post(
        "/mfa/webauthn/credentials/register/verify",
        json={"registration_id": registration_id, "credential": credential, **extra},
    )


def register_key(
    client: httpx.Client,
    authenticator: SoftAuthenticator,
    name: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A full registration ceremony; returns the 201 body."""
    started = start_registration(client, name)
    response = finish_registration(
        client,
        started["registration_id"],
        authenticator.register(started["options"], ORIGIN, **kwargs),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def open_challenge(client: httpx.Client, method: str = "webauthn") -> dict[str, Any]:
    response = client.post("/mfa/challenge", json={"method": method})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def step_up(client: httpx.Client, challenge_id: str, **proof: Any) -> httpx.Response:
    return client.post("/mfa/step-up", json={"challenge_id": challenge_id, **proof})


def step_up_with_key(
    client: httpx.Client, authenticator: SoftAuthenticator, **kwargs: Any
) -> httpx.Response:
    challenge = open_challenge(client)
    credential = authenticator.get(challenge["options"], ORIGIN, **kwargs)
    return step_up(client, challenge["challenge_id"], credential=credential)


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "code"} <= set(body)
    if code is not None:
        assert body["code"] == code


def verify_token(server: LiveServer, token: str) -> dict[str, Any]:
    """Check a step-up token against the service's published JWKS (exp checked by the caller:
    the test clock is not the real clock)."""
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=10).json()
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk),
        algorithms=["ES256"],
        issuer="urn:mfa:service",
        options={"verify_exp": False, "require": ["sub", "exp", "iat", "auth_time"]},
    )
    return claims


def retamper(token: str, **changes: Any) -> str:
    """The token with its payload changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64url(payload))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


# ---------------------------------------------------------------------- registration


def test_a_key_registers_and_is_listed_fetched_renamed_and_deleted(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    authenticator = SoftAuthenticator()

    started = start_registration(client, "yubikey")
    options = started["options"]
    assert options["rp"]["id"] == "localhost"
    assert options["user"]["name"] == user
    assert len(unb64url(options["challenge"])) == 32
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert options["excludeCredentials"] == []

    response = finish_registration(
        client, started["registration_id"], authenticator.register(options, ORIGIN)
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert {"credential_id", "name", "created_at"} <= set(created)
    assert created["credential_id"] == next(iter(authenticator.credentials))
    assert created["name"] == "yubikey"
    assert created["created_at"].startswith("2026-03-01T12:00:00")
    assert "public_key" not in created

    listed = client.get("/mfa/webauthn/credentials")
    assert listed.status_code == 200
    assert listed.json()["next_cursor"] is None
    [item] = listed.json()["items"]
    assert item["credential_id"] == created["credential_id"]
    assert item["transports"] == ["usb"]
    assert item["clone_suspected"] is False
    assert "public_key" not in item

    path = f"/mfa/webauthn/credentials/{created['credential_id']}"
    fetched = client.get(path)
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "yubikey"

    renamed = client.put(path, json={"name": "blue key"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "blue key"
    assert client.get(path).json()["name"] == "blue key"

    second = start_registration(client)
    assert [c["id"] for c in second["options"]["excludeCredentials"]] == [created["credential_id"]]

    deleted = client.delete(path)
    assert deleted.status_code == 200
    assert_problem(client.get(path), 404, "not_found")
    assert_problem(client.delete(path), 404, "not_found")
    assert_problem(client.put(path, json={"name": "x"}), 404, "not_found")
    assert client.get("/mfa/webauthn/credentials").json()["items"] == []


def test_credentials_get_default_names_and_are_not_visible_to_other_users(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    first = register_key(client, SoftAuthenticator())
    second = register_key(client, SoftAuthenticator())
    assert (first["name"], second["name"]) == ("Passkey 1", "Passkey 2")

    other = server.client(new_user())
    register_key(other, SoftAuthenticator())
    assert_problem(other.get(f"/mfa/webauthn/credentials/{first['credential_id']}"), 404)
    assert_problem(other.delete(f"/mfa/webauthn/credentials/{first['credential_id']}"), 404)
    assert len(client.get("/mfa/webauthn/credentials").json()["items"]) == 2


def test_the_same_credential_cannot_be_registered_twice(server: LiveServer) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    created = register_key(client, authenticator)

    again = start_registration(client)
    same_key = authenticator.register(
        again["options"], ORIGIN, credential_id=unb64url(created["credential_id"])
    )
    refused = finish_registration(client, again["registration_id"], same_key)
    assert_problem(refused, 409, "already_enrolled")
    assert len(client.get("/mfa/webauthn/credentials").json()["items"]) == 1
    # the refusal used the ceremony up
    assert_problem(finish_registration(client, again["registration_id"], same_key), 409)


def test_a_registration_id_works_only_once(server: LiveServer) -> None:
    client = server.client(new_user())
    started = start_registration(client)
    response = SoftAuthenticator().register(started["options"], ORIGIN)
    assert finish_registration(client, started["registration_id"], response).status_code == 201
    replay = finish_registration(client, started["registration_id"], response)
    assert_problem(replay, 409, "challenge_used")
    fresh = SoftAuthenticator().register(started["options"], ORIGIN)
    assert_problem(finish_registration(client, started["registration_id"], fresh), 409)
    assert len(client.get("/mfa/webauthn/credentials").json()["items"]) == 1


def test_a_registration_ceremony_expires_after_five_minutes(server: LiveServer) -> None:
    client = server.client(new_user())
    early, late = start_registration(client), start_registration(client)
    server.clock.advance(299)
    in_time = SoftAuthenticator().register(early["options"], ORIGIN)
    assert finish_registration(client, early["registration_id"], in_time).status_code == 201
    server.clock.advance(2)
    too_late = SoftAuthenticator().register(late["options"], ORIGIN)
    assert_problem(
        finish_registration(client, late["registration_id"], too_late), 410, "challenge_expired"
    )
    assert len(client.get("/mfa/webauthn/credentials").json()["items"]) == 1


def test_a_registration_id_of_another_user_is_refused(server: LiveServer) -> None:
    alice = server.client(new_user())
    started = start_registration(alice)
    response = SoftAuthenticator().register(started["options"], ORIGIN)

    stranger = server.client(new_user())  # never enrolled anything
    assert_problem(finish_registration(stranger, started["registration_id"], response), 404)
    mallory = server.client(new_user())
    start_registration(mallory)  # has MFA state of her own
    refused = finish_registration(mallory, started["registration_id"], response)
    assert refused.status_code in (404, 409), refused.text
    assert mallory.get("/mfa/webauthn/credentials").json()["items"] == []

    # the owner's ceremony was not used up by the others' attempts
    assert finish_registration(alice, started["registration_id"], response).status_code == 201


BAD_REGISTRATIONS: dict[str, dict[str, Any]] = {
    "wrong origin": {"origin": "https://evil.example"},
    "wrong rp id": {"rp_id": "evil.example"},
    "user not present": {"user_present": False},
    "wrong challenge": {"challenge": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
}


@pytest.mark.parametrize("bad", BAD_REGISTRATIONS.values(), ids=BAD_REGISTRATIONS)
def test_a_bad_attestation_is_a_problem_and_consumes_the_ceremony(
    server: LiveServer, bad: dict[str, Any]
) -> None:
    client = server.client(new_user())
    started = start_registration(client)
    kwargs = dict(bad)
    origin = kwargs.pop("origin", ORIGIN)
    response = SoftAuthenticator().register(started["options"], origin, **kwargs)
    refused = finish_registration(client, started["registration_id"], response)
    assert 400 <= refused.status_code < 500, refused.text
    assert_problem(refused, refused.status_code, "invalid_credential")

    good = SoftAuthenticator().register(started["options"], ORIGIN)
    assert_problem(finish_registration(client, started["registration_id"], good), 409)
    assert client.get("/mfa/webauthn/credentials").json()["items"] == []


def test_a_malformed_registration_response_is_a_4xx_problem(server: LiveServer) -> None:
    client = server.client(new_user())
    for credential in (
        {},
        {"id": "x", "rawId": "x", "type": "public-key"},
        {"id": "x", "rawId": "x", "type": "public-key", "response": {"clientDataJSON": "!!"}},
    ):
        started = start_registration(client)
        refused = finish_registration(client, started["registration_id"], credential)
        assert 400 <= refused.status_code < 500, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    not_an_object = finish_registration(client, started["registration_id"], "garbage")  # type: ignore[arg-type]
    assert_problem(not_an_object, 400, "validation_error")


def test_a_registration_with_null_transports_is_never_a_server_error(server: LiveServer) -> None:
    """BUG (src/commands/verifiers.py, verify_registration): non-list `transports` → 500."""
    client = server.client(new_user())
    started = start_registration(client)
    credential = SoftAuthenticator().register(started["options"], ORIGIN)
    credential["response"]["transports"] = None
    response = finish_registration(client, started["registration_id"], credential)
    assert response.status_code < 500, response.text


def test_a_credential_id_over_1023_bytes_is_refused_at_registration(server: LiveServer) -> None:
    """WebAuthn L2 §7.1: a credentialId longer than 1023 bytes fails the ceremony."""
    client = server.client(new_user())
    started = start_registration(client)
    overlong = SoftAuthenticator().register(
        started["options"], ORIGIN, credential_id=os.urandom(1024)
    )
    refused = finish_registration(client, started["registration_id"], overlong)
    assert_problem(refused, 400, "invalid_credential")
    assert "credential_id_too_long" in refused.json()["detail"]
    assert client.get("/mfa/webauthn/credentials").json()["items"] == []
    # the refusal used the ceremony up
    good = SoftAuthenticator().register(started["options"], ORIGIN)
    assert_problem(finish_registration(client, started["registration_id"], good), 409)


def test_a_credential_id_of_1023_bytes_is_usable_and_manageable(server: LiveServer) -> None:
    """The longest id the spec allows (1364 base64url characters) works on every route."""
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    created = register_key(client, authenticator, credential_id=os.urandom(1023))
    credential_id = created["credential_id"]
    assert len(credential_id) == 1364
    path = f"/mfa/webauthn/credentials/{credential_id}"

    assert client.get(path).status_code == 200
    renamed = client.put(path, json={"name": "long id"})
    assert renamed.status_code == 200, renamed.text
    stepped = step_up_with_key(client, authenticator)
    assert stepped.status_code == 200, stepped.text
    assert client.get(path).json()["sign_count"] == 1
    primary = client.post(f"/mfa/credentials/{credential_id}/primary")
    assert primary.status_code == 200, primary.text
    deleted = client.delete(path)
    assert deleted.status_code == 200, deleted.text
    assert_problem(client.get(path), 404, "not_found")


def test_a_credential_id_path_over_1364_characters_is_a_validation_error(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    register_key(client, SoftAuthenticator())
    longest, too_long = "A" * 1364, "A" * 1365
    for method in ("GET", "PUT", "DELETE"):
        body = {"name": "x"} if method == "PUT" else None
        url = "/mfa/webauthn/credentials/"
        assert_problem(client.request(method, url + longest, json=body), 404, "not_found")
        assert_problem(client.request(method, url + too_long, json=body), 400, "validation_error")

    document = httpx.get(server.url + "/schema/openapi.json", timeout=10).json()
    operations = document["paths"]["/mfa/webauthn/credentials/{credential_id}"]
    for method in ("get", "put", "delete"):
        [parameter] = [p for p in operations[method]["parameters"] if p["in"] == "path"]
        assert parameter["schema"]["maxLength"] == 1364, (method, parameter)


def test_ceremonies_opened_in_parallel_cannot_take_a_user_past_20_credentials(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    for _ in range(19):
        register_key(client, authenticator)
    ceremonies = [start_registration(client) for _ in range(5)]

    answers = [
        finish_registration(
            client, c["registration_id"], authenticator.register(c["options"], ORIGIN)
        )
        for c in ceremonies
    ]
    assert answers[0].status_code == 201, answers[0].text
    for refused in answers[1:]:
        assert_problem(refused, 409, "limit_exceeded")
    assert len(client.get("/mfa/webauthn/credentials").json()["items"]) == 20
    # a refused ceremony is used up; a new one is refused from the start, with the same answer
    retried = authenticator.register(ceremonies[1]["options"], ORIGIN)
    assert_problem(
        finish_registration(client, ceremonies[1]["registration_id"], retried),
        409,
        "challenge_used",
    )
    assert_problem(
        client.post("/mfa/webauthn/credentials/register", json={}), 409, "limit_exceeded"
    )


def test_open_ceremonies_and_challenges_are_capped_until_the_first_expires(
    server: LiveServer,
) -> None:
    """Both caps pass with time: 429 with Retry-After says when to come back (a 409 said
    nothing, and a client could not tell it from a conflict to resolve)."""
    client = server.client(new_user())
    register_key(client, SoftAuthenticator())
    for _ in range(5):
        start_registration(client)
        server.clock.advance(10)
    sixth = client.post("/mfa/webauthn/credentials/register", json={})
    assert_problem(sixth, 429, "rate_limited")
    assert sixth.headers["retry-after"] == str(300 - 50)
    for _ in range(10):
        open_challenge(client)
    eleventh = client.post("/mfa/challenge", json={"method": "webauthn"})
    assert_problem(eleventh, 429, "rate_limited")
    assert eleventh.headers["retry-after"] == "300"
    server.clock.advance(300)
    open_challenge(client)
    start_registration(client)


# --------------------------------------------------------------------- WebAuthn step-up


def test_a_webauthn_challenge_and_step_up_give_a_phishing_resistant_token(
    server: LiveServer,
) -> None:
    user = new_user()
    client = server.client(user)
    authenticator = SoftAuthenticator()
    created = register_key(client, authenticator)

    challenge = open_challenge(client)
    assert challenge["method"] == "webauthn"
    assert challenge["expires_at"].startswith("2026-03-01T12:05:00")
    options = challenge["options"]
    assert options["rpId"] == "localhost"
    assert len(unb64url(options["challenge"])) == 32
    assert [c["id"] for c in options["allowCredentials"]] == [created["credential_id"]]
    assert options["allowCredentials"][0]["type"] == "public-key"

    server.clock.advance(10)
    credential = authenticator.get(options, ORIGIN)
    response = step_up(client, challenge["challenge_id"], credential=credential)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"step_up_token", "acr", "amr", "expires_at"} <= set(body)
    assert body["acr"] == PHISHING_RESISTANT
    assert body["amr"] == ["hwk", "user", "pin", "mfa"]
    assert body["expires_at"].startswith("2026-03-01T12:05:10")

    claims = verify_token(server, body["step_up_token"])
    assert claims["sub"] == user
    assert claims["acr"] == PHISHING_RESISTANT
    assert claims["amr"] == body["amr"]
    assert claims["auth_time"] == int(server.clock.now().timestamp())
    assert claims["exp"] - claims["auth_time"] == 300

    fetched = client.get(f"/mfa/webauthn/credentials/{created['credential_id']}").json()
    assert fetched["sign_count"] == 1
    assert fetched["last_used_at"].startswith("2026-03-01T12:00:10")


def test_a_step_up_without_user_verification_is_mfa_but_not_phishing_resistant(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    register_key(client, authenticator, user_verified=False)
    response = step_up_with_key(client, authenticator, user_verified=False)
    assert response.status_code == 200, response.text
    assert response.json()["acr"] == MFA
    assert response.json()["amr"] == ["hwk", "user", "mfa"]
    claims = verify_token(server, response.json()["step_up_token"])
    assert (claims["acr"], claims["amr"]) == (MFA, ["hwk", "user", "mfa"])


def test_a_backup_eligible_passkey_earns_swk_instead_of_hwk(server: LiveServer) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator(transports=("internal", "hybrid"), attachment="platform")
    created = register_key(client, authenticator, backup_eligible=True, backed_up=True)
    listed = client.get(f"/mfa/webauthn/credentials/{created['credential_id']}").json()
    assert (listed["backup_eligible"], listed["backed_up"]) == (True, True)

    response = step_up_with_key(client, authenticator, sign_count=0)
    assert response.status_code == 200, response.text
    assert response.json()["acr"] == PHISHING_RESISTANT
    assert response.json()["amr"] == ["swk", "user", "pin", "mfa"]
    # a passkey that never counts keeps working
    again = step_up_with_key(client, authenticator, sign_count=0)
    assert again.status_code == 200, again.text


def test_a_completed_challenge_cannot_be_replayed(server: LiveServer) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    register_key(client, authenticator)
    challenge = open_challenge(client)
    credential = authenticator.get(challenge["options"], ORIGIN)
    assert step_up(client, challenge["challenge_id"], credential=credential).status_code == 200

    assert_problem(
        step_up(client, challenge["challenge_id"], credential=credential), 409, "challenge_used"
    )
    fresh = authenticator.get(challenge["options"], ORIGIN)
    assert_problem(
        step_up(client, challenge["challenge_id"], credential=fresh), 409, "challenge_used"
    )


def test_a_challenge_expires_after_five_minutes(server: LiveServer) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    register_key(client, authenticator)
    challenge = open_challenge(client)
    server.clock.advance(301)
    credential = authenticator.get(challenge["options"], ORIGIN)
    assert_problem(
        step_up(client, challenge["challenge_id"], credential=credential), 410, "challenge_expired"
    )


def test_a_step_up_token_with_a_tampered_payload_fails_verification(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    authenticator = SoftAuthenticator()
    register_key(client, authenticator, user_verified=False)
    token = step_up_with_key(client, authenticator, user_verified=False).json()["step_up_token"]
    assert verify_token(server, token)["acr"] == MFA

    for forged in (
        retamper(token, acr=PHISHING_RESISTANT),
        retamper(token, sub="admin"),
        retamper(token, exp=2**40),
    ):
        with pytest.raises(jwt.InvalidSignatureError):
            verify_token(server, forged)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(jwt.InvalidTokenError):
        verify_token(server, f"{header}.{payload}.{flipped}")


def test_the_jwks_publishes_one_es256_public_key(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert key["kid"]
    assert "d" not in key
    # public keys: relying parties may cache them (every other answer is no-store)
    assert response.headers["cache-control"] == "max-age=300, public"


def test_a_regressed_sign_count_is_refused_and_flags_the_credential(server: LiveServer) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    created = register_key(client, authenticator)
    assert step_up_with_key(client, authenticator, sign_count=20).status_code == 200

    cloned = step_up_with_key(client, authenticator, sign_count=20)
    assert_problem(cloned, 403, "invalid_code")
    assert cloned.json()["attempts_remaining"] == 4
    fetched = client.get(f"/mfa/webauthn/credentials/{created['credential_id']}").json()
    assert fetched["clone_suspected"] is True
    assert fetched["sign_count"] == 20
    [listed] = client.get("/mfa/webauthn/credentials").json()["items"]
    assert listed["clone_suspected"] is True


def test_a_credential_suspected_of_being_cloned_is_no_usable_factor(server: LiveServer) -> None:
    """It is refused for good, yet it kept WebAuthn "enabled" (and MFA on) in the status, was
    offered in challenges whose every answer could only fail and count towards the lock, and
    could be made primary."""
    user = new_user()
    client = server.client(user)
    key = SoftAuthenticator()
    created = register_key(client, key)
    assert step_up_with_key(client, key, sign_count=5).status_code == 200
    assert step_up_with_key(client, key, sign_count=5).status_code == 403  # flagged

    status = client.get(f"/mfa/status/{user}").json()
    [webauthn] = [m for m in status["methods"] if m["method"] == "webauthn"]
    assert (webauthn["enabled"], webauthn["credentials"]) == (False, 1)
    assert status["mfa_enabled"] is False
    assert_problem(client.post("/mfa/challenge", json={"method": "webauthn"}), 409, "not_enrolled")
    primary = client.post(f"/mfa/credentials/{created['credential_id']}/primary")
    assert_problem(primary, 409, "conflict")
    assert client.delete(f"/mfa/webauthn/credentials/{created['credential_id']}").status_code in (
        200,
        204,
    )


def test_a_challenge_offers_only_credentials_not_suspected_of_being_cloned(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    flagged, good = SoftAuthenticator(), SoftAuthenticator()
    register_key(client, flagged)
    kept = register_key(client, good)
    assert step_up_with_key(client, flagged, sign_count=5).status_code == 200
    assert step_up_with_key(client, flagged, sign_count=5).status_code == 403

    offered = open_challenge(client)["options"]["allowCredentials"]
    assert [c["id"] for c in offered] == [kept["credential_id"]]
    assert step_up_with_key(client, good).status_code == 200


def test_bad_assertions_are_403_and_count_towards_the_webauthn_lockout(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    register_key(client, authenticator)
    challenge = open_challenge(client)

    def attempt(**kwargs: Any) -> httpx.Response:
        origin = kwargs.pop("origin", ORIGIN)
        credential = authenticator.get(challenge["options"], origin, **kwargs)
        return step_up(client, challenge["challenge_id"], credential=credential)

    bad_kinds: list[dict[str, Any]] = [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"user_present": False},
    ]
    for remaining, bad in zip((4, 3, 2), bad_kinds, strict=True):
        refused = attempt(**bad)
        assert_problem(refused, 403, "invalid_code")
        assert refused.json()["attempts_remaining"] == remaining

    tampered = authenticator.get(challenge["options"], ORIGIN)
    signature = bytearray(unb64url(tampered["response"]["signature"]))
    signature[-1] ^= 1
    tampered["response"]["signature"] = base64.urlsafe_b64encode(signature).decode().rstrip("=")
    refused = step_up(client, challenge["challenge_id"], credential=tampered)
    assert_problem(refused, 403, "invalid_code")
    assert refused.json()["attempts_remaining"] == 1

    stranger = SoftAuthenticator()
    stranger.register(start_registration(server.client(new_user()))["options"], ORIGIN)
    unknown = stranger.get(
        challenge["options"], ORIGIN, credential_id=next(iter(stranger.credentials))
    )
    assert_problem(step_up(client, challenge["challenge_id"], credential=unknown), 403)

    locked = attempt()
    assert_problem(locked, 429, "locked")
    assert int(locked.headers["Retry-After"]) == 30
    server.clock.advance(31)
    assert attempt().status_code == 200


def test_a_nul_in_the_presented_credential_id_is_refused_and_never_stalls_the_read_side(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    authenticator = SoftAuthenticator()
    register_key(client, authenticator)
    challenge = open_challenge(client)
    assertion = authenticator.get(challenge["options"], ORIGIN)
    assertion["rawId"] = assertion["id"] = "a\x00b"
    refused = step_up(client, challenge["challenge_id"], credential=assertion)
    assert_problem(refused, 403, "invalid_code")
    runtime = server.runtime
    head = runtime.services.app.max_position()
    assert runtime.read_models.wait_for(head, timeout=15), runtime.read_models.positions()


def test_a_webauthn_challenge_needs_a_credential_and_a_code_challenge_needs_a_code(
    server: LiveServer,
) -> None:
    client = server.client(new_user())
    register_key(client, SoftAuthenticator())
    enrol(client, server)
    webauthn = open_challenge(client, "webauthn")
    assert_problem(step_up(client, webauthn["challenge_id"], code="123456"), 400)
    totp = open_challenge(client, "totp")
    assert "options" not in totp
    assert_problem(step_up(client, totp["challenge_id"]), 400)
    assert_problem(step_up(client, webauthn["challenge_id"], credential="x"), 400)


# -------------------------------------------------------- the same flow for other methods


def test_a_totp_challenge_steps_up_with_a_code(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    _, secret = enrol(client, server)
    server.clock.advance(30)

    challenge = open_challenge(client, "totp")
    assert challenge["method"] == "totp"
    response = step_up(client, challenge["challenge_id"], code=code_at(secret, server.clock.now()))
    assert response.status_code == 200, response.text
    assert response.json()["acr"] == MFA
    assert response.json()["amr"] == ["otp", "mfa"]
    claims = verify_token(server, response.json()["step_up_token"])
    assert (claims["sub"], claims["acr"], claims["amr"]) == (user, MFA, ["otp", "mfa"])
    assert claims["exp"] - claims["auth_time"] == 300

    replayed = open_challenge(client, "totp")
    same_code = step_up(client, replayed["challenge_id"], code=code_at(secret, server.clock.now()))
    assert_problem(same_code, 403, "invalid_code")


def test_wrong_totp_codes_in_step_up_are_403_and_lock_the_factor(server: LiveServer) -> None:
    client = server.client(new_user())
    _, secret = enrol(client, server)
    server.clock.advance(30)
    challenge = open_challenge(client, "totp")
    for remaining in (4, 3):
        bad = step_up(
            client, challenge["challenge_id"], code=wrong_code(secret, server.clock.now())
        )
        assert_problem(bad, 403, "invalid_code")
        assert bad.json()["attempts_remaining"] == remaining
    # the same failure budget as /mfa/totp/validate
    validate = client.post(
        "/mfa/totp/validate", json={"code": wrong_code(secret, server.clock.now())}
    )
    assert validate.json()["attempts_remaining"] == 2
    for remaining in (1, 0):
        bad = step_up(
            client, challenge["challenge_id"], code=wrong_code(secret, server.clock.now())
        )
        assert bad.json()["attempts_remaining"] == remaining

    locked = step_up(client, challenge["challenge_id"], code=code_at(secret, server.clock.now()))
    assert_problem(locked, 429, "locked")
    assert "Retry-After" in locked.headers


def test_a_backup_code_challenge_steps_up_once_per_code(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]

    challenge = open_challenge(client, "backup_code")
    assert challenge["method"] == "backup_code"
    response = step_up(client, challenge["challenge_id"], code=codes[0])
    assert response.status_code == 200, response.text
    assert response.json()["acr"] == MFA
    assert "mfa" in response.json()["amr"]
    assert verify_token(server, response.json()["step_up_token"])["sub"] == user
    assert client.get("/mfa/backup-codes/count").json()["remaining"] == 9

    second = open_challenge(client, "backup_code")
    used = step_up(client, second["challenge_id"], code=codes[0])
    assert_problem(used, 403, "invalid_code")
    assert used.json()["attempts_remaining"] == 4
    wrong = step_up(client, second["challenge_id"], code="0000-0000-0000-0000")
    assert wrong.json()["attempts_remaining"] == 3
    assert step_up(client, second["challenge_id"], code=codes[1]).status_code == 200


def test_a_challenge_for_a_method_not_enrolled_is_409_not_enrolled(server: LiveServer) -> None:
    fresh = server.client(new_user())
    for method in ("totp", "webauthn", "backup_code"):
        assert_problem(fresh.post("/mfa/challenge", json={"method": method}), 409, "not_enrolled")

    client = server.client(new_user())
    enrol(client, server)
    for method in ("webauthn", "backup_code"):
        assert_problem(client.post("/mfa/challenge", json={"method": method}), 409, "not_enrolled")
    assert client.post("/mfa/challenge", json={"method": "totp"}).status_code == 201


@pytest.mark.parametrize("body", [{"method": "carrier-pigeon"}, {"method": ""}, {}, {"method": 1}])
def test_an_unknown_or_missing_method_is_400(server: LiveServer, body: dict[str, Any]) -> None:
    client = server.client(new_user())
    enrol(client, server)
    assert_problem(client.post("/mfa/challenge", json=body), 400, "validation_error")


def test_a_challenge_of_another_user_is_not_found(server: LiveServer) -> None:
    alice, bob = server.client(new_user()), server.client(new_user())
    alice_key, bob_key = SoftAuthenticator(), SoftAuthenticator()
    register_key(alice, alice_key)
    register_key(bob, bob_key)
    challenge = open_challenge(alice)

    with_bobs_key = bob_key.get(
        challenge["options"], ORIGIN, credential_id=next(iter(bob_key.credentials))
    )
    assert_problem(step_up(bob, challenge["challenge_id"], credential=with_bobs_key), 404)
    with_alices_key = alice_key.get(challenge["options"], ORIGIN)
    assert_problem(step_up(bob, challenge["challenge_id"], credential=with_alices_key), 404)
    assert_problem(step_up(bob, "no-such-challenge", credential=with_alices_key), 404)

    # Alice's challenge is untouched by Bob's attempts
    mine = alice_key.get(challenge["options"], ORIGIN)
    assert step_up(alice, challenge["challenge_id"], credential=mine).status_code == 200
