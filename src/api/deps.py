"""The runtime every handler is given, and shared handler helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from litestar import Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from api.schemas.common import Problem
from api.settings import Settings
from commands.app import Outcome, Services
from infra.sql import Cursor, Database
from projections.nats_relay import NatsRelay
from projections.runner import ProjectionRunner, ReadModels

T = TypeVar("T")


class ReadModelBehindError(Exception):
    """The projections did not reach the caller's last write in time (answered as 503)."""


POSITION_HEADER = "X-MFA-Position"

# Query parameters every paginated list takes (API.md: default 50, at most 200).
Limit = Annotated[int, QueryParameter(ge=1, le=200)]
PageCursor = Annotated[str | None, QueryParameter(max_length=512)]
UserIdPath = Annotated[str, PathParameter(min_length=1, max_length=256)]
READ_WAIT_SECONDS = 10.0


@dataclass
class Runtime:
    """Everything the API was composed with (built once in `api.app.create_app`)."""

    settings: Settings
    services: Services
    db: Database
    read_models: ReadModels
    runner: ProjectionRunner | None
    relay: NatsRelay | None = None

    def start(self) -> None:
        """Start the background work this process does (projections, relay)."""
        if self.runner is not None:
            self.runner.start()
        if self.relay is not None:
            self.relay.start()

    def stop(self) -> None:
        """Stop the background work and close the stores."""
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
        if claimed.isdigit() and len(claimed) < 19:
            position = max(position, int(claimed))
        if not self.read_models.wait_for(position, timeout=READ_WAIT_SECONDS):
            # Serving a read that misses the caller's own write would be a lie: say so.
            raise ReadModelBehindError("the read models are behind this client's writes")
        with self.db.transaction() as cur:
            yield cur


def provide_runtime(request: Request[Any, Any, Any]) -> Runtime:
    """Dependency: the runtime stored on the application state."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def written(content: T, outcome: Outcome[Any], status_code: int = 200) -> Response[T]:
    """A response to a write, carrying the log position for read-your-writes elsewhere."""
    return Response(
        content=content,
        status_code=status_code,
        headers={POSITION_HEADER: str(outcome.position)},
    )


_DESCRIPTIONS = {
    400: "Malformed input (`validation_error`)",
    401: "Missing or invalid bearer token (`unauthorized`)",
    403: "Missing scope (`forbidden`), or a rejected code (`invalid_code`)",
    404: "Unknown id (`not_found`)",
    409: "Conflicts with the current state (`conflict`, `not_enrolled`, `already_enrolled`)",
    410: "The challenge expired (`challenge_expired`)",
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
            description=_DESCRIPTIONS[status],
            media_type="application/problem+json",
            generate_examples=False,
        )
        for status in sorted({400, 401, 503, *statuses})
    }
