"""uvicorn's httptools protocol with bounds on the size of a request's head, on the time a
request takes to arrive and on the time a client leaves its answers untaken, and problem
responses for the requests it refuses itself.

httptools sets no limit on the request line and headers, and its cost grows with the square
of their size on the event loop: one unauthenticated 80 MB header held every other request
(`/health` included) for seconds. Here a head still unfinished past MAX_REQUEST_HEAD_BYTES is
answered 431 and the connection closed.

uvicorn bounds only the idle time between two requests (its keep-alive timeout), and only
until the next request's first byte: a connection that sent nothing, a head sent a byte at a
time or a body that never ended was held for good, and a few thousand of them (slowloris)
used up the process's file descriptors. Here a request must arrive whole within
REQUEST_READ_SECONDS of the server waiting for it; a request begun and unfinished then is
answered 408, and the connection is closed. A client that takes none of what is written
to it for STALLED_WRITE_SECONDS (requests for large answers, never read) is dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.http_problems import NO_TRAILERS, NOT_HTTP, answer_too_large, answer_too_slow

# Identity providers' tokens are at most 8 KiB (api.auth.MAX_TOKEN_LENGTH); browsers and
# proxies stay far below this too (nginx refuses a single header line over 8 KiB by default).
MAX_REQUEST_HEAD_BYTES = 32 * 1024
# Our requests are a few KiB at most (bodies are refused over 64 KiB): even a slow mobile
# link sends one in well under a second. nginx allows 60 s, but between two reads.
REQUEST_READ_SECONDS = 10.0
# A client that takes nothing of what the server writes for this long (its receive window
# shut) is dropped: the slowest client we know of still reads kilobytes a second.
STALLED_WRITE_SECONDS = 10.0
HEAD_TOO_LARGE = answer_too_large("line and headers", MAX_REQUEST_HEAD_BYTES)
TAIL_TOO_LARGE = answer_too_large("chunk framing and trailer", MAX_REQUEST_HEAD_BYTES)


class _TrailerRefusedError(Exception):
    """Raised from a parser callback to stop the parser at a request trailer."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses a request head larger than MAX_REQUEST_HEAD_BYTES, a
    request that does not arrive whole within REQUEST_READ_SECONDS, and a client that takes
    none of its answers for STALLED_WRITE_SECONDS.

    The bytes counted are those of every chunk received after the one the request began in,
    while its head is unfinished: the parser does not say where in that first chunk the
    request began (after a pipelined request's body, say), so it is not counted: a head is
    refused once it is past the bound by at most that read and the last (64-256 KiB each), a
    cost of well under a millisecond.

    The read deadline runs while the server waits for the client: from the connection's
    start, or the first byte after an idle keep-alive spell (uvicorn's own timeout covers
    the spell), until the request is whole. It is not renewed by each byte. Time the server
    takes does not count: the application's, a client's wait for `100 Continue` (its time
    starts when the 100 is sent), or for the server to read again (a pipelined request
    behind a running one).

    A refusal (431, 400, 408) is the connection's last answer: nothing more is read. Answers
    still owed to earlier requests on it go out first, and the last of them closes it; a
    request whose body will not come now is answered by the refusal itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its headers are not complete
        self._in_message = False  # a request has begun and is not complete
        self._began_in_this_read = False
        self._head_bytes = 0
        self._read_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._reading_done = False  # refused: what comes after is not read
        self._handed_over = False  # upgraded to a WebSocket: another protocol's connection
        self._started: list[RequestResponseCycle] = []  # uvicorn tracks only the newest
        self._cycle_before: RequestResponseCycle | None = None
        self._tail_bytes = 0  # of a request's chunk framing (and trailer, until refused)
        self._body_bytes = 0  # of the body, in the read under way
        self._ended_head_in_this_read = False
        self._read_held = False  # the last look found the server holding the request back
        self._write_backlog = 0  # buffered when the write deadline was set
        self._lost = False

    # The connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stop_read_deadline()
        self._stop_write_deadline()
        self._unset_keepalive_if_required()  # (uvicorn leaves it set when the client reset)
        # uvicorn tells only its newest request: an earlier one still running would write to
        # the closed transport ("Exception in ASGI application")
        for cycle in self._started:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._started = [c for c in self._started if not c.response_complete]
        self._started.append(cycle)
        super()._start_asgi_task(cycle, app)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._in_message = True
        self._began_in_this_read = True
        self._cycle_before = self.cycle  # (a message that makes none is an upgrade)
        self._tail_bytes = 0
        # Not idle: a keep-alive timer left by the request ahead (armed when its body came
        # after its answer, see on_message_complete) would close the connection under it.
        self._unset_keepalive_if_required()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a trailer: uvicorn adds it to the headers the app reads
            self._refuse(NO_TRAILERS)
            raise _TrailerRefusedError  # (stops the parser; uvicorn's 400 then does nothing)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._ended_head_in_this_read = True
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.waiting_for_100_continue:
            self._time_from_continue(cycle)

    def _time_from_continue(self, cycle: RequestResponseCycle) -> None:
        """The client sends the body once told to (uvicorn's `100 Continue`, when the
        application first asks for it): its time starts then."""
        receive = cycle.receive

        async def receive_after_continue() -> Any:
            if cycle.waiting_for_100_continue:  # the 100 goes out now
                self._stop_read_deadline()
                self._watch_reading()
            return await receive()

        cycle.receive = receive_after_continue  # type: ignore[method-assign]

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle is not self._cycle_before  # this message's own (not an upgrade)
            and cycle.response_complete
            and cycle.keep_alive
            and not self.pipeline
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            # Answered before its body came (a 401, say): uvicorn armed its keep-alive timer
            # then, and the body's arrival cancelled it; the connection is idle again now.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_response_complete(self) -> None:
        if self._handed_over:
            return
        super().on_response_complete()
        if self._in_message:  # the next request is half received: not idle (its deadline)
            self._unset_keepalive_if_required()
        self._watch_reading()
        self._bound_closing()  # (an answer with `connection: close` closed the transport)

    def timeout_keep_alive_handler(self) -> None:
        if self._handed_over or self._lost:
            return
        super().timeout_keep_alive_handler()
        self._bound_closing()

    def data_received(self, data: bytes) -> None:
        if self._reading_done:
            return
        self._began_in_this_read = self._ended_head_in_this_read = False
        self._body_bytes = 0
        try:
            self._receive(data)
        finally:
            self._watch_reading()

    def _receive(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_done or self.transport.is_closing():
            return
        if self._in_message and not self._in_head:
            self._count_tail(len(data) - self._body_bytes)
        if not self._in_head:
            return
        # the read a request began in is not counted (see above); each later one wholly
        self._head_bytes = 0 if self._began_in_this_read else self._head_bytes + len(data)
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self.logger.warning(
                "Refused a request whose head exceeds %d bytes (431).", MAX_REQUEST_HEAD_BYTES
            )
            self._refuse(HEAD_TOO_LARGE)

    def _count_tail(self, framing: int) -> None:
        """What follows the head that is not body (chunk sizes and extensions, a trailer
        before it is refused) is bounded as the head is: parsed, it costs as much. The read
        that ended the head is not counted (it holds the head's end), each later one
        wholly, less the body in it."""
        if self._ended_head_in_this_read or self._began_in_this_read:
            return
        self._tail_bytes += framing
        if self._tail_bytes > MAX_REQUEST_HEAD_BYTES:
            self.logger.warning(
                "Refused a request whose chunk framing or trailer exceeds %d bytes (431).",
                MAX_REQUEST_HEAD_BYTES,
            )
            self._refuse(TAIL_TOO_LARGE)

    # Refusals

    def _refuse(self, answer: bytes | None) -> None:
        """Read nothing more; `answer` (if any) is the connection's last (see the class)."""
        if self._reading_done:
            return
        self._reading_done = True
        self._in_head = self._in_message = False
        self._stop_read_deadline()
        current = self.cycle
        unfinished = (
            current
            if current is not None and current.more_body and not current.response_complete
            else None
        )
        if unfinished is not None and any(c is unfinished for c, _ in self.pipeline):
            # queued behind a running request: never to run, its body will not come
            self.pipeline = type(self.pipeline)(p for p in self.pipeline if p[0] is not unfinished)
            unfinished = None
        if unfinished is not None:  # running, waiting for the body that will not come
            if answer is not None and not unfinished.response_started:
                self.transport.write(answer)
            unfinished.disconnected = True  # (now: the rest of this read may complete it)
            unfinished.message_event.set()
            self.transport.close()
            self._bound_closing()
            return
        owed = [c for c in self._started if not c.response_complete]
        owed += [c for c, _ in reversed(self.pipeline)]  # (uvicorn runs them from the right)
        if owed:
            owed[-1].keep_alive = False  # the last answer closes the connection
            self.transport.pause_reading()
            return
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()
        self._bound_closing()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses, as a problem (it was `text/plain`),
        and not ahead of the answers still owed on the connection (written at once, the 400
        went out as an earlier pipelined request's answer)."""
        self._refuse(NOT_HTTP)

    # The read deadline

    def _responding(self) -> bool:
        """An earlier request (or the one whose body is being read) is still to be answered."""
        return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

    def _awaiting_client(self) -> bool:
        """The server waits for the client: a request is unfinished, or nothing is asked
        and no keep-alive timer runs (a new connection, or bytes that began no request)."""
        if self._lost or self._handed_over or self._reading_done or self.transport.is_closing():
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
        self._read_held = False
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
        if held_by_server:  # not the client's time: look again soon
            self._read_held = True
            self._read_deadline = self.loop.call_later(
                REQUEST_READ_SECONDS / 10, self._read_too_slow
            )
            return
        if self._read_held:  # read again since the last look: the client's time starts now
            self._read_held = False
            self._watch_reading()
            return
        if not self._in_message:
            self._refuse(None)  # nothing asked: nothing to answer
            return
        self.logger.warning(
            "Refused a request that did not arrive within %g s (408).", REQUEST_READ_SECONDS
        )
        self._refuse(answer_too_slow(REQUEST_READ_SECONDS))

    # The write deadline

    def pause_writing(self) -> None:
        super().pause_writing()
        self._start_write_deadline()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.transport.is_closing():
            self._stop_write_deadline()

    def _bound_closing(self) -> None:
        """A closing transport waits for what it still holds to be taken: as long as the
        client likes. The write deadline runs until the close is done."""
        if self.transport.is_closing():
            self._start_write_deadline()

    def _start_write_deadline(self) -> None:
        if self._write_deadline is None and not self._lost and not self._handed_over:
            self._write_backlog = self.transport.get_write_buffer_size()
            self._write_deadline = self.loop.call_later(STALLED_WRITE_SECONDS, self._write_stalled)

    def _stop_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _write_stalled(self) -> None:
        """The client took nothing of what was written for STALLED_WRITE_SECONDS: it holds
        the connection, and the answers buffered for it, for as long as it likes otherwise
        (even a close waits for them to be taken). One that took some is given as long
        again."""
        self._write_deadline = None
        backlog = self.transport.get_write_buffer_size()
        if backlog < self._write_backlog:
            self._start_write_deadline()
            return
        self.logger.warning(
            "Dropped a connection whose client took no data for %g s.", STALLED_WRITE_SECONDS
        )
        self.transport.abort()

    def handle_websocket_upgrade(self) -> None:
        """The connection is the WebSocket protocol's from here: no HTTP request is awaited.
        Not while an earlier request is still to be answered (its answer would go into the
        WebSocket's stream): refused, after that answer."""
        if self._responding():
            self._refuse(None)
            return
        self._handed_over = True
        self._stop_read_deadline()
        self._stop_write_deadline()
        self._unset_keepalive_if_required()
        super().handle_websocket_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn warns of every request with an `Upgrade` other than websocket (`curl
        --http2` sends `h2c` on each one): a line per request is no news, and a flood."""
        self.logger.debug("Unsupported upgrade request.")


HTTP_PROTOCOL = f"{__name__}:{BoundedHeadProtocol.__name__}"
