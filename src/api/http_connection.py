"""uvicorn's httptools protocol with deadlines (`api.http_protocol` adds byte bounds).

uvicorn bounds only the idle time between two requests (its keep-alive timeout), and only
until the next request's first byte: a connection that sent nothing, a head sent a byte at a
time or a body that never ended was held for good, and a few thousand of them (slowloris)
used up the process's file descriptors. Here a request must arrive whole within
REQUEST_READ_SECONDS of the server waiting for it; a request begun and unfinished then is
answered 408, and the connection is closed. A client that takes nothing of what is written
to it for STALLED_WRITE_SECONDS (requests for large answers, never read) is dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.http_problems import NOT_HTTP, answer_too_slow

# Our requests are a few KiB at most (bodies are refused over 64 KiB): even a slow mobile
# link sends one in well under a second. nginx allows 60 s, but between two reads.
REQUEST_READ_SECONDS = 10.0
# A client that takes nothing of what the server writes for this long (its receive window
# shut) is dropped: the slowest client we know of still reads kilobytes a second.
STALLED_WRITE_SECONDS = 10.0


class _Flow(FlowControl):
    """uvicorn's flow control, telling the protocol when reading resumes."""

    def __init__(self, transport: asyncio.Transport, on_resume: Any) -> None:
        super().__init__(transport)
        self._on_resume = on_resume

    def resume_reading(self) -> None:
        paused = self.read_paused
        super().resume_reading()
        if paused:
            self._on_resume()


class GuardedHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses a request that does not arrive whole within
    REQUEST_READ_SECONDS and drops a client that takes none of its answers for
    STALLED_WRITE_SECONDS.

    The read deadline runs while the server waits for the client: from the connection's
    start, or the first byte after an idle keep-alive spell (uvicorn's own timeout covers
    the spell), until the request is whole. It is not renewed by each byte. Time the server
    takes does not count: the application's, a client's wait for `100 Continue` (its time
    starts when the 100 is sent), or for the server to read again (a pipelined request
    behind a running one).

    A refusal (`_refuse`: 408 here, 400 for bytes that are not HTTP, and the subclass's) is
    the connection's last answer: nothing more is read. Answers still owed to earlier
    requests on it go out first, and the last of them closes it; a request whose body will
    not come now is answered by the refusal itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its headers are not complete
        self._in_message = False  # a request has begun and is not complete
        self._cycle_before: RequestResponseCycle | None = None
        self._read_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._reading_done = False  # refused: what comes after is not read
        self._handed_over = False  # upgraded to a WebSocket: another protocol's connection
        self._started: list[RequestResponseCycle] = []  # uvicorn tracks only the newest
        self._read_held = False  # the last look found the server holding the request back
        self._write_backlog = 0  # buffered when the write deadline was set
        self._lost = False

    # The connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _Flow(transport, self._reading_resumed)  # (before any request's cycle)
        self._watch_reading()

    def eof_received(self) -> None:
        super().eof_received()
        # asyncio closes the transport on return, and the close waits for what it holds
        self.loop.call_soon(self._bound_closing)

    def shutdown(self) -> None:
        super().shutdown()
        self._bound_closing()  # (a server stopping waits for every connection to close)

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
        running = set(self.tasks)
        super()._start_asgi_task(cycle, app)
        for task in self.tasks - running:  # (uvicorn closes the transport itself when the
            task.add_done_callback(lambda _: self._bound_closing())  # app fails mid-answer)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._in_message = True
        self._cycle_before = self.cycle  # (a message that makes none is an upgrade)
        # Not idle: a keep-alive timer left by the request ahead (armed when its body came
        # after its answer, see on_message_complete) would close the connection under it.
        self._unset_keepalive_if_required()

    def on_headers_complete(self) -> None:
        self._in_head = False
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
        try:
            super().data_received(data)
        finally:
            self._watch_reading()

    # Refusals

    def _refuse(self, answer: bytes | None) -> None:
        """Read nothing more; `answer` (if any) is the connection's last (see the class)."""
        if self._reading_done:
            return
        answered_early = (  # the request being read was answered before its body came
            self._in_message
            and not self._in_head
            and self.cycle is not None
            and self.cycle is not self._cycle_before
            and self.cycle.response_started
        )
        self._reading_done = True
        self._in_head = self._in_message = False
        self._stop_read_deadline()
        if answered_early:
            answer = None  # its answer is the connection's last
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

    def _reading_resumed(self) -> None:
        """uvicorn reads again (it had held a request back): the client's time starts now."""
        if self._in_message:
            self._stop_read_deadline()
            self._watch_reading()

    def _stop_read_deadline(self) -> None:
        self._read_held = False
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        if not self._awaiting_client():
            self._bound_closing()  # (closed meanwhile by a path that did not bound it)
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
        if self._responding() or self.transport.get_write_buffer_size():
            self._refuse(None)  # (an answer untaken would escape the write deadline)
            return
        self._handed_over = True
        self._stop_read_deadline()
        self._stop_write_deadline()
        self._unset_keepalive_if_required()
        super().handle_websocket_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        """A request with an `Upgrade` other than websocket (`curl --http2` sends `h2c` on
        each one) is served as it was parsed, and is the connection's last: httptools
        takes it for bodiless and parses on, so its body would run as a request of its own
        (past a proxy that framed it as one request with a body). uvicorn warned of each
        one: a line per request is no news, and a flood."""
        self.logger.debug("Unsupported upgrade request.")
        self._refuse(None)
