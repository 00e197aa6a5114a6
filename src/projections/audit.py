"""Auditors' views of the log: a user's history, a user's state at a time, the whole log.

Read straight from the event store (not from a projection), in order, with secrets masked.
Events of an erased user read as redacted: type, time and version only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from commands.app import MfaApplication
from commands.store import DamagedEventError, RedactedEvent
from domain.user_mfa import UserMfa

MASK = "***"
# Secrets, hashes of secrets, key material, contact details and ceremony challenges: auditors
# see that they were there, not what they were (DESIGN.md: none leaves the service in clear).
SENSITIVE_FIELDS = frozenset(
    {
        "secret",
        "codes",
        "salt",
        "hash",
        "token_hash",
        "timecode",
        "destination",
        "public_key",
        "push_token",
        "challenge",
        "webauthn_challenge",
        "number",  # a push's number matching: shown once, to the login screen
    }
)
_ENVELOPE_FIELDS = ("originator_id", "originator_version", "timestamp")


def mask(value: Any) -> Any:
    """A copy of `value` with every sensitive field replaced by `***`."""
    if isinstance(value, dict):
        return {k: MASK if k in SENSITIVE_FIELDS else mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _topic(event: Any) -> str:
    if isinstance(event, RedactedEvent):
        return event.redacted_topic
    return str(getattr(type(event), "TOPIC", type(event).__qualname__))


def describe_event(event: Any, position: int | None) -> dict[str, Any]:
    """One event as auditors see it."""
    redacted = isinstance(event, RedactedEvent)
    data = None
    if not redacted:
        data = mask({k: v for k, v in vars(event).items() if k not in _ENVELOPE_FIELDS})
    return {
        "position": position,
        "time": event.timestamp,
        "type": _topic(event),
        "version": event.originator_version,
        "redacted": redacted,
        # its key is there, yet it does not decrypt: altered or damaged, not erased
        "damaged": redacted and event.damaged,
        "data": data,
    }


def event_positions(
    app: MfaApplication, aggregate_id: UUID, first: int, last: int
) -> dict[int, int]:
    """Version → notification id for one aggregate's versions `first`..`last` (the recorders
    keep both)."""
    recorder: Any = app.recorder
    table = recorder.events_table_name
    where = "originator_id = {0} AND originator_version BETWEEN {0} AND {0}"
    with recorder.datastore.transaction(commit=False) as cur:
        if type(recorder).__module__.startswith("eventsourcing.sqlite"):
            cur.execute(
                f"SELECT rowid, originator_version FROM {table} WHERE {where.format('?')}",
                (aggregate_id.hex, first, last),
            )
            return {int(version): int(rowid) for rowid, version in cur.fetchall()}
        cur.execute(
            f"SELECT notification_id, originator_version FROM {table} WHERE {where.format('%s')}",
            (aggregate_id, first, last),
        )
        return {int(r["originator_version"]): int(r["notification_id"]) for r in cur.fetchall()}


def user_history(
    app: MfaApplication, aggregate_id: UUID, after_version: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """A user's events in order, from `after_version` on, each with its log position.

    The events are read first: a position never changes once written, so every event read
    has one by the time the positions are read, even when a command for the user commits
    between the two reads.
    """
    events = list(app.events.get(aggregate_id, gt=after_version or None, limit=limit))
    if not events:
        return []
    positions = event_positions(
        app, aggregate_id, events[0].originator_version, events[-1].originator_version
    )
    return [describe_event(e, positions.get(e.originator_version)) for e in events]


def state_at(app: MfaApplication, aggregate_id: UUID, at: datetime) -> dict[str, Any] | None:
    """The state of one aggregate (one erasure epoch of a user) as it was at `at`, replayed
    from its events up to then; None when it had none yet.

    Every state says whether it can be read (`redacted`) and when the user was erased
    (`erased_at`, also when that came after `at`). An epoch whose events were shredded
    cannot be replayed: it reads as redacted, with its erasure's time, whatever `at` is.
    """
    version = 0
    erased_at: datetime | None = None
    shredded = past = False
    for event in app.events.get(aggregate_id):
        timestamp = cast(Any, event).timestamp
        if isinstance(event, RedactedEvent) and event.damaged:
            raise DamagedEventError(
                f"event {event.originator_version} of aggregate {aggregate_id} does not decrypt "
                "with its key (the stored row was altered or damaged): the state cannot be replayed"
            )
        shredded = shredded or isinstance(event, RedactedEvent)
        if type(event) is UserMfa.UserErased:
            erased_at = timestamp
        # The events up to the first one stamped after `at`: one stamped earlier that comes
        # after it (a clock more than 5 s behind, see `not_before`) did not happen by then.
        past = past or timestamp > at
        if not past:
            version = event.originator_version
    if version == 0:
        return None
    if shredded:
        return {"as_of": at, "version": version, "redacted": True, "erased_at": erased_at}
    mfa: UserMfa = app.repository.get(aggregate_id, version=version)
    return {**describe_state(mfa, at), "redacted": False, "erased_at": erased_at}


def user_state_at(
    app: MfaApplication, aggregate_ids: list[UUID], at: datetime
) -> dict[str, Any] | None:
    """A user's MFA state at `at`, across erasure epochs (`aggregate_ids` oldest first): that
    of the latest epoch begun by then. None when the user had no events by then."""
    for aggregate_id in reversed(aggregate_ids):
        state = state_at(app, aggregate_id, at)
        if state is not None:
            return state
    return None


def mask_destination(destination: str | None) -> str | None:
    """Enough of a phone number or address to recognise it, not enough to use it."""
    if not destination:
        return None
    if "@" in destination:
        local, _, domain = destination.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"***{destination[-2:]}"


def describe_state(mfa: UserMfa, at: datetime) -> dict[str, Any]:
    """The aggregate's state without secrets."""
    codes = mfa.backup_codes
    primary = mfa.current_primary()
    return {
        "as_of": at,
        "version": mfa.version,
        "totp_devices": [
            {
                "device_id": d.device_id,
                "name": d.name,
                "status": str(d.status),
                "created_at": d.created_at,
                "verified_at": d.verified_at,
                "last_used_at": d.last_used_at,
                "expires_at": d.expires_at,  # a pending set-up: verifiable until then
                "setup_expired": d.setup_expired(at),
            }
            for d in sorted(mfa.totp_devices.values(), key=lambda d: d.created_at)
        ],
        "backup_codes": None
        if codes is None
        else {
            "generated_at": codes.generated_at,
            "total": len(codes.codes),
            "remaining": codes.remaining(),
        },
        "webauthn_credentials": [
            {
                "credential_id": c.credential_id,
                "name": c.name,
                "sign_count": c.sign_count,
                "backup_eligible": c.backup_eligible,
                "clone_suspected": c.clone_suspected,
                "created_at": c.created_at,
                "last_used_at": c.last_used_at,
            }
            for c in sorted(mfa.webauthn_credentials.values(), key=lambda c: c.created_at)
        ],
        "trusted_devices": [
            {"device_id": d.device_id, "name": d.name, "expires_at": d.expires_at}
            for d in sorted(mfa.trusted_devices.values(), key=lambda d: d.created_at)
        ],
        "push_devices": [
            {"device_id": d.device_id, "name": d.name, "platform": d.platform}
            for d in sorted(mfa.push_devices.values(), key=lambda d: d.created_at)
        ],
        "oob": {
            method: {
                "enrolled": factor.is_active(),
                "destination": mask_destination(factor.destination),
                "enrolled_at": factor.enrolled_at,
            }
            for method, factor in sorted(mfa.oob_factors.items())
        },
        "locks": {
            factor: {
                "failures": lock.failures,
                "level": lock.level,
                "locked_until": lock.locked_until,
                "locked": lock.is_locked(at),
            }
            for factor, lock in sorted(mfa.locks.items())
        },
        # as the live API shows it: none while the chosen credential cannot be used
        "primary_method": primary[0] if primary else None,
        "primary_credential_id": primary[1] if primary else None,
        "mfa_enabled": mfa.mfa_enabled(),
    }


def export_log(app: MfaApplication, after: int = 0, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """The whole log in order, streamed in batches, secrets masked."""
    position = after
    while True:
        notifications = app.recorder.select_notifications(start=position + 1, limit=batch)
        if not notifications:
            return
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            entry = describe_event(event, notification.id)
            entry["aggregate_id"] = str(notification.originator_id)
            yield entry
        position = notifications[-1].id
