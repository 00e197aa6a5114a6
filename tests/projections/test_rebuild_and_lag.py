"""Projections: positions and lag, rebuild beside the live tables, and no event ever skipped."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from api.app import build_runtime
from api.deps import Runtime
from commands import backup_codes, totp
from infra import lease
from infra.lease import lease_on
from infra.sql import Cursor, open_database
from projections import rebuild
from projections.backup_codes import get_backup_codes
from projections.rebuild import RebuildRunningError, rebuild_projection
from projections.runner import ProjectionRunner
from projections.tracking import ReadModels, projection_status
from tests.conftest import (
    MutableClock,
    close_runtime,
    create_pg_database,
    drop_pg_database,
    make_settings,
    new_user,
)


def _activity(runtime: Runtime, users: int = 5) -> list[str]:
    ids = []
    for _ in range(users):
        user = new_user()
        ids.append(user)
        services = runtime.services
        first = totp.set_up_totp(services, user, "phone")
        totp.set_up_totp(services, user, "tablet")
        totp.revoke_totp_device(services, user, first.value.device.device_id)
        codes = backup_codes.generate_backup_codes(services, user).value.codes
        backup_codes.verify_backup_code(services, user, codes[2])
    return ids


def test_status_reports_positions_and_lag_and_the_runner_catches_up(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    try:
        _activity(runtime, users=2)
        head = runtime.services.app.max_position()
        before = {s.name: s for s in projection_status(runtime.services.app, runtime.read_models)}
        assert all(s.position == 0 and s.lag == head for s in before.values())
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
        after = projection_status(runtime.services.app, runtime.read_models)
        assert all(s.position == head and s.lag == 0 for s in after)
    finally:
        close_runtime(runtime)


def test_every_projection_rebuilt_from_zero_equals_the_live_one_row_for_row(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    try:
        _activity(runtime)
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
        for projection in runtime.read_models.projections:
            report = rebuild_projection(
                runtime.services.app, runtime.read_models, projection.name, compare=True
            )
            assert report.matched_live is True, report
            assert report.position == runtime.services.app.max_position()
        for projection in runtime.read_models.projections:
            assert rebuild_projection(
                runtime.services.app, runtime.read_models, projection.name, compare=True
            ).matched_live
    finally:
        close_runtime(runtime)


def test_a_rebuild_while_commands_and_the_runner_keep_going_loses_nothing(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(make_settings(tmp_path, database_url), clock=MutableClock())
    runtime.start()
    stop = threading.Event()
    try:
        _activity(runtime, users=3)

        def keep_writing() -> None:
            while not stop.is_set():
                _activity(runtime, users=1)

        writer = threading.Thread(target=keep_writing)
        writer.start()
        report = rebuild_projection(
            runtime.services.app, runtime.read_models, "totp_devices", compare=True
        )
        assert report.matched_live is True
        stop.set()
        writer.join()
        assert runtime.read_models.wait_for(runtime.services.app.max_position(), timeout=30)
        final = rebuild_projection(
            runtime.services.app, runtime.read_models, "totp_devices", compare=True
        )
        assert final.matched_live is True
        assert final.rows > 0
    finally:
        stop.set()
        close_runtime(runtime)


class RecordingProjection:
    """Remembers every position it was given (in the same transaction as its tracking)."""

    name: ClassVar[str] = "recording"
    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def create_tables(self, cur: Cursor) -> None:
        pass

    def process(self, cur: Cursor, event: Any) -> None:
        self.seen.append((event.originator_version, str(event.originator_id)))


def test_concurrent_commits_from_many_threads_are_all_seen_by_a_follower(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    app = runtime.services.app
    recording = RecordingProjection()
    read_models = ReadModels(runtime.db, [recording])
    runner = ProjectionRunner(app, read_models, poll_interval=0.001)
    runner.start()
    try:

        def work() -> None:
            for _ in range(6):
                _activity(runtime, users=1)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert read_models.wait_for(app.max_position(), timeout=30)
        in_log = [
            (n.originator_version, str(n.originator_id))
            for n in app.recorder.select_notifications(start=1, limit=100_000)
        ]
        assert len(in_log) == 6 * 6 * 6  # threads x users x events per user
        assert recording.seen == in_log
    finally:
        runner.stop()
        close_runtime(runtime)


def test_a_rebuild_in_a_fresh_process_reads_keys_it_has_not_cached(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    writer = build_runtime(settings, clock=MutableClock(), run_projections=False)
    try:
        _activity(writer, users=2)
        ProjectionRunner(writer.services.app, writer.read_models).catch_up()
    finally:
        close_runtime(writer)
    fresh = build_runtime(settings, clock=MutableClock(), run_projections=False)
    try:
        report = rebuild_projection(
            fresh.services.app, fresh.read_models, "totp_devices", compare=True
        )
        assert report.matched_live is True
        assert report.rows == 2
    finally:
        close_runtime(fresh)


def test_only_one_rebuild_of_a_read_model_runs_at_a_time(tmp_path: Path, database_url: str) -> None:
    """A second rebuild (a second `mfa projections rebuild`, the first one's session lost but
    its process alive) dropped and refilled the first one's shadow tables under it, and the
    swap put a mix in place (events applied twice). The second one is now refused."""
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    other_db = open_database(runtime.settings.database_url)  # another process's connection
    try:
        users = _activity(runtime, users=2)
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
        first = lease_on(other_db, "rebuild-backup_codes")  # held by a running rebuild
        assert first.try_acquire()
        with pytest.raises(RebuildRunningError):
            rebuild_projection(runtime.services.app, runtime.read_models, "backup_codes")
        assert rebuild_projection(  # another read model is not held up
            runtime.services.app, runtime.read_models, "totp_devices", compare=True
        ).matched_live
        first.release()
        report = rebuild_projection(
            runtime.services.app, runtime.read_models, "backup_codes", compare=True
        )
        assert report.matched_live
        with runtime.db.read() as cur:
            assert get_backup_codes(cur, users[0])["remaining"] == 9
    finally:
        other_db.close()
        close_runtime(runtime)


@pytest.mark.postgres
def test_a_rebuild_keeps_its_lease_however_long_it_fills(
    tmp_path: Path, postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends a lease session silent for LEASE_IDLE_SECONDS; a rebuild filling for
    longer than that lost its lock, and a second rebuild ran alongside it."""
    monkeypatch.setattr(lease, "LEASE_IDLE_SECONDS", 2.0)  # (30 s in production)
    url = create_pg_database(postgres_admin_url)
    runtime = build_runtime(
        make_settings(tmp_path, url), clock=MutableClock(), run_projections=False
    )
    try:
        _activity(runtime, users=2)
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
        fill = rebuild._catch_up
        filling = threading.Event()
        second_tried = threading.Event()

        def slow_fill(*args: Any, **kwargs: Any) -> int:
            if threading.current_thread().name == "first-rebuild" and not filling.is_set():
                filling.set()
                second_tried.wait(30)  # filling for as long as that takes
            return fill(*args, **kwargs)

        monkeypatch.setattr(rebuild, "_catch_up", slow_fill)
        app, read_models = runtime.services.app, runtime.read_models
        reports: list[Any] = []
        first = threading.Thread(
            target=lambda: reports.append(rebuild_projection(app, read_models, "backup_codes")),
            name="first-rebuild",
        )
        first.start()
        assert filling.wait(10)
        time.sleep(4)  # twice the idle timeout into the fill
        try:
            with pytest.raises(RebuildRunningError):
                rebuild_projection(app, read_models, "backup_codes")
        finally:
            second_tried.set()
            first.join(30)
        assert reports
        assert reports[0].position == app.max_position()
    finally:
        close_runtime(runtime)
        drop_pg_database(postgres_admin_url, url)


@pytest.mark.postgres
def test_a_rebuild_may_spend_longer_between_statements_than_a_stalled_process_may(
    tmp_path: Path, postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read models end a transaction idle for 20 s (a frozen process's locks); a rebuild
    reads the log and compares whole tables between its statements, which on a large read
    model takes longer: it failed at the swap, after the whole fill."""
    from infra import sql

    monkeypatch.setattr(sql, "IDLE_IN_TRANSACTION_SECONDS", 1)
    url = create_pg_database(postgres_admin_url)
    runtime = build_runtime(make_settings(tmp_path, url), run_projections=False)
    try:
        _activity(runtime, users=2)
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
        read = rebuild._events

        def slow(*args: Any) -> list[tuple[int, Any]]:
            time.sleep(1.5)  # a large log to read and decode
            return read(*args)

        monkeypatch.setattr(rebuild, "_events", slow)
        app, read_models = runtime.services.app, runtime.read_models
        report = rebuild_projection(app, read_models, "backup_codes", compare=True)
        assert report.matched_live is True
    finally:
        close_runtime(runtime)
        drop_pg_database(postgres_admin_url, url)
