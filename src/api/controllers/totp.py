"""TOTP: set up, verify, validate, switch on/off, and the device resource."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from api.auth import Principal, authenticated
from api.deps import Limit, OptionalBody, PageCursor, Runtime, problems, written
from api.schemas.totp import (
    SetUpTotpRequest,
    TotpDeviceListResponse,
    TotpDeviceResponse,
    TotpSetupResponse,
    TotpSwitchResponse,
    TotpValidatedResponse,
    TotpVerifiedResponse,
    ValidateTotpRequest,
    VerifyTotpRequest,
)
from commands import totp
from commands.totp import TotpSetup
from domain.errors import NotFoundError
from domain.totp import TotpDevice, setup_expires_at
from projections.devices import get_totp_device, list_totp_devices

DeviceId = Annotated[str, PathParameter(max_length=128)]


def device_response(device: TotpDevice | dict[str, Any]) -> TotpDeviceResponse:
    """The public view of a device (never its secret)."""
    fields = device if isinstance(device, dict) else vars(device)
    return TotpDeviceResponse(
        device_id=fields["device_id"],
        name=fields["name"],
        status=str(fields["status"]),
        created_at=fields["created_at"],
        verified_at=fields.get("verified_at"),
        last_used_at=fields.get("last_used_at"),
        expires_at=setup_expires_at(fields["status"], fields["created_at"]),
    )


def setup_response(setup: TotpSetup) -> TotpSetupResponse:
    return TotpSetupResponse(
        device_id=setup.device.device_id,
        name=setup.device.name,
        status=str(setup.device.status),
        expires_at=setup.device.expires_at,
        secret=setup.secret,
        otpauth_uri=setup.otpauth_uri,
        qr_svg=setup.qr_svg,
    )


class TotpController(Controller):
    """`/mfa/totp`: the caller's own TOTP."""

    path = "/mfa/totp"
    guards = [authenticated]
    tags = ["totp"]

    @post(
        "/setup",
        status_code=201,
        sync_to_thread=True,
        responses=problems(409),
        operation_class=OptionalBody,
    )
    def set_up(
        self,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        data: JSONBody[SetUpTotpRequest | None] = None,
    ) -> Response[TotpSetupResponse]:
        """Register a pending device; the secret and QR code are shown this once."""
        outcome = totp.set_up_totp(runtime.services, user.sub, data.name if data else None)
        return written(setup_response(outcome.value), outcome, 201)

    @post(
        "/verify", status_code=200, sync_to_thread=True, responses=problems(403, 404, 409, 410, 429)
    )
    def verify(
        self,
        data: JSONBody[VerifyTotpRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[TotpVerifiedResponse]:
        """The first valid code activates the device."""
        outcome = totp.verify_totp(runtime.services, user.sub, data.code, data.device_id)
        return written(
            TotpVerifiedResponse(device_id=outcome.value.device_id, enabled=True), outcome
        )

    @post("/validate", status_code=200, sync_to_thread=True, responses=problems(403, 409, 429))
    def validate(
        self,
        data: JSONBody[ValidateTotpRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[TotpValidatedResponse]:
        """Login check; each time step passes once per device."""
        outcome = totp.validate_totp(runtime.services, user.sub, data.code)
        return written(TotpValidatedResponse(verified=True, device_id=outcome.value), outcome)

    @post("/enable", status_code=200, sync_to_thread=True, responses=problems(409))
    def enable(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[TotpSwitchResponse]:
        """Switch TOTP back on after `disable`."""
        outcome = totp.enable_totp(runtime.services, user.sub)
        return written(TotpSwitchResponse(enabled=True, device_ids=outcome.value), outcome)

    @post("/disable", status_code=200, sync_to_thread=True, responses=problems(409))
    def disable(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[TotpSwitchResponse]:
        """Switch TOTP off (every active device)."""
        outcome = totp.disable_totp(runtime.services, user.sub)
        return written(TotpSwitchResponse(enabled=False, device_ids=outcome.value), outcome)

    @get("/devices", sync_to_thread=True, responses=problems())
    def list_devices(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> TotpDeviceListResponse:
        """The caller's devices (read model), oldest first."""
        with runtime.read(user.sub, request) as cur:
            rows, next_cursor = list_totp_devices(cur, user.sub, limit, cursor)
        return TotpDeviceListResponse(
            items=[device_response(r) for r in rows], next_cursor=next_cursor
        )

    @post(
        "/devices",
        status_code=201,
        sync_to_thread=True,
        responses=problems(409),
        operation_class=OptionalBody,
    )
    def register_device(
        self,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        data: JSONBody[SetUpTotpRequest | None] = None,
    ) -> Response[TotpSetupResponse]:
        """Register another (named) device; same as setup."""
        outcome = totp.set_up_totp(runtime.services, user.sub, data.name if data else None)
        return written(setup_response(outcome.value), outcome, 201)

    @get("/devices/{device_id:str}", sync_to_thread=True, responses=problems(404))
    def get_device(
        self,
        request: Request[Any, Any, Any],
        device_id: DeviceId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> TotpDeviceResponse:
        """One of the caller's devices."""
        with runtime.read(user.sub, request) as cur:
            row = get_totp_device(cur, user.sub, device_id)
        if row is None:
            raise NotFoundError(f"no TOTP device {device_id!r}")
        return device_response(row)

    @delete(
        "/devices/{device_id:str}",
        status_code=200,
        sync_to_thread=True,
        responses=problems(404, 409),
    )
    def revoke_device(
        self,
        device_id: DeviceId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[dict[str, Any]]:
        """Remove a device and its secret."""
        outcome = totp.revoke_totp_device(runtime.services, user.sub, device_id)
        return written({"device_id": device_id, "revoked": True}, outcome)

    @post(
        "/devices/{device_id:str}/disable",
        status_code=200,
        sync_to_thread=True,
        responses=problems(404, 409),
    )
    def disable_device(
        self,
        device_id: DeviceId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[TotpDeviceResponse]:
        """Stop one device from passing validation."""
        outcome = totp.disable_totp_device(runtime.services, user.sub, device_id)
        return written(device_response(outcome.value), outcome)

    @post(
        "/devices/{device_id:str}/enable",
        status_code=200,
        sync_to_thread=True,
        responses=problems(404, 409),
    )
    def enable_device(
        self,
        device_id: DeviceId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[TotpDeviceResponse]:
        """Let a disabled device pass validation again."""
        outcome = totp.enable_totp_device(runtime.services, user.sub, device_id)
        return written(device_response(outcome.value), outcome)
