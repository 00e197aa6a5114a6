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
from collections import Counter, deque
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


class Codes:
    """Fresh TOTP codes: each user's steps strictly increase across the whole run."""

    def __init__(self, enrolled: list[tuple[dict[str, str], str]]) -> None:
        self.enrolled = enrolled
        # Enrolment spent each user's code of its time step: start after this one.
        step = int(datetime.now(UTC).timestamp() // PERIOD)
        self.last_step: dict[int, int] = dict.fromkeys(range(len(enrolled)), step)

    def sender(self, http: RawHttp) -> Any:
        now = datetime.now(UTC).timestamp()
        pairs: deque[tuple[int, int, dict[str, str], str]] = deque()
        for ahead in (0, 1):  # this step for every user, then the next (the service takes +-1)
            at = now + ahead * PERIOD
            step = int(at // PERIOD)
            for index, (auth, secret) in enumerate(self.enrolled):
                if self.last_step.get(index, -1) < step:
                    pairs.append((index, step, auth, pyotp.TOTP(secret).at(at)))
        deadline = time.monotonic() + PERIOD - 2

        async def send() -> int:
            if not pairs or time.monotonic() > deadline:
                raise SystemExit("out of fresh TOTP codes: run again with more --users")
            index, step, auth, code = pairs.popleft()
            self.last_step[index] = step
            reply = await http.request("POST", "/mfa/totp/validate", {"code": code}, auth)
            return int(reply.status)

        return send


async def run(args: argparse.Namespace) -> str:
    rows = []
    with Stack(nats=False) as stack:
        http = RawHttp(stack.base_url, size=args.concurrency)
        print(f"enrolling {args.users} users ...", file=sys.stderr)
        codes = Codes(await enrol(http, stack.jwt_secret, args.users))
        assert stack.database_url is not None
        # Not measured: the projections catching up with the enrolment.
        wait_caught_up(stack.database_url, max_position(stack.database_url), relay=False)
        reader = {"Authorization": f"Bearer {mint_token(stack.jwt_secret, 'overhead-0')}"}

        def getter(path: str, headers: dict[str, str] | None = None) -> Any:
            async def send() -> int:
                return int((await http.request("GET", path, None, headers)).status)

            return send

        cases: list[tuple[str, Any]] = [
            ("GET /health", lambda: getter("/health")),
            ("GET /mfa/backup-codes/count", lambda: getter("/mfa/backup-codes/count", reader)),
            ("POST /mfa/totp/validate", lambda: codes.sender(http)),
        ]
        for label, make_sender in cases:
            send = make_sender()  # codes are drawn just before their case runs
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
