"""The projections' user-id cache and pipelined batches: never an answer mfa_users would not give.

`user_of` answers from a cache that follows the log (`UserMfa.Created` adds, `UserErased`
drops). These tests check that an erased aggregate is forgotten, in one batch and across
batches, that a failed batch leaves neither rows, nor positions, nor cache entries behind, that
a runner forgets what it cached when another moved the tracking rows, that rebuilds (with
their own cache) equal the live tables row for row, and that leaving out superseded TOTP code
acceptances changes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from api.app import build_runtime
from api.deps import Runtime
from commands import totp
from commands.app import user_aggregate_ids
from commands.erase import erase_user
from commands.verifiers import new_totp_secret
from domain.totp import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD
from domain.user_mfa import UserMfa
from infra.sql import Cursor, SqliteDatabase
from projections import runner as runner_module
from projections.base import UserIds
from projections.devices import TotpDeviceProjection
from projections.rebuild import rebuild_projection
from projections.runner import ProjectionRunner
from projections.tracking import ReadModels
from projections.users import UserProjection
from tests.conftest import MutableClock, close_runtime, make_settings, new_user

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _rows(runtime: Runtime, table: str) -> list[tuple[Any, ...]]:
    with runtime.db.transaction() as cur:
        cur.execute(f"SELECT * FROM {table}")
        return sorted(tuple(row) for row in cur.fetchall())


def _users_table(runtime: Runtime) -> dict[str, str]:
    return {str(agg): str(user) for agg, user, _ in _rows(runtime, "mfa_users")}


def _devices(runtime: Runtime) -> set[tuple[str, str, str]]:
    with runtime.db.transaction() as cur:
        cur.execute("SELECT user_id, aggregate_id, name FROM mfa_totp_devices")
        return {(str(u), str(a), str(n)) for u, a, n in cur.fetchall()}


def test_the_cache_adds_on_created_drops_on_erasure_and_stays_bounded() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    alice = UserMfa.start("alice", first, T0)
    bob = UserMfa.start("bob", second, T0)
    user_ids = UserIds(size=2)
    user_ids.follow(enumerate([*alice.collect_events(), *bob.collect_events()]))
    assert (user_ids.get(str(first)), user_ids.get(str(second))) == ("alice", "bob")

    alice.erase(T0)
    user_ids.follow(enumerate(alice.collect_events()))
    assert user_ids.get(str(first)) is None
    assert user_ids.get(str(second)) == "bob"

    user_ids.remember("a", "1")
    user_ids.remember("b", "2")
    assert len(user_ids) == 2
    assert user_ids.get(str(second)) is None  # the oldest entry made room
    user_ids.clear()
    assert len(user_ids) == 0


@pytest.mark.parametrize("one_batch", [True, False], ids=["one batch", "batch by batch"])
def test_erasure_then_re_enrolment_leaves_only_the_new_aggregate_and_rebuilds_match(
    tmp_path: Path, database_url: str, one_batch: bool
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    services = runtime.services
    runner = ProjectionRunner(services.app, runtime.read_models)

    def step() -> None:
        if not one_batch:
            runner.catch_up()

    try:
        alice, bob = new_user(), new_user()
        totp.set_up_totp(services, alice, "phone")
        totp.set_up_totp(services, bob, "phone")
        step()
        (old,) = user_aggregate_ids(services, alice)
        erase_user(services, alice)
        step()
        totp.set_up_totp(services, alice, "new phone")
        totp.set_up_totp(services, bob, "tablet")
        if one_batch:
            assert services.app.max_position() < runner_module.BATCH_SIZE
        runner.catch_up()

        old_id, new_id = (str(a) for a in user_aggregate_ids(services, alice))
        assert old_id == str(old)
        (bob_id,) = (str(a) for a in user_aggregate_ids(services, bob))
        assert _users_table(runtime) == {new_id: alice, bob_id: bob}
        assert runner.user_ids.get(old_id) is None
        assert runner.user_ids.get(new_id) == alice
        assert _devices(runtime) == {
            (alice, new_id, "new phone"),
            (bob, bob_id, "phone"),
            (bob, bob_id, "tablet"),
        }
        for projection in runtime.read_models.projections:
            report = rebuild_projection(
                services.app, runtime.read_models, projection.name, compare=True
            )
            assert report.matched_live is True, projection.name
        assert _devices(runtime) == {
            (alice, new_id, "new phone"),
            (bob, bob_id, "phone"),
            (bob, bob_id, "tablet"),
        }
    finally:
        close_runtime(runtime)


class FailingProjection:
    """Writes a row, then (while `fail` is set) a statement the database rejects."""

    name: ClassVar[str] = "failing"
    tables: ClassVar[tuple[str, ...]] = ("mfa_test_failing",)

    def __init__(self) -> None:
        self.fail = True

    def create_tables(self, cur: Cursor) -> None:
        cur.execute("CREATE TABLE IF NOT EXISTS mfa_test_failing (seen TEXT NOT NULL)")

    def process(self, cur: Cursor, event: Any) -> None:
        cur.execute("INSERT INTO mfa_test_failing (seen) VALUES (%s)", (str(event.originator_id),))
        if self.fail:
            cur.execute("INSERT INTO mfa_test_failing (no_such_column) VALUES (1)")


def test_a_failed_batch_leaves_no_rows_no_position_and_an_empty_cache(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    failing = FailingProjection()
    read_models = ReadModels(runtime.db, [UserProjection(), TotpDeviceProjection(), failing])
    runner = ProjectionRunner(runtime.services.app, read_models)
    try:
        user = new_user()
        totp.set_up_totp(runtime.services, user, "phone")
        with pytest.raises((psycopg.Error, sqlite3.Error)):
            runner.run_once()
        assert set(read_models.positions().values()) == {0}
        assert _rows(runtime, "mfa_users") == []
        assert _rows(runtime, "mfa_test_failing") == []
        assert len(runner.user_ids) == 0

        failing.fail = False
        runner.catch_up()
        (agg,) = (str(a) for a in user_aggregate_ids(runtime.services, user))
        assert _users_table(runtime) == {agg: user}
        assert _devices(runtime) == {(user, agg, "phone")}
        assert runner.user_ids.get(agg) == user
    finally:
        close_runtime(runtime)


def test_a_runner_forgets_its_cache_when_another_moved_the_tracking_rows(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "BATCH_SIZE", 4)
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    services = runtime.services
    try:
        alice, bob = new_user(), new_user()
        totp.set_up_totp(services, alice, "phone")
        first = ProjectionRunner(services.app, runtime.read_models)
        first.catch_up()
        (alice_id,) = (str(a) for a in user_aggregate_ids(services, alice))
        assert first.user_ids.get(alice_id) == alice

        for name in ("phone", "tablet", "watch"):
            totp.set_up_totp(services, bob, name)  # more than a batch before the erasure
        erase_user(services, alice)
        ProjectionRunner(services.app, runtime.read_models).catch_up()
        assert alice_id not in _users_table(runtime)

        # The first runner's next batch ends before the erasure, and the tracking rows are
        # past it: it must not keep believing in alice's erased aggregate.
        assert first.run_once()
        assert first.user_ids.get(alice_id) is None
        assert first.position == services.app.max_position()
    finally:
        close_runtime(runtime)


def _totp_story() -> list[Any]:
    """One user's TOTP events: three devices, codes accepted on each, one device revoked."""
    mfa = UserMfa.start("carol", uuid.uuid4(), T0)
    at = iter(T0 + timedelta(seconds=30 * i) for i in range(1, 100))
    step = iter(range(1000, 1100))
    devices = ["device-1", "device-2", "device-3"]
    for device in devices:
        mfa.register_totp_device(
            device_id=device,
            name=device,
            secret=new_totp_secret(os.urandom(20)),
            digits=DEFAULT_DIGITS,
            period=DEFAULT_PERIOD,
            algorithm=DEFAULT_ALGORITHM,
            at=next(at),
        )
        mfa.verify_totp_device(device, next(step), next(at))
    for i in (0, 0, 2, 1, 0, 2, 2, 1, 0):
        mfa.accept_totp({devices[i]: next(step)}, next(at))
    mfa.revoke_totp_device(devices[2], next(at))
    for i in (0, 1, 1, 0):
        mfa.accept_totp({devices[i]: next(step)}, next(at))
    mfa.disable_totp_device(devices[0], next(at))
    return list(mfa.collect_events())


def _project(events: list[Any], batches: list[list[Any]] | None) -> list[tuple[Any, ...]]:
    db = SqliteDatabase(":memory:")
    users, devices = UserProjection(), TotpDeviceProjection()
    with db.transaction() as cur:
        users.create_tables(cur)
        devices.create_tables(cur)
        for event in events:
            users.process(cur, event)
        if batches is None:
            for event in events:
                devices.process(cur, event)
        else:
            for batch in batches:
                devices.process_batch(cur, batch)
        cur.execute("SELECT * FROM mfa_totp_devices")
        rows = sorted(tuple(row) for row in cur.fetchall())
    db.close()
    return rows


def test_leaving_out_superseded_code_acceptances_gives_the_same_rows() -> None:
    events = _totp_story()
    one_by_one = _project(events, None)
    accepted = [e for e in events if type(e) is UserMfa.TotpCodeAccepted]
    last = {e.device_id: e.timestamp.isoformat() for e in accepted}
    assert [(row[2], row[7]) for row in one_by_one] == [
        ("device-1", last["device-1"]),
        ("device-2", last["device-2"]),
    ]
    for cut in range(len(events) + 1):
        assert _project(events, [events[:cut], events[cut:]]) == one_by_one, cut
