"""How events are stored: transcodings for domain entities and per-owner AES-GCM encryption.

Each stored event's state is a small JSON envelope. The event's time stays readable (`ts`,
beside the topic and version the recorder keeps); everything else is AES-GCM ciphertext under
the owner's data key (`k` names the key; the UserMfa aggregate id for a user's events). The
ciphertext is bound to its originator, version, topic and time, so rows cannot be swapped and
times cannot be altered unnoticed. When the key has been destroyed (erasure), the event reads
as a `RedactedEvent`: type, time and version only. One whose key is there but which does not
decrypt was altered or damaged (a destroyed key is never made again), and one whose key is
gone without its tombstone was cut off from it: either reads as a `RedactedEvent` marked
`damaged`, and an ERROR is logged. A row whose envelope cannot be read at all raises
`DamagedEventError`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEvent, DomainEventProtocol
from eventsourcing.persistence import (
    EventStore,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    Transcoding,
)
from eventsourcing.utils import get_topic, resolve_topic

from commands.ports import KeyVault

ENVELOPE_VERSION = 1
PLAINTEXT_ATTRIBUTE = "STORED_IN_CLEAR"
KEY_OWNER_ATTRIBUTE = "key_owner"

log = logging.getLogger("mfa.store")


class DamagedEventError(Exception):
    """A stored event whose envelope cannot be read: the row was altered or damaged."""


class DataclassAsDict(Transcoding):
    """Store a domain dataclass as the dict of its fields (nested values transcoded too)."""

    def __init__(self, cls: type[Any]) -> None:
        self.type = cls
        self.name = cls.__name__

    def encode(self, obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class ValueAsDict(Transcoding):
    """Store a domain value by its own `as_dict` / `from_dict` (the configuration's policies
    and allowlist entries: the shape their events already hold)."""

    def __init__(self, cls: Any) -> None:
        self.type = cls
        self.name = cls.__name__
        self._from_dict = cls.from_dict

    def encode(self, obj: Any) -> dict[str, Any]:
        encoded: dict[str, Any] = obj.as_dict()
        return encoded

    def decode(self, data: dict[str, Any]) -> Any:
        return self._from_dict(data)


@dataclasses.dataclass(frozen=True)
class RedactedEvent(DomainEvent):
    """What an event of an erased owner reads as: its type, time and version, no payload."""

    TOPIC = "mfa.redacted.v1"
    redacted_topic: str
    damaged: bool = False  # its key is there, yet it does not decrypt: altered or damaged

    def mutate(self, aggregate: Any) -> None:
        """An erased owner's aggregate cannot be rebuilt: the repository reports it not found."""
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _aad(originator_id: UUID | str, version: int, topic: str, ts: str) -> bytes:
    """What a ciphertext is bound to: its row (originator, version), its type and its time."""
    return f"{originator_id}|{version}|{topic}|{ts}".encode()


