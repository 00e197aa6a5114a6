"""Admin configuration: risk policies and risk evaluation, and the helpers every admin
configuration change shares (the IP allowlist and its audit log: `api.controllers.allowlist`).

Every change records the acting admin (the token's `sub`) and the request id: the client's
`X-Request-ID` when it is a sane token, else a fresh UUID; either way it is echoed back.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, TypeVar

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from api.auth import Principal, admin_only
from api.deps import POSITION_HEADER, Runtime, problems
from api.errors import problem
from api.schemas.config import (
    EvaluateRiskRequest,
    LevelPolicyBody,
    LevelPolicyListResponse,
    LevelPolicyResponse,
    ReasonResponse,
    RiskEvaluationResponse,
    RiskPolicyBody,
    RiskPolicyResponse,
    ThresholdsResponse,
)
from commands import config as config_commands
from commands.app import Outcome
from commands.config import EvaluateRisk, LevelPolicyDraft, RiskPolicyDraft
from domain.config import ChangedBy, MfaConfig
from domain.risk import DEFAULT_LEVEL_POLICIES, RISK_LEVELS, InvalidValueError
from domain.risk_scoring import RiskAssessment

T = TypeVar("T")
REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}\Z")

LevelPath = Annotated[str, PathParameter(pattern=rf"^({'|'.join(RISK_LEVELS)})$(?!\n)")]


def invalid_value_handler(_: Request[Any, Any, Any], exc: InvalidValueError) -> Response[Any]:
    """A value the rules refuse: 400 `validation_error` naming the field (like schema errors)."""
    return problem(
        400,
        "validation_error",
        exc.detail,
        extra={"errors": [{"field": exc.field, "message": exc.message}]},
    )


def changed_by(request: Request[Any, Any, Any], user: Principal, runtime: Runtime) -> ChangedBy:
    """The acting admin and this request's id."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if SANE_REQUEST_ID.match(given):
        return ChangedBy(actor=user.sub, request_id=given)
    fresh = uuid.UUID(bytes=runtime.services.random.token_bytes(16), version=4)
    return ChangedBy(actor=user.sub, request_id=str(fresh))


def changed(
    content: T, outcome: Outcome[Any], by: ChangedBy, status_code: int = 200
) -> Response[T]:
    """A response to a change: its log position (read-your-writes) and its request id."""
    return Response(
        content=content,
        status_code=status_code,
        headers={POSITION_HEADER: str(outcome.position), REQUEST_ID_HEADER: by.request_id},
    )


def risk_policy_response(config: MfaConfig) -> RiskPolicyResponse:
    policy = config.risk_policy_in_force()
    updated = config.risk_policy_updated
    return RiskPolicyResponse(
        base_score=policy.base_score,
        thresholds=ThresholdsResponse(**dict(policy.thresholds)),
        weights=dict(sorted(policy.weights.items())),
        is_default=config.risk_policy is None,
        updated_by=updated.actor if updated else None,
        updated_at=updated.at if updated else None,
    )


def level_policy_response(config: MfaConfig, level: str) -> LevelPolicyResponse:
    policy = config.level_policy(level)
    updated = config.level_policies_updated.get(level)
    return LevelPolicyResponse(
        level=level,
        action=policy.action,
        allowed_methods=list(policy.allowed_methods),
        step_up_max_age_s=policy.step_up_max_age_s,
        is_default=policy == DEFAULT_LEVEL_POLICIES[level],
        updated_by=updated.actor if updated else None,
        updated_at=updated.at if updated else None,
    )


def evaluation_response(assessment: RiskAssessment, dry_run: bool) -> RiskEvaluationResponse:
    return RiskEvaluationResponse(
        score=assessment.score,
        level=assessment.level,
        action=assessment.action,
        allowed_methods=list(assessment.allowed_methods),
        step_up_max_age_s=assessment.step_up_max_age_s,
        reasons=[
            ReasonResponse(signal=r.signal, delta=r.delta, detail=r.detail)
            for r in assessment.reasons
        ],
        dry_run=dry_run,
    )


