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


class PostgresLease:
    """`pg_try_advisory_lock` held by one connection for as long as the work runs.

    While held, a heartbeat thread sends `SELECT 1` six times per LEASE_IDLE_SECONDS: the
    holder keeps its session however long its work goes without a check (a rebuild's fill),
    and the server's idle timeout fires only for a holder that is gone or cut off.
    """

    def __init__(self, conninfo: str, name: str) -> None:
        self._conninfo = conninfo
        self._key = _lock_key(name)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._heartbeat: threading.Event | None = None

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
        self._heartbeat = _beat(conn, LEASE_IDLE_SECONDS / HEARTBEATS_PER_IDLE_TIMEOUT)
        return True

    def still_held(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()
            self._heartbeat = None
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def _beat(conn: psycopg.Connection[Any], interval: float) -> threading.Event:
    """`SELECT 1` on `conn` every `interval` seconds until the event is set or the connection
    fails (psycopg serialises it with the holder's own use of the connection)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval) and not conn.closed:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                return

    threading.Thread(target=run, name="mfa-lease-heartbeat", daemon=True).start()
    return stop


class FileLease:
    """An exclusive, non-blocking `flock` (the kernel drops it when the holder dies)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
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
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
