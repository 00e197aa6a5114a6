"""Lockout policy: consecutive failures lock a factor, with escalating time-based back-off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_CONSECUTIVE_FAILURES = 5
BASE_LOCK_SECONDS = 30
MAX_LOCK_SECONDS = 3600


def lock_duration(level: int) -> timedelta:
    """The lock for the `level`-th lockout in a row: 30 s, 60 s, 120 s, ... capped at one hour."""
    seconds = BASE_LOCK_SECONDS * (2 ** max(0, level - 1))
    return timedelta(seconds=min(seconds, MAX_LOCK_SECONDS))


@dataclass
class FactorLock:
    """Failure bookkeeping for one factor (`otp`, `backup_code`, ...)."""

    failures: int = 0
    level: int = 0
    locked_until: datetime | None = None
    refusals_recorded_for: datetime | None = None

    def is_locked(self, now: datetime) -> bool:
        """A factor is locked until its `locked_until` has passed (auto-unlock, no event)."""
        return self.locked_until is not None and now < self.locked_until

    def attempts_remaining(self) -> int:
        """Failures left before the next lockout."""
        return max(0, MAX_CONSECUTIVE_FAILURES - self.failures)

    def next_failure_locks(self) -> bool:
        """True when one more failure reaches the lockout threshold."""
        return self.failures + 1 >= MAX_CONSECUTIVE_FAILURES

    def record_failure(self) -> None:
        """Count one failure (after an expired lock the count starts again)."""
        self.failures += 1

    def lock(self, until: datetime) -> None:
        """Lock the factor; the failure count restarts for the period after it."""
        self.level += 1
        self.locked_until = until
        self.failures = 0

    def reset(self) -> None:
        """A success clears the failures and the escalation."""
        self.failures = 0
        self.level = 0
        self.locked_until = None
        self.refusals_recorded_for = None

    def fail_unrecorded(self, at: datetime) -> int:
        """Count one failure of a lock that lives outside the event store (users the service
        does not know), exactly as `VerificationFailed` and `FactorLocked` change a user's
        lock; returns the attempts remaining (0 when this failure locked the factor)."""
        locks_now = self.next_failure_locks()
        if self.locked_until is not None and at >= self.locked_until:
            self.locked_until = None
        self.record_failure()
        if locks_now:
            self.lock(at + lock_duration(self.level + 1))
            return 0
        return self.attempts_remaining()
