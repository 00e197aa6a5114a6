"""TOTP request and response bodies."""

from __future__ import annotations

from datetime import datetime

import msgspec

from api.schemas.common import Identifier, Name, OtpCode, Request, UserId


class SetUpTotpRequest(Request):
    name: Name | None = None


class TotpSetupResponse(msgspec.Struct, kw_only=True):
    device_id: str
    name: str
    status: str
    expires_at: datetime | None  # verify before this, or set the device up again
    secret: str
    otpauth_uri: str
    qr_svg: str


class VerifyTotpRequest(Request):
    code: OtpCode
    device_id: Identifier | None = None


class TotpVerifiedResponse(msgspec.Struct, kw_only=True):
    device_id: str
    enabled: bool


class ValidateTotpRequest(Request):
    code: OtpCode


class InternalValidateTotpRequest(Request):
    user_id: UserId
    code: OtpCode


class TotpValidatedResponse(msgspec.Struct, kw_only=True):
    verified: bool
    device_id: str


class TotpDeviceResponse(msgspec.Struct, kw_only=True):
    device_id: str
    name: str
    status: str
    created_at: datetime
    verified_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None  # a pending device: verify before this


class TotpDeviceListResponse(msgspec.Struct, kw_only=True):
    items: list[TotpDeviceResponse]
    next_cursor: str | None


class TotpSwitchResponse(msgspec.Struct, kw_only=True):
    enabled: bool
    device_ids: list[str]


class InternalUserRequest(Request):
    user_id: UserId


class AdminTotpStatusResponse(msgspec.Struct, kw_only=True):
    user_id: str
    enabled: bool
    devices: list[TotpDeviceResponse]