class EncryptingMapper(Mapper[UUID]):
    """A mapper that encrypts each event with its owner's data key from the key vault."""

    def __init__(self, transcoder: Transcoder, vault: KeyVault, kind: str = "event") -> None:
        super().__init__(transcoder=transcoder)
        self.vault = vault
        self.kind = kind  # what its rows are, in messages: "event" or "snapshot"

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic = get_topic(type(domain_event))
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        version = state.pop("originator_version")
        timestamp: datetime = state.pop("timestamp")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        envelope: dict[str, Any] = {"v": ENVELOPE_VERSION, "ts": timestamp.isoformat()}
        if getattr(type(domain_event), PLAINTEXT_ATTRIBUTE, False):
            envelope["p"] = json.loads(self.transcoder.encode(state))
        else:
            key_id = str(state.get(KEY_OWNER_ATTRIBUTE) or originator_id)
            nonce = os.urandom(12)
            ciphertext = AESGCM(self.vault.get_or_create(key_id)).encrypt(
                nonce,
                self.transcoder.encode(state),
                _aad(originator_id, version, topic, envelope["ts"]),
            )
            envelope.update(k=key_id, n=_b64(nonce), c=_b64(ciphertext))
        return StoredEvent(
            originator_id=originator_id,
            originator_version=version,
            topic=topic,
            state=json.dumps(envelope, separators=(",", ":")).encode(),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        originator_id = stored_event.originator_id
        if not isinstance(originator_id, UUID):
            originator_id = UUID(str(originator_id))
        version = stored_event.originator_version
        try:
            envelope = json.loads(stored_event.state)
            timestamp = datetime.fromisoformat(envelope["ts"])
        except (ValueError, KeyError, TypeError):
            raise DamagedEventError(
                f"{self.kind} {version} of aggregate {originator_id} cannot be read (the stored "
                "row was altered or damaged)"
            ) from None
        if "p" in envelope:
            state = self.transcoder.decode(json.dumps(envelope["p"]).encode())
        else:
            try:
                plaintext = self._decrypt(stored_event, envelope)
            except (InvalidTag, ValueError, KeyError, TypeError):
                log.error(
                    "%s %d of aggregate %s does not decrypt with its key: the stored row was "
                    "altered or damaged, or its key lost (it reads as redacted)",
                    self.kind,
                    version,
                    originator_id,
                )
                plaintext, damaged = None, True
            else:
                damaged = False
            if plaintext is None:
                return RedactedEvent(
                    originator_id=originator_id,
                    originator_version=version,
                    timestamp=timestamp,
                    redacted_topic=stored_event.topic,
                    damaged=damaged,
                )
            state = self.transcoder.decode(plaintext)
        cls = resolve_topic(stored_event.topic)
        state["originator_id"] = originator_id
        state["originator_version"] = stored_event.originator_version
        state["timestamp"] = timestamp
        class_version = getattr(cls, "class_version", 1)
        from_version = state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event  # type: ignore[no-any-return]

    def _decrypt(self, stored_event: StoredEvent, envelope: dict[str, Any]) -> bytes | None:
        """The plaintext; None once the key was destroyed (erasure). InvalidTag (or a value
        error for a damaged envelope) when the row does not decrypt with its key, or names a
        key that is not there and was never destroyed (`k` is not covered by the tag)."""
        key = self.vault.get(envelope["k"])
        if key is None:
            if self.vault.destroyed(envelope["k"]):
                return None
            raise InvalidTag
        return AESGCM(key).decrypt(
            base64.b64decode(envelope["n"], validate=True),
            base64.b64decode(envelope["c"], validate=True),
            _aad(
                stored_event.originator_id,
                stored_event.originator_version,
                stored_event.topic,
                envelope["ts"],
            ),
        )


class SnapshotStore(EventStore[UUID]):
    """Snapshots; a damaged one (it does not decrypt, see `commands.store`) is passed over, and
    the aggregate rebuilt from its events: applied after it, they were applied to nothing."""

    def get(self, originator_id: UUID, **kwargs: Any) -> Iterator[DomainEventProtocol[UUID]]:
        snapshots = super().get(originator_id, **kwargs)
        while True:
            try:
                snapshot = next(snapshots)
            except StopIteration:
                return
            except DamagedEventError as exc:  # (its envelope could not be read at all)
                log.error("%s: passed over for the events", exc)
                continue
            if not (isinstance(snapshot, RedactedEvent) and snapshot.damaged):
                yield snapshot


def build_transcoder(
    entity_types: Sequence[type[Any]], value_types: Sequence[type[Any]] = ()
) -> JSONTranscoder:
    """The library's JSON transcoder plus one dataclass transcoding per domain entity, and one
    by `as_dict` / `from_dict` per value type."""
    from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, UUIDAsHex

    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    for cls in entity_types:
        transcoder.register(DataclassAsDict(cls))
    for cls in value_types:
        transcoder.register(ValueAsDict(cls))
    return transcoder
