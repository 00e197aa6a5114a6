"""Threat: a caller reaches an area it has no right to (elevation of privilege).

`/admin/*` needs the `mfa:admin` scope, `/internal/*` the `mfa:internal` scope, everything
but the public paths a valid token. The routes are read from the running application, so a
route added tomorrow is checked by these tests the day it lands.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from tests.conftest import new_user
from tests.security.support import (
    ADMIN,
    INTERNAL,
    Route,
    Stack,
    app_routes,
    assert_problem,
    bare_client,
    bodies,
    enrolled_user,
    next_totp_code,
    openapi,
)

NEAR_MISS_SCOPES = ("mfa:admins", "MFA:ADMIN", "mfa:admin:read", "mfa", "admin", "mfa:*")


def _routes(stack: Stack, area: str) -> list[Route]:
    routes = [r for r in app_routes(stack.server) if r.area == area]
    assert routes, f"no {area} routes found: the enumeration is broken"
    return routes


def _pool(victim: str) -> dict[str, list[Any]]:
    """Well-formed values for every body field an admin or internal route takes."""
    return {
        "user_id": [victim],
        "code": ["123456"],
        "cidr": ["10.0.0.0/8"],
        "description": ["office"],
        "action": ["allow"],
        "allowed_methods": [["totp"]],
        "ip": ["203.0.113.9"],
        "base_score": [10],
    }


def _request(
    client: httpx.Client, route: Route, document: dict[str, Any], victim: str
) -> httpx.Response:
    body = next(bodies(document, route, _pool(victim)))
    url = route.url(user_id=victim, level="high")
    params = {"reason": "security test"} if route.method == "DELETE" else None
    if body is None:
        return client.request(route.method, url, params=params)
    return client.request(route.method, url, params=params, json=body)


def test_the_app_has_no_route_outside_the_public_user_admin_and_internal_areas(
    stack: Stack,
) -> None:
    routes = app_routes(stack.server)
    assert [str(r) for r in routes if r.area == "other"] == []
    documented = set(openapi(stack.server)["paths"])
    undocumented = {r.path for r in routes if r.area != "public"} - documented
    assert undocumented == set()


def test_every_admin_route_refuses_each_token_without_the_admin_scope(stack: Stack) -> None:
    document = openapi(stack.server)
    victim = new_user()
    for scope in ("", INTERNAL, *NEAR_MISS_SCOPES):
        client = stack.client(new_user(), scope)
        for route in _routes(stack, "admin"):
            assert_problem(_request(client, route, document, victim), 403, "forbidden")


def test_every_internal_route_refuses_each_token_without_the_internal_scope(stack: Stack) -> None:
    document = openapi(stack.server)
    victim = new_user()
    for scope in ("", ADMIN, "mfa:internals", "MFA:INTERNAL", "internal"):
        client = stack.client(new_user(), scope)
        for route in _routes(stack, "internal"):
            assert_problem(_request(client, route, document, victim), 403, "forbidden")


def test_every_route_but_the_public_ones_answers_401_without_a_valid_token(stack: Stack) -> None:
    document = openapi(stack.server)
    victim = new_user()
    guarded = [r for r in app_routes(stack.server) if r.area != "public"]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        anonymous = httpx.Client(base_url=stack.server.url, headers=headers, timeout=30)
        with anonymous:
            for route in guarded:
                response = _request(anonymous, route, document, victim)
                assert_problem(response, 401, "unauthorized")
                assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_refused_admin_and_internal_calls_change_nothing(stack: Stack) -> None:
    victim = enrolled_user(stack, "totp", "backup_code")
    document = openapi(stack.server)
    admin = stack.admin()
    audit_before = admin.get("/admin/mfa/config-audit-logs").json()["items"]
    allowlist_before = admin.get("/admin/mfa/ip-whitelist").json()
    policies_before = admin.get("/admin/mfa/risk-policies").json()

    intruder = stack.client(new_user())
    for route in _routes(stack, "admin") + _routes(stack, "internal"):
        assert _request(intruder, route, document, victim.user).status_code == 403

    assert admin.get("/admin/mfa/config-audit-logs").json()["items"] == audit_before
    assert admin.get("/admin/mfa/ip-whitelist").json() == allowlist_before
    assert admin.get("/admin/mfa/risk-policies").json() == policies_before
    status = stack.internal().get(f"/internal/mfa/status/{victim.user}").json()
    enabled = {m["method"] for m in status["methods"] if m["enabled"]}
    assert enabled == {"totp", "backup_code"}
    assert status["locks"] == []
    validated = victim.client.post(
        "/mfa/totp/validate", json={"code": next_totp_code(stack, victim)}
    )
    assert validated.status_code == 200, validated.text


def test_scopes_come_only_from_the_space_separated_scope_claim(stack: Stack) -> None:
    secret = stack.server.runtime.settings.jwt_secret
    assert secret
    now = int(time.time())

    def call(**claims: Any) -> httpx.Response:
        token = jwt.encode({"sub": "root", "exp": now + 60, **claims}, secret, algorithm="HS256")
        return bare_client(stack.server).get(
            "/admin/mfa/risk-policy", headers={"Authorization": f"Bearer {token}"}
        )

    assert call(scope="openid mfa:admin profile").status_code == 200
    for elsewhere in ({"scp": ADMIN}, {"roles": [ADMIN]}, {"mfa:admin": True}, {"scope": ""}):
        assert_problem(call(**elsewhere), 403, "forbidden")
    for malformed in ({"scope": [ADMIN]}, {"scope": {"admin": True}}, {"scope": 1}):
        assert_problem(call(**malformed), 401, "unauthorized")


def test_only_the_user_or_an_admin_reads_a_users_status(stack: Stack) -> None:
    owner = enrolled_user(stack, "totp")
    path = f"/mfa/status/{owner.user}"
    assert owner.client.get(path).status_code == 200
    assert stack.admin().get(path).status_code == 200
    for scope in ("", INTERNAL, *NEAR_MISS_SCOPES):
        assert_problem(stack.client(new_user(), scope).get(path), 403, "forbidden")
    # the check compares the whole id, not a prefix or a case-folded form
    for lookalike in (owner.user.upper(), owner.user[:-1], owner.user + " ", owner.user + "x"):
        other = stack.client(lookalike)
        assert_problem(other.get(path), 403, "forbidden")
    assert owner.client.get(path).json()["mfa_enabled"] is True
