"""TOTP devices (RFC 6238): state and the replay rule. Code computation lives in commands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

DEFAULT_DIGITS = 6
DEFAULT_PERIOD = 30
DEFAULT_ALGORITHM = "SHA1"
MAX_TOTP_DEVICES = 10


class TotpStatus(StrEnum):
    """A device is pending until its first valid code, then active or disabled."""

    PENDING = "pending"
    ACTIVE = "active"
    DISABLED = "disabled"


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

    def has_used(self, timecode: int) -> bool:
        """A time step at or before the last accepted one is a replay."""
        return self.last_timecode is not None and timecode <= self.last_timecode
