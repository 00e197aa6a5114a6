"""Every error becomes an RFC 9457 problem (application/problem+json) with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from api.deps import ReadModelBehindError
from commands.app import ConcurrencyConflictError, StoreUnavailableError
from domain.erasure import UserErasedError
from domain.errors import (
    AlreadyEnrolledError,
    ChallengeExpiredError,
    ChallengePendingError,
    ChallengeUsedError,
    ConflictError,
    DeliveryFailedError,
    DomainError,
    FactorLockedError,
    InvalidCodeError,
    LimitExceededError,
    NotEnrolledError,
    NotFoundError,
    RateLimitedError,
)
from infra.outage import SERVER_GOING_AWAY
from infra.sql import DatabaseUnavailableError
from projections.base import InvalidCursorError

log = logging.getLogger("mfa.api")
PROBLEM_JSON = "application/problem+json"

_DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidCodeError: 403,
    FactorLockedError: 429,
    RateLimitedError: 429,
    NotEnrolledError: 409,
    AlreadyEnrolledError: 409,
    NotFoundError: 404,
    ConflictError: 409,
    LimitExceededError: 409,
    ChallengeExpiredError: 410,
    ChallengeUsedError: 409,
    ChallengePendingError: 409,
    DeliveryFailedError: 502,
    UserErasedError: 409,
}

_HTTP_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    502: "delivery_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    501: "not_implemented",
    503: "unavailable",
}


class ProblemError(HTTPException):
    """An HTTP error with an explicit problem code (and extra members)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code
        self.members = extra or {}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """A problem+json response."""
    title = code.replace("_", " ").capitalize()
    body = {"type": f"urn:mfa:problem:{code}", "title": title, "status": status, "detail": detail}
    body["code"] = code
    body.update(extra or {})
    # as on every other answer (the app's cache_control does not reach exception handlers)
    headers = {"Cache-Control": "no-store", **(headers or {})}
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _status_for(exc: DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in _DOMAIN_STATUS:
            return _DOMAIN_STATUS[cls]
    return 400


def domain_error_handler(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """Map a domain refusal to its status and code."""
    status = _status_for(exc)
    if isinstance(exc, FactorLockedError):
        return problem(
            status,
            exc.code,
            exc.detail,
            extra={"retry_after": exc.retry_after_s, "locked_until": exc.until},
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, RateLimitedError):
        return problem(
            status,
            exc.code,
            exc.detail,
            extra={"retry_after": exc.retry_after_s},
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, InvalidCodeError):
        return problem(
            status, exc.code, exc.detail, extra={"attempts_remaining": exc.attempts_remaining}
        )
    return problem(status, exc.code, exc.detail)


def validation_error_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """400 `validation_error`, naming the offending fields (never echoing their values)."""
    fields = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            fields.append({"field": item.get("key"), "message": item.get("message")})
    # When a query parameter fails, Litestar also reports an optional body it did not get to
    # as a KeyError's text ("'data'"): not an error of the request.
    reported = [f for f in fields if f["message"] != f"'{f['field']}'"]
    fields = reported or fields
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields if f["field"]) or (
        exc.detail or "invalid request"
    )
    return problem(400, "validation_error", detail, extra={"errors": fields})


_CLIENT_WENT_AWAY = "client disconnected prematurely"  # litestar.connection.request


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Framework errors (401, 403, 404, 405, ...) as problems."""
    if isinstance(exc, ProblemError):
        return problem(
            exc.status_code, exc.code, exc.detail, extra=exc.members, headers=exc.headers or None
        )
    status = exc.status_code
    if status == HTTP_500_INTERNAL_SERVER_ERROR and exc.detail == _CLIENT_WENT_AWAY:
        # Litestar's word for a client that closed the connection before its body ended: the
        # client's doing, not a server error (anyone could fill the error log and the 5xx
        # count at will). No one reads the answer.
        log.info("a client went away before sending its whole body")
        return problem(400, "validation_error", "the request body was cut off")
    if status >= HTTP_500_INTERNAL_SERVER_ERROR and status != 501 and status != 503:
        log.error("HTTP %s: %s", status, exc.detail)
        return problem(500, "internal_error", "internal error")
    code = _HTTP_CODES.get(status, "error")
    if isinstance(exc, NotAuthorizedException):
        headers = {"WWW-Authenticate": 'Bearer realm="mfa"'}
        return problem(401, "unauthorized", exc.detail or "unauthorized", headers=headers)
    if isinstance(exc, PermissionDeniedException):
        return problem(403, "forbidden", exc.detail or "forbidden")
    if isinstance(exc, NotFoundException):
        return problem(404, "not_found", "not found")
    return problem(status, code, exc.detail or code, headers=exc.headers or None)


def unavailable_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The store is down: 503 fast, so that clients retry elsewhere or later."""
    log.warning("store unavailable: %s", type(exc).__name__)
    return unavailable_response()


def unavailable_response() -> Response[Any]:
    """503 `unavailable`, retry after a second."""
    return problem(
        503, "unavailable", "the service is temporarily unavailable", headers={"Retry-After": "1"}
    )


def conflict_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return problem(409, "conflict", str(exc))


def cursor_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return problem(
        400,
        "validation_error",
        "cursor: malformed cursor",
        extra={"errors": [{"field": "cursor", "message": "malformed cursor"}]},
    )


# SQLSTATEs of a database that is there but cannot do the work now: read only (a standby
# after a failover, `default_transaction_read_only`), out of disk, memory or connections
# (53000-53300; not 53400, a configured limit one statement exceeded), shutting down or
# not accepting connections yet (57P). Whichever layer they surface through (psycopg's own
# error, or the event store's wrapping of it), they are an outage, not a bug.
_UNAVAILABLE_SQLSTATES = ("25006", "53000", "53100", "53200", "53300", SERVER_GOING_AWAY)
_CHAIN_LINKS = 20


def _database_cannot(exc: BaseException) -> str | None:
    """The SQLSTATE of such a refusal in `exc` or what caused it, else None. Follows what
    Python would print as the cause (not a context it was told to suppress), for at most
    _CHAIN_LINKS links (`raise e from e` makes a loop)."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN_LINKS):
        if seen is None:
            break
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return sqlstate
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything unexpected: logged with its traceback (a bug to fix), answered without one;
    a database that cannot do the work now is an outage (503, one line)."""
    sqlstate = _database_cannot(exc)
    if sqlstate is not None:
        log.warning("store unavailable: the database refused (SQLSTATE %s)", sqlstate)
        return unavailable_response()
    log.exception("unhandled error (%s)", type(exc).__name__)
    return problem(500, "internal_error", "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    StoreUnavailableError: unavailable_handler,
    DatabaseUnavailableError: unavailable_handler,
    ReadModelBehindError: unavailable_handler,
    StoreOperationalError: unavailable_handler,
    StoreInterfaceError: unavailable_handler,
    ConcurrencyConflictError: conflict_handler,
    InvalidCursorError: cursor_handler,
    Exception: internal_error_handler,
}


async def html_not_found_as_problem(response: Response[Any]) -> Response[Any]:
    """After every handler: Litestar's OpenAPI router answers an unknown page under `/schema`
    (`/schema/nothing`, `/schema/scalar`) with an HTML 404 of its own, the one answer of the
    service that was not a problem. A coroutine, so it runs in the event loop."""
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        answer = problem(404, "not_found", "not found")
        answer.headers.pop("Cache-Control", None)  # the app's own setting adds it here
        return answer
    return response
