"""SMS and email one-time codes ("out of band"): enrolment, codes, attempts, send limits.

A code is 6 digits, stored only as a keyed, salted hash, valid for 10 minutes, usable once,
good for at most 5 attempts, and bound to what asked for it: an enrolment, a login or one
challenge. Wrong codes count towards the factor's lockout (`sms`, `email`); a new code does
not reset that count. Sends are limited per user here and per destination by the
`DeliveryThrottle` aggregate. Code generation, hashing keys and delivery live in commands.
"""

from __future__ import annotations

from datetime import datetime

from domain.base import UserMfaState
from domain.errors import AlreadyEnrolledError, NotEnrolledError, RateLimitedError
from domain.oob_codes import (
    CHALLENGE,
    CODE_TTL,
    ENROLL,
    LOGIN,
    MAX_SENDS_PER_USER,
    OOB_METHODS,
    SEND_WINDOW,
    STRENGTH,
    NewOobCode,
    OobCode,
    OobFactor,
    destination_hint,
    next_send_at,
)
from domain.oob_events import OOB_EVENTS


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
        self,
        method: str,
        at: datetime,
        destination_next: datetime | None = None,
        *,
        conceal_destination: bool = False,
    ) -> None:
        """A code may be sent unless the factor is locked, or the user's or the destination's
        cooldown or hourly cap applies (`destination_next` comes from its DeliveryThrottle).
        Refused sends are not recorded: they would turn requests into unbounded writes.

        The user's own limit is answered first, and alone. With `conceal_destination` (a
        destination the user has not verified: an enrolment) the destination's limit is
        answered with the whole send window, not with when it ends, which would say when
        someone else last enrolled it.
        """
        self._ensure_unlocked(method, at)
        message = f"too many {method} codes were sent; wait"
        user_next = self.oob_next_send_at(method, at)
        if user_next is not None:
            raise RateLimitedError(message, user_next, at)
        if destination_next is not None:
            retry_at = at + SEND_WINDOW if conceal_destination else destination_next
            raise RateLimitedError(message, retry_at, at)

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
        self.ensure_oob_send_allowed(method, at, destination_next, conceal_destination=True)
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
