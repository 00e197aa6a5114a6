"""Threat: hostile input that costs the service more than it costs the sender, up to
stalling it for everyone (denial of service).

PostgreSQL text cannot hold NUL, and the projections run in one ordered stream: a single
stored value that a read model cannot write stops every read model, for every user, for good.
Every string field of every request body, and every path parameter, of every route (read from
the running app) is sent with NUL and other control characters in it; nothing answers 5xx,
and afterwards the read models still reach the head of the log. Crafted pagination cursors
are validation errors, and a read position claimed beyond the log does not hold a worker.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import new_user
from tests.security.support import (
    PushApp,
    Route,
    Stack,
    app_routes,
    assert_problem,
    bodies,
    body_fields,
    openapi,
    unique_email,
    unique_phone,
)

POISONS = ("a\x00b", "\x00", "line\nbreak\r\x1b[31m", "\x7f")


def valid_pool(stack: Stack, user: str) -> dict[str, list[Any]]:
    """A well-formed value for every body field, so that only the poisoned one is odd."""
    app = PushApp(stack.push)
    return {
        "name": ["poisoned"],
        "device_id": [app.device_id],
        "platform": ["android"],
        "push_token": [app.endpoint],
        "public_key": [app.public_key],
        "app_version": ["1.0"],
        "phone_number": [unique_phone()],
        "email": [unique_email(user)],
        "code": ["123456"],
        "method": ["totp"],
        "user_id": [user],
        "cidr": ["10.0.0.0/8"],
        "description": ["office"],
        "ip": ["203.0.113.9"],
        "user_agent": ["curl/8"],
        "device_token": ["x" * 43],
        "action": ["allow"],
        "reason": ["denied"],
    }


def _string_fields(document: dict[str, Any], route: Route) -> list[str]:
    fields = body_fields(document, route)
    if fields is None:
        return []
    operation = document["paths"][route.path][route.method.lower()]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    ref = schema.get("$ref") or next(
        (c["$ref"] for c in schema.get("oneOf", []) if "$ref" in c), ""
    )
    properties = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]

    def is_string(spec: dict[str, Any]) -> bool:
        return spec.get("type") == "string" or any(
            c.get("type") == "string" for c in spec.get("oneOf", [])
        )

    return [name for name in fields[0] if is_string(properties[name])]


def test_control_characters_in_any_field_or_path_never_stall_the_read_side(stack: Stack) -> None:
    document = openapi(stack.server)
    user = new_user()
    clients = {
        "user": stack.client(user),
        "admin": stack.admin(),
        "internal": stack.internal(),
    }
    pool = valid_pool(stack, user)
    sent = 0
    for route in app_routes(stack.server):
        client = clients.get(route.area)
        if client is None:
            continue
        for poison in POISONS:
            url = route.url(**dict.fromkeys(route.params, quote(poison, safe="")))
            body = next(bodies(document, route, pool))
            answered = _send(client, route, url, body)
            assert answered.status_code < 500, (str(route), "path", answered.text)
            sent += 1
            for name in _string_fields(document, route):
                valid = pool.get(name, ["x"])[0]
                poisoned = {**(body or {}), name: f"{valid}{poison}"}
                answered = _send(client, route, route.url(), poisoned)
                assert answered.status_code < 500, (str(route), name, answered.text)
                sent += 1
    assert sent > 300

    runtime = stack.server.runtime
    head = runtime.services.app.max_position()
    assert runtime.read_models.wait_for(head, timeout=15), runtime.read_models.positions()
    # and a new user's write is readable at once
    fresh = stack.client(new_user())
    assert fresh.post("/mfa/totp/setup", json={}).status_code == 201
    assert len(fresh.get("/mfa/totp/devices").json()["items"]) == 1


def _pattern_of(spec: dict[str, Any]) -> str | None:
    for choice in (spec, *spec.get("oneOf", [])):
        if choice.get("type") == "string" and "pattern" in choice:
            pattern: str = choice["pattern"]
            return pattern
    return None


def test_a_trailing_newline_is_refused_in_every_body_field_with_a_pattern(stack: Stack) -> None:
    """Python's `$` also matches before a final newline, and msgspec tests patterns with
    re.search: `^[^\\x00-\\x1f]+$` let "dev-1\\n" through. Each field is sent first, with a
    value its pattern takes plus "\\n", so that the error it gets is its own."""
    document = openapi(stack.server)
    user = new_user()
    clients = {"user": stack.client(user), "admin": stack.admin(), "internal": stack.internal()}
    pool = {**valid_pool(stack, user), "signature": ["A" * 86], "number": ["42"]}
    head = stack.server.runtime.services.app.max_position()
    checked = set()
    for route in app_routes(stack.server):
        client = clients.get(route.area)
        body = next(bodies(document, route, pool))
        if client is None or body is None:
            continue
        operation = document["paths"][route.path][route.method.lower()]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        ref = schema.get("$ref") or next(
            (c["$ref"] for c in schema.get("oneOf", []) if "$ref" in c), ""
        )
        properties = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
        for name, spec in properties.items():
            pattern = _pattern_of(spec)
            if pattern is None:
                continue
            valid = pool.get(name, ["x"])[0]
            assert re.search(pattern, valid), (str(route), name, pattern, valid)
            poisoned = {name: f"{valid}\n", **{k: v for k, v in body.items() if k != name}}
            answered = client.request(route.method, route.url(), json=poisoned)
            assert_problem(answered, 400, "validation_error")
            assert [e["field"] for e in answered.json()["errors"]] == [name], (str(route), name)
            checked.add(name)
    assert checked >= {
        "device_id",
        "name",
        "platform",
        "push_token",
        "public_key",
        "app_version",
        "code",
        "challenge_id",
        "signature",
        "number",
        "user_id",
        "description",
    }, checked
    assert stack.server.runtime.services.app.max_position() == head  # nothing was written


def _cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def test_crafted_pagination_cursors_are_validation_errors_never_server_errors(
    stack: Stack,
) -> None:
    document = openapi(stack.server)
    clients = {
        "user": stack.client(new_user()),
        "admin": stack.admin(),
        "internal": stack.internal(),
    }
    paged = [
        route
        for route in app_routes(stack.server)
        if route.method == "GET"
        and route.area in clients
        and any(
            p["name"] == "cursor"
            for p in document["paths"][route.path]["get"].get("parameters", [])
        )
    ]
    assert len(paged) >= 6, [str(r) for r in paged]
    crafted = [
        _cursor(["2026-01-01T00:00:00\x00", "x\x00"]),
        _cursor(["\x00", 1]),
        _cursor([0, "\x00"]),
        _cursor(["a", "b", "c"]),
        _cursor({"a": 1}),
        _cursor([None, None]),
        _cursor([[1], {"x": 1}]),
        _cursor([10**30, -(10**30)]),
        _cursor([True]),  # a bool is an int to Python, not to PostgreSQL (once a 500)
        _cursor([0, True]),
        _cursor([True, 1]),
        _cursor(["\ud800", "x"]),  # json.loads makes a lone surrogate, UTF-8 cannot hold it
        _cursor(["2026-01-01T00:00:00+00:00", "\udfff"]),
        "not base64!",
    ]
    for route in paged:
        for cursor in crafted:
            response = clients[route.area].get(
                route.url(user_id="someone"), params={"cursor": cursor, "user_id": "someone"}
            )
            assert response.status_code == 400, (str(route), cursor, response.text)
            assert response.json()["code"] == "validation_error"


def _send(
    client: httpx.Client, route: Route, url: str, body: dict[str, Any] | None
) -> httpx.Response:
    params = (
        {"reason": "poison test", "user_id": "u\x00"} if route.method in ("GET", "DELETE") else None
    )
    if body is None:
        return client.request(route.method, url, params=params)
    return client.request(route.method, url, params=params, json=body)


def test_a_read_position_claimed_beyond_the_log_answers_at_once(stack: Stack) -> None:
    client = stack.client(new_user())
    assert client.post("/mfa/totp/setup", json={}).status_code == 201
    started = time.monotonic()
    for claim in ("999999999999999999", "123456789012", str(2**40)):
        listed = client.get("/mfa/totp/devices", headers={"X-MFA-Position": claim})
        assert listed.status_code == 200, listed.text
        assert len(listed.json()["items"]) == 1
    assert time.monotonic() - started < 3


def test_a_read_position_of_other_than_ascii_digits_is_ignored(stack: Stack) -> None:
    """Latin-1 header bytes "¹²³" are digits to str.isdigit() but not to int() (was a 500)."""
    client = stack.client(new_user())
    assert client.post("/mfa/totp/setup", json={}).status_code == 201
    for claim in (b"\xb2", b"1\xb9", b"\xb3" * 5, b"-1", b"+7"):
        listed = client.get("/mfa/totp/devices", headers={"X-MFA-Position": claim})
        assert listed.status_code == 200, (claim, listed.text)
        assert len(listed.json()["items"]) == 1


def raw_body_to_every_route(
    stack: Stack, content: bytes, content_type: str = "application/json"
) -> list[tuple[Route, dict[str, Any], httpx.Response]]:
    """`content` as the body of every route that takes one, each with a token of its area:
    (route, its OpenAPI operation, the answer)."""
    document = openapi(stack.server)
    clients = {
        "user": stack.client(new_user()),
        "admin": stack.admin(),
        "internal": stack.internal(),
    }
    answers = []
    for route in app_routes(stack.server):
        client = clients.get(route.area)
        operation = document["paths"].get(route.path, {}).get(route.method.lower(), {})
        if client is None or "requestBody" not in operation:
            continue
        answered = client.request(
            route.method,
            route.url(),
            content=content,
            headers={"content-type": content_type},
        )
        answers.append((route, operation, answered))
    assert len(answers) >= 25
    return answers


def test_a_body_over_64_kib_is_refused_with_413_on_every_route_that_takes_one(
    stack: Stack,
) -> None:
    head = stack.server.runtime.services.app.max_position()
    oversized = json.dumps({"name": "x" * (65 * 1024)}).encode()
    for route, operation, answered in raw_body_to_every_route(stack, oversized):
        assert_problem(answered, 413, "payload_too_large")
        # ... and the OpenAPI document says so
        assert "413" in operation["responses"], str(route)
    assert stack.server.runtime.services.app.max_position() == head  # nothing was written


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"],
)
def test_a_body_that_is_not_sent_as_json_is_refused_with_415_on_every_route_that_takes_one(
    stack: Stack, content_type: str
) -> None:
    """A form or text body was read as JSON all the same (a browser can send those to any
    site without asking first)."""
    head = stack.server.runtime.services.app.max_position()
    for route, operation, answered in raw_body_to_every_route(stack, b"{}", content_type):
        assert_problem(answered, 415, "unsupported_media_type")
        assert "415" in operation["responses"], str(route)
    assert stack.server.runtime.services.app.max_position() == head  # nothing was written
    client = stack.client(new_user())
    for json_type in ("application/json; charset=utf-8", "application/merge-patch+json", None):
        headers = {"content-type": json_type} if json_type else {}
        setup = client.post("/mfa/totp/setup", content=b"{}", headers=headers)
        assert setup.status_code == 201, (json_type, setup.text)


def test_a_body_that_is_not_utf8_is_a_validation_error_on_every_json_route(
    stack: Stack,
) -> None:
    """msgspec's UnicodeDecodeError slips past Litestar's decode-error handler (once a 500)."""
    head = stack.server.runtime.services.app.max_position()
    for body in (b'{"code": "\xff"}', b"\xff", b'{"name": "\xed\xa0\x80"}'):
        for _, _, answered in raw_body_to_every_route(stack, body):
            assert_problem(answered, 400, "validation_error")
    assert stack.server.runtime.services.app.max_position() == head  # nothing was written


def test_a_body_nested_too_deeply_is_a_validation_error_on_every_json_route(
    stack: Stack,
) -> None:
    """JSON nested more than 16 levels is refused before any handler sees it: thousands of
    levels (which once exhausted the decoder's recursion, a 500), and one level too many."""
    head = stack.server.runtime.services.app.max_position()
    bodies_too_deep = (
        b'{"credential": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"name": ' + b"[" * 16 + b"]" * 16 + b"}",  # 17 levels with the object
    )
    for body in bodies_too_deep:
        for route, _, answered in raw_body_to_every_route(stack, body):
            assert_problem(answered, 400, "validation_error")
            problem = answered.json()
            assert "nested more than 16 levels" in problem["detail"], (str(route), problem)
    assert stack.server.runtime.services.app.max_position() == head  # nothing was written
