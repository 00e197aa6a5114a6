"""A PostgreSQL that stops answering without closing its connections (a partition, a frozen
host or process): a request answers 503 `unavailable` within seconds instead of holding its
thread for as long as TCP keeps the dead connection open, and the same process serves again
once the server answers.

Crashes and restarts (connections closed or reset) are in tests/integration/test_faults.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from api.app import build_runtime
from commands import backup_codes
from infra import lease
from infra.sql import (
    ANSWER_SECONDS,
    PING_SECONDS,
    POOL_TIMEOUT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
)
from tests.conftest import (
    LiveServer,
    MutableClock,
    close_runtime,
    create_pg_database,
    drop_pg_database,
    make_settings,
    new_user,
)
from tests.integration.pg_support import FreezableProxy

pytestmark = pytest.mark.postgres

RECOVERY_BOUND = 15.0


@pytest.fixture
def proxy(postgres_admin_url: str) -> Iterator[FreezableProxy]:
    url = create_pg_database(postgres_admin_url)
    proxy = FreezableProxy(url)
    yield proxy
    proxy.close()
    drop_pg_database(postgres_admin_url, url)


def _serve(tmp_path: Path, proxy: FreezableProxy, pool_size: int) -> LiveServer:
    settings = make_settings(tmp_path, proxy.proxied_url, MFA_DB_POOL_SIZE=str(pool_size))
    clock = MutableClock()
    runtime = build_runtime(settings, clock=clock, run_projections=False)
    return LiveServer(runtime=runtime, clock=clock).start()


def _generate(client: httpx.Client) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post("/mfa/backup-codes/generate")
    return response, time.monotonic() - started


def _assert_recovers(client: httpx.Client) -> None:
    deadline = time.monotonic() + RECOVERY_BOUND
    while (status := _generate(client)[0].status_code) != 201:
        assert status == 503, status
        assert time.monotonic() < deadline, "the same process did not serve again"
        time.sleep(0.2)


def test_a_command_answers_503_within_seconds_when_postgres_stops_answering_idle_connections(
    tmp_path: Path, proxy: FreezableProxy
) -> None:
    """Idle pooled connections are pinged before use: each ping gives up after PING_SECONDS."""
    server = _serve(tmp_path, proxy, pool_size=4)
    try:
        client = server.client(new_user())
        assert _generate(client)[0].status_code == 201
        time.sleep(1.2)  # past the pre-use ping's throttle: the next checkout pings
        proxy.freeze()
        response, took = _generate(client)
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        assert took < POOL_TIMEOUT_SECONDS + 2 * PING_SECONDS + 1
        proxy.thaw()
        _assert_recovers(client)
    finally:
        proxy.thaw()
        server.stop()


def test_a_command_answers_503_within_seconds_when_postgres_stops_answering_mid_statement(
    tmp_path: Path, proxy: FreezableProxy
) -> None:
    """A connection used within the last second is not pinged: its statement goes out and the
    answer never comes; the round trip gives up after ANSWER_SECONDS, and is not tried again."""
    server = _serve(tmp_path, proxy, pool_size=1)
    try:
        client = server.client(new_user())
        assert _generate(client)[0].status_code == 201
        proxy.freeze()
        response, took = _generate(client)
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        assert took < ANSWER_SECONDS + 2
        proxy.thaw()
        _assert_recovers(client)
    finally:
        proxy.thaw()
        server.stop()


def test_a_lease_holder_cut_off_from_postgres_is_taken_over(
    tmp_path: Path, proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's lock lives in a server session; cut off, the holder closes its side, but
    the server kept the idle session, and the lock, until TCP keepalive gave up (hours): no
    other process could take the projections over, and every read after a write was 503.
    The server now ends a lease session silent for LEASE_IDLE_SECONDS (30 s; 3 s here)."""
    monkeypatch.setattr(lease, "LEASE_IDLE_SECONDS", 3.0)
    settings = make_settings(tmp_path, proxy.proxied_url, MFA_DB_POOL_SIZE="3")
    cut_off = build_runtime(settings, clock=MutableClock(), run_projections=True)
    direct = dataclasses.replace(settings, database_url=proxy.url)
    other = build_runtime(direct, clock=MutableClock(), run_projections=True)
    try:
        cut_off.start()
        deadline = time.monotonic() + 10
        while not (cut_off.runner is not None and cut_off.runner.active):
            assert time.monotonic() < deadline, "the first process never took the lease"
            time.sleep(0.1)
        other.start()
        time.sleep(1.5)
        assert other.runner is not None
        assert not other.runner.active

        proxy.freeze()
        head = backup_codes.generate_backup_codes(other.services, new_user()).position
        deadline = time.monotonic() + 20
        while min(other.read_models.positions().values()) < head:
            assert time.monotonic() < deadline, f"not taken over (active: {other.runner.active})"
            time.sleep(0.2)
        assert other.runner.active
    finally:
        proxy.thaw()
        close_runtime(other)
        close_runtime(cut_off)


