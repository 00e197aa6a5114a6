"""The NATS relay against real NATS servers: contract, outages, crashes, two workers."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from api.app import build_runtime
from api.settings import Settings
from commands import backup_codes, totp
from projections import nats_stream
from projections.nats_relay import NatsRelay
from projections.public_events import event_id, is_published
from tests.api.helpers import code_at
from tests.api.test_totp import enrol
from tests.conftest import (
    NATS_URL,
    LiveServer,
    MutableClock,
    close_runtime,
    create_pg_database,
    drop_pg_database,
    make_settings,
    new_user,
    require_service,
)
from tests.integration.nats_support import (
    DurableSubscriber,
    PrivateNats,
    nats_problem,
    stream_messages,
)

MFA = Path(sys.executable).parent / "mfa"
pytestmark = pytest.mark.nats


@pytest.fixture
def shared_nats() -> str:
    require_service("NATS with JetStream", nats_problem(NATS_URL))
    return NATS_URL


def test_a_durable_consumer_receives_every_event_of_a_session_without_secrets(
    tmp_path: Path,
    database_url: str,
    shared_nats: str,
    start_server: Callable[[Settings], LiveServer],
) -> None:
    subscriber = DurableSubscriber(shared_nats, f"test-{uuid.uuid4().hex[:12]}")
    subscriber.create()
    try:
        server = start_server(make_settings(tmp_path, database_url, MFA_NATS_URL=shared_nats))
        user = new_user()
        client = server.client(user)
        _, secret = enrol(client, server)
        server.clock.advance(30)
        code = code_at(secret, server.clock.now())
        assert client.post("/mfa/totp/validate", json={"code": code}).status_code == 200
        codes = client.post("/mfa/backup-codes/generate").json()["codes"]
        assert client.post("/mfa/backup-codes/verify", json={"code": codes[0]}).status_code == 200

        received = subscriber.fetch(6, subject=user)
        types = [body["type"] for _, body in received]
        assert types == [
            "mfa.user.created",
            "mfa.totp.device_registered",
            "mfa.totp.device_verified",
            "mfa.totp.code_accepted",
            "mfa.backup_codes.generated",
            "mfa.backup_codes.used",
        ]
        for msg_id, body in received:
            assert msg_id == body["id"]
            assert body["specversion"] == "1.0"
            assert body["source"] == "urn:mfa:service"
            assert body["time"].startswith("2026-")
            assert body["dataschema"] == f"urn:mfa:events:{body['type']}:v1"
            assert body["datacontenttype"] == "application/json"
            assert body["subject"] == user
        payloads = str([body for _, body in received])
        for value in (secret, code, *codes, *(c.replace("-", "") for c in codes)):
            assert value not in payloads
    finally:
        subscriber.delete()


def test_commands_succeed_while_nats_is_down_and_the_backlog_follows_in_order(
    tmp_path: Path, private_nats: PrivateNats, start_server: Callable[[Settings], LiveServer]
) -> None:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'mfa.sqlite'}", MFA_NATS_URL=private_nats.url
    )
    server = start_server(settings)
    client = server.client(new_user())
    client.post("/mfa/backup-codes/generate")
    _wait(lambda: len(stream_messages(private_nats.url)) == 2)

    private_nats.stop()
    _wait(lambda: httpx.get(server.url + "/ready").status_code == 503)
    ready = httpx.get(server.url + "/ready").json()
    assert ready["checks"]["nats"] == "unavailable"
    for _ in range(5):
        assert client.post("/mfa/totp/setup").status_code == 201

    private_nats.start()
    _wait(lambda: len(stream_messages(private_nats.url)) == 7, timeout=30)
    assert httpx.get(server.url + "/ready").status_code == 200
    expected = _expected_ids(server)
    assert [m["msg_id"] for m in stream_messages(private_nats.url)] == expected


def _expected_ids(server: LiveServer) -> list[str]:
    app = server.runtime.services.app
    return [
        event_id(n.originator_id, n.originator_version)
        for n in app.recorder.select_notifications(start=1, limit=100_000)
    ]


def _wait(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def worker_env(
    tmp_path: Path, postgres_admin_url: str, private_nats: PrivateNats
) -> Iterator[dict[str, str]]:
    url = create_pg_database(postgres_admin_url)
    yield {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": url,
        "MFA_JWT_SECRET": "relay-test-secret-" + "z" * 32,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "MFA_PROJECTIONS": "worker",
        "MFA_NATS_URL": private_nats.url,
        "MFA_LOG_LEVEL": "INFO",
    }
    drop_pg_database(postgres_admin_url, url)


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(MFA), "worker"],
        env={**os.environ, **env},
        stderr=log.open("ab"),
        stdout=subprocess.DEVNULL,
    )


def test_a_relay_killed_mid_stream_and_restarted_publishes_every_event_exactly_once(
    tmp_path: Path,
    worker_env: dict[str, str],
    private_nats: PrivateNats,
    start_server: Callable[[Settings], LiveServer],
) -> None:
    server = start_server(Settings.from_env(worker_env))
    log = tmp_path / "worker.log"
    worker = _worker(worker_env, log)
    client = server.client(new_user())
    for _ in range(60):
        client.post("/mfa/backup-codes/generate")
    _wait(lambda: len(stream_messages(private_nats.url)) > 5, timeout=30)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    published_before_restart = len(stream_messages(private_nats.url))
    for _ in range(20):
        client.post("/mfa/backup-codes/generate")

    worker = _worker(worker_env, log)
    try:
        expected = _expected_ids(server)
        assert len(expected) == 81
        _wait(lambda: len(stream_messages(private_nats.url)) >= len(expected), timeout=60)
        on_stream = [m["msg_id"] for m in stream_messages(private_nats.url)]
        assert on_stream == expected
        assert published_before_restart < len(expected)
    finally:
        worker.terminate()
        worker.wait(timeout=15)


def test_two_workers_share_the_work_through_leases_not_luck(
    tmp_path: Path,
    worker_env: dict[str, str],
    private_nats: PrivateNats,
    start_server: Callable[[Settings], LiveServer],
) -> None:
    server = start_server(Settings.from_env(worker_env))
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [_worker(worker_env, logs[0])]
    _wait(lambda: "relay lease acquired" in logs[0].read_text(), timeout=20)
    workers.append(_worker(worker_env, logs[1]))
    try:
        client = server.client(new_user())
        for _ in range(10):
            client.post("/mfa/backup-codes/generate")
        _wait(lambda: len(stream_messages(private_nats.url)) == 11, timeout=30)
        time.sleep(1.5)
        assert "relay lease acquired" not in logs[1].read_text()
        assert "projection lease acquired" not in logs[1].read_text()

        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        for _ in range(5):
            client.post("/mfa/backup-codes/generate")
        _wait(lambda: "relay lease acquired" in logs[1].read_text(), timeout=20)
        _wait(lambda: len(stream_messages(private_nats.url)) == 16, timeout=30)
        assert [m["msg_id"] for m in stream_messages(private_nats.url)] == _expected_ids(server)
        assert client.get("/mfa/backup-codes/count").json() == {"remaining": 10, "total": 10}
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=15)


def _stream_with_a_maximum_age(url: str, max_age: float) -> None:
    """The stream as an operator may create it beforehand (docs/events.md)."""

    async def create() -> None:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            await nc.jetstream().add_stream(
                StreamConfig(
                    name=nats_stream.STREAM,
                    subjects=nats_stream.SUBJECTS,
                    storage=StorageType.FILE,
                    max_age=max_age,
                )
            )
        finally:
            await nc.close()

    asyncio.run(create())


def _ensure_stream(url: str) -> tuple[float, StreamConfig]:
    async def ensure() -> tuple[float, StreamConfig]:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            js = nc.jetstream()
            window = await nats_stream.ensure_stream(js)
            return window, (await js.stream_info(nats_stream.STREAM)).config
        finally:
            await nc.close()

    return asyncio.run(ensure())


def test_an_operator_stream_with_a_maximum_age_under_a_day_dedupes_for_that_age(
    private_nats: PrivateNats,
) -> None:
    """JetStream refuses a duplicate window longer than the maximum age (error 10052)."""
    _stream_with_a_maximum_age(private_nats.url, max_age=3600)

    window, config = _ensure_stream(private_nats.url)

    assert window == 3600
    assert (config.max_age, config.duplicate_window) == (3600, 3600)
    assert _ensure_stream(private_nats.url)[0] == 3600  # and again: nothing left to change


def test_the_relay_publishes_to_a_stream_with_a_maximum_age_and_warns_once(
    tmp_path: Path, private_nats: PrivateNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mfa.relay")
    _stream_with_a_maximum_age(private_nats.url, max_age=3600)
    runtime = build_runtime(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'mfa.sqlite'}"),
        clock=MutableClock(),
        run_projections=False,
    )
    app = runtime.services.app
    relay = NatsRelay(app, runtime.db, private_nats.url, poll_interval=0.01)
    try:
        backup_codes.generate_backup_codes(runtime.services, new_user())
        relay.start()
        _wait(lambda: relay.position() == app.max_position())

        private_nats.stop()  # the next session looks at the stream again
        private_nats.start()
        totp.set_up_totp(runtime.services, new_user(), "phone")
        _wait(lambda: relay.position() == app.max_position(), timeout=30)

        expected = [
            event_id(n.originator_id, n.originator_version)
            for n in app.recorder.select_notifications(start=1, limit=100)
            if is_published(app.mapper.to_domain_event(n))
        ]
        assert [m["msg_id"] for m in stream_messages(private_nats.url)] == expected
        warnings = [r for r in caplog.records if "maximum age" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
    finally:
        relay.stop()
        close_runtime(runtime)


def test_the_readiness_probe_of_a_down_nats_answers_at_once_without_tracebacks(
    caplog: pytest.LogCaptureFixture, shared_nats: str
) -> None:
    """nats-py's first connection retried every 2 s until the probe's timeout, logging an
    ERROR with a traceback each time: every load-balancer probe during a NATS outage held a
    handler thread for 2.5 s and flooded the error log."""
    from projections.nats_stream import nats_reachable

    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    assert asyncio.run(nats_reachable("nats://127.0.0.1:1")) is False
    assert time.monotonic() - started < 1.0
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert asyncio.run(nats_reachable(shared_nats)) is True


def test_readiness_probes_nats_at_most_once_in_a_while_whoever_asks(
    monkeypatch: pytest.MonkeyPatch, shared_nats: str
) -> None:
    """With the relay in another process, each /ready (no token needed) opened a NATS
    connection of its own: a flood of probes was a flood of connections."""
    from types import SimpleNamespace

    from api.controllers import health

    calls: list[str] = []
    real = health.nats_reachable

    async def counted(url: str) -> bool:
        calls.append(url)
        return await real(url)

    monkeypatch.setattr(health, "nats_reachable", counted)
    monkeypatch.setattr(health, "_probed", {})
    runtime: Any = SimpleNamespace(settings=SimpleNamespace(nats_url=shared_nats), relay=None)
    answers = [health._nats_check(runtime) for _ in range(20)]
    assert answers == ["ok"] * 20
    assert calls == [shared_nats]
    monkeypatch.setattr(health, "NATS_PROBE_SECONDS", 0.0)
    assert health._nats_check(runtime) == "ok"
    assert len(calls) == 2
