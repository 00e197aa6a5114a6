"""WebAuthn commands: registration ceremonies, rename, delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands.app import Outcome, Services, execute
from commands.verifiers import (
    RelyingParty,
    WebAuthnVerificationError,
    b64url,
    registration_options,
    verify_registration,
)
from domain.errors import DomainError, NotFoundError
from domain.user_mfa import UserMfa
from domain.webauthn import WebAuthnCredential

CHALLENGE_BYTES = 32


class InvalidCredentialError(DomainError):
    """A WebAuthn response that failed verification (its ceremony is consumed)."""

    code = "invalid_credential"


@dataclass(frozen=True)
class RegistrationStarted:
    registration_id: str
    options: dict[str, Any]
    expires_at: datetime


def _rp(services: Services) -> RelyingParty:
    assert services.relying_party is not None, "WebAuthn needs a relying party"
    return services.relying_party


def start_registration(
    services: Services, user_id: str, name: str | None
) -> Outcome[RegistrationStarted]:
    """Open a ceremony: a fresh 32-byte challenge, bound to this user, single use, 5 minutes."""
    registration_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))
    challenge = services.random.token_bytes(CHALLENGE_BYTES)

    def decide(mfa: UserMfa, now: datetime) -> RegistrationStarted:
        pending = mfa.start_webauthn_registration(registration_id, b64url(challenge), name, now)
        # The user handle is the aggregate's id, not the user id: no PII on authenticators,
        # and a new one after an erasure (assertions check it).
        options = registration_options(
            _rp(services), mfa.id.bytes, user_id, challenge, list(mfa.webauthn_credentials)
        )
        return RegistrationStarted(registration_id, options, pending.expires_at)

    return execute(services, user_id, decide)


def finish_registration(
    services: Services,
    user_id: str,
    registration_id: str,
    credential: dict[str, Any],
    name: str | None,
) -> Outcome[WebAuthnCredential]:
    """Verify the browser's RegistrationResponseJSON against the ceremony and store the key."""

    def decide(mfa: UserMfa, now: datetime) -> WebAuthnCredential | str:
        pending = mfa.pending_registration(registration_id, now)
        try:
            verified = verify_registration(_rp(services), credential, pending.challenge)
        except WebAuthnVerificationError as exc:
            # The rejection is saved (the ceremony is used up) before the refusal is raised.
            mfa.reject_webauthn_registration(registration_id, exc.reason, now)
            return exc.reason
        return mfa.complete_webauthn_registration(registration_id, verified, name, now)

    outcome = execute(services, user_id, decide, create=False, missing=_unknown_registration)
    if isinstance(outcome.value, str):
        raise InvalidCredentialError(f"the credential was not accepted: {outcome.value}")
    return Outcome(outcome.value, outcome.position)


def _unknown_registration() -> Exception:
    return NotFoundError("no such registration")


def rename_credential(
    services: Services, user_id: str, credential_id: str, name: str
) -> Outcome[WebAuthnCredential]:
    def decide(mfa: UserMfa, now: datetime) -> WebAuthnCredential:
        mfa.rename_webauthn_credential(credential_id, name, now)
        return mfa.webauthn_credentials[credential_id]

    return execute(services, user_id, decide, create=False, missing=_no_credential)


def delete_credential(services: Services, user_id: str, credential_id: str) -> Outcome[None]:
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.delete_webauthn_credential(credential_id, now),
        create=False,
        missing=_no_credential,
    )


def _no_credential() -> Exception:
    return NotFoundError("no such WebAuthn credential")
