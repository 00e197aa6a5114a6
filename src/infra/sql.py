"""A small database handle over SQLite or PostgreSQL for our own tables (keys, read models).

The event store itself is the eventsourcing library's recorder; this is for everything else.
SQL is written once with `%s` placeholders and PostgreSQL-compatible upserts, which SQLite
(3.24+) also understands.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
import psycopg_pool
from psycopg.abc import RV, PQGen
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import Row

from infra.outage import ConnectionWait, connection_lost


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Serialise schema creation between processes starting at once on one PostgreSQL."""
    if not url.startswith(("postgresql://", "postgres://")):
        yield
        return
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


SCHEMA_LOCK_KEY = 0x6D666173  # "mfas"


class DatabaseUnavailableError(Exception):
    """The database could not be reached in time; callers answer 503, never hang."""


class Cursor(Protocol):
    """The part of a DB-API cursor we use."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Database(Protocol):
    """A transactional handle; `transaction()` commits on success and rolls back on error.

    `read()` is for statements that only read: it may run each one in its own implicit
    transaction. Under read committed (both databases here) every statement of a transaction
    sees its own snapshot anyway, so the results are the same, with fewer round trips.
    """

    dialect: str

    def transaction(self) -> Any: ...
    def read(self) -> Any: ...
    def close(self) -> None: ...


class _SqliteCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(sql.replace("%s", "?"), tuple(params))

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class SqliteDatabase:
    """One SQLite file in WAL mode; a lock serialises transactions across threads."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows (an erased user's) are overwritten, not left in free pages.
        self._conn.execute("PRAGMA secure_delete=ON")
        self._lock = threading.RLock()
        self._depth = 0

    def transaction(self) -> Any:
        """A transaction; one opened inside another (same thread) is a savepoint of it."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> Any:
        """A read-only transaction: deferred, so that it reads a snapshot and never waits for
        another process's writer (`mfa projections rebuild`, a worker). The one connection is
        shared, and reads cost no round trip."""
        return self._transaction("BEGIN")

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Cursor]:
        with self._lock:
            cursor = self._conn.cursor()
            self._depth += 1
            nested = self._depth > 1
            savepoint = f"sp{self._depth}"
            cursor.execute(f"SAVEPOINT {savepoint}" if nested else begin)
            try:
                yield _SqliteCursor(cursor)
            except BaseException:
                if nested:
                    cursor.execute(f"ROLLBACK TO {savepoint}")
                    cursor.execute(f"RELEASE {savepoint}")
                else:
                    cursor.execute("ROLLBACK")
                raise
            else:
                cursor.execute(f"RELEASE {savepoint}" if nested else "COMMIT")
            finally:
                self._depth -= 1
                cursor.close()

    def compact_log(self) -> None:
        """Checkpoint and truncate the write-ahead log, so deleted rows leave no old copies."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


POOL_TIMEOUT_SECONDS = 3.0
RECONNECT_SECONDS = 5.0
PING_INTERVAL_SECONDS = 1.0

# A server that stops answering without closing the connection (a partition, a frozen host or
# process) must cost a request seconds, not as long as TCP keeps the dead connection open:
# - TCP: keepalives probe a connection awaiting an answer (or idle) after 2 s, and
#   `tcp_user_timeout` drops it once data or probes go unacknowledged for 5 s;
# - the server cancels a statement after STATEMENT_TIMEOUT_SECONDS: above the appends' 5 s
#   lock_timeout (a lock wait fails as itself), and the connection stays usable;
# - the client gives up on a round trip after ANSWER_SECONDS (a frozen process whose kernel
#   still acknowledges, which TCP cannot tell from a slow one), later than the server's own
#   cancel, so a merely slow statement is never abandoned; a pre-use ping, after PING_SECONDS.
STATEMENT_TIMEOUT_SECONDS = 8
# A transaction left open by a process that froze, or was cut off, mid-way would keep its row
# locks (a projection's tracking row, say) until TCP gave up on it, hours later: the process
# that takes the background work over once the lease is free (30 s) could not move. The server
# ends such a session after IDLE_IN_TRANSACTION_SECONDS, well inside that time; our own
# transactions never wait between statements for more than a moment.
IDLE_IN_TRANSACTION_SECONDS = 20
ANSWER_SECONDS = 10.0
PING_SECONDS = 2.0
TCP_SETTINGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,  # milliseconds
}


def connection_settings(conninfo: str = "") -> dict[str, Any]:
    """The pools' libpq settings (above). The URL's own win: its keepalive settings are kept,
    and its `options` go after ours, where a later `-c statement_timeout` overrides ours."""
    given = conninfo_to_dict(conninfo) if conninfo else {}
    if not given.get("options") and os.environ.get("PGOPTIONS"):
        given["options"] = os.environ["PGOPTIONS"]  # libpq's default, which ours would replace
    settings = {k: v for k, v in TCP_SETTINGS.items() if k not in given}
    timeout = (
        f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}"
        f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_SECONDS * 1000}"
    )
    settings["options"] = f"{timeout} {given['options']}" if given.get("options") else timeout
    return settings


class NoAnswerError(psycopg.OperationalError):
    """PostgreSQL did not answer a round trip in time; the connection was closed."""


# psycopg 3.3 (the least pyproject.toml allows) bounds a wait: `Connection.wait(timeout=)`
# raises its `_WaitTimeout`.
_WAIT_TIMEOUT: type[Exception] = psycopg.errors._WaitTimeout


