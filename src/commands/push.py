"""Push commands: device sync, challenges with number matching, signed approve/deny."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.application import AggregateNotFoundError
from nacl.bindings import crypto_core_ed25519_is_valid_point

from commands.app import Outcome, Services, aggregate_id, execute, forget_cached, load_user
from domain.errors import DeliveryFailedError, DomainError, InvalidCodeError, NotFoundError
from domain.push import PushDevice
from domain.push_challenge import (
    DENIED,
    SERVICE_REASONS,
    WITHDRAWN_DEVICE_REMOVED,
    WITHDRAWN_KEY_ROTATED,
    PushChallenge,
)
from domain.user_mfa import UserMfa


class InvalidPublicKeyError(DomainError):
    """The device's public key is not a raw 32-byte Ed25519 key in base64url."""

    code = "validation_error"


class ReservedReasonError(DomainError):
    """A denial reason only the service gives (the stream would show it as the service's)."""

    code = "validation_error"


@dataclass(frozen=True)
class PushDeviceSync:
    device_id: str
    name: str
    platform: str
    push_token: str
    public_key: str
    app_version: str


def _decode_b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPublicKeyError("public_key: not base64url") from None


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A device key: exactly 32 raw bytes, base64url, a point of the main subgroup.

    libsodium's check refuses what OpenSSL's verification would accept from anyone: a key of
    small order (the neutral point, say) for which one "signature" verifies every message,
    and non-canonical encodings.
    """
    raw = _decode_b64url(text)
    if len(raw) != 32:
        raise InvalidPublicKeyError("public_key: an Ed25519 public key is 32 raw bytes")
    if not crypto_core_ed25519_is_valid_point(raw):
        raise InvalidPublicKeyError("public_key: not a valid Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_valid(device: PushDevice, challenge_id: str, verb: str, signature: str) -> bool:
    """Whether `signature` is the device's Ed25519 signature of `mfa-push:{id}:{verb}`."""
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        parse_public_key(device.public_key).verify(raw, f"mfa-push:{challenge_id}:{verb}".encode())
    except (InvalidSignature, binascii.Error, ValueError, InvalidPublicKeyError):
        return False
    return True


def sync_device(
    services: Services, user_id: str, sync: PushDeviceSync
) -> Outcome[tuple[PushDevice, bool]]:
    """Register or update an authenticator app; a new key rotates the device's key."""
    parse_public_key(sync.public_key)
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> tuple[PushDevice, bool]:
        before = mfa.push_devices.get(sync.device_id)
        device, created = mfa.sync_push_device(
            device_id=sync.device_id,
            name=sync.name,
            platform=sync.platform,
            push_token=sync.push_token,
            public_key=sync.public_key,
            app_version=sync.app_version,
            at=now,
        )
        if before is not None and key_fingerprint(before) != key_fingerprint(device):
            withdraw_unanswerable_pushes(services, mfa, now, extra)
        return device, created

    return execute(services, user_id, decide, extra=extra)


def revoke_device(services: Services, user_id: str, device_id: str) -> Outcome[PushDevice]:
    """The device can no longer answer; a pending push sent to it alone is withdrawn. The
    device as it was before its removal."""
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> PushDevice:
        removed = mfa.push_devices.get(device_id)
        mfa.revoke_push_device(device_id, now)
        withdraw_unanswerable_pushes(services, mfa, now, extra)
        assert removed is not None  # (revoke_push_device refuses an unknown one)
        return removed

    return execute(
        services,
        user_id,
        decide,
        create=False,
        missing=lambda: NotFoundError("no such push device"),
        extra=extra,
    )


def pending_pushes(services: Services, mfa: UserMfa, now: datetime) -> list[PushChallenge]:
    """The user's pushes still pending, loaded (one already gone with its key is skipped)."""
    pending = []
    for request in mfa.push_requests:
        if request.is_pending(now):
            with contextlib.suppress(NotFoundError):
                pending.append(load_challenge(services, request.challenge_id))
    return pending


def withdraw_pushes(
    challenges: list[PushChallenge], reason: str, now: datetime, extra: list[Any]
) -> None:
    """Withdraw pending pushes (denied with `reason`, no device) in the caller's append: an
    app synced again under a removed device's id must not approve a login begun before."""
    for challenge in challenges:
        challenge.withdraw(reason, now)
        extra.append(challenge)


def withdraw_unanswerable_pushes(
    services: Services, mfa: UserMfa, now: datetime, extra: list[Any]
) -> None:
    """After devices were removed or given new keys: withdraw each pending push that no device
    it was sent to can answer any more (`device_removed` when none of them is left,
    `key_rotated` when one is, under another key), rather than leave it to expire."""
    for challenge in pending_pushes(services, mfa, now):
        devices = [mfa.push_devices[d] for d in challenge.device_ids if d in mfa.push_devices]
        if any(challenge.was_sent_to(d.device_id, key_fingerprint(d)) for d in devices):
            continue
        reason = WITHDRAWN_KEY_ROTATED if devices else WITHDRAWN_DEVICE_REMOVED
        withdraw_pushes([challenge], reason, now, extra)
        mfa.resolve_push(str(challenge.id), DENIED, now)


