"""uvicorn's httptools protocol with bounds on the size of a request's head and on the time
a request takes to arrive, and problem responses for the requests it refuses itself.

httptools sets no limit on the request line and headers, and its cost grows with the square
of their size on the event loop: one unauthenticated 80 MB header held every other request
(`/health` included) for seconds. Here a head still unfinished past MAX_REQUEST_HEAD_BYTES is
answered 431 and the connection closed.

uvicorn bounds only the idle time between two requests (its keep-alive timeout), and only
until the next request's first byte: a connection that sent nothing, a head sent a byte at a
time or a body that never ended was held for good, and a few thousand of them (slowloris)
used up the process's file descriptors. Here a request must arrive whole within
REQUEST_READ_SECONDS of the server waiting for it; a request begun and unfinished then is
answered 408, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Identity providers' tokens are at most 8 KiB (api.auth.MAX_TOKEN_LENGTH); browsers and
# proxies stay far below this too (nginx refuses a single header line over 8 KiB by default).
MAX_REQUEST_HEAD_BYTES = 32 * 1024
# Our requests are a few KiB at most (bodies are refused over 64 KiB): even a slow mobile
# link sends one in well under a second. nginx allows 60 s, but between two reads.
REQUEST_READ_SECONDS = 10.0


def _problem(status: int, reason: str, detail: str) -> bytes:
    """A whole response, a problem (API.md) with the connection closed after it: what the
    server answers itself, before any request reaches the application."""
    body = json.dumps(
        {
            "type": "urn:mfa:problem:validation_error",
            "title": "Validation error",  # as the application titles `validation_error`
            "status": status,
            "detail": detail,
            "code": "validation_error",
        },
        separators=(",", ":"),
    ).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n".encode()
        + b"content-type: application/problem+json\r\n"
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + b"cache-control: no-store\r\n"
        + b"connection: close\r\n\r\n"
        + body
    )


_TOO_LARGE = _problem(
    431,
    "Request Header Fields Too Large",
    f"the request line and headers exceed {MAX_REQUEST_HEAD_BYTES} bytes",
)
_NOT_HTTP = _problem(400, "Bad Request", "the request is not valid HTTP/1.1")


def _too_slow(seconds: float) -> bytes:
    return _problem(
        408, "Request Timeout", f"the request did not arrive whole within {seconds:g} s"
    )


class BoundedHeadProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses a request head larger than MAX_REQUEST_HEAD_BYTES,
    and a request that does not arrive whole within REQUEST_READ_SECONDS.

    The bytes counted are those of every chunk received after the one the request began in,
    while its head is unfinished: the parser does not say where in that first chunk the
    request began (after a pipelined request's body, say), so it is not counted: a head is
    refused once it is past the bound by at most that read and the last (64-256 KiB each), a
    cost of well under a millisecond.

    The read deadline runs while the server waits for the client: from the connection's
    start, or the first byte after an idle keep-alive spell (uvicorn's own timeout covers
    the spell), until the request is whole. It is not renewed by each byte. Time the server
    takes does not count: the application's, or a client's wait for `100 Continue`, or for
    the server to read again (a pipelined request behind a running one).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its headers are not complete
        self._in_message = False  # a request has begun and is not complete
        self._began_in_this_read = False
        self._head_bytes = 0
        self._read_deadline: asyncio.TimerHandle | None = None
        self._handed_over = False  # upgraded to a WebSocket: another protocol's connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._in_message = True
        self._began_in_this_read = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reading()

    def data_received(self, data: bytes) -> None:
        self._began_in_this_read = False
        try:
            self._receive(data)
        finally:
            self._watch_reading()

    def _receive(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # the read a request began in is not counted (see above); each later one wholly
        self._head_bytes = 0 if self._began_in_this_read else self._head_bytes + len(data)
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._in_head = False
            self.logger.warning(
                "Refused a request whose head exceeds %d bytes (431).", MAX_REQUEST_HEAD_BYTES
            )
            # A 431 only where it cannot be taken for an earlier pipelined request's answer
            # (one still running, or waiting its turn): otherwise just the closed connection.
            answering = (self.cycle is not None and not self.cycle.response_complete) or bool(
                self.pipeline
            )
            if not answering:
                self.transport.write(_TOO_LARGE)
            self.transport.close()

    def _responding(self) -> bool:
        """An earlier request (or the one whose body is being read) is still to be answered."""
        return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

    def _awaiting_client(self) -> bool:
        """The server waits for the client: a request is unfinished, or nothing is asked
        and no keep-alive timer runs (a new connection, or bytes that began no request)."""
        if self._handed_over or self.transport.is_closing():
            return False
        if self._in_message:
            return True
        return not self._responding() and self.timeout_keep_alive_task is None

    def _watch_reading(self) -> None:
        if not self._awaiting_client():
            self._stop_read_deadline()
        elif self._read_deadline is None:
            self._read_deadline = self.loop.call_later(REQUEST_READ_SECONDS, self._read_too_slow)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        if not self._awaiting_client():
            return
        cycle = self.cycle
        held_by_server = self.flow.read_paused or (
            self._in_message
            and not self._in_head
            and cycle is not None
            and cycle.waiting_for_100_continue
        )
        if held_by_server:
            self._watch_reading()  # the client is not at fault (yet): wait again
            return
        if self._in_message:
            # A 408 only where it is this request's answer: not after an earlier one still
            # to be answered, nor in the middle of this one's (given before its body came).
            if self._in_head:
                answerable = not self._responding()
            else:
                answerable = not (cycle is None or cycle.response_started or self.pipeline)
            self.logger.warning(
                "Closed a connection whose request did not arrive within %g s (408).",
                REQUEST_READ_SECONDS,
            )
            if answerable:
                self.transport.write(_too_slow(REQUEST_READ_SECONDS))
        self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        """The connection is the WebSocket protocol's from here: no HTTP request is awaited."""
        self._handed_over = True
        self._stop_read_deadline()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses, as a problem (it was `text/plain`).

        Not while an earlier request on the connection is still to be answered (pipelined
        ahead of the bytes): written at once, the 400 went out as that request's answer. It
        gets its own, then the connection closes; what came after is not read."""
        self._in_head = self._in_message = False  # nothing more is read: none is awaited
        waiting = [c for c, _ in self.pipeline]
        if self.cycle is not None and not self.cycle.response_complete:
            waiting.append(self.cycle)
        if waiting:
            for cycle in waiting:
                cycle.keep_alive = False  # the first answer to finish closes the connection
            self.transport.pause_reading()
            return
        self.transport.write(_NOT_HTTP)
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn warns of every request with an `Upgrade` other than websocket (`curl
        --http2` sends `h2c` on each one): a line per request is no news, and a flood."""
        self.logger.debug("Unsupported upgrade request.")


HTTP_PROTOCOL = f"{__name__}:{BoundedHeadProtocol.__name__}"
