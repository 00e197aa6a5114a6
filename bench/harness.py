"""A throw-away service stack for the HTTP benchmarks, and the small clients they share.

`Stack` creates a fresh database, optionally a private `nats-server -js` (its own port and
store folder), starts `mfa serve` (and `mfa worker` with `MFA_PROJECTIONS=worker`) and tears
all of it down again on exit, Ctrl-C or SIGTERM (`install_signal_handlers`). Children get
SIGTERM if the benchmark is SIGKILLed (`PR_SET_PDEATHSIG`); a SIGKILLed run can still leave
its database and temporary folder behind (see bench/README.md).

`RawHttp` is a minimal HTTP/1.1 client on asyncio streams (a pool of keep-alive
connections) that returns the status, the headers and the body: the benchmarks need the
`X-MFA-Position` header, and httpx costs several times more client CPU per request.

`Timeline` polls `mfa_tracking` in a thread, `NatsTap` records when each message arrives on
`mfa.events.>`, and `event_positions` maps CloudEvent ids back to log positions, so a
command's response (its `X-MFA-Position`) can be matched to the moment its event reached
NATS and the moment the projections passed it.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import msgspec
import psycopg
from common import create_database, drop_database, percentile
from totp_validate import free_port, start_mfa, stop_server, wait_ready

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
EVENT_ID_NAMESPACE = uuid.UUID("6f1c0f36-5a43-4d9e-9a55-7d0f0a1e4b21")  # public_events.py
PROJECTION_ROWS = "projection NOT LIKE '%%__rebuild' AND projection <> 'nats_relay'"


def _raise_exit(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)


def _interrupt(signum: int, _: Any) -> None:
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every `finally` clean-up runs.

    SIGINT gets a handler of our own too: `asyncio.run` then leaves it alone (it only replaces
    the default one, with a handler that merely cancels the main task, which a library can
    swallow), so Ctrl-C raises at once; `asyncio.run` then cancels every task, and their
    `with Stack(...)` blocks clean up.
    """
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    signal.signal(signal.SIGINT, _interrupt)


