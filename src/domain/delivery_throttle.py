"""DeliveryThrottle: how often codes went to one phone number or email address, whoever asked.

The per-user limits live in the user's aggregate; this one makes the per-destination limit
hold across users (two accounts sharing one phone number, or an attacker enrolling a
victim's number on many accounts). Its id is a keyed hash of the normalised destination, and
its events hold nothing but times, so they are stored in clear: the destination itself lives
only in the enrolling user's encrypted events.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.utils import register_topic

from domain.oob_codes import (
    MAX_ENROLMENT_SENDS_PER_DESTINATION,
    MAX_SENDS_PER_DESTINATION,
    next_send_at,
    recent_sends,
)


def delivery_throttle_id(method: str, destination_key: str, key: bytes) -> UUID:
    """HMAC-SHA256 of the method and the destination's canonical form, shaped as a UUIDv8."""
    message = f"{method}\x00{destination_key}".encode()
    digest = bytearray(hmac.new(key, message, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return UUID(bytes=bytes(digest))


class DeliveryThrottleEvent(Aggregate.Event):
    """Base of the throttle's events: times only, nothing about anyone (stored in clear)."""

    STORED_IN_CLEAR = True


class DeliveryThrottle(Aggregate):
    """The sends to one destination in the last hour, and which of them were enrolments."""

    TOPIC = "mfa.delivery_throttle.v1"

    Event = DeliveryThrottleEvent

    class Created(DeliveryThrottleEvent, Aggregate.Created):
        TOPIC = "mfa.delivery_throttle.created.v1"

    class SendRecorded(DeliveryThrottleEvent):
        TOPIC = "mfa.delivery_throttle.send_recorded.v1"
        enrolment: bool

        def apply(self, aggregate: DeliveryThrottle) -> None:
            aggregate.sends = recent_sends(aggregate.sends, self.timestamp)
            if self.enrolment:
                enrolments = recent_sends(aggregate.enrolment_sends, self.timestamp)
                aggregate.enrolment_sends = enrolments

    class Snapshot(AggregateSnapshot):
        TOPIC = "mfa.delivery_throttle.snapshot.v1"
        STORED_IN_CLEAR = True

    def __init__(self) -> None:
        self.sends: list[datetime] = []
        self.enrolment_sends: list[datetime] = []

    @classmethod
    def start(cls, throttle_id: UUID, at: datetime) -> DeliveryThrottle:
        """A throttle for a destination that nothing was sent to yet."""
        return cls._create(cls.Created, id=throttle_id, timestamp=at)

    def next_send_at(self, at: datetime, *, enrolment: bool = False) -> datetime | None:
        """When this destination may be sent another code (None: now).

        Enrolment codes go by their own smaller budget only. Anyone may ask to enrol any
        number or address, so their answer must not depend on the login codes its owner
        was sent: that would tell a stranger when the owner logs in.
        """
        if enrolment:
            return next_send_at(self.enrolment_sends, at, MAX_ENROLMENT_SENDS_PER_DESTINATION)
        return next_send_at(self.sends, at, MAX_SENDS_PER_DESTINATION)

    def record_send(self, at: datetime, *, enrolment: bool = False) -> None:
        """Count one message to this destination."""
        self.trigger_event(self.SendRecorded, enrolment=enrolment, timestamp=at)


register_topic(DeliveryThrottle.Snapshot.TOPIC, DeliveryThrottle.Snapshot)
