"""The public event contract: CloudEvents 1.0 messages mapped from internal events.

Internal events are not the contract. Each public type is versioned through `dataschema`; the
data holds no secret, code, hash, time step or key material, and no PII beyond the user id in
`subject`. docs/events.md lists every type.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.utils import get_topic

from commands.store import RedactedEvent
from domain.push_challenge import PushChallenge
from domain.user_mfa import UserMfa

SOURCE = "urn:mfa:service"
SCHEMA_BASE = "urn:mfa:events"
EVENT_ID_NAMESPACE = uuid.UUID("6f1c0f36-5a43-4d9e-9a55-7d0f0a1e4b21")


class CloudEvent(msgspec.Struct, kw_only=True):
    """A CloudEvents 1.0 JSON message as published on `mfa.events.<area>.<event>`."""

    specversion: str = "1.0"
    id: str
    source: str = SOURCE
    type: str
    subject: str
    time: datetime
    datacontenttype: str = "application/json"
    dataschema: str
    data: dict[str, Any]

    @property
    def nats_subject(self) -> str:
        return "mfa.events." + self.type.removeprefix("mfa.")


def event_id(originator_id: object, version: int) -> str:
    """A stable id per stored event: re-publishing it gives the same id (JetStream dedup)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{originator_id}:{version}"))


def _device(e: Any) -> dict[str, Any]:
    return {"device_id": e.device_id}


def _purpose(e: Any) -> dict[str, Any]:
    """SMS and email code events: what the code was for, never the code, hash or destination."""
    return {"purpose": e.purpose}


def _voided(e: Any) -> dict[str, Any]:
    return {"purpose": e.purpose, "reason": e.reason}


