"""The eventsourcing PostgreSQL persistence, made to fail fast while the database is down.

The library retries every recorder call on InterfaceError/OperationalError up to 10 times,
0.2 s apart, and a pool that hands out no connection within its timeout raises one of those:
with the server down a single call took 10 x (pool timeout + 0.2 s), over 30 s, and a request
hung for as long. Selected with `PERSISTENCE_MODULE=infra.event_store:FailFastPostgresFactory`:

- reads are tried at most `READ_ATTEMPTS` times (a connection that broke under us is worth one
  more go), never again once the pool itself gave up, which already waited its timeout;
- appends are tried once: an append whose connection broke may have committed, so trying it
  again could apply a command twice; the caller answers 503 and the client decides;
- the pool's own connection attempts get the connect timeout (the library leaves it out), and
  a reconnection that keeps failing gives up after `RECONNECT_SECONDS`, so the pool reconnects
  on demand soon after the server is back rather than after an exponential backoff that grows
  with the length of the outage; a pool that had no connection to give is nudged to start one
  (`_ensure_reconnecting`), or it could refuse every call forever after a long outage;
- once a connection was lost or the pool had none to give, calls wait for one only briefly
  until the database answers again (`infra.outage.ConnectionWait`): an outage does not hold
  every thread for the timeout;
- connections carry `infra.sql`'s keepalives, TCP user timeout, statement timeout and answer
  deadline, so a server that stops answering without closing them fails a call in seconds;
  such a call is not tried again (another connection would wait as long, for the same answer).
"""

from __future__ import annotations

import contextlib
import inspect
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Identifier

from infra.outage import ConnectionWait, connection_lost
from infra.sql import BoundedConnection, NoAnswerError, ThrottledCheck, connection_settings

READ_ATTEMPTS = 2
RETRY_WAIT_SECONDS = 0.05
RECONNECT_SECONDS = 5.0

T = TypeVar("T")
_waits: weakref.WeakKeyDictionary[Any, ConnectionWait] = weakref.WeakKeyDictionary()
_POOL_GAVE_UP = (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests, psycopg_pool.PoolClosed)


def _unretried(method: Callable[..., Any]) -> Callable[..., Any]:
    """The library's method without its retry decorator."""
    inner: Callable[..., Any] = inspect.unwrap(method)
    return inner


def _call(recorder: PostgresAggregateRecorder, call: Callable[[], T], attempts: int = 1) -> T:
    pool = recorder.datastore.pool
    wait = _waits.get(pool)
    for attempt in range(1, attempts + 1):
        if wait is not None:
            pool.timeout = wait.timeout()  # the library asks the pool for its default timeout
        try:
            result = call()
        except (InterfaceError, OperationalError) as exc:
            if wait is not None and connection_lost(exc.__cause__):
                wait.outage_seen()
            if isinstance(exc.__cause__, _POOL_GAVE_UP):
                _ensure_reconnecting(pool)
                raise
            if isinstance(exc.__cause__, NoAnswerError):
                raise
            # Only a lost connection is worth a second try on a fresh one: a statement the
            # server cancelled (its timeout, a lock wait) would take as long again.
            if attempt == attempts or not connection_lost(exc.__cause__):
                raise
            time.sleep(RETRY_WAIT_SECONDS)
        else:
            if wait is not None:
                wait.answered()
            return result
    raise AssertionError("unreachable")  # pragma: no cover


def _ensure_reconnecting(pool: psycopg_pool.ConnectionPool[Any]) -> None:
    """Make sure the pool is trying to connect when it had none to give.

    Its reconnection gives up after `RECONNECT_SECONDS`, and with `POSTGRES_MAX_WAITING` set,
    the callers that timed out stay counted as waiting: once they reach the limit, every call
    is refused before the pool would start a new connection, and it never recovers by itself.
    `check()` starts one when none is under way. It also pings every idle connection, in this
    thread: with idle ones left the pool is not stuck (a failed ping starts a replacement), and
    against a server that stopped answering, those pings would hold the caller for seconds each.
    """
    if pool.get_stats().get("pool_available", 0):
        return
    with contextlib.suppress(Exception):
        pool.check()


