"""Where each read model is: tracking rows, waiting for a position, status.

Positions are notification ids. The runner, the relay and a rebuild each lock a tracking row
before they move it, and re-read the position there, so no event is applied twice whoever
else moved the row meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from commands.app import MfaApplication
from infra.sql import Cursor, Database, unhurried
from projections.base import TRACKING_DDL, Projection

if TYPE_CHECKING:
    from projections.runner import ProjectionRunner

SKIPS_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_projection_skips ("
    "projection TEXT NOT NULL, position BIGINT NOT NULL, topic TEXT NOT NULL, "
    "error TEXT NOT NULL, skipped_at TEXT NOT NULL, PRIMARY KEY (projection, position))"
)


def lock_position(cur: Cursor, dialect: str, name: str) -> int:
    """The projection's position, its tracking row locked until the transaction ends."""
    cur.execute(
        "INSERT INTO mfa_tracking (projection, position, updated_at) VALUES (%s, 0, NULL) "
        "ON CONFLICT (projection) DO NOTHING",
        (name,),
    )
    select = "SELECT position FROM mfa_tracking WHERE projection = %s"
    cur.execute(select + (" FOR UPDATE" if dialect == "postgres" else ""), (name,))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def lock_positions(cur: Cursor, dialect: str, names: list[str]) -> dict[str, int]:
    """Several projections' positions, their tracking rows locked (in a fixed order)."""
    marks = ", ".join(["%s"] * len(names))
    select = (
        f"SELECT projection, position FROM mfa_tracking WHERE projection IN ({marks}) "
        "ORDER BY projection"
    )
    cur.execute(select + (" FOR UPDATE" if dialect == "postgres" else ""), names)
    found = {str(name): int(position) for name, position in cur.fetchall()}
    missing = [name for name in names if name not in found]
    for name in missing:
        found[name] = lock_position(cur, dialect, name)
    return found


def set_positions(cur: Cursor, positions: dict[str, int]) -> None:
    """Move several tracking rows: one statement per distinct position (usually one)."""
    by_position: dict[int, list[str]] = {}
    for name, position in positions.items():
        by_position.setdefault(position, []).append(name)
    now = datetime.now(UTC).isoformat()
    for position, names in by_position.items():
        marks = ", ".join(["%s"] * len(names))
        cur.execute(
            f"UPDATE mfa_tracking SET position = %s, updated_at = %s WHERE projection IN ({marks})",
            (position, now, *names),
        )


def set_position(cur: Cursor, name: str, position: int) -> None:
    set_positions(cur, {name: position})


def read_model_tables(projections: Sequence[Projection]) -> list[str]:
    """The tables `ReadModels` sets up for these projections."""
    tables = [table for projection in projections for table in projection.tables]
    return ["mfa_tracking", "mfa_projection_skips", *tables]


class ReadModels:
    """The read database and its projections: set-up, positions, waiting for a position."""

    def __init__(
        self, db: Database, projections: Sequence[Projection], *, create: bool = True
    ) -> None:
        self.db = db
        self.projections = list(projections)
        self._progress = threading.Condition()
        self._runner: ProjectionRunner | None = None
        if not create:  # (the read-only commands: the tables are there, or they are refused)
            return
        # An index a new version adds is built here, on a table that may hold millions of rows:
        # past the statement limit (8 s) or the client's deadline (10 s), every start would
        # fail the same way.
        with db.transaction() as cur, unhurried(cur, db.dialect):
            cur.execute(TRACKING_DDL)
            cur.execute(SKIPS_DDL)
            for projection in self.projections:
                projection.create_tables(cur)
                cur.execute(
                    "INSERT INTO mfa_tracking (projection, position, updated_at) "
                    "VALUES (%s, 0, NULL) ON CONFLICT (projection) DO NOTHING",
                    (projection.name,),
                )

    def projection(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise KeyError(name)

    def positions(self) -> dict[str, int]:
        """Each projection's tracking position (0: nothing processed)."""
        with self.db.read() as cur:
            cur.execute("SELECT projection, position FROM mfa_tracking")
            stored = {str(name): int(pos) for name, pos in cur.fetchall()}
        return {p.name: stored.get(p.name, 0) for p in self.projections}

    def advanced(self) -> None:
        """Wake up readers waiting in `wait_for`."""
        with self._progress:
            self._progress.notify_all()

    def attach(self, runner: ProjectionRunner) -> None:
        """An in-process runner: while it holds the lease, waits use its progress signal."""
        self._runner = runner

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until every projection has processed `position` (read-your-writes)."""
        if position <= 0:
            return True
        deadline = time.monotonic() + timeout
        while True:
            runner = self._runner
            if runner is not None and runner.active:
                reached = runner.position
            else:
                reached = min(self.positions().values(), default=0)
            if reached >= position:
                return True
            if runner is not None and runner.active and runner.failing:
                return False  # it cannot move on now (the database is down): do not wait
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._progress:
                self._progress.wait(min(remaining, 0.02))


@dataclass(frozen=True)
class ProjectionStatus:
    """Where a projection is, and how far behind the log."""

    name: str
    position: int
    head: int
    lag: int
    updated_at: str | None
    skipped: int = 0  # events it refused and skipped (mfa_projection_skips)


def projection_status(app: MfaApplication, read_models: ReadModels) -> list[ProjectionStatus]:
    """Every projection's position and lag (in events) behind the head of the log."""
    head = app.max_position()
    with read_models.db.read() as cur:
        cur.execute("SELECT projection, position, updated_at FROM mfa_tracking")
        rows = {str(r[0]): (int(r[1]), r[2]) for r in cur.fetchall()}
        cur.execute("SELECT projection, COUNT(*) FROM mfa_projection_skips GROUP BY projection")
        skips = {str(r[0]): int(r[1]) for r in cur.fetchall()}
    result = []
    for projection in read_models.projections:
        position, updated = rows.get(projection.name, (0, None))
        lag = max(0, head - position)
        skipped = skips.get(projection.name, 0)
        result.append(ProjectionStatus(projection.name, position, head, lag, updated, skipped))
    return result
