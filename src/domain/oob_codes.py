"""SMS and email codes: the values and rules the factor's events and commands share.

A code is 6 digits, stored only as a keyed, salted hash, valid for 10 minutes, usable once,
good for at most 5 attempts, and bound to what asked for it: an enrolment, a login or one
challenge. Sends are limited per user (`domain.oob`) and per destination (`DeliveryThrottle`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    # A send stamped after `at` (by an instance whose clock runs a little ahead) still counts:
    # dropping it would let two instances send at once.
    recent = sorted(s for s in sends if at - s < SEND_WINDOW)
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
        """Sent, unexpired and with attempts left (a used or voided code is gone altogether).

        Until its `CodeSent` is recorded a code does not pass: the provider may take the
        message and then answer an error (the code is voided then), and a crash between
        issuing and sending leaves a code nobody was sent.
        """
        sent = self.sent_at is not None
        return sent and at < self.expires_at and self.failures < MAX_CODE_ATTEMPTS

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
