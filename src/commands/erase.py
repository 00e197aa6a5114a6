"""Reset and erasure of a user's MFA state."""

from __future__ import annotations

import contextlib
from datetime import datetime
from uuid import UUID

from commands.app import (
    Outcome,
    Services,
    epoch_aggregate_id,
    execute,
    forget_cached,
    get_aggregate,
)
from domain.errors import NotEnrolledError
from domain.user_mfa import UserMfa


def reset_user(services: Services, user_id: str, actor: str, reason: str) -> Outcome[list[str]]:
    """An admin removes every factor of a user (recorded with actor and reason)."""

    def decide(mfa: UserMfa, now: datetime) -> list[str]:
        return mfa.reset_all(actor, reason, now)

    return execute(services, user_id, decide, create=False)


def erase_user(services: Services, user_id: str) -> Outcome[bool]:
    """Crypto-shred a user: append `UserErased`, move the user to a new epoch, destroy the
    data keys of every epoch so far. Idempotent: each step can be repeated safely."""
    assert services.epochs is not None, "erasure needs the epoch index"
    epoch = services.epochs.epoch(user_id, fresh=True)
    agg_id = epoch_aggregate_id(services, user_id, epoch)
    position = 0
    recent_pushes: list[UUID] = []
    mfa = get_aggregate(services, agg_id)
    if mfa is not None:
        recent_pushes = [UUID(r.challenge_id) for r in mfa.push_requests]
        # NotEnrolledError: erased concurrently by another request; carry on with the keys.
        with contextlib.suppress(NotEnrolledError):
            position = execute(services, user_id, _erase, create=False).position
        services.epochs.advance(user_id, epoch)
    for old in range(epoch + 1):
        old_id = epoch_aggregate_id(services, user_id, old)
        services.app.vault.destroy(str(old_id))
        forget_cached(services, old_id)
    # Push challenges are aggregates of their own under the user's key. Older ones than the
    # throttle remembers, or ones cached by other processes, are refused when next loaded
    # (`commands.push.load_challenge` checks that the key still exists).
    for challenge_id in recent_pushes:
        forget_cached(services, challenge_id)
    return Outcome(True, position)


def _erase(mfa: UserMfa, now: datetime) -> bool:
    return mfa.erase(now)
