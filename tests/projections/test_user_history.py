"""Auditors' view of one user's events: every event read carries its log position, even when a
command for that user commits while the history is being read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.app import build_runtime
from commands.app import aggregate_id
from commands.backup_codes import generate_backup_codes
from projections import audit
from tests.conftest import MutableClock, close_runtime, make_settings, new_user


def test_a_write_between_reading_events_and_positions_leaves_no_event_without_a_position(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    services = runtime.services
    user = new_user()
    try:
        generate_backup_codes(services, user)
        reads: list[str] = []
        writing: list[bool] = []

        def after_the_first_read() -> None:
            if len(reads) == 1:  # another request commits between the two reads
                writing.append(True)
                generate_backup_codes(services, user)  # (its own reads are not counted)
                writing.clear()

        real_positions, real_get = audit.event_positions, services.app.events.get

        def positions(*args: Any) -> dict[int, int]:
            result = real_positions(*args)
            if not writing:
                reads.append("positions")
                after_the_first_read()
            return result

        def events(*args: Any, **kwargs: Any) -> Any:
            result = list(real_get(*args, **kwargs))
            if not writing:
                reads.append("events")
                after_the_first_read()
            return iter(result)

        monkeypatch.setattr(audit, "event_positions", positions)
        monkeypatch.setattr(services.app.events, "get", events)
        history = audit.user_history(services.app, aggregate_id(services, user))

        assert sorted(reads) == ["events", "positions"]
        assert all(isinstance(entry["position"], int) for entry in history), history
        assert [entry["version"] for entry in history] == list(range(1, len(history) + 1))
    finally:
        close_runtime(runtime)
