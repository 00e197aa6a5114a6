"""The read models' indexes: a user's push history, the admin list and the erasure and reset
deletes each use one, on both backends, and a rebuild (any number of them) keeps them.

Without them `GET /mfa/push/history` scanned and sorted every user's pushes (100 ms at
300,000 rows on PostgreSQL, for a user with none), and each erasure scanned six tables
inside the one runner that every read-your-writes waits on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from api.app import build_runtime
from infra import sql
from infra.sql import BoundedConnection, Cursor, DatabaseUnavailableError, open_database
from projections.push import PushChallengeProjection
from projections.rebuild import rebuild_projection
from projections.runner import ProjectionRunner
from projections.tracking import ReadModels
from tests.conftest import (
    MutableClock,
    close_runtime,
    create_pg_database,
    drop_pg_database,
    make_settings,
)

FORGET_INDEXES = {
    "totp_devices": "mfa_totp_devices",
    "webauthn_credentials": "mfa_webauthn_credentials",
    "trusted_devices": "mfa_trusted_devices",
    "backup_codes": "mfa_backup_codes",
    "push_devices": "mfa_push_devices",
}
HISTORY = (
    "SELECT challenge_id FROM mfa_push_challenges WHERE user_id = %s "
    "ORDER BY created_at DESC, challenge_id DESC LIMIT 51"
)
ADMIN_LIST = (
    "SELECT challenge_id FROM mfa_push_challenges "
    "ORDER BY created_at DESC, challenge_id DESC LIMIT 51"
)


def indexes(cur: Cursor, dialect: str, table: str) -> set[str]:
    if dialect == "postgres":
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
    else:
        cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
            "AND sql IS NOT NULL",
            (table,),
        )
    return {name for (name,) in cur.fetchall()}


def plan(cur: Cursor, dialect: str, sql: str, params: tuple[Any, ...] = ()) -> str:
    """The query plan as text; on PostgreSQL with sequential scans priced out, so that the
    plan of a tiny table shows which index can serve the query."""
    if dialect == "postgres":
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_sort = off")
        cur.execute("EXPLAIN " + sql, params)
    else:
        cur.execute("EXPLAIN QUERY PLAN " + sql, params)
    return "\n".join(str(row[-1]) for row in cur.fetchall())


def fill_pushes(cur: Cursor, dialect: str, users: int = 200, each: int = 15) -> None:
    """Rows of many users (the planner picks by the table's statistics; a rebuild, from
    the log, drops them again)."""
    rows = [
        (f"c{u}-{n}", f"user-{u}", f"agg-{u}", f"2026-03-01T12:{n:02d}:00.000000+00:00")
        for u in range(users)
        for n in range(each)
    ]
    for row in rows:
        cur.execute(
            "INSERT INTO mfa_push_challenges (challenge_id, user_id, aggregate_id, status, "
            "context, created_at, expires_at, fraud, rejected_responses) "
            "VALUES (%s, %s, %s, 'denied', '{}', %s, %s, 0, 0)",
            (*row, row[-1]),
        )
    cur.execute("ANALYZE mfa_push_challenges")


def expected(table: str, *purposes: str) -> set[str]:
    return {f"{table}_ix_{purpose}" for purpose in purposes}


def test_the_indexes_exist_serve_their_queries_and_survive_rebuilds(
    tmp_path: Path, database_url: str
) -> None:
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    try:
        app, read_models = runtime.services.app, runtime.read_models
        dialect = read_models.db.dialect
        ProjectionRunner(app, read_models).catch_up()
        for round_ in range(3):  # as created, then after one rebuild, then after another
            with read_models.db.transaction() as cur:
                for table in FORGET_INDEXES.values():
                    assert expected(table, "aggregate") <= indexes(cur, dialect, table), round_
                pushes = indexes(cur, dialect, "mfa_push_challenges")
                assert expected("mfa_push_challenges", "aggregate", "user", "created") <= pushes
                assert not [name for name in pushes if "rebuild" in name], pushes
            with read_models.db.transaction() as cur:
                fill_pushes(cur, dialect)
            with read_models.db.transaction() as cur:
                assert "mfa_push_challenges_ix_user" in plan(cur, dialect, HISTORY, ("user-7",))
            with read_models.db.transaction() as cur:
                assert "mfa_push_challenges_ix_created" in plan(cur, dialect, ADMIN_LIST)
            for name, table in {**FORGET_INDEXES, "push_challenges": "mfa_push_challenges"}.items():
                with read_models.db.transaction() as cur:
                    delete = f"DELETE FROM {table} WHERE aggregate_id = %s"
                    assert f"{table}_ix_aggregate" in plan(cur, dialect, delete, ("x",)), name
            for name in (*FORGET_INDEXES, "push_challenges"):
                rebuild_projection(app, read_models, name)
    finally:
        close_runtime(runtime)


class _SlowSchema:
    """A read model whose tables take longer to set up than the statement limit allows,
    as building an index a new version adds does on a table of millions of rows."""

    name: ClassVar[str] = "slow_schema"
    tables: ClassVar[tuple[str, ...]] = ()

    def create_tables(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_sleep(1.5)")

    def process(self, cur: Cursor, event: Any) -> None:
        pass


@pytest.mark.postgres
def test_setting_up_the_read_models_is_not_cut_short_by_the_statement_limit(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start of a version that adds an index builds it at start-up: past the 8 s
    statement limit (4 million push rows), or the client's 10 s deadline for an answer,
    every start failed the same way. (Both are cut to 1 s here.)"""
    monkeypatch.setattr(BoundedConnection, "answer_seconds", 1.0)
    url = create_pg_database(postgres_admin_url)
    db = open_database(url + "?options=-c%20statement_timeout%3D1000")  # 1 s, for the test
    try:
        with pytest.raises(DatabaseUnavailableError), db.transaction() as cur:
            cur.execute("SELECT pg_sleep(1.5)")  # the limit holds elsewhere...
        ReadModels(db, [_SlowSchema()])  # ... but not while the tables are set up
        with db.transaction() as cur:
            cur.execute("SELECT position FROM mfa_tracking WHERE projection = 'slow_schema'")
            assert cur.fetchone() == (0,)
    finally:
        db.close()
        drop_pg_database(postgres_admin_url, url)


@pytest.mark.postgres
def test_setting_up_the_read_models_waits_for_a_lock_only_so_long(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index statement waits for the table's lock even when the index exists. Lifting the
    time limits for index builds also lifted it for that wait: behind an anti-wraparound
    vacuum (or any long lock) a start, or `mfa projections status`, waited up to an hour,
    holding the locks it had, and the writes behind them."""
    monkeypatch.setattr(sql, "LOCK_SECONDS", 1)
    url = create_pg_database(postgres_admin_url)
    db = open_database(url)
    try:
        ReadModels(db, [PushChallengeProjection()])
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE mfa_push_challenges IN SHARE UPDATE EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError, match="lock timeout"):
                ReadModels(db, [PushChallengeProjection()])
            assert time.monotonic() - started < 5
    finally:
        db.close()
        drop_pg_database(postgres_admin_url, url)