# internal event class -> (public type, schema version, data)
PUBLIC_EVENTS: dict[type[Any], tuple[str, int, Callable[[Any], dict[str, Any]]]] = {
    UserMfa.Created: ("mfa.user.created", 1, lambda e: {}),
    UserMfa.TotpDeviceRegistered: ("mfa.totp.device_registered", 1, _device),
    UserMfa.TotpDeviceVerified: ("mfa.totp.device_verified", 1, _device),
    UserMfa.TotpCodeAccepted: ("mfa.totp.code_accepted", 1, _device),
    UserMfa.TotpDeviceDisabled: ("mfa.totp.device_disabled", 1, _device),
    UserMfa.TotpDeviceEnabled: ("mfa.totp.device_enabled", 1, _device),
    UserMfa.TotpDeviceRevoked: ("mfa.totp.device_revoked", 1, _device),
    UserMfa.TotpDisabled: ("mfa.totp.disabled", 1, lambda e: {"device_ids": list(e.device_ids)}),
    UserMfa.TotpEnabled: ("mfa.totp.enabled", 1, lambda e: {"device_ids": list(e.device_ids)}),
    UserMfa.VerificationFailed: (
        "mfa.verification.failed",
        1,
        lambda e: {"factor": e.factor, "reason": e.reason, "credential_id": e.credential_id},
    ),
    UserMfa.FactorLocked: (
        "mfa.lockout.factor_locked",
        1,
        lambda e: {"factor": e.factor, "locked_until": e.until.isoformat(), "level": e.level},
    ),
    UserMfa.AttemptRefusedWhileLocked: (
        "mfa.lockout.attempt_refused",
        1,
        lambda e: {"factor": e.factor},
    ),
    UserMfa.BackupCodesGenerated: (
        "mfa.backup_codes.generated",
        1,
        lambda e: {"count": len(e.codes)},
    ),
    UserMfa.BackupCodeUsed: ("mfa.backup_codes.used", 1, lambda e: {}),
    UserMfa.MethodRemoved: ("mfa.method.removed", 1, lambda e: {"method": e.method}),
    UserMfa.PrimaryMethodSet: (
        "mfa.method.primary_set",
        1,
        lambda e: {"method": e.method, "credential_id": e.credential_id},
    ),
    UserMfa.WebAuthnCredentialRegistered: (
        "mfa.webauthn.credential_registered",
        1,
        lambda e: {"credential_id": e.credential_id, "backup_eligible": e.backup_eligible},
    ),
    UserMfa.WebAuthnCredentialDeleted: (
        "mfa.webauthn.credential_deleted",
        1,
        lambda e: {"credential_id": e.credential_id},
    ),
    UserMfa.WebAuthnCloneSuspected: (
        "mfa.webauthn.clone_suspected",
        1,
        lambda e: {"credential_id": e.credential_id},
    ),
    UserMfa.TrustedDeviceRemembered: (
        "mfa.trusted_device.remembered",
        1,
        lambda e: {"device_id": e.device_id, "expires_at": e.expires_at.isoformat()},
    ),
    UserMfa.TrustedDevicesRevoked: (
        "mfa.trusted_device.revoked",
        1,
        lambda e: {"device_ids": list(e.device_ids), "reason": e.reason},
    ),
    UserMfa.ChallengeCompleted: (
        "mfa.challenge.completed",
        1,
        lambda e: {"challenge_id": e.challenge_id, "method": e.method, "acr": e.acr},
    ),
    UserMfa.PushDeviceSynced: (
        "mfa.push.device_synced",
        1,
        lambda e: {"device_id": e.device_id, "platform": e.platform, "key_rotated": e.key_rotated},
    ),
    UserMfa.PushDeviceRevoked: ("mfa.push.device_revoked", 1, _device),
    UserMfa.PushFraudReported: (
        "mfa.push.fraud_reported",
        1,
        lambda e: {"challenge_id": e.challenge_id, "device_id": e.device_id},
    ),
    PushChallenge.Created: (
        "mfa.push.challenge_created",
        1,
        lambda e: {
            "challenge_id": str(e.originator_id),
            "devices": len(e.device_ids),
            "expires_at": e.expires_at.isoformat(),
        },
    ),
    PushChallenge.Approved: (
        "mfa.push.challenge_approved",
        1,
        lambda e: {"challenge_id": str(e.originator_id), "device_id": e.device_id},
    ),
    PushChallenge.Denied: (
        "mfa.push.challenge_denied",
        1,
        lambda e: {
            "challenge_id": str(e.originator_id),
            "device_id": e.device_id,
            "reason": e.reason,
            "fraud": e.fraud,
        },
    ),
    UserMfa.SmsEnrolmentStarted: ("mfa.sms.enrolment_started", 1, lambda e: {}),
    UserMfa.SmsEnrolled: ("mfa.sms.enrolled", 1, lambda e: {}),
    UserMfa.SmsCodeSent: ("mfa.sms.code_sent", 1, _purpose),
    UserMfa.SmsCodeVoided: ("mfa.sms.code_voided", 1, _voided),
    UserMfa.SmsCodeAccepted: ("mfa.sms.code_accepted", 1, _purpose),
    UserMfa.EmailEnrolmentStarted: ("mfa.email.enrolment_started", 1, lambda e: {}),
    UserMfa.EmailEnrolled: ("mfa.email.enrolled", 1, lambda e: {}),
    UserMfa.EmailCodeSent: ("mfa.email.code_sent", 1, _purpose),
    UserMfa.EmailCodeVoided: ("mfa.email.code_voided", 1, _voided),
    UserMfa.EmailCodeAccepted: ("mfa.email.code_accepted", 1, _purpose),
    UserMfa.UserMfaReset: ("mfa.user.reset", 1, lambda e: {"methods": list(e.methods)}),
    UserMfa.UserErased: ("mfa.user.erased", 1, lambda e: {}),
    RedactedEvent: ("mfa.event.redacted", 1, lambda e: {}),
}


# The stored topics of the public types (a redacted event keeps its original one).
PUBLIC_TOPICS = frozenset(get_topic(cls) for cls in PUBLIC_EVENTS if cls is not RedactedEvent)


def is_published(event: Any) -> bool:
    """Whether the relay publishes `event`: one of a public type, or the redacted stand-in
    for one.

    An event whose type is not public stays unpublished once redacted. Otherwise publishing
    a range of the log again after an erasure would bring new messages between the
    duplicates of the first time, and JetStream refuses a new message whose
    `Nats-Expected-Last-Msg-Id` names a duplicate that is not the last one it stored.
    """
    if type(event) is RedactedEvent:
        return event.redacted_topic in PUBLIC_TOPICS
    return type(event) in PUBLIC_EVENTS


def to_public(event: Any, subject: str) -> CloudEvent:
    """The public message for an internal event, with the user id as `subject`."""
    public_type, version, data = PUBLIC_EVENTS[type(event)]
    return CloudEvent(
        id=event_id(event.originator_id, event.originator_version),
        type=public_type,
        subject=subject,
        time=event.timestamp,
        dataschema=f"{SCHEMA_BASE}:{public_type}:v{version}",
        data=data(event),
    )


def encode(message: CloudEvent) -> bytes:
    """JSON bytes of a message."""
    return msgspec.json.encode(message)
