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
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
import uvicorn

from api import http_connection
from api.http_connection import REQUEST_READ_SECONDS
from api.http_protocol import MAX_PIPELINED_REQUESTS, BoundedHeadProtocol
from tests.conftest import bind_port, free_port
from tests.security.test_oversized_requests import served

DEADLINE = 0.6  # the in-process servers' REQUEST_READ_SECONDS and STALLED_WRITE_SECONDS
KEEP_ALIVE = 2  # their keep-alive timeout (uvicorn's default is 5 s)
SLOW_APP_SECONDS = 2 * DEADLINE


class RecordingApp:
    """An ASGI app answering 200 with the body it read, after `?sleep=` seconds (`/slow`:
    SLOW_APP_SECONDS); `/early` answers 401 without reading the body, `/big` 4 MiB (or
    `?size=` bytes) in one piece. Records
    the paths it started and those that saw the client disconnect."""

    def __init__(self) -> None:
        self.started: list[str] = []
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
        path = scope["path"]
        self.started.append(path)
        query = dict(parse_qsl(scope["query_string"].decode()))
        await asyncio.sleep(SLOW_APP_SECONDS if path == "/slow" else float(query.get("sleep", 0)))
        if path == "/early":
            await self.answer(send, 401, b"{}")
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.append(path)
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/big":
            size = int(query.get("size", 4 * 1024 * 1024))
            await self.answer(send, 200, b"x" * size)
            return
        await self.answer(send, 200, json.dumps({"path": path, "body": body.decode()}).encode())

    @staticmethod
    async def answer(send: Any, status: int, body: bytes) -> None:
        length = str(len(body)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", length)],
            }
        )
        await send({"type": "http.response.body", "body": body})


class InProcessServer:
    def __init__(self, app: RecordingApp) -> None:
        sock = bind_port(free_port())
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            http=BoundedHeadProtocol,
            log_level="warning",
            timeout_keep_alive=KEEP_ALIVE,
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
    monkeypatch.setattr(http_connection, "REQUEST_READ_SECONDS", DEADLINE)
    monkeypatch.setattr(http_connection, "STALLED_WRITE_SECONDS", DEADLINE)
    running = InProcessServer(app)
    yield running
    running.stop()


def slow_reader(port: int) -> socket.socket:
    """A client connection with a small receive buffer (it reads nothing unless told to)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


def wait_until(condition: Callable[[], object], failure: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


def wait_until_dropped(server: InProcessServer) -> None:
    """Until the server holds no connection, within the write deadline and a margin."""
    connections = server.server.server_state.connections
    wait_until(lambda: not connections, "the connection is still held", DEADLINE + 10)


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
    """The status of every answer in `received` (one can follow another's body directly)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def assert_408_problem(received: bytes, deadline: float = DEADLINE) -> None:
    assert answers(received) == [408], received[:300]
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == 408
    assert problem["code"] == "validation_error"
    assert f"within {deadline:g} s" in problem["detail"], problem


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


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
            b"POST /r?sleep=%g HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        ) % SLOW_APP_SECONDS
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
    assert answers(received) == [200, 200], received[:300]


def test_an_idle_keep_alive_connection_is_still_uvicorns_to_close(server: InProcessServer) -> None:
    """Between two requests the connection is idle, not slow: its keep-alive timeout
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
    """The HTTP protocol hands the connection over; its timers must go with it (here after
    a request on the same connection, which left uvicorn's own keep-alive timer to arm)."""
    handshake = HANDSHAKE
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(request("/first", b"{}"))
        first = sock.recv(65536)
        assert answers(first) == [200], first
        sock.sendall(handshake)
        switched = sock.recv(65536)
        assert switched.startswith(b"HTTP/1.1 101"), switched
        sock.settimeout(KEEP_ALIVE + DEADLINE * 2)
        with pytest.raises(TimeoutError):
            sock.recv(65536)  # neither closed nor written to
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_a_client_has_its_whole_time_after_100_continue(server: InProcessServer) -> None:
    """Its time starts when the 100 is sent, not when the head came: told just before the
    deadline, it still has all of it for the body."""
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /r?sleep=%g HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % (DEADLINE * 0.75)
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"a" * 10)
        time.sleep(DEADLINE * 0.5)
        sock.sendall(b"b" * 10)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]


