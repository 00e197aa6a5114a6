"""TOTP devices (RFC 6238): state and the replay rule. Code computation lives in commands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.base import UserMfaEvent, UserMfaState, reset_lock
from domain.errors import (
    AlreadyEnrolledError,
    ChallengeExpiredError,
    ConflictError,
    LimitExceededError,
    NotEnrolledError,
    NotFoundError,
)

DEFAULT_DIGITS = 6
DEFAULT_PERIOD = 30
DEFAULT_ALGORITHM = "SHA1"
MAX_TOTP_DEVICES = 10
# A set-up not verified within this time can no longer be: its secret, shown once, may have
# been seen by someone else meanwhile, and an abandoned set-up should not hold a slot (or its
# name) for good. The next set-up removes it (`TotpSetupExpired`).
PENDING_TOTP_TTL = timedelta(hours=1)
OTP = "otp"  # the lockout factor shared by TOTP verification and validation


class TotpStatus(StrEnum):
    """A device is pending until its first valid code, then active or disabled."""

    PENDING = "pending"
    ACTIVE = "active"
    DISABLED = "disabled"


def setup_expires_at(status: str, created_at: datetime) -> datetime | None:
    """Until when a device in `status`, set up at `created_at`, can be verified: None once
    it is verified."""
    return created_at + PENDING_TOTP_TTL if status == TotpStatus.PENDING else None


@dataclass
class TotpDevice:
    """One authenticator app holding a shared secret."""

    device_id: str
    name: str
    secret: str
    digits: int
    period: int
    algorithm: str
    status: str
    created_at: datetime
    verified_at: datetime | None = None
    last_timecode: int | None = None
    last_used_at: datetime | None = None
    disabled_by_user_switch: bool = False

    def is_active(self) -> bool:
        """Only active devices pass login validation."""
        return self.status == TotpStatus.ACTIVE

    @property
    def expires_at(self) -> datetime | None:
        """Until when this device, if pending, can be verified."""
        return setup_expires_at(self.status, self.created_at)

    def setup_expired(self, at: datetime) -> bool:
        """A pending device whose set-up can no longer be verified."""
        return self.expires_at is not None and at >= self.expires_at

    def has_used(self, timecode: int) -> bool:
        """A time step at or before the last accepted one is a replay."""
        return self.last_timecode is not None and timecode <= self.last_timecode


class TotpDeviceRegistered(UserMfaEvent):
    TOPIC = "mfa.totp.device_registered.v1"
    device_id: str
    name: str
    secret: str
    digits: int
    period: int
    algorithm: str

    def apply(self, aggregate: TotpMixin) -> None:
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


class TotpDeviceVerified(UserMfaEvent):
    TOPIC = "mfa.totp.device_verified.v1"
    device_id: str
    timecode: int
    reset_lock: bool

    def apply(self, aggregate: TotpMixin) -> None:
        device = aggregate.totp_devices[self.device_id]
        device.status = TotpStatus.ACTIVE
        device.verified_at = self.timestamp
        device.last_timecode = self.timecode
        device.last_used_at = self.timestamp
        reset_lock(aggregate, OTP, self.reset_lock)


class TotpCodeAccepted(UserMfaEvent):
    TOPIC = "mfa.totp.code_accepted.v1"
    device_id: str
    timecode: int
    reset_lock: bool

    def apply(self, aggregate: TotpMixin) -> None:
        device = aggregate.totp_devices[self.device_id]
        device.last_timecode = self.timecode
        device.last_used_at = self.timestamp
        reset_lock(aggregate, OTP, self.reset_lock)


class TotpSetupExpired(UserMfaEvent):
    """A pending device not verified within PENDING_TOTP_TTL was removed with its secret."""

    TOPIC = "mfa.totp.setup_expired.v1"
    device_id: str

    def apply(self, aggregate: TotpMixin) -> None:
        aggregate.totp_devices.pop(self.device_id, None)


class TotpDeviceDisabled(UserMfaEvent):
    TOPIC = "mfa.totp.device_disabled.v1"
    device_id: str

    def apply(self, aggregate: TotpMixin) -> None:
        device = aggregate.totp_devices[self.device_id]
        device.status = TotpStatus.DISABLED
        device.disabled_by_user_switch = False


class TotpDeviceEnabled(UserMfaEvent):
    TOPIC = "mfa.totp.device_enabled.v1"
    device_id: str

    def apply(self, aggregate: TotpMixin) -> None:
        device = aggregate.totp_devices[self.device_id]
        device.status = TotpStatus.ACTIVE
        device.disabled_by_user_switch = False


class TotpDeviceRevoked(UserMfaEvent):
    TOPIC = "mfa.totp.device_revoked.v1"
    device_id: str

    def apply(self, aggregate: TotpMixin) -> None:
        aggregate.totp_devices.pop(self.device_id, None)
        aggregate.forget_primary(self.device_id)


class TotpDisabled(UserMfaEvent):
    TOPIC = "mfa.totp.disabled.v1"
    device_ids: list[str]

    def apply(self, aggregate: TotpMixin) -> None:
        for device_id in self.device_ids:
            device = aggregate.totp_devices[device_id]
            device.status = TotpStatus.DISABLED
            device.disabled_by_user_switch = True


class TotpEnabled(UserMfaEvent):
    TOPIC = "mfa.totp.enabled.v1"
    device_ids: list[str]

    def apply(self, aggregate: TotpMixin) -> None:
        for device_id in self.device_ids:
            device = aggregate.totp_devices[device_id]
            device.status = TotpStatus.ACTIVE
            device.disabled_by_user_switch = False


class TotpMixin(UserMfaState):
    """TOTP devices of a user: registration, verification, login validation, switches."""

    totp_devices: dict[str, TotpDevice]

    def forget_primary(self, credential_id: str) -> None:
        """Overridden by the aggregate: a removed credential stops being primary."""

    def totp_device(self, device_id: str) -> TotpDevice:
        """A TOTP device of this user, or NotFoundError."""
        try:
            return self.totp_devices[device_id]
        except KeyError:
            raise NotFoundError(f"no TOTP device {device_id!r}") from None

    def unexpired_totp_devices(self, at: datetime) -> list[TotpDevice]:
        """Every device but set-ups that expired unverified (which the next set-up removes)."""
        return [d for d in self.totp_devices.values() if not d.setup_expired(at)]

    def active_totp_devices(self) -> list[TotpDevice]:
        """Devices that pass login validation."""
        return [d for d in self.totp_devices.values() if d.is_active()]

    def newest_pending_totp_device(self, at: datetime) -> TotpDevice:
        """The device a bare `verify` (no device id) applies to: the one set up last (in the
        order of the user's events, not by time: two set-ups can share a time, or be stamped
        in the other order by clocks that differ) whose set-up has not expired."""
        pending = [d for d in self.totp_devices.values() if d.status == TotpStatus.PENDING]
        if not pending:
            raise NotEnrolledError("no TOTP device is waiting for verification")
        unexpired = [d for d in pending if not d.setup_expired(at)]
        if not unexpired:
            raise _setup_expired()
        return unexpired[-1]

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
        """Add a pending device; at most MAX_TOTP_DEVICES per user, names unique. Set-ups
        that expired unverified hold neither a slot nor a name: a set-up that goes ahead
        removes them first (nothing is written for one that is refused)."""
        kept = self.unexpired_totp_devices(at)
        if len(kept) >= MAX_TOTP_DEVICES:
            raise LimitExceededError(f"at most {MAX_TOTP_DEVICES} TOTP devices per user")
        if any(d.name == name for d in kept):
            raise AlreadyEnrolledError(f"a TOTP device named {name!r} exists already")
        for expired in [d for d in self.totp_devices.values() if d.setup_expired(at)]:
            self.trigger_event(TotpSetupExpired, device_id=expired.device_id, timestamp=at)
        self.trigger_event(
            TotpDeviceRegistered,
            device_id=device_id,
            name=name,
            secret=secret,
            digits=digits,
            period=period,
            algorithm=algorithm,
            timestamp=at,
        )

    def verify_totp_device(self, device_id: str, timecode: int | None, at: datetime) -> None:
        """The first valid code (`timecode` matched by the verifier) activates a pending device."""
        device = self.totp_device(device_id)
        if device.status != TotpStatus.PENDING:
            raise AlreadyEnrolledError("this TOTP device is already verified")
        if device.setup_expired(at):
            raise _setup_expired()
        self._ensure_unlocked(OTP, at)
        if timecode is None:
            raise self._fail(OTP, "wrong_code", at, device_id)
        self.trigger_event(
            TotpDeviceVerified,
            device_id=device_id,
            timecode=timecode,
            reset_lock=self._succeed(OTP),
            timestamp=at,
        )

    def accept_totp(
        self, matches: dict[str, int], at: datetime, *, conceal_enrolment: bool = False
    ) -> str:
        """Accept a login code. `matches` maps active device ids to the time step the code
        matched; a step at or before a device's last accepted step is a replay. Returns the
        device id that accepted the code. With `conceal_enrolment` (a caller that names the
        user) a user without active TOTP is refused exactly like a wrong code, lockout
        included, so the answer does not tell whether the user has TOTP."""
        self._ensure_unlocked(OTP, at)
        if not self.active_totp_devices():
            if conceal_enrolment:
                raise self._fail(OTP, "not_enrolled", at)
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
            TotpCodeAccepted,
            device_id=device_id,
            timecode=fresh[device_id],
            reset_lock=self._succeed(OTP),
            timestamp=at,
        )
        return device_id

    def disable_totp_device(self, device_id: str, at: datetime) -> None:
        """An active device stops passing validation until enabled again."""
        device = self.totp_device(device_id)
        if device.status != TotpStatus.ACTIVE:
            raise ConflictError(f"TOTP device is {device.status}, not active")
        self.trigger_event(TotpDeviceDisabled, device_id=device_id, timestamp=at)

    def enable_totp_device(self, device_id: str, at: datetime) -> None:
        """A disabled (once verified) device passes validation again."""
        device = self.totp_device(device_id)
        if device.status != TotpStatus.DISABLED:
            raise ConflictError(f"TOTP device is {device.status}, not disabled")
        self.trigger_event(TotpDeviceEnabled, device_id=device_id, timestamp=at)

    def revoke_totp_device(self, device_id: str, at: datetime) -> None:
        """Remove a device and its secret for good."""
        self.totp_device(device_id)
        self.trigger_event(TotpDeviceRevoked, device_id=device_id, timestamp=at)

    def disable_totp(self, at: datetime) -> list[str]:
        """Switch TOTP off: every active device is disabled (and remembered for `enable_totp`)."""
        active = sorted(d.device_id for d in self.active_totp_devices())
        if not active:
            raise NotEnrolledError("TOTP is not enabled")
        self.trigger_event(TotpDisabled, device_ids=active, timestamp=at)
        return active

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
        self.trigger_event(TotpEnabled, device_ids=switched, timestamp=at)
        return switched


def _setup_expired() -> ChallengeExpiredError:
    return ChallengeExpiredError(
        f"this TOTP set-up was not verified within {PENDING_TOTP_TTL.total_seconds() // 60:.0f} "
        "minutes: "
        "set the device up again"
    )
