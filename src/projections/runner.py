"""Runs every projection: follows the log, writes rows and tracking in one transaction each.

Positions are notification ids. The eventsourcing recorders assign them in commit order
(PostgreSQL: a table lock on insert; SQLite: one writer), so reading `id > position` never
skips an event that committed late. Each batch first locks its projection's tracking row and
re-reads the position there, so a rebuild's swap, a second runner or a restart can never make
an event count twice.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from commands.adapters.vault import MasterKeyMismatchError
from commands.app import MfaApplication
from domain.user_mfa import UserMfa
from infra.lease import Lease
from infra.purge import purge_deleted_rows
from infra.sql import Cursor, Database, DatabaseUnavailableError, pipelined
from projections.audit_log import ConfigAuditLogProjection
from projections.backup_codes import BackupCodeProjection
from projections.base import (
    Projection,
    ProjectionCursor,
    UserIds,
)
from projections.devices import TotpDeviceProjection
from projections.push import PushChallengeProjection, PushDeviceProjection
from projections.tracking import (
    ReadModels,
    lock_positions,
    set_position,
    set_positions,
)
from projections.trusted_devices import TrustedDeviceProjection
from projections.users import UserProjection
from projections.webauthn import WebAuthnCredentialProjection

log = logging.getLogger("mfa.projections")
BATCH_SIZE = 500
# Under load, batches start at most this often: the events of 10 ms share one transaction
# (and one look at the log) instead of one each. An event after a quiet spell goes at once.
MIN_BATCH_INTERVAL = 0.01
# A batch that fails this often in a row (the database being up) is gone through one event
# at a time, and an event that still fails alone is skipped by the projections that refuse
# it (`_apply_alone`): one bad event must not stop every read model for every user.
ISOLATE_AFTER_FAILURES = 3
LEASE_CHECK_SECONDS = 1.0
# Failures of the process's surroundings, not of an event: the batch is tried again later and
# never gone through one by one, and no event is skipped for them. With another master key
# than the one that wrapped the data keys, every event would be skipped by every read model.
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (
    MasterKeyMismatchError,
    DatabaseUnavailableError,
    StoreOperationalError,
    StoreInterfaceError,
    psycopg.OperationalError,  # also a statement cancelled by its timeout
    psycopg.InterfaceError,
    sqlite3.OperationalError,  # locked or I/O (SQLite also reports some SQL mistakes so)
    OSError,
    MemoryError,
)


def purge_erased(db: Database, projections: Sequence[Projection]) -> None:
    """After an erasure deleted a user's rows: the read models' tables (and any other a
    projection deleted from) leave no copy of them on disk."""
    tables = [t for p in projections for t in (*p.tables, *getattr(p, "also_deletes_from", ()))]
    purge_deleted_rows(db, *tables)


def default_projections(*, relay: bool = True) -> list[Projection]:
    """Every read model, the users table first (the others join on it). Without a `relay`
    (no NATS configured) the users model also forgets the relay's record of erased users."""
    return [
        UserProjection(forget_relay_subjects=not relay),
        ConfigAuditLogProjection(),
        TotpDeviceProjection(),
        BackupCodeProjection(),
        WebAuthnCredentialProjection(),
        TrustedDeviceProjection(),
        PushDeviceProjection(),
        PushChallengeProjection(),
    ]


def process_events(
    cur: Cursor, projection: Projection, events: list[tuple[int, Any]], done: int
) -> int:
    """Process the events after `done`; returns the position reached (the tracking row is the
    caller's to move)."""
    todo = [(pos, event) for pos, event in events if pos > done]
    if not todo:
        return done
    process_batch = getattr(projection, "process_batch", None)  # see BatchProjection
    if process_batch is not None:
        process_batch(cur, [event for _, event in todo])
    else:
        for _, event in todo:
            projection.process(cur, event)
    return todo[-1][0]


def apply_batch(
    cur: Cursor,
    projection: Projection,
    tracking_name: str,
    events: list[tuple[int, Any]],
    done: int,
) -> int:
    """Process the events after `done` and move the tracking row; returns the new position."""
    reached = process_events(cur, projection, events, done)
    if reached != done:
        set_position(cur, tracking_name, reached)
    return reached


