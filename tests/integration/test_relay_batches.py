"""The NATS relay's batches: a publish that fails midway stores only the acked prefix.

The relay publishes a whole batch before it gathers the acks. When one goes wrong (its ack is
lost or refused, JetStream refuses the message, or the connection breaks while publishing), the
position must stop just before it, nothing after it may be stored first, and the next session
must leave the stream with every event once, in log order.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from api.app import build_runtime
from api.deps import Runtime
from commands import backup_codes, erase, step_up, totp
from infra.sql import DatabaseUnavailableError
from projections import nats_relay, nats_stream
from projections.nats_relay import NatsRelay
from projections.public_events import event_id, is_published
from projections.runner import ProjectionRunner, default_projections
from projections.tracking import ReadModels, set_position
from tests.conftest import MutableClock, close_runtime, make_settings, new_user
from tests.integration.nats_support import PrivateNats, stream_messages

pytestmark = pytest.mark.nats
FAIL_AT = 20  # the publish that goes wrong, counted from 1 in the first session


class FaultyJetStream:
    """A JetStream context whose `FAIL_AT`-th `publish_async` goes wrong as `fault` says."""

    def __init__(self, js: Any, fault: str) -> None:
        self._js = js
        self._fault = fault
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def publish_async(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        self._count += 1
        if self._count != FAIL_AT:
            future: asyncio.Future[Any] = await self._js.publish_async(*args, **kwargs)
            return future
        if self._fault == "connection closed":  # nothing from here on reaches the server
            raise nats.errors.ConnectionClosedError
        await self._js.publish_async(*args, **kwargs)  # stored on the stream...
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._fault == "ack refused":  # ...but the relay is told otherwise
            lost.set_exception(nats.errors.TimeoutError())
        return lost  # "ack missing": never answered


def _log(runtime: Runtime, users: int = 10) -> None:
    services = runtime.services
    for _ in range(users):
        user = new_user()
        first = totp.set_up_totp(services, user, "phone")
        totp.set_up_totp(services, user, "tablet")
        totp.revoke_totp_device(services, user, first.value.device.device_id)
        codes = backup_codes.generate_backup_codes(services, user).value.codes
        backup_codes.verify_backup_code(services, user, codes[2])


@pytest.mark.parametrize("fault", ["ack refused", "ack missing", "connection closed"])
def test_a_batch_failing_midway_stores_the_acked_prefix_and_the_rerun_fills_it_once(
    tmp_path: Path,
    database_url: str,
    private_nats: PrivateNats,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    relay: NatsRelay | None = None
    try:
        _log(runtime)
        app = runtime.services.app
        notifications = app.recorder.select_notifications(start=1, limit=10_000)
        head = notifications[-1].id
        public = [
            (n, app.mapper.to_domain_event(n))
            for n in notifications
            if is_published(app.mapper.to_domain_event(n))
        ]
        assert nats_relay.BATCH_SIZE >= len(notifications) > FAIL_AT  # all in the first batch
        failing = notifications.index(public[FAIL_AT - 1][0])
        acked_prefix_end = notifications[failing - 1].id

        relay = NatsRelay(app, runtime.db, private_nats.url)
        positions_at_session_start: list[int] = []
        real_jetstream = nats.aio.client.Client.jetstream

        def jetstream(nc: nats.aio.client.Client, **kwargs: Any) -> Any:
            js = real_jetstream(nc, **kwargs)
            if nc.options.get("name") != "mfa-relay":
                return js
            assert relay is not None
            positions_at_session_start.append(relay.position())
            return FaultyJetStream(js, fault) if len(positions_at_session_start) == 1 else js

        monkeypatch.setattr(nats.aio.client.Client, "jetstream", jetstream)
        # (5 s in production; wide enough for every real ack to come back on a loaded box)
        monkeypatch.setattr(nats_relay, "ACK_TIMEOUT_SECONDS", 2.0)
        relay.start()
        deadline = time.monotonic() + 30
        while relay.position() < head:
            assert time.monotonic() < deadline, "the relay did not catch up"
            time.sleep(0.05)
        relay.stop()

        assert positions_at_session_start[:2] == [0, acked_prefix_end]
        expected = [event_id(e.originator_id, e.originator_version) for _, e in public]
        assert [m["msg_id"] for m in stream_messages(private_nats.url)] == expected
    finally:
        if relay is not None:
            relay.stop()
        close_runtime(runtime)


def test_a_position_write_failing_after_every_ack_re_sends_the_batch_once_as_duplicates(
    tmp_path: Path, private_nats: PrivateNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole batch is on the stream, then storing the position fails (the database went
    away between the acks and the write). The next session sends the batch again: JetStream
    takes every message as a duplicate (the chained `Nats-Expected-Last-Msg-Id` included), and
    that one session brings the relay to the head of the log."""
    runtime = build_runtime(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'mfa.sqlite'}"),
        clock=MutableClock(),
        run_projections=False,
    )
    relay: NatsRelay | None = None
    try:
        _log(runtime, users=4)
        app = runtime.services.app
        notifications = app.recorder.select_notifications(start=1, limit=10_000)
        head = notifications[-1].id
        public = [e for n in notifications if is_published(e := app.mapper.to_domain_event(n))]
        expected = [event_id(e.originator_id, e.originator_version) for e in public]
        assert len(notifications) <= nats_relay.BATCH_SIZE  # all in one batch

        real_set_position = nats_relay.set_position
        writes: list[int] = []

        def failing_once(cur: Any, name: str, position: int) -> None:
            writes.append(position)
            if len(writes) == 1:
                raise DatabaseUnavailableError("gone between the acks and the position write")
            real_set_position(cur, name, position)

        monkeypatch.setattr(nats_relay, "set_position", failing_once)
        relay = NatsRelay(app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        deadline = time.monotonic() + 20
        while relay.position() < head:
            assert time.monotonic() < deadline, f"the relay is at {relay.position()} of {head}"
            time.sleep(0.05)
        relay.stop()

        assert writes == [head, head]  # the failed write, then the whole re-sent batch at once
        assert [m["msg_id"] for m in stream_messages(private_nats.url)] == expected
    finally:
        if relay is not None:
            relay.stop()
        close_runtime(runtime)


def _limit_per_subject(url: str, limited: bool) -> None:
    """Create or change the stream so that it refuses a 2nd message on any subject (or not)."""

    async def configure() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        config = StreamConfig(
            name=nats_stream.STREAM,
            subjects=nats_stream.SUBJECTS,
            storage=StorageType.FILE,
            duplicate_window=nats_stream.DUPLICATE_WINDOW_SECONDS,
            max_msgs_per_subject=1 if limited else -1,
            discard=DiscardPolicy.NEW if limited else DiscardPolicy.OLD,
            discard_new_per_subject=limited,
        )
        if limited:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
        await nc.close()

    asyncio.run(configure())


def test_a_message_jetstream_refuses_holds_back_the_rest_of_its_batch(
    tmp_path: Path, database_url: str, private_nats: PrivateNats
) -> None:
    """JetStream itself refuses the 3rd message (a 2nd `device_registered` on a stream limited
    to one message per subject) but would take later ones on other subjects: none of them is
    stored before it, and once the limit is lifted the stream holds the log in order."""
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    relay: NatsRelay | None = None
    try:
        _log(runtime, users=1)  # created, registered, registered (refused), revoked, ...
        app = runtime.services.app
        notifications = app.recorder.select_notifications(start=1, limit=10_000)
        public = [(n, e) for n in notifications if is_published(e := app.mapper.to_domain_event(n))]
        expected = [event_id(e.originator_id, e.originator_version) for _, e in public]
        refused = notifications.index(public[2][0])
        _limit_per_subject(private_nats.url, limited=True)

        relay = NatsRelay(app, runtime.db, private_nats.url)
        relay.start()
        deadline = time.monotonic() + 30
        while relay.position() < notifications[refused - 1].id:
            assert time.monotonic() < deadline, "the relay did not publish the first messages"
            time.sleep(0.05)
        time.sleep(0.5)  # it keeps trying (and failing) meanwhile
        assert relay.position() == notifications[refused - 1].id
        assert [m["msg_id"] for m in stream_messages(private_nats.url)] == expected[:2]

        _limit_per_subject(private_nats.url, limited=False)
        head = notifications[-1].id
        while relay.position() < head:
            assert time.monotonic() < deadline, "the relay did not catch up"
            time.sleep(0.05)
        assert [m["msg_id"] for m in stream_messages(private_nats.url)] == expected
    finally:
        if relay is not None:
            relay.stop()
        close_runtime(runtime)


def _catch_up(relay: NatsRelay, head: int) -> None:
    deadline = time.monotonic() + 30
    while relay.position() < head:
        assert time.monotonic() < deadline, f"the relay is at {relay.position()} of {head}"
        time.sleep(0.05)


def test_publishing_again_across_an_erasure_adds_only_the_erasure_after_the_duplicates(
    tmp_path: Path,
    database_url: str,
    private_nats: PrivateNats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After an erasure the user's stored events read as redacted. Published again from an
    earlier position (the relay crashed before storing it, or an operator reset it), those of
    public types are duplicates of the first time, and those of other types stay unpublished:
    the stream gains only the erasure, after everything, in one session. (Redacted stand-ins
    for the unpublished ones were new messages between duplicates: JetStream refused each,
    after an ack timeout, and stored the erasure before them.)"""
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    relay: NatsRelay | None = None
    try:
        services = runtime.services
        app = services.app
        user = new_user()
        backup_codes.generate_backup_codes(services, user)
        for _ in range(3):  # `ChallengeIssued`, a type that is not published
            step_up.create_challenge(services, user, "backup_code")
        _log(runtime, users=1)  # someone else's events after the user's
        relay = NatsRelay(app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        _catch_up(relay, app.max_position())
        relay.stop()
        before = [m["msg_id"] for m in stream_messages(private_nats.url)]

        erase.erase_user(services, user)
        with runtime.db.transaction() as cur:
            set_position(cur, nats_relay.TRACKING_NAME, 0)
        caplog.clear()
        relay = NatsRelay(app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        _catch_up(relay, app.max_position())
        relay.stop()

        stream = stream_messages(private_nats.url)
        assert [m["msg_id"] for m in stream[: len(before)]] == before
        assert [m["event"]["type"] for m in stream[len(before) :]] == ["mfa.user.erased"]
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        if relay is not None:
            relay.stop()
        close_runtime(runtime)


def _relay_subjects(runtime: Runtime) -> list[str]:
    with runtime.db.transaction() as cur:
        cur.execute("SELECT user_id FROM mfa_relay_subjects ORDER BY user_id")
        return [str(row[0]) for row in cur.fetchall()]


def test_the_relays_record_of_a_user_goes_with_the_erasure_even_with_the_relay_off(
    tmp_path: Path, database_url: str, private_nats: PrivateNats
) -> None:
    """The relay keeps aggregate id → user id to name the subject of `mfa.user.erased`, and
    deletes it once that is published. A relay that ran once and was then switched off
    (`MFA_NATS_URL` unset) never would: the erased user's id stayed, linked to the redacted
    history. With no relay configured, the users read model deletes it at the erasure;
    with one configured, it stays until the relay has used it."""
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    relay: NatsRelay | None = None
    user, kept = new_user(), new_user()
    try:
        for someone in (user, kept):
            backup_codes.generate_backup_codes(runtime.services, someone)
        relay = NatsRelay(runtime.services.app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        _catch_up(relay, runtime.services.app.max_position())
        relay.stop()
        assert _relay_subjects(runtime) == sorted([user, kept])
        # A configured relay that is behind: the projections pass the erasure, the row stays
        # for the relay to name the erased user on the stream.
        configured = default_projections(relay=True)
        behind = ReadModels(runtime.db, configured)
        erase.erase_user(runtime.services, kept)
        ProjectionRunner(runtime.services.app, behind).catch_up()
        assert _relay_subjects(runtime) == sorted([user, kept])
        relay = NatsRelay(runtime.services.app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        _catch_up(relay, runtime.services.app.max_position())
        relay.stop()
        erased = [m["event"] for m in stream_messages(private_nats.url)][-1]
        assert (erased["type"], erased["subject"]) == ("mfa.user.erased", kept)
        assert _relay_subjects(runtime) == [user]
    finally:
        if relay is not None:
            relay.stop()
        close_runtime(runtime)

    master_key = base64.b64encode(runtime.settings.master_key).decode()
    switched_off = build_runtime(
        make_settings(tmp_path, database_url, MFA_MASTER_KEY=master_key),
        clock=MutableClock(),
        run_projections=True,
    )
    try:
        assert switched_off.settings.nats_url is None
        erase.erase_user(switched_off.services, user)
        assert switched_off.runner is not None
        switched_off.runner.catch_up()
        assert _relay_subjects(switched_off) == []
    finally:
        close_runtime(switched_off)
