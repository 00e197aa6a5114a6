"""The SQL key vault: per-owner data keys wrapped by the master key."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from commands.adapters.vault import NONCE_BYTES, MasterKeyMismatchError, SqlKeyVault
from commands.ports import KeyDestroyedError
from infra.sql import PostgresDatabase, SqliteDatabase
from tests.conftest import create_pg_database, drop_pg_database

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))
KEY_ID = "6664a420-48c6-86d7-be36-57e39b14155c"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.sqlite"


@pytest.fixture
def db(db_path: Path) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase(db_path)
    yield database
    database.close()


@pytest.fixture
def vault(db: SqliteDatabase) -> SqlKeyVault:
    return SqlKeyVault(db, MASTER)


def wrapped_rows(db: SqliteDatabase) -> dict[str, bytes]:
    with db.transaction() as cur:
        cur.execute("SELECT key_id, wrapped FROM mfa_data_keys")
        return {key_id: bytes(wrapped) for key_id, wrapped in cur.fetchall()}


def test_get_or_create_returns_the_same_key_every_time(db: SqliteDatabase, vault: SqlKeyVault):
    key = vault.get_or_create(KEY_ID)

    assert len(key) == 32
    assert vault.get_or_create(KEY_ID) == key
    assert vault.get(KEY_ID) == key
    # And a second vault on the same table (no shared cache) unwraps the same key
    assert SqlKeyVault(db, MASTER).get(KEY_ID) == key


def test_each_owner_gets_its_own_key(vault: SqlKeyVault):
    assert vault.get_or_create("owner-a") != vault.get_or_create("owner-b")


def test_get_of_a_key_that_never_existed_is_none(db: SqliteDatabase, vault: SqlKeyVault):
    assert vault.get(KEY_ID) is None
    assert wrapped_rows(db) == {}


def test_concurrent_get_or_create_converges_on_one_key(db_path: Path):
    # Given twenty vaults, each with its own connection and empty cache
    databases = [SqliteDatabase(db_path) for _ in range(20)]
    vaults = [SqlKeyVault(database, MASTER) for database in databases]
    barrier = threading.Barrier(len(vaults))

    def create(vault: SqlKeyVault) -> bytes:
        barrier.wait()
        return vault.get_or_create(KEY_ID)

    # When they all create the same owner's key at once
    try:
        with ThreadPoolExecutor(max_workers=len(vaults)) as pool:
            keys = list(pool.map(create, vaults))
        stored = wrapped_rows(databases[0])
    finally:
        for database in databases:
            database.close()

    # Then they all hold the one key that was stored
    assert len(set(keys)) == 1
    assert list(stored) == [KEY_ID]


def test_concurrent_get_or_create_on_one_vault_converges_on_one_key(vault: SqlKeyVault):
    barrier = threading.Barrier(16)

    def create(_: int) -> bytes:
        barrier.wait()
        return vault.get_or_create(KEY_ID)

    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = set(pool.map(create, range(16)))

    assert keys == {vault.get(KEY_ID)}


def test_destroy_makes_get_return_none(db: SqliteDatabase, vault: SqlKeyVault):
    vault.get_or_create(KEY_ID)

    vault.destroy(KEY_ID)

    assert vault.get(KEY_ID) is None
    assert SqlKeyVault(db, MASTER).get(KEY_ID) is None
    assert wrapped_rows(db) == {}


def test_destroy_leaves_other_owners_keys(vault: SqlKeyVault):
    other = vault.get_or_create("owner-b")
    vault.get_or_create(KEY_ID)

    vault.destroy(KEY_ID)

    assert vault.get("owner-b") == other


def test_a_destroyed_key_is_never_created_again(db: SqliteDatabase, vault: SqlKeyVault):
    """A write that lost a race with an erasure would otherwise store readable data under a
    new key that nothing destroys."""
    vault.get_or_create(KEY_ID)
    vault.destroy(KEY_ID)

    with pytest.raises(KeyDestroyedError):
        vault.get_or_create(KEY_ID)
    with pytest.raises(KeyDestroyedError):
        SqlKeyVault(db, MASTER).get_or_create(KEY_ID)  # another process, a restart
    assert wrapped_rows(db) == {}
    assert vault.get(KEY_ID) is None
    assert vault.get_or_create("owner-b")  # others are not affected


def test_destroying_a_key_that_never_existed_keeps_it_from_being_made(vault: SqlKeyVault):
    vault.destroy(KEY_ID)
    with pytest.raises(KeyDestroyedError):
        vault.get_or_create(KEY_ID)


def test_the_table_holds_wrapped_keys_not_raw_keys(db: SqliteDatabase, vault: SqlKeyVault):
    key = vault.get_or_create(KEY_ID)

    wrapped = wrapped_rows(db)[KEY_ID]

    assert key not in wrapped
    assert key.hex().encode() not in wrapped
    assert len(wrapped) == NONCE_BYTES + len(key) + 16  # nonce, ciphertext, GCM tag


def test_a_wrong_master_key_cannot_unwrap(db: SqliteDatabase, vault: SqlKeyVault):
    vault.get_or_create(KEY_ID)

    with pytest.raises(MasterKeyMismatchError):
        SqlKeyVault(db, OTHER_MASTER).get(KEY_ID)


def test_a_wrapped_key_moved_to_another_owner_cannot_be_unwrapped(
    db: SqliteDatabase, vault: SqlKeyVault
):
    # Given owner A's wrapped key copied into owner B's row
    vault.get_or_create(KEY_ID)
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO mfa_data_keys (key_id, wrapped, created_at) "
            "SELECT 'owner-b', wrapped, created_at FROM mfa_data_keys WHERE key_id = %s",
            (KEY_ID,),
        )

    # Then it does not unwrap as B's key (the key id is bound as associated data)
    with pytest.raises(MasterKeyMismatchError):
        SqlKeyVault(db, MASTER).get("owner-b")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_master_key_that_is_not_32_bytes_is_refused(db: SqliteDatabase, length: int):
    with pytest.raises(ValueError, match="32 bytes"):
        SqlKeyVault(db, os.urandom(length))


def test_a_key_destroyed_by_another_process_stops_working_here_once_the_cache_expires(
    tmp_path: Path,
) -> None:
    from infra.sql import SqliteDatabase

    master = os.urandom(32)
    here = SqlKeyVault(SqliteDatabase(tmp_path / "keys.sqlite"), master, cache_seconds=0.05)
    there = SqlKeyVault(SqliteDatabase(tmp_path / "keys.sqlite"), master)
    assert here.get_or_create("user-1") == there.get("user-1")
    there.destroy("user-1")
    import time

    time.sleep(0.06)
    assert here.get("user-1") is None


@pytest.mark.postgres
def test_on_postgresql_creating_and_destroying_one_key_never_leave_a_key_behind(
    postgres_admin_url: str,
) -> None:
    """Two processes: one creates a user's key while the other destroys it. Whoever goes
    second, no key remains; a creator that comes second is refused."""
    url = create_pg_database(postgres_admin_url)
    creator_db, eraser_db = PostgresDatabase(url), PostgresDatabase(url)
    try:
        creator, eraser = SqlKeyVault(creator_db, MASTER), SqlKeyVault(eraser_db, MASTER)
        refused = 0
        for round_ in range(40):
            key_id = f"owner-{round_}"
            barrier = threading.Barrier(2)

            def create(key_id: str = key_id, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait()
                try:
                    creator.get_or_create(key_id)
                except KeyDestroyedError:
                    return False
                return True

            def destroy(key_id: str = key_id, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                eraser.destroy(key_id)

            with ThreadPoolExecutor(2) as pool:
                created, _ = pool.submit(create), pool.submit(destroy)
                refused += not created.result()
            assert SqlKeyVault(eraser_db, MASTER).get(key_id) is None, round_
            with pytest.raises(KeyDestroyedError):  # (uncached: the creator may hold it 30 s)
                SqlKeyVault(creator_db, MASTER).get_or_create(key_id)
        assert refused  # (the race went both ways)
    finally:
        creator_db.close()
        eraser_db.close()
        drop_pg_database(postgres_admin_url, url)


class CountingDatabase:
    """The database, counting the reads made through it."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.dialect = db.dialect
        self.reads = 0

    def transaction(self) -> object:
        return self._db.transaction()

    def read(self) -> object:
        self.reads += 1
        return self._db.read()

    def close(self) -> None:
        self._db.close()


def test_a_destroyed_key_is_known_for_good_without_asking_the_database_again(
    db: SqliteDatabase,
):
    """Each event of an erased user read (a rebuild, the relay, the auditors) asked twice:
    for its key, then whether the key had been destroyed. A destroyed key stays destroyed."""
    counting = CountingDatabase(db)
    vault = SqlKeyVault(counting, MASTER)  # type: ignore[arg-type]
    vault.get_or_create(KEY_ID)
    other = SqlKeyVault(counting, MASTER)  # type: ignore[arg-type]  # (another process)
    vault.destroy(KEY_ID)

    assert other.destroyed(KEY_ID)
    before = counting.reads
    for _ in range(100):
        assert other.get(KEY_ID) is None
        assert other.destroyed(KEY_ID)
    assert counting.reads == before
    assert vault.destroyed(KEY_ID)
    assert not vault.destroyed("00000000-0000-4000-8000-000000000000")
