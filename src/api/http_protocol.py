"""uvicorn's httptools protocol with a bound on the size of a request's head, and problem
responses for the requests it refuses itself.

httptools sets no limit on the request line and headers, and its cost grows with the square
of their size on the event loop: one unauthenticated 80 MB header held every other request
(`/health` included) for seconds. Here a head still unfinished past MAX_REQUEST_HEAD_BYTES is
answered 431 and the connection closed.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Identity providers' tokens are at most 8 KiB (api.auth.MAX_TOKEN_LENGTH); browsers and
# proxies stay far below this too (nginx refuses a single header line over 8 KiB by default).
MAX_REQUEST_HEAD_BYTES = 32 * 1024


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


class BoundedHeadProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses a request head larger than MAX_REQUEST_HEAD_BYTES.

    The bytes counted are those of every chunk received after the one the request began in,
    while its head is unfinished: the parser does not say where in that first chunk the
    request began (after a pipelined request's body, say), so it is not counted: a head is
    refused once it is past the bound by at most that read and the last (64-256 KiB each), a
    cost of well under a millisecond.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # a request has begun and its headers are not complete
        self._began_in_this_read = False
        self._head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began_in_this_read = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        self._began_in_this_read = False
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

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses, as a problem (it was `text/plain`).

        Not while an earlier request on the connection is still to be answered (pipelined
        ahead of the bytes): written at once, the 400 went out as that request's answer. It
        gets its own, then the connection closes; what came after is not read."""
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
