"""The UserMfa aggregate: one per user, every factor's state rebuilt from its events.

Composed of one mixin per factor; each factor's module holds its entity, events and rules.
Event classes are also reachable as attributes (`UserMfa.TotpCodeAccepted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.utils import register_topic

from domain import backup_codes as _backup_codes
from domain import base as _base
from domain import challenge as _challenge
from domain import erasure as _erasure
from domain import oob_events as _oob
from domain import push as _push
from domain import totp as _totp
from domain import trusted_devices as _trusted
from domain import webauthn as _webauthn
from domain.backup_codes import BACKUP_CODE, BackupCodeMixin, BackupCodeSet
from domain.base import UserMfaEvent
from domain.challenge import ChallengeMixin, MfaChallenge
from domain.erasure import ErasureMixin
from domain.errors import ConflictError, DomainError, NotEnrolledError, NotFoundError
from domain.lockout import FactorLock
from domain.oob import OobMixin
from domain.oob_codes import EMAIL, OOB_METHODS, SMS
from domain.push import PUSH, PushDevice, PushMixin, PushRequest
from domain.totp import OTP, TotpDevice, TotpMixin
from domain.trusted_devices import TrustedDevice, TrustedDeviceMixin
from domain.webauthn import (
    WEBAUTHN,
    PendingRegistration,
    WebAuthnCredential,
    WebAuthnMixin,
)

TOTP = "totp"
KNOWN_METHODS = ("totp", "backup_code", "webauthn", "sms", "email", "push")
__all__ = ["BACKUP_CODE", "KNOWN_METHODS", "OTP", "TOTP", "WEBAUTHN", "MethodSummary", "UserMfa"]


@dataclass(frozen=True)
class MethodSummary:
    """What `/mfa/methods` and the status endpoints say about one method."""

    method: str
    enabled: bool
    credentials: int
    primary: bool
    details: dict[str, Any]


class MethodRemoved(UserMfaEvent):
    TOPIC = "mfa.method.removed.v1"
    method: str

    def apply(self, aggregate: UserMfa) -> None:
        if self.method == TOTP:
            aggregate.totp_devices.clear()
        elif self.method == BACKUP_CODE:
            aggregate.backup_codes = None
        elif self.method == WEBAUTHN:
            aggregate.webauthn_credentials.clear()
        elif self.method == PUSH:
            aggregate.push_devices.clear()
        elif self.method in OOB_METHODS:
            aggregate.oob_factors.pop(self.method, None)
        if aggregate.primary_method == self.method:
            aggregate.primary_method = None
            aggregate.primary_credential = None


class PrimaryMethodSet(UserMfaEvent):
    TOPIC = "mfa.method.primary_set.v1"
    credential_id: str
    method: str

    def apply(self, aggregate: UserMfa) -> None:
        aggregate.primary_credential = self.credential_id
        aggregate.primary_method = self.method


class UserMfa(
    TotpMixin,
    BackupCodeMixin,
    WebAuthnMixin,
    OobMixin,
    TrustedDeviceMixin,
    ChallengeMixin,
    PushMixin,
    ErasureMixin,
    Aggregate,
):
    """Every MFA factor of one user; commands load it, call one method, save it."""

    TOPIC = "mfa.user_mfa.v1"

    Event = UserMfaEvent

    class Created(UserMfaEvent, Aggregate.Created):
        TOPIC = "mfa.user.created.v1"
        user_id: str

    class Snapshot(AggregateSnapshot):
        TOPIC = "mfa.user_mfa.snapshot.v1"

    VerificationFailed = _base.VerificationFailed
    FactorLocked = _base.FactorLocked
    AttemptRefusedWhileLocked = _base.AttemptRefusedWhileLocked
    TotpDeviceRegistered = _totp.TotpDeviceRegistered
    TotpDeviceVerified = _totp.TotpDeviceVerified
    TotpCodeAccepted = _totp.TotpCodeAccepted
    TotpDeviceDisabled = _totp.TotpDeviceDisabled
    TotpDeviceEnabled = _totp.TotpDeviceEnabled
    TotpDeviceRevoked = _totp.TotpDeviceRevoked
    TotpSetupExpired = _totp.TotpSetupExpired
    TotpDisabled = _totp.TotpDisabled
    TotpEnabled = _totp.TotpEnabled
    BackupCodesGenerated = _backup_codes.BackupCodesGenerated
    BackupCodeUsed = _backup_codes.BackupCodeUsed
    WebAuthnRegistrationStarted = _webauthn.WebAuthnRegistrationStarted
    WebAuthnCredentialRegistered = _webauthn.WebAuthnCredentialRegistered
    WebAuthnRegistrationRejected = _webauthn.WebAuthnRegistrationRejected
    WebAuthnCredentialRenamed = _webauthn.WebAuthnCredentialRenamed
    WebAuthnCredentialDeleted = _webauthn.WebAuthnCredentialDeleted
    WebAuthnAssertionAccepted = _webauthn.WebAuthnAssertionAccepted
    WebAuthnCloneSuspected = _webauthn.WebAuthnCloneSuspected
    TrustedDeviceRemembered = _trusted.TrustedDeviceRemembered
    TrustedDevicesRevoked = _trusted.TrustedDevicesRevoked
    SmsEnrolmentStarted = _oob.SmsEnrolmentStarted
    SmsCodeIssued = _oob.SmsCodeIssued
    SmsCodeSent = _oob.SmsCodeSent
    SmsCodeVoided = _oob.SmsCodeVoided
    SmsCodeRejected = _oob.SmsCodeRejected
    SmsCodeAccepted = _oob.SmsCodeAccepted
    SmsEnrolled = _oob.SmsEnrolled
    EmailEnrolmentStarted = _oob.EmailEnrolmentStarted
    EmailCodeIssued = _oob.EmailCodeIssued
    EmailCodeSent = _oob.EmailCodeSent
    EmailCodeVoided = _oob.EmailCodeVoided
    EmailCodeRejected = _oob.EmailCodeRejected
    EmailCodeAccepted = _oob.EmailCodeAccepted
    EmailEnrolled = _oob.EmailEnrolled
    ChallengeIssued = _challenge.ChallengeIssued
    ChallengeCompleted = _challenge.ChallengeCompleted
    PushDeviceSynced = _push.PushDeviceSynced
    PushDeviceRevoked = _push.PushDeviceRevoked
    PushChallengeRequested = _push.PushChallengeRequested
    PushChallengeResolved = _push.PushChallengeResolved
    PushFraudReported = _push.PushFraudReported
    UserMfaReset = _erasure.UserMfaReset
    UserErased = _erasure.UserErased
    MethodRemoved = MethodRemoved
    PrimaryMethodSet = PrimaryMethodSet

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.totp_devices: dict[str, TotpDevice] = {}
        self.backup_codes: BackupCodeSet | None = None
        self.webauthn_credentials: dict[str, WebAuthnCredential] = {}
        self.webauthn_registrations: dict[str, PendingRegistration] = {}
        self.trusted_devices: dict[str, TrustedDevice] = {}
        self.challenges: dict[str, MfaChallenge] = {}
        self.last_step_up_at: datetime | None = None
        self.locks: dict[str, FactorLock] = {}
        self.primary_credential: str | None = None
        self.primary_method: str | None = None
        self.push_devices: dict[str, PushDevice] = {}
        self.push_requests: list[PushRequest] = []
        self.fraud_reports: list[datetime] = []
        self.erased = False

    @classmethod
    def start(cls, user_id: str, aggregate_id: UUID, at: datetime) -> UserMfa:
        """A fresh aggregate for a user seen for the first time."""
        return cls._create(cls.Created, id=aggregate_id, user_id=user_id, timestamp=at)

    # ---------------------------------------------------------------- across methods

    def forget_primary(self, credential_id: str) -> None:
        """A removed credential stops being the primary one (called while applying events)."""
        if self.primary_credential == credential_id:
            self.primary_credential = None
            self.primary_method = None

    def clear_factors(self) -> None:
        """Forget every credential, ceremony, trusted device and lock (reset, erasure)."""
        self.totp_devices.clear()
        self.backup_codes = None
        self.webauthn_credentials.clear()
        self.webauthn_registrations.clear()
        self.oob_factors.clear()
        self.trusted_devices.clear()
        self.challenges.clear()
        self.push_devices.clear()
        self.push_requests.clear()
        self.locks.clear()
        self.primary_credential = None
        self.primary_method = None

    def enrolled_methods(self) -> list[str]:
        """The methods the user has any credential of."""
        return [m.method for m in self.methods() if m.credentials > 0]

    def is_enrolled(self, method: str) -> bool:
        """Whether the user can complete a challenge of `method` now."""
        if method == TOTP:
            return bool(self.active_totp_devices())
        if method == BACKUP_CODE:
            return self.backup_codes is not None and self.backup_codes.remaining() > 0
        if method == WEBAUTHN:
            return bool(self.usable_webauthn_credentials())
        if method == PUSH:
            return bool(self.push_devices)
        if method in OOB_METHODS:
            factor = self.oob_factor(method)
            return factor is not None and factor.is_active()
        return False

    def lockout_factor(self, method: str) -> str | None:
        """The lock a method's proof is checked under (push has none: it is throttled)."""
        if method == TOTP:
            return OTP
        return method if method in (BACKUP_CODE, WEBAUTHN, *OOB_METHODS) else None

    def remove_method(self, method: str, at: datetime) -> None:
        """Remove every credential of one method (`DELETE /mfa/methods/{method}`)."""
        enrolled = {
            TOTP: bool(self.totp_devices),
            BACKUP_CODE: self.backup_codes is not None,
            WEBAUTHN: bool(self.webauthn_credentials),
            PUSH: bool(self.push_devices),
            SMS: self.oob_factor(SMS) is not None,
            EMAIL: self.oob_factor(EMAIL) is not None,
        }
        if not enrolled.get(method, False):
            raise NotEnrolledError(f"{method} is not enrolled")
        self.trigger_event(MethodRemoved, method=method, timestamp=at)

    def set_primary(self, credential_id: str, at: datetime) -> str:
        """Make one usable credential the user's primary method; returns its method."""
        method = self._method_of(credential_id)
        self.trigger_event(
            PrimaryMethodSet, credential_id=credential_id, method=method, timestamp=at
        )
        return method

    def current_primary(self) -> tuple[str, str] | None:
        """The primary (method, credential id) while that credential can be used: a disabled
        TOTP device or SMS/email factor stays chosen, and is primary again once re-enabled."""
        if self.primary_credential is None:
            return None
        try:
            return self._method_of(self.primary_credential), self.primary_credential
        except DomainError:
            return None

    def _method_of(self, credential_id: str) -> str:
        device = self.totp_devices.get(credential_id)
        if device is not None:
            if not device.is_active():
                raise ConflictError("only an active credential can be primary")
            return TOTP
        credential = self.webauthn_credentials.get(credential_id)
        if credential is not None:
            if credential.clone_suspected:
                raise ConflictError("a credential suspected of being cloned cannot be primary")
            return WEBAUTHN
        if credential_id in self.push_devices:
            return PUSH
        if credential_id == BACKUP_CODE:
            raise ConflictError("backup codes are for recovery and cannot be primary")
        if credential_id in OOB_METHODS:  # the SMS or email factor's credential id is its method
            if self.is_enrolled(credential_id):
                return credential_id
            if self.oob_factor(credential_id) is not None:
                raise ConflictError("only an active credential can be primary")
        raise NotFoundError(f"no credential {credential_id!r}")

    def methods(self) -> list[MethodSummary]:
        """One summary per method the service knows, enrolled or not."""
        active = self.active_totp_devices()
        codes = self.backup_codes
        remaining = codes.remaining() if codes else 0
        primary = self.current_primary()
        primary_method = primary[0] if primary else None
        known = {
            TOTP: MethodSummary(
                TOTP,
                bool(active),
                len(self.totp_devices),
                primary_method == TOTP,
                {"active_devices": len(active)},
            ),
            BACKUP_CODE: MethodSummary(
                BACKUP_CODE,
                remaining > 0,
                1 if codes else 0,
                False,
                {"remaining": remaining, "total": len(codes.codes) if codes else 0},
            ),
            WEBAUTHN: MethodSummary(
                WEBAUTHN,
                self.is_enrolled(WEBAUTHN),
                len(self.webauthn_credentials),
                primary_method == WEBAUTHN,
                {
                    "phishing_resistant": True,
                    "passkeys": sum(c.backup_eligible for c in self.webauthn_credentials.values()),
                },
            ),
        }
        known[PUSH] = MethodSummary(
            PUSH,
            bool(self.push_devices),
            len(self.push_devices),
            primary_method == PUSH,
            {"number_matching": True},
        )
        known[SMS] = self._oob_summary(SMS, primary_method)
        known[EMAIL] = self._oob_summary(EMAIL, primary_method)
        return [known.get(m) or MethodSummary(m, False, 0, False, {}) for m in KNOWN_METHODS]

    def _oob_summary(self, method: str, primary_method: str | None) -> MethodSummary:
        return MethodSummary(
            method,
            self.is_enrolled(method),
            0 if self.oob_factor(method) is None else 1,
            primary_method == method,
            self.oob_details(method),
        )

    def mfa_enabled(self) -> bool:
        """MFA is on when any method other than recovery codes is usable. Email codes are a
        weaker factor (a mailbox is often reachable with the same password): alone they do
        not turn MFA on."""
        return any(m.enabled for m in self.methods() if m.method not in (BACKUP_CODE, EMAIL))


# Nested event classes are registered by the aggregate's metaclass; the snapshot class must be
# registered too, or a process that has not written a snapshot yet cannot read one.
register_topic(UserMfa.Snapshot.TOPIC, UserMfa.Snapshot)


_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def method_summaries(mfa: UserMfa | None) -> list[MethodSummary]:
    """The methods of a user, or of someone who never enrolled anything: exactly what a user
    with an aggregate but no factor shows, so that the answer does not tell the two apart."""
    if mfa is not None:
        return mfa.methods()
    return UserMfa.start("", UUID(int=0), _NEVER).methods()
