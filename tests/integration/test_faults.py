"""Fault injection against the real services: the `mfa serve` process under steady load while
PostgreSQL crashes and comes back (requests, /ready, projections, the NATS relay), and while
the service itself is SIGKILLed.

NATS outages and a relay SIGKILLed mid-stream are covered in tests/integration/test_nats_relay.py.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import psycopg
import pyotp
import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError

from commands.app import MfaApplication
from infra import event_store
from infra.event_store import event_store_env
from projections.public_events import event_id
from tests.conftest import create_pg_database, drop_pg_database, free_port, new_user
from tests.integration.nats_support import PrivateNats, stream_messages
from tests.integration.pg_support import PrivatePostgres

MFA = Path(sys.executable).parent / "mfa"
JWT_SECRET = "fault-test-secret-" + "f" * 32
pytestmark = pytest.mark.postgres

OUTAGE_SECONDS = 6.0  # how long PostgreSQL stays down
MAX_OUTAGE_LATENCY = 5.0  # no request may take longer than this while it is down
RECOVERY_BOUND = 15.0  # the same process serves again within this after the restart
CLIENT_TIMEOUT = 20.0  # a request still unanswered by then counts as a hang


class Service:
    """`mfa serve` as a subprocess on a free port, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Service:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(MFA), "serve", "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"mfa serve exited:\n{self.log.read_text()}"
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"mfa serve not ready:\n{self.log.read_text()}"
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL: no shutdown hook runs, nothing is flushed by the service."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def client(self, user: str) -> httpx.Client:
        now = int(time.time())
        token = jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, JWT_SECRET, "HS256")
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=CLIENT_TIMEOUT,
        )


def service_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": database_url,
        "MFA_JWT_SECRET": JWT_SECRET,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "MFA_DB_POOL_SIZE": "6",
        "MFA_LOG_LEVEL": "WARNING",
    }


@dataclass
class Call:
    """One request of the load: when, what, and how it was answered."""

    op: str
    started: float
    ended: float
    status: int | None = None
    media_type: str = ""
    code: str | None = None
    retry_after: str | None = None
    text: str = ""
    error: str | None = None
    user: str | None = None
    position: int | None = None
    body: Any = None

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def clean_unavailable(self) -> bool:
        return (
            self.status == 503
            and self.media_type == "application/problem+json"
            and self.code == "unavailable"
            and self.retry_after is not None
            and "Traceback" not in self.text
        )


class Load:
    """Worker threads sending requests in a loop, each answer recorded as a Call."""

    def __init__(self, workers: list[Callable[[Callable[..., Call]], None]]) -> None:
        self.calls: list[Call] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in workers]

    def _run(self, worker: Callable[[Callable[..., Call]], None]) -> None:
        while not self.stopping.is_set():
            worker(self.call)

    def call(self, op: str, send: Callable[[], httpx.Response], user: str | None = None) -> Call:
        started = time.monotonic()
        try:
            response = send()
        except httpx.HTTPError as exc:
            call = Call(op, started, time.monotonic(), error=f"{type(exc).__name__}: {exc}")
        else:
            media_type = response.headers.get("content-type", "").split(";")[0]
            body: Any = response.json() if "json" in media_type and response.content else {}
            call = Call(
                op,
                started,
                time.monotonic(),
                status=response.status_code,
                media_type=media_type,
                code=body.get("code") if isinstance(body, dict) else None,
                retry_after=response.headers.get("retry-after"),
                text=response.text[:2000],
                user=user,
                position=int(response.headers.get("X-MFA-Position", "0")) or None,
                body=body,
            )
        with self._lock:
            self.calls.append(call)
        return call

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)


