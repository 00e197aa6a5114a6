"""SMS and email commands on a real SQLite store, with recording senders standing in for the
providers: what is saved, what is sent, what happens when delivery fails or requests race."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from commands import destinations, oob
from commands.app import ConcurrencyConflictError, load_user
from commands.ports import DeliveryError
from domain.delivery_throttle import DeliveryThrottle
from domain.errors import (
    DeliveryFailedError,
    FactorLockedError,
    InvalidCodeError,
    RateLimitedError,
)
from domain.oob_codes import EMAIL, ENROLL, LOGIN, MAX_SENDS_PER_DESTINATION, SMS
from domain.user_mfa import UserMfa
from projections.audit import user_history
from projections.public_events import PUBLIC_EVENTS, to_public

if TYPE_CHECKING:
    from tests.commands.conftest import Store

USER = "alice.liddell@example.org"
PHONE = "+14155550123"
EMAIL_ADDRESS = "alice.mail@example.org"
REFUSALS = (InvalidCodeError, FactorLockedError, ConcurrencyConflictError)


class RecordingSender:
    """Keeps every message; fails when told to."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.fail = False
        self._lock = threading.Lock()

    def send_sms(self, to: str, body: str) -> None:
        self._record({"to": to, "body": body})

    def send_email(self, to: str, subject: str, body: str) -> None:
        self._record({"to": to, "subject": subject, "body": body})

    def _record(self, message: dict[str, str]) -> None:
        with self._lock:
            self.messages.append(message)
        if self.fail:
            raise DeliveryError("provider down")

    def last_code(self) -> str:
        match = re.search(r"\b(\d{6})\b", self.messages[-1]["body"])
        assert match, self.messages[-1]
        return match.group(1)


@pytest.fixture
def sender(store: Store) -> RecordingSender:
    recording = RecordingSender()
    store.services.sms_sender = recording
    store.services.email_sender = recording
    return recording


def enrolled(store: Store, sender: RecordingSender, user: str = USER, method: str = SMS) -> None:
    destination = PHONE if method == SMS else EMAIL_ADDRESS
    oob.enrol(store.services, user, method, destination)
    assert oob.verify(store.services, user, method, sender.last_code()).value == ENROLL
    store.clock.advance(61)


def test_enrolment_sends_a_code_to_the_normalised_number_and_the_code_confirms_it(
    store: Store, sender: RecordingSender
) -> None:
    sent = oob.enrol(store.services, USER, SMS, "+1 (415) 555-0123").value

    assert sender.messages[-1]["to"] == PHONE
    assert sent.purpose == ENROLL
    assert sent.destination_hint.endswith("23")
    assert oob.verify(store.services, USER, SMS, sender.last_code()).value == ENROLL
    mfa = store.load(USER)
    assert mfa.is_enrolled(SMS)
    kinds = [type(e) for e in store.app.events.get(store.aggregate_id(USER))]
    assert kinds == [
        UserMfa.Created,
        UserMfa.SmsEnrolmentStarted,
        UserMfa.SmsCodeIssued,
        UserMfa.SmsCodeSent,
        UserMfa.SmsEnrolled,
    ]


def test_email_addresses_are_normalised_and_mail_carries_a_subject(
    store: Store, sender: RecordingSender
) -> None:
    oob.enrol(store.services, USER, EMAIL, "Alice.Mail@EXAMPLE.org")
    assert sender.messages[-1]["to"] == "Alice.Mail@example.org"
    assert sender.messages[-1]["subject"] == "Confirm your email address"
    assert destinations.normalise_email("joe@Bücher.de") == "joe@xn--bcher-kva.de"


def test_a_failed_delivery_voids_the_code_and_says_so(
    store: Store, sender: RecordingSender
) -> None:
    enrolled(store, sender)
    sender.fail = True

    with pytest.raises(DeliveryFailedError):
        oob.send_login_code(store.services, USER, SMS)

    code = sender.last_code()  # the provider saw it, yet it must not work
    events = list(store.app.events.get(store.aggregate_id(USER)))
    assert type(events[-1]) is UserMfa.SmsCodeVoided
    assert events[-1].reason == "delivery_failed"
    with pytest.raises(InvalidCodeError):
        oob.verify(store.services, USER, SMS, code)


def test_twenty_users_enrolling_one_number_at_once_get_one_message_through(
    store: Store, sender: RecordingSender
) -> None:
    barrier = threading.Barrier(20)

    def attempt(n: int) -> Any:
        barrier.wait()
        try:
            return oob.enrol(store.services, f"user-{n}@example.org", SMS, PHONE)
        except (RateLimitedError, ConcurrencyConflictError) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(attempt, range(20)))

    refused = [r for r in results if isinstance(r, Exception)]
    assert len(results) - len(refused) == 1
    assert len(sender.messages) == 1
    assert all(isinstance(r, RateLimitedError) for r in refused), refused


