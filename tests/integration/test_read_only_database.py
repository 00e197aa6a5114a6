"""Fault: the database takes reads but refuses writes (a standby after a failover, or
`default_transaction_read_only`), then takes them again.

Every write answered 500 with a 45-line traceback in the log, and `/ready` said ready.
Now writes answer 503 `unavailable` with one log line naming the SQLSTATE, `/ready` answers
503, and the same process serves writes again once the database takes them.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from tests.conftest import create_pg_database, drop_pg_database
from tests.integration.test_faults import Service

pytestmark = pytest.mark.postgres
SECRET = "read-only-test-secret-" + "r" * 32


def set_read_only(admin_url: str, url: str, read_only: bool) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        setting = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
        conn.execute(f'ALTER DATABASE "{name}" {setting}')
        conn.execute(  # the setting reaches new sessions: end the service's
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )


@pytest.fixture
def database(postgres_admin_url: str) -> Iterator[str]:
    url = create_pg_database(postgres_admin_url)
    yield url
    drop_pg_database(postgres_admin_url, url)


def test_a_read_only_database_is_a_clean_503_and_writes_come_back_with_it(
    tmp_path: Path, postgres_admin_url: str, database: str
) -> None:
    env = {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": database,
        "MFA_JWT_SECRET": SECRET,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    log = tmp_path / "serve.log"
    service = Service(env, log).start()
    try:
        token = jwt.encode({"sub": "someone", "exp": int(time.time()) + 600}, SECRET)
        client = httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert client.post("/mfa/backup-codes/generate").status_code == 201

        set_read_only(postgres_admin_url, database, True)
        # The first writes may meet pooled connections the switch ended (503 as well); then
        # the database itself refuses them (SQLSTATE 25006): write until it has.
        statuses: list[int] = []
        deadline = time.monotonic() + 20
        while len(statuses) < 4 or "SQLSTATE 25006" not in log.read_text():
            assert time.monotonic() < deadline, (statuses, log.read_text()[-3000:])
            statuses.append(client.post("/mfa/backup-codes/generate").status_code)
        assert set(statuses) == {503}, statuses
        refused = client.post("/mfa/backup-codes/generate")
        assert refused.json()["code"] == "unavailable"
        assert refused.headers["Retry-After"] == "1"
        ready = httpx.get(service.url + "/ready", timeout=30)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["read_store"] == "unavailable"

        set_read_only(postgres_admin_url, database, False)
        deadline = time.monotonic() + 20
        while client.post("/mfa/backup-codes/generate").status_code != 201:
            assert time.monotonic() < deadline, "writes did not come back"
            time.sleep(0.2)
        # (a read connection the switch ended, pinged under a second ago, may still answer
        # one probe with 503: the pool replaces it then)
        while httpx.get(service.url + "/ready", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "/ready did not come back"
            time.sleep(0.2)
    finally:
        service.stop()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "SQLSTATE 25006" in text, text[-3000:]
