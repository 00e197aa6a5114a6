"""Authentication and authorization: hostile tokens get 401, missing scopes 403."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.settings import Settings
from tests.conftest import LiveServer, make_settings, new_user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _status(server: LiveServer, token: str, path: str = "/mfa/methods") -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"})


def test_missing_or_malformed_authorization_is_401_problem(server: LiveServer) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer ...."},
    ):
        response = httpx.get(server.url + "/mfa/methods", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "unauthorized"


def test_alg_none_is_refused(server: LiveServer) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"sub": "alice", "exp": int(time.time()) + 60}).encode())
    assert _status(server, f"{header}.{payload}.").status_code == 401


def test_expired_future_and_wrong_key_tokens_are_refused(server: LiveServer) -> None:
    now = int(time.time())
    secret = server.runtime.settings.jwt_secret
    assert secret
    expired = jwt.encode({"sub": "a", "exp": now - 60}, secret, algorithm="HS256")
    not_yet = jwt.encode(
        {"sub": "a", "exp": now + 600, "nbf": now + 300}, secret, algorithm="HS256"
    )
    wrong = jwt.encode({"sub": "a", "exp": now + 60}, "another-secret-" * 4, algorithm="HS256")
    no_exp = jwt.encode({"sub": "a"}, secret, algorithm="HS256")
    no_sub = jwt.encode({"exp": now + 60}, secret, algorithm="HS256")
    for token in (expired, not_yet, wrong, no_exp, no_sub):
        assert _status(server, token).status_code == 401


def test_a_tampered_payload_is_refused(server: LiveServer) -> None:
    token = server.token("alice")
    header, _, signature = token.split(".")
    forged = _b64(
        json.dumps({"sub": "admin", "exp": int(time.time()) + 60, "scope": "mfa:admin"}).encode()
    )
    assert (
        _status(server, f"{header}.{forged}.{signature}", "/admin/mfa/backup-codes").status_code
        == 401
    )


def test_missing_scope_is_403_on_admin_and_internal_paths(server: LiveServer) -> None:
    user = server.client(new_user())
    for path in (
        "/admin/mfa/backup-codes",
        "/admin/mfa/totp/someone",
        "/admin/mfa/risk-policy",
        "/internal/mfa/status/someone",
        "/internal/mfa/totp/devices?user_id=x",
    ):
        response = user.get(path)
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"
    internal_as_admin = server.client("root", "mfa:admin").get("/internal/mfa/status/x")
    assert internal_as_admin.status_code == 403


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_public_key_tokens_work_and_hs256_with_the_public_key_is_refused(
    tmp_path, database_url, start_server
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = make_settings(
        tmp_path,
        database_url,
        MFA_JWT_SECRET="",
        MFA_JWT_PUBLIC_KEY=public_pem,
        MFA_JWT_ISSUER="https://idp.example",
        MFA_JWT_AUDIENCE="mfa",
    )
    server = start_server(settings)
    now = int(time.time())
    claims = {"sub": "alice", "exp": now + 60, "iss": "https://idp.example", "aud": "mfa"}
    good = jwt.encode(claims, private, algorithm="ES256")
    assert _status(server, good).status_code == 200

    # Only its header and payload are kept; the signature is made with the public key below.
    confused = jwt.encode(claims, "x" * 32, algorithm="HS256")
    header, payload, _ = confused.split(".")
    import hashlib
    import hmac

    signature = _b64(
        hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    )
    assert _status(server, f"{header}.{payload}.{signature}").status_code == 401

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _status(server, jwt.encode(claims, other_key, algorithm="RS256")).status_code == 401
    wrong_iss = jwt.encode({**claims, "iss": "https://evil.example"}, private, algorithm="ES256")
    wrong_aud = jwt.encode({**claims, "aud": "other"}, private, algorithm="ES256")
    assert _status(server, wrong_iss).status_code == 401
    assert _status(server, wrong_aud).status_code == 401


MASTER_KEY = base64.b64encode(b"m" * 32).decode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("given", "mints"),
    [
        ({}, True),  # nothing configured: every secret is generated, the demo works
        ({"MFA_JWT_SECRET": "operator-secret-" + "y" * 40}, False),  # master key forgotten
        ({"MFA_MASTER_KEY": MASTER_KEY}, True),
        ({"MFA_JWT_SECRET": "operator-secret-" + "y" * 40, "MFA_MASTER_KEY": MASTER_KEY}, False),
    ],
    ids=["no-secrets", "jwt-secret-only", "master-key-only", "both"],
)
def test_demo_sessions_are_signed_only_with_a_generated_jwt_secret(
    tmp_path, database_url, start_server, given, mints
) -> None:
    """An anonymous `/demo/session` signs a token for any user: with an operator's secret
    (which the identity provider or other services may share) that would be a forgery oracle,
    even when only the master key was left to be generated."""
    env = {"MFA_DATA_DIR": str(tmp_path / "var"), "MFA_DATABASE_URL": database_url, **given}
    server = start_server(Settings.from_env(env))
    minted = httpx.post(server.url + "/demo/session", json={"user": "victim"})
    if mints:
        assert minted.status_code == 201
        assert _status(server, minted.json()["token"]).status_code == 200
    else:
        assert minted.status_code == 404
        assert minted.json()["code"] == "not_found"


def test_a_demo_session_lasts_no_longer_than_the_service_accepts(
    tmp_path, database_url, start_server
) -> None:
    """Its hour was refused as a bearer token under a shorter MFA_JWT_MAX_TTL_SECONDS."""
    env = {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": database_url,
        "MFA_JWT_MAX_TTL_SECONDS": "600",
    }
    server = start_server(Settings.from_env(env))
    minted = httpx.post(server.url + "/demo/session", json={"user": "someone"})
    assert minted.status_code == 201, minted.text
    assert _status(server, minted.json()["token"]).status_code == 200
