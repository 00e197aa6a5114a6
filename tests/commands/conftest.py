"""Fixtures for the write side: a real MfaApplication on a temporary SQLite file, with fakes
for time and randomness."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.adapters.vault import SqlKeyVault
from commands.app import MfaApplication, Services, aggregate_id, load_user
from commands.totp import set_up_totp, verify_totp
from commands.verifiers import totp_code
from domain.totp import TotpDevice
from domain.user_mfa import UserMfa
from infra.event_store import event_store_env
from infra.sql import SqliteDatabase

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class StepClock:
    """A clock that stands still until the test moves it (safe to share between threads)."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class SeededRandom:
    """Deterministic random bytes (safe to share between threads)."""

    def __init__(self, seed: int = 20260301) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def token_bytes(self, n: int) -> bytes:
        with self._lock:
            return self._random.randbytes(n)


@dataclass
class Store:
    """The write side over one temporary SQLite file pair, and ways to look under it."""

    tmp_path: Path
    clock: StepClock = field(default_factory=StepClock)
    random: SeededRandom = field(default_factory=SeededRandom)
    master_key: bytes = field(default_factory=lambda: os.urandom(32))
    id_key: bytes = field(default_factory=lambda: os.urandom(32))
    _opened: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.services = self.open()
        self.app = self.services.app
        self.vault = self.app.vault

    @property
    def db_path(self) -> Path:
        return self.tmp_path / "mfa.sqlite"

    @property
    def events_path(self) -> Path:
        return self.tmp_path / "mfa-events.sqlite"

    def open(self) -> Services:
        """An application and key vault over the files, with empty caches (a restart)."""
        db = SqliteDatabase(self.db_path)
        vault = SqlKeyVault(db, self.master_key)
        app = MfaApplication(event_store_env("sqlite:///" + str(self.db_path)), vault)
        self._opened += [app, db]
        return Services(app=app, clock=self.clock, random=self.random, id_key=self.id_key)

    def close(self) -> None:
        for resource in reversed(self._opened):
            resource.close()

    def aggregate_id(self, user_id: str) -> UUID:
        return aggregate_id(self.services, user_id)

    def load(self, user_id: str, services: Services | None = None) -> UserMfa:
        mfa = load_user(services or self.services, user_id)
        assert mfa is not None
        return mfa

    def enrol_totp(self, user_id: str, name: str | None = None) -> TotpDevice:
        """Set up a device and verify it with its current code; returns it (with its secret)."""
        setup = set_up_totp(self.services, user_id, name).value
        verify_totp(self.services, user_id, totp_code(setup.device, self.clock.now()), None)
        return setup.device

    def rows(self, table: str = "stored_events") -> list[tuple[Any, ...]]:
        """Raw rows of an event-store table, as the database holds them."""
        with sqlite3.connect(self.events_path) as conn:
            return conn.execute(
                f"SELECT originator_id, originator_version, topic, state FROM {table} "
                "ORDER BY originator_id, originator_version"
            ).fetchall()

    def execute_sql(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        conn = sqlite3.connect(self.events_path)
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()

    def raw_files(self) -> bytes:
        """Every byte of the event store's files (main database and write-ahead log)."""
        return b"".join(
            path.read_bytes()
            for path in sorted(self.tmp_path.iterdir())
            if path.name.startswith(self.events_path.name)
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    harness = Store(tmp_path)
    yield harness
    harness.close()
