"""Push statistics are computed by the database: the median and p95 response times come back
as a few rows, not as every answered push (at 300,000 answered pushes the API process read
78 MB of rows to sort them in Python, on every `GET /admin/mfa/push/stats`)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.sql import Cursor, SqliteDatabase, open_database
from projections.base import iso
from projections.push import PushChallengeProjection, push_stats

START = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a summer-time change in Europe that night


class CountingCursor:
    """Hands every call on, and counts the rows the caller fetched."""

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur
        self.fetched = 0

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._cur.execute(sql, params)

    def fetchone(self) -> Any:
        row = self._cur.fetchone()
        self.fetched += row is not None
        return row

    def fetchall(self) -> list[Any]:
        rows = self._cur.fetchall()
        self.fetched += len(rows)
        return rows

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


@pytest.fixture
def db(database_url: str) -> Iterator[Any]:
    database = open_database(database_url)
    with database.transaction() as cur:
        PushChallengeProjection().create_tables(cur)
    yield database
    database.close()


def insert(cur: Cursor, created: datetime, answered_after: float | None, zone: bool = True) -> str:
    challenge_id = f"c{random.getrandbits(64):016x}"
    created_text = iso(created) if zone else iso(created.replace(tzinfo=None))
    responded = None
    if answered_after is not None:
        answer = created + timedelta(seconds=answered_after)
        responded = iso(answer) if zone else iso(answer.replace(tzinfo=None))
    cur.execute(
        "INSERT INTO mfa_push_challenges (challenge_id, user_id, aggregate_id, status, context, "
        "created_at, expires_at, responded_at, fraud, rejected_responses) "
        "VALUES (%s, 'u', 'a', %s, '{}', %s, %s, %s, 0, 0)",
        (
            challenge_id,
            "pending" if answered_after is None else "approved",
            created_text,
            iso(created + timedelta(minutes=2)),
            responded,
        ),
    )
    return challenge_id


def reference(seconds: list[float]) -> tuple[float, float]:
    """The median and the nearest-rank p95, as the API has always given them."""
    ordered = sorted(seconds)
    index = max(0, min(len(ordered) - 1, round(0.95 * (len(ordered) - 1))))
    return round(statistics.median(ordered), 3), round(ordered[index], 3)


@pytest.mark.parametrize("answered", [1, 2, 7, 20, 401])
def test_the_median_and_p95_are_computed_by_the_database(db: Any, answered: int) -> None:
    rng = random.Random(answered)
    seconds = [round(rng.uniform(0.05, 110), 3) for _ in range(answered)]
    with db.transaction() as cur:
        for i, after in enumerate(seconds):
            insert(cur, START + timedelta(minutes=i), after)
        for i in range(5):  # unanswered pushes have no response time
            insert(cur, START + timedelta(minutes=i), None)
    with db.read() as cur:
        counting = CountingCursor(cur)
        stats = push_stats(counting, db.dialect, START + timedelta(days=30), None)
    assert (stats["median_response_s"], stats["p95_response_s"]) == reference(seconds)
    assert stats["total"] == answered + 5
    assert counting.fetched <= 10  # one row per status and the ranks asked for, not each push


def test_since_narrows_the_response_times_too(db: Any) -> None:
    with db.transaction() as cur:
        insert(cur, START, 100.0)
        insert(cur, START + timedelta(hours=1), 2.0)
        insert(cur, START + timedelta(hours=2), 4.0)
    with db.read() as cur:
        everything = push_stats(cur, db.dialect, START + timedelta(days=1), None)
        later = push_stats(cur, db.dialect, START + timedelta(days=1), START + timedelta(hours=1))
    assert (everything["median_response_s"], everything["p95_response_s"]) == (4.0, 100.0)
    assert (later["median_response_s"], later["p95_response_s"]) == (3.0, 4.0)


def test_no_answered_push_has_no_response_times(db: Any) -> None:
    with db.transaction() as cur:
        insert(cur, START, None)
    with db.read() as cur:
        stats = push_stats(cur, db.dialect, START + timedelta(minutes=1), None)
    assert (stats["median_response_s"], stats["p95_response_s"]) == (None, None)
    assert stats["approval_rate"] is None


def test_times_stored_without_a_zone_are_utc(db: Any) -> None:
    """Rows written before times carried their zone; a response across a clock change that
    the database's own time zone has still takes its real time."""
    with db.transaction() as cur:
        insert(cur, START, 7200.5, zone=False)  # 00:30 to 02:30:00.5 UTC
    if not isinstance(db, SqliteDatabase):
        with db.transaction() as cur:  # a server whose zone is not UTC
            cur.execute("SET LOCAL TIME ZONE 'Europe/Berlin'")
            stats = push_stats(cur, db.dialect, START + timedelta(days=1), None)
        assert stats["median_response_s"] == 7200.5
    with db.read() as cur:
        stats = push_stats(cur, db.dialect, START + timedelta(days=1), None)
    assert stats["median_response_s"] == 7200.5


@pytest.mark.parametrize(
    ("created_after", "answered_after"),
    [(0.9995, 2.0), (0.9999, 3.5), (0.0, 3.9997), (0.999999, 1.000001), (59.9996, 60.0004)],
)
def test_a_fraction_close_to_the_next_second_is_not_counted_twice(
    db: Any, created_after: float, answered_after: float
) -> None:
    """SQLite's `strftime('%s')` rounds to the millisecond: 00.9995 read as the next second,
    and the fraction added again made a response a second off."""
    created = START + timedelta(seconds=created_after)
    answered = START + timedelta(seconds=answered_after)
    with db.transaction() as cur:
        insert(cur, created, (answered - created).total_seconds())
    with db.read() as cur:
        stats = push_stats(cur, db.dialect, START + timedelta(days=1), None)
    expected = round((answered - created).total_seconds(), 3)
    assert (stats["median_response_s"], stats["p95_response_s"]) == (expected, expected)


class DeletingCursor(CountingCursor):
    """Deletes every push of user `u` just before the statement that ranks response times,
    as an erasure or reset committing between the two statements does."""

    def execute(self, sql: str, params: Any = ()) -> Any:
        if "ROW_NUMBER" in sql:
            self._cur.execute("DELETE FROM mfa_push_challenges WHERE user_id = 'u'")
        return super().execute(sql, params)


def test_pushes_deleted_between_the_counts_and_the_ranking_are_no_error(db: Any) -> None:
    """On PostgreSQL each statement of a read sees its own snapshot: the ranks computed from
    the first one's count were missing from the second one's rows (KeyError, a 500)."""
    with db.transaction() as cur:
        for i in range(5):
            insert(cur, START + timedelta(minutes=i), float(i + 1))
        cur.execute("UPDATE mfa_push_challenges SET user_id = 'v'")
        for i in range(4):
            insert(cur, START + timedelta(minutes=i), 100.0 + i)
    with db.transaction() as cur:
        stats = push_stats(DeletingCursor(cur), db.dialect, START + timedelta(days=1), None)
    assert (stats["median_response_s"], stats["p95_response_s"]) == (3.0, 5.0)  # user v's
