"""What a projection is: tables, a handler per event, and one tracking row (exactly-once)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from domain.erasure import UserErased, UserMfaReset
from domain.ids import has_unsafe_characters
from domain.user_mfa import UserMfa
from infra.sql import Cursor

TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_tracking ("
    "projection TEXT PRIMARY KEY, position BIGINT NOT NULL, updated_at TEXT)"
)
USERS_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_users ("
    "aggregate_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL)"
)
# The NATS relay's own aggregate id → user id table (see `projections.nats_relay`).
RELAY_SUBJECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_relay_subjects ("
    "aggregate_id TEXT PRIMARY KEY, user_id TEXT NOT NULL)"
)


# An index's name is its table's followed by this and what it is for, so that a rebuild's
# shadow table gets one of its own: `ProjectionCursor` renames the table name in both.
INDEX_INFIX = "_ix_"


def create_index(cur: Cursor, table: str, purpose: str, columns: str) -> None:
    cur.execute(f"CREATE INDEX IF NOT EXISTS {table}{INDEX_INFIX}{purpose} ON {table} ({columns})")


def create_forget_index(cur: Cursor, table: str) -> None:
    """The index `forget_rows` deletes by: an erasure or a reset otherwise scans the table
    (every user's rows) inside the one ordered runner that every read-your-writes waits on."""
    create_index(cur, table, "aggregate", "aggregate_id")


class Projection(Protocol):
    """A read model. `process` writes rows for one event inside the runner's transaction."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]

    def create_tables(self, cur: Cursor) -> None: ...
    def process(self, cur: Cursor, event: Any) -> None: ...


class BatchProjection(Projection, Protocol):
    """A read model that takes a batch's events at once, to leave out writes that a later
    event of the same batch overwrites. The result must be the same as `process` for each."""

    def process_batch(self, cur: Cursor, events: Sequence[Any]) -> None: ...


def forget_rows(cur: Cursor, table: str, event: Any) -> bool:
    """On a reset or an erasure, delete the aggregate's rows from `table`; True if it was one.

    Rows carry their aggregate id, so this needs no user-id lookup (the users table may
    already have forgotten an erased user within the same batch).
    """
    if type(event) not in (UserMfaReset, UserErased):
        return False
    cur.execute(f"DELETE FROM {table} WHERE aggregate_id = %s", (str(event.originator_id),))
    return True


USER_IDS_SIZE = 20_000


class UserIds:
    """A bounded memo of `mfa_users` (aggregate id → user id), so that `user_of` need not ask
    the database for every event.

    Its owner (one runner, or one rebuild: never shared, as each reads the log on its own)
    shows it every event it reads, in log order, before the batch's projections run: a
    `UserMfa.Created` adds its aggregate (an aggregate id never changes owner), a `UserErased`
    drops it (erasure is final; the user comes back under a new aggregate id). It therefore
    answers as the users table does once the users projection has processed the same events,
    and never for an aggregate whose erasure was read. Whoever may have missed an event (a
    batch rolled back, another process moved the tracking rows) must `clear` it.
    """

    def __init__(self, size: int = USER_IDS_SIZE) -> None:
        self.size = size
        self._known: dict[str, str] = {}

    def follow(self, events: Iterable[tuple[int, Any]]) -> None:
        """Learn from the (position, event) pairs just read, oldest first."""
        for _, event in events:
            kind = type(event)
            if kind is UserMfa.Created:
                self.remember(str(event.originator_id), event.user_id)
            elif kind is UserErased:
                self._known.pop(str(event.originator_id), None)

    def get(self, aggregate_id: str) -> str | None:
        return self._known.get(aggregate_id)

    def remember(self, aggregate_id: str, user_id: str) -> None:
        if aggregate_id not in self._known and len(self._known) >= self.size:
            del self._known[next(iter(self._known))]  # the oldest entry
        self._known[aggregate_id] = user_id

    def clear(self) -> None:
        self._known.clear()

    def __len__(self) -> int:
        return len(self._known)


class ProjectionCursor:
    """The cursor a projection writes through: it carries its runner's `UserIds` and, in a
    rebuild, sends the projection's statements to other (shadow) tables."""

    def __init__(
        self,
        cur: Cursor,
        user_ids: UserIds | None = None,
        renames: Mapping[str, str] | None = None,
    ) -> None:
        self._cur = cur
        self.user_ids = user_ids
        self._renames = dict(renames or {})
        self._pattern = (
            re.compile(r"\b(" + "|".join(map(re.escape, self._renames)) + rf")(?=\b|{INDEX_INFIX})")
            if self._renames
            else None
        )
        self._renamed: dict[str, str] = {}  # statement → its renamed text (a fixed set)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._pattern is not None:
            renamed = self._renamed.get(sql)
            if renamed is None:
                renamed = self._pattern.sub(lambda m: self._renames[m[1]], sql)
                self._renamed[sql] = renamed
            sql = renamed
        return self._cur.execute(sql, params)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


def user_of(cur: Cursor, aggregate_id: object) -> str | None:
    """The user id behind an aggregate id, from the users table the runner keeps (or from the
    `UserIds` that the cursor carries, which follows that table)."""
    key = str(aggregate_id)
    user_ids = cur.user_ids if isinstance(cur, ProjectionCursor) else None
    if user_ids is not None and (known := user_ids.get(key)) is not None:
        return known
    cur.execute("SELECT user_id FROM mfa_users WHERE aggregate_id = %s", (key,))
    row = cur.fetchone()
    if row is None:
        return None  # not cached: the aggregate may yet be created
    user_id = str(row[0])
    if user_ids is not None:
        user_ids.remember(key, user_id)
    return user_id


def iso(value: Any) -> str | None:
    """Timestamps are stored as RFC 3339 text (sortable, the same in SQLite and PostgreSQL)."""
    return None if value is None else str(value.isoformat())


def utc_time(text: str | None) -> datetime | None:
    """A stored timestamp (`iso` text) read back as an aware UTC datetime.

    Rows keep the `isoformat()` text ("...+00:00"), which SQL compares and sorts; what a read
    function hands on is the datetime, which the API writes as it writes every other time
    (msgspec: "...Z"). A time stored without a zone is taken as UTC.
    """
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def with_utc_times(fields: dict[str, Any], *names: str) -> dict[str, Any]:
    """`fields` (a row as a dict) with its timestamp columns `names` read by `utc_time`."""
    for name in names:
        fields[name] = utc_time(fields[name])
    return fields


def encode_cursor(values: list[Any]) -> str:
    """An opaque pagination cursor."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


class InvalidCursorError(ValueError):
    """A pagination cursor that this service did not produce."""


def oldest_first_page(
    cur: Cursor,
    *,
    table: str,
    columns: str,
    id_column: str,
    user_id: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[Any, ...]], str | None]:
    """One page of a user's rows ordered by (created_at, id), with a keyset cursor."""
    params: list[Any] = [user_id]
    where = "user_id = %s"
    if cursor:
        created_at, last_id = decode_cursor(cursor, 2, (str, str))
        where += f" AND (created_at > %s OR (created_at = %s AND {id_column} > %s))"
        params += [created_at, created_at, last_id]
    cur.execute(
        f"SELECT {columns}, created_at, {id_column} FROM {table} WHERE {where} "
        f"ORDER BY created_at, {id_column} LIMIT %s",
        (*params, limit + 1),
    )
    rows = cur.fetchall()
    page = [tuple(r[:-2]) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return page, encode_cursor([last[-2], last[-1]]) if last is not None else None


def decode_cursor(
    cursor: str, arity: int, kinds: tuple[type[str] | type[int], ...] | None = None
) -> list[Any]:
    """The values inside a cursor (of `kinds`, when given); InvalidCursorError when it is
    malformed."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("malformed cursor") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidCursorError("malformed cursor")
    # (JSON true/false decode to bools, which are ints to isinstance but not to PostgreSQL)
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise InvalidCursorError("malformed cursor")
    # The service's cursors hold times and ids; a control character or a lone surrogate
    # means someone else made this one.
    if any(isinstance(v, str) and has_unsafe_characters(v) for v in values):
        raise InvalidCursorError("malformed cursor")
    if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values):
        raise InvalidCursorError("malformed cursor")  # beyond any BIGINT
    if kinds is not None and not all(type(v) is k for v, k in zip(values, kinds, strict=True)):
        raise InvalidCursorError("malformed cursor")
    return values
