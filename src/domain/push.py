"""Push: the user's authenticator apps (synced devices) and the anti-fatigue throttle.

Each push challenge is its own aggregate (domain/push_challenge.py); the user's aggregate keeps
the devices (with their Ed25519 public keys), a short record of recent requests so that push
bombing is throttled, and fraud reports ("not me") for the risk engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.base import UserMfaEvent, UserMfaState
from domain.errors import LimitExceededError, NotEnrolledError, NotFoundError, RateLimitedError

PUSH = "push"
PUSH_CHALLENGE_TTL = timedelta(minutes=2)
MAX_PENDING_PUSHES = 3
MAX_PUSHES_PER_WINDOW = 5
PUSH_WINDOW = timedelta(minutes=10)
FRAUD_WINDOW = timedelta(days=30)
MAX_PUSH_DEVICES = 10


@dataclass
class PushDevice:
    """An authenticator app: how to reach it and the key it signs responses with."""

    device_id: str
    name: str
    platform: str
    push_token: str
    public_key: str
    app_version: str
    created_at: datetime
    updated_at: datetime


@dataclass
class PushRequest:
    """A push challenge the user asked for, kept for the throttle."""

    challenge_id: str
    created_at: datetime
    expires_at: datetime
    resolved: bool = False

    def is_pending(self, at: datetime) -> bool:
        return not self.resolved and at < self.expires_at


class PushDeviceSynced(UserMfaEvent):
    TOPIC = "mfa.push.device_synced.v1"
    device_id: str
    name: str
    platform: str
    push_token: str
    public_key: str
    app_version: str
    key_rotated: bool

    def apply(self, aggregate: PushMixin) -> None:
        existing = aggregate.push_devices.get(self.device_id)
        aggregate.push_devices[self.device_id] = PushDevice(
            device_id=self.device_id,
            name=self.name,
            platform=self.platform,
            push_token=self.push_token,
            public_key=self.public_key,
            app_version=self.app_version,
            created_at=existing.created_at if existing else self.timestamp,
            updated_at=self.timestamp,
        )


class PushDeviceRevoked(UserMfaEvent):
    TOPIC = "mfa.push.device_revoked.v1"
    device_id: str

    def apply(self, aggregate: PushMixin) -> None:
        aggregate.push_devices.pop(self.device_id, None)
        aggregate.forget_primary(self.device_id)


class PushChallengeRequested(UserMfaEvent):
    TOPIC = "mfa.push.challenge_requested.v1"
    challenge_id: str
    expires_at: datetime

    def apply(self, aggregate: PushMixin) -> None:
        horizon = self.timestamp - PUSH_WINDOW
        aggregate.push_requests = [
            r
            for r in aggregate.push_requests
            if r.created_at > horizon or r.is_pending(self.timestamp)
        ]
        aggregate.push_requests.append(
            PushRequest(self.challenge_id, self.timestamp, self.expires_at)
        )


class PushChallengeResolved(UserMfaEvent):
    TOPIC = "mfa.push.challenge_resolved.v1"
    challenge_id: str
    outcome: str

    def apply(self, aggregate: PushMixin) -> None:
        for request in aggregate.push_requests:
            if request.challenge_id == self.challenge_id:
                request.resolved = True


class PushFraudReported(UserMfaEvent):
    """The user denied a push saying it was not them: a signal for the risk engine."""

    TOPIC = "mfa.push.fraud_reported.v1"
    challenge_id: str
    device_id: str

    def apply(self, aggregate: PushMixin) -> None:
        horizon = self.timestamp - FRAUD_WINDOW
        aggregate.fraud_reports = [t for t in aggregate.fraud_reports if t > horizon]
        aggregate.fraud_reports.append(self.timestamp)


class PushMixin(UserMfaState):
    """A user's push devices, recent push requests and fraud reports."""

    push_devices: dict[str, PushDevice]
    push_requests: list[PushRequest]
    fraud_reports: list[datetime]

    def forget_primary(self, credential_id: str) -> None:
        """Overridden by the aggregate: a removed credential stops being primary."""

    def push_device(self, device_id: str) -> PushDevice:
        try:
            return self.push_devices[device_id]
        except KeyError:
            raise NotFoundError(f"no push device {device_id!r}") from None

    def sync_push_device(
        self,
        *,
        device_id: str,
        name: str,
        platform: str,
        push_token: str,
        public_key: str,
        app_version: str,
        at: datetime,
    ) -> tuple[PushDevice, bool]:
        """Register or update an app; a new public key rotates it. Returns (device, created)."""
        existing = self.push_devices.get(device_id)
        if existing is None and len(self.push_devices) >= MAX_PUSH_DEVICES:
            raise LimitExceededError(f"at most {MAX_PUSH_DEVICES} push devices per user")
        self.trigger_event(
            PushDeviceSynced,
            device_id=device_id,
            name=name,
            platform=platform,
            push_token=push_token,
            public_key=public_key,
            app_version=app_version,
            key_rotated=existing is not None and existing.public_key != public_key,
            timestamp=at,
        )
        return self.push_devices[device_id], existing is None

    def revoke_push_device(self, device_id: str, at: datetime) -> None:
        """The device can no longer approve or deny anything."""
        self.push_device(device_id)
        self.trigger_event(PushDeviceRevoked, device_id=device_id, timestamp=at)

    def request_push(self, challenge_id: str, at: datetime) -> datetime:
        """Record a push request if the anti-fatigue limits allow it; returns its expiry."""
        self.ensure_push_allowed(at)
        expires_at = at + PUSH_CHALLENGE_TTL
        self.trigger_event(
            PushChallengeRequested, challenge_id=challenge_id, expires_at=expires_at, timestamp=at
        )
        return expires_at

    def ensure_push_allowed(self, at: datetime) -> None:
        """Refuse a push now, recording nothing: no device, or the anti-fatigue limits.

        At most MAX_PENDING_PUSHES unanswered at once and MAX_PUSHES_PER_WINDOW per window:
        push bombing gets 429 instead of more prompts on the user's phone.
        """
        if not self.push_devices:
            raise NotEnrolledError("no push device is registered")
        pending = [r for r in self.push_requests if r.is_pending(at)]
        if len(pending) >= MAX_PENDING_PUSHES:
            until = min(r.expires_at for r in pending)
            raise RateLimitedError("too many unanswered push requests", until, at)
        recent = sorted(r.created_at for r in self.push_requests if r.created_at > at - PUSH_WINDOW)
        if len(recent) >= MAX_PUSHES_PER_WINDOW:
            until = recent[-MAX_PUSHES_PER_WINDOW] + PUSH_WINDOW
            raise RateLimitedError("too many push requests; try again later", until, at)

    def resolve_push(self, challenge_id: str, outcome: str, at: datetime) -> None:
        """A push was answered (approved or denied): it no longer counts as pending."""
        self.trigger_event(
            PushChallengeResolved, challenge_id=challenge_id, outcome=outcome, timestamp=at
        )

    def report_fraud(self, challenge_id: str, device_id: str, at: datetime) -> None:
        self.trigger_event(
            PushFraudReported, challenge_id=challenge_id, device_id=device_id, timestamp=at
        )

    def recent_fraud_reports(self, at: datetime) -> int:
        """Fraud reports within the last 30 days."""
        return sum(1 for t in self.fraud_reports if t > at - FRAUD_WINDOW)
