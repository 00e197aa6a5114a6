"""Methods across factors, the primary credential, and the user's MFA status."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import PathParameter

from api.auth import Principal, authenticated
from api.deps import Runtime, UserIdPath, problems, written
from api.schemas.methods import (
    LockResponse,
    MethodListResponse,
    MethodRemovedResponse,
    MethodResponse,
    PrimaryCredentialResponse,
    StatusResponse,
)
from commands import methods
from commands.app import Services, load_user
from commands.oob import offered
from domain.errors import NotFoundError
from domain.user_mfa import KNOWN_METHODS, UserMfa, method_summaries
from domain.webauthn import MAX_CREDENTIAL_ID_CHARS
from projections.base import utc_time

MethodType = Annotated[str, PathParameter(max_length=32)]
# Any credential id: a WebAuthn one can be as long as 1364 characters (the others are shorter).
CredentialId = Annotated[str, PathParameter(max_length=MAX_CREDENTIAL_ID_CHARS)]


def method_details(details: dict[str, Any]) -> dict[str, Any]:
    """A method's details, its times (an SMS or email factor's `last_used_at`, which the domain
    gives as `isoformat()` text) as UTC datetimes: written as every other time in the API."""
    return {
        key: utc_time(value) if key.endswith("_at") and isinstance(value, str) else value
        for key, value in details.items()
    }


def method_list(services: Services, user_id: str) -> MethodListResponse:
    """Every method with its state, from the aggregate (user-scoped decisions read it).
    One short page: every method the service knows, so `next_cursor` is always null."""
    return _method_list(services, load_user(services, user_id))


def _method_list(services: Services, mfa: UserMfa | None) -> MethodListResponse:
    items = method_summaries(mfa)
    primary = mfa.current_primary() if mfa else None
    return MethodListResponse(
        items=[
            MethodResponse(
                method=m.method,
                available=offered(services, m.method),
                enabled=m.enabled,
                credentials=m.credentials,
                primary=m.primary,
                details=method_details(m.details),
            )
            for m in items
        ],
        next_cursor=None,
        primary_method=primary[0] if primary else None,
    )


def status_of(services: Services, user_id: str) -> StatusResponse:
    """A user's MFA status, from one load of the aggregate (two loads could straddle a
    write and answer with two versions of the user's state)."""
    mfa = load_user(services, user_id)
    listing = _method_list(services, mfa)
    primary = mfa.current_primary() if mfa else None
    now = services.clock.now()
    locks = []
    if mfa is not None:
        for factor, lock in sorted(mfa.locks.items()):
            if lock.is_locked(now) and lock.locked_until is not None:
                locks.append(LockResponse(factor=factor, locked_until=lock.locked_until))
    elif services.decoys is not None:  # probes of an unknown user lock as a real user's do
        for factor, until in services.decoys.locks_of(user_id, now):
            locks.append(LockResponse(factor=factor, locked_until=until))
    return StatusResponse(
        user_id=user_id,
        mfa_enabled=mfa.mfa_enabled() if mfa else False,
        methods=listing.items,
        primary_method=listing.primary_method,
        primary_credential_id=primary[1] if primary else None,
        locks=locks,
    )


class MethodController(Controller):
    """`/mfa/methods`, `/mfa/credentials/{id}/primary`, `/mfa/status/{user_id}`."""

    path = "/mfa"
    guards = [authenticated]
    tags = ["methods"]

    @get("/methods", sync_to_thread=True, responses=problems())
    def list_methods(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> MethodListResponse:
        """Every method and whether the caller has it."""
        return method_list(runtime.services, user.sub)

    @delete(
        "/methods/{method_type:str}",
        status_code=200,
        sync_to_thread=True,
        responses=problems(404, 409),
    )
    def remove_method(
        self,
        method_type: MethodType,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[MethodRemovedResponse]:
        """Remove every credential of one method."""
        if method_type not in KNOWN_METHODS:
            raise NotFoundError(f"unknown method {method_type!r}")
        outcome = methods.remove_method(runtime.services, user.sub, method_type)
        return written(MethodRemovedResponse(method=method_type, removed=True), outcome)

    @post(
        "/credentials/{credential_id:str}/primary",
        status_code=200,
        sync_to_thread=True,
        responses=problems(404, 409),
    )
    def set_primary(
        self,
        credential_id: CredentialId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[PrimaryCredentialResponse]:
        """Make one of the caller's credentials the primary method."""
        outcome = methods.set_primary(runtime.services, user.sub, credential_id)
        body = PrimaryCredentialResponse(
            credential_id=credential_id, method=outcome.value, primary=True
        )
        return written(body, outcome)

    @get("/status/{user_id:str}", sync_to_thread=True, responses=problems(403))
    def status(
        self,
        user_id: UserIdPath,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> StatusResponse:
        """A user's MFA status: only that user or an admin may ask."""
        if user_id != user.sub and not user.is_admin:
            raise PermissionDeniedException(detail="only the user or an admin may read this")
        return status_of(runtime.services, user_id)
