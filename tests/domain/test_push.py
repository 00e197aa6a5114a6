"""Push rules: throttle, fraud reports, challenge lifecycle (pure domain, injected time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import (
    ChallengeExpiredError,
    ChallengeUsedError,
    InvalidCodeError,
    NotEnrolledError,
    RateLimitedError,
)
from domain.push_challenge import APPROVED, DENIED, EXPIRED, PENDING, PushChallenge
from domain.user_mfa import UserMfa

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def user_with_device() -> UserMfa:
    mfa = UserMfa.start("alice", uuid4(), NOW)
    mfa.sync_push_device(
        device_id="phone",
        name="Phone",
        platform="android",
        push_token="t",
        public_key="k" * 43,
        app_version="1",
        at=NOW,
    )
    return mfa


def challenge(expires_in: int = 120) -> PushChallenge:
    return PushChallenge.open(
        uuid4(),
        user_aggregate_id=uuid4(),
        user_id="alice",
        number="42",
        device_ids=["phone"],
        context={},
        expires_at=NOW + timedelta(seconds=expires_in),
        at=NOW,
    )


def test_a_push_needs_a_registered_device() -> None:
    with pytest.raises(NotEnrolledError):
        UserMfa.start("bob", uuid4(), NOW).request_push("c", NOW)


def test_more_than_three_unanswered_pushes_are_refused_until_one_expires() -> None:
    mfa = user_with_device()
    for n in range(3):
        mfa.request_push(f"c{n}", NOW)
    with pytest.raises(RateLimitedError) as refused:
        mfa.request_push("c3", NOW + timedelta(seconds=10))
    assert refused.value.retry_after_s == 110
    mfa.resolve_push("c0", APPROVED, NOW + timedelta(seconds=11))
    mfa.request_push("c3", NOW + timedelta(seconds=12))


def test_more_than_five_pushes_in_ten_minutes_are_refused() -> None:
    mfa = user_with_device()
    for n in range(5):
        at = NOW + timedelta(minutes=2 * n)
        mfa.request_push(f"c{n}", at)
        mfa.resolve_push(f"c{n}", DENIED, at)
    with pytest.raises(RateLimitedError) as refused:
        mfa.request_push("c5", NOW + timedelta(minutes=9))
    assert refused.value.retry_after_s == 60
    mfa.request_push("c5", NOW + timedelta(minutes=10, seconds=1))


def test_fraud_reports_count_for_thirty_days() -> None:
    mfa = user_with_device()
    mfa.report_fraud("c1", "phone", NOW)
    assert mfa.recent_fraud_reports(NOW + timedelta(days=29)) == 1
    assert mfa.recent_fraud_reports(NOW + timedelta(days=31)) == 0


def test_a_challenge_is_pending_then_expired_by_time_alone() -> None:
    push = challenge()
    assert push.status_at(NOW + timedelta(seconds=119)) == PENDING
    assert push.status_at(NOW + timedelta(seconds=120)) == EXPIRED
    with pytest.raises(ChallengeExpiredError):
        push.approve("phone", "42", True, NOW + timedelta(seconds=121))


def test_three_rejected_responses_deny_the_challenge() -> None:
    push = challenge()
    for remaining in (2, 1):
        with pytest.raises(InvalidCodeError) as rejected:
            push.approve("phone", "41", True, NOW)
        assert rejected.value.attempts_remaining == remaining
    with pytest.raises(InvalidCodeError):
        push.approve("phone", "42", False, NOW)
    assert push.status_at(NOW) == DENIED
    with pytest.raises(ChallengeUsedError):
        push.approve("phone", "42", True, NOW)


def test_an_unknown_device_cannot_answer_and_a_not_me_denial_is_fraud() -> None:
    push = challenge()
    with pytest.raises(InvalidCodeError):
        push.deny("laptop", "not_me", True, NOW)
    assert push.deny("phone", "not_me", True, NOW) is True
    assert push.status_at(NOW) == DENIED
    assert push.reason == "not_me"