_aggregate_insert = _unretried(PostgresAggregateRecorder.insert_events)
_application_insert = _unretried(PostgresApplicationRecorder.insert_events)
_select_notifications = _unretried(PostgresApplicationRecorder.select_notifications)
_max_notification_id = _unretried(PostgresApplicationRecorder.max_notification_id)


_statements: weakref.WeakKeyDictionary[Any, dict[tuple[bool, ...], bytes]] = (
    weakref.WeakKeyDictionary()
)


def _select_events_rendered(
    recorder: PostgresAggregateRecorder,
    originator_id: Any,
    *,
    gt: int | None = None,
    lte: int | None = None,
    desc: bool = False,
    limit: int | None = None,
) -> list[StoredEvent]:
    """The library's `select_events`, with its statement rendered once per shape.

    The library composes the statement (`Composed`) on every call and psycopg renders it to
    bytes on every execute: a few per cent of the CPU of a command whose aggregate is cached.
    """
    shape = (gt is not None, lte is not None, desc, limit is not None)
    rendered = _statements.setdefault(recorder, {})
    statement = rendered.get(shape)
    if statement is None:
        composed = recorder.select_events_statement
        if gt is not None:
            composed += SQL(" AND originator_version > %s")
        if lte is not None:
            composed += SQL(" AND originator_version <= %s")
        composed += SQL(
            " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version ASC"
        )
        if limit is not None:
            composed += SQL(" LIMIT %s")
        statement = rendered[shape] = composed.as_bytes(None)
    params = [p for p in (originator_id, gt, lte, limit) if p is not None]
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, params, prepare=True)
        return [
            StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in curs.fetchall()
        ]


class FailFastAggregateRecorder(PostgresAggregateRecorder):
    """The snapshot store."""

    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        return _call(self, lambda: _aggregate_insert(self, stored_events, **kwargs))

    def select_events(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self, lambda: _select_events_rendered(self, *args, **kwargs), READ_ATTEMPTS)


class FailFastApplicationRecorder(PostgresApplicationRecorder):
    """The event store and its notification log.

    With `POSTGRES_ENABLE_DB_FUNCTIONS` the library appends through a PL/pgSQL function in one
    statement, but its function leaves out the table lock that its other path takes, and
    without which notification ids could commit out of order (a reader following the log
    would skip a late commit for good). Ours takes it: the function runs in the autocommit
    statement's own transaction, so the lock is held through the commit, as before.
    """

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_pg_function_insert_events = SQL(
            "CREATE OR REPLACE FUNCTION "
            "{schema}.{insert_events}(events {schema}.{event}[]) "
            "RETURNS SETOF bigint "
            "LANGUAGE plpgsql "
            "AS "
            "$BODY$"
            "BEGIN"
            "    SET LOCAL lock_timeout = '{lock_timeout}s';"
            "    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;"
            "    NOTIFY {channel};"
            "    RETURN QUERY"
            "    INSERT INTO {schema}.{table} AS t ("
            "    originator_id, originator_version, topic, state)"
            "    SELECT originator_id, originator_version, topic, state"
            "    FROM unnest(events)"
            "    RETURNING notification_id;"
            "END;"
            "$BODY$"
        ).format(
            insert_events=Identifier(self.pg_function_name_insert_events),
            lock_timeout=self.datastore.lock_timeout,
            channel=Identifier(self.channel_name),
            event=Identifier(self.stored_event_type_name),
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
        )
        index = self.create_insert_function_statement_index
        self.sql_create_statements[index] = self.sql_create_pg_function_insert_events
        # Rendered once, not on every append (see `_select_events_rendered`).
        invoke = self.sql_invoke_pg_function_insert_events.as_bytes(None)
        self.sql_invoke_pg_function_insert_events = invoke  # type: ignore[assignment]

    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        return _call(self, lambda: _application_insert(self, stored_events, **kwargs))

    def select_events(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self, lambda: _select_events_rendered(self, *args, **kwargs), READ_ATTEMPTS)

    def select_notifications(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self, lambda: _select_notifications(self, *args, **kwargs), READ_ATTEMPTS)

    def max_notification_id(self) -> Any:
        return _call(self, lambda: _max_notification_id(self), READ_ATTEMPTS)


