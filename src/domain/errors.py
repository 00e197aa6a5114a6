"""Domain errors: each names the condition that refused a command."""

from __future__ import annotations

import math
from datetime import datetime, timedelta


class DomainError(Exception):
    """Base of every refusal the domain can give; `code` is the stable API problem code."""

    code = "domain_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidCodeError(DomainError):
    """A presented code was wrong or already used; counts against the factor's budget."""

    code = "invalid_code"

    def __init__(self, detail: str, attempts_remaining: int) -> None:
        super().__init__(detail)
        self.attempts_remaining = attempts_remaining


class CodeReplayedError(InvalidCodeError):
    """A TOTP time step (or other one-time secret) was presented a second time."""


def retry_after(until: datetime, now: datetime) -> int:
    """Whole seconds until `until`, rounded up: waiting that long is always enough."""
    return max(1, math.ceil((until - now) / timedelta(seconds=1)))


class FactorLockedError(DomainError):
    """The factor is locked after too many failures; no code passes until `until`."""

    code = "locked"

    def __init__(self, detail: str, until: datetime, now: datetime) -> None:
        super().__init__(detail)
        self.until = until
        self.retry_after_s = retry_after(until, now)


class RateLimitedError(DomainError):
    """Too many requests of this kind for now (sends, challenges); retry after `retry_after_s`."""

    code = "rate_limited"

    def __init__(self, detail: str, until: datetime, now: datetime) -> None:
        super().__init__(detail)
        self.until = until
        self.retry_after_s = retry_after(until, now)


class DeliveryFailedError(DomainError):
    """A code or push could not be delivered; nothing usable was left behind (502)."""

    code = "delivery_failed"


class NotEnrolledError(DomainError):
    """The user has no usable credential of the factor asked for."""

    code = "not_enrolled"


class AlreadyEnrolledError(DomainError):
    """The credential or factor is already enrolled (or verified)."""

    code = "already_enrolled"


class NotFoundError(DomainError):
    """No such credential (for this user)."""

    code = "not_found"


class ConflictError(DomainError):
    """The request conflicts with the current state."""

    code = "conflict"


class LimitExceededError(DomainError):
    """A per-user cap (devices, credentials) would be exceeded."""

    code = "limit_exceeded"


class ChallengeExpiredError(DomainError):
    """The challenge (or registration ceremony) is past its expiry."""

    code = "challenge_expired"


class ChallengePendingError(DomainError):
    """The challenge waits for an answer elsewhere (a push not yet approved): ask again."""

    code = "challenge_pending"


class ChallengeUsedError(DomainError):
    """The challenge was already completed: every challenge works once."""

    code = "challenge_used"
