"""How long a call waits for a pooled connection while PostgreSQL is down: the pool's timeout
once, then only briefly for as long as the outage lasts, and the timeout again once the
database answers (`infra.outage.ConnectionWait`).

The brief wait used to end 2 s after the last failure: a pool not called for that long during
an outage waited its whole timeout again, and a request late in the outage took over 3 s."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import OperationalError as StoreOperationalError

from infra.event_store import event_store_env
from infra.outage import OUTAGE_WAIT_SECONDS, ConnectionWait
from infra.sql import POOL_TIMEOUT_SECONDS, DatabaseUnavailableError, PostgresDatabase
from tests.conftest import create_pg_database, drop_pg_database
from tests.integration.pg_support import FreezableProxy

# Longer than the brief wait was ever held after a failure: the outage goes on meanwhile.
QUIET_SECONDS = 2.5


def test_the_wait_stays_brief_until_the_database_answers_again() -> None:
    wait = ConnectionWait(POOL_TIMEOUT_SECONDS)
    assert wait.timeout() == POOL_TIMEOUT_SECONDS
    wait.outage_seen()
    assert wait.timeout() == OUTAGE_WAIT_SECONDS
    wait.outage_seen()
    assert wait.timeout() == OUTAGE_WAIT_SECONDS
    wait.answered()
    assert wait.timeout() == POOL_TIMEOUT_SECONDS


@pytest.fixture
def database_behind_proxy(postgres_admin_url: str) -> Iterator[tuple[str, FreezableProxy]]:
    """A fresh database's URL through a proxy that can crash (`close`) like a server."""
    url = create_pg_database(postgres_admin_url)
    proxy = FreezableProxy(url)
    try:
        yield proxy.proxied_url, proxy
    finally:
        proxy.close()
        drop_pg_database(postgres_admin_url, url)


def _assert_brief_after_a_quiet_spell(
    call: Callable[[], object], error: type[Exception], proxy: FreezableProxy
) -> None:
    call()
    proxy.close()  # the server is gone, and stays gone
    with pytest.raises(error):
        call()  # the outage is seen (the connection lost, or none to be had)
    time.sleep(QUIET_SECONDS)  # no call meanwhile
    started = time.monotonic()
    with pytest.raises(error):
        call()
    waited = time.monotonic() - started
    assert waited < OUTAGE_WAIT_SECONDS + 1.0, f"waited {waited:.2f} s again"


@pytest.mark.postgres
def test_a_read_model_pool_unused_for_a_while_in_an_outage_still_waits_only_briefly(
    database_behind_proxy: tuple[str, FreezableProxy],
) -> None:
    url, proxy = database_behind_proxy
    db = PostgresDatabase(url, min_size=1, max_size=1)

    def read() -> None:
        with db.read() as cur:
            cur.execute("SELECT 1")

    try:
        _assert_brief_after_a_quiet_spell(read, DatabaseUnavailableError, proxy)
    finally:
        db.close()


@pytest.mark.postgres
def test_the_event_store_pool_unused_for_a_while_in_an_outage_still_waits_only_briefly(
    database_behind_proxy: tuple[str, FreezableProxy],
) -> None:
    url, proxy = database_behind_proxy
    app: Application[uuid.UUID] = Application(env=event_store_env(url, pool_size=1))
    recorder = app.recorder
    try:
        _assert_brief_after_a_quiet_spell(
            lambda: recorder.max_notification_id(),  # type: ignore[attr-defined]
            StoreOperationalError,
            proxy,
        )
    finally:
        app.close()
