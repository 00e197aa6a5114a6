"""Trusted-device request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from api.schemas.common import Name, Request


class RememberDeviceRequest(Request):
    name: Name | None = None
    ttl_days: Annotated[int, msgspec.Meta(ge=1, le=90)] | None = None


class RememberedDeviceResponse(msgspec.Struct, kw_only=True):
    device_id: str
    device_token: str
    name: str
    expires_at: datetime


class TrustedDeviceResponse(msgspec.Struct, kw_only=True):
    device_id: str
    name: str
    created_at: datetime
    expires_at: datetime


class TrustedDeviceListResponse(msgspec.Struct, kw_only=True):
    items: list[TrustedDeviceResponse]
    next_cursor: str | None


class TrustCheckResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    trusted: bool
    device_id: str | None = None
    expires_at: datetime | None = None


class RevokedResponse(msgspec.Struct, kw_only=True):
    revoked: int


class RemovedResponse(msgspec.Struct, kw_only=True):
    removed: int
