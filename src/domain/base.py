"""What every part of the UserMfa aggregate builds on: the event base and lockout bookkeeping.

The aggregate is composed of one mixin per factor (totp, backup_codes, webauthn, ...); each
module holds that factor's entity, events and rules. This module holds what they share.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from eventsourcing.domain import Aggregate

from domain.errors import CodeReplayedError, FactorLockedError, InvalidCodeError
from domain.lockout import FactorLock, lock_duration


class UserMfaEvent(Aggregate.Event):
    """Base of every UserMfa event."""


class VerificationFailed(UserMfaEvent):
    """A presented factor was wrong (or replayed); counts towards the factor's lockout."""

    TOPIC = "mfa.verification.failed.v1"
    factor: str
    reason: str
    credential_id: str | None

    def apply(self, aggregate: UserMfaState) -> None:
        lock = aggregate.locks.setdefault(self.factor, FactorLock())
        if lock.locked_until is not None and self.timestamp >= lock.locked_until:
            lock.locked_until = None
        lock.record_failure()


class FactorLocked(UserMfaEvent):
    """Too many consecutive failures: the factor refuses everything until `until`."""

    TOPIC = "mfa.lockout.factor_locked.v1"
    factor: str
    until: datetime
    level: int

    def apply(self, aggregate: UserMfaState) -> None:
        lock = aggregate.locks.setdefault(self.factor, FactorLock())
        lock.lock(self.until)
        lock.level = self.level


class AttemptRefusedWhileLocked(UserMfaEvent):
    """Attempts were refused during a lock (recorded once per lock, not per attempt)."""

    TOPIC = "mfa.lockout.attempt_refused.v1"
    factor: str

    def apply(self, aggregate: UserMfaState) -> None:
        lock = aggregate.locks.setdefault(self.factor, FactorLock())
        lock.refusals_recorded_for = lock.locked_until


class UserMfaState:
    """The state every factor mixin may use, and the lockout rules they all follow."""

    locks: dict[str, FactorLock]

    if TYPE_CHECKING:

        def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None: ...

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
            self.trigger_event(AttemptRefusedWhileLocked, factor=factor, timestamp=at)
        raise FactorLockedError(f"{factor} verification is locked", lock.locked_until, at)

    def _fail(
        self, factor: str, reason: str, at: datetime, credential_id: str | None = None
    ) -> InvalidCodeError:
        """Record a failure (and a lock when it is the last allowed); the error to raise."""
        lock = self.lock_for(factor)
        locks_now = lock.next_failure_locks()
        self.trigger_event(
            VerificationFailed,
            factor=factor,
            reason=reason,
            credential_id=credential_id,
            timestamp=at,
        )
        if locks_now:
            until = at + lock_duration(lock.level + 1)
            self.trigger_event(
                FactorLocked, factor=factor, until=until, level=lock.level + 1, timestamp=at
            )
        remaining = 0 if locks_now else self.lock_for(factor).attempts_remaining()
        error_cls = CodeReplayedError if reason == "replayed" else InvalidCodeError
        return error_cls("the code is invalid or was already used", remaining)

    def _succeed(self, factor: str) -> bool:
        """Whether a success must reset the factor's lock state (part of the success event)."""
        lock = self.locks.get(factor)
        return lock is not None and (lock.failures > 0 or lock.level > 0)


def reset_lock(aggregate: UserMfaState, factor: str, reset: bool) -> None:
    """Apply a success's lock reset."""
    if reset:
        aggregate.locks.pop(factor, None)


class _Expiring(Protocol):
    @property
    def expires_at(self) -> datetime: ...


_E = TypeVar("_E", bound=_Expiring)


def forget_expired(entries: dict[str, _E], at: datetime, kept_for: timedelta) -> None:
    """Drop the entries (challenges, ceremonies) that expired more than `kept_for` before
    `at`. Until then an expired one still answers 410 and a used one 409, not 404: a client
    polling an old challenge learns that it expired even after the user opened a new one."""
    for entry_id, entry in list(entries.items()):
        if entry.expires_at + kept_for <= at:
            del entries[entry_id]
