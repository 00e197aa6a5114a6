"""WebAuthn credential list: one row per credential, no public key."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from domain.user_mfa import WEBAUTHN, UserMfa
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
    "CREATE TABLE IF NOT EXISTS mfa_webauthn_credentials ("
    "user_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, credential_id TEXT NOT NULL, "
    "name TEXT NOT NULL, "
    "transports TEXT NOT NULL, aaguid TEXT NOT NULL, backup_eligible INTEGER NOT NULL, "
    "backed_up INTEGER NOT NULL, user_verified INTEGER NOT NULL, sign_count BIGINT NOT NULL, "
    "clone_suspected INTEGER NOT NULL, created_at TEXT NOT NULL, last_used_at TEXT, "
    "PRIMARY KEY (user_id, credential_id))"
)
COLUMNS = (
    "credential_id, name, transports, aaguid, backup_eligible, backed_up, user_verified, "
    "sign_count, clone_suspected, created_at, last_used_at"
)


class WebAuthnCredentialProjection:
    """Follows WebAuthn events into `mfa_webauthn_credentials`."""

    name: ClassVar[str] = "webauthn_credentials"
    tables: ClassVar[tuple[str, ...]] = ("mfa_webauthn_credentials",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(DDL)
        create_forget_index(cur, "mfa_webauthn_credentials")

    def process(self, cur: Cursor, event: Any) -> None:
        if forget_rows(cur, "mfa_webauthn_credentials", event):
            return
        kind = type(event)
        if kind not in _TYPES:
            return
        user_id = user_of(cur, event.originator_id)
        if user_id is None:
            return
        where = " WHERE user_id = %s AND credential_id = %s"
        if kind is UserMfa.WebAuthnCredentialRegistered:
            cur.execute(
                f"INSERT INTO mfa_webauthn_credentials ({COLUMNS}, user_id, aggregate_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, NULL, %s, %s) "
                "ON CONFLICT (user_id, credential_id) DO NOTHING",
                (
                    event.credential_id,
                    event.name,
                    json.dumps(list(event.transports)),
                    event.aaguid,
                    int(event.backup_eligible),
                    int(event.backed_up),
                    int(event.user_verified),
                    event.sign_count,
                    iso(event.timestamp),
                    user_id,
                    str(event.originator_id),
                ),
            )
        elif kind is UserMfa.WebAuthnCredentialRenamed:
            cur.execute(
                "UPDATE mfa_webauthn_credentials SET name = %s" + where,
                (event.name, user_id, event.credential_id),
            )
        elif kind is UserMfa.WebAuthnAssertionAccepted:
            cur.execute(
                "UPDATE mfa_webauthn_credentials SET sign_count = %s, backed_up = %s, "
                "last_used_at = %s" + where,
                (
                    event.sign_count,
                    int(event.backed_up),
                    iso(event.timestamp),
                    user_id,
                    event.credential_id,
                ),
            )
        elif kind is UserMfa.WebAuthnCloneSuspected:
            cur.execute(
                "UPDATE mfa_webauthn_credentials SET clone_suspected = 1" + where,
                (user_id, event.credential_id),
            )
        elif kind is UserMfa.WebAuthnCredentialDeleted:
            cur.execute(
                "DELETE FROM mfa_webauthn_credentials" + where, (user_id, event.credential_id)
            )
        elif event.method == WEBAUTHN:
            cur.execute("DELETE FROM mfa_webauthn_credentials WHERE user_id = %s", (user_id,))


_TYPES = (
    UserMfa.WebAuthnCredentialRegistered,
    UserMfa.WebAuthnCredentialRenamed,
    UserMfa.WebAuthnAssertionAccepted,
    UserMfa.WebAuthnCloneSuspected,
    UserMfa.WebAuthnCredentialDeleted,
    UserMfa.MethodRemoved,
)


def _row(row: Any) -> dict[str, Any]:
    fields = dict(zip(COLUMNS.split(", "), row, strict=True))
    fields["transports"] = json.loads(fields["transports"])
    for flag in ("backup_eligible", "backed_up", "user_verified", "clone_suspected"):
        fields[flag] = bool(fields[flag])
    return with_utc_times(fields, "created_at", "last_used_at")


def list_webauthn_credentials(
    cur: Cursor, user_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a user's credentials, oldest first."""
    rows, next_cursor = oldest_first_page(
        cur,
        table="mfa_webauthn_credentials",
        columns=COLUMNS,
        id_column="credential_id",
        user_id=user_id,
        limit=limit,
        cursor=cursor,
    )
    return [_row(r) for r in rows], next_cursor


def get_webauthn_credential(cur: Cursor, user_id: str, credential_id: str) -> dict[str, Any] | None:
    cur.execute(
        f"SELECT {COLUMNS} FROM mfa_webauthn_credentials WHERE user_id = %s AND credential_id = %s",
        (user_id, credential_id),
    )
    row = cur.fetchone()
    return None if row is None else _row(row)