class Authenticator:
    """A user's enrolled TOTP app: each time step is used at most once (no replays)."""

    def __init__(self, secret: str, used_step: int) -> None:
        self.totp = pyotp.TOTP(secret)
        self.used_step = used_step

    def next_code(self) -> tuple[int, str] | None:
        """A code the server accepts now (one step of drift allowed), not used before."""
        now = int(time.time() // 30)
        for step in (now - 1, now, now + 1):
            if step > self.used_step:
                return step, self.totp.at(step * 30)
        return None


def enrol(service: Service, user: str) -> Authenticator:
    with service.client(user) as client:
        setup = client.post("/mfa/totp/setup", json={"name": "phone"})
        assert setup.status_code == 201, setup.text
        body = setup.json()
        step = int(time.time() // 30)
        verified = client.post(
            "/mfa/totp/verify",
            json={"device_id": body["device_id"], "code": pyotp.TOTP(body["secret"]).at(step * 30)},
        )
        assert verified.status_code == 200, verified.text
    return Authenticator(body["secret"], step)


def steady_worker(
    service: Service, user: str, app: Authenticator, first: int
) -> Callable[..., None]:
    """One thread's mix, in turn from `first` (so threads differ): TOTP set-up for a new user,
    backup codes, a TOTP login (each time step once: no replays), a read of the devices."""
    client = service.client(user)
    turn = [first]

    def set_up(call: Callable[..., Call]) -> None:
        with service.client(new_user()) as fresh:
            call("totp_setup", lambda: fresh.post("/mfa/totp/setup", json={"name": "phone"}))

    def log_in(call: Callable[..., Call]) -> None:
        step_code = app.next_code()
        if step_code is not None:
            code = {"code": step_code[1]}
            done = call("totp_validate", lambda: client.post("/mfa/totp/validate", json=code))
            if done.status in (200, 403):
                app.used_step = step_code[0]

    ops: list[Callable[[Callable[..., Call]], Any]] = [
        set_up,
        lambda call: call("backup_generate", lambda: client.post("/mfa/backup-codes/generate")),
        log_in,
        lambda call: call("devices_read", lambda: client.get("/mfa/totp/devices")),
    ]

    def work(call: Callable[..., Call]) -> None:
        ops[turn[0] % len(ops)](call)
        turn[0] += 1

    return work


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server.start()
    finally:
        server.destroy()


def _timed_get(url: str) -> tuple[int | None, float]:
    """The status (None: no answer in time) and how long it took."""
    started = time.monotonic()
    try:
        status: int | None = httpx.get(url, timeout=CLIENT_TIMEOUT).status_code
    except httpx.TimeoutException:
        status = None
    return status, time.monotonic() - started


WRITES = ("totp_setup", "backup_generate")


def _recovered(calls: list[Call], restarting: float, up: float) -> tuple[float, float] | None:
    """When, after PostgreSQL was `up` again, the first write was acknowledged and the last
    503 came, once the load has been served since the later of the two: ten requests answered
    and both kinds of write among them. None until then."""
    after = [c for c in calls if c.started >= restarting]
    first_write = min((c.ended for c in after if c.ok and c.op in WRITES), default=None)
    if first_write is None:
        return None
    last_failure = max((c.ended for c in after if not c.ok and c.status == 503), default=up)
    served = [c for c in after if c.ok and c.started > max(first_write, last_failure)]
    if len(served) < 10 or not {c.op for c in served} >= set(WRITES):
        return None
    return first_write - up, last_failure - up


def test_postgres_crashing_under_load_gives_fast_clean_503s_and_the_same_process_recovers(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    service = Service(service_env(tmp_path, private_postgres.create_database()), tmp_path / "log")
    service.start()
    pid = service.pid
    load: Load | None = None
    try:
        users = [new_user() for _ in range(8)]
        apps = [enrol(service, user) for user in users]
        workers = [steady_worker(service, users[i], apps[i], i) for i in range(len(users))]
        load = Load(workers).start()
        time.sleep(2.0)

        stopping = time.monotonic()
        private_postgres.stop("immediate")
        down = time.monotonic()
        time.sleep(0.5)
        # Besides the load, one request of each kind (and /ready) side by side, while down.
        probes = Load([])
        with service.client(users[0]) as client, service.client(new_user()) as fresh:
            code = {"code": (apps[0].next_code() or (0, "123456"))[1]}
            sends: dict[str, Callable[[], httpx.Response]] = {
                "totp_setup": lambda: fresh.post("/mfa/totp/setup"),
                "backup_generate": lambda: client.post("/mfa/backup-codes/generate"),
                "totp_validate": lambda: client.post("/mfa/totp/validate", json=code),
                "devices_read": lambda: client.get("/mfa/totp/devices"),
                "backup_count": lambda: client.get("/mfa/backup-codes/count"),
            }
            with ThreadPoolExecutor(max_workers=len(sends) + 1) as pool:
                ready_probe = pool.submit(_timed_get, service.url + "/ready")
                for op, send in sends.items():
                    pool.submit(probes.call, op, send)
            ready_down = [ready_probe.result(), _timed_get(service.url + "/ready")]
        time.sleep(max(0.0, down + OUTAGE_SECONDS - time.monotonic()))

        restarting = time.monotonic()
        private_postgres.start()
        up = time.monotonic()
        # Keep the load on until it has been served after recovering (or the bound passed).
        deadline = up + RECOVERY_BOUND + 5
        while time.monotonic() < deadline and not _recovered(load.snapshot(), restarting, up):
            time.sleep(0.2)
        load.stop()
        ready_up = _timed_get(service.url + "/ready")

        # The projections resumed too: a write after the outage is visible to its reader.
        with service.client(new_user()) as client:
            created = client.post("/mfa/totp/setup", json={"name": "after"})
            assert created.status_code == 201, created.text
            listed = client.get("/mfa/totp/devices").json()["items"]
            assert [d["device_id"] for d in listed] == [created.json()["device_id"]]
    finally:
        if load is not None:
            load.stop()
        service.stop()

    calls = load.calls
    log = service.log.read_text()
    assert service.pid == pid
    assert not [c for c in calls if c.error], "hung or failed requests"
    assert not [c for c in calls if c.status is not None and c.status >= 500 and c.status != 503]
    assert not [c for c in calls if c.status == 503 and not c.clean_unavailable]

    before = [c for c in calls if c.ended < stopping]
    assert len([c for c in before if c.ok]) >= 10, "the load did not run before the outage"
    assert not [c for c in before if c.status == 503]

    during = [c for c in calls if c.started >= down and c.ended <= restarting]
    assert len(during) >= 20, "too few requests during the outage to judge"
    assert all(c.clean_unavailable for c in during), {(c.op, c.status) for c in during}
    assert sorted(c.op for c in probes.calls) == sorted(sends)
    assert all(c.clean_unavailable for c in probes.calls), [(c.op, c.status) for c in probes.calls]
    assert max(c.latency for c in probes.calls) < MAX_OUTAGE_LATENCY
    in_outage = [c for c in calls if stopping <= c.started <= restarting]
    max_latency = max(c.latency for c in in_outage)
    assert max_latency < MAX_OUTAGE_LATENCY, f"a request took {max_latency:.2f} s while down"
    # Once each pool has waited out its timeout (3 s) in vain, requests no longer do.
    known = [c for c in during if c.started >= down + 3.5]
    assert len(known) >= 8, "too few requests late in the outage to judge"
    known_latency = max(c.latency for c in known)
    assert known_latency < 1.5, f"a request took {known_latency:.2f} s late in the outage"

    assert [status for status, _ in ready_down] == [503, 503]
    assert max(seconds for _, seconds in ready_down) < MAX_OUTAGE_LATENCY

    recovery = _recovered(calls, restarting, up)
    assert recovery is not None, "not served after the restart"
    first_write, last_failure = recovery
    assert max(recovery) < RECOVERY_BOUND, f"still failing {max(recovery):.1f} s after the restart"
    assert ready_up[0] == 200
    assert "Traceback" not in log, log[-4000:]
    ready_latency = max(t for _, t in ready_down)
    print(
        f"\nPostgreSQL down {restarting - down:.1f} s: {len(during)} requests, all 503 "
        f"unavailable; max latency {max_latency:.2f} s, {known_latency:.2f} s once known "
        f"(/ready {ready_latency:.2f} s); restart took {up - restarting:.2f} s; first "
        f"acknowledged write {first_write:.2f} s and last 503 {last_failure:.2f} s after it"
    )


@pytest.mark.nats
def test_the_nats_relay_rides_out_a_postgres_crash_and_publishes_every_event_once(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    nats_server = PrivateNats(tmp_path / "nats-store").start()
    url = private_postgres.create_database()
    env = {**service_env(tmp_path, url), "MFA_NATS_URL": nats_server.url}
    service: Service | None = None
    try:
        service = Service(env, tmp_path / "log").start()
        with service.client(new_user()) as client:
            for _ in range(5):
                assert client.post("/mfa/backup-codes/generate").status_code == 201
            _wait_for(lambda: len(stream_messages(nats_server.url)) == 6)

            private_postgres.stop("immediate")
            assert client.post("/mfa/backup-codes/generate").status_code == 503
            time.sleep(2.0)
            private_postgres.start()
            _wait_for(lambda: client.post("/mfa/backup-codes/generate").status_code == 201)
            for _ in range(4):
                assert client.post("/mfa/backup-codes/generate").status_code == 201

        with psycopg.connect(url, connect_timeout=5) as conn:
            stored = conn.execute(
                "SELECT originator_id, originator_version FROM mfa_events ORDER BY notification_id"
            ).fetchall()
        expected = [event_id(originator, version) for originator, version in stored]
        assert len(expected) == 11
        _wait_for(lambda: len(stream_messages(nats_server.url)) >= len(expected))
        assert [m["msg_id"] for m in stream_messages(nats_server.url)] == expected
        ready = httpx.get(service.url + "/ready", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["checks"]["nats"] == "ok"
        assert "Traceback" not in service.log.read_text()
    finally:
        if service is not None:
            service.stop()
        nats_server.stop()


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_the_event_store_reconnects_after_an_outage_that_outlasted_its_reconnection_attempts(
    private_postgres: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Callers that time out stay counted as waiting in psycopg_pool: past POSTGRES_MAX_WAITING
    # it refuses every call before it would start a connection, and once its own reconnection
    # attempts gave up, nothing else starts one. The store must notice and reconnect.
    monkeypatch.setattr(event_store, "RECONNECT_SECONDS", 1.0)
    url = private_postgres.create_database()
    env = {**event_store_env(url, pool_size=1), "POSTGRES_CONNECT_TIMEOUT": "1"}
    app = MfaApplication(env, vault=cast(Any, None))  # no events are written or read
    try:
        assert app.max_position() == 0
        max_waiting = int(env["POSTGRES_MAX_WAITING"])
        private_postgres.stop("immediate")
        with ThreadPoolExecutor(max_workers=max_waiting + 4) as pool:
            outcomes = list(pool.map(lambda _: _error_of(app.max_position), range(max_waiting + 4)))
        assert all(isinstance(e, StoreOperationalError) for e in outcomes), outcomes
        refused = _error_of(app.max_position)
        assert isinstance(refused, StoreOperationalError)
        assert "requests waiting" in str(refused)  # the waiting queue is full of the timed out
        time.sleep(2.0)  # longer than its reconnection attempts last

        private_postgres.start()
        started = time.monotonic()
        while _error_of(app.max_position) is not None:
            assert time.monotonic() - started < 10, "the event store never reconnected"
            time.sleep(0.1)
        assert app.max_position() == 0
    finally:
        app.close()


def _error_of(call: Callable[[], Any]) -> Exception | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_every_command_acknowledged_before_a_sigkill_is_in_the_store_after_restart(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    url = create_pg_database(postgres_admin_url)
    env = service_env(tmp_path, url)
    service = Service(env, tmp_path / "log").start()
    load: Load | None = None
    try:

        def acknowledged_writes(call: Callable[..., Call]) -> None:
            user = new_user()
            with service.client(user) as client:
                setup = call("totp_setup", lambda: client.post("/mfa/totp/setup"), user)
                if setup.ok:
                    call("backup_generate", lambda: client.post("/mfa/backup-codes/generate"), user)

        load = Load([acknowledged_writes] * 6).start()
        deadline = time.monotonic() + 30
        while len([c for c in load.snapshot() if c.ok]) < 100:
            assert time.monotonic() < deadline, "the load did not get going"
            time.sleep(0.05)
        assert service.kill() == -signal.SIGKILL
        killed = time.monotonic()
        load.stop()
        acked = [c for c in load.calls if c.ok]
        assert all(c.ended <= killed for c in acked)
        assert [c for c in load.calls if c.error and c.started < killed], "nothing was in flight"
        assert all(c.position for c in acked), "an acknowledgement without its log position"
        positions = {c.position for c in acked}

        service = Service(env, tmp_path / "log").start()
        with psycopg.connect(url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT notification_id FROM mfa_events WHERE notification_id = ANY(%s)",
                (sorted(positions),),
            ).fetchall()
            head = conn.execute("SELECT max(notification_id) FROM mfa_events").fetchone()
        assert {row[0] for row in rows} == positions
        assert head is not None
        assert head[0] >= max(positions)

        by_user: dict[str, list[Call]] = {}
        for c in acked:
            by_user.setdefault(str(c.user), []).append(c)
        for user, user_calls in by_user.items():
            position = str(max(c.position or 0 for c in user_calls))
            with service.client(user) as client:
                client.headers["X-MFA-Position"] = position
                devices = client.get("/mfa/totp/devices")
                assert devices.status_code == 200, devices.text
                listed = [d["device_id"] for d in devices.json()["items"]]
                assert listed == [c.body["device_id"] for c in user_calls if c.op == "totp_setup"]
                if any(c.op == "backup_generate" for c in user_calls):
                    count = client.get("/mfa/backup-codes/count").json()
                    assert count == {"remaining": 10, "total": 10}
        print(
            f"\nSIGKILL under load: {len(acked)} acknowledged commands for {len(by_user)} users, "
            f"all in the store after the restart (positions up to {max(positions)}, head "
            f"{head[0]}); {len([c for c in load.calls if c.error])} requests cut off"
        )
    finally:
        if load is not None:
            load.stop()
        service.stop()
        drop_pg_database(postgres_admin_url, url)
