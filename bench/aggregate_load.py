"""Benchmark: loading a UserMfa aggregate of ~10 events vs one of ~10,000, on PostgreSQL.

In-process, no HTTP. The application is built with `api.app.build_runtime` (as `mfa serve`
builds it, minus the projection runner) on a fresh database `mfa_bench_<random>` that is
dropped at the end. Two users are written:

- small: set up + verify a TOTP device, then 7 validations through the commands (10 events);
- large: set up + verify through the commands, then 9,997 accepted TOTP codes with increasing
  time steps through the domain method `UserMfa.accept_totp`, saved with `app.save` every
  `--batch` events (the same events and the same snapshots, one every 100 versions, as
  9,997 validate commands would store; just faster to write). With 10,000 events its newest
  snapshot is at version 10,000 (nothing to replay after it: the best case); the loads are
  then timed again as `large+99` after 99 more events (the worst case of the interval).

Then, for each user, `--runs` timed repetitions (after a few untimed ones) of:

- `load (no cache)`: `repository.get(id)` on a second MfaApplication built with
  AGGREGATE_CACHE_MAXSIZE unset (`Repository.cache is None`), so every load reads the newest
  snapshot plus the events after it from PostgreSQL, decrypts and replays them;
- `load (service cache)`: `repository.get(id)` on the service's application (LRU cache of
  10,000 aggregates): a fast-forward query for newer events plus a deepcopy;
- `full replay (no snapshot)`: every stored event read and replayed (what snapshots avoid);
- `validate_totp (no cache)` / `validate_totp (service cache)`: the whole command
  (load, pyotp check, accept_totp, encrypt, insert under the recorder's table lock, and a
  snapshot on every 100th version), on a clock that moves one 30 s step per call. These
  append events, so each user grows by 2 x `--command-runs` events during the run.

Run by hand: `.venv/bin/python bench/aggregate_load.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import base64
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    create_database,
    drop_database,
    machine_description,
    percentile,
    table,
)
from eventsourcing.application import project_aggregate

from api.app import build_runtime
from api.deps import Runtime
from api.settings import Settings
from commands.app import MfaApplication, Services, aggregate_id
from commands.totp import set_up_totp, validate_totp, verify_totp
from commands.verifiers import totp_code
from domain.totp import TotpDevice
from domain.user_mfa import UserMfa
from infra.event_store import event_store_env

PERIOD = timedelta(seconds=30)


class StepClock:
    """A clock the benchmark moves by hand (one TOTP step per validation)."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self) -> datetime:
        self.t += PERIOD
        return self.t


@dataclass
class Subject:
    label: str
    user_id: str
    device: TotpDevice
    events_at_start: int = 0


@dataclass
class Timing:
    what: str
    label: str
    events: str
    samples: list[float]


def enrol(services: Services, clock: StepClock, user_id: str) -> TotpDevice:
    """Set up and verify a device through the commands (3 events)."""
    setup = set_up_totp(services, user_id, "bench")
    verify_totp(services, user_id, totp_code(setup.value.device, clock.now()), None)
    return setup.value.device


def make_small(services: Services, clock: StepClock) -> Subject:
    user_id = f"bench-small-{secrets.token_hex(4)}"
    device = enrol(services, clock, user_id)
    for _ in range(7):
        validate_totp(services, user_id, totp_code(device, clock.advance()))
    return Subject("small", user_id, device)


def append_accepts(
    services: Services, clock: StepClock, subject: Subject, count: int, batch: int
) -> int:
    """Append `count` accepted TOTP codes (one per new time step); returns the new version."""
    app = services.app
    mfa: UserMfa = app.repository.get(aggregate_id(services, subject.user_id))
    step = mfa.totp_devices[subject.device.device_id].last_timecode or 0
    target = mfa.version + count
    while mfa.version < target:
        for _ in range(min(batch, target - mfa.version)):
            step += 1
            at = clock.advance()
            assert int(at.timestamp()) // 30 == step
            mfa.accept_totp({subject.device.device_id: step}, at)
        app.save(mfa)
        print(
            f"  {subject.label} user: {mfa.version} events", file=sys.stderr, end="\r", flush=True
        )
    print(file=sys.stderr)
    return int(mfa.version)


def make_large(services: Services, clock: StepClock, events: int, batch: int) -> Subject:
    user_id = f"bench-large-{secrets.token_hex(4)}"
    subject = Subject("large", user_id, enrol(services, clock, user_id))
    append_accepts(services, clock, subject, events - 3, batch)
    return subject


def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def stored_events(app: MfaApplication, agg_id: Any) -> int:
    return len(app.recorder.select_events(agg_id))


def snapshot_version(app: MfaApplication, agg_id: Any) -> int:
    assert app.snapshots is not None
    found = list(app.snapshots.get(agg_id, desc=True, limit=1))
    return int(found[0].originator_version) if found else 0


def time_loads(
    args: argparse.Namespace,
    s: Subject,
    services: Services,
    uncached_app: MfaApplication,
    timings: list[Timing],
) -> None:
    cached_app = services.app
    agg = aggregate_id(services, s.user_id)
    n = stored_events(cached_app, agg)
    snap = snapshot_version(cached_app, agg)
    events = f"{n} ({n - snap} after snapshot v{snap})" if snap else f"{n} (no snapshot)"
    print(f"timing loads of the {s.label} user: {events} ...", file=sys.stderr, flush=True)
    loaded: UserMfa = uncached_app.repository.get(agg)
    assert loaded.version == n
    assert loaded.totp_devices[s.device.device_id].is_active()
    timings.append(
        Timing(
            "load (no cache)",
            s.label,
            events,
            time_calls(lambda: uncached_app.repository.get(agg), args.runs, 10),
        )
    )
    timings.append(
        Timing(
            "load (service cache)",
            s.label,
            events,
            time_calls(lambda: cached_app.repository.get(agg), args.runs, 10),
        )
    )
    timings.append(
        Timing(
            "full replay (no snapshot)",
            s.label,
            f"{n}",
            time_calls(
                lambda: project_aggregate(None, uncached_app.events.get(agg)),
                args.replay_runs,
                1,
            ),
        )
    )


