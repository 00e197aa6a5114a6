"""One event that a read model cannot write must not stop the read side for everyone."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import pytest

from api.app import build_runtime
from commands import totp
from commands.app import aggregate_id
from infra.sql import Cursor
from projections.devices import list_totp_devices
from projections.runner import ProjectionRunner, default_projections
from projections.tracking import ReadModels, projection_status
from tests.conftest import MutableClock, close_runtime, make_settings, new_user


class RefusingProjection:
    """A read model whose table refuses the row it writes for one event (NOT NULL)."""

    name: ClassVar[str] = "refusing"
    tables: ClassVar[tuple[str, ...]] = ("mfa_refusing",)

    def __init__(self) -> None:
        self.refuse: tuple[UUID, int] | None = None
        self.seen = 0

    def create_tables(self, cur: Cursor) -> None:
        cur.execute("CREATE TABLE IF NOT EXISTS mfa_refusing (event TEXT NOT NULL)")

    def process(self, cur: Cursor, event: Any) -> None:
        self.seen += 1
        refused = (event.originator_id, event.originator_version) == self.refuse
        value = None if refused else f"{event.originator_id}/{event.originator_version}"
        cur.execute("INSERT INTO mfa_refusing (event) VALUES (%s)", (value,))


def test_an_event_a_read_model_refuses_is_skipped_by_it_alone_and_the_rest_goes_on(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    refusing = RefusingProjection()
    read_models = ReadModels(runtime.db, [*default_projections(), refusing])
    runner = ProjectionRunner(runtime.services.app, read_models, poll_interval=0.01)
    try:
        services = runtime.services
        before, victim, after = new_user(), new_user(), new_user()
        for user in (before, victim, after):
            totp.set_up_totp(services, user, "phone")
            totp.set_up_totp(services, user, "tablet")
        victim_id = aggregate_id(services, victim)
        refusing.refuse = (victim_id, 2)  # the victim's first device
        head = services.app.max_position()
        refused_position = next(
            n.id
            for n in services.app.recorder.select_notifications(start=1, limit=head)
            if (n.originator_id, n.originator_version) == (victim_id, 2)
        )

        runner.start()
        deadline = time.monotonic() + 30
        while runner.position < head:
            assert time.monotonic() < deadline, f"stuck at {runner.position} of {head}"
            time.sleep(0.05)

        with runtime.db.transaction() as cur:
            cur.execute("SELECT projection, position, topic, error FROM mfa_projection_skips")
            skips = cur.fetchall()
            # Every other read model has the refused event: the victim's devices are listed.
            for user in (before, victim, after):
                devices, _ = list_totp_devices(cur, user, limit=10, cursor=None)
                assert len(devices) == 2, (user, devices)
            cur.execute("SELECT COUNT(*) FROM mfa_refusing")
            written = cur.fetchone()
        assert [tuple(s[:2]) for s in skips] == [("refusing", refused_position)]
        assert "totp" in skips[0][2].lower()
        assert skips[0][3] in ("NotNullViolation", "IntegrityError")  # the type, no message
        assert written is not None
        assert written[0] == head - 1  # every event but the refused one
        status = {s.name: s.skipped for s in projection_status(services.app, read_models)}
        assert status.pop("refusing") == 1
        assert set(status.values()) == {0}
        assert not runner.failing

        # and new events keep flowing in whole batches again
        totp.set_up_totp(services, new_user(), "phone")
        head = services.app.max_position()
        deadline = time.monotonic() + 10
        while runner.position < head:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        runner.stop()
        close_runtime(runtime)


class NameRefusingProjection:
    """A read model whose table refuses TOTP devices named `refused-name` (a CHECK), so that
    PostgreSQL's message quotes the refused row."""

    name: ClassVar[str] = "refusing_names"
    tables: ClassVar[tuple[str, ...]] = ("mfa_refusing_names",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS mfa_refusing_names "
            "(name TEXT CHECK (name IS NULL OR name <> 'refused-name'))"
        )

    def process(self, cur: Cursor, event: Any) -> None:
        name = getattr(event, "name", None)
        cur.execute("INSERT INTO mfa_refusing_names (name) VALUES (%s)", (name,))


def test_a_refused_event_leaves_its_data_out_of_the_log_and_readers_wait_it_out(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner used to log each failure with its traceback, whose message quotes the
    refused row (PostgreSQL's DETAIL); and while it isolated the event (seconds, with the
    database up), every read waiting for its own write answered 503 at once."""
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    read_models = ReadModels(runtime.db, [*default_projections(), NameRefusingProjection()])
    runner = ProjectionRunner(runtime.services.app, read_models, poll_interval=0.01)
    read_models.attach(runner)
    try:
        services = runtime.services
        totp.set_up_totp(services, new_user(), "refused-name")
        written = totp.set_up_totp(services, new_user(), "phone").position  # someone else's
        runner.failing = True  # an outage just before, which the refused batch follows
        with caplog.at_level(logging.DEBUG):
            runner.start()
            deadline = time.monotonic() + 10
            while runner.failing:  # until the first batch has failed (refused, not an outage)
                assert time.monotonic() < deadline, "the runner never tried a batch"
                time.sleep(0.01)
            started = time.monotonic()
            assert read_models.wait_for(written, timeout=20), time.monotonic() - started
        assert "projection failed" in caplog.text  # (the failures were logged)
        assert "refused-name" not in caplog.text
        assert "Failing row" not in caplog.text
    finally:
        runner.stop()
        close_runtime(runtime)