class ProjectionRunner:
    """A background thread that brings every projection up to the end of the log.

    With a lease, only the holder works; the others wait and take over when it goes away.
    """

    def __init__(
        self,
        app: MfaApplication,
        read_models: ReadModels,
        lease: Lease | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self.app = app
        self.read_models = read_models
        self.lease = lease
        self.poll_interval = poll_interval
        self.active = lease is None
        # The log or the database cannot be read now: readers stop waiting for progress.
        self.failing = False
        self._lease_checked = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions = read_models.positions()
        self.user_ids = UserIds()  # see `_user_ids_for`
        self._one_by_one_until: int | None = None  # see ISOLATE_AFTER_FAILURES

    @property
    def position(self) -> int:
        """The position every projection has reached."""
        return min(self._positions.values(), default=0)

    def wake(self) -> None:
        """New events were written (in this process): look now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mfa-projections", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.lease is not None:
            self.lease.release()
        self.active = False

    def _hold_lease(self) -> bool:
        if self.lease is None:
            return True
        now = time.monotonic()
        # Held or not, at most one attempt a second: a waiter is woken by every append (the
        # log waker), and each attempt is a new connection to PostgreSQL.
        if now - self._lease_checked < LEASE_CHECK_SECONDS:
            return self.active
        self._lease_checked = now
        held = self.lease.try_acquire()
        if held and not self.active:
            self._positions = self.read_models.positions()
            self.user_ids.clear()  # another holder may have processed erasures meanwhile
            log.info("projection lease acquired")
        self.active = held
        return held

    def _loop(self) -> None:
        failures = 0
        started = 0.0
        while not self._stop.is_set():
            processed = 0
            try:
                if self._hold_lease():
                    self._stop.wait(max(0.0, started + MIN_BATCH_INTERVAL - time.monotonic()))
                    started = time.monotonic()
                    processed = self.run_once()
                    failures = 0
                    self.failing = False
                else:
                    self._wake.wait(LEASE_CHECK_SECONDS)
            except MasterKeyMismatchError as exc:
                failures += 1
                self.failing = True
                log.error("projections cannot read the log: %s", exc)
            except ENVIRONMENT_ERRORS as exc:
                failures += 1
                self.failing = True
                log.warning("projections paused (%s); retrying", type(exc).__name__)
            except Exception as exc:
                # A read model refused an event: the database is up, and isolating the event
                # takes seconds, so readers go on waiting (`failing` stays False). Only the
                # error's type is logged: a database's message quotes the refused row.
                failures += 1
                self.failing = False  # (the database answered: an outage before is over)
                log.warning(
                    "projection failed after position %d (%s); retrying from there",
                    self.position,
                    type(exc).__name__,
                )
                if failures >= ISOLATE_AFTER_FAILURES:
                    failures = self._isolate()
            if processed < self._batch_limit():  # at the end of the log: wait for news
                delay = self.poll_interval if failures == 0 else min(5.0, 0.1 * 2**failures)
                self._wake.wait(delay)
                self._wake.clear()

    def _batch_limit(self) -> int:
        """BATCH_SIZE, or 1 while going one by one through a batch that kept failing."""
        if self._one_by_one_until is not None and self.position >= self._one_by_one_until:
            self._one_by_one_until = None
        return BATCH_SIZE if self._one_by_one_until is None else 1

    def _isolate(self) -> int:
        """After a batch kept failing: go through it one event at a time; if it is a single
        event that keeps failing, apply it alone. Returns the failure count to go on with."""
        if self._one_by_one_until is None:
            self._one_by_one_until = self.position + BATCH_SIZE
            log.warning(
                "going through events %d-%d one by one", self.position + 1, self._one_by_one_until
            )
            return 0
        try:
            self._apply_alone()
        except Exception as exc:
            failed = type(exc).__name__
            log.warning("could not apply event %d alone (%s); retrying", self.position + 1, failed)
            return ISOLATE_AFTER_FAILURES - 1
        return 0

    def _apply_alone(self) -> None:
        """Apply the next event to each projection in a savepoint of its own. A projection
        that refuses it skips it: the skip is logged and kept in `mfa_projection_skips` (shown
        by `mfa projections status`; a rebuild after the fix applies the event again). Only the
        error's type is kept: its message could quote the event's data. An ENVIRONMENT_ERRORS
        failure is no reason to skip: it is raised, and the event tried again later."""
        notifications = self.app.recorder.select_notifications(start=self.position + 1, limit=1)
        if not notifications:
            return
        notification = notifications[0]
        try:
            event: Any = self.app.mapper.to_domain_event(notification)
            unreadable: str | None = None
        except ENVIRONMENT_ERRORS:
            raise
        except Exception as exc:  # the event itself cannot be decoded: no projection can have it
            event, unreadable = None, type(exc).__name__
        db = self.read_models.db
        projections = self.read_models.projections
        reached: dict[str, int] = {}
        with db.transaction() as cur:
            done = lock_positions(cur, db.dialect, [p.name for p in projections])
            projection_cur = ProjectionCursor(cur, None)
            for projection in projections:
                if done[projection.name] >= notification.id:
                    continue
                error = unreadable
                if error is None:
                    cur.execute("SAVEPOINT mfa_one_projection")
                    try:
                        projection.process(projection_cur, event)
                    except ENVIRONMENT_ERRORS:
                        raise
                    except Exception as exc:
                        cur.execute("ROLLBACK TO SAVEPOINT mfa_one_projection")
                        error = type(exc).__name__
                    else:
                        cur.execute("RELEASE SAVEPOINT mfa_one_projection")
                if error is not None:
                    log.error(
                        "projection %s skips event %d (%s): %s",
                        projection.name,
                        notification.id,
                        notification.topic,
                        error,
                    )
                    cur.execute(
                        "INSERT INTO mfa_projection_skips "
                        "(projection, position, topic, error, skipped_at) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (projection, position) DO NOTHING",
                        (
                            projection.name,
                            notification.id,
                            notification.topic,
                            error,
                            datetime.now(UTC).isoformat(),
                        ),
                    )
                reached[projection.name] = notification.id
            set_positions(cur, reached)
        self._positions.update(reached)
        self.user_ids.clear()  # this batch went without the cache
        if type(event) is UserMfa.UserErased:
            purge_erased(db, projections)
        self.read_models.advanced()

    def run_once(self) -> int:
        """Process one batch; how many events it held (0: every projection is at the end)."""
        notifications = self.app.recorder.select_notifications(
            start=self.position + 1, limit=self._batch_limit()
        )
        if not notifications:
            return 0
        events = [(n.id, self.app.mapper.to_domain_event(n)) for n in notifications]
        db = self.read_models.db
        projections = self.read_models.projections
        reached: dict[str, int] = {}
        # One transaction for the whole batch: every projection's rows and tracking row commit
        # together (the tracking rows are locked first, in name order, so a rebuild's swap or a
        # second runner waits instead of double-applying). The writes are pipelined: only a
        # user-id lookup that misses the cache waits for the database.
        try:
            with db.transaction() as cur:
                done = lock_positions(cur, db.dialect, [p.name for p in projections])
                projection_cur = ProjectionCursor(cur, self._user_ids_for(done, events))
                with pipelined(cur):
                    for projection in projections:
                        reached[projection.name] = process_events(
                            projection_cur, projection, events, done[projection.name]
                        )
                    set_positions(cur, {n: p for n, p in reached.items() if p != done[n]})
        except BaseException:
            self.user_ids.clear()  # it followed events whose batch did not commit: start afresh
            raise
        self._positions.update(reached)
        if any(type(event) is UserMfa.UserErased for _, event in events):
            purge_erased(db, projections)
        self.read_models.advanced()
        return len(notifications)

    def _user_ids_for(self, done: dict[str, int], events: list[tuple[int, Any]]) -> UserIds | None:
        """The user-id cache for this batch, once it has followed the batch's events.

        Only while every projection is at one position, where this runner left it, is the
        users table (as the batch's projections see it: after the users projection) the log
        up to the batch's end, which the cache has then followed. Otherwise (another runner or
        a rebuild's swap moved a tracking row, a projection was added) the batch goes without,
        and the cache starts afresh: it may have missed an erasure.
        """
        if done != self._positions or len(set(done.values())) > 1:
            self.user_ids.clear()
            return None
        self.user_ids.follow(events)
        return self.user_ids

    def catch_up(self, timeout: float = 30.0) -> None:
        """Process until the end of the log (used by tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while self.run_once():
            if time.monotonic() > deadline:
                raise TimeoutError("projections did not catch up in time")
