"""The event store is configured by the service's settings alone. The eventsourcing library
merges the whole process environment into an application's, and looks up `MFA_<KEY>` (the
application is named `mfa`) before the service's own `<KEY>`: a stray `MFA_SQLITE_DBNAME`
or `MFA_POSTGRES_SCHEMA`, which no document names, moved the event store elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import build_runtime
from commands.backup_codes import generate_backup_codes
from tests.conftest import close_runtime, make_settings, new_user


def test_the_librarys_variables_in_the_process_environment_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite"
    monkeypatch.setenv("MFA_SQLITE_DBNAME", str(elsewhere))
    monkeypatch.setenv("SQLITE_DBNAME", str(elsewhere))
    monkeypatch.setenv("MFA_AGGREGATE_CACHE_MAXSIZE", "1")
    monkeypatch.setenv("MFA_PERSISTENCE_MODULE", "eventsourcing.popo")  # in memory: lost
    runtime = build_runtime(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'mfa.sqlite'}"), run_projections=False
    )
    try:
        generate_backup_codes(runtime.services, new_user())
        assert runtime.services.app.repository.cache is not None
        assert runtime.services.app.repository.cache.maxsize == 10_000  # type: ignore[attr-defined]
    finally:
        close_runtime(runtime)
    assert not elsewhere.exists()
    assert (tmp_path / "mfa-events.sqlite").stat().st_size > 0
