"""The runtime every handler is given, and shared handler helpers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import PathParameter, QueryParameter

from api.auth import Principal, principal_of
from api.schemas.common import USER_ID_BOUNDS, Problem
from api.settings import Settings
from commands.app import Outcome, Services
from infra.notify import LogWaker
from infra.sql import Cursor, Database
from projections.nats_relay import NatsRelay
from projections.runner import ProjectionRunner
from projections.tracking import ReadModels

T = TypeVar("T")


class ReadModelBehindError(Exception):
    """The projections did not reach the caller's last write in time (answered as 503)."""


POSITION_HEADER = "X-MFA-Position"
# The `security` of a public route: no authentication. (An empty list would not do: it is left
# out of the document, and the route would inherit the bearer requirement of every other one.)
PUBLIC: list[dict[str, list[str]]] = [{}]

# Query parameters every paginated list takes (API.md: default 50, at most 200).
Limit = Annotated[int, QueryParameter(ge=1, le=200)]
PageCursor = Annotated[str | None, QueryParameter(max_length=512)]
UserIdPath = Annotated[str, PathParameter(**USER_ID_BOUNDS)]
# A time in a query: RFC 3339 with an offset, declared as a string because Litestar would also
# read an epoch number or a time without a zone as a datetime. Handlers call `parse_time`.
RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$(?!\n)"
)
TimeQuery = Annotated[
    str | None, QueryParameter(pattern=RFC3339, max_length=64, schema_extra={"format": "date-time"})
]
READ_WAIT_SECONDS = 10.0


def parse_time(name: str, value: str | None) -> datetime | None:
    """The instant of a `TimeQuery` value, in UTC; 400 `validation_error` when there is no such
    time, or it lies outside the years 1-9999 once in UTC (`9999-12-31T23:59:59-01:00`)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        message = "not a valid RFC 3339 time"
        extra = [{"key": name, "message": message, "source": "query"}]
        raise ValidationException(detail=f"{name}: {message}", extra=extra) from exc


MAX_JSON_DEPTH = 16


def nested_too_deeply(value: Any) -> bool:
    """Whether arrays and objects nest more than MAX_JSON_DEPTH levels in a decoded JSON
    value, found without recursing."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth == MAX_JSON_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def _body_error(message: str, key: str = "data") -> ValidationException:
    extra = [{"key": key, "message": message, "source": "body"}]
    return ValidationException(detail=f"{key}: {message}", extra=extra)


_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
_NOT_JSON = "the body must be JSON, sent as Content-Type: application/json"

# Nothing in the API nests this deep; deeper values would reach code (copies, re-encoding for
# py_webauthn) that recurses once per level.
_NESTED_TOO_DEEPLY = f"nested more than {MAX_JSON_DEPTH} levels deep"


# Where msgspec says the error is: " - at `$.a.b[0]`", or for a map's key " - at `key` in `$.a`".
_LOCATION = re.compile(r" - at `(?P<of_key>key` in `)?\$(?P<path>[^`]*)`$")


def _located(text: str) -> tuple[str, str]:
    """msgspec's message without its location, and the member's path (empty: the body)."""
    match = _LOCATION.search(text)
    if match is None:
        return text, ""
    message = text[: match.start()]
    if match["of_key"]:
        message = f"a key: {message}"
    return message, match["path"].lstrip(".")


class StrictJsonRequest(Request[Any, Any, Any]):
    """Requests whose JSON body must have exactly the JSON types the OpenAPI document shows.

    Litestar converts bodies leniently (`0` or `"true"` for a boolean, `"5"` for an integer, an
    epoch number for a datetime); the body is first checked strictly against the handler's
    `data` type, so what the document calls invalid is a 400 `validation_error`.
    """

    async def json(self) -> Any:
        media_type = self.headers.get("content-type", "").partition(";")[0].strip()
        if media_type and not _JSON_MEDIA_TYPE.fullmatch(media_type) and await self.body():
            # A form or text body is not read as JSON (a body without a Content-Type is).
            raise HTTPException(status_code=415, detail=_NOT_JSON)
        try:
            value = await super().json()
        except RecursionError:  # msgspec's decoder, some thousands of levels deep
            raise _body_error(_NESTED_TOO_DEEPLY) from None
        except UnicodeDecodeError:  # msgspec lets this through Litestar's DecodeError handler
            raise _body_error("not valid UTF-8") from None
        except SerializationException as exc:
            # msgspec's words, such as "Number out of range - at `$.signals[...]`", with the
            # member named where it names one ("Input data was truncated" is its word for a
            # lone surrogate too): a problem with `errors` like every other validation error.
            message, path = _located(str(exc.detail))
            key = path.split("[", 1)[0] or "data"
            if message.startswith("Input data was truncated"):
                message = "not valid JSON (cut short, or a lone surrogate in a string)"
            raise _body_error(message, key) from None
        if nested_too_deeply(value):
            raise _body_error(_NESTED_TOO_DEEPLY)
        field = self.route_handler.parsed_data_field
        if field is not None:
            try:
                msgspec.convert(value, field.annotation, strict=True)
            except msgspec.ValidationError as exc:
                message, path = _located(str(exc))
                key = path or "data"
                extra = [{"key": key, "message": message, "source": "body"}]
                raise ValidationException(detail=f"{key}: {message}", extra=extra) from exc
        return value


