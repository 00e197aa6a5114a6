"""The generic challenge and step-up: one flow for every method, ending in a signed token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from commands import oob
from commands.app import Outcome, Services, execute, load_user
from commands.push import deliver, load_challenge, open_push_challenge
from commands.verifiers import (
    RelyingParty,
    WebAuthnVerificationError,
    authentication_options,
    b64url,
    presented_credential_id,
    totp_timecode,
    verify_assertion,
)
from commands.webauthn import CHALLENGE_BYTES
from domain.challenge import Assurance, MfaChallenge, assurance
from domain.errors import (
    ChallengeExpiredError,
    ChallengePendingError,
    DomainError,
    InvalidCodeError,
    NotFoundError,
)
from domain.oob_codes import OOB_METHODS
from domain.push import PUSH, PUSH_CHALLENGE_TTL
from domain.push_challenge import APPROVED, EXPIRED, PENDING
from domain.user_mfa import BACKUP_CODE, TOTP, WEBAUTHN, UserMfa
from domain.webauthn import VerifiedAssertion

STEP_UP_ISSUER = "urn:mfa:service"


class MissingProofError(DomainError):
    """The step-up request lacks the proof its challenge's method needs."""

    code = "validation_error"


@dataclass(frozen=True)
class IssuedChallenge:
    challenge: MfaChallenge
    options: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepUpResult:
    token: str
    acr: str
    amr: list[str]
    expires_at: datetime
    method: str
    credential_id: str | None


def _rp(services: Services) -> RelyingParty:
    assert services.relying_party is not None
    return services.relying_party


def create_challenge(
    services: Services, user_id: str, method: str, context: dict[str, str] | None = None
) -> Outcome[IssuedChallenge]:
    """Open a challenge for one of the user's enrolled methods."""
    challenge_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))
    if method in OOB_METHODS:  # the code is sent to the verified phone number or address
        sent = oob.open_challenge(services, user_id, method, challenge_id)
        return Outcome(IssuedChallenge(sent.value), sent.position)
    webauthn_challenge = services.random.token_bytes(CHALLENGE_BYTES)
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> IssuedChallenge:
        if method == PUSH:
            mfa.ensure_push_allowed(now)  # a refused push opens no challenge
            issued = mfa.issue_challenge(challenge_id, method, now, ttl=PUSH_CHALLENGE_TTL)
            push = open_push_challenge(services, mfa, UUID(challenge_id), context or {}, now)
            extra.append(push)
            return IssuedChallenge(issued, extra={"number": push.number})
        if method == WEBAUTHN:
            credentials = mfa.usable_webauthn_credentials()
            issued = mfa.issue_challenge(
                challenge_id,
                method,
                now,
                webauthn_challenge=b64url(webauthn_challenge),
                allowed_credentials=[c.credential_id for c in credentials],
            )
            options = authentication_options(_rp(services), webauthn_challenge, credentials)
            return IssuedChallenge(issued, options)
        return IssuedChallenge(mfa.issue_challenge(challenge_id, method, now))

    outcome = execute(services, user_id, decide, create=False, extra=extra)
    if method == PUSH:
        mfa = load_user(services, user_id)
        if mfa is not None:
            deliver(services, mfa, load_challenge(services, challenge_id))
    return outcome


def step_up(
    services: Services,
    user_id: str,
    challenge_id: str,
    code: str | None,
    credential: dict[str, Any] | None,
    audience: str | None = None,
) -> Outcome[StepUpResult]:
    """Complete a challenge with its method's proof; a signed step-up token on success, for
    `audience` (its `aud`: the client id of the caller's own token) when there is one."""

    def decide(mfa: UserMfa, now: datetime) -> StepUpResult:
        challenge = mfa.open_challenge(challenge_id, now)
        credential_id, earned, authenticated_at = _prove(
            services, mfa, challenge, code, credential, now
        )
        mfa.complete_challenge(challenge_id, credential_id, earned, now)
        return _token(
            services, user_id, audience, challenge, credential_id, earned, authenticated_at, now
        )

    return execute(services, user_id, decide, create=False, missing=_no_challenge)


def _no_challenge() -> Exception:
    return NotFoundError("no such challenge")


