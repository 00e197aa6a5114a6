"""Benchmark: POST /mfa/totp/validate against the real service over HTTP, on PostgreSQL.

What it does, in order:

1. creates a fresh PostgreSQL database `mfa_bench_<random>` (dropped at the end);
2. starts `mfa serve` as a subprocess on a free port with random MFA_JWT_SECRET and
   MFA_MASTER_KEY (default settings otherwise: MFA_DB_POOL_SIZE=10, projections in-process);
3. enrols `--users` users over HTTP (POST /mfa/totp/setup, then POST /mfa/totp/verify with
   the pyotp code), `--enrol-concurrency` at a time;
4. for each concurrency level: `--warmup` seconds of unrecorded load, then `--duration`
   seconds of recorded load on POST /mfa/totp/validate; reports req/s, latency percentiles,
   every status code, and the CPU each party used.

The client shares the machine with the server. Enrolment uses httpx.AsyncClient; the measured
validate requests use, by default, a bare asyncio HTTP/1.1 client (one keep-alive connection
per concurrent worker) because httpx costs several times more client CPU per request, which
is taken from the server on a 2-core machine (`--client httpx` to compare).

Every recorded request is meant to be a 200. The service accepts each time step at most once
per device and within +-1 step of its clock, so the client hands every request a (user, step)
pair that was never used, in increasing step order per user, never two requests for one user
at a time, and never a step that could fall out of the window before the server checks it
(`SAFETY_SECONDS`). A non-200 therefore means the benchmark or the service is wrong.

Run by hand: `.venv/bin/python bench/totp_validate.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import heapq
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pyotp
from common import (
    ROOT,
    CpuSample,
    create_database,
    drop_database,
    largest_rss_kib,
    machine_description,
    percentile,
    table,
)

PERIOD = 30  # the service's TOTP period (domain.totp.DEFAULT_PERIOD)
SAFETY_SECONDS = 3.0  # never send the code of step s-1 when step s ends within this time
PR_SET_PDEATHSIG = 1


def step_at(t: float) -> int:
    return int(t // PERIOD)


@dataclass
class User:
    sub: str
    headers: dict[str, str]
    totp: pyotp.TOTP | None = None
    last_step: int = 0  # the newest step the service accepted (or may have accepted)


@dataclass
class CodePool:
    """Hands out (user, step) pairs the service must accept, one request per user at a time.

    A user whose last used step is L can next send step L+1 once the server's window
    (s-1, s, s+1) reaches it, i.e. from time L*PERIOD on; a heap orders users by that time.
    """

    users: list[User]
    heap: list[tuple[float, int]] = field(default_factory=list)
    starved_seconds: float = 0.0
    burned_steps: int = 0

    def __post_init__(self) -> None:
        self.heap = [(u.last_step * PERIOD, i) for i, u in enumerate(self.users)]
        heapq.heapify(self.heap)

    async def take(self, deadline: float) -> tuple[int, int] | None:
        """A user index and the step to send; None once `deadline` (perf_counter) passes."""
        while True:
            now = time.time()
            if self.heap and self.heap[0][0] <= now:
                _, index = heapq.heappop(self.heap)
                user = self.users[index]
                assert user.totp is not None
                step = max(user.last_step + 1, step_at(now + SAFETY_SECONDS) - 1)
                assert step <= step_at(now) + 1, "the heap's ready time guarantees this"
                code = user.totp.generate_otp(step)
                if code in (user.totp.generate_otp(step - 1), user.totp.generate_otp(step - 2)):
                    # The service matches the lowest step with this code, which may be spent.
                    self.burned_steps += 1
                    self.give_back(index, step)
                    continue
                return index, step
            if time.perf_counter() >= deadline:
                return None
            wait = (self.heap[0][0] - now) if self.heap else 0.01
            started = time.perf_counter()
            await asyncio.sleep(min(max(wait, 0.001), 0.05))
            self.starved_seconds += time.perf_counter() - started

    def give_back(self, index: int, used_step: int) -> None:
        self.users[index].last_step = used_step
        heapq.heappush(self.heap, (used_step * PERIOD, index))


@dataclass
class LevelResult:
    concurrency: int
    seconds: float
    latencies: list[float]
    statuses: Counter[str]
    warmup_statuses: Counter[str]
    starved_seconds: float
    cores: CpuSample
    lag_after: int
    catch_up_seconds: float
    rss_kib: int = 0  # the server's largest VmRSS sampled while measuring
    hwm_kib: int = 0  # the server's VmHWM (peak RSS since it started) after the level


class HttpxClient:
    """httpx.AsyncClient with a connection pool sized to the concurrency."""

    name = "httpx.AsyncClient"

    def __init__(self, base_url: str, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60)

    async def post(self, slot: int, path: str, body: bytes, headers: dict[str, str]) -> int:
        response = await self._client.post(
            path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()


class RawClient:
    """One keep-alive HTTP/1.1 connection per worker on bare asyncio streams.

    Far less client CPU per request than httpx, so more of the 2 cores go to the server:
    use it to see how much the client's own cost weighs on the figures.
    """

    name = "raw asyncio HTTP/1.1"

    def __init__(self, base_url: str, concurrency: int) -> None:
        netloc = base_url.split("://", 1)[1]
        self._host, port = netloc.rsplit(":", 1)
        self._port = int(port)
        self._streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [
            None
        ] * concurrency

    async def post(self, slot: int, path: str, body: bytes, headers: dict[str, str]) -> int:
        for attempt in range(2):
            stream = self._streams[slot]
            if stream is None:
                stream = await asyncio.open_connection(self._host, self._port)
                self._streams[slot] = stream
            reader, writer = stream
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + "\r\n"
            )
            try:
                writer.write(head.encode() + body)
                status, close = await self._read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                self._streams[slot] = None
                if attempt:
                    raise
                continue
            if close:
                writer.close()
                self._streams[slot] = None
            return status
        raise AssertionError("unreachable")

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip().lower()
        if fields.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(int(fields.get("content-length", "0")))
        return status, fields.get("connection") == "close"

    async def close(self) -> None:
        for stream in self._streams:
            if stream is not None:
                stream[1].close()


CLIENTS: dict[str, type[HttpxClient] | type[RawClient]] = {"httpx": HttpxClient, "raw": RawClient}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_mfa(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `mfa <args>` (the installed CLI beside this interpreter)."""
    mfa = Path(sys.executable).parent / "mfa"
    if not mfa.exists():
        mfa = ROOT / ".venv" / "bin" / "mfa"
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(mfa), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # single-threaded here, so preexec_fn is safe
        )


