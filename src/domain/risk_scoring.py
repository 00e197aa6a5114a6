"""Risk scoring: a pure, deterministic function from signals to a decision.

A score starts at the policy's `base_score`; each signal adds `weight x value` (counts are
capped at COUNT_CAP); the sum is kept within 0-100. The score's level comes from the
thresholds, and the level's policy says what to do (action, allowed methods, step-up age).
Callers may assert only some signals; the rest the service derives itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from domain.risk import (
    ALLOWLISTED_NETWORK,
    BUILT_IN_SIGNALS,
    DEFAULT_LEVEL_POLICIES,
    FRAUD_REPORTS,
    KNOWN_DEVICE,
    LOCKED,
    LOCKOUTS,
    MAX_SCORE,
    MIN_SCORE,
    NEW_DEVICE,
    RECENT_FAILURES,
    RESERVED_NAMES,
    SIGNAL_NAME,
    TRUSTED_DEVICE,
    USER_AGENT_CHANGED,
    InvalidValueError,
    LevelPolicy,
    RiskPolicy,
)

COUNT_CAP = 10
MAX_SIGNAL_VALUE = 1000
# What a caller may say about the login (`signals`); the rest the service derives itself.
CALLER_SIGNALS = (KNOWN_DEVICE, FRAUD_REPORTS, USER_AGENT_CHANGED)
DERIVED_SIGNALS = tuple(s for s in BUILT_IN_SIGNALS if s not in CALLER_SIGNALS)


@dataclass(frozen=True)
class RiskSignals:
    """Everything known about one login attempt. `known_device` None: the caller did not say.
    `extra` holds other named signals (bools as 0/1); those without a weight are ignored."""

    allowlisted_network: bool = False
    trusted_device: bool = False
    known_device: bool | None = None
    recent_failures: int = 0
    lockouts: int = 0
    locked: bool = False
    fraud_reports: int = 0
    user_agent_changed: bool = False
    extra: Mapping[str, float] = field(default_factory=dict)
    allowlist_entry: str | None = None


@dataclass(frozen=True)
class CallerSignals:
    """What the caller's `signals` object said, checked and split."""

    known_device: bool | None
    fraud_reports: int
    user_agent_changed: bool
    extra: dict[str, float]


def caller_signals(given: Mapping[str, bool | int | float]) -> CallerSignals:
    """Check the caller's signals. Signals the service derives itself (allowlisting, trusted
    device, failures, lockouts) cannot be asserted by a caller and are refused."""
    extra: dict[str, float] = {}
    for name, value in given.items():
        where = f"signals.{name}"
        if name in DERIVED_SIGNALS:
            hint = "; send known_device" if name == NEW_DEVICE else ""
            raise InvalidValueError(where, f"is derived by the service{hint}")
        if not SIGNAL_NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise InvalidValueError("signals", f"{name[:64]!r} is not a signal name ([a-z0-9_])")
        if name in (KNOWN_DEVICE, USER_AGENT_CHANGED) and not isinstance(value, bool):
            raise InvalidValueError(where, "must be true or false")
        if name == FRAUD_REPORTS and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise InvalidValueError(where, "must be a whole number >= 0")
        if isinstance(value, bool):
            value = int(value)
        if not 0 <= value <= MAX_SIGNAL_VALUE:
            raise InvalidValueError(where, f"must be from 0 to {MAX_SIGNAL_VALUE}")
        if name not in CALLER_SIGNALS:
            extra[name] = float(value)
    known = given.get(KNOWN_DEVICE)
    return CallerSignals(
        known_device=None if known is None else bool(known),
        fraud_reports=int(given.get(FRAUD_REPORTS, 0)),
        user_agent_changed=bool(given.get(USER_AGENT_CHANGED, False)),
        extra=extra,
    )


@dataclass(frozen=True)
class Reason:
    """One signal's contribution to a score."""

    signal: str
    delta: int
    detail: str


@dataclass(frozen=True)
class RiskAssessment:
    """A score, its level, and what that level's policy asks for; the reasons sum to the score."""

    score: int
    level: str
    action: str
    allowed_methods: tuple[str, ...]
    step_up_max_age_s: int
    reasons: tuple[Reason, ...]


def score_risk(signals: RiskSignals, policy: RiskPolicy) -> tuple[int, tuple[Reason, ...]]:
    """The score (0-100) and the reasons that moved it; the deltas always sum to the score.

    Unknown extra signals (no weight in the policy) are listed with delta 0 and ignored.
    """
    weights = policy.weights
    reasons: list[Reason] = []

    def add(signal: str, units: float, detail: str) -> None:
        delta = round(weights.get(signal, 0) * units)
        if delta:
            reasons.append(Reason(signal, delta, detail))

    if policy.base_score:
        reasons.append(Reason("base_score", policy.base_score, "the policy's baseline"))
    if signals.allowlisted_network:
        entry = f" ({signals.allowlist_entry})" if signals.allowlist_entry else ""
        add(ALLOWLISTED_NETWORK, 1, f"the IP address is inside an allowlist entry{entry}")
    if signals.trusted_device:
        add(TRUSTED_DEVICE, 1, "the device token belongs to a trusted device of the user")
    if signals.known_device is True:
        add(KNOWN_DEVICE, 1, "the caller knows this device")
    elif signals.known_device is False:
        add(NEW_DEVICE, 1, "the caller has not seen this device before")
    failures = _count(signals.recent_failures)
    add(RECENT_FAILURES, failures, f"{failures} failed verification(s) since the last success")
    lockouts = _count(signals.lockouts)
    add(LOCKOUTS, lockouts, f"{lockouts} lockout(s) in a row")
    if signals.locked:
        add(LOCKED, 1, "a factor is locked now")
    reports = _count(signals.fraud_reports)
    add(FRAUD_REPORTS, reports, f"{reports} recent fraud report(s)")
    if signals.user_agent_changed:
        add(USER_AGENT_CHANGED, 1, "the user agent changed")
    for name, value in sorted(signals.extra.items()):
        if name in BUILT_IN_SIGNALS:
            continue
        if name not in weights:
            reasons.append(Reason(name, 0, "no weight in the policy: ignored"))
            continue
        units = min(max(value, 0.0), float(MAX_SIGNAL_VALUE))
        add(name, units, f"caller signal {name} = {units:g}")

    raw = sum(r.delta for r in reasons)
    score = min(MAX_SCORE, max(MIN_SCORE, raw))
    if score != raw:
        reasons.append(Reason("score_bounds", score - raw, "the score is kept within 0-100"))
    return score, tuple(reasons)


def _count(value: int) -> int:
    return min(max(value, 0), COUNT_CAP)


def assess_risk(
    signals: RiskSignals, policy: RiskPolicy, levels: Mapping[str, LevelPolicy]
) -> RiskAssessment:
    """Score the signals and apply the policy of the level the score falls in."""
    score, reasons = score_risk(signals, policy)
    level = policy.level_for(score)
    level_policy = levels.get(level, DEFAULT_LEVEL_POLICIES[level])
    return RiskAssessment(
        score=score,
        level=level,
        action=level_policy.action,
        allowed_methods=level_policy.allowed_methods,
        step_up_max_age_s=level_policy.step_up_max_age_s,
        reasons=reasons,
    )
