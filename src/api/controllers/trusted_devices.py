"""Trusted devices: remember, check, list, get, revoke one or all, clean up."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, PathParameter

from api.auth import Principal, authenticated
from api.deps import Limit, OptionalBody, PageCursor, Runtime, problems, written
from api.schemas.trusted_devices import (
    RememberDeviceRequest,
    RememberedDeviceResponse,
    RemovedResponse,
    RevokedResponse,
    TrustCheckResponse,
    TrustedDeviceListResponse,
    TrustedDeviceResponse,
)
from commands import trusted_devices
from domain.errors import NotFoundError
from projections.trusted_devices import get_trusted_device, list_trusted_devices

DeviceId = Annotated[str, PathParameter(min_length=1, max_length=128)]
# No length bound: whatever an app kept is only a token that is known or not (`trusted: false`),
# never a 400; the server's header size limit bounds the hashing.
DeviceToken = Annotated[str | None, HeaderParameter(name="X-MFA-Device-Token", required=False)]


class TrustedDeviceController(Controller):
    """`/mfa/trusted-devices`."""

    path = "/mfa/trusted-devices"
    guards = [authenticated]
    tags = ["trusted devices"]

    @post(
        "/",
        status_code=201,
        sync_to_thread=True,
        responses=problems(409),
        operation_class=OptionalBody,
    )
    def remember(
        self,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        data: JSONBody[RememberDeviceRequest | None] = None,
    ) -> Response[RememberedDeviceResponse]:
        """Remember this device; the token is shown once and stored only as a hash."""
        outcome = trusted_devices.remember_device(
            runtime.services, user.sub, data.name if data else None, data.ttl_days if data else None
        )
        device = outcome.value.device
        body = RememberedDeviceResponse(
            device_id=device.device_id,
            device_token=outcome.value.token,
            name=device.name,
            expires_at=device.expires_at,
        )
        return written(body, outcome, 201)

    @get("/check", sync_to_thread=True, responses=problems())
    def check(
        self,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        token: DeviceToken = None,
    ) -> TrustCheckResponse:
        """Whether the `X-MFA-Device-Token` header names a valid trusted device of the caller."""
        device = trusted_devices.check_device(runtime.services, user.sub, token or "")
        if device is None:
            return TrustCheckResponse(trusted=False)
        return TrustCheckResponse(
            trusted=True, device_id=device.device_id, expires_at=device.expires_at
        )

    @post("/cleanup", status_code=200, sync_to_thread=True, responses=problems(409))
    def clean_up(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[RemovedResponse]:
        """Remove the caller's expired trusted devices."""
        outcome = trusted_devices.clean_up_devices(runtime.services, user.sub)
        return written(RemovedResponse(removed=outcome.value), outcome)

    @delete("/", status_code=200, sync_to_thread=True, responses=problems(409))
    def revoke_all(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[RevokedResponse]:
        """Forget every trusted device of the caller."""
        outcome = trusted_devices.revoke_all_devices(runtime.services, user.sub)
        return written(RevokedResponse(revoked=outcome.value), outcome)

    @get("/", sync_to_thread=True, responses=problems())
    def list_devices(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> TrustedDeviceListResponse:
        with runtime.read(user.sub, request) as cur:
            rows, next_cursor = list_trusted_devices(cur, user.sub, limit, cursor)
        return TrustedDeviceListResponse(
            items=[TrustedDeviceResponse(**r) for r in rows], next_cursor=next_cursor
        )

    @get("/{device_id:str}", sync_to_thread=True, responses=problems(404))
    def get_device(
        self,
        request: Request[Any, Any, Any],
        device_id: DeviceId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> TrustedDeviceResponse:
        with runtime.read(user.sub, request) as cur:
            row = get_trusted_device(cur, user.sub, device_id)
        if row is None:
            raise NotFoundError("no such trusted device")
        return TrustedDeviceResponse(**row)

    @delete("/{device_id:str}", status_code=200, sync_to_thread=True, responses=problems(404, 409))
    def revoke(
        self,
        device_id: DeviceId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[RevokedResponse]:
        outcome = trusted_devices.revoke_device(runtime.services, user.sub, device_id)
        return written(RevokedResponse(revoked=1), outcome)
