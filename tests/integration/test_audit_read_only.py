"""The read-only commands (`mfa audit ...`, `mfa projections status`) create nothing: no file,
no table. They ran `CREATE TABLE IF NOT EXISTS` for every table of the service, so they
failed on a read-only standby, re-created tables missing from a damaged database, and, with
the key database missing, made an empty one and read every event as erased (exit 0)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from api.settings import Settings
from tests.conftest import LiveServer, new_user
from tests.integration.test_audit_cli import audit_env, mfa

READ_ONLY_COMMANDS = (
    ("audit", "history", "{user}"),
    ("audit", "state", "{user}", "--at", "2030-01-01T00:00:00Z"),
    ("audit", "export"),
    ("projections", "status"),
)


def written(
    tmp_path: Path, database_url: str, start_server: Callable[[Settings], LiveServer]
) -> tuple[dict[str, str], str]:
    """A database the service wrote one user's backup codes to; its environment, the user."""
    env = audit_env(tmp_path, database_url)
    server = start_server(Settings.from_env(env))
    user = new_user()
    assert server.client(user).post("/mfa/backup-codes/generate").status_code == 201
    assert server.runtime.read_models.wait_for(server.runtime.services.app.max_position(), 30)
    server.stop()
    return env, user


def test_without_the_key_database_the_commands_refuse_and_create_none(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    keys = tmp_path / "mfa.sqlite"
    env, user = written(tmp_path, f"sqlite:///{keys}", start_server)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{keys}{suffix}").unlink(missing_ok=True)  # only the events file was copied
    for command in READ_ONLY_COMMANDS:
        result = mfa(env, *(part.format(user=user) for part in command))
        assert (result.returncode, result.stdout) == (1, ""), result
        assert result.stderr.splitlines()[-1].startswith("Error: ")
        assert "mfa.sqlite" in result.stderr
        assert not keys.exists()


def test_a_database_without_the_services_tables_is_refused_not_repaired(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    keys = tmp_path / "mfa.sqlite"
    env, user = written(tmp_path, f"sqlite:///{keys}", start_server)
    conn = sqlite3.connect(keys)
    conn.execute("DROP TABLE mfa_user_epochs")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file: compared below
    conn.close()
    before = keys.read_bytes()
    for command in READ_ONLY_COMMANDS:
        result = mfa(env, *(part.format(user=user) for part in command))
        assert (result.returncode, result.stdout) == (1, ""), result
        assert "mfa_user_epochs" in result.stderr.splitlines()[-1]
    assert keys.read_bytes() == before


@pytest.mark.postgres
def test_the_commands_read_a_read_only_standby(
    tmp_path: Path,
    start_server: Callable[[Settings], LiveServer],
    postgres_admin_url: str,
) -> None:
    from tests.conftest import create_pg_database, drop_pg_database

    url = create_pg_database(postgres_admin_url)
    try:
        env, user = written(tmp_path, url, start_server)
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        for command in READ_ONLY_COMMANDS:
            result = mfa(env, *(part.format(user=user) for part in command))
            assert result.returncode == 0, result
            assert result.stdout
    finally:
        drop_pg_database(postgres_admin_url, url)


def test_a_key_database_without_its_keys_table_says_to_restore_it(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    """Starting the service on it, as the message said of any missing table, would make new
    keys: every earlier event would read as erased."""
    keys = tmp_path / "mfa.sqlite"
    env, user = written(tmp_path, f"sqlite:///{keys}", start_server)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{keys}{suffix}").unlink(missing_ok=True)
    keys.touch()  # an empty file in its place
    result = mfa(env, "audit", "history", user)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[-1] == (
        "Error: the database has no data keys (table mfa_data_keys): restore it from a "
        "backup; read-only commands create none"
    )


NO_STORE = "names no MFA event store"


@pytest.mark.parametrize(
    ("table", "said"), [("stored_events", NO_STORE), ("stored_snapshots", "stored_snapshots")]
)
def test_an_event_store_without_its_tables_is_refused_in_one_line(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer], table: str, said: str
) -> None:
    """The library's own tables: a missing one was a traceback (or, for the events, an empty
    history that looked like a user without events)."""
    keys = tmp_path / "mfa.sqlite"
    env, user = written(tmp_path, f"sqlite:///{keys}", start_server)
    events = tmp_path / "mfa-events.sqlite"
    conn = sqlite3.connect(events)
    conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = events.read_bytes()
    for command in READ_ONLY_COMMANDS:
        result = mfa(env, *(part.format(user=user) for part in command))
        assert (result.returncode, result.stdout) == (1, ""), result
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith("Error: "), result.stderr
        assert said in result.stderr.splitlines()[-1], result.stderr
    assert events.read_bytes() == before


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("table", "said"), [("mfa_events", NO_STORE), ("mfa_snapshots", "mfa_snapshots")]
)
def test_a_postgres_event_store_without_its_tables_is_refused_in_one_line(
    tmp_path: Path,
    start_server: Callable[[Settings], LiveServer],
    postgres_admin_url: str,
    table: str,
    said: str,
) -> None:
    from tests.conftest import create_pg_database, drop_pg_database

    url = create_pg_database(postgres_admin_url)
    try:
        env, user = written(tmp_path, url, start_server)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")
        for command in READ_ONLY_COMMANDS:
            result = mfa(env, *(part.format(user=user) for part in command))
            assert (result.returncode, result.stdout) == (1, ""), result
            assert "Traceback" not in result.stderr
            assert said in result.stderr.splitlines()[-1], result.stderr
    finally:
        drop_pg_database(postgres_admin_url, url)


def test_without_secrets_the_commands_generate_none(tmp_path: Path) -> None:
    """Development secrets are made by the service that writes with them: new ones could
    read nothing stored, and the file they left behind would serve the next `mfa serve`."""
    env = {"MFA_DATA_DIR": str(tmp_path / "var"), "MFA_DATABASE_URL": "", "MFA_JWT_SECRET": ""}
    env["MFA_MASTER_KEY"] = ""
    for command in READ_ONLY_COMMANDS:
        result = mfa(env, *(part.format(user="someone") for part in command))
        assert (result.returncode, result.stdout) == (1, ""), result
        last = result.stderr.splitlines()[-1]
        assert last.startswith("Error: "), result.stderr
        assert "dev-secrets.json" in last, result.stderr
        assert not (tmp_path / "var").exists()
