"""Projections in a separate `mfa worker` process, with read-your-writes for the API's callers."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.settings import Settings
from tests.conftest import LiveServer, create_pg_database, drop_pg_database, new_user

MFA = Path(sys.executable).parent / "mfa"


@pytest.fixture
def worker_env(tmp_path: Path, postgres_admin_url: str) -> Iterator[dict[str, str]]:
    url = create_pg_database(postgres_admin_url)
    env = {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": url,
        "MFA_JWT_SECRET": "worker-test-secret-" + "y" * 32,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "MFA_PROJECTIONS": "worker",
    }
    yield env
    drop_pg_database(postgres_admin_url, url)


def test_the_api_reads_its_writes_when_projections_run_in_a_worker_process(
    worker_env: dict[str, str], start_server: Callable[[Settings], LiveServer]
) -> None:
    server = start_server(Settings.from_env(worker_env))
    assert server.runtime.runner is None
    log = Path(worker_env["MFA_DATA_DIR"] + ".worker.log")
    worker = subprocess.Popen(
        [str(MFA), "worker"], env={**os.environ, **worker_env}, stderr=log.open("wb")
    )
    try:
        deadline = time.monotonic() + 30
        while "projection lease acquired" not in log.read_text():
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        client = server.client(new_user())
        for name in ("phone", "tablet", "watch"):
            created = client.post("/mfa/totp/setup", json={"name": name})
            assert created.status_code == 201
            listed = client.get("/mfa/totp/devices").json()["items"]
            assert created.json()["device_id"] in [d["device_id"] for d in listed]
        codes = client.post("/mfa/backup-codes/generate").json()["codes"]
        client.post("/mfa/backup-codes/verify", json={"code": codes[0]})
        assert client.get("/mfa/backup-codes/count").json() == {"remaining": 9, "total": 10}

        # Another instance learns the position from the header the write answered with.
        other = start_server(Settings.from_env(worker_env))
        user = new_user()
        written = server.client(user).post("/mfa/totp/setup")
        position = written.headers["X-MFA-Position"]
        seen = other.client(user).get("/mfa/totp/devices", headers={"X-MFA-Position": position})
        assert [d["device_id"] for d in seen.json()["items"]] == [written.json()["device_id"]]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
