"""Protocols for what the write side needs from the outside world (injected, never imported)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Protocol


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


class KeyVault(Protocol):
    """Per-owner data keys, stored wrapped by the master key; destroying one shreds the data."""

    def get_or_create(self, key_id: str) -> bytes: ...
    def get(self, key_id: str) -> bytes | None: ...
    def destroy(self, key_id: str) -> None: ...
