"""Real NATS servers for tests: the machine's shared one, or a private one we can stop."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.conftest import NATS_URL, free_port, require_service

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_problem(url: str = NATS_URL) -> str | None:
    async def probe() -> str | None:
        try:
            nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        except Exception as exc:
            return type(exc).__name__
        try:
            await nc.jetstream().account_info()
        except Exception as exc:
            return f"JetStream not enabled ({type(exc).__name__})"
        finally:
            await nc.close()
        return None

    return asyncio.run(probe())


class PrivateNats:
    """A nats-server with JetStream on a free port and its own store, stopped at will."""

    def __init__(self, store: Path) -> None:
        if not Path(NATS_SERVER).exists():
            require_service("nats-server binary", "not installed")
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateNats:
        self.process = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while nats_problem(self.url) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError("private nats-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def stream_messages(url: str, subject_filter: str = "mfa.events.>") -> list[dict[str, Any]]:
    """Every message on MFA_EVENTS, in stream order, with its Nats-Msg-Id header."""

    async def read() -> list[dict[str, Any]]:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info("MFA_EVENTS")
            except nats.js.errors.NotFoundError:
                return []
            result: list[dict[str, Any]] = []
            if info.state.messages == 0:
                return result
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg("MFA_EVENTS", seq)
                except nats.js.errors.NotFoundError:
                    continue
                body = msgspec.json.decode(msg.data)
                result.append(
                    {
                        "seq": seq,
                        "subject": msg.subject,
                        "msg_id": (msg.headers or {}).get("Nats-Msg-Id"),
                        "event": body,
                    }
                )
            return result
        finally:
            await nc.close()

    return asyncio.run(read())


class DurableSubscriber:
    """A durable pull consumer created before the test acts, read outside the service's code."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name

    async def _connect(self) -> Any:
        return await nats.connect(self.url, connect_timeout=2)

    def create(self) -> None:
        async def create() -> None:
            nc = await self._connect()
            try:
                js = nc.jetstream()
                from projections.nats_stream import ensure_stream

                await ensure_stream(js)
                await js.add_consumer(
                    "MFA_EVENTS",
                    ConsumerConfig(
                        durable_name=self.name,
                        deliver_policy=DeliverPolicy.NEW,
                        filter_subject="mfa.events.>",
                        ack_policy="explicit",
                    ),
                )
            finally:
                await nc.close()

        asyncio.run(create())

    def fetch(
        self, want: int, subject: str, timeout: float = 15
    ) -> list[tuple[str, dict[str, Any]]]:
        """Messages whose CloudEvent subject is `subject`, until `want` arrived (acked)."""

        async def fetch() -> list[tuple[str, dict[str, Any]]]:
            nc = await self._connect()
            got: list[tuple[str, dict[str, Any]]] = []
            try:
                js = nc.jetstream()
                sub = await js.pull_subscribe_bind(self.name, stream="MFA_EVENTS")
                deadline = time.monotonic() + timeout
                while len(got) < want and time.monotonic() < deadline:
                    try:
                        batch = await sub.fetch(50, timeout=1)
                    except TimeoutError:
                        continue
                    for msg in batch:
                        body = msgspec.json.decode(msg.data)
                        if body["subject"] == subject:
                            got.append(((msg.headers or {}).get("Nats-Msg-Id", ""), body))
                        await msg.ack()
                return got
            finally:
                await nc.close()

        return asyncio.run(fetch())

    def delete(self) -> None:
        async def delete() -> None:
            nc = await self._connect()
            try:
                await nc.jetstream().delete_consumer("MFA_EVENTS", self.name)
            finally:
                await nc.close()

        asyncio.run(delete())
