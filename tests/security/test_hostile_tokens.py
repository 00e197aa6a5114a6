"""Threat: a forged, altered, stale or malformed bearer token is taken for a real one (spoofing).

Every hostile token below carries `scope: "mfa:admin mfa:internal"`, so a single one
accepted would open every area; each must answer 401 as a problem (never 2xx, 403 or 5xx)
on a user, an admin and an internal route alike, without echoing the token. This extends
tests/api/test_auth.py (which covers one token of most kinds) to the whole family.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.app import build_runtime
from tests.conftest import LiveServer, MutableClock, create_pg_database, drop_pg_database
from tests.conftest import make_settings as base_settings
from tests.security.support import (
    ADMIN,
    INTERNAL,
    PROBLEM_JSON,
    Stack,
    bare_client,
    enrolled_user,
    next_totp_code,
)

ISSUER = "https://idp.example"
AUDIENCE = "mfa"
EVERY_SCOPE = f"{ADMIN} {INTERNAL}"
PROBES = ("/mfa/methods", "/admin/mfa/risk-policy", "/internal/mfa/status/victim")


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")))


def hmac_sha(key: bytes, signing_input: str, digest: Any = hashlib.sha256) -> str:
    return b64(hmac.new(key, signing_input.encode(), digest).digest())


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes, digest: Any = None) -> str:
    """A token signed with HMAC under `key`, whatever the header claims."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{hmac_sha(key, signing_input, digest or hashlib.sha256)}"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "mallory", "exp": now + 600, "iat": now, "scope": EVERY_SCOPE}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def assert_refused(server: LiveServer, token: str | bytes, label: str) -> None:
    """401 `unauthorized` problem on every probe, with a Bearer challenge and no echo."""
    value = b"Bearer " + token if isinstance(token, bytes) else f"Bearer {token}"
    for path in PROBES:
        response = bare_client(server).get(path, headers={"Authorization": value})
        assert response.status_code == 401, (label, path, response.status_code, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON), label
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), label
        body = response.json()
        assert body["code"] == "unauthorized", (label, body)
        assert body["status"] == 401
        text = token.decode("latin-1") if isinstance(token, bytes) else token
        if len(text) >= 16:
            assert text not in response.text, label