def test_twenty_concurrent_uses_of_one_code_let_exactly_one_through(
    store: Store, sender: RecordingSender
) -> None:
    enrolled(store, sender)
    oob.send_login_code(store.services, USER, SMS)
    code = sender.last_code()
    barrier = threading.Barrier(20)

    def attempt(_: int) -> Any:
        barrier.wait()
        try:
            return oob.verify(store.services, USER, SMS, code).value
        except REFUSALS as exc:
            return exc

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(attempt, range(20)))

    assert results.count(LOGIN) == 1
    assert all(isinstance(r, REFUSALS) for r in results if r != LOGIN)
    accepted = [
        e
        for e in store.app.events.get(store.aggregate_id(USER))
        if type(e) is UserMfa.SmsCodeAccepted
    ]
    assert len(accepted) == 1


def test_a_delivery_that_ends_after_an_erasure_records_nothing_in_the_users_next_state(
    store: Store,
) -> None:
    """The provider took its time; the user was erased and began again meanwhile: the old
    code's `code_sent` landed, readable, in the new aggregate, which never issued it."""
    from commands import backup_codes
    from commands.adapters.epochs import SqlUserEpochs
    from commands.erase import erase_user
    from infra.sql import SqliteDatabase

    db = SqliteDatabase(store.db_path)
    store._opened.append(db)
    store.services.epochs = SqlUserEpochs(db, b"e" * 32)
    backup_codes.generate_backup_codes(store.services, USER)

    class ErasedMidDelivery(RecordingSender):
        def send_sms(self, to: str, body: str) -> None:
            super().send_sms(to, body)
            erase_user(store.services, USER)
            backup_codes.generate_backup_codes(store.services, USER)  # the user's next state

    store.services.sms_sender = ErasedMidDelivery()
    oob.enrol(store.services, USER, SMS, PHONE)

    topics = [type(e).TOPIC for e in store.app.events.get(store.aggregate_id(USER))]
    assert topics == ["mfa.user.created.v1", "mfa.backup_codes.generated.v1"], topics


def test_the_per_destination_cap_holds_across_users(store: Store, sender: RecordingSender) -> None:
    users = [f"user-{n}@example.org" for n in range(3)]
    for user in users:  # three enrolments: the number's whole enrolment budget
        enrolled(store, sender, user)
    with pytest.raises(RateLimitedError):
        oob.enrol(store.services, "stranger@example.org", SMS, PHONE)
    for n in range(MAX_SENDS_PER_DESTINATION - len(users)):
        oob.send_login_code(store.services, users[n % len(users)], SMS)
        store.clock.advance(61)

    with pytest.raises(RateLimitedError) as limited:
        oob.send_login_code(store.services, users[2], SMS)

    assert limited.value.retry_after_s == 3600 - 61 * MAX_SENDS_PER_DESTINATION
    assert len(sender.messages) == MAX_SENDS_PER_DESTINATION
    oob.enrol(store.services, "stranger@example.org", SMS, "+14155550124")


def test_the_per_destination_cap_ignores_case_and_plus_tags_of_email_addresses(
    store: Store, sender: RecordingSender
) -> None:
    oob.enrol(store.services, "user-1", EMAIL, "bob@example.org")
    with pytest.raises(RateLimitedError):
        oob.enrol(store.services, "user-2", EMAIL, "BOB+mfa@Example.org")


@pytest.mark.parametrize("spelling", ["j.o.e@gmail.com", "JOE@googlemail.com", "j.oe+x@gmail.com"])
def test_the_per_destination_cap_counts_every_gmail_spelling_of_one_mailbox(
    store: Store, sender: RecordingSender, spelling: str
) -> None:
    """Gmail ignores dots and answers for googlemail.com too: 2^(n-1) spellings of one inbox
    were each a fresh allowance. The mail still goes to the address as the user gave it."""
    oob.enrol(store.services, "user-1", EMAIL, "joe@gmail.com")
    with pytest.raises(RateLimitedError):
        oob.enrol(store.services, "user-2", EMAIL, spelling)
    oob.enrol(store.services, "user-3", EMAIL, "j.oe@example.org")  # elsewhere dots count
    assert sender.messages[-1]["to"] == "j.oe@example.org"


def test_addresses_whose_name_starts_with_a_plus_are_not_one_mailbox(
    store: Store, sender: RecordingSender
) -> None:
    """`+a@d` has no name before a tag: it was counted as `@d`, one allowance for all such
    addresses of a domain."""
    oob.enrol(store.services, "user-1", EMAIL, "+a@example.org")
    oob.enrol(store.services, "user-2", EMAIL, "+b@example.org")


