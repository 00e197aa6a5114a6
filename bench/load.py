"""Load test (issue 7 item 5): every flow of the service at a steady rate, from a second
process, for a fixed time; asserts zero 5xx, zero lost events and bounded lag.

The stack: a fresh database, a private `nats-server -js`, `mfa serve` (projections and relay
in-process, or `--worker`: in a separate `mfa worker`), an HTTP SMS provider and an SMTP server
in this process (tests/support/delivery.py) so SMS and email codes can be read back.

Flows, started open-loop at a steady rate (weighted round-robin; each flow's requests run one
after the other, every status checked against the one the flow expects):

- `totp_enrol`: setup, verify, list devices; the user joins the pool of TOTP users;
- `totp_validate`: a TOTP user with an unused time step validates (as in totp_validate.py:
  increasing steps, one request per user at a time); with no code ready, a `GET /mfa/methods`;
- `backup_step_up`: generate backup codes, spend one, count (read-your-writes: must be 9),
  then a generic challenge (`backup_code`) completed by step-up;
- `trusted`: remember a device, check its token, list, revoke it;
- `push`: sync an app with an Ed25519 key, push challenge, signed approve (or, every 4th,
  deny), read the challenge and the history, then a push step-up (challenge, signed approve,
  step-up);
- `webauthn`: register a key with the software authenticator (tests/support), then a
  WebAuthn challenge completed by step-up with an assertion;
- `sms`, `email`: enrol (code read from the provider) and verify; or, for a user enrolled
  more than 65 s before (the service's resend cooldown is 60 s), send a login code and verify;
- `admin`: an admin token reads a user's TOTP, backup codes, events, push stats and challenges.

During the run a core NATS subscription on `mfa.events.>` and a poller of `mfa_tracking`
record when each write became visible (lag, as in lag.py). At the end the relay must have
published every public event in the store (`stream messages == public events stored`,
and every one of their ids seen), every acknowledged write's position must be in the store,
and the p99 lag must stay under `--max-lag-ms`. The server's RSS is sampled every 5 s.

Run by hand: `.venv/bin/python bench/load.py` (10 minutes; `--duration 60` for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import heapq
import itertools
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyotp
from common import ROOT, CpuSample, machine_description, percentile, rss_kib, table
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import (
    NatsTap,
    RawHttp,
    Reply,
    Stack,
    Timeline,
    event_id,
    install_signal_handlers,
    lags,
    mint_token,
    wait_caught_up,
    write_json,
)
from totp_validate import PERIOD, SAFETY_SECONDS, free_port, step_at

from projections.public_events import PUBLIC_TOPICS

sys.path.insert(0, str(ROOT))
from tests.support.delivery import SmsProvider, SmtpServer, code_in
from tests.support.soft_authenticator import SoftAuthenticator

ORIGIN = "http://localhost:8000"  # the service's default MFA_WEBAUTHN_ORIGINS
WEIGHTS = {
    "totp_validate": 10,
    "totp_enrol": 2,
    "backup_step_up": 2,
    "trusted": 2,
    "push": 2,
    "webauthn": 1,
    "sms": 1,
    "email": 1,
    "admin": 2,
}


class UnexpectedStatusError(Exception):
    pass


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class TotpUser:
    sub: str
    headers: dict[str, str]
    totp: pyotp.TOTP
    last_step: int


@dataclass
class TotpPool:
    """TOTP users by the time their next step becomes usable (never two requests at once)."""

    users: list[TotpUser] = field(default_factory=list)
    heap: list[tuple[float, int]] = field(default_factory=list)

    def add(self, user: TotpUser) -> None:
        self.users.append(user)
        heapq.heappush(self.heap, (user.last_step * PERIOD, len(self.users) - 1))

    def try_take(self) -> tuple[TotpUser, int, int] | None:
        now = time.time()
        while self.heap and self.heap[0][0] <= now:
            _, index = heapq.heappop(self.heap)
            user = self.users[index]
            step = max(user.last_step + 1, step_at(now + SAFETY_SECONDS) - 1)
            code = user.totp.generate_otp(step)
            if code in (user.totp.generate_otp(step - 1), user.totp.generate_otp(step - 2)):
                self.give_back(index, step)  # the service would match the (spent) lower step
                continue
            return user, index, step
        return None

    def give_back(self, index: int, step: int) -> None:
        self.users[index].last_step = step
        heapq.heappush(self.heap, (step * PERIOD, index))

    def any_user(self) -> TotpUser | None:
        return random.choice(self.users) if self.users else None


class Load:
    """The flows, their HTTP client and what they recorded."""

    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.http = RawHttp(stack.base_url, size=args.connections)
        self.pool = TotpPool()
        self.admin_headers = {
            "Authorization": f"Bearer {mint_token(stack.jwt_secret, 'load-admin', 'mfa:admin')}"
        }
        self.statuses: Counter[str] = Counter()  # "flow step status"
        self.step_statuses: dict[str, Counter[str]] = {}
        self.unexpected: list[str] = []
        self.flows: Counter[str] = Counter()
        self.failed_flows: Counter[str] = Counter()
        self.latencies: dict[str, list[float]] = {}
        self.acked: list[tuple[float, int]] = []
        self.requests = 0
        self.sms: SmsProvider | None = None
        self.smtp: SmtpServer | None = None
        # Users enrolled for SMS/email: (ready at, headers, destination, messages seen); the
        # service wants RESEND_COOLDOWN (60 s) between two codes to one destination.
        self.oob_enrolled: dict[str, list[tuple[float, dict[str, str], str, int]]] = {
            "sms": [],
            "email": [],
        }

    def new_user(self, prefix: str) -> tuple[str, dict[str, str]]:
        sub = f"load-{prefix}-{secrets.token_hex(6)}"
        return sub, {"Authorization": f"Bearer {mint_token(self.stack.jwt_secret, sub)}"}

    async def call(
        self,
        flow: str,
        step: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any = None,
        expect: int = 200,
    ) -> Reply:
        try:
            reply = await self.http.request(method, path, body, headers)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.statuses[f"{flow} {step} {type(exc).__name__}"] += 1
            self.step_statuses.setdefault(step, Counter())[type(exc).__name__] += 1
            self.requests += 1
            raise UnexpectedStatusError(f"{flow} {step}: {type(exc).__name__}") from exc
        self.requests += 1
        self.statuses[f"{flow} {step} {reply.status}"] += 1
        self.step_statuses.setdefault(step, Counter())[str(reply.status)] += 1
        self.latencies.setdefault(step, []).append(reply.done - reply.sent)
        if 200 <= reply.status < 300 and reply.position:
            self.acked.append((reply.done, reply.position))
        if reply.status != expect:
            if len(self.unexpected) < 20:
                self.unexpected.append(
                    f"{flow} {step}: {reply.status} (expected {expect}) {reply.body[:300]!r}"
                )
            raise UnexpectedStatusError(f"{flow} {step}: {reply.status}")
        return reply

    # ------------------------------------------------------------------------- flows

    async def totp_enrol(self, flow: str = "totp_enrol") -> None:
        sub, h = self.new_user("totp")
        setup = (
            await self.call(flow, "totp setup", "POST", "/mfa/totp/setup", h, {"name": "p"}, 201)
        ).json()
        totp = pyotp.TOTP(setup["secret"])
        now = time.time()
        step = step_at(now) - 1 if step_at(now + SAFETY_SECONDS) == step_at(now) else step_at(now)
        body = {"code": totp.generate_otp(step), "device_id": setup["device_id"]}
        await self.call(flow, "totp verify", "POST", "/mfa/totp/verify", h, body)
        await self.call(flow, "totp devices", "GET", "/mfa/totp/devices", h)
        self.pool.add(TotpUser(sub, h, totp, step))

    async def totp_validate(self, flow: str = "totp_validate") -> None:
        taken = self.pool.try_take()
        if taken is None:
            user = self.pool.any_user()
            if user is not None:
                await self.call(flow, "methods", "GET", "/mfa/methods", user.headers)
            return
        user, index, step = taken
        try:
            body = {"code": user.totp.generate_otp(step)}
            await self.call(flow, "totp validate", "POST", "/mfa/totp/validate", user.headers, body)
        finally:
            self.pool.give_back(index, step)

    async def backup_step_up(self, flow: str = "backup_step_up") -> None:
        _, h = self.new_user("backup")
        codes = (
            await self.call(
                flow, "backup generate", "POST", "/mfa/backup-codes/generate", h, None, 201
            )
        ).json()["codes"]
        verify = {"code": codes[0]}
        await self.call(flow, "backup verify", "POST", "/mfa/backup-codes/verify", h, verify)
        count = (await self.call(flow, "backup count", "GET", "/mfa/backup-codes/count", h)).json()
        if count["remaining"] != 9:
            self.unexpected.append(f"{flow}: backup count {count} after one use")
            raise UnexpectedStatusError("read-your-writes: stale count")
        challenge = (
            await self.call(
                flow, "challenge", "POST", "/mfa/challenge", h, {"method": "backup_code"}, 201
            )
        ).json()
        body = {"challenge_id": challenge["challenge_id"], "code": codes[1]}
        await self.call(flow, "step-up", "POST", "/mfa/step-up", h, body)

    async def trusted(self, flow: str = "trusted") -> None:
        _, h = self.new_user("trusted")
        device = (
            await self.call(
                flow, "trusted remember", "POST", "/mfa/trusted-devices", h, {"name": "laptop"}, 201
            )
        ).json()
        check = (
            await self.call(
                flow,
                "trusted check",
                "GET",
                "/mfa/trusted-devices/check",
                {**h, "X-MFA-Device-Token": device["device_token"]},
            )
        ).json()
        if not check.get("trusted"):
            self.unexpected.append(f"{flow}: device not trusted right after remembering it")
            raise UnexpectedStatusError("trusted check")
        await self.call(flow, "trusted list", "GET", "/mfa/trusted-devices", h)
        path = f"/mfa/trusted-devices/{device['device_id']}"
        await self.call(flow, "trusted revoke", "DELETE", path, h)

    async def push(self, flow: str = "push") -> None:
        _, h = self.new_user("push")
        key = Ed25519PrivateKey.generate()
        device_id = f"app-{secrets.token_hex(4)}"
        sync = {
            "device_id": device_id,
            "name": "phone",
            "platform": "android",
            "push_token": f"token-{secrets.token_hex(8)}",
            "public_key": b64url(key.public_key().public_bytes_raw()),
            "app_version": "1.0",
        }
        await self.call(flow, "push sync", "POST", "/mfa/devices/sync", h, sync)
        created = (
            await self.call(flow, "push challenge", "POST", "/mfa/push/challenge", h, {}, 201)
        ).json()
        cid = created["challenge_id"]
        self.flows["push answered"] += 1
        if self.flows["push answered"] % 4 == 0:
            body = {
                "challenge_id": cid,
                "device_id": device_id,
                "signature": b64url(key.sign(f"mfa-push:{cid}:deny".encode())),
                "reason": "denied",
            }
            await self.call(flow, "push deny", "POST", "/mfa/push/deny", h, body)
        else:
            body = {
                "challenge_id": cid,
                "device_id": device_id,
                "number": created["number"],
                "signature": b64url(key.sign(f"mfa-push:{cid}:approve".encode())),
            }
            await self.call(flow, "push approve", "POST", "/mfa/push/approve", h, body)
        await self.call(flow, "push status", "GET", f"/mfa/push/challenge/{cid}", h)
        await self.call(flow, "push history", "GET", "/mfa/push/history", h)
        challenge = (
            await self.call(flow, "challenge", "POST", "/mfa/challenge", h, {"method": "push"}, 201)
        ).json()
        cid = challenge["challenge_id"]
        body = {
            "challenge_id": cid,
            "device_id": device_id,
            "number": challenge["number"],
            "signature": b64url(key.sign(f"mfa-push:{cid}:approve".encode())),
        }
        await self.call(flow, "push approve", "POST", "/mfa/push/approve", h, body)
        await self.call(flow, "step-up", "POST", "/mfa/step-up", h, {"challenge_id": cid})

    async def webauthn(self, flow: str = "webauthn") -> None:
        _, h = self.new_user("webauthn")
        authenticator = SoftAuthenticator()
        started = (
            await self.call(
                flow,
                "webauthn register",
                "POST",
                "/mfa/webauthn/credentials/register",
                h,
                {"name": "key"},
            )
        ).json()
        body = {
            "registration_id": started["registration_id"],
            "credential": authenticator.register(started["options"], ORIGIN),
        }
        await self.call(
            flow,
            "webauthn verify",
            "POST",
            "/mfa/webauthn/credentials/register/verify",
            h,
            body,
            201,
        )
        challenge = (
            await self.call(
                flow, "challenge", "POST", "/mfa/challenge", h, {"method": "webauthn"}, 201
            )
        ).json()
        body = {
            "challenge_id": challenge["challenge_id"],
            "credential": authenticator.get(challenge["options"], ORIGIN),
        }
        await self.call(flow, "step-up", "POST", "/mfa/step-up", h, body)

    async def _code(self, method: str, destination: str, seen: int) -> tuple[str, int]:
        """The newest code sent to `destination` once more than `seen` messages went there."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if method == "sms":
                assert self.sms is not None
                bodies = [m["body"] for m in self.sms.messages if m.get("to") == destination]
            else:
                assert self.smtp is not None
                bodies = [
                    str(body.get_content())
                    for rcpt, message in self.smtp.messages
                    if destination in rcpt
                    for body in [message.get_body(("plain",))]
                    if body is not None
                ]
            if len(bodies) > seen:
                return code_in(bodies[-1]), len(bodies)
            await asyncio.sleep(0.02)
        raise UnexpectedStatusError(f"no {method} message to {destination}")

    async def oob(self, method: str) -> None:
        """A login code for a user enrolled over a minute ago, else a new enrolment."""
        flow = method
        verify = f"/mfa/{method}/verify"
        waiting = self.oob_enrolled[method]
        if waiting and waiting[0][0] <= time.monotonic():
            _, h, destination, seen = waiting.pop(0)
            await self.call(flow, f"{method} send", "POST", f"/mfa/{method}/send", h, None, 202)
            code, _ = await self._code(method, destination, seen)
            await self.call(flow, f"{method} verify", "POST", verify, h, {"code": code})
            return
        _, h = self.new_user(method)
        if method == "sms":
            destination = f"+1415{random.randint(200, 999)}{random.randint(0, 9999):04d}"
            body: dict[str, str] = {"phone_number": destination}
        else:
            destination = f"u{secrets.token_hex(6)}@bench-mail.org"
            body = {"email": destination}
        await self.call(flow, f"{method} enroll", "PUT", f"/mfa/{method}/enroll", h, body, 202)
        code, seen = await self._code(method, destination, 0)
        await self.call(flow, f"{method} verify", "POST", verify, h, {"code": code})
        waiting.append((time.monotonic() + 65, h, destination, seen))

    async def sms_flow(self) -> None:
        await self.oob("sms")

    async def email_flow(self) -> None:
        await self.oob("email")

    async def admin(self, flow: str = "admin") -> None:
        user = self.pool.any_user()
        if user is None:
            return
        a = self.admin_headers
        await self.call(flow, "admin totp", "GET", f"/admin/mfa/totp/{user.sub}", a)
        await self.call(flow, "admin backup codes", "GET", "/admin/mfa/backup-codes?limit=20", a)
        await self.call(flow, "admin events", "GET", f"/admin/mfa/users/{user.sub}/events", a)
        await self.call(flow, "admin push stats", "GET", "/admin/mfa/push/stats", a)
        await self.call(flow, "admin push list", "GET", "/admin/mfa/push/challenges?limit=20", a)

    def flow(self, name: str) -> Any:
        return {
            "totp_validate": self.totp_validate,
            "totp_enrol": self.totp_enrol,
            "backup_step_up": self.backup_step_up,
            "trusted": self.trusted,
            "push": self.push,
            "webauthn": self.webauthn,
            "sms": self.sms_flow,
            "email": self.email_flow,
            "admin": self.admin,
        }[name]


