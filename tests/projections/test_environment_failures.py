"""A failure of the worker's surroundings (another master key, the database away) is not an
event's fault: the runner retries and skips nothing, where one unreadable event is skipped."""

from __future__ import annotations

import base64
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from api.app import build_runtime
from commands import totp
from commands.adapters.vault import MasterKeyMismatchError
from infra.sql import Cursor, DatabaseUnavailableError
from projections.devices import list_totp_devices
from projections.runner import ISOLATE_AFTER_FAILURES, ProjectionRunner, default_projections
from projections.tracking import ReadModels
from tests.conftest import MutableClock, close_runtime, make_settings, new_user


def _other_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _skips(runtime: Any) -> list[tuple[Any, ...]]:
    with runtime.db.transaction() as cur:
        cur.execute("SELECT projection, position, error FROM mfa_projection_skips")
        return [tuple(row) for row in cur.fetchall()]


def _runner_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mfa.projections"]


def test_a_worker_started_with_another_master_key_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mfa.sqlite'}"
    api = build_runtime(make_settings(tmp_path, url), clock=MutableClock(), run_projections=False)
    totp.set_up_totp(api.services, new_user(), "phone")
    close_runtime(api)

    with pytest.raises(MasterKeyMismatchError, match="MFA_MASTER_KEY"):
        build_runtime(
            make_settings(tmp_path, url, MFA_MASTER_KEY=_other_key()),
            clock=MutableClock(),
            run_projections=False,
        )


def test_a_worker_whose_master_key_opens_no_data_key_skips_nothing_and_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Started before any key was stored (nothing to check yet), with another master key than
    the API's: every event is unreadable to it, and every one of them must wait for a worker
    with the right key, not be skipped by every read model for good."""
    url = f"sqlite:///{tmp_path / 'mfa.sqlite'}"
    right = make_settings(tmp_path, url)
    wrong = build_runtime(
        make_settings(tmp_path, url, MFA_MASTER_KEY=_other_key()),
        clock=MutableClock(),
        run_projections=False,
    )
    api = build_runtime(right, clock=MutableClock(), run_projections=False)
    users = [new_user(), new_user()]
    for user in users:
        totp.set_up_totp(api.services, user, "phone")
    head = api.services.app.max_position()
    runner = ProjectionRunner(wrong.services.app, wrong.read_models, poll_interval=0.01)
    try:
        caplog.set_level(logging.WARNING, logger="mfa.projections")
        runner.start()
        # Past the failures after which a failing batch is gone through event by event.
        deadline = time.monotonic() + 20
        while len(failures := _runner_log(caplog)) <= ISOLATE_AFTER_FAILURES + 1:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        assert all("MFA_MASTER_KEY" in r.getMessage() for r in failures), caplog.text
        assert _skips(wrong) == []
        assert runner.position == 0
        assert runner.failing
    finally:
        runner.stop()
        close_runtime(wrong)

    # The worker restarted with the right key: every read model gets every event.
    runner = ProjectionRunner(api.services.app, api.read_models, poll_interval=0.01)
    try:
        runner.start()
        deadline = time.monotonic() + 20
        while runner.position < head:
            assert time.monotonic() < deadline, f"stuck at {runner.position} of {head}"
            time.sleep(0.05)
        assert _skips(api) == []
        with api.db.transaction() as cur:
            for user in users:
                devices, _ = list_totp_devices(cur, user, limit=10, cursor=None)
                assert len(devices) == 1
    finally:
        runner.stop()
        close_runtime(api)


class FailingProjection:
    """A read model whose every write fails with the given error."""

    name: ClassVar[str] = "failing"
    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, error: Exception) -> None:
        self.error = error

    def create_tables(self, cur: Cursor) -> None:
        pass

    def process(self, cur: Cursor, event: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailableError("pool timeout"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        MasterKeyMismatchError("a data key cannot be unwrapped"),
    ],
    ids=type,
)
def test_an_event_applied_alone_is_not_skipped_for_a_failure_of_the_environment(
    tmp_path: Path, error: Exception
) -> None:
    url = f"sqlite:///{tmp_path / 'mfa.sqlite'}"
    runtime = build_runtime(
        make_settings(tmp_path, url), clock=MutableClock(), run_projections=False
    )
    read_models = ReadModels(runtime.db, [*default_projections(), FailingProjection(error)])
    runner = ProjectionRunner(runtime.services.app, read_models)
    try:
        totp.set_up_totp(runtime.services, new_user(), "phone")
        with pytest.raises(type(error)):
            runner._apply_alone()  # what the runner does with a batch that keeps failing
        assert _skips(runtime) == []
        assert runner.position == 0  # no read model moved past it
    finally:
        close_runtime(runtime)
