"""The required surface: every endpoint of ENDPOINTS.md is routed and in the OpenAPI document."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.controllers.planned import PLANNED
from tests.conftest import LiveServer, new_user

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


def test_the_liveness_probe_answers_head_as_load_balancers_send_it(server: LiveServer) -> None:
    """RFC 9110 §9.3.2: HEAD is GET without the body; the probe answered it 405."""
    probed = httpx.head(server.url + "/health")
    assert probed.status_code == 200, probed.headers


# ---------------------------------------------- what the document says of every route


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    ]


def test_the_document_lists_the_answers_every_route_can_give(server: LiveServer) -> None:
    """400 (a control character in any query parameter), 404 (an encoded `/` in the path)
    for routes with a path parameter, 405 where that parameter can equal a sibling route's
    literal segment, and Retry-After on every 429 and problem 503."""
    document = httpx.get(server.url + "/schema/openapi.json").json()
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert "400" in responses, (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        for limited in ("429", "503"):
            if "application/problem+json" in responses.get(limited, {}).get("content", {}):
                assert responses[limited]["headers"]["Retry-After"]["required"], (method, path)
    assert "429" in document["paths"]["/mfa/totp/validate"]["post"]["responses"]

    user = server.client(new_user())
    admin = server.client("root", "mfa:admin")
    answers = {
        ("get", "/health"): user.get("/health", params={"probe": "\x00"}),
        ("get", "/mfa/status/{user_id}"): user.get("/mfa/status/tenant%2Falice"),
        ("delete", "/admin/mfa/reset/{user_id}"): admin.delete(
            "/admin/mfa/reset/tenant%2Falice", params={"reason": "lost phone"}
        ),
        ("delete", "/mfa/trusted-devices/{device_id}"): user.delete("/mfa/trusted-devices/check"),
        ("get", "/mfa/webauthn/credentials/{credential_id}"): user.get(
            "/mfa/webauthn/credentials/register"
        ),
    }
    for (method, path), answer in answers.items():
        assert answer.status_code in (400, 404, 405), (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert str(answer.status_code) in document["paths"][path][method]["responses"], path


def test_request_bodies_are_described_as_strictly_as_they_are_decoded(
    server: LiveServer,
) -> None:
    """msgspec's own schemas: Litestar's dropped a lower bound of 0, the bounds of nested
    values and `additionalProperties: false`, so the document called bodies valid that the
    service refuses."""
    document = httpx.get(server.url + "/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    bodies = {
        ref.rsplit("/")[-1]
        for _, _, operation in _operations(document)
        if "requestBody" in operation
        for ref in re.findall(r'"\$ref": "([^"]+)"', json.dumps(operation["requestBody"]))
    }
    assert len(bodies) >= 20
    for name in bodies:
        assert schemas[name]["additionalProperties"] is False, name
    policy = schemas["RiskPolicyBody"]["properties"]
    [base_score, _] = policy["base_score"]["anyOf"]
    assert (base_score["minimum"], base_score["maximum"]) == (0, 100)
    [weights, _] = policy["weights"]["anyOf"]
    assert weights["additionalProperties"] == {"type": "integer", "minimum": -100, "maximum": 100}

    # The domain's own rules are in the document: what it calls valid is accepted.
    assert weights["propertyNames"]["pattern"] == r"^[a-z][a-z0-9_]{0,63}$(?!\n)"
    level = schemas["LevelPolicyBody"]["properties"]
    actions = re.compile(level["action"]["pattern"])
    assert [
        a
        for a in ("allow", "require_mfa", "require_phishing_resistant", "deny", "x")
        if actions.search(a)
    ] == ["allow", "require_mfa", "require_phishing_resistant", "deny"]
    [max_age, _] = level["step_up_max_age_s"]["anyOf"]
    assert (max_age["minimum"], max_age["maximum"]) == (0, 7 * 24 * 3600)

    admin = server.client("root", "mfa:admin")
    assert admin.put("/admin/mfa/risk-policy", json={"base_score": 0}).status_code == 200
    for refused in ({"base_score": -1}, {"weights": {"locked": 101}}, {"note": "x"}):
        assert admin.put("/admin/mfa/risk-policy", json=refused).status_code == 400, refused
    misnamed = admin.put("/admin/mfa/risk-policy", json={"weights": {"Locked": 1}})
    assert misnamed.json()["errors"][0]["field"] == "weights"  # (the map's key: it said "data")


def test_options_lists_every_method_of_the_path(server: LiveServer) -> None:
    """Litestar's own answer listed the methods of the first handler registered for a path
    (`GET, OPTIONS` on `/mfa/totp/devices`, which takes POST too)."""
    client = server.client(new_user())
    for path, methods in {
        "/mfa/totp/devices": "GET, OPTIONS, POST",
        "/mfa/trusted-devices": "DELETE, GET, OPTIONS, POST",
        "/mfa/webauthn/credentials/some-id": "DELETE, GET, OPTIONS, PUT",
        "/health": "GET, HEAD, OPTIONS",
    }.items():
        answer = client.options(path)
        assert answer.status_code == 204, (path, answer.text)
        assert answer.headers["allow"] == methods, path
        assert answer.headers["cache-control"] == "no-store"
    assert httpx.options(server.url + "/mfa/totp/devices").status_code == 401  # (guards first)


DECEPTIVE_NAMES = [
    "\u202egpj.exe",  # a right-to-left override: shows as "exe.jpg"
    "work\u2066laptop",  # a bidi isolate
    "a\u0085b",  # a C1 control (next line)
    "\u200b",  # only a zero-width space
    "phone\u2028",  # a line separator
    "\ufeffphone",  # a byte-order mark
    " ",  # nothing visible
    "\u3000\u00a0",
    "\tphone",
    "\u2060",  # a word joiner alone
    "\u200d",  # a zero-width joiner alone
    "\u3164",  # the Hangul filler
    "\u2800",  # the braille blank
    "\u00ad",  # a soft hyphen
    "\u061cphone",  # the Arabic letter mark (bidi)
    "\ufe0f",  # an emoji variation selector alone
    "\ufe0f\ufe0e\ufe00",
]
SHOWN_NAMES = [
    "phone",
    " my phone",
    "José's 📱",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u2764\ufe0f",  # a heart, shown as an emoji
]


def test_device_names_that_display_deceptively_are_refused(server: LiveServer) -> None:
    """Names are shown in device lists, to users and admins: no controls, bidi overrides,
    invisible-only or blank names, on every route that takes one."""
    client = server.client(new_user())
    for name in DECEPTIVE_NAMES:
        for path in ("/mfa/totp/setup", "/mfa/trusted-devices"):
            response = client.post(path, json={"name": name})
            assert response.status_code == 400, (path, name, response.text)
            assert response.json()["errors"][0]["field"] == "name"
    for name in SHOWN_NAMES:
        response = client.post("/mfa/trusted-devices", json={"name": name})
        assert response.status_code == 201, (name, response.text)
        assert response.json()["name"] == name


def test_an_id_unknown_to_a_user_without_any_state_is_404_as_for_anyone(
    server: LiveServer,
) -> None:
    """A user who never enrolled got 409 `not_enrolled` for a named device, challenge or
    credential, one who had state 404: the answer depended on hidden state."""
    fresh = server.client(new_user())
    challenge_id = "00000000-0000-4000-8000-000000000000"
    push = {"challenge_id": challenge_id, "device_id": "d", "signature": "A" * 86}
    answers = {
        "totp verify": fresh.post("/mfa/totp/verify", json={"device_id": "x", "code": "123456"}),
        "push approve": fresh.post("/mfa/push/approve", json={**push, "number": "12"}),
        "push deny": fresh.post("/mfa/push/deny", json=push),
        "primary": fresh.post("/mfa/credentials/nope/primary"),
        "reset": server.client("root", "mfa:admin").delete(f"/admin/mfa/reset/{new_user()}"),
    }
    got = {name: (r.status_code, r.json()["code"]) for name, r in answers.items()}
    assert got == dict.fromkeys(answers, (404, "not_found"))


def test_a_client_that_goes_away_mid_body_is_not_a_server_error(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Litestar reports it as a 500, which was logged at ERROR: anyone could fill the error
    log and the 5xx count by opening connections and closing them half-way."""
    caplog.set_level(logging.INFO, logger="mfa.api")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /mfa/totp/setup HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {server.token(new_user())}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"na'
        )
    deadline = time.monotonic() + 5
    while not any("went away" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unknown_page_under_the_openapi_path_is_a_problem_too(server: LiveServer) -> None:
    """Litestar's OpenAPI router answered these with an HTML page of its own."""
    for path in ("/schema/nothing-here", "/schema/scalar", "/schema/stoplight"):
        response = httpx.get(server.url + path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json"), path
        assert response.json()["code"] == "not_found"
        assert response.headers.get_list("cache-control") == ["no-store"]
    assert httpx.get(server.url + "/schema").status_code == 200
    assert httpx.get(server.url + "/demo").headers["content-type"].startswith("text/html")


def test_json_msgspec_cannot_decode_is_a_validation_problem_with_its_errors_list(
    server: LiveServer,
) -> None:
    """A number out of range or a lone surrogate failed in the decoder, before the schema:
    the problem had no `errors`, and "Input data was truncated" for a lone surrogate."""
    admin = server.client("root", "mfa:admin")
    for body in (
        b'{"user_id": "u", "ip": "192.0.2.1", "signals": {"x": 1e999}}',
        b'{"user_id": "u", "ip": "192.0.2.1", "user_agent": "\\ud800"}',
        b'{"user_id": ',
    ):
        response = admin.post(
            "/admin/mfa/risk-policies/evaluate",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert [e["field"] for e in problem["errors"]] == ["data"]
        assert "truncated" not in problem["detail"]
