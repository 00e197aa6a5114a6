"""Admin configuration bodies: risk policies, IP allowlist, risk evaluation, audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from api.schemas.common import Request, UserId
from domain.risk import ACTIONS, MAX_STEP_UP_AGE_S, SIGNAL_NAME

Score = Annotated[int, msgspec.Meta(ge=0, le=100)]
Weight = Annotated[int, msgspec.Meta(ge=-100, le=100)]
# The domain's own rules, so that what the OpenAPI document calls valid is accepted.
SignalName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=rf"^{SIGNAL_NAME.pattern}$(?!\n)")
]
Action = Annotated[str, msgspec.Meta(pattern=rf"^({'|'.join(ACTIONS)})$(?!\n)")]
SignalValue = (
    bool
    | Annotated[int, msgspec.Meta(ge=0, le=1000)]
    | Annotated[float, msgspec.Meta(ge=0, le=1000)]
)
Method = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Level = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Cidr = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Description = Annotated[str, msgspec.Meta(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$(?!\n)")]


class Thresholds(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The lowest score of each level above `low` (medium < high < critical)."""

    medium: Score
    high: Score
    critical: Score


class RiskPolicyBody(Request):
    """The global policy. Omitted parts take their defaults; `weights` are laid over the
    default weights (weight 0 switches a signal off)."""

    base_score: Score | None = None
    thresholds: Thresholds | None = None
    weights: Annotated[dict[SignalName, Weight], msgspec.Meta(max_length=64)] | None = None


class LevelPolicyBody(Request):
    action: Action
    allowed_methods: Annotated[list[Method], msgspec.Meta(max_length=16)]
    step_up_max_age_s: Annotated[int, msgspec.Meta(ge=0, le=MAX_STEP_UP_AGE_S)] | None = None


class DryRunPolicyBody(RiskPolicyBody):
    """A draft global policy, and optionally draft level policies, to evaluate unsaved."""

    levels: Annotated[dict[Level, LevelPolicyBody], msgspec.Meta(max_length=4)] | None = None


class ThresholdsResponse(msgspec.Struct, kw_only=True):
    medium: int
    high: int
    critical: int


class RiskPolicyResponse(msgspec.Struct, kw_only=True):
    base_score: int
    thresholds: ThresholdsResponse
    weights: dict[str, int]
    is_default: bool
    updated_by: str | None
    updated_at: datetime | None


class LevelPolicyResponse(msgspec.Struct, kw_only=True):
    level: str
    action: str
    allowed_methods: list[str]
    step_up_max_age_s: int
    is_default: bool
    updated_by: str | None
    updated_at: datetime | None


class LevelPolicyListResponse(msgspec.Struct, kw_only=True):
    items: list[LevelPolicyResponse]


class AllowlistEntryBody(Request):
    """An allowlist entry: a network (host bits zero), what it is, and when it stops counting."""

    cidr: Cidr
    description: Description = ""
    expires_at: AwareDatetime | None = None


class AllowlistEntryResponse(msgspec.Struct, kw_only=True):
    id: str
    cidr: str
    description: str
    expires_at: datetime | None
    expired: bool
    # Broader than a /8 (IPv4) or /32 (IPv6), stored before that limit: it matches nothing
    # and can only be deleted (or replaced by a narrower network).
    too_broad: bool
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class AllowlistEntryListResponse(msgspec.Struct, kw_only=True):
    items: list[AllowlistEntryResponse]
    next_cursor: str | None


class AllowlistEntryDeletedResponse(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool


class EvaluateRiskRequest(Request):
    user_id: UserId
    ip: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    device_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    signals: Annotated[dict[SignalName, SignalValue], msgspec.Meta(max_length=64)] | None = None
    dry_run_policy: DryRunPolicyBody | None = None


class ReasonResponse(msgspec.Struct, kw_only=True):
    signal: str
    delta: int
    detail: str


class RiskEvaluationResponse(msgspec.Struct, kw_only=True):
    score: int
    level: str
    action: str
    allowed_methods: list[str]
    step_up_max_age_s: int
    reasons: list[ReasonResponse]
    dry_run: bool


class ConfigAuditLogEntryResponse(msgspec.Struct, kw_only=True):
    id: str
    at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str


class ConfigAuditLogListResponse(msgspec.Struct, kw_only=True):
    items: list[ConfigAuditLogEntryResponse]
    next_cursor: str | None
