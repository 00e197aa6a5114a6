"""Shared fixtures: clocks, backends (SQLite and PostgreSQL) and a live HTTP server."""

from __future__ import annotations

import base64
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import uvicorn

from api.app import build_runtime, close_runtime, create_app
from api.deps import Runtime
from api.settings import Settings

IN_CI = bool(os.environ.get("CI"))
PG_ADMIN_URL = os.environ.get(
    "MFA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("MFA_TEST_NATS_URL", "nats://127.0.0.1:4222")


class MutableClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = now or datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


def _postgres_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def require_service(name: str, problem: str | None) -> None:
    """Fail in CI (services must be there), skip with the reason on a developer machine."""
    if problem is None:
        return
    message = f"{name} is not reachable ({problem})"
    if IN_CI:
        pytest.fail(message + " - CI must provide it")
    pytest.skip(message + " - start it to run this test (see docs/operations.md)")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    require_service("PostgreSQL", _postgres_reachable())
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    """A fresh, empty database; returns its URL."""
    name = f"mfa_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The event store URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mfa.sqlite'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    url = create_pg_database(admin)
    yield url
    drop_pg_database(admin, url)


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    env = {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": database_url,
        "MFA_JWT_SECRET": "test-secret-" + "x" * 40,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "MFA_DB_POOL_SIZE": "8",
    }
    env.update(overrides)
    return Settings.from_env(env)


@dataclass
class LiveServer:
    """A real uvicorn server around one runtime, on a free loopback port."""

    runtime: Runtime
    clock: MutableClock
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    def start(self, port: int | None = None) -> LiveServer:
        # The server is handed the socket bound here, so no other process can take the port
        # between choosing it and listening on it.
        sock = bind_port(port or free_port())
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # (uvloop takes the socket over)
        config = uvicorn.Config(
            create_app(runtime=self.runtime), host="127.0.0.1", port=0, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([sock],), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                sock.close()
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.url = url
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        for client in self.clients:
            client.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        close_runtime(self.runtime)

    def token(self, sub: str, scope: str = "", ttl: int = 3600, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
        if scope:
            payload["scope"] = scope
        secret = self.runtime.settings.jwt_secret
        assert secret is not None
        return jwt.encode(payload, secret, algorithm="HS256")

    def client(self, sub: str | None = None, scope: str = "") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(sub, scope)}"} if sub else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(client)
        return client


# Ports are chosen below the kernel's ephemeral range (32768-60999 by default): a port the
# kernel hands out with bind(0) can be taken again at once by any outgoing connection of a
# parallel test worker before the server that was meant to have it starts listening.
_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nothing listens on, outside the range outgoing connections use."""
    for _ in range(200):
        port = random.choice(_PORTS)
        try:
            bind_port(port).close()
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


def bind_port(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def start_server(clock: MutableClock) -> Iterator[Callable[[Settings], LiveServer]]:
    """Start (and later stop) live servers; call again with the same settings to restart."""
    servers: list[LiveServer] = []

    def start(settings: Settings) -> LiveServer:
        server = LiveServer(runtime=build_runtime(settings, clock=clock), clock=clock).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(settings: Settings, start_server: Callable[[Settings], LiveServer]) -> LiveServer:
    return start_server(settings)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"
