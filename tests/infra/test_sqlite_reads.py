"""`SqliteDatabase.read`: a snapshot that never waits for another process's writer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infra.sql import SqliteDatabase


def test_a_read_does_not_wait_for_a_writer_in_another_process(tmp_path: Path) -> None:
    """Reads took the write lock (`BEGIN IMMEDIATE`): while `mfa projections rebuild` filled
    its shadow tables from another process, every read of the API waited for it, and past
    the 10 s busy timeout failed."""
    path = tmp_path / "mfa.sqlite"
    server, rebuild = SqliteDatabase(path), SqliteDatabase(path)
    try:
        with server.transaction() as cur:
            cur.execute("CREATE TABLE t (n INTEGER NOT NULL)")
            cur.execute("INSERT INTO t (n) VALUES (1)")
        with rebuild.transaction() as writing:  # another process's long write transaction
            writing.execute("INSERT INTO t (n) VALUES (2)")
            started = time.monotonic()
            with server.read() as cur:
                cur.execute("SELECT n FROM t")
                assert cur.fetchall() == [(1,)]  # the last committed state
            assert time.monotonic() - started < 0.5
        with server.read() as cur:
            cur.execute("SELECT n FROM t ORDER BY n")
            assert cur.fetchall() == [(1,), (2,)]
    finally:
        server.close()
        rebuild.close()


def _insert_then_fail(db: SqliteDatabase) -> None:
    with db.transaction() as cur:
        cur.execute("INSERT INTO t (n) VALUES (1)")
        with db.read() as inner:
            inner.execute("SELECT COUNT(*) FROM t")
            assert inner.fetchone() == (1,)
        raise RuntimeError("undo")


def test_a_read_nested_in_a_transaction_sees_its_writes_and_a_failure_undoes_them(
    tmp_path: Path,
) -> None:
    db = SqliteDatabase(tmp_path / "mfa.sqlite")
    try:
        with db.transaction() as cur:
            cur.execute("CREATE TABLE t (n INTEGER NOT NULL)")
        with pytest.raises(RuntimeError):
            _insert_then_fail(db)
        with db.read() as cur:
            cur.execute("SELECT COUNT(*) FROM t")
            assert cur.fetchone() == (0,)
    finally:
        db.close()
