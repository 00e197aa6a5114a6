"""The per-user key vault: AES-256 data keys wrapped (AES-GCM) by the master key, in SQL."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commands.ports import KeyDestroyedError
from infra.purge import purge_deleted_rows
from infra.sql import Cursor, Database

_DDL = {
    "sqlite": "CREATE TABLE IF NOT EXISTS mfa_data_keys ("
    "key_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS mfa_data_keys ("
    "key_id TEXT PRIMARY KEY, wrapped BYTEA NOT NULL, created_at TEXT NOT NULL)",
}
# The ids of destroyed keys (aggregate ids: keyed hashes, no personal data), so that a write
# racing an erasure cannot create the key again and store readable data under it.
_TOMBSTONES_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_destroyed_keys ("
    "key_id TEXT PRIMARY KEY, destroyed_at TEXT NOT NULL)"
)
# PostgreSQL: creating and destroying one key id take this transaction lock (the two-key
# form, a lock space of its own beside the leases' one-key advisory locks).
_KEY_LOCK_CLASS = 0x6D666B76  # "mfkv"
NONCE_BYTES = 12
CACHE_SECONDS = 30.0
CHECKED_KEYS = 3  # at startup, see `_check_master_key`
V = TypeVar("V")


class MasterKeyMismatchError(RuntimeError):
    """The configured master key did not wrap the stored data keys."""


class SqlKeyVault:
    """Data keys in table `mfa_data_keys`; unwrapped keys are cached in memory (bounded)."""

    tables = ("mfa_data_keys", "mfa_destroyed_keys")

    def __init__(
        self,
        db: Database,
        master_key: bytes,
        cache_size: int = 10_000,
        cache_seconds: float = CACHE_SECONDS,
        *,
        create: bool = True,
    ) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._db = db
        self._master = AESGCM(master_key)
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        # Ids of destroyed keys (an erasure is for good): reading an erased user's events asks
        # about each one's key, twice (is it there, was it destroyed), without this.
        self._destroyed: OrderedDict[str, None] = OrderedDict()
        if create:
            with db.transaction() as cur:
                cur.execute(_DDL[db.dialect])
                cur.execute(_TOMBSTONES_DDL)
        self._check_master_key()

    def _check_master_key(self) -> None:
        """Refuse to start when the master key unwraps none of a few stored data keys: with
        another key every user's data would be unreadable (and every read model would skip
        every event). A few, not one: a single damaged row must not stop the service."""
        with self._db.read() as cur:
            cur.execute("SELECT key_id, wrapped FROM mfa_data_keys LIMIT %s", (CHECKED_KEYS,))
            rows = cur.fetchall()
        for key_id, wrapped in rows:
            try:
                self._unwrap(key_id, bytes(wrapped))
            except MasterKeyMismatchError:
                continue
            return
        if rows:
            raise MasterKeyMismatchError(
                "MFA_MASTER_KEY unwraps none of the stored data keys: it is not the key they "
                "were wrapped with"
            )

    def _remember(self, key_id: str, key: bytes) -> bytes:
        self._keep(self._cache, key_id, (key, time.monotonic() + self._cache_seconds))
        return key

    def _keep(self, cache: OrderedDict[str, V], key_id: str, value: V) -> None:
        """Put `value` in one of the bounded caches, dropping the least recently kept."""
        with self._lock:
            cache[key_id] = value
            cache.move_to_end(key_id)
            while len(cache) > self._cache_size:
                cache.popitem(last=False)

    def _cached(self, key_id: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(key_id)
            if entry is None:
                return None
            key, expires = entry
            if time.monotonic() >= expires:
                # Bounded staleness: a key destroyed by another process (an erasure) stops
                # being usable here within CACHE_SECONDS.
                del self._cache[key_id]
                return None
            return key

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode()
            )
        except InvalidTag:
            raise MasterKeyMismatchError(
                "a data key cannot be unwrapped: MFA_MASTER_KEY is not the key it was wrapped with"
            ) from None

    def _load(self, key_id: str) -> bytes | None:
        with self._db.read() as cur:
            cur.execute("SELECT wrapped FROM mfa_data_keys WHERE key_id = %s", (key_id,))
            row = cur.fetchone()
        return None if row is None else self._remember(key_id, self._unwrap(key_id, bytes(row[0])))

    def get(self, key_id: str) -> bytes | None:
        """The data key, or None when it never existed or was destroyed."""
        if key_id in self._destroyed:
            return None
        return self._cached(key_id) or self._load(key_id)

    def get_or_create(self, key_id: str) -> bytes:
        """The data key, created on first use; concurrent creators converge on one key.

        KeyDestroyedError for a key that was destroyed: a write that lost a race with the
        owner's erasure must fail, not store readable data under a new key.
        """
        existing = self.get(key_id)
        if existing is not None:
            return existing
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._master.encrypt(nonce, AESGCM.generate_key(256), key_id.encode())
        with self._db.transaction() as cur:
            self._lock_key(cur, key_id)
            cur.execute("SELECT 1 FROM mfa_destroyed_keys WHERE key_id = %s", (key_id,))
            if cur.fetchone() is not None:
                raise KeyDestroyedError(key_id)
            cur.execute(
                "INSERT INTO mfa_data_keys (key_id, wrapped, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (key_id) DO NOTHING",
                (key_id, wrapped, datetime.now(UTC).isoformat()),
            )
            # Another creator may have won the race: read whichever key is stored now.
            cur.execute("SELECT wrapped FROM mfa_data_keys WHERE key_id = %s", (key_id,))
            row = cur.fetchone()
        assert row is not None
        return self._remember(key_id, self._unwrap(key_id, bytes(row[0])))

    def destroy(self, key_id: str) -> None:
        """Delete the key for good: everything encrypted with it becomes unreadable, and it
        is never created again."""
        with self._db.transaction() as cur:
            self._lock_key(cur, key_id)
            cur.execute("DELETE FROM mfa_data_keys WHERE key_id = %s", (key_id,))
            deleted = cur.rowcount > 0
            cur.execute(
                "INSERT INTO mfa_destroyed_keys (key_id, destroyed_at) VALUES (%s, %s) "
                "ON CONFLICT (key_id) DO NOTHING",
                (key_id, datetime.now(UTC).isoformat()),
            )
        with self._lock:
            self._cache.pop(key_id, None)
        self._keep(self._destroyed, key_id, None)
        if deleted:  # (a repeated erasure deletes nothing)
            purge_deleted_rows(self._db, "mfa_data_keys")

    def destroyed(self, key_id: str) -> bool:
        """Whether the key was destroyed (an erasure): a key that is not there otherwise was
        lost or removed by other means (a row deleted by hand, an older backup restored)."""
        if key_id in self._destroyed:
            return True
        with self._db.read() as cur:
            cur.execute("SELECT 1 FROM mfa_destroyed_keys WHERE key_id = %s", (key_id,))
            found = cur.fetchone() is not None
        if found:
            self._keep(self._destroyed, key_id, None)
        return found

    def _lock_key(self, cur: Cursor, key_id: str) -> None:
        """Serialise creating and destroying one key (SQLite: its write lock does)."""
        if self._db.dialect == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_KEY_LOCK_CLASS, key_id))
