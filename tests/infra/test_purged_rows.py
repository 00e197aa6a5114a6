"""Deleted personal data leaves the database's files: PostgreSQL's dead tuples are vacuumed
at once (read through pageinspect, as someone with the disk would), SQLite overwrites."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import psycopg
import pytest

from commands.adapters.vault import SqlKeyVault
from infra.sql import PostgresDatabase, purge_deleted_rows
from tests.conftest import create_pg_database, drop_pg_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_admin_url: str) -> Iterator[str]:
    url = create_pg_database(postgres_admin_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    yield url
    drop_pg_database(postgres_admin_url, url)


def on_disk(url: str, table: str, needle: bytes) -> bool:
    """Whether any tuple of the table's first page, live or dead, holds `needle`."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t_data FROM heap_page_items(get_raw_page(%s, 0)) WHERE t_data IS NOT NULL",
            (table,),
        ).fetchall()
    return any(needle in bytes(data) for (data,) in rows)


def test_a_deleted_row_is_gone_from_the_tables_pages_once_purged(pg_url: str) -> None:
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

        assert not on_disk(pg_url, "people", marker)
        assert on_disk(pg_url, "people", b"other")
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

        assert not on_disk(pg_url, "mfa_data_keys", wrapped)
        assert not on_disk(pg_url, "mfa_data_keys", base64.b64encode(wrapped))
    finally:
        db.close()
