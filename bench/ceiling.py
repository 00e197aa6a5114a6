"""Benchmark (issue 7): the PostgreSQL append ceiling, and TOTP validate as a fraction of it.

1. On a fresh database, a table shaped like `mfa_events` (originator_id uuid, originator_version
   bigint, topic text, state bytea, notification_id bigserial, PRIMARY KEY (originator_id,
   originator_version), UNIQUE INDEX on notification_id) takes appends from `pgbench` with a
   custom script shaped like the eventsourcing recorder's insert: in one pipeline,
   `BEGIN; SET LOCAL lock_timeout; LOCK TABLE ... IN EXCLUSIVE MODE; NOTIFY; INSERT one row
   with a random bytea state of --state-bytes bytes RETURNING notification_id; COMMIT`, at
   each concurrency level for --pg-seconds. The result is transactions (= events) per second:
   the most a single event store can append, since the table lock serializes appends.
2. Then, in the same run, bench/totp_validate.py (its functions: a fresh database, `mfa serve`,
   15000 enrolled users, the raw asyncio client; --nats by default so the relay runs too)
   measures validate req/s, p50 and p99 at the same levels, and the server's RSS.

Each validate writes exactly one event (plus a snapshot every 100 versions), so req/s divided
by the ceiling is the share of the store's append capacity the service reaches. Issue 7 asks
for >= 40 % at concurrency 32 with p99 < 50 ms.

Run by hand: `.venv/bin/python bench/ceiling.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import totp_validate
from common import create_database, drop_database, machine_description, table
from harness import install_signal_handlers, write_json

PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
TABLE_DDL = """
CREATE TABLE bench_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
);
CREATE UNIQUE INDEX bench_events_notification_id_idx ON bench_events (notification_id ASC);
"""
SCRIPT = """\\startpipeline
BEGIN;
SET LOCAL lock_timeout = '5s';
LOCK TABLE bench_events IN EXCLUSIVE MODE;
NOTIFY bench_events;
INSERT INTO bench_events (originator_id, originator_version, topic, state) \
VALUES (gen_random_uuid(), 1, 'mfa.totp.code_accepted.v1', :state::bytea) \
RETURNING notification_id;
COMMIT;
\\endpipeline
"""


def pgbench(db_url: str, script: Path, clients: int, seconds: float, state_hex: str) -> float:
    """Transactions per second (excluding connection time) of one pgbench run."""
    parts = urlsplit(db_url)
    argv = [
        PGBENCH,
        "-n",
        "-M",
        "prepared",
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        "-c",
        str(clients),
        "-j",
        str(min(clients, os.cpu_count() or 2)),
        "-T",
        str(int(seconds)),
        "-D",
        f"state=\\x{state_hex}",
        "-f",
        str(script),
        parts.path.lstrip("/"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if not match:
        raise RuntimeError(f"no tps in pgbench output:\n{done.stdout}")
    return float(match.group(1))


def append_ceiling(args: argparse.Namespace) -> dict[int, float]:
    tmp = Path(tempfile.mkdtemp(prefix="mfa-bench-"))
    db_url = None
    try:
        db_url = create_database()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(TABLE_DDL)
        script = tmp / "append.sql"
        script.write_text(SCRIPT)
        state_hex = secrets.token_bytes(args.state_bytes).hex()
        results = {}
        for clients in args.levels:
            print(f"pgbench append at concurrency {clients} ...", file=sys.stderr, flush=True)
            results[clients] = pgbench(db_url, script, clients, args.pg_seconds, state_hex)
            print(f"  {results[clients]:.0f} tps", file=sys.stderr, flush=True)
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT count(*), avg(length(state)) FROM bench_events").fetchone()
            assert row is not None
            assert row[0] > 0
        return results
    finally:
        if db_url is not None:
            drop_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    args: argparse.Namespace, ceiling: dict[int, float], validate: list[dict[str, Any]]
) -> str:
    top = max(ceiling.values())
    rows = []
    for v in validate:
        c = v["concurrency"]
        rows.append(
            [
                str(c),
                f"{ceiling.get(c, 0):.0f}",
                f"{v['rate']:.1f}",
                f"{100 * v['rate'] / ceiling[c]:.1f} %" if c in ceiling else "-",
                f"{100 * v['rate'] / top:.1f} %",
                f"{v['p50_ms']:.1f}",
                f"{v['p99_ms']:.1f}",
                str(v["non_200"]),
                f"{v['server_cores']:.2f}",
                f"{v['others_cores']:.2f}",
                f"{v['rss_mib']:.0f} / {v['hwm_mib']:.0f}",
            ]
        )
    headers = [
        "conc",
        "pgbench appends/s",
        "validate req/s",
        "of ceiling (same conc)",
        "of best ceiling",
        "p50 ms",
        "p99 ms",
        "non-200",
        "server cores",
        "others cores",
        "server RSS / peak MiB",
    ]
    return "\n".join(
        [
            "## Append ceiling vs TOTP validate (bench/ceiling.py)",
            "",
            f"Machine: {machine_description()}",
            f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; pgbench -M prepared, "
            f"{args.pg_seconds:g} s per level, one pipelined transaction per append "
            f"(LOCK TABLE IN EXCLUSIVE MODE + INSERT of a {args.state_bytes}-byte state), "
            "synchronous_commit as configured on the server; validate as in "
            "bench/totp_validate.py" + (" with the NATS relay on." if args.nats else "."),
            "",
            table(headers, rows),
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels")
    parser.add_argument("--pg-seconds", type=float, default=8.0, help="seconds per pgbench run")
    parser.add_argument("--state-bytes", type=int, default=400)
    # A level needs about req/s x 30 users (see totp_validate.py): 5000 starved the client at
    # concurrency 32 on a fast hour (600 req/s), which made the whole run fail.
    parser.add_argument("--users", type=int, default=15000, help="see totp_validate.py")
    parser.add_argument("--duration", type=float, default=12.0, help="see totp_validate.py")
    parser.add_argument("--warmup", type=float, default=3.0, help="see totp_validate.py")
    parser.add_argument(
        "--no-nats", dest="nats", action="store_false", help="validate without NATS/relay"
    )
    parser.add_argument("--skip-validate", action="store_true", help="pgbench only")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.levels = [int(v) for v in args.levels.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    ceiling = append_ceiling(args)
    if args.skip_validate:
        print(table(["conc", "appends/s"], [[str(c), f"{t:.0f}"] for c, t in ceiling.items()]))
        write_json(args.json, {"ceiling": {str(c): t for c, t in ceiling.items()}})
        return 0
    validate_args = totp_validate.parse_args(
        [
            "--users",
            str(args.users),
            "--levels",
            ",".join(map(str, args.levels)),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            *(["--nats"] if args.nats else []),
        ]
    )
    text, results, code = totp_validate.run(validate_args)
    validate = totp_validate.summary(results)
    print(report(args, ceiling, validate), flush=True)
    print()
    print(text, flush=True)
    write_json(
        args.json,
        {"ceiling": {str(c): t for c, t in ceiling.items()}, "validate": validate},
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
