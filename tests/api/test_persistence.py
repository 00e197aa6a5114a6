"""Nothing is lost on restart, and no secret is ever written or logged in clear."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from api.settings import Settings
from commands.app import aggregate_id
from tests.api.helpers import code_at
from tests.api.test_totp import enrol
from tests.conftest import LiveServer, new_user


def test_a_restarted_service_rebuilds_every_users_state_from_events(
    settings: Settings, start_server: Callable[[Settings], LiveServer]
) -> None:
    first = start_server(settings)
    user = new_user()
    client = first.client(user)
    device_id, secret = enrol(client, first)
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    assert client.post("/mfa/backup-codes/verify", json={"code": codes[0]}).status_code == 200
    first.clock.advance(30)
    used = code_at(secret, first.clock.now())
    assert client.post("/mfa/totp/validate", json={"code": used}).status_code == 200
    first.stop()

    second = start_server(settings)
    again = second.client(user)
    assert again.post("/mfa/totp/validate", json={"code": used}).status_code == 403
    assert again.post("/mfa/backup-codes/verify", json={"code": codes[0]}).status_code == 403
    assert again.post("/mfa/backup-codes/verify", json={"code": codes[1]}).json()["remaining"] == 8
    devices = again.get("/mfa/totp/devices").json()["items"]
    assert [(d["device_id"], d["status"]) for d in devices] == [(device_id, "active")]
    second.clock.advance(30)
    fresh = code_at(secret, second.clock.now())
    assert again.post("/mfa/totp/validate", json={"code": fresh}).status_code == 200


def _stored_text(settings: Settings) -> str:
    """Every byte the service stored, as text (hex for binary columns)."""
    if not settings.uses_postgres:
        chunks = [p.read_bytes() for p in Path(settings.data_dir).parent.rglob("*") if p.is_file()]
        return "\n".join(c.decode("latin-1") for c in chunks)
    with psycopg.connect(settings.database_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        lines = []
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t').fetchall():
                lines.append(row)
        return "\n".join(lines)


def test_no_secret_or_code_is_stored_or_logged_in_clear(
    server: LiveServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = new_user()
    client = server.client(user)
    _, secret = enrol(client, server)
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    client.post("/mfa/backup-codes/verify", json={"code": codes[0]})
    server.clock.advance(30)
    client.post("/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())})
    assert server.runtime.read_models.wait_for(server.runtime.services.app.max_position(), 30)
    # A snapshot holds the whole state (secret included): it must be encrypted too.
    server.runtime.services.app.take_snapshot(aggregate_id(server.runtime.services, user))

    stored = _stored_text(settings)
    logged = caplog.text
    secrets = [secret, secret.encode().hex(), *codes]
    secrets += [c.replace("-", "") for c in codes] + [c.encode().hex() for c in codes]
    for value in secrets:
        assert value not in stored
        assert value.lower() not in stored.lower()
        assert value not in logged
    assert "mfa.totp.device_registered.v1" in stored
    assert "mfa.user_mfa.snapshot.v1" in stored
