"""Trusted-device commands: remember (token shown once), check, revoke, clean up."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime

from commands.app import Outcome, Services, execute, load_user
from domain.errors import NotFoundError
from domain.trusted_devices import TOKEN_BYTES, TrustedDevice, hash_device_token
from domain.user_mfa import UserMfa


@dataclass(frozen=True)
class RememberedDevice:
    device: TrustedDevice
    token: str


def remember_device(
    services: Services, user_id: str, name: str | None, ttl_days: int | None
) -> Outcome[RememberedDevice]:
    """A new trusted device with a 256-bit token, returned this once and stored hashed."""
    token = base64.urlsafe_b64encode(services.random.token_bytes(TOKEN_BYTES)).decode().rstrip("=")
    device_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))
    days = ttl_days or services.trusted_device_days

    def decide(mfa: UserMfa, now: datetime) -> RememberedDevice:
        device = mfa.remember_device(
            device_id, name or "Trusted device", hash_device_token(token), days, now
        )
        return RememberedDevice(device, token)

    return execute(services, user_id, decide)


def check_device(services: Services, user_id: str, token: str) -> TrustedDevice | None:
    """The valid trusted device of this user holding `token`, or None (no write)."""
    mfa = load_user(services, user_id)
    if mfa is None or not token:
        return None
    return mfa.find_trusted_device(hash_device_token(token), services.clock.now())


def revoke_device(services: Services, user_id: str, device_id: str) -> Outcome[None]:
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.revoke_trusted_device(device_id, now),
        create=False,
        missing=lambda: NotFoundError("no such trusted device"),
    )


def revoke_all_devices(services: Services, user_id: str) -> Outcome[int]:
    mfa = load_user(services, user_id)
    if mfa is None:
        return Outcome(0, 0)
    return execute(services, user_id, lambda m, now: m.revoke_all_trusted_devices(now))


def clean_up_devices(services: Services, user_id: str) -> Outcome[int]:
    mfa = load_user(services, user_id)
    if mfa is None:
        return Outcome(0, 0)
    return execute(services, user_id, lambda m, now: m.clean_up_trusted_devices(now))
