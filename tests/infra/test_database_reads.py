"""`PostgresDatabase.read`: one round trip per statement, and the pool's transactions intact."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from infra.sql import DatabaseUnavailableError, PostgresDatabase
from tests.conftest import create_pg_database, drop_pg_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(postgres_admin_url: str) -> Iterator[PostgresDatabase]:
    """A pool of one connection, so every checkout gets the same one back."""
    url = create_pg_database(postgres_admin_url)
    database = PostgresDatabase(url, min_size=1, max_size=1)
    with database.transaction() as cur:
        cur.execute("CREATE TABLE t (n INTEGER NOT NULL)")
    yield database
    database.close()
    drop_pg_database(postgres_admin_url, url)


def _backend_pid(db: PostgresDatabase) -> int:
    with db.read() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_a_read_opens_no_transaction(db: PostgresDatabase) -> None:
    with db.read() as cur:
        cur.execute("SELECT 1")
        status = cur.connection.info.transaction_status  # type: ignore[attr-defined]
        assert status == psycopg.pq.TransactionStatus.IDLE  # no BEGIN went before the SELECT


def test_a_transaction_after_a_read_on_the_same_connection_is_still_atomic(
    db: PostgresDatabase,
) -> None:
    first = _backend_pid(db)

    def insert_then_fail() -> None:
        with db.transaction() as cur:
            assert int(cur.execute("SELECT pg_backend_pid()").fetchone()[0]) == first
            cur.execute("INSERT INTO t (n) VALUES (1)")
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 0  # rolled back, not committed statement by statement


def test_a_failed_read_leaves_the_connection_usable(db: PostgresDatabase) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable), db.read() as cur:
        cur.execute("SELECT * FROM no_such_table")
    with db.transaction() as cur:
        cur.execute("INSERT INTO t (n) VALUES (1)")
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 1


def test_a_read_whose_connection_dies_is_unavailable_and_the_pool_recovers(
    db: PostgresDatabase, postgres_admin_url: str
) -> None:
    victim = _backend_pid(db)

    def read_after_the_server_killed_the_connection() -> None:
        with db.read() as cur:
            with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
            cur.execute("SELECT 1")

    with pytest.raises(DatabaseUnavailableError):
        read_after_the_server_killed_the_connection()
    with db.transaction() as cur:  # a fresh connection, in transaction mode again
        assert not cur.connection.autocommit  # type: ignore[attr-defined]
        assert int(cur.execute("SELECT pg_backend_pid()").fetchone()[0]) != victim
