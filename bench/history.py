"""Benchmark (issue 7): TOTP validate latency over HTTP for users with 10,000 events vs fresh
users.

1. In-process (api.app.build_runtime on a fresh database, a clock moved by hand that starts
   far enough in the past), `--users` "large" and `--users` "fresh" users each set up and
   verify `--devices` TOTP devices through the commands; each large user then gets accepted
   codes (`UserMfa.accept_totp`, one new time step each, round-robin over its devices), saved
   `--batch` events at a time, until it has `--events` events. That stores the same events and
   snapshots (one every 100 versions) as that many validate commands would.
2. `mfa serve` starts on that database (projections in-process, no NATS) and catches up.
3. For `--duration` seconds, one request at a time, alternately for a large and a fresh user,
   `POST /mfa/totp/validate` with a code of the real current time. Each device accepts each
   time step once (and only s-1, s, s+1), so every (user, device) pair is a separate code
   source handed out by totp_validate.CodePool. The first request of each user is a cache miss
   in the server (it loads the newest snapshot and the events after it) and is reported apart.

The ratio large/fresh of the median and p99 latency is what issue 7 bounds (<= 1.2).

Run by hand: `.venv/bin/python bench/history.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from common import percentile, table
from harness import RawHttp, Stack, install_signal_handlers, mint_token, write_json
from totp_validate import PERIOD, CodePool, User, step_at, wait_for_projections

from api.app import build_runtime
from api.settings import Settings
from commands.app import aggregate_id
from commands.totp import set_up_totp, verify_totp
from commands.verifiers import totp_code
from domain.user_mfa import UserMfa

STEP = timedelta(seconds=PERIOD)


class StepClock:
    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self) -> datetime:
        self.t += STEP
        return self.t


@dataclass
class Subject:
    kind: str
    user_id: str
    secrets: list[str]
    events: int = 0


def write_users(args: argparse.Namespace, stack: Stack) -> tuple[list[Subject], float]:
    """The large and the fresh users, written in-process; returns them and the seconds taken."""
    steps = args.users * args.events + args.users * args.devices * 4 + 1000
    start = datetime.now(UTC) - steps * STEP
    clock = StepClock(start.replace(second=(start.second // 30) * 30, microsecond=0))
    runtime = build_runtime(
        Settings.from_env(stack.settings_env()), clock=clock, run_projections=False
    )
    services = runtime.services
    started = time.perf_counter()
    subjects = []
    try:
        for kind in ("large", "fresh"):
            for _ in range(args.users):
                user_id = f"history-{kind}-{secrets.token_hex(4)}"
                devices = []
                for d in range(args.devices):
                    devices.append(set_up_totp(services, user_id, f"phone {d}").value.device)
                for device in devices:
                    verify_totp(
                        services, user_id, totp_code(device, clock.advance()), device.device_id
                    )
                subject = Subject(kind, user_id, [d.secret for d in devices])
                app = services.app
                mfa: UserMfa = app.repository.get(aggregate_id(services, user_id))
                if kind == "large":
                    index = 0
                    while mfa.version < args.events:
                        for _ in range(min(args.batch, args.events - mfa.version)):
                            at = clock.advance()
                            device = devices[index % len(devices)]
                            index += 1
                            mfa.accept_totp({device.device_id: int(at.timestamp()) // PERIOD}, at)
                        app.save(mfa)
                    print(f"  {user_id}: {mfa.version} events", file=sys.stderr, flush=True)
                subject.events = int(mfa.version)
                subjects.append(subject)
    finally:
        runtime.services.app.close()
        runtime.db.close()
    return subjects, time.perf_counter() - started


async def measure(
    args: argparse.Namespace, stack: Stack, subjects: list[Subject]
) -> dict[str, Any]:
    now_step = step_at(time.time())
    pools: dict[str, CodePool] = {}
    owners: dict[str, list[str]] = {}
    for kind in ("large", "fresh"):
        sources = []
        for s in subjects:
            if s.kind != kind:
                continue
            headers = {"Authorization": f"Bearer {mint_token(stack.jwt_secret, s.user_id)}"}
            for secret in s.secrets:
                sources.append(User(s.user_id, headers, pyotp.TOTP(secret), now_step - 2))
        pools[kind] = CodePool(sources)
        owners[kind] = [u.sub for u in sources]
    http = RawHttp(stack.base_url, size=2)
    samples: dict[str, list[float]] = {"large": [], "fresh": []}
    cold: dict[str, list[float]] = {"large": [], "fresh": []}
    statuses: dict[str, int] = {}
    seen: set[str] = set()
    deadline = time.perf_counter() + args.duration
    try:
        while time.perf_counter() < deadline:
            for kind in ("large", "fresh"):
                pool = pools[kind]
                taken = await pool.take(deadline)
                if taken is None:
                    break
                index, step = taken
                user = pool.users[index]
                assert user.totp is not None
                reply = await http.request(
                    "POST",
                    "/mfa/totp/validate",
                    {"code": user.totp.generate_otp(step)},
                    user.headers,
                )
                pool.give_back(index, step)
                key = f"{kind} {reply.status}"
                statuses[key] = statuses.get(key, 0) + 1
                if reply.status != 200:
                    continue
                latency = reply.done - reply.sent
                (samples if user.sub in seen else cold)[kind].append(latency)
                seen.add(user.sub)
            await asyncio.sleep(args.pause)
    finally:
        await http.close()
    return {"samples": samples, "cold": cold, "statuses": statuses}


def describe(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "n": len(s),
        "p50_ms": (statistics.median(s) if s else 0.0) * 1000,
        "p90_ms": percentile(s, 0.9) * 1000,
        "p99_ms": percentile(s, 0.99) * 1000,
        "mean_ms": (statistics.fmean(s) if s else 0.0) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    with Stack(nats=False, start_server=False) as stack:
        print("writing the users in-process ...", file=sys.stderr, flush=True)
        subjects, write_seconds = write_users(args, stack)
        total = sum(s.events for s in subjects)
        print(f"  {total} events in {write_seconds:.1f} s", file=sys.stderr, flush=True)
        stack.start()
        assert stack.database_url is not None
        catch_up = wait_for_projections(stack.database_url, timeout=300)
        print(
            f"projections caught up in {catch_up:.1f} s; validating for {args.duration:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        result = asyncio.run(measure(args, stack, subjects))
        stack.check_alive()
    stats = {k: describe(v) for k, v in result["samples"].items()}
    cold = {k: describe(v) for k, v in result["cold"].items()}
    ratio_p50 = stats["large"]["p50_ms"] / stats["fresh"]["p50_ms"]
    ratio_p99 = stats["large"]["p99_ms"] / stats["fresh"]["p99_ms"]
    events = {k: [s.events for s in subjects if s.kind == k] for k in ("large", "fresh")}
    rows = []
    for kind in ("large", "fresh"):
        for label, d in (("warm", stats[kind]), ("first request (cache miss)", cold[kind])):
            rows.append(
                [
                    kind,
                    f"{min(events[kind])}-{max(events[kind])}",
                    label,
                    str(d["n"]),
                    f"{d['p50_ms']:.2f}",
                    f"{d['p90_ms']:.2f}",
                    f"{d['p99_ms']:.2f}",
                    f"{d['mean_ms']:.2f}",
                ]
            )
    from common import machine_description

    text = "\n".join(
        [
            "## Validate latency: 10,000-event users vs fresh users (bench/history.py)",
            "",
            f"Machine: {machine_description()}",
            f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {args.users} large and "
            f"{args.users} fresh users with {args.devices} TOTP devices each, written "
            f"in-process in {write_seconds:.1f} s ({total} events); `mfa serve` (projections "
            f"in-process, no NATS) caught up in {catch_up:.1f} s; then {args.duration:g} s "
            "of POST /mfa/totp/validate over HTTP, one at a time, alternating large/fresh. "
            f"Statuses: {' '.join(f'{k}:{v}' for k, v in sorted(result['statuses'].items()))}.",
            "",
            table(
                [
                    "user",
                    "events at start",
                    "requests",
                    "n",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "mean ms",
                ],
                rows,
            ),
            "",
            f"Large/fresh latency ratio (warm): median {ratio_p50:.2f}, p99 {ratio_p99:.2f} "
            "(issue 7 target <= 1.2).",
        ]
    )
    print(text, flush=True)
    write_json(
        args.json,
        {
            "history": {
                "ratio_p50": ratio_p50,
                "ratio_p99": ratio_p99,
                "large": stats["large"],
                "fresh": stats["fresh"],
                "cold_large": cold["large"],
                "cold_fresh": cold["fresh"],
                "statuses": result["statuses"],
            }
        },
    )
    bad = sum(v for k, v in result["statuses"].items() if not k.endswith(" 200"))
    return 1 if bad else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4, help="large users (and fresh users)")
    parser.add_argument("--devices", type=int, default=10, help="TOTP devices per user (<= 10)")
    parser.add_argument("--events", type=int, default=10_000, help="events of each large user")
    parser.add_argument("--batch", type=int, default=500, help="events per save when writing")
    parser.add_argument("--duration", type=float, default=65.0, help="seconds of validation")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between pairs")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
