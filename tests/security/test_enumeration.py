"""Threat: a caller learns which users exist, or which factors they have (enumeration).

Where a caller names the user (the `/internal/*` routes), an unknown user, a user who has an
aggregate but no factor, a user whose only TOTP device is still pending and a real user's
wrong code must be indistinguishable: status, problem code, detail, body shape, the
`attempts_remaining` sequence, the lock and its escalation. Unknown users cost no write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from commands.adapters.decoys import FORGET_AFTER, PRUNE_EVERY, SqlDecoyLockouts
from commands.decoys import DecoyLockouts
from domain.errors import FactorLockedError, InvalidCodeError
from infra.sql import Database, open_database
from tests.api.helpers import wrong_code
from tests.conftest import new_user
from tests.security.support import (
    Route,
    Stack,
    app_routes,
    enrolled_user,
    openapi,
)

# Erasure names a user too, but it is not a probe: it destroys what it finds.
NOT_PROBES = {("POST", "/internal/mfa/erase")}


def user_without_factors(stack: Stack) -> str:
    """A user with an aggregate and nothing in it (generated codes, then removed them)."""
    user = new_user()
    client = stack.client(user)
    assert client.post("/mfa/backup-codes/generate").status_code == 201
    assert client.delete("/mfa/methods/backup_code").status_code == 200
    return user


def user_with_pending_totp(stack: Stack) -> str:
    user = new_user()
    assert stack.client(user).post("/mfa/totp/setup", json={}).status_code == 201
    return user


def answer(response: httpx.Response, user: str) -> tuple[Any, ...]:
    """Everything a caller sees, with the user id itself taken out."""
    body = response.json()
    text = response.text.replace(user, "<user>")
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("retry-after"),
        sorted(body) if isinstance(body, dict) else type(body).__name__,
        text,
    )


def validate(stack: Stack, user: str, code: str = "123456") -> httpx.Response:
    return stack.internal().post(
        "/internal/mfa/totp/validate", json={"user_id": user, "code": code}
    )


def test_unknown_users_users_without_totp_and_wrong_codes_get_identical_answers(
    stack: Stack,
) -> None:
    real = enrolled_user(stack, "totp")
    subjects = {
        "unknown": (new_user(), lambda: "123456"),
        "without factors": (user_without_factors(stack), lambda: "123456"),
        "pending totp": (user_with_pending_totp(stack), lambda: "123456"),
        "wrong code": (
            real.user,
            lambda: wrong_code(real.totp_secret, stack.server.clock.now()),
        ),
    }
    rounds: dict[str, list[tuple[Any, ...]]] = {name: [] for name in subjects}
    for lock_round in range(2):
        for name, (user, code) in subjects.items():
            for _ in range(7):
                rounds[name].append(answer(validate(stack, user, code()), user))
        stack.server.clock.advance(31 if lock_round == 0 else 61)

    reference = rounds["wrong code"]
    statuses = [a[0] for a in reference]
    assert statuses == [403] * 5 + [429] * 2 + [403] * 5 + [429] * 2
    assert [a[2] for a in reference if a[0] == 429] == ["30", "30", "60", "60"]
    remaining = [int(a[4].split('"attempts_remaining":')[1][0]) for a in reference if a[0] == 403]
    assert remaining == [4, 3, 2, 1, 0] * 2
    for name, seen in rounds.items():
        assert seen == reference, name

    # and afterwards the status shows each of them locked alike
    for _ in range(5):
        for user, code in subjects.values():
            validate(stack, user, code())
    statuses = {
        name: stack.internal().get(f"/internal/mfa/status/{user}").json()
        for name, (user, _) in subjects.items()
    }
    locks = {name: status["locks"] for name, status in statuses.items()}
    assert all(len(found) == 1 for found in locks.values()), locks
    assert len({json.dumps(found) for found in locks.values()}) == 1, locks
    unknown, empty = statuses["unknown"], statuses["without factors"]
    assert {**unknown, "user_id": ""} == {**empty, "user_id": ""}


def test_probing_unknown_users_writes_nothing_and_keeps_memory_bounded(stack: Stack) -> None:
    app = stack.server.runtime.services.app
    before = app.max_position()
    probed = [new_user() for _ in range(60)]
    for user in probed:
        assert validate(stack, user).json()["attempts_remaining"] == 4
    for _ in range(6):
        validate(stack, probed[0])
    assert validate(stack, probed[0]).status_code == 429
    assert app.max_position() == before
    [lock] = stack.internal().get(f"/internal/mfa/status/{probed[0]}").json()["locks"]
    assert lock["factor"] == "otp"
    assert stack.internal().get(f"/internal/mfa/status/{probed[1]}").json()["locks"] == []

    decoys = DecoyLockouts(size=10)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(1_000):
        decoys.refuse(f"user-{index}", "otp", now)
    assert len(decoys) == 10


def _user_routes(stack: Stack) -> list[tuple[Route, str]]:
    """Every internal route that names a user, and where: path, query or body."""
    document = openapi(stack.server)
    found = []
    for route in app_routes(stack.server):
        if route.area != "internal" or (route.method, route.path) in NOT_PROBES:
            continue
        operation = document["paths"][route.path][route.method.lower()]
        where = {p["in"] for p in operation.get("parameters", []) if p["name"] == "user_id"}
        schema = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
        if schema:
            ref = schema["schema"].get("$ref", "")
            properties = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
            if "user_id" in properties:
                where.add("body")
        found += [(route, place) for place in sorted(where)]
    assert len(found) >= 4, found
    return found


def _ask(stack: Stack, route: Route, place: str, user: str) -> httpx.Response:
    client = stack.internal()
    if place == "path":
        return client.request(route.method, route.url(user_id=user))
    if place == "query":
        return client.request(route.method, route.url(), params={"user_id": user})
    return client.request(route.method, route.url(), json={"user_id": user, "code": "123456"})


def test_every_internal_route_that_names_a_user_answers_alike_for_unknown_and_empty_users(
    stack: Stack,
) -> None:
    for route, place in _user_routes(stack):
        unknown, empty = new_user(), user_without_factors(stack)
        first = _ask(stack, route, place, unknown)
        second = _ask(stack, route, place, empty)
        assert first.status_code < 500, (str(route), first.text)
        assert answer(first, unknown) == answer(second, empty), (str(route), place)


def test_a_users_own_views_do_not_tell_never_enrolled_from_enrolled_and_removed(
    stack: Stack,
) -> None:
    fresh, empty = new_user(), user_without_factors(stack)
    for path in ("/mfa/methods", "/mfa/status/{user}", "/mfa/backup-codes/count"):
        seen = []
        for user in (fresh, empty):
            response = stack.client(user).get(path.format(user=user))
            assert response.status_code == 200, response.text
            seen.append(answer(response, user))
        assert seen[0] == seen[1], path


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_database(database_url, 8)
    yield database
    database.close()


def test_an_unknown_users_lock_is_shared_by_every_process_as_a_real_users_is(
    db: Database,
) -> None:
    """Guesses spread over two server processes (or instances) lock after five, not ten."""
    key = os.urandom(32)
    first, second = SqlDecoyLockouts(db, key), SqlDecoyLockouts(db, key)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    answers = [(first, second)[i % 2].refuse("ghost", "otp", now) for i in range(7)]
    remaining = [a.attempts_remaining for a in answers if isinstance(a, InvalidCodeError)]
    assert remaining == [4, 3, 2, 1, 0]
    assert all(isinstance(a, FactorLockedError) for a in answers[5:])
    [(factor, until)] = second.locks_of("ghost", now)
    assert (factor, until) == ("otp", now + timedelta(seconds=30))
    # the lock expires, and the next lock escalates, as a real user's
    later = now + timedelta(seconds=31)
    for _ in range(5):
        last = first.refuse("ghost", "otp", later)
    assert second.locks_of("ghost", later) == [("otp", later + timedelta(seconds=60))]
    assert isinstance(last, InvalidCodeError)


def test_fifty_concurrent_guesses_at_an_unknown_user_get_five_tries(db: Database) -> None:
    key = os.urandom(32)
    processes = [SqlDecoyLockouts(db, key) for _ in range(2)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: processes[i % 2].refuse("ghost", "otp", now), range(50)))
    assert sum(isinstance(a, InvalidCodeError) for a in answers) == 5
    assert sum(isinstance(a, FactorLockedError) for a in answers) == 45


def test_unknown_users_nobody_probes_for_a_day_are_forgotten(db: Database) -> None:
    decoys = SqlDecoyLockouts(db, os.urandom(32))
    then = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(PRUNE_EVERY - 1):
        decoys.refuse(f"old-{index}", "otp", then)
    assert len(decoys) == PRUNE_EVERY - 1
    decoys.refuse("new", "otp", then + FORGET_AFTER + timedelta(seconds=1))
    assert len(decoys) == 1
