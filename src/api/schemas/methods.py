"""Methods, primary credential and status bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class MethodResponse(msgspec.Struct, kw_only=True):
    method: str
    # whether this deployment offers the method (false: SMS or email without its provider)
    available: bool
    enabled: bool
    credentials: int
    primary: bool
    details: dict[str, Any]


class MethodListResponse(msgspec.Struct, kw_only=True):
    items: list[MethodResponse]
    next_cursor: str | None  # always null: every method fits one page
    primary_method: str | None


class PrimaryCredentialResponse(msgspec.Struct, kw_only=True):
    credential_id: str
    method: str
    primary: bool


class MethodRemovedResponse(msgspec.Struct, kw_only=True):
    method: str
    removed: bool


class LockResponse(msgspec.Struct, kw_only=True):
    factor: str
    locked_until: datetime


class StatusResponse(msgspec.Struct, kw_only=True):
    user_id: str
    mfa_enabled: bool
    methods: list[MethodResponse]
    primary_method: str | None
    primary_credential_id: str | None
    locks: list[LockResponse]
