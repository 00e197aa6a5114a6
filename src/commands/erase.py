"""Reset and erasure of a user's MFA state."""

from __future__ import annotations

import contextlib
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from commands.app import (
    Outcome,
    Services,
    epoch_aggregate_id,
    execute,
    forget_cached,
    get_aggregate,
    not_before,
)
from commands.config import load_config
from commands.push import pending_pushes, withdraw_pushes
from domain.config import ChangedBy
from domain.errors import NotEnrolledError, NotFoundError
from domain.push_challenge import WITHDRAWN_AT_RESET
from domain.user_mfa import UserMfa


def reset_user(services: Services, user_id: str, by: ChangedBy, reason: str) -> Outcome[list[str]]:
    """An admin removes every factor of a user (recorded with actor and reason); pushes still
    pending are withdrawn in the same append, so none can be approved after the reset. The
    configuration records it too, in the same append, for the config audit log: by the
    user's aggregate id, so that an erasure of the user leaves no user id there."""
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> list[str]:
        pending = pending_pushes(services, mfa, now)  # (the reset forgets the requests)
        methods = mfa.reset_all(by.actor, reason, now)
        withdraw_pushes(pending, WITHDRAWN_AT_RESET, now, extra)
        config = load_config(services)
        config.record_user_reset(str(mfa.id), methods, by, not_before(now, config.modified_on))
        extra.append(config)
        return methods

    return execute(
        services,
        user_id,
        decide,
        create=False,
        extra=extra,
        missing=lambda: NotFoundError("no MFA state for this user"),
    )


def erase_user(services: Services, user_id: str) -> Outcome[bool]:
    """Crypto-shred a user: append `UserErased`, move the user to a new epoch, destroy the
    data keys of every epoch so far. Idempotent: each step can be repeated safely."""
    assert services.epochs is not None, "erasure needs the epoch index"
    epoch = services.epochs.epoch(user_id, fresh=True)
    agg_id = epoch_aggregate_id(services, user_id, epoch)
    position = 0
    recent_pushes: list[UUID] = []
    mfa = get_aggregate(services, agg_id)
    erased_epochs = epoch  # the ones before `epoch` were erased earlier
    if mfa is not None:
        recent_pushes = [UUID(r.challenge_id) for r in mfa.push_requests]
        # NotEnrolledError: erased concurrently by another request; carry on with the keys.
        with contextlib.suppress(NotEnrolledError):
            position = execute(services, user_id, partial(_erase, agg_id), create=False).position
        services.epochs.advance(user_id, epoch)
        erased_epochs = epoch + 1
    # Only erased epochs' keys: a destroyed key is never created again, so destroying the key
    # of an epoch with no aggregate yet would keep the user from ever enrolling in it.
    for old in range(erased_epochs):
        old_id = epoch_aggregate_id(services, user_id, old)
        services.app.vault.destroy(str(old_id))
        forget_cached(services, old_id)
    # Push challenges are aggregates of their own under the user's key. Older ones than the
    # throttle remembers, or ones cached by other processes, are refused when next loaded
    # (`commands.push.load_challenge` checks that the key still exists).
    for challenge_id in recent_pushes:
        forget_cached(services, challenge_id)
    return Outcome(True, position)


def _erase(agg_id: UUID, mfa: UserMfa, now: datetime) -> bool:
    if mfa.id != agg_id:
        # Another request erased that epoch meanwhile and the user enrolled again: what this
        # request was asked to erase is gone already, and the new enrolment is not its own.
        raise NotEnrolledError("erased concurrently")
    return mfa.erase(now)
