"""The pools' pre-ping: once a second per connection, and never trusting a closed one."""

from __future__ import annotations

import psycopg
import pytest

from infra.sql import ThrottledCheck

pytestmark = pytest.mark.postgres


def _pings(conn: psycopg.Connection[object]) -> list[str]:
    """Record what the check sends on this connection."""
    sent: list[str] = []
    execute = conn.execute

    def recording(query: object, *args: object, **kwargs: object) -> object:
        sent.append(str(query))
        return execute(query, *args, **kwargs)  # type: ignore[arg-type]

    conn.execute = recording  # type: ignore[method-assign]
    return sent


def test_a_connection_is_pinged_once_per_interval_not_per_checkout(
    postgres_admin_url: str,
) -> None:
    check = ThrottledCheck(interval=60)
    with psycopg.connect(postgres_admin_url) as conn:
        sent = _pings(conn)
        for _ in range(5):
            check(conn)
        assert len(sent) == 1


def test_a_connection_is_pinged_again_after_the_interval(postgres_admin_url: str) -> None:
    check = ThrottledCheck(interval=0)
    with psycopg.connect(postgres_admin_url) as conn:
        sent = _pings(conn)
        check(conn)
        check(conn)
        assert len(sent) == 2


def test_a_closed_connection_fails_the_check_even_within_the_interval(
    postgres_admin_url: str,
) -> None:
    check = ThrottledCheck(interval=60)
    conn = psycopg.connect(postgres_admin_url)
    check(conn)
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        check(conn)


def test_a_connection_whose_server_went_away_fails_the_ping(postgres_admin_url: str) -> None:
    check = ThrottledCheck(interval=60)
    victim = psycopg.connect(postgres_admin_url, autocommit=True)
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        check(victim)  # never checked before: pinged, and the ping finds it dead
    victim.close()
