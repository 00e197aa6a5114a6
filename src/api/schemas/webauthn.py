"""WebAuthn request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from api.schemas.common import Identifier, Name, Request

Credential = Annotated[dict[str, Any], msgspec.Meta(description="the browser's toJSON() output")]


class StartRegistrationRequest(Request):
    name: Name | None = None


class RegistrationOptionsResponse(msgspec.Struct, kw_only=True):
    registration_id: str
    options: dict[str, Any]
    expires_at: datetime


class FinishRegistrationRequest(Request):
    registration_id: Identifier
    credential: Credential
    name: Name | None = None


class WebAuthnCredentialResponse(msgspec.Struct, kw_only=True):
    credential_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    transports: list[str] = []
    aaguid: str = ""
    backup_eligible: bool = False
    backed_up: bool = False
    user_verified: bool = False
    sign_count: int = 0
    clone_suspected: bool = False


class WebAuthnCredentialListResponse(msgspec.Struct, kw_only=True):
    items: list[WebAuthnCredentialResponse]
    next_cursor: str | None


class RenameCredentialRequest(Request):
    name: Name
