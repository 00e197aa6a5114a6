"""Audit history bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class AuditEventResponse(msgspec.Struct, kw_only=True):
    position: int | None
    time: datetime
    type: str
    version: int
    redacted: bool
    damaged: bool
    data: dict[str, Any] | None


class AuditEventListResponse(msgspec.Struct, kw_only=True):
    items: list[AuditEventResponse]
    next_cursor: str | None