class BoundedConnection(psycopg.Connection[Row]):
    """A connection that gives up on a round trip after `answer_seconds` (see above)."""

    answer_seconds = ANSWER_SECONDS

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None:  # the caller's own deadline, and its own handling of it
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.answer_seconds)
        except _WAIT_TIMEOUT:
            # The request is on its way and an answer may still come: never reuse the connection.
            self.close()
            raise NoAnswerError(
                f"PostgreSQL did not answer within {self.answer_seconds:g} s"
            ) from None

    @contextmanager
    def answering_within(self, seconds: float) -> Iterator[None]:
        """Another deadline for the round trips made inside (a ping expects an instant one)."""
        self.answer_seconds = seconds
        try:
            yield
        finally:
            del self.answer_seconds  # back to the class's


# How long a schema change may run (an index on millions of rows) and wait for a lock.
SCHEMA_CHANGE_SECONDS = 3600.0
LOCK_SECONDS = 5


@contextmanager
def unhurried(cur: Cursor, dialect: str) -> Iterator[None]:
    """Within a transaction: neither the server's statement limit nor the client's deadline
    for the statements run inside (the time they take is the table's size, not an outage).
    A lock wait still gives up after LOCK_SECONDS: an index build behind an anti-wraparound
    vacuum would hold the locks it has, and the writes behind them, for as long."""
    if dialect != "postgres":
        yield
        return
    cur.execute("SET LOCAL statement_timeout = 0")
    cur.execute(f"SET LOCAL lock_timeout = '{LOCK_SECONDS}s'")
    connection = getattr(cur, "connection", None)
    if not isinstance(connection, BoundedConnection):
        yield
        return
    with connection.answering_within(SCHEMA_CHANGE_SECONDS):
        yield


class ThrottledCheck:
    """A pool's pre-ping, at most once a second per connection.

    The ping finds connections that died while idle (PostgreSQL restarted), so the first
    requests after an outage do not fail; pinging on every checkout cost a round trip per
    statement batch (about 13 % of a TOTP validate). A connection in use within the last
    second is trusted: if it died since, its statement fails and the caller answers 503.
    """

    def __init__(self, interval: float = PING_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._checked: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: Any) -> None:
        now = time.monotonic()
        if now - self._checked.get(conn, -self.interval) < self.interval:
            if conn.closed or conn.broken:
                raise psycopg.OperationalError("the connection is closed")
            return
        if isinstance(conn, BoundedConnection):
            with conn.answering_within(PING_SECONDS):
                psycopg_pool.ConnectionPool.check_connection(conn)
        else:
            psycopg_pool.ConnectionPool.check_connection(conn)
        self._checked[conn] = now


class PostgresDatabase:
    """A psycopg 3 connection pool with short timeouts so that an outage fails fast."""

    dialect = "postgres"

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.conninfo = conninfo
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            connection_class=BoundedConnection[Any],
            min_size=min_size,
            max_size=max_size,
            # A request waits this long for a connection, then answers 503.
            timeout=POOL_TIMEOUT_SECONDS,
            kwargs={"connect_timeout": 3, "autocommit": False, **connection_settings(conninfo)},
            open=False,
            check=ThrottledCheck(),
            # Give up a failing reconnection soon: the pool then reconnects on demand, instead
            # of after a backoff that doubles for as long as the server stays down.
            reconnect_timeout=RECONNECT_SECONDS,
        )
        self._pool.open(wait=False)
        self._wait = ConnectionWait(POOL_TIMEOUT_SECONDS)
        self.on_close: list[Callable[[], None]] = []  # (the purger stops with the pool)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self._connection() as conn, conn.cursor() as cursor:
            yield cursor

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        """Autocommit: one round trip per statement instead of BEGIN, the statement and COMMIT
        (a read-model query went from about 400 to 150 microseconds of this process's CPU)."""
        with self._connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor() as cursor:
                    yield cursor
            finally:
                try:
                    conn.autocommit = False  # the pool's other users expect transactions
                except psycopg.Error:
                    conn.close()  # broken: the pool replaces a closed connection

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection(timeout=self._wait.timeout()) as conn:
                yield conn
            self._wait.answered()
        except (
            psycopg_pool.PoolTimeout,
            psycopg.OperationalError,
            psycopg.errors.IdleInTransactionSessionTimeout,
        ) as exc:
            if connection_lost(exc):
                self._wait.outage_seen()
            raise DatabaseUnavailableError(str(exc)) from exc

    def close(self) -> None:
        for stop in self.on_close:
            stop()
        self._pool.close()


@contextmanager
def pipelined(cur: Cursor) -> Iterator[None]:
    """Send the statements made inside without waiting for each one's result (PostgreSQL
    pipeline mode; a fetch still waits for its own). A failed statement raises here at the
    latest, so the transaction rolls back. On SQLite, which has no round trips, nothing."""
    if isinstance(cur, psycopg.Cursor):
        with cur.connection.pipeline():
            yield
    else:
        yield


def open_database(url: str, pool_size: int = 10) -> SqliteDatabase | PostgresDatabase:
    """`sqlite:///path` or `postgresql://...`."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, max_size=pool_size)
    raise ValueError("database URL must start with sqlite:/// or postgresql://")
