"""SMS and email one-time codes ("out of band"): enrolment, codes, attempts, send limits.

A code is 6 digits, stored only as a keyed, salted hash, valid for 10 minutes, usable once,
good for at most 5 attempts, and bound to what asked for it: an enrolment, a login or one
challenge. Wrong codes count towards the factor's lockout (`sms`, `email`); a new code does
not reset that count. Sends are limited per user here and per destination by the
`DeliveryThrottle` aggregate. Code generation, hashing keys and delivery live in commands.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.base import UserMfaEvent, UserMfaState, reset_lock
from domain.errors import AlreadyEnrolledError, NotEnrolledError, RateLimitedError

SMS = "sms"
EMAIL = "email"
OOB_METHODS = (SMS, EMAIL)

ENROLL = "enroll"  # the code confirms a new phone number or email address
LOGIN = "login"  # the code proves the factor at login (`/mfa/{method}/verify`)
CHALLENGE = "challenge"  # the code completes one generic challenge (`/mfa/step-up`)

CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=10)
MAX_CODE_ATTEMPTS = 5
RESEND_COOLDOWN = timedelta(seconds=60)
SEND_WINDOW = timedelta(hours=1)
MAX_SENDS_PER_USER = 5  # per method, per SEND_WINDOW
MAX_SENDS_PER_DESTINATION = 8  # across every user, per SEND_WINDOW
# Of those, codes to a destination nobody has verified yet (enrolments): so that enrolling a
# victim's number on accounts of one's own cannot use up what its real owners' logins need.
MAX_ENROLMENT_SENDS_PER_DESTINATION = 3

STRENGTH = {SMS: "standard", EMAIL: "weak"}


def hash_oob_code(code: str, salt: str, key: bytes) -> str:
    """HMAC-SHA256 under a service key over salt and code: a 6-digit code is far too small
    for a bare salted hash to resist an offline search; the key makes one impossible."""
    return hmac.new(key, bytes.fromhex(salt) + code.encode(), hashlib.sha256).hexdigest()


def next_send_at(sends: Sequence[datetime], at: datetime, limit: int) -> datetime | None:
    """When one more send is allowed (the cooldown after the last send, and at most `limit`
    sends per window); None when it is allowed now."""
    recent = sorted(s for s in sends if s <= at and at - s < SEND_WINDOW)
    times: list[datetime] = []
    if recent and at - recent[-1] < RESEND_COOLDOWN:
        times.append(recent[-1] + RESEND_COOLDOWN)
    if len(recent) >= limit:
        times.append(recent[len(recent) - limit] + SEND_WINDOW)
    return max(times) if times else None


def recent_sends(sends: Sequence[datetime], at: datetime) -> list[datetime]:
    """The sends still inside the window at `at`, plus one at `at` (what a send records)."""
    return [s for s in sends if at - s < SEND_WINDOW] + [at]


def destination_hint(method: str, destination: str) -> str:
    """A masked destination to show the user which one a code went to."""
    if method == EMAIL:
        local, _, domain = destination.partition("@")
        return f"{local[:1]}***@{domain}"
    return "*" * max(0, len(destination) - 2) + destination[-2:]


@dataclass(frozen=True)
class NewOobCode:
    """A code the commands generated: its id and the salted hash of its digits."""

    code_id: str
    salt: str
    hash: str


@dataclass
class OobCode:
    """A code that was issued: what it is for, until when, how many wrong attempts it took."""

    code_id: str
    purpose: str
    challenge_id: str | None
    salt: str
    hash: str
    issued_at: datetime
    expires_at: datetime
    failures: int = 0
    sent_at: datetime | None = None

    def is_usable(self, at: datetime) -> bool:
        """Unexpired and with attempts left (a used or voided code is gone altogether)."""
        return at < self.expires_at and self.failures < MAX_CODE_ATTEMPTS

    def matches(self, code: str, key: bytes) -> bool:
        """Constant-time comparison of a presented code with the stored hash."""
        return hmac.compare_digest(hash_oob_code(code, self.salt, key), self.hash)

    def attempts_remaining(self) -> int:
        return max(0, MAX_CODE_ATTEMPTS - self.failures)


@dataclass
class OobFactor:
    """A user's SMS or email factor: the verified destination, one awaiting its code, and
    the codes that are open."""

    method: str
    destination: str | None = None
    pending_destination: str | None = None
    enrolled_at: datetime | None = None
    last_used_at: datetime | None = None
    codes: dict[str, OobCode] = field(default_factory=dict)

    def is_active(self) -> bool:
        """Only a verified destination passes logins and challenges."""
        return self.destination is not None


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


class OobMixin(UserMfaState):
    """A user's SMS and email factors and their codes."""

    # Kept in the instance dict under private names and created on first use, so that a
    # snapshot taken before these factors existed still loads.
    @property
    def oob_factors(self) -> dict[str, OobFactor]:
        """The SMS and email factors, by method."""
        factors: dict[str, OobFactor] = vars(self).setdefault("_oob_factors", {})
        return factors

    @property
    def oob_sends(self) -> dict[str, list[datetime]]:
        """When codes were sent in the last hour, by method. Not a factor: a reset or removal
        keeps it, so that re-enrolling cannot lift the per-user send limits."""
        sends: dict[str, list[datetime]] = vars(self).setdefault("_oob_sends", {})
        return sends

    def oob_factor(self, method: str) -> OobFactor | None:
        """The user's factor of `method` (active or waiting for its enrolment code)."""
        return self.oob_factors.get(_checked(method))

    def oob_destination(self, method: str) -> str:
        """The verified destination that login and challenge codes go to."""
        factor = self.oob_factor(method)
        if factor is None or factor.destination is None:
            raise NotEnrolledError(f"{method} is not enrolled")
        return factor.destination

    def oob_next_send_at(self, method: str, at: datetime) -> datetime | None:
        """When this user may be sent another code of `method` (None: now)."""
        return next_send_at(self.oob_sends.get(method, []), at, MAX_SENDS_PER_USER)

    def ensure_oob_send_allowed(
        self, method: str, at: datetime, destination_next: datetime | None = None
    ) -> None:
        """A code may be sent unless the factor is locked, or the user's or the destination's
        cooldown or hourly cap applies (`destination_next` comes from its DeliveryThrottle).
        Refused sends are not recorded: they would turn requests into unbounded writes."""
        self._ensure_unlocked(method, at)
        times = [t for t in (self.oob_next_send_at(method, at), destination_next) if t]
        if times:
            raise RateLimitedError(f"too many {method} codes were sent; wait", max(times), at)

    def start_oob_enrolment(
        self,
        method: str,
        destination: str,
        code: NewOobCode,
        at: datetime,
        destination_next: datetime | None = None,
    ) -> OobCode:
        """Record a new destination awaiting its code and issue that code. An active factor
        must be removed first: changing where codes go is not a side effect of enrolling."""
        factor = self.oob_factor(method)
        if factor is not None and factor.is_active():
            raise AlreadyEnrolledError(f"{method} is already enrolled; disable it first")
        self.ensure_oob_send_allowed(method, at, destination_next)
        events = OOB_EVENTS[method]
        self.trigger_event(events.enrolment_started, destination=destination, timestamp=at)
        return self._issue(method, ENROLL, None, code, at + CODE_TTL, at)

    def issue_oob_code(
        self,
        method: str,
        purpose: str,
        code: NewOobCode,
        at: datetime,
        *,
        challenge_id: str | None = None,
        expires_at: datetime | None = None,
        destination_next: datetime | None = None,
    ) -> OobCode:
        """Issue a login code, or the code of one challenge (expiring with it at the latest)."""
        if purpose not in (LOGIN, CHALLENGE) or (purpose == CHALLENGE) != bool(challenge_id):
            raise ValueError("a login code has no challenge; a challenge code needs one")
        self.oob_destination(method)
        self.ensure_oob_send_allowed(method, at, destination_next)
        until = min(at + CODE_TTL, expires_at or at + CODE_TTL)
        return self._issue(method, purpose, challenge_id, code, until, at)

    def _issue(
        self,
        method: str,
        purpose: str,
        challenge_id: str | None,
        code: NewOobCode,
        expires_at: datetime,
        at: datetime,
    ) -> OobCode:
        self.trigger_event(
            OOB_EVENTS[method].code_issued,
            code_id=code.code_id,
            purpose=purpose,
            challenge_id=challenge_id,
            salt=code.salt,
            hash=code.hash,
            expires_at=expires_at,
            timestamp=at,
        )
        return self.oob_factors[method].codes[code.code_id]

    def record_oob_delivery(
        self, method: str, code_id: str, purpose: str, at: datetime, failure: str | None = None
    ) -> None:
        """Record what the provider said: sent, or failed (which voids the code)."""
        events = OOB_EVENTS[_checked(method)]
        if failure is None:
            self.trigger_event(events.code_sent, code_id=code_id, purpose=purpose, timestamp=at)
        else:
            self.trigger_event(
                events.code_voided, code_id=code_id, purpose=purpose, reason=failure, timestamp=at
            )

    def verify_oob_code(self, method: str, code: str, key: bytes, at: datetime) -> str:
        """Check a code from `/mfa/{method}/verify`: it confirms the pending enrolment or passes
        a login, whichever it was issued for (challenge codes never pass here). Returns that
        purpose."""
        factor = self.oob_factor(method)
        if factor is None:
            raise NotEnrolledError(f"{method} is not enrolled")
        self._ensure_unlocked(method, at)
        candidates = [c for c in factor.codes.values() if c.purpose in (ENROLL, LOGIN)]
        return self._accept(method, candidates, code, key, at).purpose

    def accept_oob_challenge_code(
        self, method: str, challenge_id: str, code: str, key: bytes, at: datetime
    ) -> OobCode:
        """Check the code sent for one challenge; only that challenge's code passes."""
        factor = self.oob_factor(method)
        if factor is None or not factor.is_active():
            raise NotEnrolledError(f"{method} is not enrolled")
        self._ensure_unlocked(method, at)
        candidates = [
            c
            for c in factor.codes.values()
            if c.purpose == CHALLENGE and c.challenge_id == challenge_id
        ]
        return self._accept(method, candidates, code, key, at)

    def _accept(
        self, method: str, candidates: list[OobCode], code: str, key: bytes, at: datetime
    ) -> OobCode:
        usable = [c for c in candidates if c.is_usable(at)]
        matched: OobCode | None = None
        for candidate in usable:  # every candidate is compared: no early exit
            if candidate.matches(code, key) and matched is None:
                matched = candidate
        events = OOB_EVENTS[method]
        if matched is None:
            for candidate in usable:
                self.trigger_event(
                    events.code_rejected,
                    code_id=candidate.code_id,
                    purpose=candidate.purpose,
                    timestamp=at,
                )
            usable_ids = {c.code_id for c in usable}
            expired = any(c.matches(code, key) for c in candidates if c.code_id not in usable_ids)
            error = self._fail(method, "expired" if expired else "wrong_code", at)
            if usable:
                # The factor's budget, or the open code's own when that is smaller.
                still_open = self.oob_factors[method].codes
                left = max(
                    still_open[i].attempts_remaining() if i in still_open else 0 for i in usable_ids
                )
                error.attempts_remaining = min(error.attempts_remaining, left)
            raise error
        reset = self._succeed(method)
        if matched.purpose == ENROLL:
            self.trigger_event(
                events.enrolled, code_id=matched.code_id, reset_lock=reset, timestamp=at
            )
        else:
            self.trigger_event(
                events.code_accepted,
                code_id=matched.code_id,
                purpose=matched.purpose,
                challenge_id=matched.challenge_id,
                reset_lock=reset,
                timestamp=at,
            )
        return matched

    def oob_details(self, method: str) -> dict[str, object]:
        """What `/mfa/methods` says about the factor (strength, state, a masked destination)."""
        factor = self.oob_factor(method)
        details: dict[str, object] = {"strength": STRENGTH[method]}
        if factor is None:
            return details
        details["status"] = "active" if factor.is_active() else "pending"
        shown = factor.destination or factor.pending_destination
        if shown is not None:
            details["destination_hint"] = destination_hint(method, shown)
        if factor.last_used_at is not None:
            details["last_used_at"] = factor.last_used_at.isoformat()
        return details


def _checked(method: str) -> str:
    if method not in OOB_METHODS:
        raise ValueError(f"not an SMS or email method: {method!r}")
    return method
