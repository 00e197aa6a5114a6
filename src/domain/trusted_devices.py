"""Trusted ("remembered") devices: a random token, stored hashed, with a fixed expiry."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.base import UserMfaEvent, UserMfaState
from domain.errors import LimitExceededError, NotFoundError

DEFAULT_TTL_DAYS = 30
MAX_TTL_DAYS = 90
MAX_TRUSTED_DEVICES = 10
KEPT_TRUSTED_DEVICES = 2 * MAX_TRUSTED_DEVICES  # expired ones included; see remember_device
TOKEN_BYTES = 32  # 256 bits


def hash_device_token(token: str) -> str:
    """SHA-256 of a 256-bit random token: no salt or slow hash needed at that entropy."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TrustedDevice:
    """A device the user chose to remember; only its token's hash is kept."""

    device_id: str
    name: str
    token_hash: str
    created_at: datetime
    expires_at: datetime

    def is_valid(self, at: datetime) -> bool:
        return at < self.expires_at


class TrustedDeviceRemembered(UserMfaEvent):
    TOPIC = "mfa.trusted_device.remembered.v1"
    device_id: str
    name: str
    token_hash: str
    expires_at: datetime

    def apply(self, aggregate: TrustedDeviceMixin) -> None:
        aggregate.trusted_devices[self.device_id] = TrustedDevice(
            self.device_id, self.name, self.token_hash, self.timestamp, self.expires_at
        )


class TrustedDevicesRevoked(UserMfaEvent):
    """One, all, or the expired ones (`reason` says which)."""

    TOPIC = "mfa.trusted_device.revoked.v1"
    device_ids: list[str]
    reason: str

    def apply(self, aggregate: TrustedDeviceMixin) -> None:
        for device_id in self.device_ids:
            aggregate.trusted_devices.pop(device_id, None)


class TrustedDeviceMixin(UserMfaState):
    """A user's remembered devices."""

    trusted_devices: dict[str, TrustedDevice]

    def trusted_device(self, device_id: str) -> TrustedDevice:
        try:
            return self.trusted_devices[device_id]
        except KeyError:
            raise NotFoundError(f"no trusted device {device_id!r}") from None

    def remember_device(
        self, device_id: str, name: str, token_hash: str, ttl_days: int, at: datetime
    ) -> TrustedDevice:
        """Remember a device for `ttl_days` (capped); at most MAX_TRUSTED_DEVICES valid ones.
        Once the user holds KEPT_TRUSTED_DEVICES, expired ones included, the expired ones are
        cleaned up first (the cap counts only valid ones, so they would pile up for good)."""
        valid = [d for d in self.trusted_devices.values() if d.is_valid(at)]
        if len(valid) >= MAX_TRUSTED_DEVICES:
            raise LimitExceededError(
                f"at most {MAX_TRUSTED_DEVICES} trusted devices; revoke one first"
            )
        if len(self.trusted_devices) >= KEPT_TRUSTED_DEVICES:
            self.clean_up_trusted_devices(at)
        days = max(1, min(ttl_days, MAX_TTL_DAYS))
        self.trigger_event(
            TrustedDeviceRemembered,
            device_id=device_id,
            name=name,
            token_hash=token_hash,
            expires_at=at + timedelta(days=days),
            timestamp=at,
        )
        return self.trusted_devices[device_id]

    def find_trusted_device(self, token_hash: str, at: datetime) -> TrustedDevice | None:
        """The valid device whose token hashes to `token_hash` (constant-time comparison)."""
        found = None
        for device in self.trusted_devices.values():
            if hmac.compare_digest(device.token_hash, token_hash) and device.is_valid(at):
                found = device
        return found

    def revoke_trusted_device(self, device_id: str, at: datetime) -> None:
        self.trusted_device(device_id)
        self.trigger_event(
            TrustedDevicesRevoked, device_ids=[device_id], reason="revoked", timestamp=at
        )

    def revoke_all_trusted_devices(self, at: datetime) -> int:
        ids = sorted(self.trusted_devices)
        if ids:
            self.trigger_event(TrustedDevicesRevoked, device_ids=ids, reason="all", timestamp=at)
        return len(ids)

    def clean_up_trusted_devices(self, at: datetime) -> int:
        expired = sorted(d.device_id for d in self.trusted_devices.values() if not d.is_valid(at))
        if expired:
            self.trigger_event(
                TrustedDevicesRevoked, device_ids=expired, reason="expired", timestamp=at
            )
        return len(expired)
