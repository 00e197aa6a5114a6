"""Reset and erasure of a user's MFA state."""

from __future__ import annotations

import contextlib
from datetime import datetime

from commands.app import Outcome, Services, epoch_aggregate_id, execute, get_aggregate
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
    if get_aggregate(services, agg_id) is not None:
        # NotEnrolledError: erased concurrently by another request; carry on with the keys.
        with contextlib.suppress(NotEnrolledError):
            position = execute(services, user_id, _erase, create=False).position
        services.epochs.advance(user_id, epoch)
    for old in range(epoch + 1):
        old_id = epoch_aggregate_id(services, user_id, old)
        services.app.vault.destroy(str(old_id))
        cache = services.app.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(old_id, evict=True)
    return Outcome(True, position)


def _erase(mfa: UserMfa, now: datetime) -> bool:
    return mfa.erase(now)
