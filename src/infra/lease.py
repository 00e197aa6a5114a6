"""Leases: at most one process does a given piece of background work (a projection, the relay).

PostgreSQL: a session advisory lock on a dedicated connection (released by the server when the
holder dies). SQLite: an exclusive `flock` on a file beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psycopg

from infra.sql import (
    BoundedConnection,
    Database,
    PostgresDatabase,
    SqliteDatabase,
    connection_settings,
)


class Lease(Protocol):
    """Something only one holder can have at a time."""

    def try_acquire(self) -> bool: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"mfa:{name}".encode()).digest()[:8], "big", signed=True)


LEASE_IDLE_SECONDS = 30.0
HEARTBEATS_PER_IDLE_TIMEOUT = 6
RENEW_SECONDS = 300.0
RELEASE_WAIT_SECONDS = 2.0


class PostgresLease:
    """`pg_try_advisory_lock` held by one connection for as long as the work runs.

    While held, a heartbeat thread sends `SELECT 1` six times per LEASE_IDLE_SECONDS: the
    holder keeps its session however long its work goes without a check (a rebuild's fill),
    and the server's idle timeout fires only for a holder that is gone or cut off, or that
    stopped working: the heartbeat pauses once the holder has not checked the lease for
    RENEW_SECONDS, and ends, closing the connection, once the thread that took the lease
    has died. The heartbeat thread is the one that closes the connection (`release` asks
    it to): psycopg's `close` does not wait for a statement under way on another thread.
    """

    def __init__(self, conninfo: str, name: str) -> None:
        self._conninfo = conninfo
        self._key = _lock_key(name)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._heartbeat: tuple[threading.Event, threading.Thread] | None = None
        self._renewed = 0.0

    def try_acquire(self) -> bool:
        if self.still_held():
            return True
        self.release()
        try:
            # Bounded like the pools' connections: `still_held` against a server that stopped
            # answering gives the lease up in seconds instead of holding the worker's thread.
            conn = BoundedConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=3,
                **connection_settings(self._conninfo),
            )
        except psycopg.Error:
            return False
        try:
            # The server ends the session, and frees the lock, once the holder has been
            # silent this long (its heartbeat pings every 5 s): a holder cut off by the
            # network would otherwise keep the lock until TCP keepalive gave up (hours), and
            # no other process could take the work over. Set after connecting, not in the
            # startup options: a server before PostgreSQL 14 refuses an unknown setting
            # there, and the lease would never be taken; here it is only skipped.
            with contextlib.suppress(psycopg.errors.UndefinedObject):
                conn.execute(f"SET idle_session_timeout = {int(LEASE_IDLE_SECONDS * 1000)}")
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except psycopg.Error:
            conn.close()
            return False
        if row is None or not row[0]:
            conn.close()
            return False
        self._conn = conn
        self._renewed = time.monotonic()
        self._heartbeat = _beat(
            conn,
            LEASE_IDLE_SECONDS / HEARTBEATS_PER_IDLE_TIMEOUT,
            threading.current_thread(),
            lambda: time.monotonic() - self._renewed < RENEW_SECONDS,
        )
        return True

    def still_held(self) -> bool:
        conn = self._conn  # (read once: `release` may run on another thread)
        if conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        self._renewed = time.monotonic()
        return True

    def release(self) -> None:
        if self._heartbeat is not None:
            stop, thread = self._heartbeat
            self._heartbeat = None
            stop.set()  # its thread closes the connection: at once, unless a ping is under way
            thread.join(RELEASE_WAIT_SECONDS)
        elif self._conn is not None:
            _close(self._conn)
        self._conn = None


def _close(conn: psycopg.Connection[Any]) -> None:
    """Close once no statement is under way on it (psycopg's `close` does not wait: another
    thread's statement would go on reading a freed socket). The wait is bounded by the
    connection's own answer deadline."""
    with conn.lock, contextlib.suppress(psycopg.Error):
        conn.close()


def _beat(
    conn: psycopg.Connection[Any],
    interval: float,
    owner: threading.Thread,
    renewed: Callable[[], bool],
) -> tuple[threading.Event, threading.Thread]:
    """`SELECT 1` on `conn` every `interval` seconds while `renewed()` says the holder is at
    work (psycopg serialises it with the holder's own use of the connection). The thread
    closes the connection when the event is set, a ping fails or `owner` has died."""
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.wait(interval) and not conn.closed and owner.is_alive():
                if renewed():
                    conn.execute("SELECT 1")
        except psycopg.Error:
            pass
        finally:
            _close(conn)

    thread = threading.Thread(target=run, name="mfa-lease-heartbeat", daemon=True)
    thread.start()
    return stop, thread


class FileLease:
    """An exclusive, non-blocking `flock` (the kernel drops it when the holder dies).

    One thread at a time: a stop whose wait for the worker timed out releases the lease while
    the worker may still take or release it, and a file number closed twice closes whatever
    the process opened under that number in between (a client's socket, say)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._guard = threading.Lock()

    def try_acquire(self) -> bool:
        with self._guard:
            if self._fd is not None:
                return True
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        with self._guard:
            fd, self._fd = self._fd, None
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def lease_for(database_url: str, name: str) -> Lease:
    """The lease kind that fits the database."""
    if database_url.startswith("sqlite:///"):
        return _file_lease(database_url.removeprefix("sqlite:///"), name)
    return PostgresLease(database_url, name)


def lease_on(db: Database, name: str) -> Lease:
    """The same, for an open database."""
    if isinstance(db, SqliteDatabase):
        return _file_lease(db.path, name)
    assert isinstance(db, PostgresDatabase)
    return PostgresLease(db.conninfo, name)


def _file_lease(database_path: str, name: str) -> FileLease:
    path = Path(database_path)
    return FileLease(path.with_name(f"{path.name}.{name}.lease"))
