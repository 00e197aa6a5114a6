"""SMS and email commands: enrol a destination, send a login code, verify it, disable, and the
codes of generic challenges.

Every send is three steps: issue the code (saved together with the destination's
DeliveryThrottle, so the per-user and per-destination limits hold under concurrency), hand
the message to the provider (outside any transaction), record what happened. A failed
delivery voids the code and answers 502. Destinations are parsed in commands.destinations.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import OperationalError

from commands.app import Outcome, Services, StoreUnavailableError, execute
from commands.destinations import normalise_destination, throttle_key
from commands.ports import DeliveryError, Random
from domain.challenge import Assurance, MfaChallenge, assurance
from domain.delivery_throttle import DeliveryThrottle, delivery_throttle_id
from domain.errors import ConflictError, DeliveryFailedError, DomainError, NotEnrolledError
from domain.oob_codes import (
    CHALLENGE,
    ENROLL,
    LOGIN,
    OOB_METHODS,
    SMS,
    NewOobCode,
    OobCode,
    destination_hint,
    hash_oob_code,
)
from domain.user_mfa import UserMfa

log = logging.getLogger("mfa.oob")
R = TypeVar("R")


def offered(services: Services, method: str) -> bool:
    """Whether the deployment offers `method`: not an SMS or email one whose provider is unset
    (while the other's is set; with neither, both go to the development log)."""
    if method not in OOB_METHODS:
        return True
    return (services.sms_sender if method == SMS else services.email_sender) is not None


EMAIL_SUBJECTS = {ENROLL: "Confirm your email address", LOGIN: "Your sign-in code"}


@dataclass(frozen=True)
class CodeDelivery:
    """What a send tells the caller: which code went where (masked), valid until when."""

    method: str
    purpose: str
    expires_at: datetime
    destination_hint: str


# ---------------------------------------------------------------- keys and codes


def _subkey(services: Services, purpose: bytes) -> bytes:
    return hmac.new(services.id_key, purpose, hashlib.sha256).digest()


def code_key(services: Services) -> bytes:
    """The key that code hashes are computed under (derived from the service key)."""
    return _subkey(services, b"mfa-oob-code-hash")


def throttle_id(services: Services, method: str, destination: str) -> UUID:
    """The DeliveryThrottle id of a destination: a keyed hash, never the destination."""
    key = _subkey(services, b"mfa-delivery-throttle")
    return delivery_throttle_id(method, throttle_key(method, destination), key)


def six_digits(random: Random) -> str:
    """A uniformly random 6-digit code from the CSPRNG (rejection sampling, no modulo bias)."""
    limit = 2**32 - 2**32 % 10**6
    while True:
        value = int.from_bytes(random.token_bytes(4), "big")
        if value < limit:
            return f"{value % 10**6:06d}"


def _new_code(services: Services) -> tuple[str, NewOobCode]:
    digits = six_digits(services.random)
    salt = services.random.token_bytes(16).hex()
    code_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))
    return digits, NewOobCode(code_id, salt, hash_oob_code(digits, salt, code_key(services)))


def message_text(issuer: str, digits: str, minutes: int, method: str, purpose: str) -> str:
    """The message: the 6 digits first, then what they are for and how long they last.

    An enrolment code says it adds this number or address to an account, a login code that
    it signs in: someone who enrolled a victim's number cannot pass their code off as the
    victim's own sign-in code to have it read out. With an issuer of up to 64 GSM characters
    (MFA_TOTP_ISSUER's limit) an SMS fits one 160-character message.
    """
    if purpose == ENROLL:
        target = "phone" if method == SMS else "email address"
        return (
            f"{digits} is your {issuer} code to add this {target} to an account. "
            f"Expires in {minutes} min. Didn't ask? Ignore it."
        )
    return (
        f"{digits} is your {issuer} sign-in code. It expires in {minutes} min. "
        "Never share it with anyone."
    )


def email_subject(purpose: str) -> str:
    return EMAIL_SUBJECTS[ENROLL if purpose == ENROLL else LOGIN]


# ---------------------------------------------------------------- sending


def _load_throttle(services: Services, method: str, destination: str, at: datetime) -> Any:
    throttle_uuid = throttle_id(services, method, destination)
    try:
        return services.app.repository.get(throttle_uuid)
    except AggregateNotFoundError:
        return DeliveryThrottle.start(throttle_uuid, at)
    except OperationalError as exc:
        raise StoreUnavailableError(str(exc)) from exc


Issue = Callable[[UserMfa, NewOobCode, datetime | None, datetime], tuple[R, OobCode]]


def _send(
    services: Services,
    user_id: str,
    method: str,
    issue: Issue[R],
    *,
    destination: str | None = None,
    create: bool = False,
) -> tuple[Outcome[R], OobCode, str]:
    """Issue a code (with the destination's throttle, atomically), then deliver it. With a
    `destination` it is an enrolment's code; otherwise it goes to the verified one. A channel
    with no sender (its provider unset while the other's is set) issues nothing."""
    if not offered(services, method):
        raise ConflictError(f"{method} codes are not offered: no {method} provider is configured")
    enrolment = destination is not None
    digits, new = _new_code(services)
    throttles: list[Any] = []

    def decide(mfa: UserMfa, now: datetime) -> tuple[R, OobCode, str, UUID]:
        target = destination or mfa.oob_destination(method)
        throttle: DeliveryThrottle = _load_throttle(services, method, target, now)
        value, code = issue(mfa, new, throttle.next_send_at(now, enrolment=enrolment), now)
        throttle.record_send(now, enrolment=enrolment)
        throttles.append(throttle)  # only now: a refused send writes nothing to the throttle
        return value, code, target, mfa.id

    outcome = execute(
        services, user_id, decide, create=create, missing=_not_enrolled(method), extra=throttles
    )
    value, code, target, issued_in = outcome.value
    position = _deliver(services, user_id, method, target, digits, code, issued_in)
    return Outcome(value, max(outcome.position, position)), code, target


