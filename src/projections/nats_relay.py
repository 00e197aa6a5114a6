"""The NATS relay: follows the notification log and publishes every event to JetStream.

In log order, one message per event, `Nats-Msg-Id` = the event id. A batch is published
without waiting between messages (one connection, so JetStream stores them in the order sent;
each message after the first names the one before it in `Nats-Expected-Last-Msg-Id`, so that a
message JetStream refuses holds back the rest of the batch), then its acks are gathered and the
tracking position stored up to the last event before the first missing ack. After a crash or an
outage it resumes from that position; JetStream drops the re-sent duplicates inside its window.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import nats

from commands.app import MfaApplication
from domain.user_mfa import UserMfa
from infra.lease import Lease
from infra.purge import purge_deleted_rows
from infra.sql import Database, DatabaseUnavailableError
from projections.base import RELAY_SUBJECTS_DDL, TRACKING_DDL
from projections.nats_stream import DUPLICATE_WINDOW_SECONDS, STREAM, ensure_stream
from projections.public_events import config_subject, encode, is_published, to_public
from projections.runner import MIN_BATCH_INTERVAL
from projections.tracking import lock_position, set_position

log = logging.getLogger("mfa.relay")
TRACKING_NAME = "nats_relay"
BATCH_SIZE = 500
ACK_TIMEOUT_SECONDS = 5.0
UNKNOWN_SUBJECT = "urn:mfa:erased-user"


class NatsRelay:
    """Publishes the log to JetStream from a thread with its own event loop."""

    def __init__(
        self,
        app: MfaApplication,
        db: Database,
        nats_url: str,
        lease: Lease | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self.app = app
        self.db = db
        self.nats_url = nats_url
        self.lease = lease
        self.poll_interval = poll_interval
        self.connected = False
        self.active = lease is None
        self.published = 0
        # The stored position, kept while a session runs (this relay is the only writer while
        # it holds the lease); None = read it again from the database.
        self._position: int | None = None
        self._users: dict[str, str] = {}
        self._short_window_reported = False  # see `ensure_stream`
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        with db.transaction() as cur:
            cur.execute(TRACKING_DDL)
            cur.execute(RELAY_SUBJECTS_DDL)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="mfa-nats-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.lease is not None:
            self.lease.release()

    def position(self) -> int:
        """The stored position (every public event up to it is on the stream)."""
        with self.db.transaction() as cur:
            return lock_position(cur, self.db.dialect, TRACKING_NAME)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _sleep(self, seconds: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, seconds)
        self._wake.clear()

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self.lease is not None and not self.lease.try_acquire():
                self.active = False
                # A second, appends or not (each attempt is a new connection to PostgreSQL):
                # only stopping cuts it short.
                await asyncio.get_running_loop().run_in_executor(None, self._stop.wait, 1.0)
                continue
            if not self.active:
                log.info("relay lease acquired")
            self.active = True
            try:
                await self._session()
                failures = 0
            except Exception as exc:
                failures += 1
                self.connected = False
                log.warning("relay paused (%s); resuming from its position", type(exc).__name__)
                await self._sleep(min(5.0, 0.2 * 2**failures))

    async def _session(self) -> None:
        """Publish until stopped, the lease is lost or something fails.

        Each session starts after the lease was (re)acquired or after an error, so it reads the
        position from the database. It never reconnects by itself: after a reconnection the
        client would send the messages it still buffered while some written before the
        disconnection were lost, and JetStream would store a later event before an earlier
        one. A new session resumes from the stored position instead.
        """
        self._position = None
        reported = False

        async def on_error(exc: Exception) -> None:
            # JetStream's refusal of a message arrives here, not on its ack (nats-py issue
            # #985: the ack is never resolved, so it counts as missing after the timeout).
            # With the chained batch that is one refusal per message left: log the first.
            nonlocal reported
            if not reported:
                # the server's text, quoted: control characters in it cannot start a line
                log.warning("NATS reported %s: %r", type(exc).__name__, str(exc)[:200])
            reported = True

        nc = await asyncio.wait_for(
            nats.connect(
                self.nats_url,
                connect_timeout=2,
                allow_reconnect=False,
                name="mfa-relay",
                error_cb=on_error,
            ),
            timeout=10,
        )
        try:
            js = nc.jetstream(timeout=5)
            window = await ensure_stream(js)
            if window < DUPLICATE_WINDOW_SECONDS and not self._short_window_reported:
                self._short_window_reported = True
                log.warning(
                    "stream %s has a maximum age of %.0f s: its duplicate window is cut to that, "
                    "so events re-sent after an outage longer than that may reach consumers twice",
                    STREAM,
                    window,
                )
            self.connected = True
            last_lease_check = time.monotonic()
            started = 0.0
            while not self._stop.is_set():
                if self.lease is not None and time.monotonic() - last_lease_check > 1.0:
                    last_lease_check = time.monotonic()
                    if not self.lease.still_held():
                        return
                await asyncio.sleep(max(0.0, started + MIN_BATCH_INTERVAL - time.monotonic()))
                started = time.monotonic()
                if await self._publish_batch(js) < BATCH_SIZE:  # at the end of the log
                    await self._sleep(self.poll_interval)
                if not nc.is_connected:
                    raise ConnectionError("disconnected from NATS")
        finally:
            self.connected = False
            await nc.close()

    async def _publish_batch(self, js: Any) -> int:
        """Publish the next batch, then store the position its acks allow; how many events it
        held (0: at the end of the log)."""
        if self._position is None:
            self._position = self.position()
        start = self._position
        notifications = self.app.recorder.select_notifications(start=start + 1, limit=BATCH_SIZE)
        if not notifications:
            return 0
        items: list[BatchItem] = []
        subjects = SubjectChanges()
        failure: Exception | None = None
        previous: str | None = None
        try:
            for notification in notifications:
                event = self.app.mapper.to_domain_event(notification)
                ack = None
                if is_published(event):
                    message = to_public(event, self._subject_of(event, subjects))
                    headers = {"Nats-Msg-Id": message.id}
                    if previous is not None:
                        # JetStream refuses this one unless the previous one is the last it
                        # stored (or it is a duplicate): once a message of the batch is
                        # refused, so are all after it, and the stream keeps the log's order.
                        headers["Nats-Expected-Last-Msg-Id"] = previous
                    # No wait_stall: with one, every publish became a task and a socket
                    # write of its own. A batch never fills the client's 4000 pending acks.
                    ack = await js.publish_async(
                        message.nats_subject, encode(message), stream=STREAM, headers=headers
                    )
                    previous = message.id
                if type(event) is UserMfa.UserErased:
                    subjects.forget(str(event.originator_id))
                items.append(BatchItem(notification.id, ack, len(subjects.journal)))
        except Exception as exc:  # store what was acked before it, then end the session
            failure = exc
        acked, ack_failure = await acked_prefix(items)
        if acked:
            last = acked[-1]
            self._save(start, last.position, subjects.prefix(last.changes))
            self._position = last.position
            self.published += sum(1 for item in acked if item.ack is not None)
        if failure is None:
            failure = ack_failure
        if failure is not None:
            raise failure
        return len(notifications)

    def _save(self, start: int, position: int, subjects: SubjectChanges) -> None:
        """Store the position and the subjects learnt, together, after the acks."""
        try:
            with self.db.transaction() as cur:
                stored = lock_position(cur, self.db.dialect, TRACKING_NAME)
                if stored != start:
                    # Another holder moved it: the lease was lost unnoticed, or someone reset
                    # it. Never move it backwards; the next session reads it again.
                    raise PositionMovedError(f"relay position is {stored}, not {start}")
                for aggregate_id, user_id in subjects.learnt.items():
                    cur.execute(
                        "INSERT INTO mfa_relay_subjects (aggregate_id, user_id) VALUES (%s, %s) "
                        "ON CONFLICT (aggregate_id) DO NOTHING",
                        (aggregate_id, user_id),
                    )
                for aggregate_id in subjects.forgotten:
                    cur.execute(
                        "DELETE FROM mfa_relay_subjects WHERE aggregate_id = %s", (aggregate_id,)
                    )
                set_position(cur, TRACKING_NAME, position)
        except DatabaseUnavailableError:
            log.warning("could not store the relay position; the next run re-sends (deduplicated)")
            raise
        for aggregate_id in subjects.forgotten:
            self._users.pop(aggregate_id, None)
        if subjects.forgotten:
            purge_deleted_rows(self.db, "mfa_relay_subjects")

    def _subject_of(self, event: Any, subjects: SubjectChanges) -> str:
        """The user id of the event's aggregate: learnt from its Created event, kept by the
        relay itself (so it never waits for another projection), forgotten on erasure. An
        admin configuration change names the config resource it changed instead."""
        resource = config_subject(event)
        if resource is not None:
            return resource
        # Push challenges are their own aggregates, owned (and keyed) by the user's aggregate.
        key = str(getattr(event, "key_owner", None) or event.originator_id)
        if type(event) is UserMfa.Created:
            subjects.learn(key, event.user_id)
            self._remember(key, event.user_id)
            return str(event.user_id)
        known = self._users.get(key) or subjects.learnt.get(key)
        if known is not None:
            return known
        with self.db.transaction() as cur:
            cur.execute("SELECT user_id FROM mfa_relay_subjects WHERE aggregate_id = %s", (key,))
            row = cur.fetchone()
        if row is None:
            return UNKNOWN_SUBJECT  # the Created event was already shredded when we got here
        self._remember(key, str(row[0]))
        return str(row[0])

    def _remember(self, key: str, user_id: str) -> None:
        if len(self._users) > 100_000:
            self._users.clear()
        self._users[key] = user_id


class PositionMovedError(RuntimeError):
    """The stored relay position is not the one this session kept in memory."""


@dataclass(frozen=True)
class BatchItem:
    """One event of a batch: its log position, its publish ack (None: not a public event) and
    how many subject changes the batch had made once it was handled."""

    position: int
    ack: asyncio.Future[Any] | None
    changes: int


async def acked_prefix(items: list[BatchItem]) -> tuple[list[BatchItem], Exception | None]:
    """The events up to the first whose ack failed or did not come, and that failure.

    Everything after it is re-sent by the next session: JetStream keeps what it already stored
    (same `Nats-Msg-Id`) and stores the rest behind it, so the stream keeps the log's order.
    """
    futures = [item.ack for item in items if item.ack is not None]
    if futures:
        _, pending = await asyncio.wait(futures, timeout=ACK_TIMEOUT_SECONDS)
        for future in pending:
            future.cancel()  # releases its slot in the client's pending-acks limit
    for index, item in enumerate(items):
        if item.ack is None:
            continue
        if item.ack.cancelled():
            return items[:index], TimeoutError(f"no JetStream ack in {ACK_TIMEOUT_SECONDS} s")
        error = item.ack.exception()
        if error is not None:
            for later in items[index + 1 :]:  # retrieved, so asyncio does not log them
                if later.ack is not None and not later.ack.cancelled():
                    later.ack.exception()
            return items[:index], error if isinstance(error, Exception) else RuntimeError(error)
    return items, None


class SubjectChanges:
    """Subjects learnt and forgotten during one batch (stored with its position).

    `journal` keeps them in log order, so that a batch acked only in part stores only the
    changes of the part that was acked.
    """

    def __init__(self) -> None:
        self.learnt: dict[str, str] = {}
        self.forgotten: list[str] = []
        self.journal: list[tuple[str, str | None]] = []

    def learn(self, aggregate_id: str, user_id: str) -> None:
        self.learnt[aggregate_id] = user_id
        self.journal.append((aggregate_id, user_id))

    def forget(self, aggregate_id: str) -> None:
        self.learnt.pop(aggregate_id, None)
        self.forgotten.append(aggregate_id)
        self.journal.append((aggregate_id, None))

    def prefix(self, length: int) -> SubjectChanges:
        """The changes made by the first `length` entries of the journal."""
        changes = SubjectChanges()
        for aggregate_id, user_id in self.journal[:length]:
            if user_id is None:
                changes.forget(aggregate_id)
            else:
                changes.learn(aggregate_id, user_id)
        return changes
