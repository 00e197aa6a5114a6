"""What a projection is: tables, a handler per event, and one tracking row (exactly-once)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, ClassVar, Protocol

from domain.erasure import UserErased, UserMfaReset
from infra.sql import Cursor

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_tracking ("
    "projection TEXT PRIMARY KEY, position BIGINT NOT NULL, updated_at TEXT)"
)
USERS_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_users ("
    "aggregate_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL)"
)


class Projection(Protocol):
    """A read model. `process` writes rows for one event inside the runner's transaction."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]

    def create_tables(self, cur: Cursor) -> None: ...
    def process(self, cur: Cursor, event: Any) -> None: ...


def forget_rows(cur: Cursor, table: str, event: Any) -> bool:
    """On a reset or an erasure, delete the aggregate's rows from `table`; True if it was one.

    Rows carry their aggregate id, so this needs no user-id lookup (the users table may
    already have forgotten an erased user within the same batch).
    """
    if type(event) not in (UserMfaReset, UserErased):
        return False
    cur.execute(f"DELETE FROM {table} WHERE aggregate_id = %s", (str(event.originator_id),))
    return True


def user_of(cur: Cursor, aggregate_id: object) -> str | None:
    """The user id behind an aggregate id, from the users table the runner keeps."""
    cur.execute("SELECT user_id FROM mfa_users WHERE aggregate_id = %s", (str(aggregate_id),))
    row = cur.fetchone()
    return None if row is None else str(row[0])


def iso(value: Any) -> str | None:
    """Timestamps are stored as RFC 3339 text (sortable, the same in SQLite and PostgreSQL)."""
    return None if value is None else str(value.isoformat())


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
    if not all(isinstance(v, str | int) for v in values):
        raise InvalidCursorError("malformed cursor")
    # The service's cursors hold times and ids; a control character (NUL above all, which
    # PostgreSQL cannot compare) means someone else made this one.
    if any(isinstance(v, str) and _CONTROL_CHARACTERS.search(v) for v in values):
        raise InvalidCursorError("malformed cursor")
    if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values):
        raise InvalidCursorError("malformed cursor")  # beyond any BIGINT
    if kinds is not None and not all(type(v) is k for v, k in zip(values, kinds, strict=True)):
        raise InvalidCursorError("malformed cursor")
    return values
