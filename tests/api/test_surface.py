"""The required surface: every endpoint of ENDPOINTS.md is routed and in the OpenAPI document."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from api.controllers.planned import PLANNED
from tests.conftest import LiveServer

HERE = Path(__file__).parent
SHARED = HERE.parents[2] / "shared" / "ENDPOINTS.md"


def required_endpoints() -> list[tuple[str, str]]:
    """(method, path) pairs from the endpoint table, with path parameters normalised."""
    rows = re.findall(
        r"^\| (GET|POST|PUT|DELETE|PATCH) \| (\S+) \|", (HERE / "endpoints.md").read_text(), re.M
    )
    return [(method, re.sub(r"\{[^}]+\}", "{}", path)) for method, path in rows]


def test_our_copy_of_the_endpoint_list_matches_the_shared_one() -> None:
    if SHARED.exists():
        assert SHARED.read_text() == (HERE / "endpoints.md").read_text()
    assert len(required_endpoints()) == 73


def test_every_required_endpoint_is_in_the_openapi_document(server: LiveServer) -> None:
    document = httpx.get(server.url + "/schema/openapi.json").json()
    documented = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }
    missing = [e for e in required_endpoints() if e not in documented]
    assert missing == []


def test_every_required_endpoint_answers_and_none_is_a_server_error(server: LiveServer) -> None:
    tokens = {
        "/admin": server.client("root", "mfa:admin"),
        "/internal": server.client("svc", "mfa:internal"),
        "/mfa": server.client("someone"),
    }
    for method, path in required_endpoints():
        client = next(c for prefix, c in tokens.items() if path.startswith(prefix))
        response = client.request(method, path.replace("{}", "x"), json={})
        assert response.status_code not in (404, 405) or "{}" in path, (method, path)
        assert response.status_code < 500 or response.status_code == 501, (method, path)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")


def test_planned_endpoints_answer_501_not_implemented_after_auth(server: LiveServer) -> None:
    anonymous = httpx.post(server.url + "/mfa/sms/send", json={})
    assert anonymous.status_code == 401
    for method, path, _ in PLANNED:
        client = (
            server.client("root", "mfa:admin")
            if path.startswith("/admin/")
            else server.client("svc", "mfa:internal")
            if path.startswith("/internal/")
            else server.client("someone")
        )
        planned = client.request(method, re.sub(r"\{[^}]+\}", "x", path), json={})
        assert planned.status_code == 501, (method, path)
        assert planned.json()["code"] == "not_implemented"
    assert server.client("someone").get("/admin/mfa/risk-policy").status_code == 403


def test_health_and_readiness(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["event_store"] == "ok"
