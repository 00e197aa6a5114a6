"""The pools' connections against a server that stops answering without closing them: every
round trip gives up after its deadline, the connection is dropped, the caller gets an error
that answers 503; and the TCP and statement timeouts reach the server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.application import Application
from psycopg.rows import tuple_row

from infra import sql
from infra.event_store import event_store_env
from infra.lease import PostgresLease
from infra.sql import (
    IDLE_IN_TRANSACTION_SECONDS,
    PING_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    BoundedConnection,
    DatabaseUnavailableError,
    NoAnswerError,
    PostgresDatabase,
    ThrottledCheck,
    connection_settings,
)
from tests.conftest import create_pg_database, drop_pg_database
from tests.integration.pg_support import FreezableProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy(postgres_admin_url: str) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(postgres_admin_url)
    yield proxy
    proxy.close()


def _elapsed(started: float) -> float:
    return time.monotonic() - started


def test_the_settings_add_keepalives_a_tcp_user_timeout_and_a_statement_timeout() -> None:
    settings = connection_settings("postgresql://u@h/db")
    assert settings["keepalives"] == 1
    assert settings["tcp_user_timeout"] == 5000
    assert settings["options"] == (
        f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}"
        f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_SECONDS * 1000}"
    )


def test_a_setting_in_the_url_wins_over_the_default() -> None:
    url = "postgresql://u@h/db?keepalives_idle=30&options=-c%20statement_timeout%3D60s"
    settings = connection_settings(url)
    assert "keepalives_idle" not in settings  # the URL's own stays
    # Both reach the server; the later -c, the URL's, is the one that counts.
    assert settings["options"].endswith("-c statement_timeout=60s")


def test_libpqs_pgoptions_reach_the_server_when_the_url_gives_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our `options` replaced libpq's PGOPTIONS default: a `search_path` set there was lost."""
    monkeypatch.setenv("PGOPTIONS", "-c search_path=elsewhere")
    assert connection_settings("postgresql://u@h/db")["options"].endswith(
        "-c search_path=elsewhere"
    )
    in_url = "postgresql://u@h/db?options=-c%20work_mem%3D5MB"
    assert connection_settings(in_url)["options"].endswith("-c work_mem=5MB")  # the URL's wins


def _assert_bounded(conn: psycopg.Connection[Any]) -> None:
    assert isinstance(conn, BoundedConnection)
    assert conn.info.get_parameters()["tcp_user_timeout"] == "5000"
    assert conn.info.get_parameters()["keepalives_idle"] == "2"
    with conn.cursor(row_factory=tuple_row) as cur:  # the event store's rows are dicts
        assert cur.execute("SHOW statement_timeout").fetchone() == (
            f"{STATEMENT_TIMEOUT_SECONDS}s",
        )


def test_a_read_model_connection_has_the_tcp_and_statement_timeouts(
    postgres_admin_url: str,
) -> None:
    db = PostgresDatabase(postgres_admin_url, min_size=1, max_size=1)
    try:
        with db.read() as cur:
            _assert_bounded(cur.connection)  # type: ignore[attr-defined]
    finally:
        db.close()


def test_a_transaction_left_open_loses_its_locks_after_the_idle_timeout(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process frozen (or cut off) inside a read-model transaction kept its row locks for as
    long as TCP kept the connection: the worker that took the lease over could not move."""
    monkeypatch.setattr(sql, "IDLE_IN_TRANSACTION_SECONDS", 1)
    db = PostgresDatabase(postgres_admin_url, min_size=1, max_size=1)
    key = uuid.uuid4().int >> 65
    taken = "SELECT pg_try_advisory_xact_lock(%s)"

    def stall_holding_a_lock(other: psycopg.Connection[Any]) -> None:
        with db.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            assert other.execute(taken, (key,)).fetchone() == (False,)
            time.sleep(2)  # frozen, between two statements
            assert other.execute(taken, (key,)).fetchone() == (True,)
            cur.execute("SELECT 1")  # the server ended the session

    try:
        with (
            psycopg.connect(postgres_admin_url, autocommit=True) as other,
            pytest.raises(DatabaseUnavailableError),
        ):
            stall_holding_a_lock(other)
        with db.read() as cur:  # and the pool goes on with a new connection
            assert cur.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_an_event_store_connection_has_the_tcp_and_statement_timeouts(
    postgres_admin_url: str,
) -> None:
    url = create_pg_database(postgres_admin_url)
    app: Application[uuid.UUID] = Application(env=event_store_env(url, pool_size=1))
    try:
        with app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            _assert_bounded(conn)
    finally:
        app.close()
        drop_pg_database(postgres_admin_url, url)


def test_a_round_trip_without_an_answer_fails_at_the_deadline_and_drops_the_connection(
    proxy: FreezableProxy,
) -> None:
    conn = BoundedConnection.connect(proxy.proxied_url, autocommit=True)
    conn.execute("SELECT 1")
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(NoAnswerError), conn.answering_within(0.5):
        conn.execute("SELECT 1")
    assert _elapsed(started) < 2
    assert conn.closed  # an answer could still come: never reused


def test_the_pre_use_ping_of_an_unanswering_connection_gives_up_after_the_ping_deadline(
    proxy: FreezableProxy,
) -> None:
    conn = BoundedConnection.connect(proxy.proxied_url, autocommit=True)
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        ThrottledCheck()(conn)
    assert PING_SECONDS <= _elapsed(started) < PING_SECONDS + 1.5
    assert conn.closed


def test_a_read_model_query_against_an_unanswering_server_is_unavailable_then_recovers(
    proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BoundedConnection, "answer_seconds", 1.0)
    db = PostgresDatabase(proxy.proxied_url, min_size=1, max_size=1)
    try:
        with db.read() as cur:
            cur.execute("SELECT 1")
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError), db.read() as cur:
            cur.execute("SELECT 1")
        assert _elapsed(started) < 3  # the connection was just used: no ping, one deadline
        proxy.thaw()
        deadline = time.monotonic() + 10
        while True:
            try:
                with db.read() as cur:
                    cur.execute("SELECT 1")
                break
            except DatabaseUnavailableError:
                assert time.monotonic() < deadline, "the pool did not recover"
                time.sleep(0.1)
    finally:
        db.close()


def test_a_lease_whose_server_stops_answering_is_given_up_within_the_deadline(
    proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The projection runner and the relay ask `still_held` every second: against a frozen
    server that call held their thread for as long as TCP kept the connection."""
    monkeypatch.setattr(BoundedConnection, "answer_seconds", 1.0)
    lease = PostgresLease(proxy.proxied_url, f"test-{uuid.uuid4()}")
    assert lease.try_acquire()
    assert lease.still_held()
    proxy.freeze()
    started = time.monotonic()
    assert not lease.still_held()
    assert _elapsed(started) < 3
    lease.release()
