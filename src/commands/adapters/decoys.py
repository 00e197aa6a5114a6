"""Lockouts of unknown users kept in the database, shared by every process and instance.

`commands.decoys.DecoyLockouts` keeps them in one process's memory: with several server
processes (`mfa serve --workers N`) or instances behind a load balancer, a prober's guesses
at an unknown user spread over them, its lock would come after 5 x N failures instead of 5,
and the difference would tell the user does not exist. Here the count lives in
`mfa_decoy_locks` in the read database (never the event store: a probe must not become an
append), one row per (keyed hash of the user id, factor), locked while it is updated, so
concurrent guesses count exactly as a real user's do. Rows nobody probed for a day are
deleted now and then; a real user's escalation would outlast that, a prober's does not need to.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import datetime, timedelta

from commands.decoys import refusal
from domain.errors import DomainError
from domain.lockout import FactorLock
from infra.sql import Database

_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_decoy_locks ("
    "user_key TEXT NOT NULL, factor TEXT NOT NULL, failures INTEGER NOT NULL, "
    "level INTEGER NOT NULL, locked_until TEXT, touched_at TEXT NOT NULL, "
    "PRIMARY KEY (user_key, factor))"
)
FORGET_AFTER = timedelta(days=1)
PRUNE_EVERY = 1000  # refusals (per process) between two clean-ups


class SqlDecoyLockouts:
    """`DecoyLockouts` with its state in table `mfa_decoy_locks`."""

    tables = ("mfa_decoy_locks",)

    def __init__(self, db: Database, key: bytes, *, create: bool = True) -> None:
        self._db = db
        self._key = key
        self._count = 0
        self._count_guard = threading.Lock()
        if create:
            with db.transaction() as cur:
                cur.execute(_DDL)

    def _user_key(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()

    def __len__(self) -> int:
        with self._db.read() as cur:
            cur.execute("SELECT COUNT(*) FROM mfa_decoy_locks")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def refuse(self, user_id: str, factor: str, at: datetime) -> DomainError:
        """The error a wrong code of a real user would get now (and count the failure)."""
        key = self._user_key(user_id)
        with self._db.transaction() as cur:
            cur.execute(
                "INSERT INTO mfa_decoy_locks "
                "(user_key, factor, failures, level, locked_until, touched_at) "
                "VALUES (%s, %s, 0, 0, NULL, %s) ON CONFLICT (user_key, factor) DO NOTHING",
                (key, factor, at.isoformat()),
            )
            select = (
                "SELECT failures, level, locked_until FROM mfa_decoy_locks "
                "WHERE user_key = %s AND factor = %s"
            )
            cur.execute(
                select + (" FOR UPDATE" if self._db.dialect == "postgres" else ""), (key, factor)
            )
            row = cur.fetchone()
            assert row is not None
            lock = FactorLock(
                failures=int(row[0]),
                level=int(row[1]),
                locked_until=datetime.fromisoformat(row[2]) if row[2] else None,
            )
            error = refusal(lock, factor, at)
            cur.execute(
                "UPDATE mfa_decoy_locks SET failures = %s, level = %s, locked_until = %s, "
                "touched_at = %s WHERE user_key = %s AND factor = %s",
                (
                    lock.failures,
                    lock.level,
                    lock.locked_until.isoformat() if lock.locked_until else None,
                    at.isoformat(),
                    key,
                    factor,
                ),
            )
        self._prune_now_and_then(at)
        return error

    def locks_of(self, user_id: str, at: datetime) -> list[tuple[str, datetime]]:
        """(factor, locked until) of the user's factors locked now, as a status shows them."""
        with self._db.read() as cur:
            cur.execute(
                "SELECT factor, locked_until FROM mfa_decoy_locks "
                "WHERE user_key = %s AND locked_until IS NOT NULL ORDER BY factor",
                (self._user_key(user_id),),
            )
            rows = cur.fetchall()
        found = []
        for factor, until_text in rows:
            until = datetime.fromisoformat(until_text)
            if at < until:
                found.append((str(factor), until))
        return found

    def _prune_now_and_then(self, at: datetime) -> None:
        with self._count_guard:
            self._count += 1
            due = self._count % PRUNE_EVERY == 0
        if due:
            with self._db.transaction() as cur:
                cur.execute(
                    "DELETE FROM mfa_decoy_locks WHERE touched_at < %s",
                    ((at - FORGET_AFTER).isoformat(),),
                )
