"""Push request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from api.schemas.common import SHOWN_TEXT, Identifier, Name, Request

# Any case ("iOS"): stored in lower case.
Platform = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$(?!\n)")
]
# No control characters in anything stored: PostgreSQL text cannot hold NUL, and a read model
# that cannot write one row stops every read model. (`$(?!\n)`: see api.schemas.common.)
Printable = r"^[^\x00-\x1f\x7f]*$(?!\n)"
PushToken = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, pattern=Printable)]
PublicKey = Annotated[
    str, msgspec.Meta(min_length=43, max_length=44, pattern=r"^[A-Za-z0-9_-]+=?$(?!\n)")
]
Signature = Annotated[
    str, msgspec.Meta(min_length=86, max_length=88, pattern=r"^[A-Za-z0-9_-]+=*$(?!\n)")
]
Number = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{2}$(?!\n)")]
# Shown on the phone that approves: no controls or bidi overrides ("Approved by IT\u202e").
ContextValue = Annotated[str, msgspec.Meta(max_length=256, pattern=SHOWN_TEXT)]


class SyncDeviceRequest(Request):
    device_id: Identifier
    name: Name
    platform: Platform
    push_token: PushToken
    public_key: PublicKey
    app_version: Annotated[str, msgspec.Meta(max_length=32, pattern=Printable)] = ""
    revoke: bool = False


class PushDeviceResponse(msgspec.Struct, kw_only=True):
    device_id: str
    name: str
    platform: str
    app_version: str
    created_at: datetime
    updated_at: datetime


class SyncedDeviceResponse(PushDeviceResponse, kw_only=True):
    created: bool
    revoked: bool = False


class PushDeviceListResponse(msgspec.Struct, kw_only=True):
    items: list[PushDeviceResponse]
    next_cursor: str | None


class PushContext(Request):
    ip: ContextValue | None = None
    user_agent: ContextValue | None = None
    app: ContextValue | None = None


class CreatePushChallengeRequest(Request):
    context: PushContext | None = None


class PushChallengeCreatedResponse(msgspec.Struct, kw_only=True):
    challenge_id: str
    status: str
    number: str
    expires_at: datetime


class ApprovePushRequest(Request):
    challenge_id: Identifier
    device_id: Identifier
    number: Number
    signature: Signature


class DenyPushRequest(Request):
    challenge_id: Identifier
    device_id: Identifier
    signature: Signature
    reason: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,32}$(?!\n)")] | None = None


class PushChallengeResponse(msgspec.Struct, kw_only=True):
    challenge_id: str
    status: str
    created_at: datetime
    expires_at: datetime
    responded_at: datetime | None = None
    device_id: str | None = None
    reason: str | None = None
    context: dict[str, Any] = {}


class InternalPushChallengeResponse(PushChallengeResponse, kw_only=True):
    user_id: str  # whose login it is: a service checks it is the user logging in


class PushHistoryItem(PushChallengeResponse, kw_only=True):
    user_id: str
    fraud: bool = False
    rejected_responses: int = 0


class PushHistoryResponse(msgspec.Struct, kw_only=True):
    items: list[PushHistoryItem]
    next_cursor: str | None


class PushStatsResponse(msgspec.Struct, kw_only=True):
    total: int
    by_status: dict[str, int]
    approval_rate: float | None
    median_response_s: float | None
    p95_response_s: float | None
    fraud_reports: int
