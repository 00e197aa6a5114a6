"""The UserMfa aggregate: TOTP, backup codes, lockout, methods, and replay from events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import project_aggregate

from domain.backup_codes import format_backup_code, hash_backup_code
from domain.challenge import CHALLENGE_TTL, assurance
from domain.errors import (
    AlreadyEnrolledError,
    ChallengeExpiredError,
    ChallengeUsedError,
    CodeReplayedError,
    ConflictError,
    FactorLockedError,
    InvalidCodeError,
    LimitExceededError,
    NotEnrolledError,
    NotFoundError,
)
from domain.lockout import MAX_CONSECUTIVE_FAILURES
from domain.totp import MAX_TOTP_DEVICES, PENDING_TOTP_TTL, TotpStatus
from domain.trusted_devices import KEPT_TRUSTED_DEVICES, MAX_TRUSTED_DEVICES, hash_device_token
from domain.user_mfa import KNOWN_METHODS, UserMfa, method_summaries
from domain.webauthn import CEREMONY_TTL, MAX_WEBAUTHN_CREDENTIALS, VerifiedRegistration

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
STEP0 = int(T0.timestamp()) // 30
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_user(user_id: str = "user-1") -> UserMfa:
    return UserMfa.start(user_id, uuid4(), T0)


def register(mfa: UserMfa, device_id: str = "dev-a", name: str | None = None, when=T0) -> None:
    mfa.register_totp_device(
        device_id=device_id,
        name=name or f"phone {device_id}",
        secret=SECRET,
        digits=6,
        period=30,
        algorithm="SHA1",
        at=when,
    )


def with_active_device(device_id: str = "dev-a") -> UserMfa:
    mfa = new_user()
    register(mfa, device_id)
    mfa.verify_totp_device(device_id, STEP0, T0)
    return mfa


def backup_codes(seed: int = 0) -> tuple[list[str], list[tuple[str, str]]]:
    codes = [
        format_backup_code(bytes([0xA0 + seed, i, 0x5C, 0x3E, seed, 0x77, i, 0x11]))
        for i in range(10)
    ]
    salts = [bytes([seed, i, 0xC3] * 5 + [1]).hex() for i in range(10)]
    hashed = [(salt, hash_backup_code(code, salt)) for code, salt in zip(codes, salts, strict=True)]
    return codes, hashed


def with_backup_codes(seed: int = 0) -> tuple[UserMfa, list[str]]:
    mfa = new_user()
    codes, hashed = backup_codes(seed)
    mfa.generate_backup_codes(f"set-{seed}", hashed, T0)
    return mfa, codes


def new_events(mfa: UserMfa) -> list[Any]:
    """The events recorded since the last call (they are collected, as a save would)."""
    return list(mfa.collect_events())


def fail_otp(mfa: UserMfa, times: int, when: datetime) -> list[InvalidCodeError]:
    errors = []
    for _ in range(times):
        with pytest.raises(InvalidCodeError) as raised:
            mfa.accept_totp({}, when)
        errors.append(raised.value)
    return errors


def state(mfa: UserMfa) -> dict[str, Any]:
    return {key: value for key, value in vars(mfa).items() if key != "_pending_events"}


# ---------------------------------------------------------------- register / verify


def test_a_new_user_has_no_factor_and_mfa_is_off():
    mfa = new_user()

    assert mfa.user_id == "user-1"
    assert mfa.totp_devices == {}
    assert mfa.backup_codes is None
    assert not mfa.mfa_enabled()
    assert [type(e) for e in new_events(mfa)] == [UserMfa.Created]


def test_a_registered_device_is_pending_until_its_first_valid_code():
    mfa = new_user()

    register(mfa, "dev-a")

    device = mfa.totp_device("dev-a")
    assert device.status == TotpStatus.PENDING
    assert device.secret == SECRET
    assert device.last_timecode is None
    assert mfa.active_totp_devices() == []
    assert not mfa.mfa_enabled()


def test_verifying_with_a_matched_time_step_activates_the_device():
    mfa = new_user()
    register(mfa, "dev-a")
    new_events(mfa)

    mfa.verify_totp_device("dev-a", STEP0, at(5))

    device = mfa.totp_device("dev-a")
    assert device.status == TotpStatus.ACTIVE
    assert device.verified_at == at(5)
    assert device.last_timecode == STEP0
    assert mfa.mfa_enabled()
    assert [type(e) for e in new_events(mfa)] == [UserMfa.TotpDeviceVerified]


def test_verifying_with_a_wrong_code_counts_a_failure_and_keeps_the_device_pending():
    mfa = new_user()
    register(mfa, "dev-a")
    new_events(mfa)

    with pytest.raises(InvalidCodeError) as raised:
        mfa.verify_totp_device("dev-a", None, T0)

    assert raised.value.attempts_remaining == MAX_CONSECUTIVE_FAILURES - 1
    assert mfa.totp_device("dev-a").status == TotpStatus.PENDING
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.VerificationFailed]
    assert (events[0].factor, events[0].reason, events[0].credential_id) == (
        "otp",
        "wrong_code",
        "dev-a",
    )


def test_verifying_an_already_active_device_is_refused():
    mfa = with_active_device("dev-a")

    with pytest.raises(AlreadyEnrolledError):
        mfa.verify_totp_device("dev-a", STEP0 + 1, at(30))


def test_verifying_an_unknown_device_is_not_found():
    mfa = new_user()

    with pytest.raises(NotFoundError):
        mfa.verify_totp_device("nope", STEP0, T0)


def test_the_newest_pending_device_is_the_one_a_bare_verify_applies_to():
    mfa = new_user()
    register(mfa, "dev-old", when=T0)
    register(mfa, "dev-new", when=at(60))

    assert mfa.newest_pending_totp_device(at(120)).device_id == "dev-new"


def test_a_bare_verify_applies_to_the_device_set_up_last_even_at_the_same_time():
    """Two set-ups at one clock reading (or by instances whose clocks differ) made the code
    of the QR code just scanned fail against the older device, and count as a failure."""
    mfa = new_user()
    register(mfa, "dev-old", when=T0)
    register(mfa, "dev-new", when=T0)

    assert mfa.newest_pending_totp_device(T0).device_id == "dev-new"


def test_without_a_pending_device_a_bare_verify_is_not_enrolled():
    mfa = with_active_device("dev-a")

    with pytest.raises(NotEnrolledError):
        mfa.newest_pending_totp_device(T0)


def test_a_set_up_not_verified_within_the_hour_can_no_longer_be_verified():
    """Its secret, shown once, may have been seen by someone else since: 410, not a code
    check (and no failure counted)."""
    mfa = new_user()
    register(mfa, "dev-a", when=T0)
    late = T0 + PENDING_TOTP_TTL
    assert mfa.totp_devices["dev-a"].expires_at == late

    with pytest.raises(ChallengeExpiredError):
        mfa.verify_totp_device("dev-a", int(late.timestamp()) // 30, late)
    with pytest.raises(ChallengeExpiredError):
        mfa.newest_pending_totp_device(late)
    assert mfa.lock_for("otp").failures == 0
    just_in_time = late - timedelta(microseconds=1)
    mfa.verify_totp_device("dev-a", int(just_in_time.timestamp()) // 30, just_in_time)
    assert mfa.totp_devices["dev-a"].status == TotpStatus.ACTIVE
    assert mfa.totp_devices["dev-a"].expires_at is None


def test_a_bare_verify_skips_expired_set_ups_for_the_newest_live_one():
    mfa = new_user()
    register(mfa, "dev-live", when=T0)
    register(mfa, "dev-stale", when=T0 - PENDING_TOTP_TTL)  # e.g. stamped by a slow clock

    assert mfa.newest_pending_totp_device(at(1)).device_id == "dev-live"


def test_a_refused_set_up_removes_nothing():
    """Expired set-ups go with a set-up that goes ahead, not with one that is refused (its
    events would have been saved and published all the same)."""
    mfa = with_active_device("dev-active")
    register(mfa, "dev-stale", when=T0)
    mfa.collect_events()
    late = T0 + PENDING_TOTP_TTL

    with pytest.raises(AlreadyEnrolledError):
        register(mfa, "dev-new", name="phone dev-active", when=late)

    assert mfa.collect_events() == []
    assert "dev-stale" in mfa.totp_devices


def test_the_next_set_up_removes_expired_ones_freeing_their_slots_and_names():
    mfa = with_active_device("dev-active")
    for n in range(MAX_TOTP_DEVICES - 1):
        register(mfa, f"dev-{n}", name=f"Phone {n}", when=at(n))
    with pytest.raises(LimitExceededError):
        register(mfa, "dev-new", name="Phone 0", when=at(60))
    late = at(MAX_TOTP_DEVICES - 3) + PENDING_TOTP_TTL  # all but the newest pending expired
    mfa.collect_events()

    register(mfa, "dev-new", name="Phone 0", when=late)

    expired = [e for e in mfa.collect_events() if isinstance(e, UserMfa.TotpSetupExpired)]
    assert sorted(e.device_id for e in expired) == sorted(
        f"dev-{n}" for n in range(MAX_TOTP_DEVICES - 2)
    )
    assert sorted(mfa.totp_devices) == sorted(
        ["dev-active", f"dev-{MAX_TOTP_DEVICES - 2}", "dev-new"]
    )
    assert mfa.totp_devices["dev-active"].is_active()  # verified devices never expire


def test_two_devices_with_the_same_name_are_refused():
    mfa = new_user()
    register(mfa, "dev-a", name="Phone")

    with pytest.raises(AlreadyEnrolledError):
        register(mfa, "dev-b", name="Phone")
    assert list(mfa.totp_devices) == ["dev-a"]


def test_a_user_may_hold_at_most_ten_totp_devices():
    mfa = new_user()
    for i in range(MAX_TOTP_DEVICES):
        register(mfa, f"dev-{i}")

    with pytest.raises(LimitExceededError):
        register(mfa, "dev-one-too-many")
    assert len(mfa.totp_devices) == MAX_TOTP_DEVICES


def webauthn_key(n: int) -> VerifiedRegistration:
    return VerifiedRegistration(credential_id=f"cred-{n}", public_key="key", sign_count=0)


def test_webauthn_ceremonies_opened_in_parallel_cannot_complete_past_the_cap():
    # Given a user one credential short of the cap, with two ceremonies open
    mfa = new_user()
    for n in range(MAX_WEBAUTHN_CREDENTIALS - 1):
        mfa.start_webauthn_registration(f"reg-{n}", "challenge", None, T0)
        mfa.complete_webauthn_registration(f"reg-{n}", webauthn_key(n), None, T0)
    mfa.start_webauthn_registration("tab-1", "challenge", None, T0)
    mfa.start_webauthn_registration("tab-2", "challenge", None, T0)
    new_events(mfa)

    # When both complete
    mfa.complete_webauthn_registration("tab-1", webauthn_key(100), None, at(1))
    with pytest.raises(LimitExceededError, match=f"at most {MAX_WEBAUTHN_CREDENTIALS} WebAuthn"):
        mfa.complete_webauthn_registration("tab-2", webauthn_key(101), None, at(2))

    # Then the second is refused, recorded, and its ceremony is used up
    assert len(mfa.webauthn_credentials) == MAX_WEBAUTHN_CREDENTIALS
    assert "cred-101" not in mfa.webauthn_credentials
    registered, rejected = new_events(mfa)
    assert type(registered) is UserMfa.WebAuthnCredentialRegistered
    assert type(rejected) is UserMfa.WebAuthnRegistrationRejected
    assert (rejected.registration_id, rejected.reason) == ("tab-2", "limit_exceeded")
    with pytest.raises(ChallengeUsedError):
        mfa.pending_registration("tab-2", at(3))
    # and no new ceremony opens, refused with the same error
    with pytest.raises(LimitExceededError, match=f"at most {MAX_WEBAUTHN_CREDENTIALS} WebAuthn"):
        mfa.start_webauthn_registration("tab-3", "challenge", None, at(4))


def test_an_expired_ceremony_still_answers_expired_after_a_new_one_is_opened():
    # Given a ceremony that expired
    mfa = new_user()
    mfa.start_webauthn_registration("tab-1", "challenge", None, T0)
    later = T0 + CEREMONY_TTL + timedelta(minutes=1)

    # When the user opens another one
    mfa.start_webauthn_registration("tab-2", "challenge", None, later)

    # Then finishing the first is 410, not 404, until it expired one more TTL ago
    with pytest.raises(ChallengeExpiredError):
        mfa.pending_registration("tab-1", later)
    mfa.start_webauthn_registration("tab-3", "challenge", None, T0 + 2 * CEREMONY_TTL)
    with pytest.raises(NotFoundError):
        mfa.pending_registration("tab-1", T0 + 2 * CEREMONY_TTL)


# ---------------------------------------------------------------- generic challenges


def test_expired_and_used_challenges_keep_their_answers_after_a_new_challenge():
    # Given one challenge completed and one left to expire
    mfa, _codes = with_backup_codes()
    mfa.issue_challenge("left", "backup_code", T0)
    mfa.issue_challenge("done", "backup_code", T0)
    mfa.complete_challenge("done", None, assurance("backup_code"), at(1))
    later = T0 + CHALLENGE_TTL + timedelta(seconds=1)

    # When another challenge is opened after they expired
    mfa.issue_challenge("new", "backup_code", later)

    # Then the old ones still answer 410 and 409, not 404 (a polling client learns why)
    with pytest.raises(ChallengeExpiredError):
        mfa.open_challenge("left", later)
    with pytest.raises(ChallengeUsedError):
        mfa.open_challenge("done", later)


def test_a_challenge_is_forgotten_once_it_expired_one_ttl_ago():
    mfa, _codes = with_backup_codes()
    mfa.issue_challenge("old", "backup_code", T0)

    mfa.issue_challenge("new", "backup_code", T0 + 2 * CHALLENGE_TTL)

    assert set(mfa.challenges) == {"new"}  # the state stays bounded
    with pytest.raises(NotFoundError):
        mfa.open_challenge("old", T0 + 2 * CHALLENGE_TTL)


def test_no_challenge_opens_for_a_locked_factor():
    # Given backup codes locked by wrong guesses
    mfa, _codes = with_backup_codes()
    for _ in range(MAX_CONSECUTIVE_FAILURES):
        with pytest.raises(InvalidCodeError):
            mfa.use_backup_code("0000-0000-0000-0000", T0)
    new_events(mfa)

    # When a challenge is asked for that method
    with pytest.raises(FactorLockedError):
        mfa.issue_challenge("ch", "backup_code", at(1))

    # Then none is opened (no slot taken), and the refusal is recorded as a locked attempt
    assert "ch" not in mfa.challenges
    assert [type(e).__name__ for e in new_events(mfa)] == ["AttemptRefusedWhileLocked"]


# ---------------------------------------------------------------- validate and replay


def test_validate_accepts_a_fresh_time_step_and_remembers_it():
    mfa = with_active_device("dev-a")
    new_events(mfa)

    accepted_by = mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))

    assert accepted_by == "dev-a"
    device = mfa.totp_device("dev-a")
    assert device.last_timecode == STEP0 + 1
    assert device.last_used_at == at(30)
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.TotpCodeAccepted]
    assert events[0].timecode == STEP0 + 1


def test_validate_rejects_a_replayed_time_step():
    # Given a code accepted at one time step
    mfa = with_active_device("dev-a")
    mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))
    new_events(mfa)

    # When the same time step is presented again
    with pytest.raises(CodeReplayedError) as raised:
        mfa.accept_totp({"dev-a": STEP0 + 1}, at(31))

    # Then it is refused as a replay and counted as a failure
    assert raised.value.attempts_remaining == MAX_CONSECUTIVE_FAILURES - 1
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.VerificationFailed]
    assert events[0].reason == "replayed"
    assert mfa.totp_device("dev-a").last_timecode == STEP0 + 1


def test_validate_rejects_the_time_step_of_the_verification_code():
    mfa = with_active_device("dev-a")

    with pytest.raises(CodeReplayedError):
        mfa.accept_totp({"dev-a": STEP0}, at(10))


def test_validate_rejects_an_earlier_time_step_than_the_last_accepted():
    mfa = with_active_device("dev-a")
    mfa.accept_totp({"dev-a": STEP0 + 2}, at(60))

    with pytest.raises(CodeReplayedError):
        mfa.accept_totp({"dev-a": STEP0 + 1}, at(61))
    assert mfa.totp_device("dev-a").last_timecode == STEP0 + 2


def test_validate_with_no_match_is_a_wrong_code_not_a_replay():
    mfa = with_active_device("dev-a")
    new_events(mfa)

    with pytest.raises(InvalidCodeError) as raised:
        mfa.accept_totp({}, at(30))

    assert not isinstance(raised.value, CodeReplayedError)
    assert new_events(mfa)[0].reason == "wrong_code"


def test_validate_without_an_active_device_is_not_enrolled():
    mfa = new_user()
    register(mfa, "dev-a")

    with pytest.raises(NotEnrolledError):
        mfa.accept_totp({"dev-a": STEP0}, T0)


def test_validate_ignores_matches_for_unknown_and_inactive_devices():
    # Given one active device and one disabled device
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    mfa.verify_totp_device("dev-b", STEP0, T0)
    mfa.disable_totp_device("dev-b", T0)

    # When a code matches only the disabled device and an unknown one
    with pytest.raises(InvalidCodeError):
        mfa.accept_totp({"dev-b": STEP0 + 1, "ghost": STEP0 + 1}, at(30))

    # Then nothing was accepted
    assert mfa.totp_device("dev-b").last_timecode == STEP0


def test_each_device_has_its_own_replay_step():
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    mfa.verify_totp_device("dev-b", STEP0 - 5, T0)
    mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))

    accepted_by = mfa.accept_totp({"dev-a": STEP0 + 1, "dev-b": STEP0 + 1}, at(31))

    assert accepted_by == "dev-b"
    assert mfa.totp_device("dev-b").last_timecode == STEP0 + 1


# ---------------------------------------------------------------- lockout


def test_five_consecutive_failures_lock_the_factor():
    # Given an active device
    mfa = with_active_device("dev-a")
    new_events(mfa)

    # When five wrong codes are presented
    errors = fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))

    # Then the budget counts down to zero and the fifth failure locks the factor for 30 s
    assert [e.attempts_remaining for e in errors] == [4, 3, 2, 1, 0]
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.VerificationFailed] * 5 + [UserMfa.FactorLocked]
    locked = events[-1]
    assert (locked.factor, locked.until, locked.level) == ("otp", at(40), 1)
    assert mfa.lock_for("otp").is_locked(at(39))


def test_an_attempt_while_locked_raises_factor_locked_with_retry_after():
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))

    with pytest.raises(FactorLockedError) as raised:
        mfa.accept_totp({}, at(20))

    assert raised.value.until == at(40)
    assert raised.value.retry_after_s == 20
    assert raised.value.code == "locked"


def test_a_correct_code_is_refused_while_locked():
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))

    with pytest.raises(FactorLockedError):
        mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))

    assert mfa.totp_device("dev-a").last_timecode == STEP0


def test_a_locked_factor_also_refuses_verifying_a_new_device():
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))

    with pytest.raises(FactorLockedError):
        mfa.verify_totp_device("dev-b", STEP0, at(11))
    assert mfa.totp_device("dev-b").status == TotpStatus.PENDING


def test_the_lock_lifts_by_itself_once_its_time_has_passed():
    # Given a factor locked at t=10 s until t=40 s
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))
    new_events(mfa)

    # When a correct code comes at t=40 s
    accepted_by = mfa.accept_totp({"dev-a": STEP0 + 1}, at(40))

    # Then it passes, without any unlock event, and the lock state is cleared
    assert accepted_by == "dev-a"
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.TotpCodeAccepted]
    assert events[0].reset_lock is True
    assert mfa.lock_for("otp").failures == 0
    assert mfa.lock_for("otp").level == 0


def test_a_second_lockout_in_a_row_lasts_sixty_seconds():
    # Given a first lockout that expired without a success in between
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))
    new_events(mfa)

    # When five more failures come after it
    errors = fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(45))

    # Then the first of them had a fresh budget and the second lock is 60 s long
    assert errors[0].attempts_remaining == 4
    locked = new_events(mfa)[-1]
    assert isinstance(locked, UserMfa.FactorLocked)
    assert (locked.until, locked.level) == (at(105), 2)
    with pytest.raises(FactorLockedError) as raised:
        mfa.accept_totp({}, at(45))
    assert raised.value.retry_after_s == 60


def test_the_third_lockout_in_a_row_lasts_two_minutes():
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(0))
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(30))
    new_events(mfa)

    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(90))

    locked = new_events(mfa)[-1]
    assert (locked.until, locked.level) == (at(210), 3)


def test_refusals_while_locked_are_recorded_once_per_lock():
    # Given a locked factor
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))
    new_events(mfa)

    # When many attempts come while it is locked
    for second in range(11, 31):
        with pytest.raises(FactorLockedError):
            mfa.accept_totp({"dev-a": STEP0 + 1}, at(second))

    # Then a single refusal event was recorded
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.AttemptRefusedWhileLocked]
    assert events[0].factor == "otp"
    assert events[0].timestamp == at(11)


def test_a_new_lock_records_its_own_refusal_event():
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))
    with pytest.raises(FactorLockedError):
        mfa.accept_totp({}, at(11))
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(45))
    new_events(mfa)

    for second in (46, 47):
        with pytest.raises(FactorLockedError):
            mfa.accept_totp({}, at(second))

    assert [type(e) for e in new_events(mfa)] == [UserMfa.AttemptRefusedWhileLocked]


def test_a_success_resets_the_failure_count():
    # Given four failures
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES - 1, at(10))

    # When a correct code passes
    mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))

    # Then the full budget is back: four more failures do not lock
    errors = fail_otp(mfa, MAX_CONSECUTIVE_FAILURES - 1, at(31))
    assert errors[0].attempts_remaining == 4
    assert not mfa.lock_for("otp").is_locked(at(31))


def test_a_success_without_earlier_failures_does_not_reset_anything():
    mfa = with_active_device("dev-a")
    new_events(mfa)

    mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))

    assert new_events(mfa)[0].reset_lock is False


def test_a_success_after_a_lockout_resets_the_escalation():
    mfa = with_active_device("dev-a")
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(0))
    mfa.accept_totp({"dev-a": STEP0 + 2}, at(60))
    new_events(mfa)

    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(70))

    locked = new_events(mfa)[-1]
    assert (locked.until, locked.level) == (at(100), 1)


# ---------------------------------------------------------------- backup codes


def test_a_backup_code_works_once():
    mfa, codes = with_backup_codes()
    new_events(mfa)

    remaining = mfa.use_backup_code(codes[3], at(1))

    assert remaining == 9
    assert mfa.backup_codes is not None
    assert mfa.backup_codes.codes[3].used_at == at(1)
    used = new_events(mfa)
    assert [type(e) for e in used] == [UserMfa.BackupCodeUsed]
    assert used[0].index == 3
    with pytest.raises(InvalidCodeError):
        mfa.use_backup_code(codes[3], at(2))
    assert mfa.backup_codes.remaining() == 9


def test_a_backup_code_may_be_typed_in_capitals_with_spaces():
    mfa, codes = with_backup_codes()

    remaining = mfa.use_backup_code(" " + codes[0].upper().replace("-", " ") + " ", at(1))

    assert remaining == 9


def test_every_backup_code_can_be_spent_once_and_then_none_remain():
    mfa, codes = with_backup_codes()

    remaining = [mfa.use_backup_code(code, at(i)) for i, code in enumerate(codes)]

    assert remaining == list(range(9, -1, -1))
    with pytest.raises(InvalidCodeError):  # a reused code, as while some remained
        mfa.use_backup_code(codes[0], at(20))


def test_using_a_backup_code_without_any_generated_is_not_enrolled():
    mfa = new_user()

    with pytest.raises(NotEnrolledError):
        mfa.use_backup_code("0000-0000-0000-0000", T0)


def test_regenerating_backup_codes_revokes_the_old_ones():
    # Given a first set of codes
    mfa, old_codes = with_backup_codes(seed=1)

    # When a new set is generated
    new_codes, hashed = backup_codes(seed=2)
    mfa.generate_backup_codes("set-2", hashed, at(5))

    # Then old codes fail and new ones pass
    with pytest.raises(InvalidCodeError):
        mfa.use_backup_code(old_codes[0], at(6))
    assert mfa.use_backup_code(new_codes[0], at(7)) == 9
    assert mfa.backup_codes is not None
    assert mfa.backup_codes.set_id == "set-2"


def test_backup_codes_stored_state_holds_hashes_not_codes():
    mfa, codes = with_backup_codes()

    assert mfa.backup_codes is not None
    stored = repr(mfa.backup_codes) + repr(new_events(mfa))
    for code in codes:
        assert code not in stored
        assert code.replace("-", "") not in stored


def test_backup_codes_have_their_own_failure_budget():
    # Given a user with a device and backup codes, and a locked otp factor
    mfa = with_active_device("dev-a")
    codes, hashed = backup_codes()
    mfa.generate_backup_codes("set-0", hashed, T0)
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(10))

    # Then backup codes still work, their budget untouched
    assert mfa.lock_for("backup_code").failures == 0
    assert mfa.use_backup_code(codes[0], at(11)) == 9
    # And the otp lock is still there
    with pytest.raises(FactorLockedError):
        mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))


def test_five_wrong_backup_codes_lock_backup_codes_but_not_otp():
    mfa = with_active_device("dev-a")
    codes, hashed = backup_codes()
    mfa.generate_backup_codes("set-0", hashed, T0)
    new_events(mfa)

    for _ in range(MAX_CONSECUTIVE_FAILURES):
        with pytest.raises(InvalidCodeError):
            mfa.use_backup_code("ffff-ffff-ffff-ffff", at(10))

    locked = new_events(mfa)[-1]
    assert isinstance(locked, UserMfa.FactorLocked)
    assert locked.factor == "backup_code"
    with pytest.raises(FactorLockedError):
        mfa.use_backup_code(codes[0], at(11))
    assert mfa.accept_totp({"dev-a": STEP0 + 1}, at(30)) == "dev-a"


# ---------------------------------------------------------------- disable, enable, revoke


def test_a_disabled_device_no_longer_passes_validation():
    mfa = with_active_device("dev-a")

    mfa.disable_totp_device("dev-a", at(1))

    assert mfa.totp_device("dev-a").status == TotpStatus.DISABLED
    with pytest.raises(NotEnrolledError):
        mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))


def test_an_enabled_device_passes_validation_again():
    mfa = with_active_device("dev-a")
    mfa.disable_totp_device("dev-a", at(1))

    mfa.enable_totp_device("dev-a", at(2))

    assert mfa.accept_totp({"dev-a": STEP0 + 1}, at(30)) == "dev-a"


def test_only_an_active_device_can_be_disabled():
    mfa = new_user()
    register(mfa, "dev-a")

    with pytest.raises(ConflictError):
        mfa.disable_totp_device("dev-a", T0)


def test_only_a_disabled_device_can_be_enabled():
    mfa = with_active_device("dev-a")

    with pytest.raises(ConflictError):
        mfa.enable_totp_device("dev-a", T0)


def test_switching_totp_off_disables_every_active_device():
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    mfa.verify_totp_device("dev-b", STEP0, T0)
    register(mfa, "dev-pending")
    new_events(mfa)

    switched = mfa.disable_totp(at(1))

    assert switched == ["dev-a", "dev-b"]
    assert mfa.active_totp_devices() == []
    assert mfa.totp_device("dev-pending").status == TotpStatus.PENDING
    events = new_events(mfa)
    assert [type(e) for e in events] == [UserMfa.TotpDisabled]
    assert events[0].device_ids == ["dev-a", "dev-b"]
    assert not mfa.mfa_enabled()


def test_switching_totp_on_restores_only_the_devices_the_switch_turned_off():
    # Given one device disabled on its own, then TOTP switched off
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    mfa.verify_totp_device("dev-b", STEP0, T0)
    mfa.disable_totp_device("dev-b", at(1))
    mfa.disable_totp(at(2))
    new_events(mfa)

    # When TOTP is switched on
    switched = mfa.enable_totp(at(3))

    # Then only the device the switch disabled comes back
    assert switched == ["dev-a"]
    assert mfa.totp_device("dev-a").status == TotpStatus.ACTIVE
    assert mfa.totp_device("dev-b").status == TotpStatus.DISABLED
    assert [type(e) for e in new_events(mfa)] == [UserMfa.TotpEnabled]


def test_switching_totp_off_without_active_devices_is_not_enrolled():
    mfa = new_user()
    register(mfa, "dev-a")

    with pytest.raises(NotEnrolledError):
        mfa.disable_totp(T0)


def test_switching_totp_on_when_it_is_on_is_refused():
    mfa = with_active_device("dev-a")

    with pytest.raises(AlreadyEnrolledError):
        mfa.enable_totp(T0)


def test_switching_totp_on_without_any_device_is_not_enrolled():
    mfa = new_user()

    with pytest.raises(NotEnrolledError):
        mfa.enable_totp(T0)


def test_a_revoked_device_and_its_secret_are_gone():
    mfa = with_active_device("dev-a")

    mfa.revoke_totp_device("dev-a", at(1))

    assert "dev-a" not in mfa.totp_devices
    with pytest.raises(NotFoundError):
        mfa.totp_device("dev-a")
    with pytest.raises(NotEnrolledError):
        mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))


def test_revoking_an_unknown_device_is_not_found():
    mfa = with_active_device("dev-a")

    with pytest.raises(NotFoundError):
        mfa.revoke_totp_device("dev-x", T0)


def test_revoking_the_primary_device_clears_the_primary_method():
    mfa = with_active_device("dev-a")
    mfa.set_primary("dev-a", T0)

    mfa.revoke_totp_device("dev-a", at(1))

    assert (mfa.primary_credential, mfa.primary_method) == (None, None)


# ---------------------------------------------------------------- methods


def test_removing_totp_removes_every_device_and_the_primary():
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    mfa.set_primary("dev-a", T0)

    mfa.remove_method("totp", at(1))

    assert mfa.totp_devices == {}
    assert mfa.primary_method is None
    assert not mfa.mfa_enabled()


def test_removing_backup_codes_removes_the_set():
    mfa, codes = with_backup_codes()

    mfa.remove_method("backup_code", at(1))

    assert mfa.backup_codes is None
    with pytest.raises(NotEnrolledError):
        mfa.use_backup_code(codes[0], at(2))


@pytest.mark.parametrize("method", ["totp", "backup_code", "webauthn", "carrier-pigeon"])
def test_removing_a_method_that_is_not_enrolled_is_refused(method: str):
    mfa = new_user()
    new_events(mfa)

    with pytest.raises(NotEnrolledError):
        mfa.remove_method(method, T0)
    assert new_events(mfa) == []


def test_an_active_device_can_be_the_primary_credential():
    mfa = with_active_device("dev-a")

    method = mfa.set_primary("dev-a", at(1))

    assert method == "totp"
    assert (mfa.primary_credential, mfa.primary_method) == ("dev-a", "totp")
    totp_summary = next(m for m in mfa.methods() if m.method == "totp")
    assert totp_summary.primary


def test_a_pending_device_cannot_be_primary():
    mfa = new_user()
    register(mfa, "dev-a")

    with pytest.raises(ConflictError):
        mfa.set_primary("dev-a", T0)


def test_backup_codes_cannot_be_primary():
    mfa, _ = with_backup_codes()

    with pytest.raises(ConflictError):
        mfa.set_primary("backup_code", T0)


def test_an_unknown_credential_cannot_be_primary():
    mfa = with_active_device("dev-a")

    with pytest.raises(NotFoundError):
        mfa.set_primary("dev-x", T0)


def test_summaries_of_a_user_who_never_enrolled_list_every_method_as_off():
    summaries = method_summaries(None)

    assert [s.method for s in summaries] == list(KNOWN_METHODS)
    assert all(not s.enabled and s.credentials == 0 and not s.primary for s in summaries)


def test_summaries_describe_devices_and_backup_codes():
    # Given one active and one pending device and ten codes, one used
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    codes, hashed = backup_codes()
    mfa.generate_backup_codes("set-0", hashed, T0)
    mfa.use_backup_code(codes[0], at(1))

    summaries = {s.method: s for s in method_summaries(mfa)}

    assert list(summaries) == list(KNOWN_METHODS)
    assert summaries["totp"].enabled
    assert summaries["totp"].credentials == 2
    assert summaries["totp"].details == {"active_devices": 1}
    assert summaries["backup_code"].enabled
    assert summaries["backup_code"].credentials == 1
    assert summaries["backup_code"].details == {"remaining": 9, "total": 10}
    assert not summaries["webauthn"].enabled


def test_backup_codes_alone_do_not_turn_mfa_on():
    mfa, _ = with_backup_codes()

    assert not mfa.mfa_enabled()
    assert next(m for m in mfa.methods() if m.method == "backup_code").enabled


# ---------------------------------------------------------------- reconstruction


def rich_history() -> tuple[UserMfa, list[Any]]:
    """An aggregate that went through most of its events, and those events."""
    mfa = with_active_device("dev-a")
    register(mfa, "dev-b")
    mfa.verify_totp_device("dev-b", STEP0, T0)
    register(mfa, "dev-c")
    mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))
    fail_otp(mfa, MAX_CONSECUTIVE_FAILURES, at(31))
    with pytest.raises(FactorLockedError):
        mfa.accept_totp({}, at(32))
    codes, hashed = backup_codes()
    mfa.generate_backup_codes("set-0", hashed, at(33))
    mfa.use_backup_code(codes[4], at(34))
    with pytest.raises(InvalidCodeError):
        mfa.use_backup_code("0000-0000-0000-0000", at(35))
    mfa.disable_totp_device("dev-b", at(36))
    mfa.disable_totp(at(37))
    mfa.enable_totp(at(38))
    mfa.set_primary("dev-a", at(39))
    return mfa, list(mfa.collect_events())


def test_the_aggregate_is_rebuilt_identically_from_its_events():
    # Given an aggregate with a long history
    mfa, events = rich_history()

    # When its events are applied to nothing
    rebuilt = project_aggregate(None, events)

    # Then the result is the same aggregate
    assert isinstance(rebuilt, UserMfa)
    assert state(rebuilt) == state(mfa)
    assert rebuilt.version == len(events)
    assert rebuilt.lock_for("otp").is_locked(at(40))


def test_the_aggregate_is_rebuilt_from_a_prefix_of_its_events_plus_the_rest():
    mfa, events = rich_history()

    partial = project_aggregate(None, events[:7])
    rebuilt = project_aggregate(partial, events[7:])

    assert isinstance(rebuilt, UserMfa)
    assert state(rebuilt) == state(mfa)


def test_the_aggregate_is_rebuilt_identically_from_a_snapshot():
    mfa, _ = rich_history()

    snapshot = UserMfa.Snapshot.take(mfa)
    restored = snapshot.mutate(None)

    assert isinstance(restored, UserMfa)
    assert isinstance(restored.id, UUID)
    assert snapshot.originator_version == mfa.version
    assert state(restored) == state(mfa)


def test_a_snapshot_then_later_events_rebuild_the_same_state():
    # Given a snapshot taken half way, and the events after it
    mfa = with_active_device("dev-a")
    mfa.collect_events()
    snapshot = UserMfa.Snapshot.take(mfa)
    mfa.accept_totp({"dev-a": STEP0 + 1}, at(30))
    fail_otp(mfa, 2, at(31))
    later = list(mfa.collect_events())

    # When the later events are applied to the restored snapshot
    rebuilt = project_aggregate(snapshot.mutate(None), later)

    # Then the state matches, and the replay rule still holds
    assert isinstance(rebuilt, UserMfa)
    assert state(rebuilt) == state(mfa)
    with pytest.raises(CodeReplayedError):
        rebuilt.accept_totp({"dev-a": STEP0 + 1}, at(40))


# ---------------------------------------------------------------- trusted devices


def test_expired_trusted_devices_do_not_pile_up_in_the_users_state():
    """The cap counts only valid devices: ten a day, one day each, for 100 days kept 1,000."""
    mfa, now = new_user(), T0
    for day in range(30):
        for n in range(MAX_TRUSTED_DEVICES):
            mfa.remember_device(f"d{day}-{n}", "x", hash_device_token(f"t{day}-{n}"), 1, now)
        now += timedelta(days=1)
    assert len(mfa.trusted_devices) <= KEPT_TRUSTED_DEVICES
    last_day = {f"d29-{n}" for n in range(MAX_TRUSTED_DEVICES)}
    assert last_day <= set(mfa.trusted_devices)  # the valid ones are all kept
    reasons = {e.reason for e in new_events(mfa) if type(e).__name__ == "TrustedDevicesRevoked"}
    assert reasons == {"expired"}


def test_the_auditors_state_as_of_a_time_says_whether_a_set_up_had_expired_then():
    """As lock states are judged at the time asked about, so is a pending set-up."""
    from projections.audit import describe_state

    mfa = new_user()
    register(mfa, "dev-a", when=T0)
    late = T0 + PENDING_TOTP_TTL

    [before] = describe_state(mfa, late - timedelta(seconds=1))["totp_devices"]
    [after] = describe_state(mfa, late)["totp_devices"]

    assert before["expires_at"] == after["expires_at"] == late
    assert (before["setup_expired"], after["setup_expired"]) == (False, True)
