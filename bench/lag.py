"""Benchmark (issue 3): how long after a command's HTTP response its event is on NATS and in
the projections, under a steady open-loop load.

For each mode (`inprocess`: projections and relay inside `mfa serve`; `worker`:
`MFA_PROJECTIONS=worker` and a separate `mfa worker`), on a fresh database and a private
`nats-server -js`:

1. `--users` users each generate backup codes once (their aggregates exist and are cached);
2. `POST /mfa/backup-codes/generate` is sent open-loop at `--rate` requests/s for `--warmup`
   + `--duration` seconds, round-robin over the users (one event per request, each a
   public `mfa.backup_codes.generated`); only requests sent after the warm-up count;
3. meanwhile a core NATS subscription on `mfa.events.>` records when each CloudEvent arrives,
   and a thread polls `mfa_tracking` every `--poll-ms` ms;
4. afterwards each acknowledged write's `X-MFA-Position` is matched to its event (the
   CloudEvent id is uuid5(aggregate id, version), computed for every stored row) and to the
   first poll that saw every projection at or past that position.

Lag = (event seen) - (HTTP response read). It can be negative: the relay and the runner are
woken when the event is stored, before the response is written. The projection lag has the
poll interval as its resolution. The stream's message count is compared with the stored
events (nothing lost).

Run by hand: `.venv/bin/python bench/lag.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections import Counter
from typing import Any

from common import CpuSample, machine_description, percentile, rss_kib, table
from harness import (
    NatsTap,
    RawHttp,
    Reply,
    Stack,
    Timeline,
    event_positions,
    install_signal_handlers,
    lags,
    max_position,
    mint_token,
    wait_caught_up,
    write_json,
)

PATH = "/mfa/backup-codes/generate"


async def warm_users(http: RawHttp, headers: list[dict[str, str]], concurrency: int) -> None:
    queue = list(headers)

    async def worker() -> None:
        while queue:
            h = queue.pop()
            reply = await http.request("POST", PATH, None, h)
            if reply.status != 201:
                raise RuntimeError(f"warm-up generate: {reply.status} {reply.body[:200]!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def open_loop(
    http: RawHttp, headers: list[dict[str, str]], rate: float, warmup: float, duration: float
) -> tuple[list[Reply], Counter[str], list[float], float]:
    """Requests at fixed intervals whatever the replies; the measured replies, statuses,
    how late each measured request was sent, and the measured window's start."""
    measured: list[Reply] = []
    statuses: Counter[str] = Counter()
    slips: list[float] = []
    busy: set[int] = set()
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    total = int((warmup + duration) * rate)
    first_measured = int(warmup * rate)

    async def one(k: int, user: int, scheduled: float) -> None:
        busy.add(user)
        try:
            reply = await http.request("POST", PATH, None, headers[user])
        except (OSError, asyncio.IncompleteReadError) as exc:
            if k >= first_measured:
                statuses[type(exc).__name__] += 1
            return
        finally:
            busy.discard(user)
        if k >= first_measured:
            statuses[str(reply.status)] += 1
            slips.append(reply.sent - scheduled)
            measured.append(reply)

    user = 0
    for k in range(total):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(len(headers)):  # never two requests in flight for one user
            user = (user + 1) % len(headers)
            if user not in busy:
                break
        tasks.append(asyncio.create_task(one(k, user, scheduled)))
    await asyncio.gather(*tasks)
    return measured, statuses, slips, start + first_measured / rate


