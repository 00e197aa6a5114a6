"""The generic challenge, step-up, and the keys that verify step-up tokens."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth import Principal, authenticated
from api.controllers.push import login_context
from api.deps import PUBLIC, Runtime, problems, written
from api.schemas.step_up import (
    ChallengeResponse,
    CreateChallengeRequest,
    StepUpRequest,
    StepUpResponse,
)
from commands import step_up as step_up_commands


class StepUpController(Controller):
    """`/mfa/challenge` and `/mfa/step-up`."""

    path = "/mfa"
    guards = [authenticated]
    tags = ["step-up"]

    @post("/challenge", status_code=201, sync_to_thread=True, responses=problems(409, 429, 502))
    def create_challenge(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateChallengeRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[ChallengeResponse]:
        """Open a challenge for one of the caller's methods (WebAuthn: request options; push:
        `number`, and the phone is shown `context` or the caller's address and user agent)."""
        context = login_context(request, data.context) if data.method == "push" else None
        outcome = step_up_commands.create_challenge(
            runtime.services, user.sub, data.method, context
        )
        issued = outcome.value
        body = ChallengeResponse(
            challenge_id=issued.challenge.challenge_id,
            method=issued.challenge.method,
            expires_at=issued.challenge.expires_at,
            options=issued.options,
            number=issued.extra.get("number"),
        )
        return written(body, outcome, 201)

    @post(
        "/step-up",
        status_code=200,
        sync_to_thread=True,
        responses=problems(403, 404, 409, 410, 429),
    )
    def step_up(
        self,
        data: JSONBody[StepUpRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[StepUpResponse]:
        """Complete a challenge once; a step-up JWT signed by the service."""
        outcome = step_up_commands.step_up(
            runtime.services,
            user.sub,
            data.challenge_id,
            data.code,
            data.credential,
            # opt-in: a relying party that verifies without an audience refuses one with `aud`
            audience=user.client if runtime.settings.step_up_audience_is_client else None,
        )
        result = outcome.value
        body = StepUpResponse(
            step_up_token=result.token,
            acr=result.acr,
            amr=result.amr,
            expires_at=result.expires_at,
            method=result.method,
        )
        return written(body, outcome)


@get(
    "/.well-known/jwks.json",
    tags=["step-up"],
    sync_to_thread=False,
    security=PUBLIC,
    cache_control=CacheControlHeader(public=True, max_age=300),
)
def jwks(runtime: NamedDependency[Runtime]) -> dict[str, Any]:
    """The public keys that verify step-up tokens (ES256): public, and cacheable for 5
    minutes (every other answer is `no-store`)."""
    signer = runtime.services.signer
    assert signer is not None
    return signer.jwks()
