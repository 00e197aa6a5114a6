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

from domain.oob import MAX_SENDS_PER_DESTINATION, recent_sends, send_wait


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
    """The sends to one destination in the last hour."""

    TOPIC = "mfa.delivery_throttle.v1"

    Event = DeliveryThrottleEvent

    class Created(DeliveryThrottleEvent, Aggregate.Created):
        TOPIC = "mfa.delivery_throttle.created.v1"

    class SendRecorded(DeliveryThrottleEvent):
        TOPIC = "mfa.delivery_throttle.send_recorded.v1"

        def apply(self, aggregate: DeliveryThrottle) -> None:
            aggregate.sends = recent_sends(aggregate.sends, self.timestamp)

    class Snapshot(AggregateSnapshot):
        TOPIC = "mfa.delivery_throttle.snapshot.v1"
        STORED_IN_CLEAR = True

    def __init__(self) -> None:
        self.sends: list[datetime] = []

    @classmethod
    def start(cls, throttle_id: UUID, at: datetime) -> DeliveryThrottle:
        """A throttle for a destination that nothing was sent to yet."""
        return cls._create(cls.Created, id=throttle_id, timestamp=at)

    def send_wait(self, at: datetime) -> int | None:
        """Seconds until this destination may be sent another code (None: now)."""
        return send_wait(self.sends, at, MAX_SENDS_PER_DESTINATION)

    def record_send(self, at: datetime) -> None:
        """Count one message to this destination."""
        self.trigger_event(self.SendRecorded, timestamp=at)


register_topic(DeliveryThrottle.Snapshot.TOPIC, DeliveryThrottle.Snapshot)
