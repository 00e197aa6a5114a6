"""Push read models: the synced devices (no token, no key) and the challenge history."""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from typing import Any, ClassVar

from domain.push import PUSH
from domain.push_challenge import EXPIRED, PENDING, PushChallenge
from domain.user_mfa import UserMfa
from infra.sql import Cursor
from projections.base import (
    create_forget_index,
    create_index,
    decode_cursor,
    encode_cursor,
    forget_rows,
    iso,
    user_of,
    utc_time,
    with_utc_times,
)

DEVICES_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_push_devices ("
    "user_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, device_id TEXT NOT NULL, "
    "name TEXT NOT NULL, platform TEXT NOT NULL, app_version TEXT NOT NULL, "
    "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (user_id, device_id))"
)
CHALLENGES_DDL = (
    "CREATE TABLE IF NOT EXISTS mfa_push_challenges ("
    "challenge_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, "
    "status TEXT NOT NULL, context TEXT NOT NULL, created_at TEXT NOT NULL, "
    "expires_at TEXT NOT NULL, responded_at TEXT, device_id TEXT, reason TEXT, "
    "fraud INTEGER NOT NULL, rejected_responses INTEGER NOT NULL)"
)
DEVICE_COLUMNS = "device_id, name, platform, app_version, created_at, updated_at"
CHALLENGE_COLUMNS = (
    "challenge_id, user_id, status, context, created_at, expires_at, responded_at, "
    "device_id, reason, fraud, rejected_responses"
)