def test_no_code_and_no_phone_number_or_address_is_stored_in_clear(
    store: Store, sender: RecordingSender
) -> None:
    enrolled(store, sender, method=SMS)
    enrolled(store, sender, method=EMAIL)
    oob.send_login_code(store.services, USER, SMS)
    codes = [re.search(r"\d{6}", m["body"]).group(0) for m in sender.messages]  # type: ignore[union-attr]

    raw = store.raw_files()

    for secret in [PHONE, PHONE[1:], EMAIL_ADDRESS, *codes]:
        assert secret.encode() not in raw, secret


def test_auditors_see_neither_the_destination_nor_the_code_hash(
    store: Store, sender: RecordingSender
) -> None:
    enrolled(store, sender)
    history = str(user_history(store.app, store.aggregate_id(USER)))
    assert PHONE not in history
    assert "'destination': '***'" in history
    assert "'hash': '***'" in history


def test_public_events_say_what_happened_and_nothing_more(
    store: Store, sender: RecordingSender
) -> None:
    enrolled(store, sender)
    oob.send_login_code(store.services, USER, SMS)
    oob.verify(store.services, USER, SMS, sender.last_code())

    events = list(store.app.events.get(store.aggregate_id(USER)))
    published = [to_public(e, USER) for e in events if type(e) in PUBLIC_EVENTS]
    types = [m.type for m in published]
    assert types == [
        "mfa.user.created",
        "mfa.sms.enrolment_started",
        "mfa.sms.code_sent",
        "mfa.sms.enrolled",
        "mfa.sms.code_sent",
        "mfa.sms.code_accepted",
    ]
    assert [m.data for m in published if m.type == "mfa.sms.code_sent"] == [
        {"purpose": ENROLL},
        {"purpose": LOGIN},
    ]
    text = str([m.data for m in published])
    assert PHONE not in text
    assert not re.search(r"\d{6}", text)


def test_users_with_snapshots_keep_their_factor_and_throttles_have_snapshots_too(
    store: Store, sender: RecordingSender
) -> None:
    enrolled(store, sender)
    store.app.take_snapshot(store.aggregate_id(USER))
    throttle_id = oob.throttle_id(store.services, SMS, PHONE)
    store.app.take_snapshot(throttle_id)

    fresh = store.open()
    mfa = load_user(fresh, USER)
    assert mfa is not None
    assert mfa.is_enrolled(SMS)
    assert mfa.oob_factors == store.load(USER).oob_factors
    throttle: DeliveryThrottle = fresh.app.repository.get(throttle_id)
    assert len(throttle.sends) == 1
    assert not any(PHONE.encode() in row[3] for row in store.rows("stored_snapshots"))


def test_six_digit_codes_come_from_the_injected_random_source(store: Store) -> None:
    codes = {oob.six_digits(store.random) for _ in range(200)}
    assert all(re.fullmatch(r"\d{6}", c) for c in codes)
    assert len(codes) > 190


def test_an_enrolment_code_says_it_adds_the_destination_and_a_login_code_that_it_signs_in(
    store: Store, sender: RecordingSender
) -> None:
    """The same words for both let someone who enrolled a victim's number pass the code off
    as the victim's own sign-in code, and have it read out."""
    for method, destination, target in ((SMS, PHONE, "phone"), (EMAIL, EMAIL_ADDRESS, "")):
        oob.enrol(store.services, USER, method, destination)
        enrolment = sender.messages[-1]
        target = target or "email address"
        assert f"code to add this {target} to an account" in enrolment["body"]
        assert "sign-in" not in enrolment["body"]
        assert oob.verify(store.services, USER, method, sender.last_code()).value == ENROLL
        store.clock.advance(61)
        oob.send_login_code(store.services, USER, method)
        login = sender.messages[-1]
        assert "sign-in code" in login["body"]
        assert "add this" not in login["body"]
        assert login["body"].startswith(sender.last_code())
    assert sender.messages[-1]["subject"] == "Your sign-in code"


@pytest.mark.parametrize("purpose", [ENROLL, "login", "challenge"])
def test_an_sms_fits_one_message_with_the_longest_issuer(purpose: str) -> None:
    """Over 160 characters an SMS goes out in parts: charged twice, and some carriers deliver
    them out of order."""
    body = oob.message_text("I" * 64, "123456", 10, SMS, purpose)  # MFA_TOTP_ISSUER: <= 64
    assert len(body) <= 160, (len(body), body)
    assert body.startswith("123456 ")
