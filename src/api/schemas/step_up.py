"""Generic challenge and step-up bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from api.schemas.common import Identifier, Request
from api.schemas.push import PushContext

Method = Literal["totp", "backup_code", "sms", "email", "push", "webauthn"]


class CreateChallengeRequest(Request):
    method: Method
    # push only: what the phone shows about the login (as for `POST /mfa/push/challenge`)
    context: PushContext | None = None


class ChallengeResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    challenge_id: str
    method: str
    expires_at: datetime
    options: dict[str, Any] | None = None
    number: str | None = None


class StepUpRequest(Request):
    challenge_id: Identifier
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    credential: dict[str, Any] | None = None


class StepUpResponse(msgspec.Struct, kw_only=True):
    step_up_token: str
    acr: str
    amr: list[str]
    expires_at: datetime
    method: str
