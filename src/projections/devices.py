"""TOTP device list: one row per device, no secret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from domain.totp import TotpStatus
from domain.user_mfa import TOTP, UserMfa
from infra.sql import Cursor
from projections.base import (
    create_forget_index,
    forget_rows,
    iso,
    oldest_first_page,
    user_of,
    with_utc_times,
)

DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_totp_devices ("
    "user_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, device_id TEXT NOT NULL, "
    "name TEXT NOT NULL, status TEXT NOT NULL, "
    "created_at TEXT NOT NULL, verified_at TEXT, last_used_at TEXT, "
    "PRIMARY KEY (user_id, device_id))"
)
COLUMNS = "device_id, name, status, created_at, verified_at, last_used_at"


class TotpDeviceProjection:
    """Follows TOTP events into `mfa_totp_devices`."""

    name: ClassVar[str] = "totp_devices"
    tables: ClassVar[tuple[str, ...]] = ("mfa_totp_devices",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(DDL)
        create_forget_index(cur, "mfa_totp_devices")

    def process(self, cur: Cursor, event: Any) -> None:
        if forget_rows(cur, "mfa_totp_devices", event):
            return
        handler = _HANDLERS.get(type(event))
        if handler is None:
            return
        user_id = user_of(cur, event.originator_id)
        if user_id is not None:
            handler(cur, user_id, event)

    def process_batch(self, cur: Cursor, events: Sequence[Any]) -> None:
        """`process` for each event but a code acceptance followed, in the same batch, by
        another on the same device: it only sets the row's `last_used_at`, which the later
        one overwrites (and if the row is gone or replaced by then, so is what it wrote)."""
        accepted = UserMfa.TotpCodeAccepted
        last = {
            (event.originator_id, event.device_id): i
            for i, event in enumerate(events)
            if type(event) is accepted
        }
        for i, event in enumerate(events):
            if type(event) is accepted and last[(event.originator_id, event.device_id)] != i:
                continue
            self.process(cur, event)


def _set_status(cur: Cursor, user_id: str, device_ids: list[str], status: str) -> None:
    for device_id in device_ids:
        cur.execute(
            "UPDATE mfa_totp_devices SET status = %s WHERE user_id = %s AND device_id = %s",
            (status, user_id, device_id),
        )


def _registered(cur: Cursor, user_id: str, e: Any) -> None:
    cur.execute(
        "INSERT INTO mfa_totp_devices "
        "(user_id, aggregate_id, device_id, name, status, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, device_id) DO NOTHING",
        (
            user_id,
            str(e.originator_id),
            e.device_id,
            e.name,
            TotpStatus.PENDING.value,
            iso(e.timestamp),
        ),
    )


def _verified(cur: Cursor, user_id: str, e: Any) -> None:
    cur.execute(
        "UPDATE mfa_totp_devices SET status = %s, verified_at = %s, last_used_at = %s "
        "WHERE user_id = %s AND device_id = %s",
        (TotpStatus.ACTIVE.value, iso(e.timestamp), iso(e.timestamp), user_id, e.device_id),
    )


def _used(cur: Cursor, user_id: str, e: Any) -> None:
    cur.execute(
        "UPDATE mfa_totp_devices SET last_used_at = %s WHERE user_id = %s AND device_id = %s",
        (iso(e.timestamp), user_id, e.device_id),
    )


def _revoked(cur: Cursor, user_id: str, e: Any) -> None:
    cur.execute(
        "DELETE FROM mfa_totp_devices WHERE user_id = %s AND device_id = %s",
        (user_id, e.device_id),
    )


def _method_removed(cur: Cursor, user_id: str, e: Any) -> None:
    if e.method == TOTP:
        cur.execute("DELETE FROM mfa_totp_devices WHERE user_id = %s", (user_id,))


_HANDLERS = {
    UserMfa.TotpDeviceRegistered: _registered,
    UserMfa.TotpDeviceVerified: _verified,
    UserMfa.TotpCodeAccepted: _used,
    UserMfa.TotpDeviceDisabled: lambda c, u, e: _set_status(
        c, u, [e.device_id], TotpStatus.DISABLED
    ),
    UserMfa.TotpDeviceEnabled: lambda c, u, e: _set_status(c, u, [e.device_id], TotpStatus.ACTIVE),
    UserMfa.TotpDisabled: lambda c, u, e: _set_status(c, u, e.device_ids, TotpStatus.DISABLED),
    UserMfa.TotpEnabled: lambda c, u, e: _set_status(c, u, e.device_ids, TotpStatus.ACTIVE),
    UserMfa.TotpDeviceRevoked: _revoked,
    UserMfa.TotpSetupExpired: _revoked,
    UserMfa.MethodRemoved: _method_removed,
}


def _row(row: Any) -> dict[str, Any]:
    fields = dict(zip(COLUMNS.split(", "), row, strict=True))
    return with_utc_times(fields, "created_at", "verified_at", "last_used_at")


def list_totp_devices(
    cur: Cursor, user_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a user's devices, oldest first."""
    rows, next_cursor = oldest_first_page(
        cur,
        table="mfa_totp_devices",
        columns=COLUMNS,
        id_column="device_id",
        user_id=user_id,
        limit=limit,
        cursor=cursor,
    )
    return [_row(r) for r in rows], next_cursor


def get_totp_device(cur: Cursor, user_id: str, device_id: str) -> dict[str, Any] | None:
    """One device of a user, or None."""
    cur.execute(
        f"SELECT {COLUMNS} FROM mfa_totp_devices WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    row = cur.fetchone()
    return None if row is None else _row(row)
