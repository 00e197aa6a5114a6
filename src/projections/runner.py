"""Runs every projection: follows the log, writes rows and tracking in one transaction each.

Positions are notification ids. The eventsourcing recorders assign them in commit order
(PostgreSQL: a table lock on insert; SQLite: one writer), so reading `id > position` never
skips an event that committed late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from commands.app import MfaApplication
from infra.sql import Database, DatabaseUnavailableError
from projections.backup_codes import BackupCodeProjection
from projections.base import TRACKING_DDL, Projection
from projections.devices import TotpDeviceProjection
from projections.users import UserProjection

log = logging.getLogger("mfa.projections")
BATCH_SIZE = 500


def default_projections() -> list[Projection]:
    """Every read model, the users table first (the others join on it)."""
    return [UserProjection(), TotpDeviceProjection(), BackupCodeProjection()]


class ReadModels:
    """The read database and its projections: set-up, positions, waiting for a position."""

    def __init__(self, db: Database, projections: Sequence[Projection]) -> None:
        self.db = db
        self.projections = list(projections)
        self._progress = threading.Condition()
        self._runner: ProjectionRunner | None = None
        with db.transaction() as cur:
            cur.execute(TRACKING_DDL)
            for projection in self.projections:
                projection.create_tables(cur)

    def positions(self) -> dict[str, int]:
        """Each projection's tracking position (0: nothing processed)."""
        with self.db.transaction() as cur:
            cur.execute("SELECT projection, position FROM mfa_tracking")
            stored = {str(name): int(pos) for name, pos in cur.fetchall()}
        return {p.name: stored.get(p.name, 0) for p in self.projections}

    def advanced(self) -> None:
        """Wake up readers waiting in `wait_for`."""
        with self._progress:
            self._progress.notify_all()

    def attach(self, runner: ProjectionRunner) -> None:
        """An in-process runner: waits use its progress signal instead of polling."""
        self._runner = runner

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until every projection has processed `position` (read-your-writes)."""
        if position <= 0:
            return True
        deadline = time.monotonic() + timeout
        while True:
            if self._runner is not None:
                reached = self._runner.position
            else:
                reached = min(self.positions().values(), default=0)
            if reached >= position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._progress:
                self._progress.wait(min(remaining, 0.02))


class ProjectionRunner:
    """A background thread that brings every projection up to the end of the log."""

    def __init__(
        self, app: MfaApplication, read_models: ReadModels, poll_interval: float = 0.05
    ) -> None:
        self.app = app
        self.read_models = read_models
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions = read_models.positions()

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

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                progressed = self.run_once()
                failures = 0
            except DatabaseUnavailableError as exc:
                failures += 1
                log.warning("read database unavailable: %s", exc)
                progressed = False
            except Exception:
                failures += 1
                log.exception("projection failed; retrying from its last position")
                progressed = False
            if not progressed:
                delay = self.poll_interval if failures == 0 else min(5.0, 0.1 * 2**failures)
                self._wake.wait(delay)
                self._wake.clear()

    def run_once(self) -> bool:
        """Process one batch; False when every projection is at the end of the log."""
        start = self.position + 1
        notifications = self.app.recorder.select_notifications(start=start, limit=BATCH_SIZE)
        if not notifications:
            return False
        events = [(n.id, self.app.mapper.to_domain_event(n)) for n in notifications]
        for projection in self.read_models.projections:
            done = self._positions.get(projection.name, 0)
            todo = [(pos, event) for pos, event in events if pos > done]
            if todo:
                self._apply(projection, todo)
        self.read_models.advanced()
        return True

    def _apply(self, projection: Projection, todo: list[tuple[int, Any]]) -> None:
        last = todo[-1][0]
        with self.read_models.db.transaction() as cur:
            for _, event in todo:
                projection.process(cur, event)
            cur.execute(
                "INSERT INTO mfa_tracking (projection, position, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (projection) DO UPDATE SET position = excluded.position, "
                "updated_at = excluded.updated_at",
                (projection.name, last, datetime.now(UTC).isoformat()),
            )
        self._positions[projection.name] = last

    def catch_up(self, timeout: float = 30.0) -> None:
        """Process until the end of the log (used by tests and `mfa projections`)."""
        deadline = time.monotonic() + timeout
        while self.run_once():
            if time.monotonic() > deadline:
                raise TimeoutError("projections did not catch up in time")
