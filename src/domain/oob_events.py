"""The events of the SMS and email factors (`domain.oob`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from domain.base import UserMfaEvent, reset_lock
from domain.oob_codes import (
    EMAIL,
    ENROLL,
    LOGIN,
    MAX_CODE_ATTEMPTS,
    SMS,
    OobCode,
    OobFactor,
    recent_sends,
)

if TYPE_CHECKING:
    from domain.oob import OobMixin

# ---------------------------------------------------------------- events
# One class per kind of event; one subclass per method (each with its own stable topic), so
# that the public contract can say `mfa.sms.code_sent` rather than carry the method as data.


class OobEvent(UserMfaEvent):
    """Base of the SMS and email events; `METHOD` is set by the per-method subclasses."""

    METHOD = ""

    def factor(self, aggregate: OobMixin) -> OobFactor | None:
        return aggregate.oob_factors.get(self.METHOD)


class OobEnrolmentStarted(OobEvent):
    """A destination waits for its code; it replaces any earlier one still waiting."""

    destination: str

    def apply(self, aggregate: OobMixin) -> None:
        factor = aggregate.oob_factors.setdefault(self.METHOD, OobFactor(self.METHOD))
        factor.pending_destination = self.destination
        for code_id, code in list(factor.codes.items()):
            if code.purpose == ENROLL:
                del factor.codes[code_id]


class OobCodeIssued(OobEvent):
    """A code was issued (and is about to be sent). It replaces an open code of the same
    purpose: one enrolment or login code at a time, one code per challenge."""

    code_id: str
    purpose: str
    challenge_id: str | None
    salt: str
    hash: str
    expires_at: datetime

    def apply(self, aggregate: OobMixin) -> None:
        sends = aggregate.oob_sends
        sends[self.METHOD] = recent_sends(sends.get(self.METHOD, []), self.timestamp)
        factor = self.factor(aggregate)
        if factor is None:
            return
        direct = (ENROLL, LOGIN)
        for code_id, code in list(factor.codes.items()):
            replaced = (
                code.purpose in direct
                if self.purpose in direct
                else code.challenge_id == self.challenge_id
            )
            if replaced or code.expires_at <= self.timestamp:
                del factor.codes[code_id]
        factor.codes[self.code_id] = OobCode(
            code_id=self.code_id,
            purpose=self.purpose,
            challenge_id=self.challenge_id,
            salt=self.salt,
            hash=self.hash,
            issued_at=self.timestamp,
            expires_at=self.expires_at,
        )


class OobCodeSent(OobEvent):
    """The provider accepted the message carrying the code."""

    code_id: str
    purpose: str

    def apply(self, aggregate: OobMixin) -> None:
        factor = self.factor(aggregate)
        code = factor.codes.get(self.code_id) if factor else None
        if code is not None:
            code.sent_at = self.timestamp


class OobCodeVoided(OobEvent):
    """The code can no longer be used (its delivery failed)."""

    code_id: str
    purpose: str
    reason: str

    def apply(self, aggregate: OobMixin) -> None:
        factor = self.factor(aggregate)
        if factor is not None:
            factor.codes.pop(self.code_id, None)


class OobCodeRejected(OobEvent):
    """A wrong code was presented while this code was open: one of its attempts is spent
    (the last one voids it). The factor's failure is a `VerificationFailed` beside it."""

    code_id: str
    purpose: str

    def apply(self, aggregate: OobMixin) -> None:
        factor = self.factor(aggregate)
        code = factor.codes.get(self.code_id) if factor else None
        if factor is None or code is None:
            return
        code.failures += 1
        if code.failures >= MAX_CODE_ATTEMPTS:
            del factor.codes[self.code_id]


class OobCodeAccepted(OobEvent):
    """A login or challenge code was right: it is used up."""

    code_id: str
    purpose: str
    challenge_id: str | None
    reset_lock: bool

    def apply(self, aggregate: OobMixin) -> None:
        factor = self.factor(aggregate)
        if factor is not None:
            factor.codes.pop(self.code_id, None)
            factor.last_used_at = self.timestamp
        reset_lock(aggregate, self.METHOD, self.reset_lock)


class OobEnrolled(OobEvent):
    """The enrolment code was right: its destination is now the verified one."""

    code_id: str
    reset_lock: bool

    def apply(self, aggregate: OobMixin) -> None:
        factor = aggregate.oob_factors.setdefault(self.METHOD, OobFactor(self.METHOD))
        factor.codes.pop(self.code_id, None)
        factor.destination = factor.pending_destination
        factor.pending_destination = None
        factor.enrolled_at = self.timestamp
        factor.last_used_at = self.timestamp
        reset_lock(aggregate, self.METHOD, self.reset_lock)


class SmsEnrolmentStarted(OobEnrolmentStarted):
    TOPIC = "mfa.sms.enrolment_started.v1"
    METHOD = SMS


class SmsCodeIssued(OobCodeIssued):
    TOPIC = "mfa.sms.code_issued.v1"
    METHOD = SMS


class SmsCodeSent(OobCodeSent):
    TOPIC = "mfa.sms.code_sent.v1"
    METHOD = SMS


class SmsCodeVoided(OobCodeVoided):
    TOPIC = "mfa.sms.code_voided.v1"
    METHOD = SMS


class SmsCodeRejected(OobCodeRejected):
    TOPIC = "mfa.sms.code_rejected.v1"
    METHOD = SMS


class SmsCodeAccepted(OobCodeAccepted):
    TOPIC = "mfa.sms.code_accepted.v1"
    METHOD = SMS


class SmsEnrolled(OobEnrolled):
    TOPIC = "mfa.sms.enrolled.v1"
    METHOD = SMS


class EmailEnrolmentStarted(OobEnrolmentStarted):
    TOPIC = "mfa.email.enrolment_started.v1"
    METHOD = EMAIL


class EmailCodeIssued(OobCodeIssued):
    TOPIC = "mfa.email.code_issued.v1"
    METHOD = EMAIL


class EmailCodeSent(OobCodeSent):
    TOPIC = "mfa.email.code_sent.v1"
    METHOD = EMAIL


class EmailCodeVoided(OobCodeVoided):
    TOPIC = "mfa.email.code_voided.v1"
    METHOD = EMAIL


class EmailCodeRejected(OobCodeRejected):
    TOPIC = "mfa.email.code_rejected.v1"
    METHOD = EMAIL


class EmailCodeAccepted(OobCodeAccepted):
    TOPIC = "mfa.email.code_accepted.v1"
    METHOD = EMAIL


class EmailEnrolled(OobEnrolled):
    TOPIC = "mfa.email.enrolled.v1"
    METHOD = EMAIL


@dataclass(frozen=True)
class OobEvents:
    """The event classes of one method."""

    enrolment_started: type[OobEnrolmentStarted]
    code_issued: type[OobCodeIssued]
    code_sent: type[OobCodeSent]
    code_voided: type[OobCodeVoided]
    code_rejected: type[OobCodeRejected]
    code_accepted: type[OobCodeAccepted]
    enrolled: type[OobEnrolled]


OOB_EVENTS = {
    SMS: OobEvents(
        SmsEnrolmentStarted,
        SmsCodeIssued,
        SmsCodeSent,
        SmsCodeVoided,
        SmsCodeRejected,
        SmsCodeAccepted,
        SmsEnrolled,
    ),
    EMAIL: OobEvents(
        EmailEnrolmentStarted,
        EmailCodeIssued,
        EmailCodeSent,
        EmailCodeVoided,
        EmailCodeRejected,
        EmailCodeAccepted,
        EmailEnrolled,
    ),
}