def open_push_challenge(
    services: Services,
    mfa: UserMfa,
    challenge_id: UUID,
    context: dict[str, str],
    now: datetime,
) -> PushChallenge:
    """Throttle-check on the user's aggregate, then a new PushChallenge (both saved together)."""
    expires_at = mfa.request_push(str(challenge_id), now)
    number = f"{int.from_bytes(services.random.token_bytes(2), 'big') % 90 + 10}"
    return PushChallenge.open(
        challenge_id,
        user_aggregate_id=mfa.id,
        user_id=mfa.user_id,
        number=number,
        device_ids=sorted(mfa.push_devices),
        context=context,
        expires_at=expires_at,
        at=now,
        device_keys={d.device_id: key_fingerprint(d) for d in mfa.push_devices.values()},
    )


def key_fingerprint(device: PushDevice) -> str:
    """What a push challenge keeps of each device's key: a SHA-256 of its 32 bytes (not of
    the text, which one key can be written in several ways: padded or not, with unused low
    bits set)."""
    return hashlib.sha256(_decode_b64url(device.public_key)).hexdigest()


def deliver(services: Services, mfa: UserMfa, challenge: PushChallenge) -> None:
    """Push to every device of the user; DeliveryFailedError when none accepted it."""
    sender = services.push_sender
    if sender is None:
        return
    payload: dict[str, Any] = {
        "type": "mfa.push.challenge",
        "challenge_id": str(challenge.id),
        "expires_at": challenge.expires_at.isoformat(),
        "context": challenge.context,
    }
    delivered = sender.send_all(list(mfa.push_devices.values()), payload)
    if not any(delivered):
        raise DeliveryFailedError("the push could not be delivered to any device")


def create_challenge(
    services: Services, user_id: str, context: dict[str, str]
) -> Outcome[PushChallenge]:
    """A push challenge with a 2-digit number for the login screen, delivered to the apps."""
    challenge_id = uuid.UUID(bytes=services.random.token_bytes(16), version=4)
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> PushChallenge:
        challenge = open_push_challenge(services, mfa, challenge_id, context, now)
        extra.append(challenge)
        return challenge

    outcome = execute(services, user_id, decide, create=False, extra=extra)
    mfa = load_user(services, user_id)
    if mfa is not None:
        deliver(services, mfa, outcome.value)
    return outcome


def load_challenge(services: Services, challenge_id: str) -> PushChallenge:
    """A push challenge by id (any user); NotFoundError when unknown or malformed."""
    try:
        key = UUID(challenge_id)
        if str(key) != challenge_id:  # only the id as issued: it is also the signed text's
            raise ValueError(challenge_id)
        challenge: PushChallenge = services.app.repository.get(key)
    except (ValueError, AggregateNotFoundError):
        raise NotFoundError("no such push challenge") from None
    if not isinstance(challenge, PushChallenge):
        raise NotFoundError("no such push challenge")
    if services.app.vault.get(challenge.key_owner) is None:
        # Its owner was erased (the key is destroyed) since this process cached it.
        forget_cached(services, key)
        raise NotFoundError("no such push challenge")
    return challenge


def own_challenge(services: Services, user_id: str, challenge_id: str) -> PushChallenge:
    """A push challenge of this user; another user's is not found."""
    challenge = load_challenge(services, challenge_id)
    if not challenge.belongs_to(aggregate_id(services, user_id)):
        raise NotFoundError("no such push challenge")
    return challenge


def respond(
    services: Services,
    user_id: str,
    challenge_id: str,
    device_id: str,
    *,
    approve: bool,
    signature: str,
    number: str = "",
    reason: str = "",
) -> Outcome[PushChallenge]:
    """Approve (with the number) or deny (optionally `not_me`) a push, signed by the device."""
    if not approve and reason in SERVICE_REASONS:
        raise ReservedReasonError(f"reason: {reason!r} is given by the service only")
    extra: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> PushChallenge:
        challenge = own_challenge(services, user_id, challenge_id)
        extra.append(challenge)
        device = mfa.push_devices.get(device_id)
        verb = "approve" if approve else "deny"
        # Only the key the push was sent to may answer it: a device removed and synced again
        # under its id, or given another key since, must not answer a push begun before.
        valid = (
            device is not None
            and challenge.was_sent_to(device_id, key_fingerprint(device))
            and signature_valid(device, challenge_id, verb, signature)
        )
        try:
            if approve:
                challenge.approve(device_id, number, valid, now)
            elif challenge.deny(device_id, reason or "denied", valid, now):
                mfa.report_fraud(challenge_id, device_id, now)
        except InvalidCodeError:
            if challenge.status == DENIED:  # the last rejected response denied the push
                mfa.resolve_push(challenge_id, DENIED, now)
            raise
        mfa.resolve_push(challenge_id, challenge.status, now)
        return challenge

    return execute(
        services,
        user_id,
        decide,
        create=False,
        extra=extra,
        missing=lambda: NotFoundError("no such push challenge"),
    )
