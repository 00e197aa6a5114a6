"""The generic MFA challenge and what a completed one is worth (acr/amr for step-up).

One flow for every method: issue a challenge for a method, complete it once with that
method's proof. New methods plug in by adding an entry to ASSURANCE and an `is_enrolled` rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.base import UserMfaEvent, UserMfaState, forget_expired
from domain.errors import (
    ChallengeExpiredError,
    ChallengeUsedError,
    NotEnrolledError,
    NotFoundError,
    RateLimitedError,
)

CHALLENGE_TTL = timedelta(minutes=5)
MAX_OPEN_CHALLENGES = 10

ACR_PHISHING_RESISTANT = "urn:mfa:acr:phishing-resistant"
ACR_MFA = "urn:mfa:acr:mfa"
ACR_WEAK = "urn:mfa:acr:weak"


@dataclass(frozen=True)
class Assurance:
    """The `acr` and RFC 8176 `amr` values a completed challenge earns."""

    acr: str
    amr: tuple[str, ...]


def assurance(method: str, *, user_verified: bool = False, synced: bool = False) -> Assurance:
    """What a method proves. WebAuthn with user verification is phishing-resistant; email is
    a weaker factor that never makes a token multi-factor on its own."""
    if method == "webauthn":
        key = "swk" if synced else "hwk"
        if user_verified:
            return Assurance(ACR_PHISHING_RESISTANT, (key, "user", "pin", "mfa"))
        return Assurance(ACR_MFA, (key, "user", "mfa"))
    if method == "email":
        return Assurance(ACR_WEAK, ("otp",))
    if method == "sms":
        return Assurance(ACR_MFA, ("sms", "otp", "mfa"))
    if method == "push":
        return Assurance(ACR_MFA, ("swk", "mfa"))
    return Assurance(ACR_MFA, ("otp", "mfa"))


@dataclass
class MfaChallenge:
    """An open challenge: which method, until when, and the method's own challenge data."""

    challenge_id: str
    method: str
    created_at: datetime
    expires_at: datetime
    webauthn_challenge: str | None = None
    allowed_credentials: list[str] = field(default_factory=list)
    completed_at: datetime | None = None

    def is_open(self, at: datetime) -> bool:
        return self.completed_at is None and at < self.expires_at


class ChallengeIssued(UserMfaEvent):
    TOPIC = "mfa.challenge.issued.v1"
    challenge_id: str
    method: str
    expires_at: datetime
    webauthn_challenge: str | None
    allowed_credentials: list[str]

    def apply(self, aggregate: ChallengeMixin) -> None:
        challenges = aggregate.challenges
        forget_expired(challenges, self.timestamp, kept_for=CHALLENGE_TTL)
        challenges[self.challenge_id] = MfaChallenge(
            challenge_id=self.challenge_id,
            method=self.method,
            created_at=self.timestamp,
            expires_at=self.expires_at,
            webauthn_challenge=self.webauthn_challenge,
            allowed_credentials=list(self.allowed_credentials),
        )


class ChallengeCompleted(UserMfaEvent):
    TOPIC = "mfa.challenge.completed.v1"
    challenge_id: str
    method: str
    credential_id: str | None
    acr: str
    amr: list[str]

    def apply(self, aggregate: ChallengeMixin) -> None:
        aggregate.challenges[self.challenge_id].completed_at = self.timestamp
        aggregate.last_step_up_at = self.timestamp


class ChallengeMixin(UserMfaState):
    """Open challenges of a user."""

    challenges: dict[str, MfaChallenge]
    last_step_up_at: datetime | None

    def is_enrolled(self, method: str) -> bool:
        """Overridden by the aggregate: whether the user can complete `method` now."""
        return False

    def lockout_factor(self, method: str) -> str | None:
        """Overridden by the aggregate: the lock `method`'s proof is checked under."""
        return None

    def issue_challenge(
        self,
        challenge_id: str,
        method: str,
        at: datetime,
        *,
        webauthn_challenge: str | None = None,
        allowed_credentials: list[str] | None = None,
        ttl: timedelta = CHALLENGE_TTL,
    ) -> MfaChallenge:
        """Open a challenge for an enrolled method that is not locked (a few at a time, 5
        minutes each unless the factor's own proof expires sooner, as a push does): a
        challenge that could only answer 429 or 410 would take a slot for nothing."""
        if not self.is_enrolled(method):
            raise NotEnrolledError(f"{method} is not enrolled")
        factor = self.lockout_factor(method)
        if factor is not None:
            self._ensure_unlocked(factor, at)
        open_now = [c for c in self.challenges.values() if c.is_open(at)]
        if len(open_now) >= MAX_OPEN_CHALLENGES:
            until = min(c.expires_at for c in open_now)  # a slot frees when the first expires
            raise RateLimitedError("too many open challenges; complete or wait for one", until, at)
        self.trigger_event(
            ChallengeIssued,
            challenge_id=challenge_id,
            method=method,
            expires_at=at + ttl,
            webauthn_challenge=webauthn_challenge,
            allowed_credentials=list(allowed_credentials or []),
            timestamp=at,
        )
        return self.challenges[challenge_id]

    def open_challenge(self, challenge_id: str, at: datetime) -> MfaChallenge:
        """A challenge that can still be completed; used, unknown and expired are refused."""
        challenge = self.challenges.get(challenge_id)
        if challenge is None:
            raise NotFoundError("no such challenge")
        if challenge.completed_at is not None:
            raise ChallengeUsedError("this challenge was already completed")
        if challenge.expires_at <= at:
            raise ChallengeExpiredError("the challenge expired; request a new one")
        return challenge

    def complete_challenge(
        self, challenge_id: str, credential_id: str | None, earned: Assurance, at: datetime
    ) -> MfaChallenge:
        """Mark a challenge completed by its method's proof (once)."""
        challenge = self.open_challenge(challenge_id, at)
        self.trigger_event(
            ChallengeCompleted,
            challenge_id=challenge_id,
            method=challenge.method,
            credential_id=credential_id,
            acr=earned.acr,
            amr=list(earned.amr),
            timestamp=at,
        )
        return challenge