def _deliver(
    services: Services,
    user_id: str,
    method: str,
    destination: str,
    digits: str,
    code: OobCode,
    issued_in: UUID,
) -> int:
    minutes = max(1, math.ceil((code.expires_at - code.issued_at).total_seconds() / 60))
    body = message_text(services.totp_issuer, digits, minutes, method, code.purpose)
    try:
        if method == SMS:
            if services.sms_sender is None:
                raise DeliveryError("no SMS sender is configured")
            services.sms_sender.send_sms(destination, body)
        else:
            if services.email_sender is None:
                raise DeliveryError("no email sender is configured")
            services.email_sender.send_email(destination, email_subject(code.purpose), body)
    except DeliveryError:
        log.warning("%s %s code not delivered; it was voided", method, code.purpose)
        _record_delivery(services, user_id, method, code, "delivery_failed", issued_in)
        raise DeliveryFailedError(
            f"the {method} code could not be delivered; try again later"
        ) from None
    return _record_delivery(services, user_id, method, code, None, issued_in)


def _record_delivery(
    services: Services,
    user_id: str,
    method: str,
    code: OobCode,
    failure: str | None,
    issued_in: UUID,
) -> int:
    """Record what the provider said, in the aggregate that issued the code: if the user was
    erased meanwhile and has begun another one, the code is none of its business."""

    def decide(mfa: UserMfa, now: datetime) -> None:
        if mfa.id == issued_in:
            mfa.record_oob_delivery(method, code.code_id, code.purpose, now, failure)

    try:
        return execute(services, user_id, decide, create=False).position
    except DomainError:  # the user was erased meanwhile: nothing left to record it on
        return 0


def _not_enrolled(method: str) -> Callable[[], Exception]:
    return lambda: NotEnrolledError(f"{method} is not enrolled")


def _delivery(method: str, code: OobCode, destination: str) -> CodeDelivery:
    hint = destination_hint(method, destination)
    return CodeDelivery(method, code.purpose, code.expires_at, hint)


# ---------------------------------------------------------------- commands


def enrol(services: Services, user_id: str, method: str, raw: str) -> Outcome[CodeDelivery]:
    """Start enrolling a phone number (E.164) or email address: a code is sent to it."""
    destination = normalise_destination(_checked(method), raw)

    def issue(
        mfa: UserMfa, new: NewOobCode, destination_next: datetime | None, now: datetime
    ) -> tuple[None, OobCode]:
        return None, mfa.start_oob_enrolment(method, destination, new, now, destination_next)

    outcome, code, target = _send(
        services, user_id, method, issue, destination=destination, create=True
    )
    return Outcome(_delivery(method, code, target), outcome.position)


def send_login_code(services: Services, user_id: str, method: str) -> Outcome[CodeDelivery]:
    """Send a login code to the verified destination."""

    def issue(
        mfa: UserMfa, new: NewOobCode, destination_next: datetime | None, now: datetime
    ) -> tuple[None, OobCode]:
        code = mfa.issue_oob_code(method, LOGIN, new, now, destination_next=destination_next)
        return None, code

    outcome, code, target = _send(services, user_id, _checked(method), issue)
    return Outcome(_delivery(method, code, target), outcome.position)


def verify(services: Services, user_id: str, method: str, code: str) -> Outcome[str]:
    """Check a code: it confirms the enrolment or passes a login; the value is which."""
    key = code_key(services)
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.verify_oob_code(_checked(method), code, key, now),
        create=False,
        missing=_not_enrolled(method),
    )


def disable(services: Services, user_id: str, method: str) -> Outcome[None]:
    """Remove the factor: its destination and open codes are forgotten."""
    return execute(
        services,
        user_id,
        lambda mfa, now: mfa.remove_method(_checked(method), now),
        create=False,
        missing=_not_enrolled(method),
    )


def open_challenge(
    services: Services, user_id: str, method: str, challenge_id: str
) -> Outcome[MfaChallenge]:
    """Open a generic challenge and send its code (bound to that challenge alone)."""

    def issue(
        mfa: UserMfa, new: NewOobCode, destination_next: datetime | None, now: datetime
    ) -> tuple[MfaChallenge, OobCode]:
        mfa.ensure_oob_send_allowed(method, now, destination_next)  # before opening anything
        challenge = mfa.issue_challenge(challenge_id, method, now)
        code = mfa.issue_oob_code(
            method,
            CHALLENGE,
            new,
            now,
            challenge_id=challenge_id,
            expires_at=challenge.expires_at,
            destination_next=destination_next,
        )
        return challenge, code

    outcome, _, _ = _send(services, user_id, _checked(method), issue)
    return outcome


def prove_challenge(
    services: Services, mfa: UserMfa, challenge: MfaChallenge, code: str, now: datetime
) -> tuple[str, Assurance]:
    """Check the code of an SMS or email challenge; its credential id is the method."""
    mfa.accept_oob_challenge_code(
        challenge.method, challenge.challenge_id, code, code_key(services), now
    )
    return challenge.method, assurance(challenge.method)


def _checked(method: str) -> str:
    if method not in OOB_METHODS:
        raise ValueError(f"not an SMS or email method: {method!r}")
    return method
