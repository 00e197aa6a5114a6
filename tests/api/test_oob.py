"""SMS and email codes over HTTP, on SQLite and on PostgreSQL, delivered through a real SMTP
server and a real HTTP server standing in for the SMS provider. Every code is read from the
delivered message, as a user would read it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from commands.app import load_user
from domain.user_mfa import UserMfa
from tests.api.test_webauthn_api import verify_token
from tests.conftest import LiveServer, free_port, make_settings, new_user
from tests.support.delivery import SmsProvider, SmtpServer, code_in

PHONE = "+14155550123"
OTHER_PHONE = "+14155550188"


@pytest.fixture
def sms() -> Iterator[SmsProvider]:
    provider = SmsProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mail = SmtpServer(free_port()).start()
    yield mail
    mail.stop()


@pytest.fixture
def server(
    tmp_path: Path,
    database_url: str,
    start_server: Callable[..., LiveServer],
    sms: SmsProvider,
    smtp: SmtpServer,
) -> LiveServer:
    return start_server(
        make_settings(
            tmp_path,
            database_url,
            MFA_SMTP_URL=smtp.url,
            MFA_SMS_WEBHOOK_URL=sms.url,
            MFA_EMAIL_FROM="mfa@example.org",
        )
    )


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def enrol_sms(client: httpx.Client, sms: SmsProvider, phone: str = PHONE) -> None:
    started = client.put("/mfa/sms/enroll", json={"phone_number": phone})
    assert started.status_code == 202, started.text
    verified = client.post("/mfa/sms/verify", json={"code": sms.last_code(phone)})
    assert verified.status_code == 200, verified.text


def enrol_email(client: httpx.Client, smtp: SmtpServer, address: str) -> None:
    started = client.put("/mfa/email/enroll", json={"email": address})
    assert started.status_code == 202, started.text
    verified = client.post("/mfa/email/verify", json={"code": smtp.last_code(address)})
    assert verified.status_code == 200, verified.text


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def methods_of(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {m["method"]: m for m in client.get("/mfa/methods").json()["items"]}


# ---------------------------------------------------------------- enrolment


def test_sms_enrolment_texts_a_code_to_the_phone_and_that_code_confirms_it(
    server: LiveServer, sms: SmsProvider
) -> None:
    user = new_user()
    client = server.client(user)

    started = client.put("/mfa/sms/enroll", json={"phone_number": "+1 (415) 555-0123"})

    assert started.status_code == 202
    body = started.json()
    assert body["method"] == "sms"
    assert body["purpose"] == "enroll"
    assert body["destination_hint"] == "**********23"
    [message] = sms.messages
    assert message["to"] == PHONE
    assert message["content_type"] == "application/json"
    assert methods_of(client)["sms"]["enabled"] is False

    verified = client.post("/mfa/sms/verify", json={"code": code_in(message["body"])})

    assert verified.status_code == 200
    assert verified.json() == {
        "method": "sms",
        "purpose": "enroll",
        "verified": True,
        "enabled": True,
    }
    sms_method = methods_of(client)["sms"]
    assert sms_method["enabled"] is True
    assert sms_method["details"]["status"] == "active"
    assert client.get(f"/mfa/status/{user}").json()["mfa_enabled"] is True


def test_email_enrolment_mails_a_code_and_email_stays_a_weak_factor(
    server: LiveServer, smtp: SmtpServer
) -> None:
    user = new_user()
    client = server.client(user)

    started = client.put("/mfa/email/enroll", json={"email": "Carol@Example.ORG"})

    assert started.status_code == 202
    assert started.json()["destination_hint"] == "C***@example.org"
    message = smtp.last_message("Carol@example.org")
    assert message["From"] == "mfa@example.org"
    assert message["Subject"] == "Confirm your email address"
    assert not any(ch.isdigit() for ch in str(message["Subject"]))  # the code is in the body only
    verified = client.post("/mfa/email/verify", json={"code": smtp.last_code("Carol@example.org")})
    assert verified.status_code == 200
    assert verified.json()["purpose"] == "enroll"

    email = methods_of(client)["email"]
    assert email["enabled"] is True
    assert email["details"]["strength"] == "weak"
    status = client.get(f"/mfa/status/{user}").json()
    assert status["mfa_enabled"] is False  # email alone does not turn MFA on


def test_sms_and_email_need_an_enrolment_first(server: LiveServer) -> None:
    client = server.client(new_user())
    problem(client.post("/mfa/sms/send"), 409, "not_enrolled")
    problem(client.post("/mfa/email/verify", json={"code": "123456"}), 409, "not_enrolled")
    problem(client.post("/mfa/sms/disable"), 409, "not_enrolled")
    problem(client.post("/mfa/challenge", json={"method": "email"}), 409, "not_enrolled")


@pytest.mark.parametrize(
    ("path", "field", "values"),
    [
        (
            "/mfa/sms/enroll",
            "phone_number",
            ["4155550123", "+1 555", "+999 1234567", "phone", "+" + "1" * 40, "", 12345],
        ),
        (
            "/mfa/email/enroll",
            "email",
            ["not-an-email", "a@b", "a b@example.org", "a@example.org\r\nBcc: x@y.z", "@x.org"],
        ),
    ],
)
def test_invalid_phone_numbers_and_email_addresses_are_validation_errors(
    server: LiveServer, sms: SmsProvider, path: str, field: str, values: list[Any]
) -> None:
    client = server.client(new_user())
    for value in values:
        body = problem(client.put(path, json={field: value}), 400, "validation_error")
        assert field in body["detail"], value
    problem(client.put(path, json={}), 400, "validation_error")
    problem(
        client.post(path.replace("enroll", "verify"), json={"code": "12345"}),
        400,
        "validation_error",
    )
    assert sms.messages == []


NOT_A_PHONE_LINE = (
    "phone_number: codes are only sent to mobile and fixed-line numbers of a country "
    "(not premium-rate, toll-free, VoIP, satellite or other special numbers)"
)


@pytest.mark.parametrize(
    "number",
    [
        "+19002345678",  # premium rate (US 900)
        "+449098790000",  # premium rate (UK 09)
        "+18002345678",  # toll free
        "+448431234567",  # shared cost (UK 0843)
        "+445612345678",  # VoIP
        "+4970012345678",  # personal number
        "+870301234567",  # Inmarsat: phonenumbers says MOBILE, costly to text
        "+881612345678",  # Global Mobile Satellite System
        "+8823421234",  # international networks
    ],
)
def test_premium_rate_toll_free_voip_and_other_special_numbers_get_no_text(
    server: LiveServer, sms: SmsProvider, number: str
) -> None:
    """Each is a valid number, but a text to it can pay its owner (toll fraud, SMS pumping)."""
    client = server.client(new_user())

    refused = client.put("/mfa/sms/enroll", json={"phone_number": number})

    body = problem(refused, 400, "validation_error")
    assert body["detail"] == NOT_A_PHONE_LINE
    assert sms.messages == []


@pytest.mark.parametrize("number", ["+447400123456", "+33123456789", "+14155552671"])
def test_mobile_and_fixed_line_numbers_of_any_country_are_sms_destinations(
    server: LiveServer, sms: SmsProvider, number: str
) -> None:
    client = server.client(new_user())

    enrol_sms(client, sms, number)

    assert [m["to"] for m in sms.messages] == [number]


INVALID_EMAIL = (
    "email: not a plain email address (encoded words and other syntax that mail software "
    "rewrites are not accepted)"
)


@pytest.mark.parametrize(
    "address",
    [
        "=?utf-8?q?=76ictim?=@example.com",  # decodes to victim@example.com
        "=?UTF-8?B?dmljdGlt?=@example.com",  # the same, base64
        "=?utf-8?b?YQ0KUkNQVCBUTzo8eEBldmlsLmNvbT4=?=@example.com",  # "a\r\nRCPT TO:<x@evil.com>"
        "=?utf-8?q?a?=.b@example.com",  # a.b@example.com
    ],
)
def test_an_email_address_with_an_encoded_word_is_a_validation_error_and_nothing_is_mailed(
    server: LiveServer, smtp: SmtpServer, address: str
) -> None:
    """email-validator takes these as a dot-atom; the mail library would decode them."""
    client = server.client(new_user())

    refused = client.put("/mfa/email/enroll", json={"email": address})

    body = problem(refused, 400, "validation_error")
    assert body["detail"] == INVALID_EMAIL
    assert smtp.messages == []


def test_an_email_address_with_letters_beyond_ascii_before_the_at_is_a_validation_error(
    server: LiveServer, smtp: SmtpServer
) -> None:
    """Such a mailbox needs SMTPUTF8 all the way, and cannot be put in a `To` header as is."""
    refused = server.client(new_user()).put("/mfa/email/enroll", json={"email": "josé@example.org"})

    body = problem(refused, 400, "validation_error")
    assert body["detail"] == "email: not a valid email address"
    assert smtp.messages == []


# ---------------------------------------------------------------- login codes


def test_a_login_code_is_sent_passes_once_and_is_refused_the_second_time(
    server: LiveServer, sms: SmsProvider
) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)

    sent = client.post("/mfa/sms/send")

    assert sent.status_code == 202
    assert sent.json()["purpose"] == "login"
    code = sms.last_code(PHONE)
    ok = client.post("/mfa/sms/verify", json={"code": code})
    assert ok.status_code == 200
    assert ok.json()["purpose"] == "login"
    again = problem(client.post("/mfa/sms/verify", json={"code": code}), 403, "invalid_code")
    assert again["attempts_remaining"] == 4


def test_a_wrong_code_is_refused_with_the_attempts_remaining(
    server: LiveServer, sms: SmsProvider
) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)
    client.post("/mfa/sms/send")
    code = sms.last_code(PHONE)

    first = problem(client.post("/mfa/sms/verify", json={"code": wrong(code)}), 403, "invalid_code")
    second = problem(
        client.post("/mfa/sms/verify", json={"code": wrong(code)}), 403, "invalid_code"
    )

    assert (first["attempts_remaining"], second["attempts_remaining"]) == (4, 3)
    assert client.post("/mfa/sms/verify", json={"code": code}).status_code == 200


def test_a_code_takes_at_most_five_attempts_then_the_factor_locks_and_the_code_is_void(
    server: LiveServer, sms: SmsProvider
) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)
    client.post("/mfa/sms/send")
    code = sms.last_code(PHONE)

    remaining = [
        problem(client.post("/mfa/sms/verify", json={"code": wrong(code)}), 403, "invalid_code")[
            "attempts_remaining"
        ]
        for _ in range(5)
    ]
    locked = client.post("/mfa/sms/verify", json={"code": code})

    assert remaining == [4, 3, 2, 1, 0]
    problem(locked, 429, "locked")
    assert int(locked.headers["Retry-After"]) == 30
    server.clock.advance(31)
    problem(client.post("/mfa/sms/verify", json={"code": code}), 403, "invalid_code")


def test_a_code_expires_after_ten_minutes(server: LiveServer, sms: SmsProvider) -> None:
    client = server.client(new_user())
    client.put("/mfa/sms/enroll", json={"phone_number": PHONE})
    server.clock.advance(599)
    assert client.post("/mfa/sms/verify", json={"code": sms.last_code()}).status_code == 200

    server.clock.advance(60)
    client.post("/mfa/sms/send")
    server.clock.advance(600)
    problem(client.post("/mfa/sms/verify", json={"code": sms.last_code()}), 403, "invalid_code")


def test_a_new_code_does_not_reset_the_failure_count(server: LiveServer, sms: SmsProvider) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)
    client.post("/mfa/sms/send")
    for _ in range(3):
        client.post("/mfa/sms/verify", json={"code": wrong(sms.last_code())})

    server.clock.advance(60)
    assert client.post("/mfa/sms/send").status_code == 202
    refused = client.post("/mfa/sms/verify", json={"code": wrong(sms.last_code())})

    assert problem(refused, 403, "invalid_code")["attempts_remaining"] == 1


# ---------------------------------------------------------------- send limits


def test_a_resend_waits_sixty_seconds(server: LiveServer, sms: SmsProvider) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(45)

    limited = client.post("/mfa/sms/send")

    body = problem(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "15"
    assert body["retry_after"] == 15
    server.clock.advance(15)
    assert client.post("/mfa/sms/send").status_code == 202
    assert len(sms.messages) == 2


def test_a_user_gets_at_most_five_codes_an_hour(server: LiveServer, sms: SmsProvider) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)  # the first code, at t = 0
    for _ in range(4):
        server.clock.advance(61)
        assert client.post("/mfa/sms/send").status_code == 202
    server.clock.advance(61)

    limited = client.post("/mfa/sms/send")

    problem(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) == 3600 - 5 * 61
    assert len(sms.messages) == 5
    server.clock.advance(3600 - 5 * 61)
    assert client.post("/mfa/sms/send").status_code == 202


def test_one_phone_number_gets_at_most_eight_codes_an_hour_whichever_users_ask(
    server: LiveServer, sms: SmsProvider
) -> None:
    """Per number: 8 codes an hour in all, at most 3 of them enrolments. Anyone may ask to
    enrol any number, so an enrolment's answer depends on no login code of its owner, and a
    refused one does not say when the number was last sent a code: a stranger would learn
    when the owner logs in."""
    alice, bob, carol = (server.client(new_user()) for _ in range(3))
    enrol_sms(alice, sms)  # 1 (an enrolment)
    for _ in range(4):
        server.clock.advance(61)
        assert alice.post("/mfa/sms/send").status_code == 202  # 2-5
    server.clock.advance(5)
    enrol_sms(bob, sms)  # 6: Alice's login code 5 s ago does not hold it back
    server.clock.advance(5)

    too_soon = carol.put("/mfa/sms/enroll", json={"phone_number": PHONE})

    problem(too_soon, 429, "rate_limited")  # 60 s between enrolment codes of a number...
    assert too_soon.headers["Retry-After"] == "3600"  # ... but not "55", which dates Bob's
    for _ in range(2):
        server.clock.advance(61)
        assert bob.post("/mfa/sms/send").status_code == 202  # 7-8
    server.clock.advance(61)
    elapsed = 4 * 61 + 5 + 5 + 3 * 61

    capped = bob.post("/mfa/sms/send")

    problem(capped, 429, "rate_limited")  # Bob had 3 codes; the number had 8
    assert int(capped.headers["Retry-After"]) == 3600 - elapsed
    assert len(sms.messages) == 8
    assert {m["to"] for m in sms.messages} == {PHONE}
    other = server.client(new_user()).put("/mfa/sms/enroll", json={"phone_number": OTHER_PHONE})
    assert other.status_code == 202


def test_a_refused_enrolment_answers_the_users_own_limit_before_the_numbers(
    server: LiveServer, sms: SmsProvider
) -> None:
    """While a user's own cooldown runs, asking to enrol someone else's number is answered
    with that cooldown alone: it cannot be used to probe the number for free."""
    victim, prober = server.client(new_user()), server.client(new_user())
    enrol_sms(victim, sms)
    assert prober.put("/mfa/sms/enroll", json={"phone_number": OTHER_PHONE}).status_code == 202
    server.clock.advance(20)
    sent = len(sms.messages)
    answers = {
        number: prober.put("/mfa/sms/enroll", json={"phone_number": number})
        for number in (PHONE, "+14155550166")
    }
    for answer in answers.values():
        problem(answer, 429, "rate_limited")
    assert {a.headers["Retry-After"] for a in answers.values()} == {"40"}
    assert len(sms.messages) == sent


def test_encoded_word_spellings_of_a_mailbox_do_not_escape_its_send_limit(
    server: LiveServer, smtp: SmtpServer
) -> None:
    """Each `=?utf-8?q?...?=` spelling would be a throttle key of its own, while the mail
    library decodes them all to the one mailbox: they are refused, so its limit holds."""
    victim = "victim@example.com"
    first = server.client(new_user()).put("/mfa/email/enroll", json={"email": victim})
    assert first.status_code == 202
    problem(
        server.client(new_user()).put("/mfa/email/enroll", json={"email": victim}),
        429,
        "rate_limited",
    )
    local = "victim"  # each spelling escapes another letter of it
    spellings = [
        f"=?utf-8?q?{local[:i]}={ord(local[i]):02X}{local[i + 1 :]}?=@example.com"
        for i in range(len(local))
    ]

    for spelling in spellings:
        answered = server.client(new_user()).put("/mfa/email/enroll", json={"email": spelling})
        problem(answered, 400, "validation_error")

    assert [recipients for recipients, _ in smtp.messages] == [[victim]]


# ---------------------------------------------------------------- delivery failures


def test_an_sms_provider_error_is_a_502_and_the_code_it_carried_does_not_work(
    server: LiveServer, sms: SmsProvider
) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)
    sms.status = 500

    failed = client.post("/mfa/sms/send")

    body = problem(failed, 502, "delivery_failed")
    assert "could not be delivered" in body["detail"]
    leaked = sms.last_code()  # the provider saw it before failing
    sms.status = 200
    problem(client.post("/mfa/sms/verify", json={"code": leaked}), 403, "invalid_code")


def test_an_unreachable_smtp_server_is_a_502_and_leaves_no_code_usable(
    tmp_path: Path, database_url: str, start_server: Callable[..., LiveServer]
) -> None:
    closed_port = free_port()
    server = start_server(
        make_settings(tmp_path, database_url, MFA_SMTP_URL=f"smtp://127.0.0.1:{closed_port}")
    )
    user = new_user()
    client = server.client(user)

    failed = client.put("/mfa/email/enroll", json={"email": "dave@example.org"})

    problem(failed, 502, "delivery_failed")
    mfa = load_user(server.runtime.services, user)
    assert mfa is not None
    factor = mfa.oob_factor("email")
    assert factor is not None
    assert factor.codes == {}
    events = list(server.runtime.services.app.events.get(mfa.id))
    assert type(events[-1]) is UserMfa.EmailCodeVoided
    problem(client.post("/mfa/email/verify", json={"code": "000000"}), 403, "invalid_code")


def test_without_providers_the_code_is_logged_once_and_in_no_other_log_line(
    tmp_path: Path,
    database_url: str,
    start_server: Callable[..., LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_server(make_settings(tmp_path, database_url))
    root = logging.getLogger()
    if caplog.handler not in root.handlers:  # Litestar's logging config replaced them
        root.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    user = new_user()
    client = server.client(user)

    assert client.put("/mfa/sms/enroll", json={"phone_number": PHONE}).status_code == 202
    assert client.put("/mfa/email/enroll", json={"email": "erin@example.org"}).status_code == 202
    delivered = [r.getMessage() for r in caplog.records if r.name == "mfa.delivery.dev"]
    assert len(delivered) == 2
    codes = [code_in(line) for line in delivered]
    for code in codes:
        assert sum(code in r.getMessage() for r in caplog.records) == 1
    assert client.post("/mfa/sms/verify", json={"code": codes[0]}).status_code == 200
    assert client.post("/mfa/email/verify", json={"code": codes[1]}).status_code == 200
    lines = [r.getMessage() for r in caplog.records]
    assert not any(PHONE in line or "erin@example.org" in line for line in lines)
    for code in codes:
        assert sum(code in line for line in lines) == 1


# ---------------------------------------------------------------- challenge and step-up


def test_an_sms_challenge_steps_up_to_an_mfa_token_with_sms_in_amr(
    server: LiveServer, sms: SmsProvider
) -> None:
    user = new_user()
    client = server.client(user)
    enrol_sms(client, sms)
    server.clock.advance(60)

    opened = client.post("/mfa/challenge", json={"method": "sms"})

    assert opened.status_code == 201, opened.text
    challenge = opened.json()
    assert challenge["method"] == "sms"
    assert {"challenge_id", "expires_at"} <= set(challenge)
    code = sms.last_code()
    problem(
        client.post("/mfa/step-up", json={"challenge_id": challenge["challenge_id"]}),
        400,
        "validation_error",
    )
    stepped = client.post(
        "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "code": code}
    )
    assert stepped.status_code == 200, stepped.text
    body = stepped.json()
    assert body["acr"] == "urn:mfa:acr:mfa"
    assert "sms" in body["amr"]
    assert "mfa" in body["amr"]
    claims = verify_token(server, body["step_up_token"])
    assert (claims["sub"], claims["acr"], claims["amr"]) == (user, body["acr"], body["amr"])
    again = client.post(
        "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "code": code}
    )
    problem(again, 409, "challenge_used")


def test_an_email_challenge_earns_only_a_weak_token(server: LiveServer, smtp: SmtpServer) -> None:
    client = server.client(new_user())
    enrol_email(client, smtp, "frank@example.org")
    server.clock.advance(60)

    challenge = client.post("/mfa/challenge", json={"method": "email"}).json()
    stepped = client.post(
        "/mfa/step-up",
        json={
            "challenge_id": challenge["challenge_id"],
            "code": smtp.last_code("frank@example.org"),
        },
    )

    assert stepped.status_code == 200, stepped.text
    body = stepped.json()
    assert body["acr"] == "urn:mfa:acr:weak"
    assert "mfa" not in body["amr"]
    assert verify_token(server, body["step_up_token"])["acr"] == "urn:mfa:acr:weak"


def test_a_code_completes_only_what_asked_for_it(server: LiveServer, sms: SmsProvider) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)
    first = client.post("/mfa/challenge", json={"method": "sms"}).json()
    first_code = sms.last_code()
    server.clock.advance(60)
    second = client.post("/mfa/challenge", json={"method": "sms"}).json()
    second_code = sms.last_code()
    server.clock.advance(60)
    client.post("/mfa/sms/send")
    login_code = sms.last_code()

    problem(client.post("/mfa/sms/verify", json={"code": first_code}), 403, "invalid_code")
    cross = {"challenge_id": second["challenge_id"], "code": first_code}
    problem(client.post("/mfa/step-up", json=cross), 403, "invalid_code")
    with_login = {"challenge_id": first["challenge_id"], "code": login_code}
    problem(client.post("/mfa/step-up", json=with_login), 403, "invalid_code")

    own = {"challenge_id": second["challenge_id"], "code": second_code}
    assert client.post("/mfa/step-up", json=own).status_code == 200
    assert client.post("/mfa/sms/verify", json={"code": login_code}).status_code == 200


# ---------------------------------------------------------------- disable and primary


def test_disabling_forgets_the_factor_and_an_active_one_is_not_enrolled_over(
    server: LiveServer, sms: SmsProvider
) -> None:
    client = server.client(new_user())
    enrol_sms(client, sms)
    server.clock.advance(60)

    problem(
        client.put("/mfa/sms/enroll", json={"phone_number": OTHER_PHONE}), 409, "already_enrolled"
    )
    disabled = client.post("/mfa/sms/disable")
    assert disabled.status_code == 200
    assert disabled.json() == {"method": "sms", "enabled": False}
    assert methods_of(client)["sms"]["enabled"] is False
    problem(client.post("/mfa/sms/send"), 409, "not_enrolled")
    enrol_sms(client, sms, OTHER_PHONE)
    assert methods_of(client)["sms"]["enabled"] is True


def test_sms_can_be_the_primary_method(server: LiveServer, sms: SmsProvider) -> None:
    user = new_user()
    client = server.client(user)
    enrol_sms(client, sms)

    primary = client.post("/mfa/credentials/sms/primary")

    assert primary.status_code == 200
    assert primary.json() == {"credential_id": "sms", "method": "sms", "primary": True}
    status = client.get(f"/mfa/status/{user}").json()
    assert (status["primary_method"], status["primary_credential_id"]) == ("sms", "sms")
    assert client.delete("/mfa/methods/sms").status_code == 200
    assert client.get(f"/mfa/status/{user}").json()["primary_method"] is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_one_provider_configured_the_other_channel_is_not_offered_and_logs_no_code(
    tmp_path: Path,
    database_url: str,
    start_server: Callable[..., LiveServer],
    smtp: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each channel fell back to the development log on its own: with only SMTP configured,
    SMS codes went to the production log, where anyone reading it could enrol or step up."""
    server = start_server(
        make_settings(tmp_path, database_url, MFA_SMTP_URL=smtp.url, MFA_EMAIL_FROM="m@x.org")
    )
    client = server.client(new_user())
    with caplog.at_level(logging.DEBUG):
        refused = client.put("/mfa/sms/enroll", json={"phone_number": PHONE})
    problem(refused, 409, "conflict")
    assert not [r for r in caplog.records if r.name.startswith("mfa.delivery")]
    assert client.put("/mfa/email/enroll", json={"email": "someone@example.org"}).status_code == 202
    assert client.post("/mfa/challenge", json={"method": "sms"}).status_code == 409
    # apps can tell before trying: the method list says which methods the deployment offers
    listed = {m["method"]: m for m in client.get("/mfa/methods").json()["items"]}
    assert {name for name, m in listed.items() if not m["available"]} == {"sms"}
    assert listed["email"]["available"] is True
