"""Threat: a one-time secret is used twice (replay), or twice at once (a race).

Every one-time secret is fired by many concurrent requests released together, and then
replayed: exactly one request succeeds, every other one is a problem (never 2xx, never 5xx),
and afterwards the secret is spent for good.
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt

from tests.api.helpers import code_at
from tests.api.test_webauthn_api import ORIGIN
from tests.security.support import (
    PROBLEM_JSON,
    Stack,
    burst,
    enrolled_user,
    next_totp_code,
    pending_registration,
    registration_response,
    statuses,
)

RACERS = 30


def exactly_one_winner(
    responses: list[httpx.Response], success: int = 200, losers: frozenset[int] = frozenset()
) -> httpx.Response:
    """The single successful response; every other one is a problem of an allowed status."""
    winners = [r for r in responses if r.status_code == success]
    assert len(winners) == 1, statuses(responses)
    for response in responses:
        if response is winners[0]:
            continue
        assert response.status_code in losers, (statuses(responses), response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
    return winners[0]


REFUSED = frozenset({403, 409, 429})  # invalid_code (replay), conflict, locked
USED = frozenset({409})  # challenge_used, or conflict after the retries


def open_challenge(client: httpx.Client, method: str) -> dict[str, Any]:
    response = client.post("/mfa/challenge", json={"method": method})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def step_up(client: httpx.Client, challenge_id: str, **proof: Any) -> httpx.Response:
    return client.post("/mfa/step-up", json={"challenge_id": challenge_id, **proof})


def test_a_totp_time_step_passes_once_across_user_and_internal_validation(stack: Stack) -> None:
    person = enrolled_user(stack, "totp")
    code = next_totp_code(stack, person)
    internal = stack.internal()

    def call(index: int) -> httpx.Response:
        if index % 2:
            return internal.post(
                "/internal/mfa/totp/validate", json={"user_id": person.user, "code": code}
            )
        return person.client.post("/mfa/totp/validate", json={"code": code})

    exactly_one_winner(burst(RACERS, call), losers=REFUSED)
    stack.server.clock.advance(31)  # past any lock; the step is still inside the drift window
    replay = person.client.post("/mfa/totp/validate", json={"code": code})
    assert replay.status_code == 403, replay.text
    assert replay.json()["code"] == "invalid_code"


def test_an_older_code_of_the_drift_window_is_refused_once_a_newer_one_passed(
    stack: Stack,
) -> None:
    person = enrolled_user(stack, "totp")
    stack.server.clock.advance(60)
    now = stack.server.clock.now()
    ahead = code_at(person.totp_secret, now, steps=1)
    assert person.client.post("/mfa/totp/validate", json={"code": ahead}).status_code == 200
    for steps in (0, -1, 1):
        older = code_at(person.totp_secret, now, steps=steps)
        refused = person.client.post("/mfa/totp/validate", json={"code": older})
        assert refused.status_code == 403, (steps, refused.text)


def test_a_totp_step_used_for_a_step_up_does_not_pass_validation_too(stack: Stack) -> None:
    person = enrolled_user(stack, "totp")
    code = next_totp_code(stack, person)
    challenge = open_challenge(person.client, "totp")

    def call(index: int) -> httpx.Response:
        if index % 2:
            return person.client.post("/mfa/totp/validate", json={"code": code})
        return step_up(person.client, challenge["challenge_id"], code=code)

    exactly_one_winner(burst(RACERS, call), losers=REFUSED)


def test_a_backup_code_works_once(stack: Stack) -> None:
    person = enrolled_user(stack, "backup_code")
    code = person.backup_codes[3]
    spellings = [code, code.upper(), code.replace("-", ""), f" {code} "]

    def call(index: int) -> httpx.Response:
        return person.client.post(
            "/mfa/backup-codes/verify", json={"code": spellings[index % len(spellings)]}
        )

    winner = exactly_one_winner(burst(RACERS, call), losers=REFUSED)
    assert winner.json()["remaining"] == 9
    stack.server.clock.advance(3600)  # past any lock
    replay = person.client.post("/mfa/backup-codes/verify", json={"code": code})
    assert replay.status_code == 403, replay.text
    assert person.client.get("/mfa/backup-codes/count").json() == {"remaining": 9, "total": 10}


def test_a_challenge_completes_once_even_with_different_valid_backup_codes(stack: Stack) -> None:
    person = enrolled_user(stack, "backup_code")
    challenge = open_challenge(person.client, "backup_code")
    codes = person.backup_codes

    def call(index: int) -> httpx.Response:
        return step_up(person.client, challenge["challenge_id"], code=codes[index % len(codes)])

    exactly_one_winner(burst(len(codes), call), losers=USED)
    assert person.client.get("/mfa/backup-codes/count").json()["remaining"] == 9


def _oob_code(stack: Stack, method: str, person: Any) -> str:
    stack.server.clock.advance(61)  # past the resend cooldown
    assert person.client.post(f"/mfa/{method}/send").status_code == 202
    if method == "sms":
        return stack.sms.last_code(person.phone)
    return stack.smtp.last_code(person.email)


def test_an_sms_code_and_an_email_code_each_work_once(stack: Stack) -> None:
    person = enrolled_user(stack, "sms", "email")
    for method in ("sms", "email"):
        code = _oob_code(stack, method, person)

        def call(_: int, method: str = method, code: str = code) -> httpx.Response:
            return person.client.post(f"/mfa/{method}/verify", json={"code": code})

        winner = exactly_one_winner(burst(RACERS, call), losers=REFUSED)
        assert winner.json()["purpose"] == "login"
        stack.server.clock.advance(3600)  # past any lock
        replay = person.client.post(f"/mfa/{method}/verify", json={"code": code})
        assert replay.status_code == 403, (method, replay.text)


def test_the_code_of_an_sms_challenge_completes_it_once(stack: Stack) -> None:
    person = enrolled_user(stack, "sms")
    stack.server.clock.advance(61)
    challenge = open_challenge(person.client, "sms")
    code = stack.sms.last_code(person.phone)

    def call(_: int) -> httpx.Response:
        return step_up(person.client, challenge["challenge_id"], code=code)

    exactly_one_winner(burst(RACERS, call), losers=USED)
    assert person.client.post("/mfa/sms/verify", json={"code": code}).status_code == 403


def test_a_push_challenge_is_approved_once(stack: Stack) -> None:
    person = enrolled_user(stack, "push")
    app = person.app
    assert app is not None
    created = person.client.post("/mfa/push/challenge").json()
    cid, number = created["challenge_id"], created["number"]

    winner = exactly_one_winner(
        burst(RACERS, lambda _: app.approve(person.client, cid, number)), losers=USED
    )
    assert winner.json()["status"] == "approved"
    replay = app.approve(person.client, cid, number)
    assert replay.status_code == 409
    assert replay.json()["code"] == "challenge_used"


def test_concurrent_approvals_and_denials_resolve_a_push_once(stack: Stack) -> None:
    person = enrolled_user(stack, "push")
    app = person.app
    assert app is not None
    created = person.client.post("/mfa/push/challenge").json()
    cid, number = created["challenge_id"], created["number"]

    def call(index: int) -> httpx.Response:
        if index % 2:
            return app.deny(person.client, cid)
        return app.approve(person.client, cid, number)

    winner = exactly_one_winner(burst(RACERS, call), losers=USED)
    final = person.client.get(f"/mfa/push/challenge/{cid}").json()["status"]
    assert final == winner.json()["status"]
    assert final in ("approved", "denied")


def test_an_approved_push_step_up_yields_one_token(stack: Stack) -> None:
    person = enrolled_user(stack, "push")
    app = person.app
    assert app is not None
    challenge = open_challenge(person.client, "push")
    assert (
        app.approve(person.client, challenge["challenge_id"], challenge["number"]).status_code
        == 200
    )

    exactly_one_winner(
        burst(RACERS, lambda _: step_up(person.client, challenge["challenge_id"])), losers=USED
    )


def test_a_webauthn_challenge_completes_once_with_one_or_many_assertions(stack: Stack) -> None:
    person = enrolled_user(stack, "webauthn")
    authenticator = person.authenticator
    assert authenticator is not None

    same = open_challenge(person.client, "webauthn")
    assertion = authenticator.get(same["options"], ORIGIN)
    exactly_one_winner(
        burst(RACERS, lambda _: step_up(person.client, same["challenge_id"], credential=assertion)),
        losers=USED,
    )

    many = open_challenge(person.client, "webauthn")
    assertions = [authenticator.get(many["options"], ORIGIN) for _ in range(RACERS)]
    exactly_one_winner(
        burst(
            RACERS,
            lambda i: step_up(person.client, many["challenge_id"], credential=assertions[i]),
        ),
        losers=USED,
    )

    # an assertion is bound to its challenge: replayed for a new one, it is refused
    fresh = open_challenge(person.client, "webauthn")
    replay = step_up(person.client, fresh["challenge_id"], credential=assertions[-1])
    assert replay.status_code == 403, replay.text
    [credential] = person.client.get("/mfa/webauthn/credentials").json()["items"]
    assert credential["clone_suspected"] is False


def test_a_totp_step_up_challenge_yields_one_token(stack: Stack) -> None:
    person = enrolled_user(stack, "totp")
    challenge = open_challenge(person.client, "totp")
    code = next_totp_code(stack, person)

    winner = exactly_one_winner(
        burst(RACERS, lambda _: step_up(person.client, challenge["challenge_id"], code=code)),
        losers=REFUSED,
    )
    claims = jwt.decode(winner.json()["step_up_token"], options={"verify_signature": False})
    assert claims["jti"] == challenge["challenge_id"]
    replay = step_up(person.client, challenge["challenge_id"], code=next_totp_code(stack, person))
    assert replay.status_code == 409
    assert replay.json()["code"] == "challenge_used"


def test_a_webauthn_registration_ceremony_registers_one_credential(stack: Stack) -> None:
    person = enrolled_user(stack, "totp")
    registration_id, options = pending_registration(person.client)
    responses = [registration_response(options) for _ in range(RACERS)]

    def call(index: int) -> httpx.Response:
        return person.client.post(
            "/mfa/webauthn/credentials/register/verify",
            json={"registration_id": registration_id, "credential": responses[index]},
        )

    exactly_one_winner(burst(RACERS, call), success=201, losers=USED)
    assert len(person.client.get("/mfa/webauthn/credentials").json()["items"]) == 1
