"""The answers the HTTP server gives itself, before a request reaches the application
(`api.http_protocol`): whole responses, each a problem (API.md) closing the connection."""

from __future__ import annotations

import json


def problem_response(status: int, reason: str, detail: str) -> bytes:
    """A whole response: a `validation_error` problem, with the connection closed after it."""
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


NOT_HTTP = problem_response(400, "Bad Request", "the request is not valid HTTP/1.1")
NO_TRAILERS = problem_response(400, "Bad Request", "request trailers are not accepted")


def answer_too_large(what: str, limit: int, count: int | None = None) -> bytes:
    fields = f" or {count} fields" if count is not None else ""
    return problem_response(
        431,
        "Request Header Fields Too Large",
        f"the request's {what} exceed {limit} bytes{fields}",
    )


def answer_too_slow(seconds: float) -> bytes:
    return problem_response(
        408, "Request Timeout", f"the request did not arrive whole within {seconds:g} s"
    )