async def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    print(f"[{mode}] starting the stack ...", file=sys.stderr, flush=True)
    with Stack(nats=True, worker=mode == "worker") as stack:
        assert stack.database_url is not None
        assert stack.nats_url is not None
        db = stack.database_url
        subs = [f"lag-{secrets.token_hex(6)}" for _ in range(args.users)]
        headers = [{"Authorization": f"Bearer {mint_token(stack.jwt_secret, s)}"} for s in subs]
        http = RawHttp(stack.base_url, size=args.connections)
        tap = NatsTap(stack.nats_url)
        try:
            print(f"[{mode}] warming {args.users} users ...", file=sys.stderr, flush=True)
            await warm_users(http, headers, 16)
            wait_caught_up(db, max_position(db), relay=True)
            await tap.start()
            with Timeline(db, args.poll_ms / 1000) as timeline:
                print(
                    f"[{mode}] {args.rate:g} req/s for {args.warmup:g}+{args.duration:g} s ...",
                    file=sys.stderr,
                    flush=True,
                )
                before: CpuSample | None = None
                cpu_task = asyncio.create_task(asyncio.sleep(args.warmup))

                async def sample_cpu() -> tuple[CpuSample, CpuSample]:
                    await cpu_task
                    first = CpuSample.take(stack.server_pid, stack.worker_pid)
                    await asyncio.sleep(args.duration)
                    return first, CpuSample.take(stack.server_pid, stack.worker_pid)

                sampler = asyncio.create_task(sample_cpu())
                replies, statuses, slips, _ = await open_loop(
                    http, headers, args.rate, args.warmup, args.duration
                )
                before, after = await sampler
                rss = rss_kib(stack.server_pid)
                stack.check_alive()
                top = max((r.position for r in replies), default=0)
                catch_up = wait_caught_up(db, top, relay=True, timeout=60)
                await asyncio.sleep(0.3)
            stream = await tap.stream_messages()
        finally:
            await tap.stop()
            await http.close()
        ids = event_positions(db)
        stored = len(ids)
        by_position = {p: i for i, p in ids.items()}
        acked = [(r.done, r.position) for r in replies if 200 <= r.status < 300]
        proj, nats = lags(acked, timeline, tap.arrivals(), by_position)
        assert nats is not None
        cores = after.cores_since(before, args.duration)
        http_ms = sorted((r.done - r.sent) * 1000 for r in replies)
        return {
            "mode": mode,
            "requests": len(replies),
            "rate": len(replies) / args.duration,
            "statuses": dict(statuses),
            "http_p50_ms": percentile(http_ms, 0.5),
            "http_p99_ms": percentile(http_ms, 0.99),
            "slip_p99_ms": percentile(sorted(slips), 0.99) * 1000,
            "nats": nats.as_dict(),
            "projections": proj.as_dict(),
            "stream_messages": stream,
            "stored_events": stored,
            "catch_up_s": catch_up,
            "server_cores": cores.server,
            "worker_cores": cores.worker,
            "client_cores": cores.client,
            "pg_cores": cores.postgres,
            "others_cores": cores.others,
            "server_rss_mib": rss[0] / 1024,
        }


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        n, p = r["nats"], r["projections"]
        rows.append(
            [
                r["mode"],
                str(r["requests"]),
                f"{r['rate']:.1f}",
                " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items())),
                f"{r['http_p50_ms']:.1f} / {r['http_p99_ms']:.1f}",
                f"{n['p50_ms']:.1f} / {n['p99_ms']:.1f} / {n['max_ms']:.1f}",
                str(n["missing"]),
                f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f} / {p['max_ms']:.1f}",
                f"{r['stream_messages']} / {r['stored_events']}",
                f"{r['server_cores']:.2f}"
                + (f" + {r['worker_cores']:.2f}" if r["mode"] == "worker" else ""),
                f"{r['client_cores']:.2f}",
                f"{r['pg_cores']:.2f}",
                f"{r['others_cores']:.2f}",
                f"{r['slip_p99_ms']:.1f}",
            ]
        )
    headers = [
        "projections",
        "requests",
        "req/s",
        "statuses",
        "HTTP p50 / p99 ms",
        "NATS lag p50 / p99 / max ms",
        "not on NATS",
        "projection lag p50 / p99 / max ms",
        "stream msgs / stored events",
        "server cores (+ worker)",
        "client cores",
        "pg cores",
        "others cores",
        "send slip p99 ms",
    ]
    return "\n".join(
        [
            "## Event lag under steady load (bench/lag.py)",
            "",
            f"Machine: {machine_description()}",
            f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; `POST {PATH}` open-loop at "
            f"{args.rate:g} req/s over {args.users} users, {args.warmup:g} s warm-up then "
            f"{args.duration:g} s measured; private nats-server -js; tracking polled every "
            f"{args.poll_ms:g} ms. Lag is measured from the HTTP response to the event's "
            "arrival on a core NATS subscription / to every projection's tracking position "
            "passing the response's X-MFA-Position (negative: before the response arrived).",
            "",
            table(headers, rows),
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="inprocess,worker", help="inprocess,worker")
    parser.add_argument("--rate", type=float, default=80.0, help="requests per second")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--poll-ms", type=float, default=5.0, help="tracking poll interval")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    results = [asyncio.run(run_mode(args, mode)) for mode in args.modes.split(",")]
    print(report(args, results), flush=True)
    write_json(args.json, {"lag": results})
    bad = [
        r
        for r in results
        if any(not k.startswith("2") for k in r["statuses"])
        or r["nats"]["missing"]
        or r["projections"]["missing"]
        or r["stream_messages"] != r["stored_events"]
    ]
    if bad:
        print("WARNING: failed requests, or events missing from NATS", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
