"""Benchmark: where a request's CPU goes, by endpoint, at a fixed concurrency.

On a fresh database (no NATS, projections in-process), closed-loop load from this process at
`--concurrency` for `--duration` seconds on each of:

- `GET /health`: uvicorn + Litestar alone (no token, no thread, no database);
- `GET /mfa/backup-codes/count`: plus the bearer token, a handler thread and one read-model
  query;
- `POST /mfa/totp/validate` for `--users` enrolled users (a fresh code each time, so every
  answer is a 200): plus the command
  (cached aggregate, decrypt, pyotp, encrypt, one append) and its projection updates.
  Enrolment takes about a minute, so most users' data keys have left the service's 30 s key
  cache by then, as for users who log in now and then: each validate also reads and unwraps
  the user's key (`ceiling.py`, whose users validate every few seconds, shows less).

For each it prints req/s and the CPU milliseconds per request of the server, PostgreSQL and
this client. Their sum is what a request costs the machine: on 2 cores no arrangement of
processes can serve more than 2,000 / (that sum) requests per second, which is the bound the
README's "CPU budget" compares with the issue 7 targets.

Run by hand: `.venv/bin/python bench/overhead.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyotp
from common import CpuSample, machine_description, table
from harness import (
    RawHttp,
    Stack,
    install_signal_handlers,
    max_position,
    mint_token,
    wait_caught_up,
)

PERIOD = 30


async def closed_loop(
    duration: float, concurrency: int, send: Any
) -> tuple[int, Counter[int], float]:
    """`concurrency` workers each sending `send()` back to back for `duration` seconds."""
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < stop:
            statuses[await send()] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sum(statuses.values()), statuses, time.perf_counter() - started


async def enrol(http: RawHttp, secret: str, users: int) -> list[tuple[dict[str, str], str]]:
    """Users with a verified TOTP device, 16 at a time: (auth header, TOTP secret)."""

    async def one(index: int) -> tuple[dict[str, str], str]:
        auth = {"Authorization": f"Bearer {mint_token(secret, f'overhead-{index}')}"}
        setup = (await http.request("POST", "/mfa/totp/setup", {"name": "bench"}, auth)).json()
        code = pyotp.TOTP(setup["secret"]).now()
        reply = await http.request("POST", "/mfa/totp/verify", {"code": code}, auth)
        assert reply.status == 200, reply.body
        return auth, setup["secret"]

    enrolled: list[tuple[dict[str, str], str]] = []
    for first in range(0, users, 16):
        enrolled += await asyncio.gather(*(one(i) for i in range(first, min(users, first + 16))))
    return enrolled


def validations(http: RawHttp, enrolled: list[tuple[dict[str, str], str]]) -> Any:
    """Fresh codes only: every user's code of this time step and of the next (both accepted
    for the next 30 s at least, the service's window being one step either side)."""
    now = datetime.now(UTC).timestamp()
    pairs = [
        (auth, pyotp.TOTP(secret).at(now + step * PERIOD))
        for step in (0, 1)
        for auth, secret in enrolled
    ]
    deadline = time.monotonic() + PERIOD - 1

    async def send() -> Any:
        if not pairs or time.monotonic() > deadline:
            raise SystemExit("out of fresh TOTP codes: run again with more --users")
        auth, code = pairs.pop()
        return await http.request("POST", "/mfa/totp/validate", {"code": code}, auth)

    return send


async def run(args: argparse.Namespace) -> str:
    rows = []
    with Stack(nats=False) as stack:
        http = RawHttp(stack.base_url, size=args.concurrency)
        print(f"enrolling {args.users} users ...", file=sys.stderr)
        enrolled = await enrol(http, stack.jwt_secret, args.users)
        assert stack.database_url is not None
        # Not measured: the projections catching up with the enrolment.
        wait_caught_up(stack.database_url, max_position(stack.database_url), relay=False)
        reader = {"Authorization": f"Bearer {mint_token(stack.jwt_secret, 'overhead-0')}"}
        cases: list[tuple[str, Any]] = [
            ("GET /health", lambda: lambda: http.request("GET", "/health")),
            (
                "GET /mfa/backup-codes/count",
                lambda: lambda: http.request("GET", "/mfa/backup-codes/count", None, reader),
            ),
            ("POST /mfa/totp/validate", lambda: validations(http, enrolled)),
        ]
        for label, make_request in cases:
            request = make_request()  # codes are drawn just before their case runs

            async def send(request: Any = request) -> int:
                reply = await request()
                return int(reply.status)

            print(f"{label} ...", file=sys.stderr)
            await closed_loop(args.warmup, args.concurrency, send)
            before = CpuSample.take(stack.server_pid)
            count, statuses, seconds = await closed_loop(args.duration, args.concurrency, send)
            used = CpuSample.take(stack.server_pid).cores_since(before, seconds)
            parties = (used.server, used.postgres, used.client)
            per_request = [1000 * cores * seconds / count for cores in parties]
            rows.append(
                [
                    label,
                    f"{count / seconds:.0f}",
                    *(f"{ms:.2f}" for ms in per_request),
                    f"{sum(per_request):.2f}",
                    f"{2000 / sum(per_request):.0f}",
                    f"{used.others:.2f}",
                    " ".join(f"{code}:{n}" for code, n in sorted(statuses.items())),
                ]
            )
        await http.close()
    headers = [
        "request",
        "req/s",
        "server ms/req",
        "postgres ms/req",
        "client ms/req",
        "total ms/req",
        "2-core bound req/s",
        "others cores",
        "statuses",
    ]
    return (
        "## CPU per request by endpoint (bench/overhead.py)\n\n"
        f"{machine_description()}\n"
        f"Concurrency {args.concurrency}, {args.warmup} s warm-up then {args.duration} s "
        f"measured per request type; {args.users} enrolled users; one `mfa serve` with its "
        "defaults (projections in-process, no NATS).\n\n" + table(headers, rows)
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=4000, help="enough for 2 codes per request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    print(asyncio.run(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
