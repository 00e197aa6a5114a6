"""Threat: guessing a factor (brute force), with many guesses at once to outrun the lockout.

Fifty wrong guesses are released together against each factor. Exactly five are evaluated
(403 `invalid_code`, `attempts_remaining` 4, 3, 2, 1, 0 once each); every other one is
refused by the lock (429 `locked`, with `Retry-After`) or by a conflict (409), never
evaluated. The right answer is refused while the lock holds, even fifty times at once. The
event log shows exactly five failures, one lock, and at most one record of the refusals.
Push answers have their own, smaller budget: three rejected responses deny the challenge.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx

from tests.api.helpers import code_at, wrong_code
from tests.api.test_webauthn_api import ORIGIN
from tests.security.support import (
    Enrolled,
    PushApp,
    Stack,
    burst,
    count_types,
    enrolled_user,
    events_of,
    next_totp_code,
    statuses,
)

GUESSES = 50


def assert_lockout_held(responses: list[httpx.Response]) -> None:
    """Five guesses evaluated, the rest refused unevaluated; nothing passed."""
    evaluated = [r for r in responses if r.status_code == 403]
    assert len(evaluated) == 5, statuses(responses)
    assert all(r.json()["code"] == "invalid_code" for r in evaluated)
    assert sorted(r.json()["attempts_remaining"] for r in evaluated) == [0, 1, 2, 3, 4]
    for response in responses:
        assert response.status_code in (403, 409, 429), (statuses(responses), response.text)
        if response.status_code == 429:
            assert response.json()["code"] == "locked"
            assert int(response.headers["Retry-After"]) >= 1


def assert_still_locked(responses: list[httpx.Response]) -> None:
    assert {r.status_code for r in responses} <= {409, 429}, statuses(responses)
    assert any(r.status_code == 429 for r in responses)


def assert_events(stack: Stack, user: str, factor: str) -> None:
    """Five failures, one lock, at most one refusal record: guesses are not unbounded writes."""
    events = events_of(stack, user)
    failures = [
        e
        for e in events
        if e["type"].startswith("mfa.verification.failed") and e["data"]["factor"] == factor
    ]
    assert len(failures) == 5
    assert count_types(events, "factor_locked") == 1
    assert count_types(events, "attempt_refused") <= 1


def test_totp_guesses_on_every_route_share_one_budget_and_the_right_code_waits_out_the_lock(
    stack: Stack,
) -> None:
    person = enrolled_user(stack, "totp")
    challenge = person.client.post("/mfa/challenge", json={"method": "totp"}).json()
    internal = stack.internal()
    now = stack.server.clock.now()
    wrong = wrong_code(person.totp_secret, now)
    guesses = [f"{(int(wrong) + 7919 * i) % 1_000_000:06d}" for i in range(GUESSES)]
    valid = {code_at(person.totp_secret, now, s) for s in (-1, 0, 1)}
    guesses = [g for g in guesses if g not in valid]

    def guess(index: int, code: str | None = None) -> httpx.Response:
        code = code or guesses[index % len(guesses)]
        if index % 3 == 0:
            return person.client.post("/mfa/totp/validate", json={"code": code})
        if index % 3 == 1:
            body = {"user_id": person.user, "code": code}
            return internal.post("/internal/mfa/totp/validate", json=body)
        return person.client.post(
            "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "code": code}
        )

    assert_lockout_held(burst(GUESSES, guess))
    right = code_at(person.totp_secret, stack.server.clock.now())
    assert_still_locked(burst(GUESSES, lambda i: guess(i, right)))
    assert_events(stack, person.user, "otp")

    stack.server.clock.advance(31)
    after = person.client.post("/mfa/totp/validate", json={"code": next_totp_code(stack, person)})
    assert after.status_code == 200, after.text


def test_backup_code_guesses_are_locked_out_and_spend_no_code(stack: Stack) -> None:
    person = enrolled_user(stack, "backup_code")

    def guess(index: int, code: str | None = None) -> httpx.Response:
        code = code or secrets.token_hex(8)
        return person.client.post("/mfa/backup-codes/verify", json={"code": code})

    assert_lockout_held(burst(GUESSES, guess))
    assert_still_locked(burst(GUESSES, lambda i: guess(i, person.backup_codes[i % 10])))
    assert person.client.get("/mfa/backup-codes/count").json() == {"remaining": 10, "total": 10}
    assert_events(stack, person.user, "backup_code")
    stack.server.clock.advance(31)
    assert (
        person.client.post(
            "/mfa/backup-codes/verify", json={"code": person.backup_codes[0]}
        ).status_code
        == 200
    )


def _oob_guesses(stack: Stack, person: Enrolled, method: str) -> None:
    stack.server.clock.advance(61)  # past the resend cooldown of the enrolment code
    assert person.client.post(f"/mfa/{method}/send").status_code == 202
    right = (
        stack.sms.last_code(person.phone) if method == "sms" else stack.smtp.last_code(person.email)
    )
    guesses = [f"{(int(right) + 1 + i) % 1_000_000:06d}" for i in range(GUESSES)]

    def guess(index: int, code: str | None = None) -> httpx.Response:
        code = code or guesses[index]
        return person.client.post(f"/mfa/{method}/verify", json={"code": code})

    assert_lockout_held(burst(GUESSES, guess))
    assert_still_locked(burst(GUESSES, lambda i: guess(i, right)))
    assert_events(stack, person.user, method)
    stack.server.clock.advance(31)
    # the lock is over, and the code is not back: its own five attempts voided it
    late = guess(0, right)
    assert late.status_code == 403, late.text


def test_sms_code_guesses_are_locked_out_and_void_the_code(stack: Stack) -> None:
    _oob_guesses(stack, enrolled_user(stack, "sms"), "sms")


def test_email_code_guesses_are_locked_out_and_void_the_code(stack: Stack) -> None:
    _oob_guesses(stack, enrolled_user(stack, "email"), "email")


def _push_rejections(
    stack: Stack, answer: Callable[[PushApp, Enrolled, str, str], httpx.Response]
) -> None:
    person = enrolled_user(stack, "push")
    app = person.app
    assert app is not None
    created = person.client.post("/mfa/push/challenge").json()
    cid, number = created["challenge_id"], created["number"]

    responses = burst(GUESSES, lambda i: answer(app, person, cid, number))
    rejected = [r for r in responses if r.status_code == 403]
    assert len(rejected) == 3, statuses(responses)
    assert sorted(r.json()["attempts_remaining"] for r in rejected) == [0, 1, 2]
    assert {r.status_code for r in responses} <= {403, 409}, statuses(responses)

    status = person.client.get(f"/mfa/push/challenge/{cid}").json()
    assert status["status"] == "denied"
    assert status["reason"] == "too_many_rejected_responses"
    late = app.approve(person.client, cid, number)
    assert late.status_code == 409, late.text
    assert late.json()["code"] == "challenge_used"


def test_push_number_guesses_deny_the_challenge_after_three(stack: Stack) -> None:
    def wrong_number(app: PushApp, person: Enrolled, cid: str, number: str) -> httpx.Response:
        guess = f"{(int(number) - 10 + secrets.randbelow(89) + 1) % 90 + 10:02d}"
        return app.approve(person.client, cid, guess)

    _push_rejections(stack, wrong_number)


def test_push_signature_forgeries_deny_the_challenge_after_three(stack: Stack) -> None:
    def forged(app: PushApp, person: Enrolled, cid: str, number: str) -> httpx.Response:
        forger = PushApp(stack.push, device_id=app.device_id)  # same device id, another key
        return forger.approve(person.client, cid, number)

    _push_rejections(stack, forged)


def test_webauthn_assertion_guesses_are_locked_out(stack: Stack) -> None:
    person = enrolled_user(stack, "webauthn")
    authenticator = person.authenticator
    assert authenticator is not None
    challenge = person.client.post("/mfa/challenge", json={"method": "webauthn"}).json()
    bad: list[dict[str, Any]] = [
        authenticator.get(challenge["options"], "https://evil.example") for _ in range(GUESSES)
    ]

    def guess(index: int, credential: dict[str, Any] | None = None) -> httpx.Response:
        return person.client.post(
            "/mfa/step-up",
            json={
                "challenge_id": challenge["challenge_id"],
                "credential": credential or bad[index],
            },
        )

    assert_lockout_held(burst(GUESSES, guess))
    good = [authenticator.get(challenge["options"], ORIGIN) for _ in range(GUESSES)]
    assert_still_locked(burst(GUESSES, lambda i: guess(i, good[i])))
    assert_events(stack, person.user, "webauthn")
    stack.server.clock.advance(31)
    fresh = person.client.post("/mfa/challenge", json={"method": "webauthn"}).json()
    passed = person.client.post(
        "/mfa/step-up",
        json={
            "challenge_id": fresh["challenge_id"],
            "credential": authenticator.get(fresh["options"], ORIGIN),
        },
    )
    assert passed.status_code == 200, passed.text
