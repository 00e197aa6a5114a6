"""Deleted personal data leaves the database's files (`purge_deleted_rows`).

SQLite overwrites a deleted row in place (`secure_delete`); only its write-ahead log, which
still holds older copies of the pages, is truncated here. PostgreSQL keeps a deleted row's
bytes in the table's pages (a dead tuple) until a vacuum prunes it, and autovacuum may not
come for a long time to a table with few deletions (the data keys: one row per user). So the
tables are vacuumed, by a thread of the database's own, never in the caller's way:

- each table as soon as asked, waiting at most LOCK_WAIT_SECONDS for a vacuum already running
  on it (that one may have started before the deletion: it would not remove the row), with no
  statement timeout (a large table takes what it takes);
- and once more AGAIN_AFTER_SECONDS later: a transaction whose snapshot is older than the
  deletion (a long report, a backup) keeps the dead row from the first vacuum;
- a vacuum that fails, or that PostgreSQL skips (the role does not own the table), is logged
  and tried again a minute later, until ATTEMPTS tries in a row have failed.

Closing the database runs the vacuums already due (a rebuild's: `mfa projections rebuild`
closes it right after) and drops the later ones and the retries. Best effort still: WAL
segments not yet recycled, WAL archives and backups keep the rows.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time

import psycopg

from infra.sql import Database, PostgresDatabase, SqliteDatabase, connection_settings

log = logging.getLogger("mfa.sql")
LOCK_WAIT_SECONDS = 5.0
AGAIN_AFTER_SECONDS = 60.0
ATTEMPTS = 3
STOP_WAIT_SECONDS = 30.0


def purge_deleted_rows(db: Database, *tables: str) -> None:
    """After deleting personal data from `tables`: leave no older copies of it on disk."""
    if isinstance(db, SqliteDatabase):
        db.compact_log()
    elif isinstance(db, PostgresDatabase) and tables:
        _purger_of(db).request(tables)


_lock = threading.Lock()


def _purger_of(db: PostgresDatabase) -> _Purger:
    with _lock:
        purger: _Purger | None = getattr(db, "_purger", None)
        if purger is None:
            purger = _Purger(db.conninfo)
            db._purger = purger  # type: ignore[attr-defined]
            db.on_close.append(purger.stop)
        return purger


class _Purger:
    """Vacuums tables in a thread of its own, each when it is due (see the module)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._due: list[tuple[float, int, str]] = []  # a heap of (when, attempt, table)
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="mfa-purge", daemon=True)
        self._thread.start()

    def request(self, tables: tuple[str, ...]) -> None:
        now = time.monotonic()
        with self._wake:
            if self._stopped:  # (the database is closing)
                log.warning("not vacuumed, the database is closing: %s", ", ".join(tables))
                return
            for table in tables:
                heapq.heappush(self._due, (now, 1, table))
                heapq.heappush(self._due, (now + AGAIN_AFTER_SECONDS, 1, table))
            self._wake.notify()

    def stop(self) -> None:
        """The vacuums due now still run (a rebuild's, an erasure's just before a shutdown),
        waited for up to STOP_WAIT_SECONDS; the later ones and the retries are dropped."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_WAIT_SECONDS)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self._ready():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(wait)
                now = time.monotonic()
                batch: dict[str, int] = {}
                while self._due and self._due[0][0] <= now:
                    _, attempt, table = heapq.heappop(self._due)
                    batch[table] = min(attempt, batch.get(table, attempt))
                if self._stopped and not batch:
                    return
            for table, attempt in sorted(batch.items()):
                self._vacuum(table, attempt)

    def _ready(self) -> bool:
        return bool(self._due) and self._due[0][0] <= time.monotonic()

    def _vacuum(self, table: str, attempt: int) -> None:
        warnings: list[str] = []
        failure: str | None = None
        try:
            with psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=3,
                **connection_settings(self._conninfo),
            ) as conn:
                # PostgreSQL skips a table it may not vacuum with a WARNING, not an error.
                conn.add_notice_handler(
                    lambda n: (
                        warnings.append(n.message_primary or "")
                        if n.severity_nonlocalized == "WARNING"
                        else None
                    )
                )
                conn.execute(f"SET lock_timeout = {int(LOCK_WAIT_SECONDS * 1000)}")
                conn.execute("SET statement_timeout = 0")
                conn.execute(f"VACUUM {table}")
        except Exception as exc:  # (anything: this thread must go on serving later requests)
            failure = type(exc).__name__
        else:
            failure = warnings[0] if warnings else None
        if failure is None:
            return
        if attempt >= ATTEMPTS or self._stopped:
            log.warning("could not vacuum %s (%s): its deleted rows stay on disk", table, failure)
            return
        log.warning("could not vacuum %s (%s); trying again in a minute", table, failure)
        with self._wake:
            if any(pending == table for _, _, pending in self._due):
                return  # the pass already due a minute later tries again
            again = time.monotonic() + AGAIN_AFTER_SECONDS
            heapq.heappush(self._due, (again, attempt + 1, table))