EVENT_STORE_URL = "MFA_EVENT_STORE_URL"


class FailFastPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory with the recorders and pool settings above."""

    aggregate_recorder_class = FailFastAggregateRecorder
    application_recorder_class = FailFastApplicationRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        pool.reconnect_timeout = RECONNECT_SECONDS
        if pool._check is not None:  # POSTGRES_PRE_PING: ping idle connections only
            pool._check = ThrottledCheck()
        _waits[pool] = ConnectionWait(pool.timeout)
        pool.connection_class = BoundedConnection
        connect_timeout = self.env.get(self.POSTGRES_CONNECT_TIMEOUT)
        url = self.env.get(EVENT_STORE_URL)
        if url:  # the URL itself, not the five fields the library took from it
            pool.conninfo = url
            if isinstance(pool.kwargs, dict):
                for name in ("dbname", "host", "port", "user", "password"):
                    pool.kwargs.pop(name, None)
        if isinstance(pool.kwargs, dict):
            pool.kwargs.update(connection_settings(url or ""))
            if connect_timeout:
                pool.kwargs["connect_timeout"] = int(connect_timeout)


def event_store_env(database_url: str, pool_size: int = 10) -> dict[str, str]:
    """The eventsourcing library's environment for a `sqlite:///` or `postgresql://` URL."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        events_path = path[:-7] + "-events.sqlite" if path.endswith(".sqlite") else path + ".events"
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": events_path,
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    # The library wants these five; its pool then connects with the URL itself, as the read
    # models do (`FailFastPostgresFactory`): the same database, TLS settings and options, and
    # libpq's defaults (PGHOST, PGUSER, ...) for what the URL leaves out. (urlsplit took a `?`
    # or `#` in the password for the query, and quoted the password's start as a bad port.)
    given = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    return {
        # The library's PostgreSQL recorders, minus the retries that made an outage hang.
        "PERSISTENCE_MODULE": "infra.event_store:FailFastPostgresFactory",
        EVENT_STORE_URL: database_url,
        "POSTGRES_SCHEMA": "public",  # (the library would take POSTGRES_SCHEMA from the process)
        "POSTGRES_DBNAME": given.get("dbname") or "-",
        "POSTGRES_HOST": given.get("host") or "-",
        "POSTGRES_PORT": given.get("port") or "5432",
        "POSTGRES_USER": given.get("user") or "-",
        "POSTGRES_PASSWORD": "",
        # Also how long a call waits for a pooled connection (there is no POOL_TIMEOUT).
        "POSTGRES_CONNECT_TIMEOUT": "3",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_MAX_WAITING": str(pool_size * 8),
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "y",
        # Appends in one statement (a function that locks the table, notifies and inserts)
        # instead of a pipeline of five (infra.event_store).
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
    }


# The library's tables for the application named "mfa", events first. On PostgreSQL in its
# schema (POSTGRES_SCHEMA, which we leave at `public`): not found through the URL's
# search_path, which it does not follow.
POSTGRES_STORE_TABLES = ("mfa_events", "mfa_snapshots")
SQLITE_STORE_TABLES = ("stored_events", "stored_snapshots")
EVENTS_TABLES = (POSTGRES_STORE_TABLES[0], SQLITE_STORE_TABLES[0])


def missing_event_store_tables(database_url: str) -> list[str]:
    """Which of the event store's tables (events first, then snapshots) the URL's database
    lacks, all of them when there is none (nothing is created to tell)."""
    if database_url.startswith("sqlite:///"):
        path = Path(event_store_env(database_url)["SQLITE_DBNAME"])
        if not path.is_file():
            return list(SQLITE_STORE_TABLES)
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        present = {name for (name,) in rows}
        return [table for table in SQLITE_STORE_TABLES if table not in present]
    settings = connection_settings(database_url)
    with psycopg.connect(database_url, connect_timeout=3, autocommit=True, **settings) as conn:
        rows = conn.execute(
            "SELECT name FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i)"
            " WHERE to_regclass(name) IS NULL ORDER BY i",
            ([f"public.{table}" for table in POSTGRES_STORE_TABLES],),
        ).fetchall()
    return [str(name).removeprefix("public.") for (name,) in rows]
