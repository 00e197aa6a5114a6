"""Rebuild a projection from position 0 beside the live one, then swap it in.

The API keeps serving the live tables while the shadow tables fill. The swap is one
transaction that holds the live tracking row (so the runner waits), brings both copies to the
same position, optionally compares them row for row, and renames the shadow into place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from commands.app import MfaApplication
from infra.lease import lease_on
from infra.purge import purge_deleted_rows
from infra.sql import Cursor, Database, pipelined
from projections.base import Projection, ProjectionCursor, UserIds
from projections.runner import BATCH_SIZE, apply_batch
from projections.tracking import ReadModels, lock_position, set_position

SHADOW = "__rebuild"
FILL_PAUSE_SECONDS = 0.01


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild did: the position reached, the rows, and whether they matched."""

    name: str
    position: int
    rows: int
    matched_live: bool | None
    differences: int


@contextmanager
def _long_transaction(db: Database) -> Iterator[Cursor]:
    """A rebuild's transaction. It reads and decodes the log, and compares whole tables,
    between its statements: longer than the idle-in-transaction limit allows (meant for a
    stalled process), on a large read model."""
    with db.transaction() as cur:
        if db.dialect == "postgres":
            cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        yield cur


def _events(app: MfaApplication, after: int, until: int) -> list[tuple[int, Any]]:
    notifications = app.recorder.select_notifications(start=after + 1, limit=BATCH_SIZE, stop=until)
    return [(n.id, app.mapper.to_domain_event(n)) for n in notifications]


def _catch_up(
    app: MfaApplication,
    cur: Cursor,
    projection: Projection,
    tracking: str,
    done: int,
    until: int,
    *,
    renames: dict[str, str] | None = None,
    user_ids: UserIds | None = None,
) -> int:
    """Apply the events after `done` up to `until`, a batch at a time, writes pipelined.

    `user_ids`, when given, follows every event read: pass it only to the one catch-up that
    reads the log from 0 in order (the shadow's), never to one that reads a range again.
    """
    projection_cur = ProjectionCursor(cur, user_ids, renames)
    while done < until:
        events = _events(app, done, until)
        if not events:
            break
        if user_ids is not None:
            user_ids.follow(events)
        with pipelined(cur):
            done = apply_batch(projection_cur, projection, tracking, events, done)
    return done


def _rows(cur: Cursor, table: str) -> list[tuple[Any, ...]]:
    cur.execute(f"SELECT * FROM {table}")
    return sorted((tuple(str(v) for v in row) for row in cur.fetchall()), key=repr)


def _target(cur: Cursor, projection: Projection, head: int) -> int:
    """Projections other than `users` join on it: never go past the users table's position."""
    if projection.name == "users":
        return head
    cur.execute("SELECT position FROM mfa_tracking WHERE projection = 'users'")
    row = cur.fetchone()
    return min(head, int(row[0]) if row else 0)


class RebuildRunningError(RuntimeError):
    """Another rebuild of the same read model holds its lease."""


def _ensure_held(held: Callable[[], bool], name: str) -> None:
    """Stop before the swap if the lease was lost (its connection broke): another rebuild may
    be filling the same shadow tables now."""
    if not held():
        raise RebuildRunningError(f"the rebuild of {name} lost its lock; run it again")


def rebuild_projection(
    app: MfaApplication, read_models: ReadModels, name: str, *, compare: bool = False
) -> RebuildReport:
    """Rebuild `name` from position 0 into shadow tables and swap them in.

    One rebuild of a read model at a time (a lease per read model): a second one would drop
    and refill the first one's shadow tables under it, and the swap would put a mix in place.
    """
    projection = read_models.projection(name)
    lease = lease_on(read_models.db, f"rebuild-{name}")
    if not lease.try_acquire():
        raise RebuildRunningError(
            f"a rebuild of {name} is already running (or its lock could not be taken)"
        )
    try:
        return _rebuild(app, read_models, projection, compare=compare, held=lease.still_held)
    finally:
        lease.release()


