"""WebAuthn credentials: registration ceremony, list, get, rename, delete."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from api.auth import Principal, authenticated
from api.deps import Limit, OptionalBody, PageCursor, Runtime, problems, written
from api.schemas.webauthn import (
    FinishRegistrationRequest,
    RegistrationOptionsResponse,
    RenameCredentialRequest,
    StartRegistrationRequest,
    WebAuthnCredentialListResponse,
    WebAuthnCredentialResponse,
)
from commands import webauthn
from domain.errors import NotFoundError
from domain.webauthn import MAX_CREDENTIAL_ID_CHARS, WebAuthnCredential
from projections.webauthn import get_webauthn_credential, list_webauthn_credentials

CredentialId = Annotated[str, PathParameter(min_length=1, max_length=MAX_CREDENTIAL_ID_CHARS)]


def credential_response(
    credential: WebAuthnCredential | dict[str, Any],
) -> WebAuthnCredentialResponse:
    """The public view of a credential (never its public key)."""
    fields = credential if isinstance(credential, dict) else vars(credential)
    return WebAuthnCredentialResponse(
        credential_id=fields["credential_id"],
        name=fields["name"],
        created_at=fields["created_at"],
        last_used_at=fields.get("last_used_at"),
        transports=list(fields.get("transports", [])),
        aaguid=fields.get("aaguid", ""),
        backup_eligible=bool(fields.get("backup_eligible")),
        backed_up=bool(fields.get("backed_up")),
        user_verified=bool(fields.get("user_verified")),
        sign_count=int(fields.get("sign_count", 0)),
        clone_suspected=bool(fields.get("clone_suspected")),
    )


class WebAuthnController(Controller):
    """`/mfa/webauthn/credentials`."""

    path = "/mfa/webauthn/credentials"
    guards = [authenticated]
    tags = ["webauthn"]

    @post(
        "/register",
        status_code=200,
        sync_to_thread=True,
        responses=problems(409, 429),
        operation_class=OptionalBody,
    )
    def start_registration(
        self,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        data: JSONBody[StartRegistrationRequest | None] = None,
    ) -> Response[RegistrationOptionsResponse]:
        """PublicKeyCredentialCreationOptionsJSON for `navigator.credentials.create()`."""
        outcome = webauthn.start_registration(
            runtime.services, user.sub, data.name if data else None
        )
        started = outcome.value
        body = RegistrationOptionsResponse(
            registration_id=started.registration_id,
            options=started.options,
            expires_at=started.expires_at,
        )
        return written(body, outcome)

    @post(
        "/register/verify",
        status_code=201,
        sync_to_thread=True,
        responses=problems(404, 409, 410),
    )
    def finish_registration(
        self,
        data: JSONBody[FinishRegistrationRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[WebAuthnCredentialResponse]:
        """Verify the RegistrationResponseJSON and store the credential."""
        outcome = webauthn.finish_registration(
            runtime.services, user.sub, data.registration_id, data.credential, data.name
        )
        return written(credential_response(outcome.value), outcome, 201)

    @get("/", sync_to_thread=True, responses=problems())
    def list_credentials(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> WebAuthnCredentialListResponse:
        """The caller's credentials, oldest first."""
        with runtime.read(user.sub, request) as cur:
            rows, next_cursor = list_webauthn_credentials(cur, user.sub, limit, cursor)
        return WebAuthnCredentialListResponse(
            items=[credential_response(r) for r in rows], next_cursor=next_cursor
        )

    @get("/{credential_id:str}", sync_to_thread=True, responses=problems(404))
    def get_credential(
        self,
        request: Request[Any, Any, Any],
        credential_id: CredentialId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> WebAuthnCredentialResponse:
        with runtime.read(user.sub, request) as cur:
            row = get_webauthn_credential(cur, user.sub, credential_id)
        if row is None:
            raise NotFoundError("no such WebAuthn credential")
        return credential_response(row)

    @put("/{credential_id:str}", status_code=200, sync_to_thread=True, responses=problems(404, 409))
    def rename_credential(
        self,
        credential_id: CredentialId,
        data: JSONBody[RenameCredentialRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[WebAuthnCredentialResponse]:
        outcome = webauthn.rename_credential(runtime.services, user.sub, credential_id, data.name)
        return written(credential_response(outcome.value), outcome)

    @delete(
        "/{credential_id:str}",
        status_code=200,
        sync_to_thread=True,
        responses=problems(404, 409),
    )
    def delete_credential(
        self,
        credential_id: CredentialId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[dict[str, Any]]:
        outcome = webauthn.delete_credential(runtime.services, user.sub, credential_id)
        return written({"credential_id": credential_id, "deleted": True}, outcome)
