"""Commands across methods: remove a method, choose the primary credential."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from commands.app import Outcome, Services, execute
from commands.push import withdraw_unanswerable_pushes
from domain.errors import NotFoundError
from domain.user_mfa import UserMfa


def remove_method(services: Services, user_id: str, method: str) -> Outcome[None]:
    """Remove every credential of one method (for push: pending pushes are withdrawn)."""
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> None:
        mfa.remove_method(method, now)
        withdraw_unanswerable_pushes(services, mfa, now, extra)

    return execute(services, user_id, decide, create=False, extra=extra)


def set_primary(services: Services, user_id: str, credential_id: str) -> Outcome[str]:
    """Make a credential the primary one; the value is its method."""
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.set_primary(credential_id, now),
        create=False,
        missing=lambda: NotFoundError(f"no credential {credential_id!r}"),
    )
