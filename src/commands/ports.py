"""Protocols for what the write side needs from the outside world (injected, never imported)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    """Where time comes from; tests pass a fixed or stepping clock."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real UTC clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class Random(Protocol):
    """Where random bytes come from (a CSPRNG in production, seeded in tests)."""

    def token_bytes(self, n: int) -> bytes: ...


class SystemRandom:
    """`secrets`, the operating system's CSPRNG."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


class TokenSigner(Protocol):
    """Signs the service's own tokens (step-up) and publishes their verification keys."""

    kid: str

    def sign(self, claims: dict[str, Any]) -> str: ...
    def jwks(self) -> dict[str, Any]: ...


class UserEpochs(Protocol):
    """Which erasure epoch a user is in (its aggregate id depends on it)."""

    def epoch(self, user_id: str, *, fresh: bool = False) -> int: ...
    def advance(self, user_id: str, from_epoch: int) -> int: ...


class DecoyLocks(Protocol):
    """Lockouts of users without an aggregate (commands.decoys, commands.adapters.decoys)."""

    def refuse(self, user_id: str, factor: str, at: datetime) -> Any: ...
    def locks_of(self, user_id: str, at: datetime) -> list[tuple[str, datetime]]: ...


class PushSender(Protocol):
    """Delivers a push payload to devices at once, within a deadline; for each device, True
    when its push service accepted it."""

    def send_all(self, devices: Sequence[Any], payload: dict[str, Any]) -> list[bool]: ...


class DeliveryError(Exception):
    """A message could not be handed to its provider (the caller voids the code, then 502)."""


class SmsSender(Protocol):
    """Sends a text message to an E.164 number; raises DeliveryError when it cannot."""

    def send_sms(self, to: str, body: str) -> None: ...


class EmailSender(Protocol):
    """Sends a plain-text email; raises DeliveryError when it cannot."""

    def send_email(self, to: str, subject: str, body: str) -> None: ...


class KeyDestroyedError(Exception):
    """A data key was destroyed (its owner erased): nothing may be encrypted under its id again."""


class KeyVault(Protocol):
    """Per-owner data keys, stored wrapped by the master key; destroying one shreds the data.

    `get_or_create` raises KeyDestroyedError for a destroyed key id, never makes a new key.
    """

    def get_or_create(self, key_id: str) -> bytes: ...
    def get(self, key_id: str) -> bytes | None: ...
    def destroy(self, key_id: str) -> None: ...
    def destroyed(self, key_id: str) -> bool: ...
