"""The erasure epoch of each user: which aggregate id the user's current MFA state lives under.

Erasure ends a user's aggregate for good; a user who enrols again starts a new one, whose id is
the keyed hash of (user id, epoch). The table holds only keyed hashes and small integers, so
it links nothing to a user id without the service's key.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict

from infra.sql import Database

_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_user_epochs (user_key TEXT PRIMARY KEY, epoch INTEGER NOT NULL)"
)


class SqlUserEpochs:
    """Epochs in table `mfa_user_epochs`, cached in memory (a stale entry heals itself: an
    erased aggregate makes the caller look again)."""

    tables = ("mfa_user_epochs",)

    def __init__(
        self, db: Database, key: bytes, cache_size: int = 100_000, *, create: bool = True
    ) -> None:
        self._db = db
        self._key = key
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        if create:
            with db.transaction() as cur:
                cur.execute(_DDL)

    def _user_key(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()

    def epoch(self, user_id: str, *, fresh: bool = False) -> int:
        """The user's current epoch (0 until the first erasure)."""
        if not fresh:
            with self._lock:
                cached = self._cache.get(user_id)
            if cached is not None:
                return cached
        with self._db.read() as cur:
            cur.execute(
                "SELECT epoch FROM mfa_user_epochs WHERE user_key = %s", (self._user_key(user_id),)
            )
            row = cur.fetchone()
        return self._remember(user_id, int(row[0]) if row else 0)

    def advance(self, user_id: str, from_epoch: int) -> int:
        """Move the user to the epoch after `from_epoch` (once, however often called)."""
        key = self._user_key(user_id)
        with self._db.transaction() as cur:
            cur.execute(
                "INSERT INTO mfa_user_epochs (user_key, epoch) VALUES (%s, 0) "
                "ON CONFLICT (user_key) DO NOTHING",
                (key,),
            )
            cur.execute(
                "UPDATE mfa_user_epochs SET epoch = %s WHERE user_key = %s AND epoch = %s",
                (from_epoch + 1, key, from_epoch),
            )
        return self.epoch(user_id, fresh=True)

    def _remember(self, user_id: str, epoch: int) -> int:
        with self._lock:
            self._cache[user_id] = epoch
            self._cache.move_to_end(user_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return epoch
