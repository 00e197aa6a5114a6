"""Reset (an admin removes every factor) and erasure (crypto-shredding of a user's data).

`UserErased` is stored in clear and carries nothing about the user: once the user's data key
is destroyed, every earlier event reads as redacted, and this event still says what happened.
An erased aggregate is final; the user starts afresh under a new aggregate id (a new epoch).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.base import UserMfaEvent, UserMfaState
from domain.errors import DomainError


class UserErasedError(DomainError):
    """The aggregate belongs to an erased user: nothing may be added to it."""

    code = "conflict"


class UserMfaReset(UserMfaEvent):
    """An admin removed every factor of the user (with a reason, for auditors)."""

    TOPIC = "mfa.user.reset.v1"
    actor: str
    reason: str
    methods: list[str]

    def apply(self, aggregate: ErasureMixin) -> None:
        aggregate.clear_factors()


class UserErased(UserMfaEvent):
    """The user's data was shredded. Stored in clear: no user id, no payload."""

    TOPIC = "mfa.user.erased.v1"
    STORED_IN_CLEAR = True

    def mutate(self, aggregate: Any) -> Any:
        # With the key destroyed the earlier events are redacted and there is no aggregate
        # left to mutate: the user's stream simply ends here.
        if aggregate is None:
            return None
        return super().mutate(aggregate)

    def apply(self, aggregate: ErasureMixin) -> None:
        aggregate.clear_factors()
        aggregate.erased = True


class ErasureMixin(UserMfaState):
    """Reset and erasure of the whole user."""

    erased: bool

    def clear_factors(self) -> None:
        """Overridden by the aggregate: forget every credential and pending ceremony."""

    def enrolled_methods(self) -> list[str]:
        """Overridden by the aggregate: the methods the user has credentials for."""
        return []

    def ensure_not_erased(self) -> None:
        if self.erased:
            raise UserErasedError("this user was erased")

    def reset_all(self, actor: str, reason: str, at: datetime) -> list[str]:
        """Remove every factor; returns the methods that were enrolled."""
        self.ensure_not_erased()
        methods = self.enrolled_methods()
        self.trigger_event(UserMfaReset, actor=actor, reason=reason, methods=methods, timestamp=at)
        return methods

    def erase(self, at: datetime) -> bool:
        """Mark the user erased (once); False when it already was."""
        if self.erased:
            return False
        self.trigger_event(UserErased, timestamp=at)
        return True
