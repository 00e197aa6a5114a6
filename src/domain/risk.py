"""Risk policies: the global policy (baseline, signal weights, level thresholds) and what
each risk level asks for (action, allowed methods, step-up age), with their validation.

Scoring, which applies them, is `domain.risk_scoring`. Risk-lowering signals can only have
weights <= 0 and risk-raising ones weights >= 0, so a policy can never make, say, an
allowlisted network raise the score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.errors import DomainError
from domain.user_mfa import KNOWN_METHODS

LOW, MEDIUM, HIGH, CRITICAL = "low", "medium", "high", "critical"
RISK_LEVELS = (LOW, MEDIUM, HIGH, CRITICAL)
THRESHOLD_LEVELS = (MEDIUM, HIGH, CRITICAL)

ALLOW = "allow"
REQUIRE_MFA = "require_mfa"
REQUIRE_PHISHING_RESISTANT = "require_phishing_resistant"
DENY = "deny"
ACTIONS = (ALLOW, REQUIRE_MFA, REQUIRE_PHISHING_RESISTANT, DENY)
PHISHING_RESISTANT_METHODS = ("webauthn",)

MIN_SCORE, MAX_SCORE = 0, 100
MAX_WEIGHT = 100
MAX_WEIGHTS = 64
MAX_STEP_UP_AGE_S = 7 * 24 * 3600
SIGNAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # whole names only: fullmatch

# Built-in signals, by the direction their weight may push the score.
ALLOWLISTED_NETWORK = "allowlisted_network"
TRUSTED_DEVICE = "trusted_device"
KNOWN_DEVICE = "known_device"
NEW_DEVICE = "new_device"
RECENT_FAILURES = "recent_failures"
LOCKOUTS = "lockouts"
LOCKED = "locked"
FRAUD_REPORTS = "fraud_reports"
USER_AGENT_CHANGED = "user_agent_changed"
LOWERING_SIGNALS = (ALLOWLISTED_NETWORK, TRUSTED_DEVICE, KNOWN_DEVICE)
RAISING_SIGNALS = (
    NEW_DEVICE,
    RECENT_FAILURES,
    LOCKOUTS,
    LOCKED,
    FRAUD_REPORTS,
    USER_AGENT_CHANGED,
)
BUILT_IN_SIGNALS = LOWERING_SIGNALS + RAISING_SIGNALS
# Names the reasons use for what is not a signal.
RESERVED_NAMES = ("base_score", "score_bounds")

DEFAULT_BASE_SCORE = 10
DEFAULT_THRESHOLDS: dict[str, int] = {MEDIUM: 30, HIGH: 60, CRITICAL: 85}
DEFAULT_WEIGHTS: dict[str, int] = {
    ALLOWLISTED_NETWORK: -30,
    TRUSTED_DEVICE: -25,
    KNOWN_DEVICE: -10,
    NEW_DEVICE: 20,
    RECENT_FAILURES: 6,
    LOCKOUTS: 15,
    LOCKED: 20,
    FRAUD_REPORTS: 35,
    USER_AGENT_CHANGED: 10,
}


class InvalidValueError(DomainError):
    """A value the rules refuse (a bad CIDR, level, threshold, ...); names its field."""

    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---------------------------------------------------------------- policies


@dataclass(frozen=True)
class RiskPolicy:
    """The global policy: baseline, per-signal weights and the level thresholds."""

    base_score: int
    thresholds: Mapping[str, int]
    weights: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape stored in events and shown in the audit log."""
        return {
            "base_score": self.base_score,
            "thresholds": {level: self.thresholds[level] for level in THRESHOLD_LEVELS},
            "weights": dict(sorted(self.weights.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskPolicy:
        """The inverse of `as_dict` (no validation: events hold validated values)."""
        return cls(
            base_score=int(data["base_score"]),
            thresholds={k: int(v) for k, v in data["thresholds"].items()},
            weights={k: int(v) for k, v in data["weights"].items()},
        )

    def level_for(self, score: int) -> str:
        """The highest level whose threshold the score reaches (`low` below every one)."""
        level = LOW
        for name in THRESHOLD_LEVELS:
            if score >= self.thresholds[name]:
                level = name
        return level


def default_risk_policy() -> RiskPolicy:
    """The policy in force before any admin changed it."""
    return RiskPolicy(DEFAULT_BASE_SCORE, dict(DEFAULT_THRESHOLDS), dict(DEFAULT_WEIGHTS))


def draft_risk_policy(
    *,
    base_score: int | None = None,
    thresholds: Mapping[str, int] | None = None,
    weights: Mapping[str, int] | None = None,
) -> RiskPolicy:
    """A validated policy: omitted parts take their defaults; `weights` are laid over the
    default weights (a built-in signal left out keeps its default; weight 0 switches it off)."""
    base = DEFAULT_BASE_SCORE if base_score is None else base_score
    if isinstance(base, bool) or not isinstance(base, int) or not MIN_SCORE <= base <= MAX_SCORE:
        raise InvalidValueError("base_score", f"must be a whole number from 0 to {MAX_SCORE}")
    return RiskPolicy(
        base_score=base,
        thresholds=_thresholds(DEFAULT_THRESHOLDS if thresholds is None else thresholds),
        weights=_weights({**DEFAULT_WEIGHTS, **(weights or {})}),
    )


def _thresholds(given: Mapping[str, int]) -> dict[str, int]:
    unknown = sorted(set(given) - set(THRESHOLD_LEVELS))
    if unknown:
        raise InvalidValueError(f"thresholds.{unknown[0]}", "not a threshold level")
    result: dict[str, int] = {}
    previous = MIN_SCORE
    for level in THRESHOLD_LEVELS:
        value = given.get(level)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValueError(f"thresholds.{level}", "required, a whole number")
        if not previous < value <= MAX_SCORE:
            raise InvalidValueError(
                f"thresholds.{level}",
                f"must be above {previous} and at most {MAX_SCORE} (medium < high < critical)",
            )
        result[level] = previous = value
    return result


def _weights(given: Mapping[str, int]) -> dict[str, int]:
    if len(given) > MAX_WEIGHTS:
        raise InvalidValueError("weights", f"at most {MAX_WEIGHTS} signals")
    result: dict[str, int] = {}
    for name, value in sorted(given.items()):
        where = f"weights.{name}"
        if not SIGNAL_NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise InvalidValueError("weights", f"{name[:64]!r} is not a signal name ([a-z0-9_])")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValueError(where, "must be a whole number")
        low, high = -MAX_WEIGHT, MAX_WEIGHT
        if name in LOWERING_SIGNALS:
            high = 0
        elif name in RAISING_SIGNALS:
            low = 0
        if not low <= value <= high:
            raise InvalidValueError(where, f"must be from {low} to {high}")
        result[name] = value
    return result


@dataclass(frozen=True)
class LevelPolicy:
    """What a risk level asks for: an action, the methods that satisfy it, the step-up age."""

    action: str
    allowed_methods: tuple[str, ...]
    step_up_max_age_s: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape stored in events and shown in the audit log."""
        return {
            "action": self.action,
            "allowed_methods": list(self.allowed_methods),
            "step_up_max_age_s": self.step_up_max_age_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LevelPolicy:
        """The inverse of `as_dict` (no validation: events hold validated values)."""
        return cls(
            action=str(data["action"]),
            allowed_methods=tuple(data["allowed_methods"]),
            step_up_max_age_s=int(data["step_up_max_age_s"]),
        )


DEFAULT_LEVEL_POLICIES: dict[str, LevelPolicy] = {
    LOW: LevelPolicy(ALLOW, KNOWN_METHODS, 3600),
    MEDIUM: LevelPolicy(REQUIRE_MFA, KNOWN_METHODS, 900),
    HIGH: LevelPolicy(REQUIRE_MFA, ("totp", "webauthn", "push"), 300),
    CRITICAL: LevelPolicy(REQUIRE_PHISHING_RESISTANT, PHISHING_RESISTANT_METHODS, 60),
}


def risk_level(level: str) -> str:
    """`level` when it names a risk level; InvalidValueError otherwise."""
    if level not in RISK_LEVELS:
        raise InvalidValueError("level", f"must be one of {', '.join(RISK_LEVELS)}")
    return level


def draft_level_policy(
    level: str, action: str, allowed_methods: list[str], step_up_max_age_s: int | None = None
) -> LevelPolicy:
    """A validated level policy. Methods are kept in the service's canonical order without
    repeats; `deny` allows no method; `require_phishing_resistant` only phishing-resistant
    ones; `require_mfa` at least one. The step-up age defaults to the level's default."""
    risk_level(level)
    if action not in ACTIONS:
        raise InvalidValueError("action", f"must be one of {', '.join(ACTIONS)}")
    unknown = [m for m in allowed_methods if m not in KNOWN_METHODS]
    if unknown:
        raise InvalidValueError(
            "allowed_methods",
            f"unknown method {unknown[0][:32]!r} (one of {', '.join(KNOWN_METHODS)})",
        )
    methods = tuple(m for m in KNOWN_METHODS if m in allowed_methods)
    if action == DENY and methods:
        raise InvalidValueError("allowed_methods", "must be empty when the action is deny")
    if action == REQUIRE_MFA and not methods:
        raise InvalidValueError("allowed_methods", "require_mfa needs at least one method")
    if action == REQUIRE_PHISHING_RESISTANT and (
        not methods or any(m not in PHISHING_RESISTANT_METHODS for m in methods)
    ):
        raise InvalidValueError(
            "allowed_methods",
            "require_phishing_resistant allows only " + ", ".join(PHISHING_RESISTANT_METHODS),
        )
    age = DEFAULT_LEVEL_POLICIES[level].step_up_max_age_s
    if step_up_max_age_s is not None:
        age = step_up_max_age_s
    if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= MAX_STEP_UP_AGE_S:
        raise InvalidValueError(
            "step_up_max_age_s", f"must be a whole number of seconds from 0 to {MAX_STEP_UP_AGE_S}"
        )
    return LevelPolicy(action, methods, age)