def mint_token(secret: str, sub: str, scope: str = "", ttl: int = 4 * 3600) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl}
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm="HS256")


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Database + optional private NATS + `mfa serve` (+ `mfa worker`), cleaned up on exit."""

    nats: bool = True
    worker: bool = False
    server_env: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None  # use (and drop at the end) this benchmark database
    start_server: bool = True

    tmp: Path = field(init=False)
    jwt_secret: str = field(init=False)
    master_key_b64: str = field(init=False)
    env: dict[str, str] = field(init=False)
    base_url: str = ""
    nats_url: str | None = None
    server: subprocess.Popen[bytes] | None = None
    worker_proc: subprocess.Popen[bytes] | None = None
    nats_proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mfa-bench-"))
        self.jwt_secret = secrets.token_urlsafe(48)
        self.master_key_b64 = base64.b64encode(secrets.token_bytes(32)).decode()
        self.env = {}

    def __enter__(self) -> Stack:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def master_key(self) -> bytes:
        return base64.b64decode(self.master_key_b64)

    @property
    def server_pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    @property
    def worker_pid(self) -> int | None:
        return self.worker_proc.pid if self.worker_proc else None

    def settings_env(self) -> dict[str, str]:
        """The MFA_* variables of this stack (for in-process runtimes on the same database)."""
        return {k: v for k, v in self.env.items() if k.startswith("MFA_")}

    def open(self) -> None:
        if self.database_url is None:
            self.database_url = create_database()
        self.env = {
            **os.environ,
            "MFA_DATABASE_URL": self.database_url,
            "MFA_JWT_SECRET": self.jwt_secret,
            "MFA_MASTER_KEY": self.master_key_b64,
            "MFA_DATA_DIR": str(self.tmp / "var"),
            "MFA_LOG_LEVEL": "WARNING",
        }
        self.env.pop("MFA_NATS_URL", None)
        if self.nats:
            self.nats_url = start_nats(self)
            self.env["MFA_NATS_URL"] = self.nats_url
        if self.worker:
            self.env["MFA_PROJECTIONS"] = "worker"
        self.env.update(self.server_env)
        if self.start_server:
            self.start()

    def start(self) -> None:
        port = free_port()
        log = self.tmp / "server.log"
        self.server = start_mfa(
            ["serve", "--host", "127.0.0.1", "--port", str(port)], self.env, log
        )
        self.base_url = f"http://127.0.0.1:{port}"
        wait_ready(self.server, self.base_url, log)
        if self.worker:
            self.worker_proc = start_mfa(["worker"], self.env, self.tmp / "worker.log")

    def logs(self) -> str:
        parts = []
        for name in ("server.log", "worker.log", "nats.log"):
            path = self.tmp / name
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {name} (tail) ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for name, proc in (("server", self.server), ("worker", self.worker_proc)):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the {name} exited ({proc.returncode})\n{self.logs()}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            stop_server(self.worker_proc)
        with contextlib.suppress(Exception):
            stop_server(self.server)
        with contextlib.suppress(Exception):
            stop_server(self.nats_proc)
        if os.environ.get("MFA_BENCH_SHOW_LOGS"):
            print(self.logs(), file=sys.stderr)
        if self.database_url is not None:
            try:
                drop_database(self.database_url)
            except Exception as exc:
                print(f"could not drop {self.database_url}: {exc}", file=sys.stderr)
            self.database_url = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_nats(stack: Stack) -> str:
    """A private `nats-server -js` on a free port with its own store folder."""
    port = free_port()
    store = stack.tmp / "nats"
    store.mkdir()
    log = stack.tmp / "nats.log"
    stack.nats_proc = _start_process(
        [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)], log
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if stack.nats_proc.poll() is not None:
            raise RuntimeError(f"nats-server exited:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return f"nats://127.0.0.1:{port}"
        time.sleep(0.1)
    raise RuntimeError("nats-server did not start")


def _start_process(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    from totp_validate import _die_with_parent

    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


# ----------------------------------------------------------------------------- HTTP client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: float  # perf_counter when the request was written
    done: float  # perf_counter when the whole response was read

    def json(self) -> Any:
        return msgspec.json.decode(self.body) if self.body else None

    @property
    def position(self) -> int:
        value = self.headers.get("x-mfa-position", "")
        return int(value) if value.isdigit() else 0


class RawHttp:
    """HTTP/1.1 over a pool of keep-alive asyncio connections (at most `size` at once)."""

    IDLE_SECONDS = 3.0  # uvicorn closes idle keep-alive connections after 5 s

    def __init__(self, base_url: str, size: int = 64) -> None:
        netloc = base_url.split("://", 1)[1]
        self._host, port = netloc.rsplit(":", 1)
        self._port = int(port)
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(size)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        payload = b"" if body is None else msgspec.json.encode(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            + (
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                if body is not None
                else "Content-Length: 0\r\n"
            )
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            + "\r\n"
        ).encode() + payload
        async with self._slots:
            for attempt in range(2):
                reader, writer = await self._connection()
                sent = time.perf_counter()
                try:
                    writer.write(head)
                    status, fields, data = await self._read(reader)
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    if attempt:
                        raise
                    continue
                done = time.perf_counter()
                if fields.get("connection", "").lower() == "close":
                    writer.close()
                else:
                    self._idle.append((done, reader, writer))
                return Reply(status, fields, data, sent, done)
        raise AssertionError("unreachable")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.perf_counter()
        while self._idle:
            used, reader, writer = self._idle.pop()
            if now - used < self.IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self._host, self._port)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append((await reader.readexactly(size + 2))[:-2])
                if size == 0:
                    break
            return status, fields, b"".join(chunks)
        return status, fields, await reader.readexactly(int(fields.get("content-length", "0")))

    async def close(self) -> None:
        for _, _, writer in self._idle:
            writer.close()
        self._idle.clear()


# ----------------------------------------------------------------------------- lag probes


class Timeline:
    """Polls the tracking table every `interval` s in a thread: when each position was seen.

    `projections` is the lowest position of the read models (what a read-your-writes read
    waits for); `relay` the NATS relay's stored position (advanced after the acks).
    """

    def __init__(self, database_url: str, interval: float = 0.005) -> None:
        self.database_url = database_url
        self.interval = interval
        self.times: list[float] = []
        self.projections: list[int] = []
        self.relay: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        query = (
            f"SELECT COALESCE(MIN(position) FILTER (WHERE {PROJECTION_ROWS}), 0), "
            "COALESCE(MAX(position) FILTER (WHERE projection = 'nats_relay'), 0) "
            "FROM mfa_tracking"
        )
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(query).fetchone()
                assert row is not None
                self.times.append(time.perf_counter())
                self.projections.append(int(row[0]))
                self.relay.append(int(row[1]))
                self._stop.wait(self.interval)

    @staticmethod
    def first_time(times: list[float], positions: list[int], position: int) -> float | None:
        """When `positions` first reached `position` (positions only grow)."""
        index = bisect.bisect_left(positions, position)
        return times[index] if index < len(times) else None

    def projections_reached(self, position: int) -> float | None:
        return self.first_time(self.times, _monotonic(self.projections), position)


def _monotonic(values: list[int]) -> list[int]:
    out, top = [], 0
    for v in values:
        top = max(top, v)
        out.append(top)
    return out


class NatsTap:
    """A core NATS subscription on `mfa.events.>` that keeps (arrival time, payload)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[tuple[float, bytes]] = []
        self._nc: Any = None

    async def start(self) -> None:
        import nats

        self._nc = await nats.connect(self.url, name="bench-tap", max_reconnect_attempts=5)

        async def on_message(msg: Any) -> None:
            self.received.append((time.perf_counter(), msg.data))

        await self._nc.subscribe(
            "mfa.events.>", cb=on_message, pending_msgs_limit=1_000_000, pending_bytes_limit=-1
        )

    async def stream_messages(self) -> int:
        """Messages stored in the MFA_EVENTS stream (0 when it does not exist)."""
        js = self._nc.jetstream()
        try:
            info = await js.stream_info("MFA_EVENTS")
        except Exception:
            return 0
        return int(info.state.messages)

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.drain()

    def arrivals(self) -> dict[str, float]:
        """CloudEvent id -> first arrival time."""
        out: dict[str, float] = {}
        for t, data in self.received:
            event_id = msgspec.json.decode(data)["id"]
            out.setdefault(event_id, t)
        return out


