"""Backup-code request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from api.schemas.common import Request


class GeneratedBackupCodesResponse(msgspec.Struct, kw_only=True):
    codes: list[str]
    generated_at: datetime


class VerifyBackupCodeRequest(Request):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class BackupCodeVerifiedResponse(msgspec.Struct, kw_only=True):
    verified: bool
    remaining: int


class BackupCodeCountResponse(msgspec.Struct, kw_only=True):
    remaining: int
    total: int


class BackupCodeOverviewResponse(msgspec.Struct, kw_only=True):
    user_id: str
    remaining: int
    total: int
    generated_at: datetime | None = None
    last_used_at: datetime | None = None


class BackupCodeOverviewListResponse(msgspec.Struct, kw_only=True):
    items: list[BackupCodeOverviewResponse]
    next_cursor: str | None