def _prove(
    services: Services,
    mfa: UserMfa,
    challenge: MfaChallenge,
    code: str | None,
    credential: dict[str, Any] | None,
    now: datetime,
) -> tuple[str | None, Assurance, datetime]:
    """The credential that answered, what it earned, and when the user authenticated: now,
    or for a push when the device approved it (the login may poll long after)."""
    if challenge.method == TOTP:
        if not code:
            raise MissingProofError("code: a TOTP challenge needs `code`")
        matches = {}
        for device in mfa.active_totp_devices():
            timecode = totp_timecode(device, code, now)
            if timecode is not None:
                matches[device.device_id] = timecode
        return mfa.accept_totp(matches, now), assurance(TOTP), now
    if challenge.method == BACKUP_CODE:
        if not code:
            raise MissingProofError("code: a backup-code challenge needs `code`")
        mfa.use_backup_code(code, now)
        return None, assurance(BACKUP_CODE), now
    if challenge.method == WEBAUTHN:
        if credential is None:
            raise MissingProofError("credential: a WebAuthn challenge needs `credential`")
        verified = _verify_webauthn(services, mfa, challenge, credential, now)
        stored = mfa.accept_webauthn_assertion(verified, now)
        earned = assurance(
            WEBAUTHN, user_verified=verified.user_verified, synced=stored.backup_eligible
        )
        return stored.credential_id, earned, now
    if challenge.method in OOB_METHODS:
        if not code:
            raise MissingProofError(f"code: an {challenge.method} challenge needs `code`")
        return (*oob.prove_challenge(services, mfa, challenge, code, now), now)
    if challenge.method == PUSH:
        return _push_answer(services, challenge, now)
    raise MissingProofError(f"method: {challenge.method} cannot complete a challenge yet")


def _push_answer(
    services: Services, challenge: MfaChallenge, now: datetime
) -> tuple[str | None, Assurance, datetime]:
    """A push challenge completes once a device approved it (the caller polls until then)."""
    push = load_challenge(services, challenge.challenge_id)
    status = push.status_at(now)
    if status == APPROVED:
        assert push.responded_at is not None
        approved_at = push.responded_at.replace(microsecond=0)  # as the token will say it
        if approved_at + timedelta(seconds=services.step_up_ttl_seconds) <= now:
            # Its token would have expired already: it lasts from the approval.
            raise ChallengeExpiredError("the push was approved too long ago")
        return push.responding_device, assurance(PUSH), approved_at
    if status == PENDING:
        raise ChallengePendingError("the push has not been answered yet")
    if status == EXPIRED:
        raise ChallengeExpiredError("the push expired unanswered")
    raise InvalidCodeError("the push was denied", 0)


def _verify_webauthn(
    services: Services,
    mfa: UserMfa,
    challenge: MfaChallenge,
    credential: dict[str, Any],
    now: datetime,
) -> VerifiedAssertion:
    presented = presented_credential_id(credential)
    stored = mfa.webauthn_credentials.get(presented or "")
    if stored is None or presented not in challenge.allowed_credentials:
        raise mfa.reject_webauthn_assertion(presented, "unknown_credential", now)
    assert challenge.webauthn_challenge is not None
    try:
        return verify_assertion(
            _rp(services), credential, challenge.webauthn_challenge, stored, mfa.id.bytes
        )
    except WebAuthnVerificationError as exc:
        raise mfa.reject_webauthn_assertion(presented, exc.reason, now) from None


def _token(
    services: Services,
    user_id: str,
    audience: str | None,
    challenge: MfaChallenge,
    credential_id: str | None,
    earned: Assurance,
    auth_time: datetime,
    issued_at: datetime,
) -> StepUpResult:
    """The signed step-up token (pure computation: signing is deterministic input → output).
    It lasts the configured time from the authentication, not from its issue."""
    assert services.signer is not None
    auth_time = auth_time.replace(microsecond=0)  # JWT times are whole seconds: `exp` matches
    expires_at = auth_time + timedelta(seconds=services.step_up_ttl_seconds)
    claims = {
        "iss": STEP_UP_ISSUER,
        "sub": user_id,
        "iat": int(issued_at.timestamp()),
        "auth_time": int(auth_time.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": challenge.challenge_id,
        "acr": earned.acr,
        "amr": list(earned.amr),
        "mfa_method": challenge.method,
    }
    if audience is not None:
        claims["aud"] = audience
    return StepUpResult(
        token=services.signer.sign(claims),
        acr=earned.acr,
        amr=list(earned.amr),
        expires_at=expires_at,
        method=challenge.method,
        credential_id=credential_id,
    )