def _rebuild(
    app: MfaApplication,
    read_models: ReadModels,
    projection: Projection,
    *,
    compare: bool,
    held: Callable[[], bool],
) -> RebuildReport:
    name = projection.name
    db = read_models.db
    renames = {table: table + SHADOW for table in projection.tables}
    shadow_tracking = name + SHADOW
    # The shadow's own user-id cache (the live runner's follows other positions). It follows
    # the log from 0 as the shadow does, so it answers as the users table did when the live
    # runner was at the same events: an aggregate erased further on is still its user's until
    # the erasure is read, and `forget_rows` then deletes what was written for it meanwhile.
    user_ids = UserIds()
    with _long_transaction(db) as cur:
        for shadow in renames.values():
            cur.execute(f"DROP TABLE IF EXISTS {shadow}")
        projection.create_tables(ProjectionCursor(cur, renames=renames))
        cur.execute("DELETE FROM mfa_tracking WHERE projection = %s", (shadow_tracking,))
        lock_position(cur, db.dialect, shadow_tracking)

    done = 0
    while True:
        with _long_transaction(db) as cur:
            until = _target(cur, projection, app.max_position())
            step = _catch_up(
                app,
                cur,
                projection,
                shadow_tracking,
                done,
                min(until, done + BATCH_SIZE * 20),
                renames=renames,
                user_ids=user_ids,
            )
        if step == done or step >= until:
            done = step
            break
        done = step
        time.sleep(FILL_PAUSE_SECONDS)  # SQLite: the server's own writes get their turn
        _ensure_held(held, name)

    _ensure_held(held, name)
    with _long_transaction(db) as cur:
        live = lock_position(cur, db.dialect, name)
        until = max(live, _target(cur, projection, app.max_position()))
        done = _catch_up(
            app, cur, projection, shadow_tracking, done, until, renames=renames, user_ids=user_ids
        )
        # The live tables lag at most a few batches: they go without a cache (this one has
        # followed the log past them).
        live = _catch_up(app, cur, projection, name, live, done)
        matched: bool | None = None
        differences = 0
        rows = 0
        for table, shadow in renames.items():
            shadow_rows = _rows(cur, shadow)
            rows += len(shadow_rows)
            if compare:
                live_rows = _rows(cur, table)
                differences += len(set(live_rows) ^ set(shadow_rows))
        if compare:
            matched = differences == 0
        for table, shadow in renames.items():
            cur.execute(f"DROP TABLE {table}")
            cur.execute(f"ALTER TABLE {shadow} RENAME TO {table}")
            _rename_indexes(cur, db.dialect, table, shadow)
        set_position(cur, name, done)
        cur.execute("DELETE FROM mfa_tracking WHERE projection = %s", (shadow_tracking,))
    # The shadow, now live, had the rows of users erased while it filled deleted from it: the
    # runner's purge named the live table of then. (Always: a rebuild is rare.)
    purge_deleted_rows(db, *projection.tables)
    return RebuildReport(name, done, rows, matched, differences)


def _rename_indexes(cur: Cursor, dialect: str, table: str, shadow: str) -> None:
    """Give the swapped-in table's indexes the live names (the next rebuild's shadow would
    otherwise find its index names taken, `IF NOT EXISTS`, and the table end up without)."""
    if dialect == "postgres":
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
        for (index,) in cur.fetchall():
            if shadow in index:
                cur.execute(f'ALTER INDEX "{index}" RENAME TO "{index.replace(shadow, table)}"')
        return
    # SQLite cannot rename an index: make it again under its name (its SQL already names
    # the renamed table). Its own primary-key indexes have no SQL and no name of ours.
    cur.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
        "AND sql IS NOT NULL",
        (table,),
    )
    for index, sql in cur.fetchall():
        if shadow in index:
            cur.execute(f'DROP INDEX "{index}"')
            cur.execute(sql.replace(shadow, table))