class PushDeviceProjection:
    """Follows device sync events into `mfa_push_devices`."""

    name: ClassVar[str] = "push_devices"
    tables: ClassVar[tuple[str, ...]] = ("mfa_push_devices",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(DEVICES_DDL)
        create_forget_index(cur, "mfa_push_devices")

    def process(self, cur: Cursor, event: Any) -> None:
        if forget_rows(cur, "mfa_push_devices", event):
            return
        kind = type(event)
        if kind not in (UserMfa.PushDeviceSynced, UserMfa.PushDeviceRevoked, UserMfa.MethodRemoved):
            return
        user_id = user_of(cur, event.originator_id)
        if user_id is None:
            return
        if kind is UserMfa.PushDeviceSynced:
            cur.execute(
                f"INSERT INTO mfa_push_devices (user_id, aggregate_id, {DEVICE_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, device_id) "
                "DO UPDATE SET name = excluded.name, platform = excluded.platform, "
                "app_version = excluded.app_version, updated_at = excluded.updated_at",
                (
                    user_id,
                    str(event.originator_id),
                    event.device_id,
                    event.name,
                    event.platform,
                    event.app_version,
                    iso(event.timestamp),
                    iso(event.timestamp),
                ),
            )
        elif kind is UserMfa.PushDeviceRevoked:
            cur.execute(
                "DELETE FROM mfa_push_devices WHERE user_id = %s AND device_id = %s",
                (user_id, event.device_id),
            )
        elif event.method == PUSH:
            cur.execute("DELETE FROM mfa_push_devices WHERE user_id = %s", (user_id,))


class PushChallengeProjection:
    """Follows PushChallenge events into `mfa_push_challenges` (history and statistics)."""

    name: ClassVar[str] = "push_challenges"
    tables: ClassVar[tuple[str, ...]] = ("mfa_push_challenges",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(CHALLENGES_DDL)
        create_forget_index(cur, "mfa_push_challenges")
        # a user's history, and the admin list and statistics (newest first, `since`): each
        # scanned and sorted every user's pushes
        create_index(cur, "mfa_push_challenges", "user", "user_id, created_at, challenge_id")
        create_index(cur, "mfa_push_challenges", "created", "created_at, challenge_id")

    def process(self, cur: Cursor, event: Any) -> None:
        if forget_rows(cur, "mfa_push_challenges", event):
            return
        kind = type(event)
        challenge_id = str(event.originator_id)
        if kind is PushChallenge.Created:
            cur.execute(
                "INSERT INTO mfa_push_challenges (challenge_id, user_id, aggregate_id, status, "
                "context, created_at, expires_at, fraud, rejected_responses) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0) ON CONFLICT (challenge_id) DO NOTHING",
                (
                    challenge_id,
                    event.user_id,
                    event.key_owner,
                    PENDING,
                    json.dumps(dict(event.context), sort_keys=True),
                    iso(event.timestamp),
                    iso(event.expires_at),
                ),
            )
        elif kind in (PushChallenge.Approved, PushChallenge.Denied):
            denied = kind is PushChallenge.Denied
            cur.execute(
                "UPDATE mfa_push_challenges SET status = %s, responded_at = %s, device_id = %s, "
                "reason = %s, fraud = %s WHERE challenge_id = %s",
                (
                    "denied" if denied else "approved",
                    iso(event.timestamp),
                    event.device_id or None,  # "": withdrawn at a reset, no device answered
                    event.reason if denied else None,
                    int(denied and event.fraud),
                    challenge_id,
                ),
            )
        elif kind is PushChallenge.ResponseRejected:
            cur.execute(
                "UPDATE mfa_push_challenges SET rejected_responses = rejected_responses + 1 "
                "WHERE challenge_id = %s",
                (challenge_id,),
            )


def _challenge(row: Any, now: datetime) -> dict[str, Any]:
    fields = dict(zip(CHALLENGE_COLUMNS.split(", "), row, strict=True))
    fields["context"] = json.loads(fields["context"])
    fields["fraud"] = bool(fields["fraud"])
    with_utc_times(fields, "created_at", "expires_at", "responded_at")
    if fields["status"] == PENDING and fields["expires_at"] <= now:
        fields["status"] = EXPIRED
    return fields


def list_push_challenges(
    cur: Cursor, now: datetime, user_id: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; one user's, or everyone's (admin)."""
    where, params = [], []
    if user_id is not None:
        where.append("user_id = %s")
        params.append(user_id)
    if cursor:
        created_at, challenge_id = decode_cursor(cursor, 2, (str, str))
        where.append("(created_at < %s OR (created_at = %s AND challenge_id < %s))")
        params += [created_at, created_at, challenge_id]
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    cur.execute(
        f"SELECT {CHALLENGE_COLUMNS} FROM mfa_push_challenges {clause} "
        "ORDER BY created_at DESC, challenge_id DESC LIMIT %s",
        (*params, limit + 1),
    )
    rows = cur.fetchall()
    next_cursor = None
    if len(rows) > limit:  # the stored text of the page's last row, as the query compares it
        last = dict(zip(CHALLENGE_COLUMNS.split(", "), rows[limit - 1], strict=True))
        next_cursor = encode_cursor([last["created_at"], last["challenge_id"]])
    return [_challenge(r, now) for r in rows[:limit]], next_cursor


def push_stats(cur: Cursor, now: datetime, since: datetime | None) -> dict[str, Any]:
    """Counts by status, approval rate, median and p95 response time, fraud reports."""
    # Counted in SQL (the table holds every push ever sent; reading each row into Python
    # took seconds at a few hundred thousand). A pending push past its expiry counts as
    # expired; stored times are `iso` text, which compares in time order.
    params: list[Any] = [iso(now)]
    clause = ""
    if since is not None:
        clause = "WHERE created_at >= %s"
        params.append(iso(since))
    cur.execute(
        "SELECT CASE WHEN status = 'pending' AND expires_at <= %s THEN 'expired' "
        "ELSE status END AS shown, COUNT(*), SUM(fraud) "
        f"FROM mfa_push_challenges {clause} GROUP BY shown",
        params,
    )
    counts = {status: 0 for status in ("pending", "approved", "denied", "expired")}
    fraud = 0
    for status, count, frauds in cur.fetchall():
        counts[str(status)] = counts.get(str(status), 0) + int(count)
        fraud += int(frauds or 0)
    answered_clause = f"{clause} {'AND' if clause else 'WHERE'} responded_at IS NOT NULL"
    cur.execute(
        f"SELECT created_at, responded_at FROM mfa_push_challenges {answered_clause}",
        params[1:],
    )
    seconds = []
    for created, answered in cur.fetchall():
        start, end = utc_time(created), utc_time(answered)  # (a zone-less legacy row too)
        if start is not None and end is not None:
            seconds.append((end - start).total_seconds())
    answered = counts["approved"] + counts["denied"] + counts["expired"]
    return {
        "total": sum(counts.values()),
        "by_status": counts,
        "approval_rate": round(counts["approved"] / answered, 4) if answered else None,
        "median_response_s": round(statistics.median(seconds), 3) if seconds else None,
        "p95_response_s": round(_percentile(seconds, 0.95), 3) if seconds else None,
        "fraud_reports": fraud,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def _device(row: Any) -> dict[str, Any]:
    fields = dict(zip(DEVICE_COLUMNS.split(", "), row, strict=True))
    return with_utc_times(fields, "created_at", "updated_at")


def list_push_devices(cur: Cursor, user_id: str) -> list[dict[str, Any]]:
    cur.execute(
        f"SELECT {DEVICE_COLUMNS} FROM mfa_push_devices WHERE user_id = %s "
        "ORDER BY created_at, device_id",
        (user_id,),
    )
    return [_device(r) for r in cur.fetchall()]
