"""Reset (admin) and erasure (internal) of a user's MFA state."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, post
from litestar import Request as HttpRequest
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api.auth import Principal, admin_only, internal_only
from api.controllers.config import changed, changed_by
from api.deps import OptionalBody, Runtime, UserIdPath, problems, written
from api.schemas.common import Request, UserId
from commands.erase import erase_user, reset_user

# A reset's reason, in the query or in the body: the same bounds either way.
REASON_BOUNDS: dict[str, Any] = {
    "min_length": 3,
    "max_length": 500,
    "pattern": r"^[^\x00-\x1f\x7f]+$(?!\n)",
}
Reason = Annotated[str | None, QueryParameter(**REASON_BOUNDS)]


class EraseRequest(Request):
    user_id: UserId


class ResetRequest(Request):
    reason: Annotated[str, msgspec.Meta(**REASON_BOUNDS)] | None = None


class ErasedResponse(msgspec.Struct, kw_only=True):
    erased: bool


class ResetResponse(msgspec.Struct, kw_only=True):
    user_id: str
    reset: bool
    removed_methods: list[str]


class AdminResetController(Controller):
    """`DELETE /admin/mfa/reset/{user_id}?reason=...`."""

    path = "/admin/mfa/reset"
    guards = [admin_only]
    tags = ["admin"]

    @delete(
        "/{user_id:str}",
        status_code=200,
        sync_to_thread=True,
        responses=problems(403, 409),
        operation_class=OptionalBody,
    )
    def reset(
        self,
        request: HttpRequest[Any, Any, Any],
        user_id: UserIdPath,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        reason: Reason = None,
        data: JSONBody[ResetRequest | None] = None,
    ) -> Response[ResetResponse]:
        """Remove every factor of a user; the admin and the reason (if given, in the query or
        the body) are recorded. A user with no MFA state at all is 404."""
        given = reason or (data.reason if data else None) or ""
        by = changed_by(request, user, runtime)
        outcome = reset_user(runtime.services, user_id, by, given)
        body = ResetResponse(user_id=user_id, reset=True, removed_methods=outcome.value)
        return changed(body, outcome, by)  # its request id, as in the config audit log


class EraseController(Controller):
    """`POST /internal/mfa/erase`."""

    path = "/internal/mfa/erase"
    guards = [internal_only]
    tags = ["internal"]

    @post("/", status_code=200, sync_to_thread=True, responses=problems(403, 409))
    def erase(
        self, data: JSONBody[EraseRequest], runtime: NamedDependency[Runtime]
    ) -> Response[ErasedResponse]:
        """Crypto-shred the user's MFA data (idempotent): past events read as redacted."""
        outcome = erase_user(runtime.services, data.user_id)
        return written(ErasedResponse(erased=outcome.value), outcome)
