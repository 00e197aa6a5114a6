"""`GET /admin/mfa/push/stats` at scale: `push_stats` over N answered pushes, per `src/` tree.

Fills a push-challenge table with `--rows` answered pushes once (PostgreSQL database
`mfa_bench_push_stats`, or a SQLite file with `--sqlite`), then, for each of `--rounds` rounds,
runs `push_stats` with each variant's code in a fresh process (`--variants`, as `ab.py`
takes them) and prints its best time of three and the Python memory it allocated at most
(tracemalloc, in a separate pass, as tracing slows Python code down several times), and
the longest another thread of the process was kept from running meanwhile.

    mkdir -p /tmp/base && git archive HEAD src | tar -x -C /tmp/base
    .venv/bin/python bench/push_stats.py --variants /tmp/base/src,src
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ADMIN_URL = os.environ.get("MFA_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = ADMIN_URL.rsplit("/", 1)[0] + "/mfa_bench_push_stats"
SQLITE_PATH = Path("bench/results/push_stats.sqlite")
COLUMNS = (
    "challenge_id, user_id, aggregate_id, status, context, created_at, expires_at, "
    "responded_at, fraud, rejected_responses"
)


def rows(count: int) -> list[tuple[object, ...]]:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for i in range(count):
        at = start + timedelta(seconds=i)
        answered = at + timedelta(seconds=rng.uniform(0.5, 60))
        expires = at + timedelta(minutes=2)
        made.append(
            (uuid.uuid4().hex, f"u{i % 5000}", "a", "approved", "{}", at.isoformat(),
             expires.isoformat(), answered.isoformat(), 0, 0)
        )  # fmt: skip
    return made


def fill(count: int, sqlite: bool) -> None:
    sys.path.insert(0, "src")
    from infra.sql import open_database
    from projections.push import PushChallengeProjection

    if sqlite:
        SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        SQLITE_PATH.unlink(missing_ok=True)
        url = f"sqlite:///{SQLITE_PATH}"
    else:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS mfa_bench_push_stats")
            conn.execute("CREATE DATABASE mfa_bench_push_stats")
        url = PG_URL
    db = open_database(url)
    with db.transaction() as cur:
        PushChallengeProjection().create_tables(cur)
    db.close()
    insert = f"INSERT INTO mfa_push_challenges ({COLUMNS}) VALUES ({', '.join('?' * 10)})"
    if sqlite:
        with sqlite3.connect(SQLITE_PATH) as conn:
            conn.executemany(insert, rows(count))
        return
    copy = f"COPY mfa_push_challenges ({COLUMNS}) FROM STDIN"
    with psycopg.connect(PG_URL) as conn, conn.cursor().copy(copy) as out:
        for row in rows(count):
            out.write_row(row)


class Ticker:
    """Another thread that wakes every millisecond: the longest gap between two of its wakes
    is how long the call kept the API's other requests (threads of the same process) from
    running: Python code holds the interpreter lock, a database at work does not."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._gap = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.001):
            now = time.perf_counter()
            self._gap, last = max(self._gap, now - last), now

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self._gap


def measure(sqlite: bool) -> None:
    """In a child process whose `sys.path` starts with the variant's tree."""
    from infra.sql import open_database
    from projections.push import push_stats

    db = open_database(f"sqlite:///{SQLITE_PATH}" if sqlite else PG_URL)
    now = datetime(2027, 1, 1, tzinfo=UTC)
    old = len(inspect.signature(push_stats).parameters) == 3  # (before the dialect argument)

    def once() -> dict[str, object]:
        with db.read() as cur:
            if old:
                return push_stats(cur, now, None)  # type: ignore[call-arg]
            return push_stats(cur, db.dialect, now, None)

    best, stall = float("inf"), 0.0
    for _ in range(3):
        ticks = Ticker()
        started = time.perf_counter()
        stats = once()
        best = min(best, time.perf_counter() - started)
        stall = max(stall, ticks.stop())
    tracemalloc.start()
    once()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"{best * 1000:8.0f} ms  {peak / 1e6:6.1f} MB  {stall * 1000:6.0f} ms stalled  "
        f"median {stats['median_response_s']} p95 {stats['p95_response_s']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="src")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.sqlite)
        return
    fill(args.rows, args.sqlite)
    backend = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"{args.rows} answered pushes on {backend}: best of 3, Python allocated, stall")
    try:
        for round_ in range(args.rounds):
            for variant in args.variants.split(","):
                print(f"round {round_} {variant:>16}: ", end="", flush=True)
                subprocess.run(
                    [sys.executable, __file__, "--measure", *(["--sqlite"] * args.sqlite)],
                    env={**os.environ, "PYTHONPATH": str(Path(variant).resolve())},
                    check=True,
                )
    finally:
        if args.sqlite:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
        else:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute("DROP DATABASE IF EXISTS mfa_bench_push_stats WITH (FORCE)")


if __name__ == "__main__":
    main()
