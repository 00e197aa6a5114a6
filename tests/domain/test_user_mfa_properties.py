"""Property-based tests of the UserMfa aggregate: random command sequences against a model.

A hypothesis state machine drives one pure `UserMfa` through random sequences of TOTP
device commands (register, verify, validate with right / wrong / replayed / drifting codes,
disable, enable, revoke, the user switch), backup codes (generate, regenerate, use right /
wrong / reused / replaced codes, wrong-code bursts that lock and escalate), trusted
devices (remember, revoke one / all / the expired), primary credential, method removal and
admin reset, while a fake clock moves on by random amounts (to just before, at and just
after a lock's end or a trusted device's expiry too). A small model kept alongside says
what each call must do; after every step the invariants below are checked. Snapshots are
taken as the application takes them (every N events; N is small here).

- Every call either succeeds exactly when the model says so, or raises the DomainError the
  model expects (never another exception).
- A refused call changes no observable state; its only events are the failure and lockout
  bookkeeping the domain documents (VerificationFailed + FactorLocked for a wrong code,
  one AttemptRefusedWhileLocked per lock for an attempt while locked, nothing otherwise).
- A TOTP time step is accepted at most once per device (and never one at or before the
  last accepted step); a backup code succeeds at most once per set; the codes of a
  replaced (or removed, or reset) set never succeed.
- While a factor is locked nothing of that factor succeeds; `attempts_remaining` counts
  down 4..0 and is never negative; the fifth consecutive failure locks for 30 s, 60 s,
  120 s, ... (capped at one hour) and the lock lifts by itself at its end; a success
  resets the failure count and the escalation.
- Replaying the collected events (serialised and read back with the application's own
  transcoder) from scratch, and from a serialised snapshot plus the later events, gives
  an aggregate with the same state.
- `methods()` and `current_primary()` never report a primary credential that cannot be
  used (a disabled primary device stays chosen but is not reported; a removed one is
  forgotten), and agree with the model on devices, backup-code counts and trusted devices.
- Every token ever issued is trusted exactly while its device is remembered and unexpired.

Coverage is tuned with composite rules (enrol = register + verify, login after a wait,
patient guessing bursts) rather than with more examples; `--hypothesis-show-statistics`
lists how often each path ran.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.persistence import Mapper, StoredEvent
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from commands.app import ENTITY_TYPES
from commands.store import build_transcoder
from commands.verifiers import totp_code, totp_timecode
from domain.errors import (
    AlreadyEnrolledError,
    ChallengeExpiredError,
    CodeReplayedError,
    ConflictError,
    DomainError,
    FactorLockedError,
    InvalidCodeError,
    LimitExceededError,
    NotEnrolledError,
    NotFoundError,
)
from domain.lockout import MAX_CONSECUTIVE_FAILURES
from domain.totp import MAX_TOTP_DEVICES, PENDING_TOTP_TTL, TotpDevice, TotpStatus
from domain.trusted_devices import MAX_TRUSTED_DEVICES, hash_device_token
from domain.user_mfa import KNOWN_METHODS, UserMfa
from tests.domain.test_user_mfa import SECRET, T0, backup_codes, state

OTP = "otp"
BACKUP = "backup_code"
FACTORS = (OTP, BACKUP)
PERIOD = 30
SECRETS = (SECRET, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U")
NAMES = ("phone", "tablet", "laptop", "watch", "spare", "work", "home", "car")
SNAPSHOT_EVERY = 5  # the application snapshots every 100 events; often, to test it
LOCK_BASE_S, LOCK_CAP_S = 30, 3600  # documented: 30 s, 60 s, 120 s, ... capped at 1 h

MAPPER: Mapper[UUID] = Mapper(transcoder=build_transcoder(ENTITY_TYPES))

BOOKKEEPING_EVENTS: dict[type[DomainError], tuple[type[Any], ...]] = {
    InvalidCodeError: (UserMfa.VerificationFailed, UserMfa.FactorLocked),
    CodeReplayedError: (UserMfa.VerificationFailed, UserMfa.FactorLocked),
    FactorLockedError: (UserMfa.AttemptRefusedWhileLocked,),
}


# ---------------------------------------------------------------- the model


@dataclass
class LockModel:
    """The documented lockout policy of one factor."""

    failures: int = 0
    level: int = 0
    until: datetime | None = None
    refusal_recorded_for: datetime | None = None

    def locked(self, now: datetime) -> bool:
        return self.until is not None and now < self.until

    def remaining(self) -> int:
        return MAX_CONSECUTIVE_FAILURES - self.failures

    def fail(self, now: datetime) -> int:
        """One more consecutive failure; returns the attempts remaining (0 when it locked)."""
        if self.until is not None and now >= self.until:
            self.until = None  # an expired lock: the count starts again, the level stays
        self.failures += 1
        if self.failures < MAX_CONSECUTIVE_FAILURES:
            return self.remaining()
        self.level += 1
        seconds = min(LOCK_BASE_S * 2 ** (self.level - 1), LOCK_CAP_S)
        self.until = now + timedelta(seconds=seconds)
        self.failures = 0
        return 0


@dataclass
class DeviceModel:
    name: str
    secret: str
    registered_at: datetime
    status: str = TotpStatus.PENDING
    last_step: int | None = None
    switched_off: bool = False

    def setup_expired(self, now: datetime) -> bool:
        """Pending an hour or more: no longer verifiable, and removed by the next set-up."""
        return self.status == TotpStatus.PENDING and now >= self.registered_at + PENDING_TOTP_TTL

    def as_totp_device(self, device_id: str) -> TotpDevice:
        return TotpDevice(device_id, self.name, self.secret, 6, PERIOD, "SHA1", self.status, T0)


@dataclass
class Outcome:
    ok: bool
    value: Any = None
    error: DomainError | None = None
    events: list[Any] = field(default_factory=list)


def observable(mfa: UserMfa) -> dict[str, Any]:
    """Everything a refused call must leave alone (locks are the documented exception)."""
    skip = {"_version", "_modified_on", "locks"}
    return copy.deepcopy({k: v for k, v in full_state(mfa).items() if k not in skip})


LAZY_ATTRIBUTES = ("_oob_factors", "_oob_sends", "_used_webauthn_registrations")


def full_state(mfa: UserMfa) -> dict[str, Any]:
    """`state()` of the existing tests, less the containers the aggregate creates lazily on
    first use (absent and empty are the same state)."""
    return {k: v for k, v in state(mfa).items() if not (k in LAZY_ATTRIBUTES and not v)}


def roundtrip(event: Any) -> tuple[StoredEvent, Any]:
    stored = MAPPER.to_stored_event(event)
    return stored, MAPPER.to_domain_event(stored)


def mangle(code: str) -> str:
    """How a user may type a backup code: capitals, spaces for dashes."""
    return " ".join(code.upper().split("-"))


def bare(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


# ---------------------------------------------------------------- the machine


class UserMfaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.mfa = UserMfa.start("user-prop", UUID(int=7), T0)
        self.replay_events: list[Any] = []  # every event, serialised and read back
        self.snapshot: tuple[StoredEvent, int] | None = None
        self.counter = 0
        # model
        self.devices: dict[str, DeviceModel] = {}
        self.device_ids_seen: list[str] = []
        self.locks: dict[str, LockModel] = {f: LockModel() for f in FACTORS}
        self.backup_set: str | None = None
        self.backup: list[list[Any]] = []  # [code, used]
        self.replaced_codes: list[str] = []
        self.next_seed = 1
        self.trusted: dict[str, tuple[str, datetime]] = {}  # id -> (token, expires_at)
        self.trusted_seen: list[tuple[str, str]] = []  # (id, token), revoked ones included
        self.primary: str | None = None
        self.primary_method: str | None = None
        # histories for the one-time properties
        self.accepted_steps: dict[str, set[int]] = {}
        self.accepted_codes: list[str] = []
        self.backup_successes: set[tuple[str, int]] = set()
        self.collect()

    @initialize(devices=st.sampled_from([1, 2, 0]), codes=st.booleans())
    def start_enrolled(self, devices: int, codes: bool) -> None:
        """Most users arrive with some factors already: start from a few of them."""
        for n in range(devices):
            self.enrol_device(NAMES[n], SECRETS[n], 0)
        if codes:
            self.generate_backup_codes()

    # ------------------------------------------------------------ plumbing

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def collect(self) -> list[Any]:
        events = list(self.mfa.collect_events())
        before = len(self.replay_events)
        self.replay_events.extend(roundtrip(domain_event)[1] for domain_event in events)
        if before // SNAPSHOT_EVERY != len(self.replay_events) // SNAPSHOT_EVERY:
            self.take_snapshot()  # as the application does, every N events
        return events

    def run(self, call: Callable[[], Any], expected: type[DomainError] | None) -> Outcome:
        """Call the aggregate; check the outcome class and what a refusal may change."""
        before = observable(self.mfa)
        locks_before = copy.deepcopy(self.mfa.locks)
        error: DomainError | None = None
        value: Any = None
        try:
            value = call()
        except DomainError as exc:  # anything else escapes: a defect whatever the model says
            error = exc
        events = self.collect()
        if error is not None:
            assert expected is not None, f"refused unexpectedly: {error!r}"
            assert type(error) is expected, f"expected {expected.__name__}, got {error!r}"
            assert observable(self.mfa) == before, "a refused call changed observable state"
            allowed = BOOKKEEPING_EVENTS.get(type(error), ())
            assert all(isinstance(e, allowed) for e in events), [type(e) for e in events]
            if not allowed:
                assert self.mfa.locks == locks_before
            return Outcome(False, error=error, events=events)
        assert expected is None, f"expected {expected.__name__}, but it succeeded: {value!r}"
        assert not any(isinstance(e, UserMfa.VerificationFailed) for e in events)
        return Outcome(True, value=value, events=events)

    def gate(self, factor: str) -> bool:
        return self.locks[factor].locked(self.now)

    def check_refused_while_locked(self, factor: str, out: Outcome) -> None:
        lock = self.locks[factor]
        assert isinstance(out.error, FactorLockedError)
        assert out.error.until == lock.until
        assert out.error.retry_after_s >= 1
        first = lock.refusal_recorded_for != lock.until
        assert len(out.events) == (1 if first else 0), out.events
        lock.refusal_recorded_for = lock.until
        event(f"{factor}: refused while locked")

    def check_failure(self, factor: str, out: Outcome) -> None:
        lock = self.locks[factor]
        level_before = lock.level
        remaining = lock.fail(self.now)
        assert isinstance(out.error, InvalidCodeError)
        assert out.error.attempts_remaining == remaining >= 0
        kinds = [type(e) for e in out.events]
        if lock.level > level_before:
            event(f"{factor}: locked at level {min(lock.level, 3)}{'+' if lock.level > 3 else ''}")
            assert kinds == [UserMfa.VerificationFailed, UserMfa.FactorLocked]
            assert out.events[1].until == lock.until
            assert out.events[1].level == lock.level
        else:
            assert kinds == [UserMfa.VerificationFailed]

    def succeed(self, factor: str) -> None:
        if self.locks[factor].level:
            event(f"{factor}: success after a lockout")
        self.locks[factor] = LockModel()
        domain_lock = self.mfa.lock_for(factor)
        assert (domain_lock.failures, domain_lock.level) == (0, 0)
        assert not domain_lock.is_locked(self.now)

    def pick(self, options: list[str], index: int) -> str:
        return options[index % len(options)]

    def accept_step(self, device_id: str, step: int) -> None:
        seen = self.accepted_steps.setdefault(device_id, set())
        assert step not in seen, f"time step {step} accepted twice on {device_id}"
        assert all(step > s for s in seen), f"an earlier step {step} accepted on {device_id}"
        seen.add(step)

    def forget_primary_if(self, credential: str) -> None:
        if self.primary == credential:
            self.primary = self.primary_method = None

    def retire_backup_codes(self) -> None:
        self.replaced_codes.extend(code for code, _ in self.backup)
        self.backup = []
        self.backup_set = None

    # ------------------------------------------------------------ clock

    @rule(
        seconds=st.one_of(
            st.integers(0, 90),
            st.sampled_from([29, 30, 31, 59, 60, 61, 120, 3599, 3600, 86_400, 31 * 86_400]),
        ),
        to_edge=st.booleans(),
        delta=st.sampled_from([-1, 0, 0, 1]),
    )
    def time_passes(self, seconds: int, to_edge: bool, delta: int) -> None:
        """The clock moves on by `seconds`, or `to_edge`: to around the next lock's end or
        trusted device's expiry."""
        if to_edge and self.edges():
            self.advance_to_an_edge(seconds, delta)
        else:
            self.advance(seconds)

    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def advance_to_an_edge(self, index: int, delta: int) -> None:
        """Move the clock to just before, at, or just after a lock's or a device's end."""
        edges = self.edges()
        if edges:
            self.now = max(self.now, edges[index % len(edges)] + timedelta(seconds=delta))

    def edges(self) -> list[datetime]:
        """The coming instants where something ends: a factor's lock, a trusted device, a
        pending TOTP set-up."""
        ends = [lock.until for lock in self.locks.values() if lock.until is not None]
        ends += [expires_at for _, expires_at in self.trusted.values()]
        ends += [
            d.registered_at + PENDING_TOTP_TTL
            for d in self.devices.values()
            if d.status == TotpStatus.PENDING
        ]
        return sorted(end for end in ends if end > self.now)

    # ------------------------------------------------------------ TOTP

    @rule(
        name=st.sampled_from(NAMES),
        secret=st.sampled_from(SECRETS),
        then_verify=st.booleans(),
        drift=st.sampled_from([-1, 0, 1]),
        make_primary=st.booleans(),
    )
    def add_device(
        self, name: str, secret: str, then_verify: bool, drift: int, make_primary: bool
    ) -> None:
        """Register a device (left pending), or `then_verify` it with the code it shows and
        perhaps `make_primary` (whether or not it was verified)."""
        if then_verify:
            self.enrol_device(name, secret, drift)
            if make_primary and self.device_ids_seen:
                self.set_primary(len(self.device_ids_seen) - 1, usable=False)
        else:
            self.register_device(name, secret)

    def register_device(self, name: str, secret: str) -> None:
        device_id = self.fresh("totp")
        expected: type[DomainError] | None = None
        kept = {i: d for i, d in self.devices.items() if not d.setup_expired(self.now)}
        if len(kept) >= MAX_TOTP_DEVICES:
            expected = LimitExceededError
        elif any(d.name == name for d in kept.values()):
            expected = AlreadyEnrolledError
        out = self.run(
            lambda: self.mfa.register_totp_device(
                device_id=device_id,
                name=name,
                secret=secret,
                digits=6,
                period=PERIOD,
                algorithm="SHA1",
                at=self.now,
            ),
            expected,
        )
        if out.ok:  # the set-ups that expired went with it
            self.devices = {**kept, device_id: DeviceModel(name, secret, self.now)}
            self.device_ids_seen.append(device_id)

    def enrol_device(self, name: str, secret: str, drift: int) -> None:
        """The common path: register a device, then verify it with the code it shows."""
        self.register_device(name, secret)
        self.verify_device(len(self.device_ids_seen) - 1, "right", drift, 0)

    def code_for(self, kind: str, device_id: str, drift: int, wrong: int, index: int) -> str:
        """A code string of the given kind, as a user would type it."""
        device = self.devices.get(device_id)
        if kind == "right" and device is not None:
            return totp_code(
                device.as_totp_device(device_id), self.now + drift * timedelta(seconds=PERIOD)
            )
        if kind == "replayed" and self.accepted_codes:
            return self.pick(self.accepted_codes, index)
        if kind == "malformed":
            return self.pick(["12345", "1234567", "abcdef", "\uff11" * 6, ""], index)
        return f"{wrong:06d}"

    @rule(
        index=st.integers(0, 15),
        kind=st.sampled_from(["right", "right", "wrong"]),
        drift=st.sampled_from([-1, 0, 1]),
        wrong=st.integers(0, 999_999),
    )
    def verify_device(self, index: int, kind: str, drift: int, wrong: int) -> None:
        device_id = self.pick([*self.device_ids_seen, "totp-ghost"], index)
        device = self.devices.get(device_id)
        code = self.code_for(kind, device_id, drift, wrong, index)
        timecode = (
            totp_timecode(device.as_totp_device(device_id), code, self.now) if device else None
        )
        expected: type[DomainError] | None = None
        if device is None:
            expected = NotFoundError
        elif device.status != TotpStatus.PENDING:
            expected = AlreadyEnrolledError
        elif device.setup_expired(self.now):
            expected = ChallengeExpiredError
        elif self.gate(OTP):
            expected = FactorLockedError
        elif timecode is None:
            expected = InvalidCodeError
        out = self.run(lambda: self.mfa.verify_totp_device(device_id, timecode, self.now), expected)
        if expected is FactorLockedError:
            self.check_refused_while_locked(OTP, out)
        elif expected is InvalidCodeError:
            self.check_failure(OTP, out)
        elif out.ok:
            assert device is not None
            assert timecode is not None
            self.accept_step(device_id, timecode)
            self.accepted_codes.append(code)
            device.status = TotpStatus.ACTIVE
            device.last_step = timecode
            self.succeed(OTP)

    def active_ids(self) -> list[str]:
        return sorted(i for i, d in self.devices.items() if d.status == TotpStatus.ACTIVE)

    @rule(
        wait=st.sampled_from([0, 0, 1, 29, 30, 31, 60, 95]),
        kind=st.sampled_from(["right", "any", "replayed", "wrong", "malformed", "raw"]),
        index=st.integers(0, 15),
        drift=st.sampled_from([-2, -1, 0, 0, 1]),
        wrong=st.integers(0, 999_999),
        raw_delta=st.integers(-3, 1),
        conceal=st.booleans(),
    )
    def login_with_totp(
        self,
        wait: int,
        kind: str,
        index: int,
        drift: int,
        wrong: int,
        raw_delta: int,
        conceal: bool,
    ) -> None:
        """Some time later, a login code: right (of an active device, or of `any` device,
        pending, disabled and revoked ones too), replayed, wrong, malformed, or `raw` time
        steps handed to the domain directly."""
        self.now += timedelta(seconds=wait)
        self.validate_totp(kind, index, drift, wrong, raw_delta, conceal)

    @rule(
        wait=st.sampled_from([0, 1, 30, 31, 60, 95]),
        index=st.integers(0, 15),
        drift=st.sampled_from([-1, 0, 0, 1]),
    )
    def login_with_the_right_code(self, wait: int, index: int, drift: int) -> None:
        """The common path: the code an active device shows now (or one step off)."""
        self.now += timedelta(seconds=wait)
        self.validate_totp("right", index, drift, 0, 0, conceal=False)

    def validate_totp(
        self, kind: str, index: int, drift: int, wrong: int, raw_delta: int, conceal: bool
    ) -> None:
        options = self.active_ids() if kind == "right" else []
        device_id = self.pick(options or [*self.device_ids_seen, "totp-ghost"], index)
        kind = "right" if kind == "any" else kind
        code = ""
        if kind == "raw":
            # What a caller could pass the domain directly: any device, any nearby step.
            matches = {device_id: int(self.now.timestamp()) // PERIOD + raw_delta}
        else:
            # As the command handler builds it: active device id -> matched time step.
            code = self.code_for(kind, device_id, drift, wrong, index)
            matches = {}
            for active_id in self.active_ids():
                device = self.devices[active_id].as_totp_device(active_id)
                step = totp_timecode(device, code, self.now)
                if step is not None:
                    matches[active_id] = step
        fresh = {
            i: step
            for i, step in matches.items()
            if i in self.devices
            and self.devices[i].status == TotpStatus.ACTIVE
            and (self.devices[i].last_step is None or step > self.devices[i].last_step)  # type: ignore[operator]
        }
        expected: type[DomainError] | None = None
        if self.gate(OTP):
            expected = FactorLockedError
        elif not self.active_ids():
            expected = InvalidCodeError if conceal else NotEnrolledError
        elif not fresh:
            expected = CodeReplayedError if matches else InvalidCodeError
        out = self.run(
            lambda: self.mfa.accept_totp(matches, self.now, conceal_enrolment=conceal), expected
        )
        if expected is FactorLockedError:
            self.check_refused_while_locked(OTP, out)
        elif expected in (InvalidCodeError, CodeReplayedError):
            event(f"totp: refused, {expected.__name__} ({kind})")
            self.check_failure(OTP, out)
        elif out.ok:
            accepted = min(fresh)
            assert out.value == accepted
            event(f"totp: accepted ({kind})")
            self.accept_step(accepted, fresh[accepted])
            if kind != "raw":
                self.accepted_codes.append(code)
            self.devices[accepted].last_step = fresh[accepted]
            self.succeed(OTP)

    @rule(
        action=st.sampled_from(["disable", "enable", "revoke"]),
        index=st.integers(0, 15),
        the_primary=st.booleans(),
    )
    def change_device(self, action: str, index: int, the_primary: bool) -> None:
        """Disable, enable or revoke a device: `the_primary` one if any, else any id."""
        if the_primary and self.primary in self.device_ids_seen:
            index = self.device_ids_seen.index(self.primary)
        {
            "disable": self.disable_device,
            "enable": self.enable_device,
            "revoke": self.revoke_device,
        }[action](index)

    @rule(on=st.booleans())
    def switch_totp(self, on: bool) -> None:
        """The user's TOTP switch: off disables every active device, on restores them."""
        if on:
            self.switch_totp_on()
        else:
            self.switch_totp_off()

    def disable_device(self, index: int) -> None:
        device_id = self.pick([*self.device_ids_seen, "totp-ghost"], index)
        device = self.devices.get(device_id)
        expected: type[DomainError] | None = None
        if device is None:
            expected = NotFoundError
        elif device.status != TotpStatus.ACTIVE:
            expected = ConflictError
        if self.run(lambda: self.mfa.disable_totp_device(device_id, self.now), expected).ok:
            assert device is not None
            device.status, device.switched_off = TotpStatus.DISABLED, False

    def enable_device(self, index: int) -> None:
        device_id = self.pick([*self.device_ids_seen, "totp-ghost"], index)
        device = self.devices.get(device_id)
        expected: type[DomainError] | None = None
        if device is None:
            expected = NotFoundError
        elif device.status != TotpStatus.DISABLED:
            expected = ConflictError
        if self.run(lambda: self.mfa.enable_totp_device(device_id, self.now), expected).ok:
            assert device is not None
            device.status, device.switched_off = TotpStatus.ACTIVE, False

    def revoke_device(self, index: int) -> None:
        device_id = self.pick([*self.device_ids_seen, "totp-ghost"], index)
        expected = None if device_id in self.devices else NotFoundError
        if self.run(lambda: self.mfa.revoke_totp_device(device_id, self.now), expected).ok:
            del self.devices[device_id]
            self.forget_primary_if(device_id)

    def switch_totp_off(self) -> None:
        active = self.active_ids()
        out = self.run(
            lambda: self.mfa.disable_totp(self.now), None if active else NotEnrolledError
        )
        if out.ok:
            assert out.value == active
            for device_id in active:
                self.devices[device_id].status = TotpStatus.DISABLED
                self.devices[device_id].switched_off = True

    def switch_totp_on(self) -> None:
        switched = sorted(
            i for i, d in self.devices.items() if d.status == TotpStatus.DISABLED and d.switched_off
        )
        expected: type[DomainError] | None = None
        if not switched:
            expected = AlreadyEnrolledError if self.active_ids() else NotEnrolledError
        out = self.run(lambda: self.mfa.enable_totp(self.now), expected)
        if out.ok:
            assert out.value == switched
            for device_id in switched:
                self.devices[device_id].status = TotpStatus.ACTIVE
                self.devices[device_id].switched_off = False

    # ------------------------------------------------------------ backup codes

    @precondition(lambda self: self.next_seed < 90)
    @rule()
    def generate_backup_codes(self) -> None:
        seed, self.next_seed = self.next_seed, self.next_seed + 1
        codes, hashed = backup_codes(seed)
        set_id = f"set-{seed}"
        self.run(lambda: self.mfa.generate_backup_codes(set_id, hashed, self.now), None)
        self.retire_backup_codes()
        self.backup_set = set_id
        self.backup = [[code, False] for code in codes]

    @rule(index=st.integers(0, 30), again=st.booleans())
    def recover_with_a_backup_code(self, index: int, again: bool) -> None:
        """The common path: an unused code of the current set, perhaps presented twice."""
        code = self.choose_backup_code("unused", index)
        self.present_backup_code(code, "unused")
        if again:
            self.present_backup_code(code, "reused at once")

    @rule(
        kind=st.sampled_from(["unused", "mangled", "used", "replaced", "wrong"]),
        index=st.integers(0, 30),
    )
    def use_backup_code(self, kind: str, index: int) -> None:
        self.present_backup_code(self.choose_backup_code(kind, index), kind)

    def choose_backup_code(self, kind: str, index: int) -> str:
        unused = [c for c, used in self.backup if not used]
        used = [c for c, was_used in self.backup if was_used]
        code = "0123-4567-89ab-cdef"
        if kind == "unused" and unused:
            code = self.pick(unused, index)
        elif kind == "mangled" and self.backup:
            code = mangle(self.pick([c for c, _ in self.backup], index))
        elif kind == "used" and used:
            code = self.pick(used, index)
        elif kind == "replaced" and self.replaced_codes:
            code = self.pick(self.replaced_codes, index)
        return code

    def present_backup_code(self, code: str, kind: str) -> None:
        matching = [i for i, (c, was_used) in enumerate(self.backup) if bare(c) == bare(code)]
        hit = next((i for i in matching if not self.backup[i][1]), None)
        expected: type[DomainError] | None = None
        if self.gate(BACKUP):
            expected = FactorLockedError
        elif self.backup_set is None:
            expected = NotEnrolledError
        elif hit is None:
            expected = InvalidCodeError
        out = self.run(lambda: self.mfa.use_backup_code(code, self.now), expected)
        if expected is FactorLockedError:
            self.check_refused_while_locked(BACKUP, out)
        elif expected is InvalidCodeError:
            event(f"backup: refused ({kind})")
            self.check_failure(BACKUP, out)
        elif out.ok:
            assert hit is not None
            assert self.backup_set is not None
            assert bare(code) not in {bare(c) for c in self.replaced_codes}
            assert (self.backup_set, hit) not in self.backup_successes, "backup code reused"
            self.backup_successes.add((self.backup_set, hit))
            assert [type(e) for e in out.events] == [UserMfa.BackupCodeUsed]
            assert out.events[0].index == hit
            self.backup[hit][1] = True
            event(f"backup: accepted ({kind})")
            assert out.value == sum(1 for _, was_used in self.backup if not was_used)
            self.succeed(BACKUP)

    @rule(
        factor=st.sampled_from(FACTORS),
        count=st.integers(1, MAX_CONSECUTIVE_FAILURES + 1),
        wrong=st.integers(0, 999_999),
        conceal=st.booleans(),
        patient=st.booleans(),
    )
    def wrong_code_burst(
        self, factor: str, count: int, wrong: int, conceal: bool, patient: bool
    ) -> None:
        """Several wrong codes in a row (an attacker guessing), so that lockouts happen; a
        `patient` attacker waits each lock out, so that the locks escalate."""
        for attempt in range(count * (2 if patient else 1)):
            until = self.locks[factor].until
            if patient and until is not None and self.now < until:
                self.now = until
            if factor == OTP:
                self.validate_totp("wrong", 0, 0, wrong + attempt, 0, conceal)
            else:
                self.use_backup_code("wrong", attempt)

    # ------------------------------------------------------------ trusted devices

    @rule(count=st.integers(1, 4), ttl_days=st.sampled_from([-3, 0, 1, 7, 30, 90, 365]))
    def remember_devices(self, count: int, ttl_days: int) -> None:
        for _ in range(count):
            device_id, token = self.fresh("trusted"), self.fresh("token")
            valid = [i for i, (_, exp) in self.trusted.items() if self.now < exp]
            expected = LimitExceededError if len(valid) >= MAX_TRUSTED_DEVICES else None
            if expected:
                event("trusted: limit reached")
            token_hash = hash_device_token(token)
            remember = functools.partial(
                self.mfa.remember_device, device_id, "browser", token_hash, ttl_days, self.now
            )
            out = self.run(remember, expected)
            if out.ok:
                expires_at = self.now + timedelta(days=max(1, min(ttl_days, 90)))
                assert out.value.expires_at == expires_at
                self.trusted[device_id] = (token, expires_at)
                self.trusted_seen.append((device_id, token))

    @rule(action=st.sampled_from(["one", "all", "expired"]), index=st.integers(0, 30))
    def forget_trusted_devices(self, action: str, index: int) -> None:
        if action == "one":
            self.revoke_trusted_device(index)
        elif action == "all":
            self.revoke_all_trusted_devices()
        else:
            self.clean_up_trusted_devices()

    def revoke_trusted_device(self, index: int) -> None:
        device_id = self.pick([*(i for i, _ in self.trusted_seen), "trusted-ghost"], index)
        expected = None if device_id in self.trusted else NotFoundError
        if self.run(lambda: self.mfa.revoke_trusted_device(device_id, self.now), expected).ok:
            del self.trusted[device_id]

    def revoke_all_trusted_devices(self) -> None:
        out = self.run(lambda: self.mfa.revoke_all_trusted_devices(self.now), None)
        assert out.value == len(self.trusted)
        self.trusted.clear()

    def clean_up_trusted_devices(self) -> None:
        expired = [i for i, (_, exp) in self.trusted.items() if self.now >= exp]
        out = self.run(lambda: self.mfa.clean_up_trusted_devices(self.now), None)
        assert out.value == len(expired)
        for device_id in expired:
            del self.trusted[device_id]

    # ------------------------------------------------------------ across methods

    @rule(index=st.integers(0, 30), usable=st.booleans())
    def set_primary(self, index: int, usable: bool) -> None:
        """An active device (`usable`), or any id: pending, disabled, revoked, trusted-device
        ids, backup codes, unenrolled SMS / email, unknown."""
        options = [] if not usable else self.active_ids()
        options = options or [
            *self.device_ids_seen,
            "totp-ghost",
            BACKUP,
            "sms",
            "email",
            *(i for i, _ in self.trusted_seen),
        ]
        credential = self.pick(options, index)
        device = self.devices.get(credential)
        expected: type[DomainError] | None = NotFoundError
        if device is not None:
            expected = None if device.status == TotpStatus.ACTIVE else ConflictError
        elif credential == BACKUP:
            expected = ConflictError
        out = self.run(lambda: self.mfa.set_primary(credential, self.now), expected)
        if out.ok:
            assert out.value == "totp"
            event("primary set")
            self.primary, self.primary_method = credential, "totp"

    @rule(method=st.sampled_from([*KNOWN_METHODS, "everything"]))
    def remove_method(self, method: str) -> None:
        if method == "everything":
            self.reset_everything()
            return
        enrolled = {"totp": bool(self.devices), BACKUP: self.backup_set is not None}
        expected = None if enrolled.get(method, False) else NotEnrolledError
        if self.run(lambda: self.mfa.remove_method(method, self.now), expected).ok:
            if method == "totp":
                self.devices.clear()
            else:
                self.retire_backup_codes()
            if self.primary_method == method:
                self.primary = self.primary_method = None

    def reset_everything(self) -> None:
        enrolled = [m for m, on in (("totp", self.devices), (BACKUP, self.backup_set)) if on]
        out = self.run(lambda: self.mfa.reset_all("admin", "lost phone", self.now), None)
        assert out.value == enrolled
        self.devices.clear()
        self.retire_backup_codes()
        self.trusted.clear()
        self.locks = {f: LockModel() for f in FACTORS}
        self.primary = self.primary_method = None

    def take_snapshot(self) -> None:
        snapshot = UserMfa.Snapshot.take(self.mfa)
        assert snapshot.originator_version == len(self.replay_events)
        self.snapshot = (MAPPER.to_stored_event(snapshot), len(self.replay_events))
        event("snapshot taken")

    # ------------------------------------------------------------ invariants

    @invariant()
    def replaying_the_events_gives_the_same_aggregate(self) -> None:
        rebuilt = project_aggregate(None, self.replay_events)
        assert isinstance(rebuilt, UserMfa)
        assert full_state(rebuilt) == full_state(self.mfa)
        assert rebuilt.methods() == self.mfa.methods()
        assert rebuilt.current_primary() == self.mfa.current_primary()
        if self.snapshot is not None:
            stored, position = self.snapshot
            restored = MAPPER.to_domain_event(stored).mutate(None)  # fresh objects every time
            rebuilt = project_aggregate(restored, self.replay_events[position:])
            assert isinstance(rebuilt, UserMfa)
            assert full_state(rebuilt) == full_state(self.mfa)

    @invariant()
    def the_aggregate_agrees_with_the_model(self) -> None:
        mfa = self.mfa
        assert {i: (d.status, d.last_timecode) for i, d in mfa.totp_devices.items()} == {
            i: (d.status, d.last_step) for i, d in self.devices.items()
        }
        assert [
            d.device_id for d in sorted(mfa.active_totp_devices(), key=lambda d: d.device_id)
        ] == (self.active_ids())
        codes = mfa.backup_codes
        assert (codes.set_id if codes else None) == self.backup_set
        remaining = sum(1 for _, used in self.backup if not used)
        summary = {m.method: m for m in mfa.methods()}
        assert summary[BACKUP].details == {"remaining": remaining, "total": len(self.backup)}
        assert summary[BACKUP].enabled == (remaining > 0)
        assert summary["totp"].credentials == len(self.devices)
        assert summary["totp"].enabled == bool(self.active_ids())
        assert {i: d.expires_at for i, d in mfa.trusted_devices.items()} == {
            i: exp for i, (_, exp) in self.trusted.items()
        }

    @invariant()
    def a_token_is_trusted_exactly_while_remembered_and_unexpired(self) -> None:
        for token in [*(t for _, t in self.trusted_seen), "never-issued"]:
            found = self.mfa.find_trusted_device(hash_device_token(token), self.now)
            live = [i for i, (t, exp) in self.trusted.items() if t == token and self.now < exp]
            assert (found.device_id if found else None) == (live[0] if live else None)
        # The domain is pure (time is passed in): ask about the edges of every expiry too.
        for device_id, (token, expires_at) in self.trusted.items():
            token_hash = hash_device_token(token)
            just_before = self.mfa.find_trusted_device(
                token_hash, expires_at - timedelta(seconds=1)
            )
            assert just_before is not None
            assert just_before.device_id == device_id
            assert self.mfa.find_trusted_device(token_hash, expires_at) is None

    @invariant()
    def locks_follow_the_policy(self) -> None:
        for factor in FACTORS:
            lock, model = self.mfa.lock_for(factor), self.locks[factor]
            assert lock.is_locked(self.now) == model.locked(self.now)
            assert 0 <= lock.attempts_remaining() <= MAX_CONSECUTIVE_FAILURES
            assert lock.attempts_remaining() == model.remaining()
            assert lock.level == model.level
            if model.locked(self.now):
                assert model.until is not None
                assert lock.locked_until == model.until
                # Time is passed in: the lock holds to its last instant and lifts exactly then.
                assert lock.is_locked(model.until - timedelta(microseconds=1))
                assert not lock.is_locked(model.until)

    @invariant()
    def the_primary_credential_is_always_usable(self) -> None:
        # The choice is kept while its device is disabled, forgotten when it is removed.
        assert (self.mfa.primary_credential, self.mfa.primary_method) == (
            self.primary,
            self.primary_method,
        )
        primary = self.mfa.current_primary()
        device = self.devices.get(self.primary or "")
        usable = device is not None and device.status == TotpStatus.ACTIVE
        assert primary == (("totp", self.primary) if usable else None)
        if primary is not None:
            assert self.mfa.totp_devices[primary[1]].is_active()
        for summary in self.mfa.methods():
            if summary.primary:
                assert summary.enabled
                assert summary.credentials > 0
                assert primary is not None
                assert summary.method == primary[0]
        assert sum(m.primary for m in self.mfa.methods()) == (1 if primary else 0)


UserMfaMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestUserMfaProperties = UserMfaMachine.TestCase
