"""Deleted personal data leaves the database's files: PostgreSQL's dead tuples are vacuumed
soon after (read through pageinspect, as someone with the disk would), SQLite overwrites."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.app import build_runtime, close_runtime
from commands.adapters.vault import SqlKeyVault
from commands.erase import erase_user
from commands.totp import set_up_totp
from infra import purge
from infra.purge import purge_deleted_rows
from infra.sql import PostgresDatabase
from projections.rebuild import rebuild_projection
from projections.runner import ProjectionRunner
from tests.conftest import create_pg_database, drop_pg_database, make_settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_admin_url: str) -> Iterator[str]:
    url = create_pg_database(postgres_admin_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    yield url
    drop_pg_database(postgres_admin_url, url)


def on_disk(url: str, table: str, needle: bytes) -> bool:
    """Whether any tuple of the table's pages, live or dead, holds `needle`."""
    with psycopg.connect(url, autocommit=True) as conn:
        pages = conn.execute(
            "SELECT pg_relation_size(%s) / current_setting('block_size')::int", (table,)
        ).fetchone()
        assert pages is not None
        rows = []
        for page in range(pages[0]):
            try:
                rows += conn.execute(
                    "SELECT t_data FROM heap_page_items(get_raw_page(%s, %s)) "
                    "WHERE t_data IS NOT NULL",
                    (table, page),
                ).fetchall()
            except psycopg.errors.InvalidParameterValue:  # a vacuum cut the table meanwhile:
                break  # the pages past its new end hold nothing any more
    return any(needle in bytes(data) for (data,) in rows)


