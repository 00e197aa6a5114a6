"""Answers about users the service does not know, indistinguishable from a wrong code.

A caller that names the user (`POST /internal/mfa/totp/validate {user_id, code}`) must not
learn whether that user exists: an unknown user is refused like a known user's wrong code,
with the same `attempts_remaining` sequence, the same lock after the fifth failure and the
same escalating lock durations. Nothing is written for unknown users (a probe must not turn
into a write on the serialized event store): their failure counts live in this process's
memory, at most `size` of them, the least recently probed forgotten first, keyed by a hash
of the user id so that an entry costs the same whatever the id's length.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from datetime import datetime

from domain.errors import DomainError, FactorLockedError, InvalidCodeError
from domain.lockout import FactorLock

DEFAULT_SIZE = 100_000
# The refusals' texts: the same as the aggregate's (domain/base.py), so that nothing differs.
INVALID_CODE = "the code is invalid or was already used"


class DecoyLockouts:
    """In-memory lockout state of (user id, factor) pairs that have no aggregate."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._locks: OrderedDict[bytes, FactorLock] = OrderedDict()
        self._factors: set[str] = set()
        self._size = size
        self._guard = threading.Lock()

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)

    def refuse(self, user_id: str, factor: str, at: datetime) -> DomainError:
        """The error a wrong code of a real user would get now (and count the failure)."""
        key = _key(user_id, factor)
        with self._guard:
            self._factors.add(factor)
            lock = self._locks.pop(key, None) or FactorLock()
            self._locks[key] = lock
            while len(self._locks) > self._size:
                self._locks.popitem(last=False)
            return refusal(lock, factor, at)

    def locks_of(self, user_id: str, at: datetime) -> list[tuple[str, datetime]]:
        """(factor, locked until) of the user's factors locked now, as a status shows them."""
        with self._guard:
            found = []
            for factor in sorted(self._factors):
                lock = self._locks.get(_key(user_id, factor))
                if lock is not None and lock.is_locked(at) and lock.locked_until is not None:
                    found.append((factor, lock.locked_until))
            return found


def refusal(lock: FactorLock, factor: str, at: datetime) -> DomainError:
    """What a real user's wrong code would get from this lock now; counts the failure."""
    if lock.is_locked(at) and lock.locked_until is not None:
        return FactorLockedError(f"{factor} verification is locked", lock.locked_until, at)
    return InvalidCodeError(INVALID_CODE, lock.fail_unrecorded(at))


def _key(user_id: str, factor: str) -> bytes:
    return hashlib.sha256(f"{factor}\x00{user_id}".encode()).digest()[:16]
