"""uvicorn's httptools protocol as `mfa serve` runs it: the deadlines of
`api.http_connection`, bounds on what a request may make the parser do, and problem
responses for the requests it refuses itself.

httptools sets no limit on the request line and headers, and its cost grows with the square
of their size on the event loop: one unauthenticated 80 MB header held every other request
(`/health` included) for seconds. Here a head still unfinished past MAX_REQUEST_HEAD_BYTES is
answered 431 and the connection closed; so is chunk framing past the same bound. Request
trailers are refused, and so are more than MAX_PIPELINED_REQUESTS requests queued on a
connection.
"""

from __future__ import annotations

from typing import Any

from api.http_connection import GuardedHttpProtocol
from api.http_problems import NO_TRAILERS, answer_too_large

# Identity providers' tokens are at most 8 KiB (api.auth.MAX_TOKEN_LENGTH); browsers and
# proxies stay far below this too (nginx refuses a single header line over 8 KiB by default).
MAX_REQUEST_HEAD_BYTES = 32 * 1024
# Requests queued behind a running one on a connection (each holds its scope and headers:
# 4 MiB of pipelined requests grew a server by 400 MB). Browsers do not pipeline at all.
MAX_PIPELINED_REQUESTS = 64
MAX_REQUEST_HEADERS = 100  # (browsers send about 20; proxies add a few)
HEAD_TOO_LARGE = answer_too_large("line and headers", MAX_REQUEST_HEAD_BYTES, MAX_REQUEST_HEADERS)
TAIL_TOO_LARGE = answer_too_large("chunk framing and trailer", MAX_REQUEST_HEAD_BYTES)


class _StopParsingError(Exception):
    """Raised from a parser callback, after a refusal, to stop the parser there."""


class BoundedHeadProtocol(GuardedHttpProtocol):
    """`GuardedHttpProtocol` that refuses a request head (or chunk framing) larger than
    MAX_REQUEST_HEAD_BYTES, request trailers, and a queue of pipelined requests longer than
    MAX_PIPELINED_REQUESTS.

    The bytes counted are those of every chunk received after the one the request began in,
    while its head is unfinished: the parser does not say where in that first chunk the
    request began (after a pipelined request's body, say), so it is not counted: a head is
    refused once it is past the bound by at most that read and the last (64-256 KiB each), a
    cost of well under a millisecond.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._began_in_this_read = False
        self._ended_head_in_this_read = False
        self._head_bytes = 0
        self._tail_bytes = 0  # of a request's chunk framing (and trailer, until refused)
        self._body_bytes = 0  # of the body, in the read under way
        self._head_parsed = 0  # of the request line's target and the headers, as parsed
        self._headers = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began_in_this_read = True
        self._tail_bytes = self._head_parsed = self._headers = 0

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a trailer: uvicorn adds it to the headers the app reads
            self.logger.warning("Refused a request with a trailer (400).")
            self._refuse(NO_TRAILERS)
            raise _StopParsingError  # (stops the parser; uvicorn's 400 then does nothing)
        # Counted exactly too: a head that came in one read is not counted by reads.
        self._head_parsed += len(name) + len(value) + 4
        self._headers += 1
        if self._head_parsed > MAX_REQUEST_HEAD_BYTES or self._headers > MAX_REQUEST_HEADERS:
            self._head_too_large()
            raise _StopParsingError
        super().on_header(name, value)

    def _head_too_large(self) -> None:
        self.logger.warning(
            "Refused a request whose head exceeds %d bytes or %d headers (431).",
            MAX_REQUEST_HEAD_BYTES,
            MAX_REQUEST_HEADERS,
        )
        self._refuse(HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._ended_head_in_this_read = True
        super().on_headers_complete()
        if len(self.pipeline) > MAX_PIPELINED_REQUESTS:
            self.pipeline.popleft()  # (the newest, never to run)
            self.cycle = self._cycle_before  # type: ignore[assignment]
            self.logger.warning(
                "Closed a connection with more than %d requests queued.", MAX_PIPELINED_REQUESTS
            )
            self._refuse(None)  # the queued ones are answered, then the connection closes
            raise _StopParsingError

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def data_received(self, data: bytes) -> None:
        self._began_in_this_read = self._ended_head_in_this_read = False
        self._body_bytes = 0
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
            self._head_too_large()

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


HTTP_PROTOCOL = f"{__name__}:{BoundedHeadProtocol.__name__}"
