"""Trusted-device list: one row per remembered device, never the token or its hash."""

from __future__ import annotations

from typing import Any, ClassVar

from domain.user_mfa import UserMfa
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
    "CREATE TABLE IF NOT EXISTS mfa_trusted_devices ("
    "user_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, device_id TEXT NOT NULL, "
    "name TEXT NOT NULL, "
    "created_at TEXT NOT NULL, expires_at TEXT NOT NULL, PRIMARY KEY (user_id, device_id))"
)
COLUMNS = "device_id, name, created_at, expires_at"


class TrustedDeviceProjection:
    """Follows trusted-device events into `mfa_trusted_devices`."""

    name: ClassVar[str] = "trusted_devices"
    tables: ClassVar[tuple[str, ...]] = ("mfa_trusted_devices",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(DDL)
        create_forget_index(cur, "mfa_trusted_devices")

    def process(self, cur: Cursor, event: Any) -> None:
        if forget_rows(cur, "mfa_trusted_devices", event):
            return
        kind = type(event)
        if kind not in (UserMfa.TrustedDeviceRemembered, UserMfa.TrustedDevicesRevoked):
            return
        user_id = user_of(cur, event.originator_id)
        if user_id is None:
            return
        if kind is UserMfa.TrustedDeviceRemembered:
            cur.execute(
                f"INSERT INTO mfa_trusted_devices (user_id, aggregate_id, {COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, device_id) DO NOTHING",
                (
                    user_id,
                    str(event.originator_id),
                    event.device_id,
                    event.name,
                    iso(event.timestamp),
                    iso(event.expires_at),
                ),
            )
            return
        for device_id in event.device_ids:
            cur.execute(
                "DELETE FROM mfa_trusted_devices WHERE user_id = %s AND device_id = %s",
                (user_id, device_id),
            )


def _row(row: Any) -> dict[str, Any]:
    fields = dict(zip(COLUMNS.split(", "), row, strict=True))
    return with_utc_times(fields, "created_at", "expires_at")


def list_trusted_devices(
    cur: Cursor, user_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a user's trusted devices, oldest first (expired ones until cleaned up)."""
    rows, next_cursor = oldest_first_page(
        cur,
        table="mfa_trusted_devices",
        columns=COLUMNS,
        id_column="device_id",
        user_id=user_id,
        limit=limit,
        cursor=cursor,
    )
    return [_row(r) for r in rows], next_cursor


def get_trusted_device(cur: Cursor, user_id: str, device_id: str) -> dict[str, Any] | None:
    cur.execute(
        f"SELECT {COLUMNS} FROM mfa_trusted_devices WHERE user_id = %s AND device_id = %s",
        (user_id, device_id),
    )
    row = cur.fetchone()
    return None if row is None else _row(row)