def test_a_request_answered_before_its_body_leaves_the_next_one_its_own_time(
    server: InProcessServer,
) -> None:
    """Answered at once (a 401), the request's body came later: the next request on the
    connection had what was left of the first one's time."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        first = sock.recv(65536)
        assert answers(first) == [401], first
        time.sleep(DEADLINE * 0.2)
        sock.sendall(b"0123456789")  # the first request's body
        time.sleep(DEADLINE * 0.6)
        second = request("/second", b"{}", b"Connection: close")
        sock.sendall(second[:-2])
        time.sleep(DEADLINE * 0.3)
        sock.sendall(second[-2:])
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]


def test_a_request_too_slow_behind_a_running_one_leaves_it_its_answer(
    server: InProcessServer, app: RecordingApp
) -> None:
    with connect(server.port) as sock:
        sock.sendall(request(f"/a?sleep={SLOW_APP_SECONDS:g}", b"{}") + request("/b", b"{}")[:10])
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
    assert app.started == ["/a"]


def test_requests_pipelined_ahead_of_a_slow_one_are_all_answered_and_none_errs(
    server: InProcessServer, app: RecordingApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The deadline passed while the second of them ran and the third waited its turn: the
    connection was closed under them, and the second wrote to the closed transport."""
    pipelined = (
        request(f"/a?sleep={SLOW_APP_SECONDS:g}", b"{}")
        + request(f"/b?sleep={SLOW_APP_SECONDS:g}", b"{}")
        + request("/c", b"{}")
        + b"POST /d HT"
    )
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(pipelined)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200, 200, 200], received[:300]
    assert app.started == ["/a", "/b", "/c"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_client_that_takes_no_answer_is_dropped(
    server: InProcessServer, app: RecordingApp, caplog: pytest.LogCaptureFixture
) -> None:
    """It held the connection, and the answer buffered for it, for as long as it liked."""
    with caplog.at_level(logging.WARNING), slow_reader(server.port) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and read nothing
        wait_until(lambda: app.started, "the request never started")
        wait_until_dropped(server)
    assert app.started == ["/big"]
    assert "took no data" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_request_arriving_with_the_body_of_one_answered_early_keeps_its_connection(
    server: InProcessServer, app: RecordingApp
) -> None:
    """The keep-alive timer the early answer left was armed again when its body completed,
    and closed the connection under the next request, which had arrived in the same read."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        first = sock.recv(65536)
        assert answers(first) == [401], first
        slow = request(f"/b?sleep={KEEP_ALIVE + 0.5:g}", b"{}", b"Connection: close")
        sock.sendall(b"0123456789" + slow)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
    assert app.disconnected == []


def test_a_request_half_received_when_the_one_ahead_is_answered_gets_its_408(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn armed its keep-alive timer then, as for an idle connection, and closed it
    without an answer (at 5 s, before the 10 s read deadline)."""
    monkeypatch.setattr(http_connection, "REQUEST_READ_SECONDS", KEEP_ALIVE + 1.0)
    with connect(server.port) as sock:
        sock.sendall(request("/a?sleep=0.2", b"{}") + request("/b", b"{}")[:10])
        received, _ = read_until_closed(sock)
    assert answers(received) == [200, 408], received[:300]


def test_a_request_held_back_by_the_server_has_its_whole_time_once_read_again(
    server: InProcessServer,
) -> None:
    """The time reading was paused (the second request waiting its turn) was counted: the
    third, half sent, got what was left of one deadline once reading resumed."""
    third = request("/c", b"{}", b"Connection: close")
    with connect(server.port) as sock:
        sock.sendall(
            request(f"/a?sleep={DEADLINE * 1.6:g}", b"{}") + request("/b", b"{}") + third[:10]
        )
        received = b""
        while answers(received) != [200, 200]:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        time.sleep(DEADLINE / 2)
        sock.sendall(third[10:])
        rest, _ = read_until_closed(sock)
    assert answers(rest) == [200], rest[:300]


def test_request_trailers_are_refused_and_reach_no_application(
    server: InProcessServer, app: RecordingApp, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn adds them to the request's headers, where an `Authorization` in a trailer
    (which a proxy checking headers lets through) authenticated the request."""
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(
            b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n"
        )
        received, _ = read_until_closed(sock)
    assert answers(received) == [400], received[:300]
    assert b"trailers" in received
    assert "trailer" in caplog.text  # (its own warning: not just uvicorn's "Invalid HTTP")
    deadline = time.monotonic() + 5
    while app.started != app.disconnected:  # (started, it is told the client has gone)
        assert time.monotonic() < deadline, (app.started, app.disconnected)
        time.sleep(0.01)


def test_a_long_trailer_is_refused_long_before_it_is_all_read(server: InProcessServer) -> None:
    """Trailers are parsed as headers are, at a cost growing with the square of their size
    on the event loop; only the head was bounded."""
    sent = 0
    with connect(server.port) as sock:
        sock.sendall(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ")
        try:
            while sent < 4 * 1024 * 1024 and not select.select([sock], [], [], 0.002)[0]:
                sock.sendall(b"a" * 16384)
                sent += 16384
        except (BrokenPipeError, ConnectionResetError):
            pass
        received, _ = read_until_closed(sock)
    assert answers(received) == [431], received[:300]
    assert sent < 1024 * 1024, sent


def test_a_client_reading_a_large_answer_steadily_is_not_dropped(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The write deadline is for a client that takes nothing, not for one that takes a large
    answer (written in one piece) in longer than the deadline."""
    size = 32 * 1024 * 1024
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(f"GET /big?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        while received < size:
            chunk = sock.recv(65536)
            assert chunk, f"dropped after {received} bytes"
            received += len(chunk)
            time.sleep(0.001)
    assert "took no data" not in caplog.text


def test_a_client_that_resets_its_connection_leaves_no_timer_behind(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        with connect(server.port) as sock:
            sock.sendall(request("/a", b"{}"))
            assert answers(sock.recv(65536)) == [200]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(KEEP_ALIVE + DEADLINE * 2)
    assert "took no data" not in caplog.text, caplog.text


def test_an_upgrade_behind_a_running_request_is_refused_after_its_answer(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Handed over at once, the WebSocket got the running request's answer in its stream."""
    with caplog.at_level(logging.WARNING), connect(server.port) as sock:
        sock.sendall(request("/a?sleep=0.3", b"{}") + HANDSHAKE)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
    assert b"101" not in received
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_chunked_body_in_many_reads_is_served(server: InProcessServer) -> None:
    """Its chunk framing counts toward the bound, its body does not."""
    chunks = b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(60)) + b"0\r\n\r\n"
    head = b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    with connect(server.port) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        for start in range(0, len(chunks), 4096):
            sock.sendall(chunks[start : start + 4096])
            time.sleep(0.002)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
    assert received.count(b"x") == 60 * 1024


def test_a_request_answered_before_its_body_gets_no_second_answer(
    server: InProcessServer,
) -> None:
    """A client told 401 need not send its body (RFC 9110 allows it with `Expect`): it was
    sent a 408 too, a deadline later, which a pipelining client takes for the next answer."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        received, _ = read_until_closed(sock)
    assert answers(received) == [401], received[:300]


def test_a_request_held_back_briefly_has_its_whole_time_once_read_again(
    server: InProcessServer,
) -> None:
    """The hold ended before the deadline first looked: it went unnoticed, and the time
    was counted against the request held."""
    second = request("/b", b"0123456789", b"Connection: close")
    with connect(server.port) as sock:
        sock.sendall(request(f"/a?sleep={DEADLINE * 0.8:g}", b"{}") + second[:-5])
        received = b""
        while answers(received) != [200]:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        time.sleep(DEADLINE * 0.4)
        sock.sendall(second[-5:])
        rest, _ = read_until_closed(sock)
    assert answers(rest) == [200], rest[:300]


def test_pipelined_requests_queue_up_to_a_bound(server: InProcessServer, app: RecordingApp) -> None:
    """Each queued request holds memory: 4 MiB of pipelined requests grew a server by
    400 MB. Past the bound, the queued ones are answered and the connection closed."""
    queued = b"".join(request(f"/q{n}", b"{}") for n in range(MAX_PIPELINED_REQUESTS + 20))
    with connect(server.port) as sock:
        sock.sendall(request(f"/a?sleep={DEADLINE / 2:g}", b"{}") + queued)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200] * (1 + MAX_PIPELINED_REQUESTS), received[-300:]
    assert len(app.started) == 1 + MAX_PIPELINED_REQUESTS


def test_a_closing_connection_with_an_answer_left_untaken_is_dropped(
    server: InProcessServer, app: RecordingApp
) -> None:
    """Less than the server's write buffer's high-water mark was left (so writing never
    paused, and no write deadline ran) when the client ended its side: the close waited for
    the client to take it, for good."""
    with slow_reader(server.port) as client:
        wait_until(lambda: server.server.server_state.connections, "no connection")
        (protocol,) = server.server.server_state.connections
        protocol.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        client.sendall(b"GET /big?size=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        # answered, and not all taken
        wait_until(protocol.transport.get_write_buffer_size, "no answer left untaken")
        assert protocol.transport.get_write_buffer_size() < 64 * 1024  # (as described)
        client.sendall(b"POST /b HTTP/1.1\r\nHo")  # (a request begun: no keep-alive timer)
        client.shutdown(socket.SHUT_WR)  # and read nothing
        wait_until_dropped(server)


def test_a_request_upgrading_to_anything_but_a_websocket_is_the_connections_last(
    server: InProcessServer, app: RecordingApp
) -> None:
    """httptools takes such a request for bodiless and parses on: its body, read next, ran
    as a request of its own, past a proxy that framed it as one request with a body."""
    inner = b"POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    head = (
        b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: %d\r\n\r\n" % len(inner)
    )
    with connect(server.port) as sock:
        sock.sendall(head)
        time.sleep(0.3)
        sock.sendall(inner)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
    assert b"connection: close" in received.lower()
    assert app.started == ["/a"]


def test_a_websocket_upgrade_with_an_answer_left_untaken_is_refused(
    server: InProcessServer, app: RecordingApp
) -> None:
    """Handed over, the connection escaped the write deadline: the WebSocket protocol only
    closes, and a close waits for the client to take what is buffered (a stopping server
    waited with it)."""
    with slow_reader(server.port) as client:
        client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and read nothing
        wait_until(lambda: app.started, "the request never started")
        time.sleep(0.2)
        client.sendall(HANDSHAKE)
        wait_until_dropped(server)


def test_a_head_of_many_headers_is_refused_however_it_arrives(server: InProcessServer) -> None:
    """The read a head begins in was not counted: a head seven times the bound, arriving in
    one read, reached the application (60,000 header pairs, megabytes of objects)."""
    head = b"GET /a HTTP/1.1\r\nHost: x\r\n" + b"a: b\r\n" * 10_000 + b"\r\n"
    with connect(server.port) as sock:
        sock.sendall(head)
        received, _ = read_until_closed(sock)
    assert answers(received) == [431], received[:300]
    few = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"a: b\r\n" * 90 + b"\r\n"
    with connect(server.port) as sock:
        sock.sendall(few)
        received, _ = read_until_closed(sock)
    assert answers(received) == [200], received[:300]