def stop_server(server: subprocess.Popen[bytes] | None) -> None:
    if server is None or server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def wait_ready(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not become ready:\n{log_path.read_text()}")


def projection_lag(database_url: str) -> int:
    """How many events the in-process projections are behind the event log."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT COALESCE(MAX(notification_id), 0) FROM mfa_events) - "
            "(SELECT COALESCE(MIN(position), 0) FROM mfa_tracking)"
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for_projections(database_url: str, timeout: float = 120) -> float:
    """Seconds until the read side caught up (so one level's backlog does not slow the next)."""
    started = time.perf_counter()
    while projection_lag(database_url) > 0:
        if time.perf_counter() - started > timeout:
            raise RuntimeError("the projections did not catch up")
        time.sleep(0.1)
    return time.perf_counter() - started


def mint_token(secret: str, sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 4 * 3600}, secret, algorithm="HS256")


async def enrol(
    base_url: str, users: list[User], concurrency: int
) -> tuple[float, dict[str, list[float]], Counter[str]]:
    """Set up and verify one device per user; verification uses the code of step s-1 when
    it is safe, so that the user can still send two codes (s, s+1) in this window."""
    latencies: dict[str, list[float]] = {"setup": [], "verify": []}
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[User] = asyncio.Queue()
    for user in users:
        queue.put_nowait(user)

    async def one(client: httpx.AsyncClient, user: User) -> None:
        t0 = time.perf_counter()
        setup = await client.post("/mfa/totp/setup", json={"name": "bench"}, headers=user.headers)
        latencies["setup"].append(time.perf_counter() - t0)
        statuses[f"setup {setup.status_code}"] += 1
        if setup.status_code != 201:
            raise RuntimeError(f"setup failed: {setup.status_code} {setup.text}")
        body = setup.json()
        totp = pyotp.TOTP(body["secret"])
        for _ in range(3):
            now = time.time()
            step = (
                step_at(now) - 1 if step_at(now + SAFETY_SECONDS) == step_at(now) else step_at(now)
            )
            t0 = time.perf_counter()
            verify = await client.post(
                "/mfa/totp/verify",
                json={"code": totp.generate_otp(step), "device_id": body["device_id"]},
                headers=user.headers,
            )
            latencies["verify"].append(time.perf_counter() - t0)
            statuses[f"verify {verify.status_code}"] += 1
            if verify.status_code == 200:
                user.totp, user.last_step = totp, step
                return
        raise RuntimeError(f"verify failed: {verify.status_code} {verify.text}")

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            await one(client, queue.get_nowait())

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


async def run_level(
    client_kind: str,
    base_url: str,
    pool: CodePool,
    concurrency: int,
    warmup: float,
    duration: float,
    server_pid: int,
    worker_pid: int | None,
) -> tuple[list[float], Counter[str], Counter[str], float, CpuSample, float, int]:
    """`warmup` s of unrecorded load, then `duration` s recorded (requests started in it)."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    warmup_statuses: Counter[str] = Counter()
    starved_before = pool.starved_seconds
    begin = time.perf_counter()
    measure_from = begin + warmup
    measure_until = measure_from + duration
    last_done = measure_from
    samples: list[CpuSample] = []

    rss_seen = [0]

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        samples.append(CpuSample.take(server_pid, worker_pid))
        while time.perf_counter() < measure_until:
            rss_seen[0] = max(rss_seen[0], largest_rss_kib(server_pid)[0])
            await asyncio.sleep(max(0.0, min(0.5, measure_until - time.perf_counter())))
        samples.append(CpuSample.take(server_pid, worker_pid))

    async def worker(client: HttpxClient | RawClient, slot: int) -> None:
        nonlocal last_done
        while True:
            taken = await pool.take(measure_until)
            if taken is None:
                return
            index, step = taken
            user = pool.users[index]
            assert user.totp is not None
            started = time.perf_counter()
            if started >= measure_until:
                pool.give_back(index, user.last_step)  # not sent: the step stays unused
                return
            body = b'{"code":"%s"}' % user.totp.generate_otp(step).encode()
            try:
                status = str(await client.post(slot, "/mfa/totp/validate", body, user.headers))
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
                status = type(exc).__name__
            done = time.perf_counter()
            pool.give_back(index, step)
            if started >= measure_from:
                latencies.append(done - started)
                statuses[status] += 1
                last_done = max(last_done, done)
            else:
                warmup_statuses[status] += 1

    client = CLIENTS[client_kind](base_url, concurrency)
    try:
        await asyncio.gather(sampler(), *(worker(client, i) for i in range(concurrency)))
    finally:
        await client.close()
    elapsed = max(last_done - measure_from, duration)
    cores = samples[1].cores_since(samples[0], duration)
    starved = pool.starved_seconds - starved_before
    return latencies, statuses, warmup_statuses, starved, cores, elapsed, rss_seen[0]


def format_statuses(statuses: Counter[str]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())) or "-"


def report(
    args: argparse.Namespace,
    enrol_seconds: float,
    enrol_latencies: dict[str, list[float]],
    enrol_statuses: Counter[str],
    results: list[LevelResult],
    burned: int,
) -> str:
    lines = [
        "## TOTP validate over HTTP (bench/totp_validate.py)",
        "",
        f"Machine: {machine_description()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; server: `mfa serve` ("
        + "default settings (MFA_WORKERS=1, MFA_DB_POOL_SIZE=10)"
        + "".join(f" but {item}" for item in args.server_env)
        + ", projections "
        + ("in a separate `mfa worker` process" if args.worker else "in-process")
        + (", NATS relay on (private nats-server -js)" if args.nats else ", no NATS")
        + "); validate client: "
        f"{CLIENTS[args.client].name} in one asyncio process on the same machine.",
        "",
        f"Enrolment: {args.users} users (setup + verify), {args.enrol_concurrency} concurrent, "
        f"{enrol_seconds:.1f} s = {args.users / enrol_seconds:.0f} users/s; "
        f"setup p50 {percentile(sorted(enrol_latencies['setup']), 0.5) * 1000:.1f} ms "
        f"p99 {percentile(sorted(enrol_latencies['setup']), 0.99) * 1000:.1f} ms; "
        f"verify p50 {percentile(sorted(enrol_latencies['verify']), 0.5) * 1000:.1f} ms "
        f"p99 {percentile(sorted(enrol_latencies['verify']), 0.99) * 1000:.1f} ms; "
        f"statuses {format_statuses(enrol_statuses)}",
        "",
        f"Validate: {args.warmup:g} s warm-up then {args.duration:g} s measured per level.",
        "",
    ]
    rows = []
    for r in results:
        lat = sorted(r.latencies)
        ok = r.statuses.get("200", 0)
        rows.append(
            [
                str(r.concurrency),
                str(len(lat)),
                f"{len(lat) / r.seconds:.1f}",
                f"{percentile(lat, 0.5) * 1000:.1f}",
                f"{percentile(lat, 0.9) * 1000:.1f}",
                f"{percentile(lat, 0.99) * 1000:.1f}",
                f"{(lat[-1] if lat else 0) * 1000:.1f}",
                str(ok),
                format_statuses(Counter({k: v for k, v in r.statuses.items() if k != "200"})),
                format_statuses(r.warmup_statuses),
                f"{r.starved_seconds:.2f}",
                f"{r.cores.server:.2f}" + (f" + {r.cores.worker:.2f}" if args.worker else ""),
                f"{r.cores.client:.2f}",
                f"{r.cores.postgres:.2f}",
                f"{r.cores.machine:.2f}",
                f"{r.cores.others:.2f}",
                f"{r.lag_after} / {r.catch_up_seconds:.1f} s",
                f"{r.rss_kib / 1024:.0f} / {r.hwm_kib / 1024:.0f}",
            ]
        )
    headers = [
        "conc",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "200",
        "non-200",
        "warm-up statuses",
        "starved s",
        "server cores" + (" (+ worker)" if args.worker else ""),
        "client cores",
        "pg cores",
        "machine cores",
        "others cores",
        "read-side lag after",
        "server RSS / peak MiB",
    ]
    lines.append(table(headers, rows))
    lines += [
        "",
        "conc: concurrent requests (connections); starved s: worker-seconds spent waiting for a "
        "usable (user, step) pair (must be ~0, else add --users); cores: average CPU cores used "
        "while measuring by the server process, this client, all postgres processes (every "
        "database on the server) and the whole machine; others = machine minus those (other "
        "people's processes on this shared machine); read-side lag: events the "
        "projections were behind when the level ended, and the time they took to "
        "catch up (before the next level started); server RSS: the largest VmRSS of `mfa serve` "
        "sampled every 0.5 s while measuring / its VmHWM (peak since start) after the level.",
    ]
    if burned:
        lines.append(f"Steps skipped because their code equalled an earlier step's: {burned}.")
    bad = sum(sum(v for k, v in r.statuses.items() if k != "200") for r in results)
    if bad:
        lines.append(f"WARNING: {bad} measured requests were not 200: the figures are suspect.")
    starved = max((r.starved_seconds for r in results), default=0.0)
    if starved > 0.5:
        lines.append(
            f"WARNING: workers waited {starved:.1f} s for unused codes: the client, not the "
            "service, limited the rate; run again with more --users."
        )
    return "\n".join(lines)


async def bench(
    args: argparse.Namespace,
    base_url: str,
    jwt_secret: str,
    db_url: str,
    pid: int,
    worker_pid: int | None,
) -> tuple[str, list[LevelResult]]:
    users = []
    for _ in range(args.users):
        sub = f"bench-{secrets.token_hex(8)}"
        users.append(User(sub, {"Authorization": f"Bearer {mint_token(jwt_secret, sub)}"}))
    print(f"enrolling {len(users)} users ...", file=sys.stderr, flush=True)
    enrol_seconds, enrol_latencies, enrol_statuses = await enrol(
        base_url, users, args.enrol_concurrency
    )
    print(f"  done in {enrol_seconds:.1f} s", file=sys.stderr, flush=True)
    wait_for_projections(db_url)
    pool = CodePool(users)
    results = []
    for concurrency in args.levels:
        print(f"validate at concurrency {concurrency} ...", file=sys.stderr, flush=True)
        lat, statuses, warm, starved, cores, seconds, rss = await run_level(
            args.client, base_url, pool, concurrency, args.warmup, args.duration, pid, worker_pid
        )
        lag = projection_lag(db_url)
        catch_up = wait_for_projections(db_url)
        results.append(
            LevelResult(
                concurrency,
                seconds,
                lat,
                statuses,
                warm,
                starved,
                cores,
                lag,
                catch_up,
                rss,
                largest_rss_kib(pid)[1],
            )
        )
        print(
            f"  {len(lat) / seconds:.1f} req/s, statuses {format_statuses(statuses)}",
            file=sys.stderr,
            flush=True,
        )
    text = report(args, enrol_seconds, enrol_latencies, enrol_statuses, results, pool.burned_steps)
    return text, results


def summary(results: list[LevelResult]) -> list[dict[str, Any]]:
    """The figures of each level, for bench/run.py's table."""
    out = []
    for r in results:
        lat = sorted(r.latencies)
        out.append(
            {
                "concurrency": r.concurrency,
                "requests": len(lat),
                "rate": len(lat) / r.seconds,
                "p50_ms": percentile(lat, 0.5) * 1000,
                "p99_ms": percentile(lat, 0.99) * 1000,
                "non_200": sum(v for k, v in r.statuses.items() if k != "200"),
                "server_cores": r.cores.server,
                "others_cores": r.cores.others,
                "rss_mib": r.rss_kib / 1024,
                "hwm_mib": r.hwm_kib / 1024,
            }
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5000, help="users to enrol (default 5000)")
    parser.add_argument("--enrol-concurrency", type=int, default=16)
    parser.add_argument(
        "--levels",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1, 8, 32],
        help="comma-separated concurrency levels (default 1,8,32)",
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="raw",
        help="validate load client: a bare asyncio HTTP/1.1 client (default; ~0.2 ms CPU per "
        "request) or httpx.AsyncClient (~1.5-3.5 ms CPU per request, taken from the server)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (repeatable), e.g. MFA_DB_POOL_SIZE=4",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run the projections in a separate `mfa worker` (MFA_PROJECTIONS=worker)",
    )
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per level")
    parser.add_argument(
        "--nats",
        action="store_true",
        help="start a private nats-server -js and set MFA_NATS_URL (the relay runs too)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def _raise_exit(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    text, results, code = run(args)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"validate": summary(results)}))
    return code


def run(args: argparse.Namespace) -> tuple[str, list[LevelResult], int]:
    """The whole benchmark: the report, each level's results and the exit code."""
    tmp = Path(tempfile.mkdtemp(prefix="mfa-bench-"))
    log_path = tmp / "server.log"
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    db_url: str | None = None
    nats_stack: Any = None
    try:
        db_url = create_database()
        port = free_port()
        jwt_secret = secrets.token_urlsafe(48)
        env = {
            **os.environ,
            "MFA_DATABASE_URL": db_url,
            "MFA_JWT_SECRET": jwt_secret,
            "MFA_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "MFA_DATA_DIR": str(tmp / "var"),
            "MFA_LOG_LEVEL": "WARNING",
        }
        env.pop("MFA_NATS_URL", None)
        if args.nats:
            from harness import Stack, start_nats  # harness imports this module

            nats_stack = Stack(nats=True, database_url=None, start_server=False)
            env["MFA_NATS_URL"] = start_nats(nats_stack)
        env.update(item.split("=", 1) for item in args.server_env)
        if args.worker:
            env["MFA_PROJECTIONS"] = "worker"
        server = start_mfa(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log_path)
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(server, base_url, log_path)
        if args.worker:
            worker = start_mfa(["worker"], env, tmp / "worker.log")
        text, results = asyncio.run(
            bench(args, base_url, jwt_secret, db_url, server.pid, worker and worker.pid)
        )
        if server.poll() is not None:
            print(f"the server exited early:\n{log_path.read_text()}", file=sys.stderr)
            return text, results, 1
        return text, results, 1 if "WARNING:" in text else 0
    finally:
        stop_server(worker)
        stop_server(server)
        if nats_stack is not None:
            nats_stack.close()
        if log_path.exists() and log_path.stat().st_size:
            tail = log_path.read_text(errors="replace")[-4000:]
            print(f"--- server log (tail) ---\n{tail}", file=sys.stderr)
        if db_url is not None:
            drop_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