async def run_flow(load: Load, name: str) -> None:
    load.flows[name] += 1
    try:
        await load.flow(name)()
    except UnexpectedStatusError:
        load.failed_flows[name] += 1
    except Exception as exc:
        load.failed_flows[name] += 1
        if len(load.unexpected) < 20:
            load.unexpected.append(f"{name}: {type(exc).__name__}: {exc}")


async def probe_channels(load: Load) -> list[str]:
    """The flows whose endpoints answer (SMS/email used to be 501)."""
    names = list(WEIGHTS)
    _, h = load.new_user("probe")
    for method in ("sms", "email"):
        reply = await load.http.request("POST", f"/mfa/{method}/send", None, h)
        if reply.status in (404, 405, 501):
            names.remove(method)
            print(f"  {method}: {reply.status}, flow skipped", file=sys.stderr, flush=True)
    return names


async def drive(args: argparse.Namespace, stack: Stack, load: Load) -> dict[str, Any]:
    assert stack.database_url is not None
    assert stack.nats_url is not None
    db = stack.database_url
    names = await probe_channels(load)
    schedule = [n for n in names for _ in range(WEIGHTS[n])]
    random.Random(7).shuffle(schedule)
    tap = NatsTap(stack.nats_url)
    await tap.start()
    print(f"pre-enrolling {args.users} TOTP users ...", file=sys.stderr, flush=True)
    queue = list(range(args.users))

    async def enrol_worker() -> None:
        while queue:
            queue.pop()
            with contextlib.suppress(UnexpectedStatusError):
                await load.totp_enrol("pre-enrol")

    await asyncio.gather(*(enrol_worker() for _ in range(8)))
    rss_samples: list[tuple[float, int]] = []
    tasks: set[asyncio.Task[None]] = set()
    dropped = 0
    # Requests per flow start, so that flows * that = the requested rate.
    per_flow = {
        "totp_validate": 1,
        "totp_enrol": 3,
        "backup_step_up": 5,
        "trusted": 4,
        "push": 9,
        "webauthn": 4,
        "sms": 2,
        "email": 2,
        "admin": 5,
    }
    mean_requests = sum(per_flow[n] for n in schedule) / len(schedule)
    flow_rate = args.rate / mean_requests
    print(
        f"running {flow_rate:.1f} flows/s (~{args.rate:g} req/s) for {args.duration:g} s ...",
        file=sys.stderr,
        flush=True,
    )
    with Timeline(db, args.poll_ms / 1000) as timeline:
        before = CpuSample.take(stack.server_pid, stack.worker_pid)
        requests_before = load.requests
        load.acked.clear()
        started = time.perf_counter()
        next_report = started + 30
        for k in itertools.count():
            at = started + k / flow_rate
            if at >= started + args.duration:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= args.max_inflight:
                dropped += 1
            else:
                task = asyncio.create_task(run_flow(load, schedule[k % len(schedule)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            now = time.perf_counter()
            if len(rss_samples) == 0 or now - rss_samples[-1][0] >= 5:
                rss_samples.append((now, rss_kib(stack.server_pid)[0]))
            if now >= next_report:
                next_report += 30
                stack.check_alive()
                fives = sum(v for k2, v in load.statuses.items() if is_server_error(k2.split()[-1]))
                print(
                    f"  {now - started:.0f} s: {load.requests - requests_before} requests, "
                    f"{sum(load.failed_flows.values())} failed flows, {fives} 5xx, "
                    f"RSS {rss_samples[-1][1] / 1024:.0f} MiB, in flight {len(tasks)}",
                    file=sys.stderr,
                    flush=True,
                )
        await asyncio.gather(*list(tasks))
        elapsed = time.perf_counter() - started
        after = CpuSample.take(stack.server_pid, stack.worker_pid)
        rss_end, hwm = rss_kib(stack.server_pid)
        stack.check_alive()
        top = max((p for _, p in load.acked), default=0)
        catch_up = wait_caught_up(db, top, relay=True, timeout=120)
        await asyncio.sleep(0.5)
    stream = await tap.stream_messages()
    await tap.stop()
    await load.http.close()
    return {
        "elapsed": elapsed,
        "requests": load.requests - requests_before,
        "cores": after.cores_since(before, elapsed),
        "rss": rss_samples,
        "rss_end": rss_end,
        "hwm": hwm,
        "catch_up": catch_up,
        "stream": stream,
        "arrivals": tap.arrivals(),
        "timeline": timeline,
        "dropped": dropped,
        "flow_rate": flow_rate,
    }


def check_events(database_url: str, arrivals: dict[str, float], acked_top: int) -> dict[str, Any]:
    """Public events stored vs what reached NATS; positions of public events."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, notification_id, topic FROM mfa_events"
        ).fetchall()
    public = {int(n): event_id(o, v) for o, v, n, t in rows if t in PUBLIC_TOPICS}
    head = max((int(r[2]) for r in rows), default=0)
    not_seen = [p for p, i in public.items() if i not in arrivals]
    return {
        "stored": len(rows),
        "public": public,
        "head": head,
        "not_seen": len(not_seen),
        "acked_beyond_head": acked_top > head,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    sms = SmsProvider().start()
    smtp_port = free_port()
    smtp = SmtpServer(smtp_port).start()
    try:
        env = {
            "MFA_SMS_WEBHOOK_URL": sms.url,
            "MFA_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}?starttls=0",
            "MFA_LOG_LEVEL": "WARNING",
        }
        print("starting the stack ...", file=sys.stderr, flush=True)
        with Stack(nats=True, worker=args.worker, server_env=env) as stack:
            assert stack.database_url is not None
            load = Load(args, stack)
            load.sms, load.smtp = sms, smtp
            result = asyncio.run(drive(args, stack, load))
            acked_top = max((p for _, p in load.acked), default=0)
            events = check_events(stack.database_url, result["arrivals"], acked_top)
    finally:
        sms.stop()
        smtp.stop()
    proj, nats = lags(load.acked, result["timeline"], result["arrivals"], events["public"])
    assert nats is not None
    text, ok = report(args, load, result, events, proj, nats)
    print(text, flush=True)
    write_json(
        args.json,
        {
            "load": {
                "ok": ok,
                "requests": result["requests"],
                "rate": result["requests"] / result["elapsed"],
                "nats": nats.as_dict(),
                "projections": proj.as_dict(),
                "rss_max_mib": max(v for _, v in result["rss"]) / 1024,
            }
        },
    )
    return 0 if ok else 1


def is_server_error(status: str) -> bool:
    """A 5xx, or no HTTP answer at all (connection reset, incomplete response)."""
    return not status.isdigit() or status.startswith("5")


def report(
    args: argparse.Namespace,
    load: Load,
    result: dict[str, Any],
    events: dict[str, Any],
    proj: Any,
    nats: Any,
) -> tuple[str, bool]:
    fives = {k: v for k, v in load.statuses.items() if is_server_error(k.split()[-1])}
    rows = []
    for step, values in sorted(load.latencies.items()):
        s = sorted(values)
        by_status = load.step_statuses.get(step, Counter())
        rows.append(
            [
                step,
                str(len(s)),
                f"{percentile(s, 0.5) * 1000:.1f}",
                f"{percentile(s, 0.99) * 1000:.1f}",
                " ".join(f"{k}:{v}" for k, v in sorted(by_status.items())),
            ]
        )
    rss = [v for _, v in result["rss"]]
    cores = result["cores"]
    lost = events["not_seen"] + abs(len(events["public"]) - result["stream"])
    lag_ok = (
        nats.values
        and proj.values
        and nats.p(0.99) * 1000 <= args.max_lag_ms
        and proj.p(0.99) * 1000 <= args.max_lag_ms
    )
    ok = not fives and lost == 0 and not events["acked_beyond_head"] and bool(lag_ok)
    unexpected = sum(load.failed_flows.values())
    flows = " ".join(
        f"{k}:{v}" + (f" ({load.failed_flows[k]} failed)" if load.failed_flows[k] else "")
        for k, v in sorted(load.flows.items())
        if k != "push answered"
    )
    lines = [
        "## Mixed load (bench/load.py)",
        "",
        f"Machine: {machine_description()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {args.duration:g} s at "
        f"{result['flow_rate']:.2f} flows/s (asked ~{args.rate:g} req/s), {args.users} TOTP "
        "users pre-enrolled; projections "
        + ("in `mfa worker`" if args.worker else "and relay in-process")
        + "; private nats-server -js; SMS/SMTP providers in the client process.",
        "",
        f"- requests: {result['requests']} in {result['elapsed']:.0f} s = "
        f"{result['requests'] / result['elapsed']:.1f} req/s; flows: {flows}; flows not "
        f"started (client over --max-inflight): {result['dropped']}",
        f"- 5xx / transport errors: {sum(fives.values())}"
        + (f" ({fives})" if fives else "")
        + f"; flows that met an unexpected status: {unexpected}",
        f"- events: {events['stored']} stored, {len(events['public'])} public; NATS stream "
        f"{result['stream']} messages; public events never seen on the subscription: "
        f"{events['not_seen']}; acknowledged positions beyond the store's head: "
        f"{'yes' if events['acked_beyond_head'] else 'none'}",
        f"- lag from response (ms, p50 / p99 / max): NATS {nats.summary_ms()} "
        f"({len(nats.values)} writes); projections {proj.summary_ms()} "
        f"({len(proj.values)} writes); caught up {result['catch_up']:.1f} s after the end",
        f"- server RSS: {rss[0] / 1024:.0f} MiB at start, max {max(rss) / 1024:.0f} MiB, "
        f"{result['rss_end'] / 1024:.0f} MiB at the end (VmHWM {result['hwm'] / 1024:.0f} MiB)",
        f"- cores: server {cores.server:.2f}"
        + (f" + worker {cores.worker:.2f}" if args.worker else "")
        + f", client {cores.client:.2f}, postgres {cores.postgres:.2f}, others "
        f"{cores.others:.2f}",
        "",
        table(["step", "requests", "p50 ms", "p99 ms", "statuses"], rows),
    ]
    if load.unexpected:
        lines += ["", "Unexpected (first 20):", *(f"- {u}" for u in load.unexpected)]
    lines += [
        "",
        f"RESULT: {'PASS' if ok else 'FAIL'} (zero 5xx, zero lost events, "
        f"p99 lag <= {args.max_lag_ms:g} ms)",
    ]
    return "\n".join(lines), ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=40.0, help="target requests/s")
    parser.add_argument("--users", type=int, default=600, help="TOTP users enrolled first")
    parser.add_argument("--worker", action="store_true", help="projections in `mfa worker`")
    parser.add_argument("--max-lag-ms", type=float, default=1000.0, help="p99 lag bound")
    parser.add_argument("--max-inflight", type=int, default=200, help="flows in flight")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
