"""SMS and email request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from api.schemas.common import Request

PhoneNumber = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
EmailAddress = Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
SixDigitCode = Annotated[str, msgspec.Meta(min_length=6, max_length=6, pattern=r"^[0-9]{6}$(?!\n)")]


class EnrolSmsRequest(Request):
    phone_number: PhoneNumber


class EnrolEmailRequest(Request):
    email: EmailAddress


class VerifyOobCodeRequest(Request):
    code: SixDigitCode


class CodeSentResponse(msgspec.Struct, kw_only=True):
    method: str
    purpose: str
    expires_at: datetime
    destination_hint: str


class OobVerifiedResponse(msgspec.Struct, kw_only=True):
    method: str
    purpose: str
    verified: bool
    enabled: bool


class OobDisabledResponse(msgspec.Struct, kw_only=True):
    method: str
    enabled: bool
