"""`mfa serve --workers N`: several server processes on one port, background work in one."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_pg_database, drop_pg_database, new_user
from tests.integration.test_faults import Service

MFA = Path(sys.executable).parent / "mfa"
pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_env(tmp_path: Path, postgres_admin_url: str) -> Iterator[dict[str, str]]:
    url = create_pg_database(postgres_admin_url)
    yield {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": url,
        "MFA_JWT_SECRET": "fault-test-secret-" + "f" * 32,  # what Service.client signs with
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "MFA_DB_POOL_SIZE": "4",
        "MFA_LOG_LEVEL": "INFO",
        "MFA_WORKERS": "2",
    }
    drop_pg_database(postgres_admin_url, url)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_two_workers_serve_one_port_read_their_writes_and_project_once(
    tmp_path: Path, pg_env: dict[str, str]
) -> None:
    service = Service(pg_env, tmp_path / "serve.log").start(timeout=60)
    try:
        assert len(_children(service.pid)) >= 2, "uvicorn forked no workers"
        user = new_user()
        # A new connection per request: the kernel spreads them over both processes, so a
        # write in one is read in the other (the read waits for the write's position).
        with (
            service.client(user) as signed,
            httpx.Client(
                base_url=service.url,
                headers=signed.headers,
                timeout=20,
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as fresh,
        ):
            device_ids = []
            for index in range(8):
                created = fresh.post("/mfa/totp/setup", json={"name": f"device {index}"})
                assert created.status_code == 201, created.text
                device_ids.append(created.json()["device_id"])
                listed = fresh.get(
                    "/mfa/totp/devices",
                    params={"limit": 100},
                    headers={"X-MFA-Position": created.headers["X-MFA-Position"]},
                )
                assert listed.status_code == 200, listed.text
                assert [d["device_id"] for d in listed.json()["items"]] == device_ids
        log = (tmp_path / "serve.log").read_text()
        # Both processes started the read side; the leases gave the work to one of them.
        assert log.count("projection lease acquired") == 1, log
    finally:
        service.stop()


def test_several_workers_on_sqlite_are_refused_before_starting(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(MFA), "serve", "--workers", "2"],
        env={**os.environ, "MFA_DATA_DIR": str(tmp_path / "var"), "MFA_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "several workers need MFA_DATABASE_URL=postgresql://" in done.stderr


def test_a_configuration_every_worker_would_fail_on_is_refused_once_before_forking(
    tmp_path: Path, pg_env: dict[str, str]
) -> None:
    """uvicorn starts a failed server process again and again: the parent builds the runtime
    once first, so a bad setting ends `mfa serve` with one line instead of a crash loop."""
    done = subprocess.run(
        [str(MFA), "serve", "--port", "0"],
        env={**os.environ, **pg_env, "MFA_SMTP_URL": "ftp://mail.example"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: MFA_SMTP_URL")
