"""A/B of two (or more) versions of `src/`, interleaved on one database, at concurrency 32.

On this shared machine the speed of the CPU drifts by tens of per cent within minutes, so two
benchmark runs taken one after the other cannot tell a 20 % change from the drift. This one
enrols `--users` users once, then for each of `--rounds` rounds restarts `mfa serve` on each
variant in turn (`PYTHONPATH=<variant>` puts that tree before the installed one) and
measures the same requests on each: `GET /mfa/backup-codes/count` (a token and one
read-model query) and `POST /mfa/totp/validate` (fresh codes, in increasing time steps per
user). It prints every measurement, then the median per variant: req/s and the server's CPU
milliseconds per request.

The server restarts before each measurement, so the aggregate cache and the data-key cache
start cold: each validate also loads its user's events and data key. These are not the
figures of `ceiling.py` (warm caches), only a fair comparison between variants.

Make a variant with, for example:
    mkdir -p /tmp/base && git archive HEAD src | tar -x -C /tmp/base
    .venv/bin/python bench/ab.py --variants /tmp/base/src,src
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

from common import CpuSample, machine_description
from harness import (
    RawHttp,
    Stack,
    install_signal_handlers,
    max_position,
    mint_token,
    wait_caught_up,
)
from overhead import Codes, closed_loop, enrol
from totp_validate import stop_server

CONCURRENCY = 32


async def run(args: argparse.Namespace) -> str:
    variants = [str(Path(v).resolve()) for v in args.variants.split(",")]
    cases = args.cases.split(",")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    lines = []
    with Stack(nats=False, server_env={"PYTHONPATH": variants[0]}) as stack:
        http = RawHttp(stack.base_url, size=CONCURRENCY)
        print(f"enrolling {args.users} users ...", file=sys.stderr)
        codes = Codes(await enrol(http, stack.jwt_secret, args.users))
        assert stack.database_url is not None
        wait_caught_up(stack.database_url, max_position(stack.database_url), relay=False)
        reader = {"Authorization": f"Bearer {mint_token(stack.jwt_secret, 'overhead-0')}"}
        for round_ in range(args.rounds):
            for variant in variants:
                await http.close()
                stop_server(stack.server)
                stack.env["PYTHONPATH"] = variant
                stack.start()
                http = RawHttp(stack.base_url, size=CONCURRENCY)
                for case in cases:
                    if case == "count":

                        async def send(http: RawHttp = http) -> int:
                            path = "/mfa/backup-codes/count"
                            return int((await http.request("GET", path, None, reader)).status)

                    else:
                        send = codes.sender(http)
                    await closed_loop(args.warmup, CONCURRENCY, send)
                    before = CpuSample.take(stack.server_pid)
                    count, statuses, seconds = await closed_loop(args.duration, CONCURRENCY, send)
                    used = CpuSample.take(stack.server_pid).cores_since(before, seconds)
                    figures = (count / seconds, 1000 * used.server * seconds / count)
                    results.setdefault((case, variant), []).append(figures)
                    line = (
                        f"round {round_} {case:8} {variant}: {figures[0]:.0f} req/s, server "
                        f"{figures[1]:.3f} ms/req, others {used.others:.2f} cores, "
                        f"statuses {dict(statuses)}"
                    )
                    print(line, file=sys.stderr)
                    lines.append(f"    {line}")
    rows = [
        f"| {case} | `{variant}` | {statistics.median(r for r, _ in runs):.0f} | "
        f"{statistics.median(ms for _, ms in runs):.3f} |"
        for (case, variant), runs in sorted(results.items())
    ]
    return "\n".join(
        [
            "## A/B of src trees (bench/ab.py)",
            "",
            machine_description(),
            f"Concurrency {CONCURRENCY}, {args.warmup} s warm-up then {args.duration} s per "
            f"measurement, {args.rounds} rounds, {args.users} users, server restarted before "
            "each variant (cold caches).",
            "",
            *lines,
            "",
            "| request | variant | median req/s | median server ms/req |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", required=True, help="comma-separated src folders")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--cases", default="count,validate", help="count and/or validate")
    args = parser.parse_args()
    install_signal_handlers()
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
