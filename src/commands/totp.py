"""TOTP commands: set up, verify, validate, enable/disable, revoke."""

from __future__ import annotations

import io
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import segno

from commands.app import Outcome, Services, execute, load_user
from commands.verifiers import new_totp_secret, provisioning_uri, totp_timecode
from domain.errors import NotEnrolledError, NotFoundError
from domain.totp import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD, OTP, TotpDevice
from domain.user_mfa import UserMfa


@dataclass(frozen=True)
class TotpSetup:
    """What setup shows once: the secret, the otpauth URI and its QR code."""

    device: TotpDevice
    secret: str
    otpauth_uri: str
    qr_svg: str


def _qr_svg(data: str) -> str:
    buffer = io.BytesIO()
    segno.make(data, error="m", mask=0).save(buffer, kind="svg", scale=4, xmldecl=False, svgns=True)
    return buffer.getvalue().decode()


def set_up_totp(services: Services, user_id: str, name: str | None) -> Outcome[TotpSetup]:
    """Register a pending device with a fresh secret; verified by its first valid code."""
    device_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))
    secret = new_totp_secret(services.random.token_bytes(20))
    # Both before anything is saved: should either fail, no device is left behind.
    uri = provisioning_uri(
        secret, DEFAULT_DIGITS, DEFAULT_PERIOD, DEFAULT_ALGORITHM, user_id, services.totp_issuer
    )
    qr_svg = _qr_svg(uri)

    def decide(mfa: UserMfa, now: datetime) -> TotpDevice:
        mfa.register_totp_device(
            device_id=device_id,
            name=name or _default_name(mfa, now),
            secret=secret,
            digits=DEFAULT_DIGITS,
            period=DEFAULT_PERIOD,
            algorithm=DEFAULT_ALGORITHM,
            at=now,
        )
        return mfa.totp_devices[device_id]

    outcome = execute(services, user_id, decide)
    return Outcome(TotpSetup(outcome.value, secret, uri, qr_svg), outcome.position)


def verify_totp(
    services: Services, user_id: str, code: str, device_id: str | None
) -> Outcome[TotpDevice]:
    """Activate a pending device with its first valid code."""

    def decide(mfa: UserMfa, now: datetime) -> TotpDevice:
        device = mfa.totp_device(device_id) if device_id else mfa.newest_pending_totp_device(now)
        mfa.verify_totp_device(device.device_id, totp_timecode(device, code, now), now)
        return mfa.totp_devices[device.device_id]

    # A named device of a user with no state at all is unknown (404), as for anyone else.
    missing = (lambda: NotFoundError(f"no TOTP device {device_id!r}")) if device_id else None
    return execute(services, user_id, decide, create=False, missing=missing)


def validate_totp(services: Services, user_id: str, code: str) -> Outcome[str]:
    """A login check against every active device; each time step passes once per device."""

    def decide(mfa: UserMfa, now: datetime) -> str:
        return mfa.accept_totp(_matches(mfa, code, now), now)

    return execute(services, user_id, decide, create=False)


class _UnknownUserError(Exception):
    """The named user has no aggregate (never enrolled, or erased)."""


def validate_totp_for_service(services: Services, user_id: str, code: str) -> Outcome[str]:
    """The check another service makes for a user it names (`/internal/mfa/totp/validate`).

    The answer must not tell whether the user exists or has TOTP: a user without active TOTP
    is refused like a wrong code (failures and lockout recorded on their aggregate, bounded
    by the lockout as for anyone), and an unknown user gets the same sequence from
    in-memory decoy lockouts, with nothing written (docs/architecture.md, "Unknown users").
    """

    def decide(mfa: UserMfa, now: datetime) -> str:
        return mfa.accept_totp(_matches(mfa, code, now), now, conceal_enrolment=True)

    try:
        return execute(services, user_id, decide, create=False, missing=_UnknownUserError)
    except _UnknownUserError:
        assert services.decoys is not None
        raise services.decoys.refuse(user_id, OTP, services.clock.now()) from None


def _matches(mfa: UserMfa, code: str, now: datetime) -> dict[str, int]:
    """Active device id → the time step `code` matches on it."""
    matches: dict[str, int] = {}
    for device in mfa.active_totp_devices():
        timecode = totp_timecode(device, code, now)
        if timecode is not None:
            matches[device.device_id] = timecode
    return matches


def disable_totp_device(services: Services, user_id: str, device_id: str) -> Outcome[TotpDevice]:
    """Stop one device from passing validation."""

    def decide(mfa: UserMfa, now: datetime) -> TotpDevice:
        mfa.disable_totp_device(device_id, now)
        return mfa.totp_devices[device_id]

    return execute(services, user_id, decide, create=False, missing=_no_device(device_id))


def enable_totp_device(services: Services, user_id: str, device_id: str) -> Outcome[TotpDevice]:
    """Let a disabled device pass validation again."""

    def decide(mfa: UserMfa, now: datetime) -> TotpDevice:
        mfa.enable_totp_device(device_id, now)
        return mfa.totp_devices[device_id]

    return execute(services, user_id, decide, create=False, missing=_no_device(device_id))


def revoke_totp_device(services: Services, user_id: str, device_id: str) -> Outcome[None]:
    """Remove a device and its secret."""
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.revoke_totp_device(device_id, now),
        create=False,
        missing=_no_device(device_id),
    )


def disable_totp(services: Services, user_id: str) -> Outcome[list[str]]:
    """Switch TOTP off for the user (every active device). An unknown user gets the answer of
    a known one without TOTP (a service names the user: no hint whether it exists)."""
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.disable_totp(now),
        create=False,
        missing=lambda: NotEnrolledError("TOTP is not enabled"),
    )


def enable_totp(services: Services, user_id: str) -> Outcome[list[str]]:
    """Switch TOTP back on (the devices `disable_totp` switched off)."""
    return execute(services, user_id, lambda mfa, now: mfa.enable_totp(now), create=False)


def get_totp_devices(services: Services, user_id: str) -> list[TotpDevice]:
    """The user's devices straight from the aggregate (for user-scoped decisions)."""
    mfa = load_user(services, user_id)
    return [] if mfa is None else list(mfa.totp_devices.values())


def _default_name(mfa: UserMfa, now: datetime) -> str:
    """The first "Authenticator n" that no device of the user is called (an expired set-up,
    which this one removes, does not count)."""
    taken = {device.name for device in mfa.unexpired_totp_devices(now)}
    return next(
        name for name in (f"Authenticator {n}" for n in itertools.count(1)) if name not in taken
    )


def _no_device(device_id: str) -> Callable[[], Exception]:
    return lambda: NotFoundError(f"no TOTP device {device_id!r}")
