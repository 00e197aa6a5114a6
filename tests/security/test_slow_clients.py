"""Threat: slow clients hold the server's connections open for as long as they like
(slowloris): a connection that sends nothing, a request head sent a byte at a time, a body
that never ends. uvicorn bounds only the idle time between two requests on a connection,
and only until the first byte of the next one; a few thousand such connections use up
the process's file descriptors, and every other client is refused.

`mfa serve` gives a request REQUEST_READ_SECONDS to arrive whole, from the moment the
server waits for it; a request begun and not finished then is answered 408 (a problem) and
the connection closed. Time the server itself takes (the application, or a request held
back behind an earlier pipelined one) does not count.

The protocol's rules are tested in-process, with a short deadline and a small application
that records what it saw; the last test checks `mfa serve` itself, with its real deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import uvicorn

from api import http_protocol
from api.http_protocol import REQUEST_READ_SECONDS, BoundedHeadProtocol
from tests.conftest import bind_port, free_port
from tests.security.test_oversized_requests import served, status_of

DEADLINE = 0.6  # the in-process servers' REQUEST_READ_SECONDS
SLOW_APP_SECONDS = 2 * DEADLINE


class RecordingApp:
    """An ASGI app answering 200 with the body it read; `/slow` first takes its time, and
    `/slow-read` takes it before reading the body. Records each request's disconnects."""

    def __init__(self) -> None:
        self.disconnected: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":  # accepted, then held open until the client leaves
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(SLOW_APP_SECONDS)
        if scope["path"] == "/slow-read":
            await asyncio.sleep(SLOW_APP_SECONDS)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.append(scope["path"])
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = json.dumps({"path": scope["path"], "body": body.decode()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


class InProcessServer:
    def __init__(self, app: RecordingApp) -> None:
        sock = bind_port(free_port())
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, http=BoundedHeadProtocol, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([sock],), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            assert self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def app() -> RecordingApp:
    return RecordingApp()


@pytest.fixture
def server(app: RecordingApp, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessServer]:
    monkeypatch.setattr(http_protocol, "REQUEST_READ_SECONDS", DEADLINE)
    running = InProcessServer(app)
    yield running
    running.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return received, time.monotonic()
        received += chunk


def trickle(sock: socket.socket, data: bytes, every: float = 0.1) -> None:
    """Send `data` a byte at a time, `every` seconds apart, until the server closes."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(every)


def request(path: str, body: bytes = b"", *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
        % (path.encode(), len(body), headers)
    ) + body


def answers(received: bytes) -> list[int]:
    return [status_of(line) for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def assert_408_problem(received: bytes, deadline: float = DEADLINE) -> None:
    assert answers(received) == [408], received[:300]
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == 408
    assert problem["code"] == "validation_error"
    assert f"within {deadline:g} s" in problem["detail"], problem


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(
    server: InProcessServer,
) -> None:
    with connect(server.port) as sock:
        opened = time.monotonic()
        received, closed = read_until_closed(sock)
    assert received == b""  # nothing was asked: nothing to answer
    assert DEADLINE - 0.1 < closed - opened < DEADLINE + 1.5


def test_a_head_sent_a_byte_at_a_time_is_answered_408_at_the_deadline(
    server: InProcessServer,
) -> None:
    """Each byte came well within the deadline of the one before: the deadline is for the
    whole request, or one byte every few seconds would hold the connection for good."""
    with connect(server.port) as sock:
        opened = time.monotonic()
        sender = threading.Thread(target=trickle, args=(sock, request("/never") * 10))
        sender.start()
        received, closed = read_until_closed(sock)
        sender.join()
    assert_408_problem(received)
    assert closed - opened < DEADLINE + 1.5


def test_a_body_that_stops_coming_is_answered_408_and_the_application_told(
    server: InProcessServer, app: RecordingApp
) -> None:
    with connect(server.port) as sock:
        opened = time.monotonic()
        sock.sendall(request("/body", b'{"a": 1}')[:-3])  # the head, and all but 3 bytes
        received, closed = read_until_closed(sock)
    assert_408_problem(received)
    assert closed - opened < DEADLINE + 1.5
    deadline = time.monotonic() + 5
    while app.disconnected != ["/body"]:
        assert time.monotonic() < deadline, app.disconnected
        time.sleep(0.05)


def test_the_time_the_application_takes_does_not_count(server: InProcessServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(request("/slow", b"{}", b"Connection: close"))
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]


def test_a_client_waiting_for_100_continue_is_not_at_fault(server: InProcessServer) -> None:
    """The client sends its body only once the application asks for it (uvicorn's `100
    Continue`), here after longer than the deadline."""
    with connect(server.port) as sock:
        head = (
            b"POST /slow-read HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"{}")
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
    assert b'"body": "{}"' in received


def test_a_request_held_behind_a_slow_pipelined_one_does_not_count(
    server: InProcessServer,
) -> None:
    with connect(server.port) as sock:
        sock.sendall(request("/slow", b"{}") + request("/next", b"[]", b"Connection: close"))
        received, _ = read_until_closed(sock)
    # uvicorn 0.54 may close the connection after the first answer, never a 408
    assert answers(received) in ([200], [200, 200]), received[:300]


def test_an_idle_keep_alive_connection_is_still_uvicorns_to_close(server: InProcessServer) -> None:
    """Between two requests the connection is idle, not slow: its keep-alive timeout (5 s)
    applies, and a request after longer than the read deadline is served."""
    with connect(server.port) as sock:
        sock.sendall(request("/first", b"1"))
        first = sock.recv(65536)
        assert answers(first) == [200], first
        time.sleep(DEADLINE * 2)
        sock.sendall(request("/second", b"2", b"Connection: close"))
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]


def test_mfa_serve_closes_slow_connections_at_its_deadline(tmp_path: Path) -> None:
    service = served(tmp_path)
    token = jwt.encode(
        {"sub": "slow", "exp": int(time.time()) + 600}, service.env["MFA_JWT_SECRET"]
    )
    validate = request(
        "/mfa/totp/validate", b'{"code":"1"}', b"Authorization: Bearer " + token.encode()
    )
    try:
        attacks: dict[str, Callable[[socket.socket], None]] = {
            "silent": lambda sock: None,
            "head": lambda sock: trickle(sock, b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 999, 1),
            "body": lambda sock: sock.sendall(validate[:-2]),  # authenticated: the body is read
        }

        def attack(send: Callable[[socket.socket], None]) -> tuple[bytes, float]:
            with connect(service.port) as sock:
                sock.settimeout(REQUEST_READ_SECONDS + 10)
                opened = time.monotonic()
                sender = threading.Thread(target=send, args=(sock,))
                sender.start()
                received, closed = read_until_closed(sock)
                sender.join()
            return received, closed - opened

        with ThreadPoolExecutor(len(attacks)) as pool:
            results = dict(zip(attacks, pool.map(attack, attacks.values()), strict=True))
    finally:
        service.stop()
    assert results["silent"][0] == b""
    assert_408_problem(results["head"][0], REQUEST_READ_SECONDS)
    assert_408_problem(results["body"][0], REQUEST_READ_SECONDS)
    for received, held in results.values():
        assert REQUEST_READ_SECONDS - 0.5 < held < REQUEST_READ_SECONDS + 3, (received, held)
    assert "Traceback" not in service.log.read_text()


def test_garbage_after_a_slow_request_leaves_it_its_answer(server: InProcessServer) -> None:
    """Bytes that are not HTTP end the reading, not the wait for the request ahead of them."""
    with connect(server.port) as sock:
        sock.sendall(request("/slow", b"{}") + b"\x16\x03\x01 not http\r\n\r\n")
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]


def test_a_connection_upgraded_to_a_websocket_is_no_longer_timed(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The HTTP protocol hands the connection over; its deadline must go with it."""
    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(handshake)
        switched = sock.recv(65536)
        assert switched.startswith(b"HTTP/1.1 101"), switched
        sock.settimeout(DEADLINE * 3)
        with pytest.raises(TimeoutError):
            sock.recv(65536)  # neither closed nor written to
    assert not [r for r in caplog.records if r.exc_info], caplog.text