def event_id(originator_id: object, version: int) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{originator_id}:{version}"))


def event_positions(database_url: str, after: int = 0) -> dict[str, int]:
    """CloudEvent id (as the relay would give it) -> log position, for every stored event."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, notification_id FROM mfa_events "
            "WHERE notification_id > %s",
            (after,),
        ).fetchall()
    return {event_id(o, v): int(n) for o, v, n in rows}


def max_position(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT COALESCE(MAX(notification_id), 0) FROM mfa_events").fetchone()
    return int(row[0]) if row else 0


def wait_caught_up(database_url: str, position: int, relay: bool, timeout: float = 60) -> float:
    """Seconds until the projections (and the relay) reached `position`."""
    started = time.perf_counter()
    query = (
        f"SELECT COALESCE(MIN(position) FILTER (WHERE {PROJECTION_ROWS}), 0), "
        "COALESCE(MAX(position) FILTER (WHERE projection = 'nats_relay'), 0) FROM mfa_tracking"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(query).fetchone()
            assert row is not None
            if int(row[0]) >= position and (not relay or int(row[1]) >= position):
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise RuntimeError(
                    f"not caught up with {position} after {timeout:.0f} s: "
                    f"projections {row[0]}, relay {row[1]}"
                )
            time.sleep(0.05)


@dataclass
class LagStats:
    """Lags in seconds from a command's response until its event was visible."""

    values: list[float]
    missing: int = 0

    def p(self, fraction: float) -> float:
        return percentile(sorted(self.values), fraction)

    def summary_ms(self) -> str:
        if not self.values:
            return "-"
        return (
            f"{self.p(0.5) * 1000:.1f} / {self.p(0.99) * 1000:.1f} / {max(self.values) * 1000:.1f}"
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": len(self.values),
            "missing": self.missing,
            "p50_ms": self.p(0.5) * 1000,
            "p99_ms": self.p(0.99) * 1000,
            "max_ms": (max(self.values) if self.values else 0.0) * 1000,
        }


def lags(
    acked: Iterable[tuple[float, int]],
    timeline: Timeline,
    nats_arrivals: dict[str, float] | None,
    positions_to_ids: dict[int, str] | None,
) -> tuple[LagStats, LagStats | None]:
    """Projection and NATS lag of each (response time, position) acknowledged write."""
    proj = LagStats([])
    nats = LagStats([]) if nats_arrivals is not None else None
    monotonic = _monotonic(timeline.projections)
    for done, position in acked:
        if position <= 0:
            continue
        reached = Timeline.first_time(timeline.times, monotonic, position)
        if reached is None:
            proj.missing += 1
        else:
            proj.values.append(reached - done)
        if nats is not None and positions_to_ids is not None and nats_arrivals is not None:
            event = positions_to_ids.get(position)
            if event is None:
                continue
            arrived = nats_arrivals.get(event)
            if arrived is None:
                nats.missing += 1
            else:
                nats.values.append(arrived - done)
    return proj, nats


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_bytes(msgspec.json.encode(data))