@dataclass
class OptionalBody(Operation):
    """The operation of a handler whose body may be left out (`data: X | None = None`): Litestar
    marks every request body required, so its handlers set `operation_class=OptionalBody`."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


@dataclass
class Runtime:
    """Everything the API was composed with (built once in `api.app.create_app`)."""

    settings: Settings
    services: Services
    db: Database
    read_models: ReadModels
    runner: ProjectionRunner | None
    relay: NatsRelay | None = None
    waker: LogWaker | None = None  # wakes them on other processes' appends (PostgreSQL)

    def start(self) -> None:
        """Start the background work this process does (projections, relay)."""
        if self.runner is not None:
            self.runner.start()
        if self.relay is not None:
            self.relay.start()
        if self.waker is not None:
            self.waker.start()

    def stop(self) -> None:
        """Stop the background work and close the stores."""
        if self.waker is not None:
            self.waker.stop()
        if self.runner is not None:
            self.runner.stop()
        if self.relay is not None:
            self.relay.stop()

    @contextmanager
    def read(self, user_id: str | None, request: Request[Any, Any, Any]) -> Iterator[Cursor]:
        """A read-model cursor once the projections have seen this caller's writes.

        The position is the newest of: what this process wrote for the user, and what the
        client says it wrote (`X-MFA-Position`, for writes that went to another instance).
        """
        position = self.services.writes.position(user_id) if self.services.writes else 0
        claimed = request.headers.get(POSITION_HEADER, "")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if (
            claimed.isascii()
            and claimed.isdigit()
            and len(claimed) < 19
            and int(claimed) > position
        ):
            # No write lies beyond the head of the log: a larger claim would only hold a
            # worker thread for the whole wait and then answer 503.
            position = min(int(claimed), self.services.app.max_position())
        if not self.read_models.wait_for(position, timeout=READ_WAIT_SECONDS):
            # Serving a read that misses the caller's own write would be a lie: say so.
            raise ReadModelBehindError("the read models are behind this client's writes")
        with self.db.read() as cur:
            yield cur


def provide_runtime(request: Request[Any, Any, Any]) -> Runtime:
    """Dependency: the runtime stored on the application state."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def provide_user(request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Principal:
    """Dependency: the authenticated caller.

    It takes `runtime` only to be resolved after it: Litestar resolves the dependencies of one
    level in an anyio task group per request, which cost about 8 % of a TOTP validate's CPU.
    """
    return principal_of(request)


def written(content: T, outcome: Outcome[Any], status_code: int = 200) -> Response[T]:
    """A response to a write, carrying the log position for read-your-writes elsewhere."""
    return Response(
        content=content,
        status_code=status_code,
        headers={POSITION_HEADER: str(outcome.position)},
    )


DESCRIPTIONS = {
    400: "Malformed input (`validation_error`)",
    401: "Missing or invalid bearer token (`unauthorized`)",
    403: "Missing scope (`forbidden`), or a rejected code (`invalid_code`)",
    404: "Unknown id (`not_found`)",
    409: "Conflicts with the current state (`conflict`, `not_enrolled`, `already_enrolled`)",
    410: "The challenge expired (`challenge_expired`)",
    405: "The path names another route, which does not take this method (`method_not_allowed`)",
    413: "The request body is over 64 KiB (`payload_too_large`)",
    415: "The body is not JSON: Content-Type must be application/json (`unsupported_media_type`)",
    429: "Locked out or rate limited (`locked`, `rate_limited`), with Retry-After",
    501: "Not implemented yet (`not_implemented`)",
    502: "A code or push could not be delivered (`delivery_failed`)",
    503: "A backing store is unavailable (`unavailable`)",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem responses a route can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=DESCRIPTIONS[status],
            media_type="application/problem+json",
            generate_examples=False,
        )
        for status in sorted({400, 401, 503, *statuses})
    }
