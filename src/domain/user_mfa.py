"""The UserMfa aggregate: one per user, every factor's state rebuilt from its events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.utils import register_topic

from domain.backup_codes import BackupCode, BackupCodeSet
from domain.errors import (
    AlreadyEnrolledError,
    CodeReplayedError,
    ConflictError,
    FactorLockedError,
    InvalidCodeError,
    LimitExceededError,
    NotEnrolledError,
    NotFoundError,
)
from domain.lockout import FactorLock, lock_duration
from domain.totp import MAX_TOTP_DEVICES, TotpDevice, TotpStatus

OTP = "otp"
BACKUP_CODE = "backup_code"
TOTP = "totp"
KNOWN_METHODS = ("totp", "backup_code", "webauthn", "sms", "email", "push")


@dataclass(frozen=True)
class MethodSummary:
    """What `/mfa/methods` and the status endpoints say about one method."""

    method: str
    enabled: bool
    credentials: int
    primary: bool
    details: dict[str, Any]


class UserMfa(Aggregate):
    """Every MFA factor of one user; commands load it, call one method, save it."""

    TOPIC = "mfa.user_mfa.v1"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "mfa.user.created.v1"
        user_id: str

    class Snapshot(AggregateSnapshot):
        TOPIC = "mfa.user_mfa.snapshot.v1"

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.totp_devices: dict[str, TotpDevice] = {}
        self.backup_codes: BackupCodeSet | None = None
        self.locks: dict[str, FactorLock] = {}
        self.primary_credential: str | None = None
        self.primary_method: str | None = None

    @classmethod
    def start(cls, user_id: str, aggregate_id: UUID, at: datetime) -> UserMfa:
        """A fresh aggregate for a user seen for the first time."""
        return cls._create(cls.Created, id=aggregate_id, user_id=user_id, timestamp=at)

    # ---------------------------------------------------------------- lockout

    def lock_for(self, factor: str) -> FactorLock:
        """The lock state of one factor (a fresh one when never used)."""
        return self.locks.get(factor) or FactorLock()

    def _ensure_unlocked(self, factor: str, at: datetime) -> None:
        lock = self.lock_for(factor)
        if not lock.is_locked(at):
            return
        assert lock.locked_until is not None
        # Refusals while locked are recorded once per lock, not one event per guess, so that
        # guesses cannot turn into unbounded writes on the serialised event store.
        if lock.refusals_recorded_for != lock.locked_until:
            self.trigger_event(self.AttemptRefusedWhileLocked, factor=factor, timestamp=at)
        raise FactorLockedError(f"{factor} verification is locked", lock.locked_until, at)

    def _fail(
        self, factor: str, reason: str, at: datetime, credential_id: str | None = None
    ) -> InvalidCodeError:
        lock = self.lock_for(factor)
        locks_now = lock.next_failure_locks()
        self.trigger_event(
            self.VerificationFailed,
            factor=factor,
            reason=reason,
            credential_id=credential_id,
            timestamp=at,
        )
        if locks_now:
            until = at + lock_duration(lock.level + 1)
            self.trigger_event(
                self.FactorLocked, factor=factor, until=until, level=lock.level + 1, timestamp=at
            )
        remaining = 0 if locks_now else self.lock_for(factor).attempts_remaining()
        error_cls = CodeReplayedError if reason == "replayed" else InvalidCodeError
        return error_cls("the code is invalid or was already used", remaining)

    class VerificationFailed(Event):
        TOPIC = "mfa.verification.failed.v1"
        factor: str
        reason: str
        credential_id: str | None

        def apply(self, aggregate: UserMfa) -> None:
            lock = aggregate.locks.setdefault(self.factor, FactorLock())
            if lock.locked_until is not None and self.timestamp >= lock.locked_until:
                lock.locked_until = None
            lock.record_failure()

    class FactorLocked(Event):
        TOPIC = "mfa.lockout.factor_locked.v1"
        factor: str
        until: datetime
        level: int

        def apply(self, aggregate: UserMfa) -> None:
            lock = aggregate.locks.setdefault(self.factor, FactorLock())
            lock.lock(self.until)
            lock.level = self.level

    class AttemptRefusedWhileLocked(Event):
        TOPIC = "mfa.lockout.attempt_refused.v1"
        factor: str

        def apply(self, aggregate: UserMfa) -> None:
            lock = aggregate.locks.setdefault(self.factor, FactorLock())
            lock.refusals_recorded_for = lock.locked_until

    def _succeed(self, factor: str) -> bool:
        """Whether a success must reset the factor's lock state (part of the success event)."""
        lock = self.locks.get(factor)
        return lock is not None and (lock.failures > 0 or lock.level > 0)

    # ---------------------------------------------------------------- TOTP

    def totp_device(self, device_id: str) -> TotpDevice:
        """A TOTP device of this user, or NotFoundError."""
        try:
            return self.totp_devices[device_id]
        except KeyError:
            raise NotFoundError(f"no TOTP device {device_id!r}") from None

    def active_totp_devices(self) -> list[TotpDevice]:
        """Devices that pass login validation."""
        return [d for d in self.totp_devices.values() if d.is_active()]

    def newest_pending_totp_device(self) -> TotpDevice:
        """The device a bare `verify` (no device id) applies to."""
        pending = [d for d in self.totp_devices.values() if d.status == TotpStatus.PENDING]
        if not pending:
            raise NotEnrolledError("no TOTP device is waiting for verification")
        return max(pending, key=lambda d: d.created_at)

    def register_totp_device(
        self,
        *,
        device_id: str,
        name: str,
        secret: str,
        digits: int,
        period: int,
        algorithm: str,
        at: datetime,
    ) -> None:
        """Add a pending device; at most MAX_TOTP_DEVICES per user."""
        if len(self.totp_devices) >= MAX_TOTP_DEVICES:
            raise LimitExceededError(f"at most {MAX_TOTP_DEVICES} TOTP devices per user")
        if any(d.name == name for d in self.totp_devices.values()):
            raise AlreadyEnrolledError(f"a TOTP device named {name!r} exists already")
        self.trigger_event(
            self.TotpDeviceRegistered,
            device_id=device_id,
            name=name,
            secret=secret,
            digits=digits,
            period=period,
            algorithm=algorithm,
            timestamp=at,
        )

    class TotpDeviceRegistered(Event):
        TOPIC = "mfa.totp.device_registered.v1"
        device_id: str
        name: str
        secret: str
        digits: int
        period: int
        algorithm: str

        def apply(self, aggregate: UserMfa) -> None:
            aggregate.totp_devices[self.device_id] = TotpDevice(
                device_id=self.device_id,
                name=self.name,
                secret=self.secret,
                digits=self.digits,
                period=self.period,
                algorithm=self.algorithm,
                status=TotpStatus.PENDING,
                created_at=self.timestamp,
            )

    def verify_totp_device(self, device_id: str, timecode: int | None, at: datetime) -> None:
        """The first valid code (`timecode` matched by the verifier) activates a pending device."""
        device = self.totp_device(device_id)
        if device.status != TotpStatus.PENDING:
            raise AlreadyEnrolledError("this TOTP device is already verified")
        self._ensure_unlocked(OTP, at)
        if timecode is None:
            raise self._fail(OTP, "wrong_code", at, device_id)
        self.trigger_event(
            self.TotpDeviceVerified,
            device_id=device_id,
            timecode=timecode,
            reset_lock=self._succeed(OTP),
            timestamp=at,
        )

    class TotpDeviceVerified(Event):
        TOPIC = "mfa.totp.device_verified.v1"
        device_id: str
        timecode: int
        reset_lock: bool

        def apply(self, aggregate: UserMfa) -> None:
            device = aggregate.totp_devices[self.device_id]
            device.status = TotpStatus.ACTIVE
            device.verified_at = self.timestamp
            device.last_timecode = self.timecode
            device.last_used_at = self.timestamp
            if self.reset_lock:
                aggregate.locks.pop(OTP, None)

    def accept_totp(self, matches: dict[str, int], at: datetime) -> str:
        """Accept a login code. `matches` maps active device ids to the time step the code
        matched; a step at or before a device's last accepted step is a replay. Returns the
        device id that accepted the code."""
        self._ensure_unlocked(OTP, at)
        if not self.active_totp_devices():
            raise NotEnrolledError("TOTP is not enabled")
        fresh = {
            device_id: timecode
            for device_id, timecode in matches.items()
            if device_id in self.totp_devices
            and self.totp_devices[device_id].is_active()
            and not self.totp_devices[device_id].has_used(timecode)
        }
        if not fresh:
            reason = "replayed" if matches else "wrong_code"
            raise self._fail(OTP, reason, at, next(iter(matches), None))
        device_id = min(fresh)
        self.trigger_event(
            self.TotpCodeAccepted,
            device_id=device_id,
            timecode=fresh[device_id],
            reset_lock=self._succeed(OTP),
            timestamp=at,
        )
        return device_id

    class TotpCodeAccepted(Event):
        TOPIC = "mfa.totp.code_accepted.v1"
        device_id: str
        timecode: int
        reset_lock: bool

        def apply(self, aggregate: UserMfa) -> None:
            device = aggregate.totp_devices[self.device_id]
            device.last_timecode = self.timecode
            device.last_used_at = self.timestamp
            if self.reset_lock:
                aggregate.locks.pop(OTP, None)

    def disable_totp_device(self, device_id: str, at: datetime) -> None:
        """An active device stops passing validation until enabled again."""
        device = self.totp_device(device_id)
        if device.status != TotpStatus.ACTIVE:
            raise ConflictError(f"TOTP device is {device.status}, not active")
        self.trigger_event(self.TotpDeviceDisabled, device_id=device_id, timestamp=at)

    class TotpDeviceDisabled(Event):
        TOPIC = "mfa.totp.device_disabled.v1"
        device_id: str

        def apply(self, aggregate: UserMfa) -> None:
            device = aggregate.totp_devices[self.device_id]
            device.status = TotpStatus.DISABLED
            device.disabled_by_user_switch = False

    def enable_totp_device(self, device_id: str, at: datetime) -> None:
        """A disabled (once verified) device passes validation again."""
        device = self.totp_device(device_id)
        if device.status != TotpStatus.DISABLED:
            raise ConflictError(f"TOTP device is {device.status}, not disabled")
        self.trigger_event(self.TotpDeviceEnabled, device_id=device_id, timestamp=at)

    class TotpDeviceEnabled(Event):
        TOPIC = "mfa.totp.device_enabled.v1"
        device_id: str

        def apply(self, aggregate: UserMfa) -> None:
            device = aggregate.totp_devices[self.device_id]
            device.status = TotpStatus.ACTIVE
            device.disabled_by_user_switch = False

    def revoke_totp_device(self, device_id: str, at: datetime) -> None:
        """Remove a device and its secret for good."""
        self.totp_device(device_id)
        self.trigger_event(self.TotpDeviceRevoked, device_id=device_id, timestamp=at)

    class TotpDeviceRevoked(Event):
        TOPIC = "mfa.totp.device_revoked.v1"
        device_id: str

        def apply(self, aggregate: UserMfa) -> None:
            aggregate.totp_devices.pop(self.device_id, None)
            if aggregate.primary_credential == self.device_id:
                aggregate.primary_credential = None
                aggregate.primary_method = None

    def disable_totp(self, at: datetime) -> list[str]:
        """Switch TOTP off: every active device is disabled (and remembered for `enable_totp`)."""
        active = sorted(d.device_id for d in self.active_totp_devices())
        if not active:
            raise NotEnrolledError("TOTP is not enabled")
        self.trigger_event(self.TotpDisabled, device_ids=active, timestamp=at)
        return active

    class TotpDisabled(Event):
        TOPIC = "mfa.totp.disabled.v1"
        device_ids: list[str]

        def apply(self, aggregate: UserMfa) -> None:
            for device_id in self.device_ids:
                device = aggregate.totp_devices[device_id]
                device.status = TotpStatus.DISABLED
                device.disabled_by_user_switch = True

    def enable_totp(self, at: datetime) -> list[str]:
        """Switch TOTP back on: the devices that `disable_totp` switched off become active."""
        switched = sorted(
            d.device_id
            for d in self.totp_devices.values()
            if d.status == TotpStatus.DISABLED and d.disabled_by_user_switch
        )
        if not switched:
            if self.active_totp_devices():
                raise AlreadyEnrolledError("TOTP is already enabled")
            raise NotEnrolledError("no disabled TOTP device to enable; set one up first")
        self.trigger_event(self.TotpEnabled, device_ids=switched, timestamp=at)
        return switched

    class TotpEnabled(Event):
        TOPIC = "mfa.totp.enabled.v1"
        device_ids: list[str]

        def apply(self, aggregate: UserMfa) -> None:
            for device_id in self.device_ids:
                device = aggregate.totp_devices[device_id]
                device.status = TotpStatus.ACTIVE
                device.disabled_by_user_switch = False

    # ---------------------------------------------------------------- backup codes

    def generate_backup_codes(
        self, set_id: str, hashed: list[tuple[str, str]], at: datetime
    ) -> None:
        """Replace any earlier set with one of (salt, hash) pairs; the old codes stop working."""
        self.trigger_event(
            self.BackupCodesGenerated,
            set_id=set_id,
            codes=[[salt, digest] for salt, digest in hashed],
            timestamp=at,
        )

    class BackupCodesGenerated(Event):
        TOPIC = "mfa.backup_codes.generated.v1"
        set_id: str
        codes: list[list[str]]

        def apply(self, aggregate: UserMfa) -> None:
            aggregate.backup_codes = BackupCodeSet(
                set_id=self.set_id,
                generated_at=self.timestamp,
                codes=[BackupCode(salt=salt, hash=digest) for salt, digest in self.codes],
            )

    def use_backup_code(self, code: str, at: datetime) -> int:
        """Spend one unused code; returns how many remain. Its own failure budget."""
        self._ensure_unlocked(BACKUP_CODE, at)
        codes = self.backup_codes
        if codes is None or codes.remaining() == 0:
            raise NotEnrolledError("no unused backup codes")
        index = codes.find_unused(code)
        if index is None:
            raise self._fail(BACKUP_CODE, "wrong_code", at, codes.set_id)
        self.trigger_event(
            self.BackupCodeUsed,
            set_id=codes.set_id,
            index=index,
            reset_lock=self._succeed(BACKUP_CODE),
            timestamp=at,
        )
        return codes.remaining()

    class BackupCodeUsed(Event):
        TOPIC = "mfa.backup_codes.used.v1"
        set_id: str
        index: int
        reset_lock: bool

        def apply(self, aggregate: UserMfa) -> None:
            assert aggregate.backup_codes is not None
            aggregate.backup_codes.codes[self.index].used_at = self.timestamp
            if self.reset_lock:
                aggregate.locks.pop(BACKUP_CODE, None)

    # ---------------------------------------------------------------- methods

    def remove_method(self, method: str, at: datetime) -> None:
        """Remove every credential of one method (`DELETE /mfa/methods/{method}`)."""
        enrolled = {TOTP: bool(self.totp_devices), BACKUP_CODE: self.backup_codes is not None}
        if not enrolled.get(method, False):
            raise NotEnrolledError(f"{method} is not enrolled")
        self.trigger_event(self.MethodRemoved, method=method, timestamp=at)

    class MethodRemoved(Event):
        TOPIC = "mfa.method.removed.v1"
        method: str

        def apply(self, aggregate: UserMfa) -> None:
            if self.method == TOTP:
                aggregate.totp_devices.clear()
            elif self.method == BACKUP_CODE:
                aggregate.backup_codes = None
            if aggregate.primary_method == self.method:
                aggregate.primary_method = None
                aggregate.primary_credential = None

    def set_primary(self, credential_id: str, at: datetime) -> str:
        """Make one usable credential the user's primary method; returns its method."""
        method = self._method_of(credential_id)
        self.trigger_event(
            self.PrimaryMethodSet, credential_id=credential_id, method=method, timestamp=at
        )
        return method

    def _method_of(self, credential_id: str) -> str:
        device = self.totp_devices.get(credential_id)
        if device is not None:
            if not device.is_active():
                raise ConflictError("only an active credential can be primary")
            return TOTP
        if credential_id == BACKUP_CODE:
            raise ConflictError("backup codes are for recovery and cannot be primary")
        raise NotFoundError(f"no credential {credential_id!r}")

    class PrimaryMethodSet(Event):
        TOPIC = "mfa.method.primary_set.v1"
        credential_id: str
        method: str

        def apply(self, aggregate: UserMfa) -> None:
            aggregate.primary_credential = self.credential_id
            aggregate.primary_method = self.method

    def methods(self) -> list[MethodSummary]:
        """One summary per method the service knows, enrolled or not."""
        summaries = []
        for method in KNOWN_METHODS:
            if method == TOTP:
                active = self.active_totp_devices()
                summaries.append(
                    MethodSummary(
                        method=TOTP,
                        enabled=bool(active),
                        credentials=len(self.totp_devices),
                        primary=self.primary_method == TOTP,
                        details={"active_devices": len(active)},
                    )
                )
            elif method == BACKUP_CODE:
                codes = self.backup_codes
                remaining = codes.remaining() if codes else 0
                summaries.append(
                    MethodSummary(
                        method=BACKUP_CODE,
                        enabled=remaining > 0,
                        credentials=1 if codes else 0,
                        primary=False,
                        details={"remaining": remaining, "total": len(codes.codes) if codes else 0},
                    )
                )
            else:
                summaries.append(MethodSummary(method, False, 0, False, {}))
        return summaries

    def mfa_enabled(self) -> bool:
        """MFA is on when any method other than recovery codes is usable."""
        return any(m.enabled for m in self.methods() if m.method != BACKUP_CODE)


# Nested event classes are registered by the aggregate's metaclass; the snapshot class must be
# registered too, or a process that has not written a snapshot yet cannot read one.
register_topic(UserMfa.Snapshot.TOPIC, UserMfa.Snapshot)


def method_summaries(mfa: UserMfa | None) -> list[MethodSummary]:
    """The methods of a user, or of someone who never enrolled anything."""
    if mfa is not None:
        return mfa.methods()
    return [MethodSummary(method, False, 0, False, {}) for method in KNOWN_METHODS]
