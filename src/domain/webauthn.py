"""WebAuthn credentials: registration ceremonies, stored public keys, the clone rule.

Cryptographic verification happens in commands (py_webauthn); the domain decides what a
verified result means: which ceremony it consumes, whether the sign count went backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.base import UserMfaEvent, UserMfaState, forget_expired, reset_lock
from domain.errors import (
    AlreadyEnrolledError,
    ChallengeExpiredError,
    ChallengeUsedError,
    InvalidCodeError,
    LimitExceededError,
    NotFoundError,
    RateLimitedError,
)

WEBAUTHN = "webauthn"
CEREMONY_TTL = timedelta(minutes=5)
MAX_PENDING_REGISTRATIONS = 5
MAX_WEBAUTHN_CREDENTIALS = 20
# WebAuthn L2 §7.1: a credential id longer than 1023 bytes fails the registration ceremony;
# base64url (unpadded) of 1023 bytes is 1364 characters, the bound wherever an id is taken.
MAX_CREDENTIAL_ID_BYTES = 1023
MAX_CREDENTIAL_ID_CHARS = 1364
# Consumed ceremonies remembered, so that a replay reads as used (409) while an id the user
# never had reads as unknown (404), like another user's.
USED_REGISTRATIONS_KEPT = 20


@dataclass
class WebAuthnCredential:
    """A registered authenticator: its public key and what it told us about itself."""

    credential_id: str
    name: str
    public_key: str
    sign_count: int
    transports: list[str]
    aaguid: str
    backup_eligible: bool
    backed_up: bool
    user_verified: bool
    created_at: datetime
    last_used_at: datetime | None = None
    clone_suspected: bool = False


@dataclass
class PendingRegistration:
    """A registration ceremony: its challenge, single use, expiring."""

    registration_id: str
    challenge: str
    name: str | None
    expires_at: datetime


@dataclass(frozen=True)
class VerifiedRegistration:
    """What the verifier extracted from a valid attestation."""

    credential_id: str
    public_key: str
    sign_count: int
    transports: list[str] = field(default_factory=list)
    aaguid: str = ""
    backup_eligible: bool = False
    backed_up: bool = False
    user_verified: bool = False


@dataclass(frozen=True)
class VerifiedAssertion:
    """What the verifier extracted from a valid assertion (its signature checked)."""

    credential_id: str
    sign_count: int
    user_verified: bool = False
    backed_up: bool = False
    backup_eligible: bool = False


class WebAuthnRegistrationStarted(UserMfaEvent):
    TOPIC = "mfa.webauthn.registration_started.v1"
    registration_id: str
    challenge: str
    name: str | None
    expires_at: datetime

    def apply(self, aggregate: WebAuthnMixin) -> None:
        pending = aggregate.webauthn_registrations
        forget_expired(pending, self.timestamp, kept_for=CEREMONY_TTL)
        pending[self.registration_id] = PendingRegistration(
            self.registration_id, self.challenge, self.name, self.expires_at
        )


class WebAuthnCredentialRegistered(UserMfaEvent):
    TOPIC = "mfa.webauthn.credential_registered.v1"
    registration_id: str
    credential_id: str
    name: str
    public_key: str
    sign_count: int
    transports: list[str]
    aaguid: str
    backup_eligible: bool
    backed_up: bool
    user_verified: bool

    def apply(self, aggregate: WebAuthnMixin) -> None:
        aggregate.consume_webauthn_registration(self.registration_id)
        aggregate.webauthn_credentials[self.credential_id] = WebAuthnCredential(
            credential_id=self.credential_id,
            name=self.name,
            public_key=self.public_key,
            sign_count=self.sign_count,
            transports=list(self.transports),
            aaguid=self.aaguid,
            backup_eligible=self.backup_eligible,
            backed_up=self.backed_up,
            user_verified=self.user_verified,
            created_at=self.timestamp,
        )


class WebAuthnRegistrationRejected(UserMfaEvent):
    TOPIC = "mfa.webauthn.registration_rejected.v1"
    registration_id: str
    reason: str

    def apply(self, aggregate: WebAuthnMixin) -> None:
        aggregate.consume_webauthn_registration(self.registration_id)


class WebAuthnCredentialRenamed(UserMfaEvent):
    TOPIC = "mfa.webauthn.credential_renamed.v1"
    credential_id: str
    name: str

    def apply(self, aggregate: WebAuthnMixin) -> None:
        aggregate.webauthn_credentials[self.credential_id].name = self.name


class WebAuthnCredentialDeleted(UserMfaEvent):
    TOPIC = "mfa.webauthn.credential_deleted.v1"
    credential_id: str

    def apply(self, aggregate: WebAuthnMixin) -> None:
        aggregate.webauthn_credentials.pop(self.credential_id, None)
        aggregate.forget_primary(self.credential_id)


class WebAuthnAssertionAccepted(UserMfaEvent):
    TOPIC = "mfa.webauthn.assertion_accepted.v1"
    credential_id: str
    sign_count: int
    user_verified: bool
    backed_up: bool
    reset_lock: bool

    def apply(self, aggregate: WebAuthnMixin) -> None:
        credential = aggregate.webauthn_credentials[self.credential_id]
        credential.sign_count = self.sign_count
        credential.backed_up = self.backed_up
        credential.last_used_at = self.timestamp
        reset_lock(aggregate, WEBAUTHN, self.reset_lock)


class WebAuthnCloneSuspected(UserMfaEvent):
    TOPIC = "mfa.webauthn.clone_suspected.v1"
    credential_id: str
    presented_sign_count: int
    stored_sign_count: int

    def apply(self, aggregate: WebAuthnMixin) -> None:
        aggregate.webauthn_credentials[self.credential_id].clone_suspected = True


def _too_many_credentials() -> LimitExceededError:
    return LimitExceededError(f"at most {MAX_WEBAUTHN_CREDENTIALS} WebAuthn credentials")


class WebAuthnMixin(UserMfaState):
    """A user's WebAuthn credentials and open registration ceremonies."""

    webauthn_credentials: dict[str, WebAuthnCredential]
    webauthn_registrations: dict[str, PendingRegistration]

    def forget_primary(self, credential_id: str) -> None:
        """Overridden by the aggregate: a removed credential stops being primary."""

    # Kept in the instance dict under a private name and created on first use, so that a
    # snapshot taken before it existed still loads.
    @property
    def used_webauthn_registrations(self) -> list[str]:
        """Ids of the latest consumed registration ceremonies (completed or rejected)."""
        used: list[str] = vars(self).setdefault("_used_webauthn_registrations", [])
        return used

    def consume_webauthn_registration(self, registration_id: str) -> None:
        """A ceremony is used up (called while applying events)."""
        self.webauthn_registrations.pop(registration_id, None)
        used = self.used_webauthn_registrations
        used.append(registration_id)
        del used[:-USED_REGISTRATIONS_KEPT]

    def webauthn_credential(self, credential_id: str) -> WebAuthnCredential:
        """One of the user's credentials, or NotFoundError."""
        try:
            return self.webauthn_credentials[credential_id]
        except KeyError:
            raise NotFoundError(f"no WebAuthn credential {credential_id!r}") from None

    def usable_webauthn_credentials(self) -> list[WebAuthnCredential]:
        """The credentials an assertion can still pass with: one suspected of being cloned is
        refused for good, so it is neither offered nor counted as an enrolled factor."""
        return [c for c in self.webauthn_credentials.values() if not c.clone_suspected]

    def start_webauthn_registration(
        self, registration_id: str, challenge: str, name: str | None, at: datetime
    ) -> PendingRegistration:
        """Open a registration ceremony (a few at a time, 5 minutes each)."""
        if len(self.webauthn_credentials) >= MAX_WEBAUTHN_CREDENTIALS:
            raise _too_many_credentials()
        open_ceremonies = [r for r in self.webauthn_registrations.values() if r.expires_at > at]
        if len(open_ceremonies) >= MAX_PENDING_REGISTRATIONS:
            until = min(r.expires_at for r in open_ceremonies)
            raise RateLimitedError("too many registrations in progress; finish or wait", until, at)
        self.trigger_event(
            WebAuthnRegistrationStarted,
            registration_id=registration_id,
            challenge=challenge,
            name=name,
            expires_at=at + CEREMONY_TTL,
            timestamp=at,
        )
        return self.webauthn_registrations[registration_id]

    def pending_registration(self, registration_id: str, at: datetime) -> PendingRegistration:
        """An open ceremony of this user; used (409), unknown (404, as another user's would
        be) and expired (410) ones are refused."""
        registration = self.webauthn_registrations.get(registration_id)
        if registration is None:
            if registration_id in self.used_webauthn_registrations:
                raise ChallengeUsedError("this registration was already used")
            raise NotFoundError("no such registration")
        if registration.expires_at <= at:
            raise ChallengeExpiredError("the registration ceremony expired; start again")
        return registration

    def complete_webauthn_registration(
        self, registration_id: str, verified: VerifiedRegistration, name: str | None, at: datetime
    ) -> WebAuthnCredential:
        """Store a verified credential; its ceremony is consumed. A known credential is refused,
        and so is any once the user has the most allowed (ceremonies opened in parallel)."""
        registration = self.pending_registration(registration_id, at)
        if verified.credential_id in self.webauthn_credentials:
            self.trigger_event(
                WebAuthnRegistrationRejected,
                registration_id=registration_id,
                reason="already_registered",
                timestamp=at,
            )
            raise AlreadyEnrolledError("this credential is already registered")
        if len(self.webauthn_credentials) >= MAX_WEBAUTHN_CREDENTIALS:
            self.trigger_event(
                WebAuthnRegistrationRejected,
                registration_id=registration_id,
                reason="limit_exceeded",
                timestamp=at,
            )
            raise _too_many_credentials()
        self.trigger_event(
            WebAuthnCredentialRegistered,
            registration_id=registration_id,
            credential_id=verified.credential_id,
            name=name or registration.name or self._default_credential_name(),
            public_key=verified.public_key,
            sign_count=verified.sign_count,
            transports=list(verified.transports),
            aaguid=verified.aaguid,
            backup_eligible=verified.backup_eligible,
            backed_up=verified.backed_up,
            user_verified=verified.user_verified,
            timestamp=at,
        )
        return self.webauthn_credentials[verified.credential_id]

    def reject_webauthn_registration(self, registration_id: str, reason: str, at: datetime) -> None:
        """A response that failed verification consumes its ceremony (single use)."""
        self.pending_registration(registration_id, at)
        self.trigger_event(
            WebAuthnRegistrationRejected,
            registration_id=registration_id,
            reason=reason,
            timestamp=at,
        )

    def _default_credential_name(self) -> str:
        taken = {c.name for c in self.webauthn_credentials.values()}
        n = 1
        while f"Passkey {n}" in taken:
            n += 1
        return f"Passkey {n}"

    def rename_webauthn_credential(self, credential_id: str, name: str, at: datetime) -> None:
        """Give a credential another name."""
        self.webauthn_credential(credential_id)
        self.trigger_event(
            WebAuthnCredentialRenamed, credential_id=credential_id, name=name, timestamp=at
        )

    def delete_webauthn_credential(self, credential_id: str, at: datetime) -> None:
        """Remove a credential; it no longer passes."""
        self.webauthn_credential(credential_id)
        self.trigger_event(WebAuthnCredentialDeleted, credential_id=credential_id, timestamp=at)

    def accept_webauthn_assertion(
        self, verified: VerifiedAssertion, at: datetime
    ) -> WebAuthnCredential:
        """A cryptographically valid assertion passes unless its sign count went backwards or
        its backup eligibility changed.

        When either count is non-zero the new one must be greater: otherwise the
        authenticator may have been cloned, which is recorded and refused, now and later.
        Backup eligibility is fixed when a credential is created (WebAuthn L3 §6.1.3): an
        assertion that says otherwise is refused, so the stored backup state (which decides
        the `amr` key type) stays possible.
        """
        self._ensure_unlocked(WEBAUTHN, at)
        credential_id = verified.credential_id
        credential = self.webauthn_credentials.get(credential_id)
        if credential is None:
            raise self._fail(WEBAUTHN, "unknown_credential", at, credential_id)
        if credential.clone_suspected:
            # A possibly cloned authenticator stays refused until the user registers anew.
            raise self._fail(WEBAUTHN, "clone_suspected", at, credential_id)
        if verified.backup_eligible != credential.backup_eligible:
            raise self._fail(WEBAUTHN, "backup_eligibility_changed", at, credential_id)
        stored = credential.sign_count
        sign_count = verified.sign_count
        if (sign_count > 0 or stored > 0) and sign_count <= stored:
            self.trigger_event(
                WebAuthnCloneSuspected,
                credential_id=credential_id,
                presented_sign_count=sign_count,
                stored_sign_count=stored,
                timestamp=at,
            )
            raise self._fail(WEBAUTHN, "sign_count_regressed", at, credential_id)
        self.trigger_event(
            WebAuthnAssertionAccepted,
            credential_id=credential_id,
            sign_count=sign_count,
            user_verified=verified.user_verified,
            backed_up=verified.backed_up,
            reset_lock=self._succeed(WEBAUTHN),
            timestamp=at,
        )
        return credential

    def reject_webauthn_assertion(
        self, credential_id: str | None, reason: str, at: datetime
    ) -> InvalidCodeError:
        """An assertion that failed verification: a failure of the webauthn factor."""
        self._ensure_unlocked(WEBAUTHN, at)
        return self._fail(WEBAUTHN, reason, at, credential_id)