def accepted(server: LiveServer, token: str, path: str = "/mfa/methods") -> int:
    response = bare_client(server).get(path, headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def hs256_secret(server: LiveServer) -> bytes:
    secret = server.runtime.settings.jwt_secret
    assert secret
    return secret.encode()


# ---------------------------------------------------------------- an RS256 identity provider


class IdentityProvider:
    """The issuer of the tokens a public-key deployment accepts (RSA, with iss and aud)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = self.key.public_key()
        self.pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.pkcs1 = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
        self.jwk = json.dumps(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)))

    def token(self, **changes: Any) -> str:
        payload = claims(**{"iss": ISSUER, "aud": AUDIENCE, **changes})
        return jwt.encode(payload, self.key, algorithm="RS256")


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture(scope="module")
def rsa_server(
    request: pytest.FixtureRequest,
    backend: str,
    clock: MutableClock,
    idp: IdentityProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """A deployment that trusts the identity provider's RSA key and checks iss and aud."""
    folder = tmp_path_factory.mktemp("rsa")
    admin = None
    if backend.startswith("sqlite"):
        url = f"sqlite:///{folder / 'mfa.sqlite'}"
    else:
        admin = request.getfixturevalue("postgres_admin_url")
        url = create_pg_database(admin)
    settings = base_settings(
        folder,
        url,
        MFA_JWT_SECRET="",
        MFA_JWT_PUBLIC_KEY=idp.pem.decode(),
        MFA_JWT_ISSUER=ISSUER,
        MFA_JWT_AUDIENCE=AUDIENCE,
    )
    server = LiveServer(runtime=build_runtime(settings, clock=clock), clock=clock).start()
    yield server
    server.stop()
    if admin is not None:
        drop_pg_database(admin, url)


# ------------------------------------------------------------------------------------ tests


def test_genuine_tokens_are_accepted_so_the_refusals_below_mean_something(
    stack: Stack, rsa_server: LiveServer, idp: IdentityProvider
) -> None:
    secret = hs256_secret(stack.server)
    assert accepted(stack.server, jwt.encode(claims(), secret), "/admin/mfa/risk-policy") == 200
    assert accepted(rsa_server, idp.token(), "/admin/mfa/risk-policy") == 200
    assert accepted(rsa_server, idp.token(aud=["other", AUDIENCE])) == 200
    skewed = jwt.encode(claims(exp=int(time.time()) - 2), secret)
    assert accepted(stack.server, skewed) == 200  # within the 5 s clock-skew leeway
    fractional = jwt.encode(claims(exp=time.time() + 60.5), secret)
    assert accepted(stack.server, fractional) == 200  # a NumericDate may have a fraction


def test_unsigned_alg_none_tokens_are_refused_in_every_spelling(stack: Stack) -> None:
    body = segment(claims())
    for alg in ("none", "None", "NONE", "nOnE", ""):
        header = segment({"alg": alg, "typ": "JWT"})
        assert_refused(stack.server, f"{header}.{body}.", f"alg={alg!r}")
        assert_refused(stack.server, f"{header}.{body}", f"alg={alg!r}, two segments")
        signed = hmac_sha(hs256_secret(stack.server), f"{header}.{body}")
        assert_refused(stack.server, f"{header}.{body}.{signed}", f"alg={alg!r}, signed")
    assert_refused(stack.server, f"{segment({'typ': 'JWT'})}.{body}.", "no alg at all")


def test_the_rsa_public_key_used_as_an_hmac_secret_is_refused(
    rsa_server: LiveServer, idp: IdentityProvider
) -> None:
    payload = claims(iss=ISSUER, aud=AUDIENCE)
    keys = {
        "pem": idp.pem,
        "pem without newline": idp.pem.rstrip(b"\n"),
        "pkcs1 pem": idp.pkcs1,
        "der": idp.der,
        "jwk": idp.jwk.encode(),
    }
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    for key_name, key in keys.items():
        for alg, digest in digests.items():
            token = forge({"alg": alg, "typ": "JWT"}, payload, key, digest)
            assert_refused(rsa_server, token, f"{alg} with the public key as {key_name}")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_tokens_in_algorithms_the_deployment_does_not_use_are_refused(
    stack: Stack, rsa_server: LiveServer, idp: IdentityProvider
) -> None:
    secret = hs256_secret(stack.server)
    for alg in ("HS384", "HS512"):  # the right secret, the wrong algorithm
        assert_refused(stack.server, jwt.encode(claims(), secret, algorithm=alg), alg)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_refused(stack.server, jwt.encode(claims(), attacker, algorithm="RS256"), "RS256")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert_refused(stack.server, jwt.encode(claims(), ec_key, algorithm="ES256"), "ES256")
    # a public-key deployment: the attacker's own keys, however the header points at them
    payload = claims(iss=ISSUER, aud=AUDIENCE)
    own_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    for headers in (
        {},
        {"jwk": own_jwk},
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {"kid": "../../../../dev/null"},
    ):
        token = jwt.encode(payload, attacker, algorithm="RS256", headers=headers)
        assert_refused(rsa_server, token, f"attacker RS256 {list(headers)}")
    assert_refused(rsa_server, jwt.encode(payload, "x" * 32, algorithm="HS256"), "HS256 guess")


def test_expired_not_yet_valid_and_future_issued_tokens_are_refused(stack: Stack) -> None:
    secret = hs256_secret(stack.server)
    now = int(time.time())
    for label, changes in {
        "expired a minute ago": {"exp": now - 60},
        "expired beyond the leeway": {"exp": now - 10},
        "expired at the epoch": {"exp": 0},
        "not valid for a minute": {"nbf": now + 60},
        "not valid for a year": {"nbf": now + 365 * 86400},
        "issued tomorrow": {"iat": now + 86400},
        "exp as a string": {"exp": str(now + 600)},
        "exp as null": {"exp": None},
        "exp as a boolean": {"exp": True},
        "nbf as a string": {"nbf": str(now - 60)},
    }.items():
        assert_refused(stack.server, jwt.encode(claims(**changes), secret), label)


def test_a_wrong_or_missing_issuer_or_audience_is_refused_when_configured(
    rsa_server: LiveServer, idp: IdentityProvider
) -> None:
    for label, changes in {
        "other issuer": {"iss": "https://evil.example"},
        "issuer with a slash": {"iss": ISSUER + "/"},
        "issuer in capitals": {"iss": ISSUER.upper()},
        "no issuer": {"iss": ...},
        "other audience": {"aud": "other"},
        "audience in capitals": {"aud": AUDIENCE.upper()},
        "audiences without ours": {"aud": ["other", "mfa-admin"]},
        "no audience": {"aud": ...},
        "empty audience list": {"aud": []},
    }.items():
        payload = claims(iss=ISSUER, aud=AUDIENCE)
        payload.update(changes)
        payload = {k: v for k, v in payload.items() if v is not ...}
        assert_refused(rsa_server, jwt.encode(payload, idp.key, algorithm="RS256"), label)


def test_a_tampered_payload_header_or_signature_is_refused(stack: Stack) -> None:
    secret = hs256_secret(stack.server)
    genuine = jwt.encode(claims(sub="alice", scope=""), secret, algorithm="HS256")
    header, payload, signature = genuine.split(".")
    for label, forged_claims in {
        "scope raised": claims(sub="alice"),
        "subject swapped": claims(sub="bob", scope=""),
        "expiry extended": claims(sub="alice", scope="", exp=int(time.time()) + 10**8),
    }.items():
        assert_refused(stack.server, f"{header}.{segment(forged_claims)}.{signature}", label)
    for label, forged_header in {
        "alg changed": {"alg": "HS512", "typ": "JWT"},
        "kid added": {"alg": "HS256", "typ": "JWT", "kid": "other"},
        "typ changed": {"alg": "HS256", "typ": "at+jwt"},
        "crit added": {"alg": "HS256", "typ": "JWT", "crit": ["exp"]},
    }.items():
        assert_refused(stack.server, f"{segment(forged_header)}.{payload}.{signature}", label)
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    for label, forged_signature in {
        "first character flipped": flipped,
        "truncated": signature[:-8],
        "empty": "",
        "doubled": signature * 2,
        "not base64": "!!!!" + signature[4:],
    }.items():
        assert_refused(stack.server, f"{header}.{payload}.{forged_signature}", label)
    # the same claims under another secret
    assert_refused(stack.server, jwt.encode(claims(), secret + b"!", algorithm="HS256"), "key")


def test_empty_and_garbage_tokens_are_refused(stack: Stack) -> None:
    body = segment(claims())
    secret = hs256_secret(stack.server)
    garbage: dict[str, str | bytes] = {
        "null": "null",
        "undefined": "undefined",
        "one dot": "a.b",
        "three dots": "a.b.c.d",
        "only dots": "....",
        "random base64": b64(b"\x00" * 64),
        "header not json": f"{b64('not json')}.{body}.",
        "header a list": f"{segment(['HS256'])}.{body}.",
        "payload a list": forge({"alg": "HS256"}, [claims()], secret),  # type: ignore[arg-type]
        "payload a string": f"{segment({'alg': 'HS256'})}.{b64('sub=mallory')}.",
        "latin-1 bytes": b"\xff\xfe\xfd.\xfc.\xfb",
    }
    for label, token in garbage.items():
        assert_refused(stack.server, token, label)
    for header in ("Bearer", "bearer", "Basic bWFsbG9yeTpwdw==", "Token abc", "Bearer\tabc"):
        response = bare_client(stack.server).get("/mfa/methods", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] == "unauthorized"
    valid = jwt.encode(claims(), secret, algorithm="HS256")
    in_query = bare_client(stack.server).get("/mfa/methods", params={"access_token": valid})
    assert in_query.status_code == 401
    in_cookie = bare_client(stack.server).get("/mfa/methods", headers={"Cookie": f"token={valid}"})
    assert in_cookie.status_code == 401


def test_tokens_without_or_with_malformed_subject_or_expiry_are_refused(stack: Stack) -> None:
    secret = hs256_secret(stack.server)
    for label, changes in {
        "no subject": {"sub": ...},
        "no expiry": {"exp": ...},
        "neither": {"sub": ..., "exp": ...},
        "empty subject": {"sub": ""},
        "numeric subject": {"sub": 42},
        "null subject": {"sub": None},
        "list subject": {"sub": ["alice"]},
        "subject with NUL": {"sub": "alice\x00"},
        "subject with NUL and an epoch": {"sub": "alice\x001"},
        "subject with a newline": {"sub": "alice\nadmin"},
        "subject with DEL": {"sub": "alice\x7f"},
        "subject with a lone surrogate": {"sub": "alice\ud800"},
        "overlong subject": {"sub": "a" * 257},
        "scope a list": {"scope": [ADMIN]},
        "scope a number": {"scope": 7},
        # RFC 6749 §3.3: one scope to the identity provider, which str.split() used to cut
        # into "openid" and "mfa:admin"; scopes are printable ASCII separated by spaces
        "scope with a no-break space": {"scope": f"openid\u00a0{ADMIN}"},
        "scope with an em space": {"scope": f"openid\u2003{ADMIN}"},
        "scope with a unit separator": {"scope": f"openid\x1f{ADMIN}"},
        "scope with a tab": {"scope": f"openid\t{ADMIN}"},
        "scope with a newline": {"scope": f"openid\n{ADMIN}"},
    }.items():
        assert_refused(stack.server, jwt.encode(claims(**changes), secret), label)
    spaced = jwt.encode(claims(scope=f"  openid   {ADMIN} "), secret)
    assert accepted(stack.server, spaced, "/admin/mfa/risk-policy") == 200


def test_huge_tokens_are_refused_quickly_and_never_parsed_as_valid(stack: Stack) -> None:
    secret = hs256_secret(stack.server)
    signed_padding = jwt.encode(claims(pad="x" * 20_000), secret, algorithm="HS256")
    cases = {
        "64 KiB of garbage": "a" * 65_536,
        "1 MiB of garbage": "a" * 1_048_576,
        "huge unsigned payload": f"{segment({'alg': 'none'})}.{segment(claims(pad='x' * 60_000))}.",
        "a signed 20 KB token": signed_padding,
        "a signed huge subject": jwt.encode(claims(sub="a" * 10_000), secret, algorithm="HS256"),
    }
    for label, token in cases.items():
        started = time.monotonic()
        if len(token) > 60_000 and refused_by_http_server(stack.server, token):
            # The HTTP server's own header limit (uvicorn's h11 parser) refused it before the
            # application saw it: refused all the same, and nothing was parsed.
            continue
        assert_refused(stack.server, token, label)
        assert time.monotonic() - started < 5, label


def refused_by_http_server(server: LiveServer, token: str) -> bool:
    """Whether the server answered a plain 400 before routing (headers too large)."""
    response = bare_client(server).get("/mfa/methods", headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 400:
        return False
    assert not response.headers.get("content-type", "").startswith(PROBLEM_JSON)
    assert token not in response.text
    return True


def test_the_services_own_step_up_tokens_are_not_bearer_tokens(
    stack: Stack, rsa_server: LiveServer
) -> None:
    person = enrolled_user(stack, "totp")
    challenge = person.client.post("/mfa/challenge", json={"method": "totp"}).json()
    stepped = person.client.post(
        "/mfa/step-up",
        json={"challenge_id": challenge["challenge_id"], "code": next_totp_code(stack, person)},
    )
    assert stepped.status_code == 200, stepped.text
    step_up_token = stepped.json()["step_up_token"]
    assert jwt.get_unverified_header(step_up_token)["alg"] == "ES256"
    assert_refused(stack.server, step_up_token, "step-up token on an HS256 deployment")
    assert_refused(rsa_server, step_up_token, "step-up token on a public-key deployment")


def test_a_request_with_two_authorization_headers_is_refused(stack: Stack) -> None:
    """The first header counted: a proxy that checked the last one (a foreign token) let
    through a request the service then ran as the first token's admin."""
    secret = hs256_secret(stack.server)
    admin = jwt.encode(claims(sub="root", scope=ADMIN), secret)
    foreign = jwt.encode(claims(sub="root", scope=ADMIN), "another-issuers-secret-" + "x" * 20)
    for pair in ((admin, foreign), (foreign, admin), (admin, admin)):
        headers = [("Authorization", f"Bearer {token}") for token in pair]
        response = bare_client(stack.server).get("/admin/mfa/risk-policy", headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized"
    assert accepted(stack.server, admin, "/admin/mfa/risk-policy") == 200


def test_a_claim_or_header_member_named_twice_is_refused(stack: Stack) -> None:
    """RFC 7519 lets a parser keep the last of duplicate claims, as Python's json does; a
    proxy or library in front that keeps the first would read another subject or scope
    from the same signed token, so such tokens are refused outright."""
    secret = hs256_secret(stack.server)
    now = int(time.time())
    header = b64('{"alg":"HS256","typ":"JWT"}')
    payloads = {
        "subject twice": f'{{"sub":"alice","sub":"root","exp":{now + 600}}}',
        "scope twice": f'{{"sub":"root","scope":"","scope":"{ADMIN}","exp":{now + 600}}}',
        "expiry twice": f'{{"sub":"root","exp":{now - 600},"exp":{now + 600}}}',
        "twice in a nested object": f'{{"sub":"root","exp":{now + 600},"x":{{"a":1,"a":2}}}}',
    }
    for label, text in payloads.items():
        signing_input = f"{header}.{b64(text)}"
        assert_refused(stack.server, f"{signing_input}.{hmac_sha(secret, signing_input)}", label)
    payload = b64(f'{{"sub":"root","scope":"{ADMIN}","exp":{now + 600}}}')
    for label, text in {
        "alg twice": '{"alg":"none","alg":"HS256"}',
        "typ twice": '{"alg":"HS256","typ":"JWT","typ":"JWT"}',
    }.items():
        signing_input = f"{b64(text)}.{payload}"
        assert_refused(stack.server, f"{signing_input}.{hmac_sha(secret, signing_input)}", label)
    # the same documents with each member once are accepted
    signing_input = f"{segment({'alg': 'HS256'})}.{payload}"
    token = f"{signing_input}.{hmac_sha(secret, signing_input)}"
    assert accepted(stack.server, token, "/admin/mfa/risk-policy") == 200


def test_tokens_that_would_live_longer_than_the_maximum_lifetime_are_refused(
    stack: Stack,
) -> None:
    """A token minted to last a year (by mistake, or by someone who stole the signing key
    for a moment) is refused, not honoured for that year: `MFA_JWT_MAX_TTL_SECONDS`,
    default a day, counted from now and, when the token has one, from its `iat`."""
    maximum = stack.server.runtime.settings.jwt_max_ttl_seconds
    assert maximum == 86400
    secret = hs256_secret(stack.server)
    now = int(time.time())
    for label, changes in {
        "a year from now": {"exp": now + 365 * 86400},
        "a day and a minute from now": {"exp": now + maximum + 60},
        "same without iat": {"exp": now + maximum + 60, "iat": ...},
        "issued an hour ago for a day and an hour": {"iat": now - 3600, "exp": now + maximum},
    }.items():
        assert_refused(stack.server, jwt.encode(claims(**changes), secret), label)
    for label, changes in {
        "exp too large for a float": {"exp": 10**400},
        "iat too small for a float": {"exp": now + 60.5, "iat": -(10**400)},
    }.items():  # an OverflowError, a 500, before
        assert_refused(stack.server, jwt.encode(claims(**changes), secret), label)
    for changes in (
        {"exp": now + maximum - 60},
        {"exp": now + maximum - 60, "iat": ...},
        {"iat": now - 3600, "exp": now + maximum - 3600},
    ):
        assert accepted(stack.server, jwt.encode(claims(**changes), secret)) == 200, changes


def test_a_step_up_token_is_for_the_app_whose_token_earned_it_when_so_configured(
    stack: Stack,
) -> None:
    """With `MFA_STEP_UP_AUDIENCE=client`, a step-up token's `aud` is the client its bearer
    token was issued to (`azp`, else `client_id`), so app B, checking its own client id,
    refuses one earned through app A for the same user. A bearer token naming no client
    earns a token without `aud`, and so does every one by default (a relying party that
    verifies without an audience refuses a token that has one)."""
    runtime = stack.server.runtime
    default = runtime.settings
    person = enrolled_user(stack, "totp")
    [jwk] = bare_client(stack.server).get("/.well-known/jwks.json").json()["keys"]
    key = jwt.PyJWK(jwk)
    fake_times = {"verify_exp": False, "verify_iat": False}  # the stack runs on a fake clock

    def earned_through(**client_claims: Any) -> str:
        token = stack.server.token(person.user, **client_claims)
        client = bare_client(stack.server)
        headers = {"Authorization": f"Bearer {token}"}
        challenge = client.post("/mfa/challenge", json={"method": "totp"}, headers=headers)
        assert challenge.status_code == 201, challenge.text
        proof = {"challenge_id": challenge.json()["challenge_id"]}
        stepped = client.post(
            "/mfa/step-up", json={**proof, "code": next_totp_code(stack, person)}, headers=headers
        )
        assert stepped.status_code == 200, stepped.text
        return str(stepped.json()["step_up_token"])

    assert "aud" not in jwt.decode(earned_through(azp="app-a"), key, ["ES256"], fake_times)
    runtime.settings = replace(default, step_up_audience_is_client=True)
    try:
        earned_by_app_a = [
            earned_through(**client_claims)
            for client_claims in (
                {"azp": "app-a"},
                {"client_id": "app-a"},
                {"azp": "app-a", "client_id": "x"},
                {"azp": None, "client_id": "app-a"},
            )
        ]
        without_client = earned_through()
    finally:
        runtime.settings = default
    for step_up_token in earned_by_app_a:
        assert (
            jwt.decode(step_up_token, key, ["ES256"], fake_times, audience="app-a")["aud"]
            == "app-a"
        )
        with pytest.raises(jwt.InvalidAudienceError):
            jwt.decode(step_up_token, key, ["ES256"], fake_times, audience="app-b")
    assert "aud" not in jwt.decode(without_client, key, ["ES256"], fake_times)
    # a client claim that is not a plain id would be signed into tokens: refused
    secret = hs256_secret(stack.server)
    for label, value in {
        "a list": ["app-a", "app-b"],
        "a number": 7,
        "empty": "",
        "a newline": "app-a\napp-b",
        "too long": "a" * 300,
    }.items():
        for name in ("azp", "client_id"):
            assert_refused(stack.server, jwt.encode(claims(**{name: value}), secret), label)
