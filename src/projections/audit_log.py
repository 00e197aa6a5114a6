"""The configuration audit log: one row per MfaConfig change, with who, when, before, after.

Every config event carries its actor, request id and the state before and after it, so a
rebuild from position 0 gives the same rows. Entries are listed newest first.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from domain.config import ALLOWLIST_ENTRY, GLOBAL, LEVEL_POLICY, RISK_POLICY, USER, MfaConfig
from domain.erasure import UserErased
from infra.sql import Cursor
from projections.base import (
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
    user_of,
    utc_time,
)
from projections.public_events import event_id

DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_config_audit_log ("
    "seq BIGINT PRIMARY KEY, id TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL, "
    "action TEXT NOT NULL, resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, "
    "before_json TEXT, after_json TEXT, request_id TEXT NOT NULL)"
)
COLUMNS = "seq, id, at, actor, action, resource_type, resource_id, before_json, after_json, "
COLUMNS += "request_id"

# event class -> (action, resource type, resource id)
_ENTRIES: dict[type[Any], tuple[str, str, Callable[[Any], str]]] = {
    MfaConfig.RiskPolicyUpdated: ("risk_policy.updated", RISK_POLICY, lambda e: GLOBAL),
    MfaConfig.LevelPolicyUpdated: ("level_policy.updated", LEVEL_POLICY, lambda e: e.level),
    MfaConfig.LevelPolicyReset: ("level_policy.reset", LEVEL_POLICY, lambda e: e.level),
    MfaConfig.AllowlistEntryAdded: (
        "ip_allowlist_entry.created",
        ALLOWLIST_ENTRY,
        lambda e: e.entry_id,
    ),
    MfaConfig.AllowlistEntryUpdated: (
        "ip_allowlist_entry.updated",
        ALLOWLIST_ENTRY,
        lambda e: e.entry_id,
    ),
    MfaConfig.AllowlistEntryRemoved: (
        "ip_allowlist_entry.deleted",
        ALLOWLIST_ENTRY,
        lambda e: e.entry_id,
    ),
}
RESOURCE_TYPES = (RISK_POLICY, LEVEL_POLICY, ALLOWLIST_ENTRY, USER)
# The resource id of an admin reset once the user has been erased (or was, when a rebuild
# reads the reset): the user id goes with the user.
ERASED_USER = "urn:mfa:erased-user"


def utc_text(value: datetime) -> str:
    """A fixed-width UTC timestamp, so that text order is time order in both databases."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


class ConfigAuditLogProjection:
    """Follows MfaConfig events into `mfa_config_audit_log`."""

    name: ClassVar[str] = "config_audit_log"
    tables: ClassVar[tuple[str, ...]] = ("mfa_config_audit_log",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(DDL)

    def process(self, cur: Cursor, event: Any) -> None:
        if type(event) is MfaConfig.UserResetRecorded:
            self._record_reset(cur, event)
            return
        if type(event) is UserErased:
            self._forget_user(cur, str(event.originator_id))
            return
        entry = _ENTRIES.get(type(event))
        if entry is None:
            return
        action, resource_type, resource_id = entry
        before, after = getattr(event, "before", None), getattr(event, "after", None)
        self._insert(cur, event, action, resource_type, resource_id(event), before, after)

    @staticmethod
    def _forget_user(cur: Cursor, aggregate_id: str) -> None:
        """An erasure: the user's reset rows keep the admin, the time and the methods, and
        lose the user id and the aggregate id. They are found by the aggregate id in `before`
        (the users model has forgotten the user id by now): compact JSON with sorted keys, so
        the text is known."""
        cur.execute(
            "SELECT seq, before_json FROM mfa_config_audit_log "
            "WHERE resource_type = %s AND before_json LIKE %s",
            (USER, f'%"aggregate_id":"{aggregate_id}"%'),
        )
        for seq, before_json in cur.fetchall():
            before = json.loads(before_json)
            before.pop("aggregate_id", None)
            cur.execute(
                "UPDATE mfa_config_audit_log SET resource_id = %s, before_json = %s WHERE seq = %s",
                (ERASED_USER, _json(before), seq),
            )

    def _record_reset(self, cur: Cursor, event: Any) -> None:
        """An admin's reset of a user: the user id while the user is known; `before` holds the
        methods the reset removed and the user's aggregate id (see the erasure above)."""
        user_id = user_of(cur, event.aggregate_id) or ERASED_USER
        before = {"aggregate_id": event.aggregate_id, "methods": list(event.methods)}
        self._insert(cur, event, "user.reset", USER, user_id, before, {"methods": []})

    @staticmethod
    def _insert(
        cur: Cursor,
        event: Any,
        action: str,
        resource_type: str,
        resource_id: str,
        before: Any,
        after: Any,
    ) -> None:
        cur.execute(
            "INSERT INTO mfa_config_audit_log "
            f"({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (seq) DO NOTHING",
            (
                event.originator_version,
                event_id(event.originator_id, event.originator_version),
                utc_text(event.timestamp),
                event.actor,
                action,
                resource_type,
                resource_id,
                _json(before),
                _json(after),
                event.request_id,
            ),
        )


def _state(text: str | None) -> Any:
    """A recorded state, with the times in it (an allowlist entry's `created_at`, `updated_at`,
    `expires_at`: `isoformat()` text in the event) read back as UTC datetimes, so that the log
    shows them as the resource itself does."""
    state = None if text is None else json.loads(text)
    if isinstance(state, dict):
        for key, value in state.items():
            if key.endswith("_at") and isinstance(value, str):
                with contextlib.suppress(ValueError, OverflowError):  # else shown as recorded
                    state[key] = utc_time(value)
    return state


def _row(row: Any) -> dict[str, Any]:
    fields = dict(zip(COLUMNS.split(", "), row, strict=True))
    fields["before"] = _state(fields.pop("before_json"))
    fields["after"] = _state(fields.pop("after_json"))
    fields["at"] = utc_time(fields["at"])
    fields["seq"] = int(fields["seq"])
    return fields


def list_config_audit_log(
    cur: Cursor,
    *,
    limit: int,
    cursor: str | None = None,
    resource_type: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of changes, newest first; `since` inclusive, `until` exclusive."""
    where = ["1 = 1"]
    params: list[Any] = []
    if resource_type is not None:
        where.append("resource_type = %s")
        params.append(resource_type)
    if actor is not None:
        where.append("actor = %s")
        params.append(actor)
    if since is not None:
        where.append("at >= %s")
        params.append(utc_text(since))
    if until is not None:
        where.append("at < %s")
        params.append(utc_text(until))
    if cursor:
        (before_seq,) = decode_cursor(cursor, 1, (int,))
        if before_seq < 0:
            raise InvalidCursorError("malformed cursor")
        where.append("seq < %s")
        params.append(before_seq)
    cur.execute(
        f"SELECT {COLUMNS} FROM mfa_config_audit_log "
        f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s",
        (*params, limit + 1),
    )
    rows = [_row(r) for r in cur.fetchall()]
    page = rows[:limit]
    return page, encode_cursor([page[-1]["seq"]]) if len(rows) > limit else None