def eventually(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_deleted_row_leaves_the_tables_pages_once_purged(pg_url: str) -> None:
    db = PostgresDatabase(pg_url, min_size=1, max_size=2)
    marker = b"personal-" + os.urandom(8).hex().encode()
    try:
        with db.transaction() as cur:
            cur.execute("CREATE TABLE people (id TEXT PRIMARY KEY, note TEXT)")
            cur.execute("INSERT INTO people VALUES ('a', %s), ('b', 'other')", (marker.decode(),))
        with db.transaction() as cur:
            cur.execute("DELETE FROM people WHERE id = 'a'")
        assert on_disk(pg_url, "people", marker)  # deleted, but still in the page

        purge_deleted_rows(db, "people")

        assert eventually(lambda: not on_disk(pg_url, "people", marker))
        assert on_disk(pg_url, "people", b"other")
    finally:
        db.close()


def test_a_purge_a_running_vacuum_holds_off_is_tried_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A vacuum already running may have begun before the deletion, and would not remove
    the row: skipping the table (as SKIP_LOCKED did) left it, and said nothing."""
    monkeypatch.setattr(purge, "LOCK_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(purge, "AGAIN_AFTER_SECONDS", 0.5)
    db = PostgresDatabase(pg_url, min_size=1, max_size=2)
    marker = b"personal-" + os.urandom(8).hex().encode()
    try:
        with db.transaction() as cur:
            cur.execute("CREATE TABLE people (id TEXT PRIMARY KEY, note TEXT)")
            cur.execute("INSERT INTO people VALUES ('a', %s)", (marker.decode(),))
            cur.execute("DELETE FROM people WHERE id = 'a'")
        with psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE people IN SHARE UPDATE EXCLUSIVE MODE")  # as VACUUM
            purge_deleted_rows(db, "people")
            assert eventually(lambda: "could not vacuum people" in caplog.text, 5)
            assert on_disk(pg_url, "people", marker)
            holder.rollback()
        assert eventually(lambda: not on_disk(pg_url, "people", marker))
    finally:
        db.close()


def test_a_destroyed_data_key_leaves_no_wrapped_copy_in_the_table(pg_url: str) -> None:
    """With `MFA_MASTER_KEY`, a wrapped key left in a dead tuple opened everything the erased
    user's events held."""
    db = PostgresDatabase(pg_url, min_size=1, max_size=2)
    try:
        vault = SqlKeyVault(db, os.urandom(32))
        vault.get_or_create("user-a")
        vault.get_or_create("user-b")
        with db.read() as cur:
            row = cur.execute(
                "SELECT wrapped FROM mfa_data_keys WHERE key_id = 'user-a'"
            ).fetchone()
        wrapped = bytes(row[0])

        vault.destroy("user-a")

        assert eventually(lambda: not on_disk(pg_url, "mfa_data_keys", wrapped))
        assert not on_disk(pg_url, "mfa_data_keys", base64.b64encode(wrapped))
    finally:
        db.close()


def test_an_erased_users_read_model_rows_leave_the_pages(pg_url: str, tmp_path: Path) -> None:
    """The projections delete the user's rows (a device's name, in clear); the runner has
    the tables vacuumed after the batch."""
    runtime = build_runtime(make_settings(tmp_path, pg_url), run_projections=True)
    runtime.start()
    name = "Ada's phone " + os.urandom(4).hex()
    try:
        set_up_totp(runtime.services, "ada", name)
        assert runtime.read_models.wait_for(runtime.services.app.max_position(), timeout=30)
        assert on_disk(pg_url, "mfa_totp_devices", name.encode())

        erase_user(runtime.services, "ada")
        assert runtime.read_models.wait_for(runtime.services.app.max_position(), timeout=30)

        assert eventually(lambda: not on_disk(pg_url, "mfa_totp_devices", name.encode()))
    finally:
        runtime.stop()
        close_runtime(runtime)


def test_a_rebuild_leaves_no_erased_users_rows_in_the_table_it_swaps_in(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user erased while the shadow filled: the shadow had the user's rows, then deleted
    them, and the table swapped in held them as dead tuples, which the runner's purge (of
    the live table of then) never reached."""
    from projections import rebuild

    runtime = build_runtime(make_settings(tmp_path, pg_url), run_projections=False)
    runner = ProjectionRunner(runtime.services.app, runtime.read_models)
    name = "Ada's phone " + os.urandom(4).hex()
    held = rebuild._ensure_held
    erased: list[bool] = []

    def erase_while_filling(*args: Any) -> None:
        if not erased:  # the shadow holds Ada's device by now
            erased.append(True)
            erase_user(runtime.services, "ada")
            runner.catch_up()
            time.sleep(1)  # the live table's purge is done
        held(*args)

    monkeypatch.setattr(rebuild, "_ensure_held", erase_while_filling)
    monkeypatch.setattr(rebuild, "FILL_PAUSE_SECONDS", 0)
    try:
        set_up_totp(runtime.services, "ada", name)
        for n in range(30):  # more than one fill step, so the erasure lands in a later one
            set_up_totp(runtime.services, f"user-{n}", "phone")
        runner.catch_up()
        monkeypatch.setattr(rebuild, "BATCH_SIZE", 2)

        rebuild_projection(runtime.services.app, runtime.read_models, "totp_devices")

        assert erased
        assert eventually(lambda: not on_disk(pg_url, "mfa_totp_devices", name.encode()))
    finally:
        close_runtime(runtime)


class CountingConnect:
    """Stands in for the psycopg module in infra.purge: counts the connections opened."""

    Error = psycopg.Error

    def __init__(self) -> None:
        self.opened = 0

    def connect(self, *args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        self.opened += 1
        return psycopg.connect(*args, **kwargs)


def test_closing_the_database_runs_the_vacuums_due_and_then_none(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mfa projections rebuild` closes its database right after the swap: the vacuum it had
    asked for could be dropped. Close runs what is due (and waits for it), drops the vacuums
    of a minute later, and nothing connects after it returned."""
    monkeypatch.setattr(purge, "LOCK_WAIT_SECONDS", 1.0)
    counting = CountingConnect()
    monkeypatch.setattr(purge, "psycopg", counting)
    db = PostgresDatabase(pg_url, min_size=1, max_size=2)
    marker = b"personal-" + os.urandom(8).hex().encode()
    with db.transaction() as cur:
        for table in ("a", "b", "c"):
            cur.execute(f"CREATE TABLE {table} (note TEXT)")
        cur.execute("INSERT INTO c VALUES (%s)", (marker.decode(),))
        cur.execute("DELETE FROM c")
    with psycopg.connect(pg_url) as holder:
        holder.execute("LOCK TABLE a IN SHARE UPDATE EXCLUSIVE MODE")
        purge_deleted_rows(db, "a", "b", "c")
        assert eventually(lambda: counting.opened == 1, 5)  # waiting for a's lock
        db.close()  # a gives up; b and c still run
        opened = counting.opened
        time.sleep(1.5)
    assert opened == 3
    assert counting.opened == opened
    assert not on_disk(pg_url, "c", marker)
    purge_deleted_rows(db, "a")  # after close: logged, nothing queued for a thread gone
    assert counting.opened == opened


def test_a_purge_that_fails_unexpectedly_does_not_stop_later_ones(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(purge, "AGAIN_AFTER_SECONDS", 60.0)
    real = purge.connection_settings
    calls: list[int] = []

    def failing_once(conninfo: str) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("not a psycopg error")
        return real(conninfo)

    monkeypatch.setattr(purge, "connection_settings", failing_once)
    db = PostgresDatabase(pg_url, min_size=1, max_size=2)
    try:
        with db.transaction() as cur:
            cur.execute("CREATE TABLE a (id INT)")
        purge_deleted_rows(db, "a")
        assert eventually(lambda: len(calls) == 1, 5)
        purge_deleted_rows(db, "a")
        assert eventually(lambda: len(calls) == 2, 5)
    finally:
        db.close()