def run(args: argparse.Namespace, runtime: Runtime, clock: StepClock) -> str:
    services = runtime.services
    cached_app = services.app
    uncached_app = MfaApplication(
        {
            **event_store_env(runtime.settings.database_url, runtime.settings.db_pool_size),
            "AGGREGATE_CACHE_MAXSIZE": "",
        },
        cached_app.vault,
    )
    try:
        assert uncached_app.repository.cache is None, "the aggregate cache is not bypassed"
        assert cached_app.repository.cache is not None
        uncached = Services(
            app=uncached_app,
            clock=clock,
            random=services.random,
            id_key=services.id_key,
            totp_issuer=services.totp_issuer,
        )
        print("writing the small and the large user ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        subjects = [
            make_small(services, clock),
            make_large(services, clock, args.events, args.batch),
        ]
        write_seconds = time.perf_counter() - started
        timings: list[Timing] = []
        for s in subjects:
            time_loads(args, s, services, uncached_app, timings)
        # The worst case of the snapshot interval: 99 events after the newest snapshot.
        large = subjects[1]
        append_accepts(services, clock, large, args.tail, args.batch)
        time_loads(
            args,
            Subject(f"large+{args.tail}", large.user_id, large.device),
            services,
            uncached_app,
            timings,
        )
        for s in subjects:
            agg = aggregate_id(services, s.user_id)
            before = stored_events(cached_app, agg)
            for what, svc in (
                ("validate_totp (no cache)", uncached),
                ("validate_totp (service cache)", services),
            ):
                print(f"timing {what} on the {s.label} user ...", file=sys.stderr, flush=True)
                timings.append(
                    Timing(
                        what,
                        s.label,
                        "",
                        time_calls(
                            lambda svc=svc, s=s: validate_totp(
                                svc, s.user_id, totp_code(s.device, clock.advance())
                            ),
                            args.command_runs,
                            3,
                        ),
                    )
                )
                timings[-1].events = f"{before}->{stored_events(cached_app, agg)}"
                before = stored_events(cached_app, agg)
        return report(args, timings, write_seconds)
    finally:
        uncached_app.close()


def report(args: argparse.Namespace, timings: list[Timing], write_seconds: float) -> str:
    rows = []
    by_key = {(t.what, t.label): t for t in timings}
    for t in timings:
        s = sorted(t.samples)
        small = by_key.get((t.what, "small"))
        ratio = ""
        if t.label.startswith("large") and small is not None:
            ratio = (
                f"{statistics.median(s) / statistics.median(small.samples):.2f} / "
                f"{percentile(s, 0.99) / percentile(sorted(small.samples), 0.99):.2f}"
            )
        rows.append(
            [
                t.what,
                t.label,
                t.events,
                str(len(s)),
                f"{statistics.median(s) * 1000:.2f}",
                f"{statistics.fmean(s) * 1000:.2f}",
                f"{percentile(s, 0.99) * 1000:.2f}",
                f"{s[-1] * 1000:.2f}",
                ratio,
            ]
        )
    headers = [
        "operation",
        "user",
        "events (stored)",
        "runs",
        "median ms",
        "mean ms",
        "p99 ms",
        "max ms",
        "large/small (median / p99)",
    ]
    return "\n".join(
        [
            "## Aggregate load: ~10 vs ~10,000 events (bench/aggregate_load.py)",
            "",
            f"Machine: {machine_description()}",
            f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; in-process, PostgreSQL event store, "
            f"snapshots every 100 versions; writing both users took {write_seconds:.1f} s "
            f"(large user saved in batches of {args.batch}).",
            "",
            table(headers, rows),
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events of the large user")
    parser.add_argument(
        "--tail", type=int, default=99, help="events then appended to the large user (worst case)"
    )
    parser.add_argument("--batch", type=int, default=500, help="events per save when writing")
    parser.add_argument("--runs", type=int, default=200, help="timed loads per user")
    parser.add_argument("--replay-runs", type=int, default=10, help="timed full replays")
    parser.add_argument("--command-runs", type=int, default=100, help="timed validate commands")
    return parser.parse_args(argv)


def _raise_exit(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    tmp = Path(tempfile.mkdtemp(prefix="mfa-bench-"))
    db_url: str | None = None
    runtime: Runtime | None = None
    try:
        db_url = create_database()
        settings = Settings.from_env(
            {
                "MFA_DATABASE_URL": db_url,
                "MFA_JWT_SECRET": secrets.token_urlsafe(48),
                "MFA_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                "MFA_DATA_DIR": str(tmp / "var"),
            }
        )
        # Start far enough in the past that every step the run uses is before "now".
        steps_needed = args.events + args.tail + 4 * (args.command_runs + 3) + 100
        start = datetime.now(UTC) - steps_needed * PERIOD
        clock = StepClock(start.replace(second=(start.second // 30) * 30, microsecond=0))
        runtime = build_runtime(settings, clock=clock, run_projections=False)
        print(run(args, runtime, clock), flush=True)
        return 0
    finally:
        if runtime is not None:
            runtime.services.app.close()
            runtime.db.close()
        if db_url is not None:
            drop_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