def test_a_read_of_the_log_held_up_by_a_lock_answers_503_once_not_after_a_second_try(
    tmp_path: Path, proxy: FreezableProxy
) -> None:
    """A statement the server cancels (statement_timeout, 8 s) was tried a second time, as if
    the connection had been lost: 16 s before the 503, and a client's retry of the same user
    queued behind it."""
    server = _serve(tmp_path, proxy, pool_size=4)
    release, locked = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(proxy.url) as conn:
            conn.execute("LOCK TABLE mfa_events IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(40)
            conn.rollback()

    holder = threading.Thread(target=hold_lock)
    try:
        client = server.client(new_user())
        assert client.post("/mfa/backup-codes/generate").status_code == 201
        holder.start()
        assert locked.wait(10)
        started = time.monotonic()
        answer = client.post("/mfa/backup-codes/generate")
        took = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "unavailable"
        assert took < STATEMENT_TIMEOUT_SECONDS + 3, f"answered after {took:.1f} s"
    finally:
        release.set()
        holder.join(timeout=45)
        server.stop()


def test_a_lease_released_while_its_heartbeat_awaits_an_answer_leaves_other_connections_alone(
    proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release()` closed the connection under the heartbeat's unanswered `SELECT 1`
    (psycopg's close does not wait for it): the heartbeat went on reading the closed socket's
    number, which the next connection got, and took that connection's handshake."""
    monkeypatch.setattr(lease, "LEASE_IDLE_SECONDS", 3.0)  # a heartbeat every 0.5 s
    run = uuid.uuid4().hex
    for cycle in range(6):
        held = lease.PostgresLease(proxy.proxied_url, f"held-{run}-{cycle}")
        assert held.try_acquire()
        proxy.freeze()
        time.sleep(0.8)  # the heartbeat's SELECT 1 waits for its answer
        held.release()
        proxy.thaw()
        following = lease.PostgresLease(proxy.proxied_url, f"next-{run}-{cycle}")
        assert following.try_acquire(), f"cycle {cycle}: the next connection was disturbed"
        following.release()


def test_a_lease_whose_holder_thread_died_is_freed(
    proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat keeps a live holder's session; it must not keep a dead one's."""
    monkeypatch.setattr(lease, "LEASE_IDLE_SECONDS", 1.0)
    name = f"dead-holder-{uuid.uuid4().hex}"
    held = lease.PostgresLease(proxy.url, name)

    def crashed_worker() -> None:
        assert held.try_acquire()  # ... and the work loop dies without releasing it

    worker = threading.Thread(target=crashed_worker)
    worker.start()
    worker.join()
    other = lease.PostgresLease(proxy.url, name)
    deadline = time.monotonic() + 10
    try:
        while not other.try_acquire():
            assert time.monotonic() < deadline, "a dead holder's lease is kept alive"
            time.sleep(0.2)
    finally:
        other.release()
        held.release()


def test_a_lease_released_from_another_thread_lets_the_holders_statement_finish(
    postgres_admin_url: str,
) -> None:
    """`stop()` releases from the stopping thread while the holder may still be checking the
    lease: the connection is closed only once that statement is done, never under it."""
    held = lease.PostgresLease(postgres_admin_url, f"shared-{uuid.uuid4().hex}")
    assert held.try_acquire()
    conn = held._conn
    assert conn is not None
    outcome: list[object] = []

    def holder_checks() -> None:
        try:
            outcome.append(conn.execute("SELECT pg_sleep(1.5), 1").fetchone())
        except Exception as exc:
            outcome.append(exc)

    holder = threading.Thread(target=holder_checks)
    holder.start()
    pid = conn.info.backend_pid
    deadline = time.monotonic() + 10
    with psycopg.connect(postgres_admin_url, autocommit=True) as watcher:
        while not watcher.execute(  # the holder's statement is under way
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
            " AND query LIKE 'SELECT pg_sleep%%'",
            (pid,),
        ).fetchone():
            assert time.monotonic() < deadline, "the holder's statement never started"
            time.sleep(0.01)
    held.release()
    holder.join(10)
    assert outcome == [("", 1)], outcome
