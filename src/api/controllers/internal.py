"""Service-to-service endpoints (scope `mfa:internal`)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api.auth import internal_only
from api.controllers.methods import status_of
from api.controllers.totp import device_response
from api.deps import Limit, PageCursor, Runtime, UserIdPath, problems, written
from api.schemas.common import USER_ID_BOUNDS
from api.schemas.methods import StatusResponse
from api.schemas.totp import (
    InternalUserRequest,
    InternalValidateTotpRequest,
    TotpDeviceListResponse,
    TotpSwitchResponse,
    TotpValidatedResponse,
)
from commands import totp
from projections.devices import list_totp_devices

UserIdQuery = Annotated[str, QueryParameter(**USER_ID_BOUNDS)]


class InternalController(Controller):
    """`/internal/mfa`: status, TOTP validation and management for other services."""

    path = "/internal/mfa"
    guards = [internal_only]
    tags = ["internal"]

    @get("/status/{user_id:str}", sync_to_thread=True, responses=problems(403))
    def status(self, user_id: UserIdPath, runtime: NamedDependency[Runtime]) -> StatusResponse:
        """A user's MFA status."""
        return status_of(runtime.services, user_id)

    @post("/totp/validate", status_code=200, sync_to_thread=True, responses=problems(403, 409, 429))
    def validate_totp(
        self, data: JSONBody[InternalValidateTotpRequest], runtime: NamedDependency[Runtime]
    ) -> Response[TotpValidatedResponse]:
        """Validate a user's TOTP code on the user's behalf. An unknown user, or one without
        TOTP, is refused exactly like a wrong code (403 `invalid_code`, then 429 `locked`)."""
        outcome = totp.validate_totp_for_service(runtime.services, data.user_id, data.code)
        return written(TotpValidatedResponse(verified=True, device_id=outcome.value), outcome)

    @get("/totp/devices", sync_to_thread=True, responses=problems(403))
    def totp_devices(
        self,
        request: Request[Any, Any, Any],
        user_id: UserIdQuery,
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> TotpDeviceListResponse:
        """A user's TOTP devices."""
        with runtime.read(user_id, request) as cur:
            rows, next_cursor = list_totp_devices(cur, user_id, limit, cursor)
        return TotpDeviceListResponse(
            items=[device_response(r) for r in rows], next_cursor=next_cursor
        )

    @post("/totp/disable", status_code=200, sync_to_thread=True, responses=problems(403, 409))
    def disable_totp(
        self, data: JSONBody[InternalUserRequest], runtime: NamedDependency[Runtime]
    ) -> Response[TotpSwitchResponse]:
        """Switch a user's TOTP off."""
        outcome = totp.disable_totp(runtime.services, data.user_id)
        return written(TotpSwitchResponse(enabled=False, device_ids=outcome.value), outcome)
