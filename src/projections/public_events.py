"""The public event contract: CloudEvents 1.0 messages mapped from internal events.

Internal events are not the contract. Each public type is versioned through `dataschema`; the
data holds no secret, code, hash, time step or key material, and no PII beyond the user id in
`subject` (and, for an admin configuration change, the acting admin's `sub`). docs/events.md
lists every type.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.utils import get_topic

from commands.store import RedactedEvent
from domain.config import MfaConfig
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


def _risk_policy(e: Any) -> dict[str, Any]:
    """The global risk policy in force after the change, and who changed it."""
    return {
        "base_score": e.after["base_score"],
        "thresholds": dict(e.after["thresholds"]),
        "weights": dict(e.after["weights"]),
        "actor": e.actor,
    }


def _level_policy(e: Any) -> dict[str, Any]:
    """One level's policy in force after the change (the default one after a reset)."""
    return {
        "level": e.level,
        "action": e.after["action"],
        "allowed_methods": list(e.after["allowed_methods"]),
        "step_up_max_age_s": e.after["step_up_max_age_s"],
        "actor": e.actor,
    }


def _allowlist_entry(e: Any) -> dict[str, Any]:
    """An allowlist entry as it is after the change; never its description (a label an admin
    typed, like a device name)."""
    return {
        "entry_id": e.entry_id,
        "cidr": e.after["cidr"],
        "expires_at": e.after["expires_at"],
        "actor": e.actor,
    }


# internal event class -> (public type, schema version, data)
PUBLIC_EVENTS: dict[type[Any], tuple[str, int, Callable[[Any], dict[str, Any]]]] = {
    UserMfa.Created: ("mfa.user.created", 1, lambda e: {}),
    UserMfa.TotpDeviceRegistered: ("mfa.totp.device_registered", 1, _device),
    UserMfa.TotpDeviceVerified: ("mfa.totp.device_verified", 1, _device),
    UserMfa.TotpCodeAccepted: ("mfa.totp.code_accepted", 1, _device),
    UserMfa.TotpDeviceDisabled: ("mfa.totp.device_disabled", 1, _device),
    UserMfa.TotpDeviceEnabled: ("mfa.totp.device_enabled", 1, _device),
    UserMfa.TotpDeviceRevoked: ("mfa.totp.device_revoked", 1, _device),
    UserMfa.TotpSetupExpired: ("mfa.totp.setup_expired", 1, _device),
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
    MfaConfig.RiskPolicyUpdated: ("mfa.config.risk_policy_updated", 1, _risk_policy),
    MfaConfig.LevelPolicyUpdated: ("mfa.config.level_policy_updated", 1, _level_policy),
    MfaConfig.LevelPolicyReset: ("mfa.config.level_policy_reset", 1, _level_policy),
    MfaConfig.AllowlistEntryAdded: ("mfa.config.allowlist_entry_added", 1, _allowlist_entry),
    MfaConfig.AllowlistEntryUpdated: ("mfa.config.allowlist_entry_updated", 1, _allowlist_entry),
    MfaConfig.AllowlistEntryRemoved: (
        "mfa.config.allowlist_entry_removed",
        1,
        lambda e: {"entry_id": e.entry_id, "actor": e.actor},
    ),
    RedactedEvent: ("mfa.event.redacted", 1, lambda e: {}),
}

# Admin configuration events: internal event class -> the config resource it changed, the
# `subject` of its message instead of a user id (named like the admin API's paths).
CONFIG_RESOURCES: dict[type[Any], Callable[[Any], str]] = {
    MfaConfig.RiskPolicyUpdated: lambda e: "config:risk-policy",
    MfaConfig.LevelPolicyUpdated: lambda e: f"config:risk-policies/{e.level}",
    MfaConfig.LevelPolicyReset: lambda e: f"config:risk-policies/{e.level}",
    MfaConfig.AllowlistEntryAdded: lambda e: f"config:ip-whitelist/{e.entry_id}",
    MfaConfig.AllowlistEntryUpdated: lambda e: f"config:ip-whitelist/{e.entry_id}",
    MfaConfig.AllowlistEntryRemoved: lambda e: f"config:ip-whitelist/{e.entry_id}",
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


def config_subject(event: Any) -> str | None:
    """The config resource an admin configuration event changed (its message's `subject`);
    None for every other event, whose subject is a user id."""
    resource = CONFIG_RESOURCES.get(type(event))
    return None if resource is None else resource(event)


def to_public(event: Any, subject: str) -> CloudEvent:
    """The public message for an internal event, with `subject`: the user id, or for an admin
    configuration change the config resource (`config_subject`)."""
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
