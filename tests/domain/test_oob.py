"""SMS and email codes in the domain: enrolment, purposes, attempts, expiry, send limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import project_aggregate

from domain.challenge import ACR_WEAK, assurance
from domain.delivery_throttle import DeliveryThrottle, delivery_throttle_id
from domain.errors import (
    AlreadyEnrolledError,
    ConflictError,
    FactorLockedError,
    InvalidCodeError,
    NotEnrolledError,
    RateLimitedError,
)
from domain.oob_codes import (
    CHALLENGE,
    EMAIL,
    ENROLL,
    LOGIN,
    MAX_ENROLMENT_SENDS_PER_DESTINATION,
    MAX_SENDS_PER_DESTINATION,
    MAX_SENDS_PER_USER,
    SMS,
    NewOobCode,
    OobCode,
    destination_hint,
    hash_oob_code,
    next_send_at,
)
from domain.user_mfa import UserMfa, method_summaries

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = b"k" * 32
PHONE = "+14155550123"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_code(digits: str, n: int = 0) -> NewOobCode:
    salt = f"{n:032x}"
    return NewOobCode(f"code-{n}-{len(digits)}", salt, hash_oob_code(digits, salt, KEY))


def sent_enrolment(
    mfa: UserMfa,
    method: str,
    destination: str,
    code: NewOobCode,
    when: datetime,
    destination_next: datetime | None = None,
) -> OobCode:
    """Start an enrolment and record its code as delivered (only a sent code passes)."""
    issued = mfa.start_oob_enrolment(method, destination, code, when, destination_next)
    mfa.record_oob_delivery(method, issued.code_id, ENROLL, when)
    return issued


def sent_code(
    mfa: UserMfa, method: str, purpose: str, code: NewOobCode, when: datetime, **options: Any
) -> OobCode:
    """Issue a login or challenge code and record it as delivered."""
    issued = mfa.issue_oob_code(method, purpose, code, when, **options)
    mfa.record_oob_delivery(method, issued.code_id, purpose, when)
    return issued


def enrolled(method: str = SMS, destination: str = PHONE) -> UserMfa:
    """A user whose factor was confirmed at T0 (the next send is allowed from T0 + 60 s)."""
    mfa = UserMfa.start("user-1", uuid4(), T0)
    sent_enrolment(mfa, method, destination, new_code("111111"), T0)
    assert mfa.verify_oob_code(method, "111111", KEY, T0) == ENROLL
    return mfa


def test_an_enrolment_code_confirms_the_destination_and_activates_the_factor() -> None:
    mfa = UserMfa.start("user-1", uuid4(), T0)
    code = sent_enrolment(mfa, SMS, PHONE, new_code("123456"), T0)
    assert code.purpose == ENROLL
    assert code.expires_at == at(600)
    assert not mfa.is_enrolled(SMS)

    assert mfa.verify_oob_code(SMS, "123456", KEY, at(5)) == ENROLL

    factor = mfa.oob_factor(SMS)
    assert factor is not None
    assert factor.destination == PHONE
    assert factor.pending_destination is None
    assert factor.codes == {}
    assert mfa.is_enrolled(SMS)


def test_only_the_hash_of_a_code_is_kept() -> None:
    mfa = UserMfa.start("user-1", uuid4(), T0)
    code = sent_enrolment(mfa, SMS, PHONE, new_code("123456"), T0)
    assert "123456" not in repr(code)
    assert code.hash == hash_oob_code("123456", code.salt, KEY)
    assert code.hash != hash_oob_code("123456", code.salt, b"another key" * 3)


def test_a_wrong_code_counts_a_failure_and_says_how_many_attempts_remain() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))

    with pytest.raises(InvalidCodeError) as refused:
        mfa.verify_oob_code(SMS, "000000", KEY, at(61))

    assert refused.value.attempts_remaining == 4
    assert mfa.lock_for(SMS).failures == 1


def test_a_code_works_once() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    assert mfa.verify_oob_code(SMS, "222222", KEY, at(61)) == LOGIN

    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "222222", KEY, at(62))


def test_a_code_expires_after_ten_minutes() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))

    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "222222", KEY, at(60 + 600))

    last = mfa.pending_events[-1]
    assert isinstance(last, UserMfa.VerificationFailed)
    assert last.reason == "expired"


def test_a_code_is_void_after_five_wrong_attempts_even_once_the_lock_has_passed() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    for remaining in (4, 3, 2, 1, 0):
        with pytest.raises(InvalidCodeError) as refused:
            mfa.verify_oob_code(SMS, "000000", KEY, at(61))
        assert refused.value.attempts_remaining == remaining

    with pytest.raises(FactorLockedError):
        mfa.verify_oob_code(SMS, "222222", KEY, at(62))
    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "222222", KEY, at(62 + 60))


def test_a_new_code_does_not_reset_the_failure_count() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    for _ in range(3):
        with pytest.raises(InvalidCodeError):
            mfa.verify_oob_code(SMS, "000000", KEY, at(61))

    sent_code(mfa, SMS, LOGIN, new_code("333333", 1), at(121))
    with pytest.raises(InvalidCodeError) as refused:
        mfa.verify_oob_code(SMS, "000000", KEY, at(122))

    assert refused.value.attempts_remaining == 1
    assert mfa.verify_oob_code(SMS, "333333", KEY, at(123)) == LOGIN
    assert mfa.lock_for(SMS).failures == 0


def test_a_new_login_code_replaces_the_open_one() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    sent_code(mfa, SMS, LOGIN, new_code("333333", 1), at(120))

    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "222222", KEY, at(121))
    assert mfa.verify_oob_code(SMS, "333333", KEY, at(122)) == LOGIN


def test_a_challenge_code_passes_only_its_own_challenge_and_never_a_login() -> None:
    mfa = enrolled()
    mfa.issue_challenge("ch-a", SMS, at(60))
    sent_code(mfa, SMS, CHALLENGE, new_code("444444"), at(60), challenge_id="ch-a")
    mfa.issue_challenge("ch-b", SMS, at(120))

    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "444444", KEY, at(121))
    with pytest.raises(InvalidCodeError):
        mfa.accept_oob_challenge_code(SMS, "ch-b", "444444", KEY, at(121))
    accepted = mfa.accept_oob_challenge_code(SMS, "ch-a", "444444", KEY, at(122))
    assert accepted.challenge_id == "ch-a"


def test_a_login_code_cannot_complete_a_challenge() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    mfa.issue_challenge("ch-a", SMS, at(60))

    with pytest.raises(InvalidCodeError):
        mfa.accept_oob_challenge_code(SMS, "ch-a", "222222", KEY, at(61))


def test_an_enrolment_code_cannot_pass_a_challenge() -> None:
    mfa = UserMfa.start("user-1", uuid4(), T0)
    sent_enrolment(mfa, SMS, PHONE, new_code("111111"), T0)

    with pytest.raises(NotEnrolledError):
        mfa.accept_oob_challenge_code(SMS, "ch-a", "111111", KEY, at(1))


def test_a_code_whose_delivery_failed_is_void() -> None:
    mfa = enrolled()
    code = mfa.issue_oob_code(SMS, LOGIN, new_code("222222"), at(60))
    mfa.record_oob_delivery(SMS, code.code_id, LOGIN, at(61), failure="delivery_failed")

    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "222222", KEY, at(62))


def test_a_delivered_code_records_when_it_was_sent() -> None:
    mfa = enrolled()
    code = mfa.issue_oob_code(SMS, LOGIN, new_code("222222"), at(60))
    mfa.record_oob_delivery(SMS, code.code_id, LOGIN, at(61))
    assert code.sent_at == at(61)


def test_sends_wait_sixty_seconds_between_them() -> None:
    mfa = enrolled()

    with pytest.raises(RateLimitedError) as limited:
        sent_code(mfa, SMS, LOGIN, new_code("222222"), at(30))

    assert limited.value.retry_after_s == 30
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))


def test_a_user_gets_at_most_five_codes_an_hour() -> None:
    mfa = enrolled()  # the enrolment code was the first send, at T0
    for n in range(1, MAX_SENDS_PER_USER):
        sent_code(mfa, SMS, LOGIN, new_code("222222", n), at(60 * n))

    with pytest.raises(RateLimitedError) as limited:
        sent_code(mfa, SMS, LOGIN, new_code("222222", 9), at(60 * MAX_SENDS_PER_USER))

    assert limited.value.retry_after_s == 3600 - 60 * MAX_SENDS_PER_USER
    sent_code(mfa, SMS, LOGIN, new_code("222222", 10), at(3600))


def test_the_send_limits_of_sms_and_email_are_separate() -> None:
    mfa = enrolled(SMS)
    sent_enrolment(mfa, EMAIL, "a@example.com", new_code("555555"), at(1))
    assert mfa.oob_factor(EMAIL) is not None


def test_a_locked_factor_sends_nothing() -> None:
    mfa = enrolled()
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    for _ in range(5):
        with pytest.raises(InvalidCodeError):
            mfa.verify_oob_code(SMS, "000000", KEY, at(61))

    with pytest.raises(FactorLockedError):
        sent_code(mfa, SMS, LOGIN, new_code("333333"), at(80))


def test_a_destination_s_limit_comes_in_from_its_throttle() -> None:
    mfa = enrolled()
    with pytest.raises(RateLimitedError) as limited:
        sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60), destination_next=at(900))
    assert limited.value.retry_after_s == 840
    assert not mfa.pending_events[-1].__class__.__name__.endswith("CodeIssued")


def test_the_throttle_counts_sends_to_one_destination_across_users() -> None:
    throttle = DeliveryThrottle.start(uuid4(), T0)
    for n in range(MAX_SENDS_PER_DESTINATION):
        assert throttle.next_send_at(at(61 * n)) is None
        throttle.record_send(at(61 * n))

    blocked_at = at(61 * MAX_SENDS_PER_DESTINATION)
    assert throttle.next_send_at(blocked_at) == at(3600)
    assert throttle.next_send_at(at(3600)) is None


def test_the_throttle_s_events_hold_only_times_and_are_stored_in_clear() -> None:
    throttle = DeliveryThrottle.start(uuid4(), T0)
    throttle.record_send(T0)
    for event in throttle.pending_events:
        assert type(event).STORED_IN_CLEAR
        fields = set(vars(event)) - {"originator_id", "originator_version", "timestamp"}
        assert fields <= {"originator_topic", "enrolment"}


def test_enrolments_to_one_destination_cannot_use_up_what_its_owners_logins_need() -> None:
    throttle = DeliveryThrottle.start(uuid4(), T0)
    for n in range(MAX_ENROLMENT_SENDS_PER_DESTINATION):
        assert throttle.next_send_at(at(61 * n), enrolment=True) is None
        throttle.record_send(at(61 * n), enrolment=True)

    later = at(61 * MAX_ENROLMENT_SENDS_PER_DESTINATION)
    assert throttle.next_send_at(later, enrolment=True) == at(3600)
    assert throttle.next_send_at(later) is None  # a login code to the verified owner still goes


def test_throttle_ids_are_keyed_hashes_of_the_destination() -> None:
    one = delivery_throttle_id(SMS, PHONE, KEY)
    assert one == delivery_throttle_id(SMS, PHONE, KEY)
    assert one != delivery_throttle_id(SMS, PHONE, b"x" * 32)
    assert one != delivery_throttle_id(SMS, "+14155550124", KEY)
    assert PHONE.strip("+") not in str(one).replace("-", "")


def test_next_send_at_takes_the_later_of_cooldown_and_cap() -> None:
    sends = [at(0), at(100), at(200)]
    assert next_send_at(sends, at(230), limit=3) == at(3600)
    assert next_send_at(sends, at(230), limit=10) == at(260)
    assert next_send_at(sends, at(3600), limit=3) is None


def test_an_active_factor_must_be_disabled_before_another_destination_is_enrolled() -> None:
    mfa = enrolled()
    with pytest.raises(AlreadyEnrolledError):
        sent_enrolment(mfa, SMS, "+14155550124", new_code("666666"), at(120))

    mfa.remove_method(SMS, at(121))
    assert mfa.oob_factor(SMS) is None
    sent_enrolment(mfa, SMS, "+14155550124", new_code("666666"), at(122))


def test_removing_the_factor_keeps_the_send_limits() -> None:
    mfa = enrolled()
    mfa.remove_method(SMS, at(1))
    with pytest.raises(RateLimitedError):
        sent_enrolment(mfa, SMS, PHONE, new_code("666666"), at(2))


def test_a_pending_enrolment_is_replaced_by_a_new_one_and_its_code_stops_working() -> None:
    mfa = UserMfa.start("user-1", uuid4(), T0)
    sent_enrolment(mfa, SMS, PHONE, new_code("111111"), T0)
    sent_enrolment(mfa, SMS, "+14155550124", new_code("222222", 1), at(60))

    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "111111", KEY, at(61))
    mfa.verify_oob_code(SMS, "222222", KEY, at(62))
    factor = mfa.oob_factor(SMS)
    assert factor is not None
    assert factor.destination == "+14155550124"


def test_email_is_listed_as_a_weak_factor_and_alone_does_not_turn_mfa_on() -> None:
    mfa = enrolled(EMAIL, "alice@example.com")

    email = next(m for m in mfa.methods() if m.method == EMAIL)
    assert email.enabled
    assert email.details["strength"] == "weak"
    assert email.details["destination_hint"] == "a***@example.com"
    assert not mfa.mfa_enabled()
    assert assurance(EMAIL).acr == ACR_WEAK
    assert "mfa" not in assurance(EMAIL).amr


def test_someone_who_never_enrolled_still_sees_email_listed_as_weak() -> None:
    listed = {m.method: m for m in method_summaries(None)}
    assert listed[EMAIL].details == {"strength": "weak"}
    assert listed[SMS].details == {"strength": "standard"}
    assert not listed[EMAIL].enabled


def test_sms_turns_mfa_on_and_can_be_the_primary_method() -> None:
    mfa = enrolled(SMS)

    sms = next(m for m in mfa.methods() if m.method == SMS)
    assert (sms.enabled, sms.credentials, sms.details["status"]) == (True, 1, "active")
    assert sms.details["destination_hint"].endswith("23")
    assert PHONE not in str(sms.details)
    assert mfa.mfa_enabled()
    assert mfa.set_primary(SMS, at(1)) == SMS
    mfa.remove_method(SMS, at(2))
    assert mfa.primary_method is None


def test_a_pending_factor_cannot_be_primary() -> None:
    mfa = UserMfa.start("user-1", uuid4(), T0)
    sent_enrolment(mfa, SMS, PHONE, new_code("111111"), T0)
    with pytest.raises(ConflictError):
        mfa.set_primary(SMS, at(1))


def test_a_reset_forgets_the_factors() -> None:
    mfa = enrolled(SMS)
    assert mfa.reset_all("admin", "lost phone", at(1)) == [SMS]
    assert mfa.oob_factor(SMS) is None
    assert not mfa.is_enrolled(SMS)


def test_the_state_replays_from_the_events() -> None:
    mfa = enrolled(SMS)
    sent_code(mfa, SMS, LOGIN, new_code("222222"), at(60))
    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "000000", KEY, at(61))

    replayed = project_aggregate(None, mfa.collect_events())
    assert replayed is not None
    assert replayed.oob_factors == mfa.oob_factors
    assert replayed.oob_sends == mfa.oob_sends
    assert replayed.locks == mfa.locks


def test_destination_hints_show_little() -> None:
    assert destination_hint(SMS, PHONE) == "**********23"
    assert destination_hint(EMAIL, "bob@example.org") == "b***@example.org"


def test_a_code_passes_only_once_it_is_recorded_as_sent() -> None:
    """The provider may take a message and answer an error afterwards (the code is voided
    then), and a crash may come between issuing and sending: until `CodeSent` is recorded the
    code passes nothing, not even the enrolment it was issued for."""
    mfa = UserMfa.start("user-1", uuid4(), T0)
    code = mfa.start_oob_enrolment(SMS, PHONE, new_code("111111"), T0)
    with pytest.raises(InvalidCodeError):
        mfa.verify_oob_code(SMS, "111111", KEY, at(1))
    assert not mfa.is_enrolled(SMS)
    mfa.record_oob_delivery(SMS, code.code_id, ENROLL, at(2))
    assert mfa.verify_oob_code(SMS, "111111", KEY, at(3)) == ENROLL


def test_a_send_stamped_ahead_by_another_instances_clock_still_holds_the_next_one_back() -> None:
    """Instances' clocks differ a little: a send recorded 0.5 s 'in the future' was ignored,
    and two instances could send at once."""
    assert next_send_at([at(0.5)], at(0), MAX_SENDS_PER_USER) == at(60.5)
    assert next_send_at([at(0.5)], at(0), 1) == at(3600.5)


def test_an_enrolments_answer_depends_on_no_login_code_of_the_destination() -> None:
    throttle = DeliveryThrottle.start(uuid4(), T0)
    throttle.record_send(at(0))  # its owner's login code
    assert throttle.next_send_at(at(5)) == at(60)
    assert throttle.next_send_at(at(5), enrolment=True) is None
    throttle.record_send(at(10), enrolment=True)
    assert throttle.next_send_at(at(15), enrolment=True) == at(70)


def test_a_destinations_limit_is_concealed_from_an_enrolment_and_the_users_own_comes_first() -> (
    None
):
    mfa = UserMfa.start("user-1", uuid4(), T0)
    with pytest.raises(RateLimitedError) as concealed:
        mfa.start_oob_enrolment(SMS, PHONE, new_code("111111"), at(5), destination_next=at(60))
    assert concealed.value.retry_after_s == 3600
    sent_enrolment(mfa, SMS, "+14155550124", new_code("222222", 1), at(10))
    with pytest.raises(RateLimitedError) as own:
        mfa.start_oob_enrolment(SMS, PHONE, new_code("111111"), at(20), destination_next=at(900))
    assert own.value.retry_after_s == 50  # the user's own cooldown, not the destination's
