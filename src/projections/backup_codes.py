"""Backup-code overview: per user, how many codes of the current set remain. No hashes."""

from __future__ import annotations

from typing import Any, ClassVar

from domain.user_mfa import BACKUP_CODE, UserMfa
from infra.sql import Cursor
from projections.base import (
    create_forget_index,
    decode_cursor,
    encode_cursor,
    forget_rows,
    iso,
    user_of,
    with_utc_times,
)

DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_backup_codes ("
    "user_id TEXT PRIMARY KEY, aggregate_id TEXT NOT NULL, set_id TEXT NOT NULL, "
    "total INTEGER NOT NULL, "
    "remaining INTEGER NOT NULL, generated_at TEXT NOT NULL, last_used_at TEXT)"
)
_TYPES = (UserMfa.BackupCodesGenerated, UserMfa.BackupCodeUsed, UserMfa.MethodRemoved)
COLUMNS = "user_id, total, remaining, generated_at, last_used_at"


class BackupCodeProjection:
    """Follows backup-code events into `mfa_backup_codes`."""

    name: ClassVar[str] = "backup_codes"
    tables: ClassVar[tuple[str, ...]] = ("mfa_backup_codes",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(DDL)
        create_forget_index(cur, "mfa_backup_codes")

    def process(self, cur: Cursor, event: Any) -> None:
        if forget_rows(cur, "mfa_backup_codes", event):
            return
        kind = type(event)
        if kind not in _TYPES:
            return
        user_id = user_of(cur, event.originator_id)
        if user_id is None:
            return
        if kind is UserMfa.BackupCodesGenerated:
            cur.execute(
                "INSERT INTO mfa_backup_codes "
                "(user_id, aggregate_id, set_id, total, remaining, generated_at, last_used_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, NULL) ON CONFLICT (user_id) DO UPDATE SET "
                "aggregate_id = excluded.aggregate_id, set_id = excluded.set_id, "
                "total = excluded.total, remaining = excluded.remaining, "
                "generated_at = excluded.generated_at, last_used_at = NULL",
                (
                    user_id,
                    str(event.originator_id),
                    event.set_id,
                    len(event.codes),
                    len(event.codes),
                    iso(event.timestamp),
                ),
            )
        elif kind is UserMfa.BackupCodeUsed:
            cur.execute(
                "UPDATE mfa_backup_codes SET remaining = remaining - 1, last_used_at = %s "
                "WHERE user_id = %s AND set_id = %s",
                (iso(event.timestamp), user_id, event.set_id),
            )
        elif event.method == BACKUP_CODE:
            cur.execute("DELETE FROM mfa_backup_codes WHERE user_id = %s", (user_id,))


def _row(row: Any) -> dict[str, Any]:
    fields = dict(zip(COLUMNS.split(", "), row, strict=True))
    return with_utc_times(fields, "generated_at", "last_used_at")


def get_backup_codes(cur: Cursor, user_id: str) -> dict[str, Any] | None:
    """A user's overview row, or None when the user has no codes."""
    cur.execute(
        f"SELECT {COLUMNS} FROM mfa_backup_codes WHERE user_id = %s",
        (user_id,),
    )
    row = cur.fetchone()
    return None if row is None else _row(row)


def list_backup_codes(
    cur: Cursor, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Every user's overview, by user id (admin)."""
    params: list[Any] = []
    where = ""
    if cursor:
        (after,) = decode_cursor(cursor, 1, (str,))
        where = "WHERE user_id > %s"
        params.append(after)
    cur.execute(
        f"SELECT {COLUMNS} FROM mfa_backup_codes {where} ORDER BY user_id LIMIT %s",
        (*params, limit + 1),
    )
    rows = [_row(r) for r in cur.fetchall()]
    page = rows[:limit]
    return page, encode_cursor([page[-1]["user_id"]]) if len(rows) > limit else None