def risk_policy_draft(body: RiskPolicyBody) -> RiskPolicyDraft:
    thresholds = body.thresholds
    return RiskPolicyDraft(
        base_score=body.base_score,
        thresholds=None
        if thresholds is None
        else {
            "medium": thresholds.medium,
            "high": thresholds.high,
            "critical": thresholds.critical,
        },
        weights=body.weights,
    )


def level_policy_draft(body: LevelPolicyBody) -> LevelPolicyDraft:
    return LevelPolicyDraft(body.action, list(body.allowed_methods), body.step_up_max_age_s)


def evaluate_command(body: EvaluateRiskRequest) -> EvaluateRisk:
    draft = body.dry_run_policy
    return EvaluateRisk(
        user_id=body.user_id,
        ip=body.ip,
        device_token=body.device_token,
        user_agent=body.user_agent,
        signals=body.signals or {},
        dry_run_policy=None if draft is None else risk_policy_draft(draft),
        dry_run_levels={
            level: level_policy_draft(policy)
            for level, policy in ((draft.levels or {}) if draft else {}).items()
        },
    )


class RiskPolicyController(Controller):
    """`/admin/mfa/risk-policy`: the global policy (baseline, weights, thresholds)."""

    path = "/admin/mfa/risk-policy"
    guards = [admin_only]
    tags = ["admin: risk"]
    exception_handlers = {InvalidValueError: invalid_value_handler}

    @get("/", sync_to_thread=True, responses=problems(403))
    def get_policy(self, runtime: NamedDependency[Runtime]) -> RiskPolicyResponse:
        """The global risk policy in force (the defaults until an admin changes it)."""
        return risk_policy_response(config_commands.load_config(runtime.services))

    @put("/", status_code=200, sync_to_thread=True, responses=problems(403, 409))
    def update_policy(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RiskPolicyBody],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[RiskPolicyResponse]:
        """Replace the global policy; omitted parts take their defaults."""
        by = changed_by(request, user, runtime)
        outcome = config_commands.update_risk_policy(runtime.services, risk_policy_draft(data), by)
        return changed(risk_policy_response(outcome.value), outcome, by)


class LevelPolicyController(Controller):
    """`/admin/mfa/risk-policies`: what each risk level asks for, and evaluation."""

    path = "/admin/mfa/risk-policies"
    guards = [admin_only]
    tags = ["admin: risk"]
    exception_handlers = {InvalidValueError: invalid_value_handler}

    @get("/", sync_to_thread=True, responses=problems(403))
    def list_policies(self, runtime: NamedDependency[Runtime]) -> LevelPolicyListResponse:
        """Every level's policy, low to critical."""
        config = config_commands.load_config(runtime.services)
        return LevelPolicyListResponse(
            items=[
                level_policy_response(config, level) for level in config.level_policies_in_force()
            ]
        )

    @put("/{level:str}", status_code=200, sync_to_thread=True, responses=problems(403, 409))
    def set_policy(
        self,
        request: Request[Any, Any, Any],
        level: LevelPath,
        data: JSONBody[LevelPolicyBody],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[LevelPolicyResponse]:
        """Replace one level's policy."""
        by = changed_by(request, user, runtime)
        outcome = config_commands.set_level_policy(
            runtime.services, level, level_policy_draft(data), by
        )
        return changed(level_policy_response(outcome.value, level), outcome, by)

    @delete("/{level:str}", status_code=200, sync_to_thread=True, responses=problems(403, 409))
    def reset_policy(
        self,
        request: Request[Any, Any, Any],
        level: LevelPath,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[LevelPolicyResponse]:
        """Put one level back to its default policy; answers that default."""
        by = changed_by(request, user, runtime)
        outcome = config_commands.reset_level_policy(runtime.services, level, by)
        return changed(level_policy_response(outcome.value, level), outcome, by)

    @post("/evaluate", status_code=200, sync_to_thread=True, responses=problems(403))
    def evaluate(
        self, data: JSONBody[EvaluateRiskRequest], runtime: NamedDependency[Runtime]
    ) -> RiskEvaluationResponse:
        """Score a login attempt against the saved policy, or a draft one (`dry_run_policy`);
        nothing is saved either way."""
        assessment = config_commands.evaluate_risk(runtime.services, evaluate_command(data))
        return evaluation_response(assessment, dry_run=data.dry_run_policy is not None)
