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


def push_stats(cur: Cursor, dialect: str, now: datetime, since: datetime | None) -> dict[str, Any]:
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
        "ELSE status END AS shown, COUNT(*), SUM(fraud), COUNT(responded_at) "
        f"FROM mfa_push_challenges {clause} GROUP BY shown",
        params,
    )
    counts = {status: 0 for status in ("pending", "approved", "denied", "expired")}
    fraud = responses = 0
    for status, count, frauds, responded in cur.fetchall():
        counts[str(status)] = counts.get(str(status), 0) + int(count)
        fraud += int(frauds or 0)
        responses += int(responded)
    median, p95 = _response_times(cur, dialect, clause, params[1:], responses)
    answered = counts["approved"] + counts["denied"] + counts["expired"]
    return {
        "total": sum(counts.values()),
        "by_status": counts,
        "approval_rate": round(counts["approved"] / answered, 4) if answered else None,
        "median_response_s": median,
        "p95_response_s": p95,
        "fraud_reports": fraud,
    }


def _microseconds(dialect: str) -> str:
    """SQL for the whole microseconds from a push to its answer. Stored times are `iso` text
    (six digits of fraction when there is one); one stored without a zone is UTC, as
    `utc_time` reads it. Whole numbers: the figures come out as Python's own subtraction
    gave them (SQLite's `julianday` is 40 microseconds coarse, enough to tip a rounding)."""
    if dialect == "postgres":

        def instant(column: str) -> str:  # (PostgreSQL reads a zone-less time in its own zone)
            return (
                f"(CASE WHEN strpos(substr({column}, 20), ':') > 0 THEN {column}::timestamptz "
                f"ELSE {column}::timestamp AT TIME ZONE 'UTC' END)"
            )

        elapsed = f"EXTRACT(EPOCH FROM {instant('responded_at')} - {instant('created_at')})"
        return f"({elapsed} * 1000000)::bigint"

    def whole(column: str) -> str:
        # The whole seconds of the time without its fraction: `strftime` rounds a fraction to
        # the millisecond (00.9995 is the next second). (`%s` spelled so: the SQLite cursor
        # makes `%s` a `?`.)
        zone = f"substr({column}, CASE WHEN substr({column}, 20, 1) = '.' THEN 27 ELSE 20 END)"
        return f"CAST(strftime('%' || 's', substr({column}, 1, 19) || {zone}) AS INTEGER)"

    def fraction(column: str) -> str:
        return (
            f"(CASE WHEN substr({column}, 20, 1) = '.' "
            f"THEN CAST(substr({column}, 21, 6) AS INTEGER) ELSE 0 END)"
        )

    return (
        f"(({whole('responded_at')} - {whole('created_at')}) * 1000000 "
        f"+ {fraction('responded_at')} - {fraction('created_at')})"
    )


def _response_times(
    cur: Cursor, dialect: str, clause: str, params: list[Any], responses: int
) -> tuple[float | None, float | None]:
    """The median and the nearest-rank p95 of the seconds from a push to its answer. The
    database ranks them and hands back those ranks only: reading every answered push into
    this process took 78 MB and most of a second at 300,000."""
    if not responses:
        return None, None
    answered = f"{clause} {'AND' if clause else 'WHERE'} responded_at IS NOT NULL"
    # One statement, which counts the pushes it ranks: on PostgreSQL each statement of a read
    # sees its own snapshot, and an erasure between two would take ranks away. It hands back
    # the ranks of the median and both neighbours of the p95's (picked below as ever).
    cur.execute(
        "SELECT position, elapsed, total FROM (SELECT elapsed, ROW_NUMBER() OVER "
        "(ORDER BY elapsed) AS position, COUNT(*) OVER () AS total FROM (SELECT "
        f"{_microseconds(dialect)} AS elapsed FROM mfa_push_challenges {answered}) "
        "AS answered) AS ranked WHERE position IN ((total + 1) / 2, total / 2 + 1, "
        "19 * (total - 1) / 20 + 1, 19 * (total - 1) / 20 + 2)",
        params,
    )
    rows = cur.fetchall()
    if not rows:
        return None, None
    at = {int(position): int(elapsed) / 1e6 for position, elapsed, _ in rows}
    total = int(rows[0][2])
    middle = [(total + 1) // 2, total // 2 + 1]  # one rank, or the two to average
    p95 = max(0, min(total - 1, round(0.95 * (total - 1)))) + 1
    return round(statistics.fmean(at[rank] for rank in middle), 3), round(at[p95], 3)


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
