"""Benchmark (issue 7): read-side throughput on a log of --events events in PostgreSQL.

1. Writes the log in-process through the application (api.app.build_runtime on a fresh
   database, a clock moved by hand): `--users` users, each about events/users events from
   the domain methods (a TOTP device registered and verified, a trusted device remembered, a
   push device synced, then rounds of backup codes generated and spent and TOTP codes
   accepted), saved `--group` users per `app.save` (encrypted per user; no snapshots, which
   nothing here reads).
2. Times, in-process, each over the whole log from position 0:
   - the projection runner catching up every read model (`ProjectionRunner.catch_up`);
   - `projections.rebuild.rebuild_projection` for each read model (shadow tables, then swap);
   - `projections.audit.export_log` (each entry JSON-encoded, as the CLI does);
   - the NATS relay publishing the log to a private nats-server -js (`--no-relay` skips it);
   and then `mfa audit export` as a subprocess, counting its output lines (start-up included).

Throughput is events (log positions) per second. Issue 7 asks for >= 10,000 events/s.

Run by hand: `.venv/bin/python bench/rebuild.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import msgspec
from common import machine_description, table
from harness import Stack, install_signal_handlers, write_json

from api.app import build_runtime
from api.deps import Runtime
from api.settings import Settings
from commands.app import MfaApplication, aggregate_id
from commands.verifiers import new_totp_secret
from domain.backup_codes import format_backup_code, hash_backup_code
from domain.totp import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD
from domain.trusted_devices import hash_device_token
from domain.user_mfa import UserMfa
from infra.event_store import event_store_env
from projections.audit import export_log
from projections.nats_relay import NatsRelay
from projections.rebuild import rebuild_projection
from projections.runner import ProjectionRunner

STEP = timedelta(seconds=30)


class StepClock:
    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self) -> datetime:
        self.t += STEP
        return self.t


def user_events(services: Any, clock: StepClock, n: int, per_user: int) -> UserMfa:
    """A new user's aggregate with about `per_user` pending events (domain methods only)."""
    user_id = f"rebuild-{n}-{secrets.token_hex(3)}"
    now = clock.advance()
    mfa = UserMfa.start(user_id, aggregate_id(services, user_id), now)
    device_id = str(uuid.uuid4())
    mfa.register_totp_device(
        device_id=device_id,
        name="phone",
        secret=new_totp_secret(os.urandom(20)),
        digits=DEFAULT_DIGITS,
        period=DEFAULT_PERIOD,
        algorithm=DEFAULT_ALGORITHM,
        at=now,
    )
    now = clock.advance()
    mfa.verify_totp_device(device_id, int(now.timestamp()) // 30, now)
    token = secrets.token_urlsafe(32)
    mfa.remember_device(str(uuid.uuid4()), "laptop", hash_device_token(token), 30, now)
    mfa.sync_push_device(
        device_id=f"app-{n}",
        name="phone",
        platform="android",
        push_token=f"token-{n}",
        public_key="A" * 43,
        app_version="1.0",
        at=now,
    )
    while len(mfa.pending_events) < per_user:
        codes = [format_backup_code(os.urandom(8)) for _ in range(10)]
        salts = [os.urandom(16).hex() for _ in codes]
        mfa.generate_backup_codes(
            str(uuid.uuid4()),
            [(s, hash_backup_code(c, s)) for c, s in zip(codes, salts, strict=True)],
            clock.advance(),
        )
        for code in codes[:3]:
            mfa.use_backup_code(code, clock.advance())
        for _ in range(6):
            at = clock.advance()
            mfa.accept_totp({device_id: int(at.timestamp()) // 30}, at)
    return mfa


class _WithoutSnapshots(MfaApplication):
    """The same event store, minus automatic snapshots: `take_snapshot` reloads the aggregate
    from the database, which made writing the log twice as slow. Nothing measured here reads
    snapshots (projections, rebuilds, the export and the relay read events only)."""

    name = "mfa"  # eventsourcing names a subclass after itself otherwise (other tables)
    snapshotting_intervals: ClassVar[dict[Any, int]] = {}


def write_log(runtime: Runtime, clock: StepClock, users: int, per_user: int, group: int) -> int:
    """About users * per_user events, `group` users per save; returns the head position."""
    settings = runtime.settings
    app = _WithoutSnapshots(
        event_store_env(settings.database_url, settings.db_pool_size), runtime.services.app.vault
    )
    services = dataclasses.replace(runtime.services, app=app, writes=None)
    for first in range(0, users, group):
        batch = [
            user_events(services, clock, n, per_user)
            for n in range(first, min(users, first + group))
        ]
        app.save(*batch)
        if (first // group) % 10 == 9:
            print(
                f"  {first + group} users, {app.max_position()} events", file=sys.stderr, flush=True
            )
    head = app.max_position()
    app.close()
    return head


def timed(label: str, fn: Any) -> tuple[float, Any]:
    print(f"{label} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"  {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds, value


def run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    assert stack.database_url is not None
    per_user = max(10, args.events // args.users)
    start = datetime.now(UTC) - STEP * (args.users * (per_user + 10) + 100)
    clock = StepClock(start.replace(second=0, microsecond=0))
    settings = Settings.from_env(stack.settings_env())
    runtime = build_runtime(settings, clock=clock, run_projections=False)
    results: dict[str, Any] = {"rows": []}
    try:
        write_seconds, head = timed(
            f"writing ~{args.users * per_user} events",
            lambda: write_log(runtime, clock, args.users, per_user, args.group),
        )
        results.update(head=head, write_seconds=write_seconds)
        app, read_models = runtime.services.app, runtime.read_models

        def add(what: str, seconds: float, events: int, note: str = "") -> None:
            results["rows"].append(
                {
                    "what": what,
                    "seconds": seconds,
                    "events": events,
                    "rate": events / seconds,
                    "note": note,
                }
            )

        runner = ProjectionRunner(app, read_models)
        seconds, _ = timed("runner catch-up from 0", lambda: runner.catch_up(timeout=args.timeout))
        assert runner.position == head, (runner.position, head)
        add(f"runner catch-up, all {len(read_models.projections)} read models", seconds, head)
        for projection in read_models.projections:
            seconds, rep = timed(
                f"rebuild {projection.name}",
                lambda p=projection: rebuild_projection(app, read_models, p.name),
            )
            add(f"rebuild {projection.name}", seconds, rep.position, f"{rep.rows} rows")

        def export() -> int:
            count = 0
            encode = msgspec.json.encode
            for entry in export_log(app):
                encode(entry)
                count += 1
            return count

        seconds, count = timed("export_log in-process", export)
        add("audit export_log (in-process)", seconds, count)
        if stack.nats_url and not args.no_relay:
            relay = NatsRelay(app, runtime.db, stack.nats_url)

            def publish() -> int:
                relay.start()
                try:
                    deadline = time.monotonic() + args.timeout
                    while relay.position() < head:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the relay did not catch up")
                        time.sleep(0.05)
                finally:
                    relay.stop()
                return relay.published

            seconds, published = timed("NATS relay from 0", publish)
            add("NATS relay publish from 0", seconds, head, f"{published} messages published")
    finally:
        runtime.services.app.close()
        runtime.db.close()

    mfa = Path(sys.executable).parent / "mfa"
    started = time.perf_counter()
    print("mfa audit export (CLI) ...", file=sys.stderr, flush=True)
    proc = subprocess.Popen(
        [str(mfa), "audit", "export"],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines = 0
    try:
        while chunk := proc.stdout.read(1 << 20):
            lines += chunk.count(b"\n")
    finally:
        proc.stdout.close()
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - started
    results["rows"].append(
        {
            "what": "`mfa audit export` (CLI, start-up included)",
            "seconds": seconds,
            "events": lines,
            "rate": lines / seconds,
            "note": f"exit {proc.returncode}",
        }
    )
    print(f"  {seconds:.1f} s, {lines} lines", file=sys.stderr, flush=True)
    return results


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    rows = [
        [r["what"], str(r["events"]), f"{r['seconds']:.2f}", f"{r['rate']:.0f}", r["note"]]
        for r in results["rows"]
    ]
    return "\n".join(
        [
            "## Read-side throughput from position 0 (bench/rebuild.py)",
            "",
            f"Machine: {machine_description()}",
            f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {results['head']} events of "
            f"{args.users} users written in-process in {results['write_seconds']:.1f} s "
            f"({results['head'] / results['write_seconds']:.0f} events/s); each line below "
            "reads the whole log from PostgreSQL, decrypts every event and does its work.",
            "",
            table(["what", "events", "seconds", "events/s", "note"], rows),
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--group", type=int, default=25, help="users per save when writing")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-relay", action="store_true", help="skip the NATS relay run")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    with Stack(nats=not args.no_relay, start_server=False) as stack:
        results = run(args, stack)
    print(report(args, results), flush=True)
    write_json(args.json, {"rebuild": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
