"""The PushChallenge aggregate: one per push, pending → approved | denied | expired.

Expiry is computed from time, not from a timer. Every event is encrypted under the user's key
(`key_owner`), so erasing the user shreds their push history too.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.utils import register_topic

from domain.errors import ChallengeExpiredError, ChallengeUsedError, InvalidCodeError

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
EXPIRED = "expired"
MAX_REJECTED_RESPONSES = 3
# Denial reasons only the service gives (no device answered): an app may not send them.
TOO_MANY_REJECTED = "too_many_rejected_responses"
WITHDRAWN_AT_RESET = "reset"
WITHDRAWN_DEVICE_REMOVED = "device_removed"  # no device it was sent to is enrolled any more
WITHDRAWN_KEY_ROTATED = "key_rotated"  # those left have new keys: none can answer it
SERVICE_REASONS = frozenset(
    {TOO_MANY_REJECTED, WITHDRAWN_AT_RESET, WITHDRAWN_DEVICE_REMOVED, WITHDRAWN_KEY_ROTATED}
)


class PushChallenge(Aggregate):
    """A push sent to the user's devices, answered once by one of them."""

    TOPIC = "mfa.push_challenge.v1"

    class Event(Aggregate.Event):
        key_owner: str

    class Created(Event, Aggregate.Created):
        TOPIC = "mfa.push.challenge_created.v1"
        user_id: str
        number: str
        device_ids: list[str]
        context: dict[str, str]
        expires_at: datetime
        # device id -> fingerprint of the key it had when the push was sent (absent in the
        # events of pushes opened before it was recorded)
        device_keys: dict[str, str]

    class Snapshot(AggregateSnapshot):
        TOPIC = "mfa.push_challenge.snapshot.v1"

    def __init__(
        self,
        key_owner: str,
        user_id: str,
        number: str,
        device_ids: list[str],
        context: dict[str, str],
        expires_at: datetime,
        device_keys: dict[str, str] | None = None,
    ) -> None:
        self.key_owner = key_owner
        self.user_id = user_id
        self.number = number
        self.device_ids = list(device_ids)
        self.device_keys = dict(device_keys or {})
        self.context = dict(context)
        self.expires_at = expires_at
        self.status = PENDING
        self.responded_at: datetime | None = None
        self.responding_device: str | None = None
        self.reason: str | None = None
        self.rejected_responses = 0

    @classmethod
    def open(
        cls,
        challenge_id: UUID,
        *,
        user_aggregate_id: UUID,
        user_id: str,
        number: str,
        device_ids: list[str],
        context: dict[str, str],
        expires_at: datetime,
        at: datetime,
        device_keys: dict[str, str] | None = None,
    ) -> PushChallenge:
        return cls._create(
            cls.Created,
            id=challenge_id,
            key_owner=str(user_aggregate_id),
            user_id=user_id,
            number=number,
            device_ids=device_ids,
            context=context,
            expires_at=expires_at,
            device_keys=dict(device_keys or {}),
            timestamp=at,
        )

    def was_sent_to(self, device_id: str, key_fingerprint: str) -> bool:
        """Whether the push went to this device with this key: a device removed and synced
        again under its id, or given another key since, is not the one it was sent to. (A
        push opened before keys were recorded knows only the ids.)"""
        keys: dict[str, str] = getattr(self, "device_keys", {})  # (older snapshots)
        if device_id not in self.device_ids:
            return False
        return not keys or keys.get(device_id) == key_fingerprint

    def status_at(self, at: datetime) -> str:
        """pending, approved, denied — or expired once a pending push outlives its 2 minutes."""
        if self.status == PENDING and at >= self.expires_at:
            return EXPIRED
        return self.status

    def belongs_to(self, user_aggregate_id: UUID) -> bool:
        return self.key_owner == str(user_aggregate_id)

    def _ensure_pending(self, at: datetime) -> None:
        status = self.status_at(at)
        if status == EXPIRED:
            raise ChallengeExpiredError("the push challenge expired")
        if status != PENDING:
            raise ChallengeUsedError(f"the push challenge was already {status}")

    def _reject(self, device_id: str, reason: str, at: datetime) -> InvalidCodeError:
        self.trigger_event(
            self.ResponseRejected,
            key_owner=self.key_owner,
            device_id=device_id,
            reason=reason,
            timestamp=at,
        )
        remaining = MAX_REJECTED_RESPONSES - self.rejected_responses
        if remaining <= 0:
            self.trigger_event(
                self.Denied,
                key_owner=self.key_owner,
                device_id=device_id,
                reason=TOO_MANY_REJECTED,
                fraud=False,
                timestamp=at,
            )
        return InvalidCodeError("the push response was not accepted", max(0, remaining))

    def approve(self, device_id: str, number: str, signature_valid: bool, at: datetime) -> None:
        """The device signed an approval and typed the number shown on the login screen."""
        self._ensure_pending(at)
        if device_id not in self.device_ids or not signature_valid:
            raise self._reject(device_id, "bad_signature", at)
        if not hmac.compare_digest(number.encode(), self.number.encode()):
            raise self._reject(device_id, "wrong_number", at)
        self.trigger_event(
            self.Approved, key_owner=self.key_owner, device_id=device_id, timestamp=at
        )

    def deny(self, device_id: str, reason: str, signature_valid: bool, at: datetime) -> bool:
        """The device signed a denial; `not_me` is a fraud report. Returns whether it is one."""
        self._ensure_pending(at)
        if device_id not in self.device_ids or not signature_valid:
            raise self._reject(device_id, "bad_signature", at)
        fraud = reason == "not_me"
        self.trigger_event(
            self.Denied,
            key_owner=self.key_owner,
            device_id=device_id,
            reason=reason,
            fraud=fraud,
            timestamp=at,
        )
        return fraud

    def withdraw(self, reason: str, at: datetime) -> None:
        """End a pending push with no device's answer (a reset or a removal took away the
        devices it was sent to): denied, with `reason` and no device id."""
        if self.status_at(at) == PENDING:
            self.trigger_event(
                self.Denied,
                key_owner=self.key_owner,
                device_id="",
                reason=reason,
                fraud=False,
                timestamp=at,
            )

    class Approved(Event):
        TOPIC = "mfa.push.challenge_approved.v1"
        device_id: str

        def apply(self, aggregate: PushChallenge) -> None:
            aggregate.status = APPROVED
            aggregate.responded_at = self.timestamp
            aggregate.responding_device = self.device_id

    class Denied(Event):
        TOPIC = "mfa.push.challenge_denied.v1"
        device_id: str
        reason: str
        fraud: bool

        def apply(self, aggregate: PushChallenge) -> None:
            aggregate.status = DENIED
            aggregate.responded_at = self.timestamp
            aggregate.responding_device = self.device_id or None  # "": withdrawn, no device
            aggregate.reason = self.reason

    class ResponseRejected(Event):
        TOPIC = "mfa.push.response_rejected.v1"
        device_id: str
        reason: str

        def apply(self, aggregate: PushChallenge) -> None:
            aggregate.rejected_responses += 1


register_topic(PushChallenge.Snapshot.TOPIC, PushChallenge.Snapshot)
