"""Appends through the one-statement function still take the table lock, still detect a
concurrent write, and still notify listeners."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, StoredEvent

from infra.event_store import event_store_env
from tests.conftest import create_pg_database, drop_pg_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_admin_url: str) -> Iterator[tuple[Application[uuid.UUID], str]]:
    url = create_pg_database(postgres_admin_url)
    app: Application[uuid.UUID] = Application(env=event_store_env(url, pool_size=2))
    yield app, url
    app.close()
    drop_pg_database(postgres_admin_url, url)


def _event(originator: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(originator, version, "test.topic", b"{}")


def test_the_store_appends_through_its_function(
    store: tuple[Application[uuid.UUID], str],
) -> None:
    app, _ = store
    assert app.recorder.datastore.enable_db_functions  # type: ignore[attr-defined]
    ids = app.recorder.insert_events([_event(uuid.uuid4(), 1), _event(uuid.uuid4(), 1)])
    assert ids is not None
    assert list(ids) == [1, 2]


def test_an_append_waits_for_the_table_lock_so_ids_commit_in_order(
    store: tuple[Application[uuid.UUID], str],
) -> None:
    """ROW SHARE conflicts with the EXCLUSIVE lock the append must take, and not with the
    ROW EXCLUSIVE lock that a bare INSERT takes: the append waits only if it locks the table."""
    app, url = store
    table = app.recorder.events_table_name  # type: ignore[attr-defined]
    finished: list[float] = []

    with psycopg.connect(url) as holder:
        holder.execute(f"LOCK TABLE {table} IN ROW SHARE MODE")
        started = time.monotonic()
        appender = threading.Thread(
            target=lambda: (
                app.recorder.insert_events([_event(uuid.uuid4(), 1)]),
                finished.append(time.monotonic()),
            )
        )
        appender.start()
        time.sleep(0.5)
        assert not finished, "the append did not wait for the table lock"
        holder.commit()
    appender.join(timeout=10)
    assert finished
    assert finished[0] - started >= 0.5


def test_a_second_append_of_the_same_version_is_an_integrity_error(
    store: tuple[Application[uuid.UUID], str],
) -> None:
    app, _ = store
    originator = uuid.uuid4()
    app.recorder.insert_events([_event(originator, 1)])
    with pytest.raises(IntegrityError):
        app.recorder.insert_events([_event(originator, 1)])
    assert [e.originator_version for e in app.recorder.select_events(originator)] == [1]


def test_an_append_notifies_listeners(store: tuple[Application[uuid.UUID], str]) -> None:
    app, url = store
    channel = app.recorder.channel_name  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")
        app.recorder.insert_events([_event(uuid.uuid4(), 1)])
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [channel]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"gt": 2},
        {"lte": 3},
        {"gt": 1, "lte": 4},
        {"desc": True, "limit": 2},
        {"desc": True, "lte": 3, "limit": 1},
        {"gt": 1, "desc": True, "limit": 10},
    ],
)
def test_selects_from_rendered_statements_match_the_library(
    store: tuple[Application[uuid.UUID], str], query: dict[str, int | bool]
) -> None:
    """Our statements, rendered once per shape, return what the library's composed ones do."""
    from eventsourcing.postgres import PostgresAggregateRecorder

    app, _ = store
    originator, other = uuid.uuid4(), uuid.uuid4()
    app.recorder.insert_events([_event(originator, v) for v in range(1, 6)] + [_event(other, 1)])
    ours = app.recorder.select_events(originator, **query)  # type: ignore[arg-type]
    theirs = PostgresAggregateRecorder.select_events.__wrapped__(  # type: ignore[attr-defined]
        app.recorder, originator, **query
    )
    assert [e.originator_version for e in ours] == [e.originator_version for e in theirs]
    assert ours == theirs
    assert ours  # every query above selects something


def test_the_store_connects_with_the_whole_url_as_the_read_models_do(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store took five fields from the URL and dropped the rest: its query (`sslmode`,
    `options`, `application_name`, `target_session_attrs`) and libpq's defaults for what
    the URL leaves out (`PGDATABASE`), so events could go to another database, or in clear
    where the read models insisted on TLS."""
    url = create_pg_database(postgres_admin_url)
    name = url.rsplit("/", 1)[1]
    try:
        with_query = url + "?application_name=mfa-store-probe&options=-c%20work_mem%3D5MB"
        app: Application[uuid.UUID] = Application(env=event_store_env(with_query, pool_size=1))
        try:
            app.recorder.insert_events([_event(uuid.uuid4(), 1)])
            with app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
                row = conn.execute(
                    "SELECT current_setting('application_name') AS app, "
                    "current_setting('work_mem') AS mem, current_database() AS db"
                ).fetchone()
            assert tuple(row.values()) == ("mfa-store-probe", "5MB", name)
        finally:
            app.close()
        # the library's own POSTGRES_SCHEMA in the process's environment does not move it
        monkeypatch.setenv("POSTGRES_SCHEMA", "elsewhere")
        app = Application(env=event_store_env(url, pool_size=1))
        assert app.recorder.datastore.schema == "public"  # type: ignore[attr-defined]
        app.close()
        # a URL without a database: libpq's PGDATABASE, as for the read models
        monkeypatch.setenv("PGDATABASE", name)
        without_database = url.rsplit("/", 1)[0] + "/"
        app = Application(env=event_store_env(without_database, pool_size=1))
        try:
            with app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
                row = conn.execute("SELECT current_database() AS db").fetchone()
            assert row["db"] == name
        finally:
            app.close()
    finally:
        drop_pg_database(postgres_admin_url, url)
