"""Admin configuration commands (risk policies, IP allowlist) and risk evaluation.

The configuration is one aggregate (`MfaConfig`, fixed id). Reads come straight from it: it
is small, cached by the application, and evaluation must decide from the aggregate anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError

from commands.app import (
    MAX_ATTEMPTS,
    ConcurrencyConflictError,
    Outcome,
    Services,
    StoreUnavailableError,
    _backoff,
    load_user,
    not_before,
)
from domain.allowlist import AllowlistEntry, parse_ip
from domain.config import CONFIG_ID, ChangedBy, MfaConfig
from domain.risk import (
    InvalidValueError,
    LevelPolicy,
    RiskPolicy,
    draft_level_policy,
    draft_risk_policy,
    risk_level,
)
from domain.risk_scoring import RiskAssessment, RiskSignals, assess_risk, caller_signals
from domain.trusted_devices import hash_device_token

R = TypeVar("R")
WRITER = str(CONFIG_ID)  # the key config writes are tracked under (read-your-writes)


def load_config(services: Services) -> MfaConfig:
    """The configuration aggregate; an unsaved default one before any admin changed anything."""
    try:
        config: MfaConfig = services.app.repository.get(CONFIG_ID)
    except AggregateNotFoundError:
        return MfaConfig.start(services.clock.now())
    except OperationalError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    return config


def execute_config(services: Services, decide: Callable[[MfaConfig, datetime], R]) -> Outcome[R]:
    """Load → decide → save for the configuration, retried on a concurrent change."""
    for attempt in range(MAX_ATTEMPTS):
        now = services.clock.now()
        config = load_config(services)
        value = decide(config, not_before(now, config.modified_on))
        if all(isinstance(e, MfaConfig.Created) for e in config.pending_events):
            return Outcome(value, 0)  # nothing changed: nothing to record
        try:
            recordings = services.app.save(config)
        except IntegrityError:
            _backoff(attempt)
            continue
        except OperationalError as exc:
            raise StoreUnavailableError(str(exc)) from exc
        position = max((r.notification.id for r in recordings), default=0)
        assert services.writes is not None
        services.writes.wrote(WRITER, position)
        return Outcome(value, position)
    raise ConcurrencyConflictError("the configuration changed concurrently; try again")


# ---------------------------------------------------------------- risk policies


@dataclass(frozen=True)
class RiskPolicyDraft:
    """A global policy as an admin sends it; omitted parts take their defaults."""

    base_score: int | None = None
    thresholds: Mapping[str, int] | None = None
    weights: Mapping[str, int] | None = None

    def build(self) -> RiskPolicy:
        return draft_risk_policy(
            base_score=self.base_score, thresholds=self.thresholds, weights=self.weights
        )


@dataclass(frozen=True)
class LevelPolicyDraft:
    """One level's policy as an admin sends it."""

    action: str
    allowed_methods: list[str]
    step_up_max_age_s: int | None = None

    def build(self, level: str) -> LevelPolicy:
        return draft_level_policy(level, self.action, self.allowed_methods, self.step_up_max_age_s)


def update_risk_policy(
    services: Services, draft: RiskPolicyDraft, by: ChangedBy
) -> Outcome[MfaConfig]:
    """Replace the global risk policy (thresholds, weights, baseline)."""
    policy = draft.build()

    def decide(config: MfaConfig, now: datetime) -> MfaConfig:
        config.update_risk_policy(policy, by, now)
        return config

    return execute_config(services, decide)


def set_level_policy(
    services: Services, level: str, draft: LevelPolicyDraft, by: ChangedBy
) -> Outcome[MfaConfig]:
    """Replace one level's policy."""
    policy = draft.build(level)

    def decide(config: MfaConfig, now: datetime) -> MfaConfig:
        config.set_level_policy(level, policy, by, now)
        return config

    return execute_config(services, decide)


def reset_level_policy(services: Services, level: str, by: ChangedBy) -> Outcome[MfaConfig]:
    """Put one level back to its default policy."""
    risk_level(level)

    def decide(config: MfaConfig, now: datetime) -> MfaConfig:
        config.reset_level_policy(level, by, now)
        return config

    return execute_config(services, decide)


# ---------------------------------------------------------------- IP allowlist


@dataclass(frozen=True)
class AllowlistEntryDraft:
    """An allowlist entry as an admin sends it."""

    cidr: str
    description: str = ""
    expires_at: datetime | None = None


def add_allowlist_entry(
    services: Services, draft: AllowlistEntryDraft, by: ChangedBy
) -> Outcome[AllowlistEntry]:
    """List a network as lower risk."""
    entry_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))
    return execute_config(
        services,
        lambda config, now: config.add_allowlist_entry(
            entry_id,
            cidr=draft.cidr,
            description=draft.description,
            expires_at=draft.expires_at,
            by=by,
            at=now,
        ),
    )


def update_allowlist_entry(
    services: Services, entry_id: str, draft: AllowlistEntryDraft, by: ChangedBy
) -> Outcome[AllowlistEntry]:
    """Replace an entry's network, description and expiry."""
    return execute_config(
        services,
        lambda config, now: config.update_allowlist_entry(
            entry_id,
            cidr=draft.cidr,
            description=draft.description,
            expires_at=draft.expires_at,
            by=by,
            at=now,
        ),
    )


def remove_allowlist_entry(
    services: Services, entry_id: str, by: ChangedBy
) -> Outcome[AllowlistEntry]:
    """Remove an entry."""
    return execute_config(
        services, lambda config, now: config.remove_allowlist_entry(entry_id, by, now)
    )


def get_allowlist_entry(services: Services, entry_id: str) -> AllowlistEntry:
    """One entry, or NotFoundError."""
    return load_config(services).allowlist_entry(entry_id)


def list_allowlist_entries(
    services: Services, limit: int, after: tuple[str, str] | None
) -> tuple[list[AllowlistEntry], tuple[str, str] | None]:
    """A page of entries, oldest first, after the keyset `(created_at, id)`; and the key of
    the last entry when more follow."""
    entries = load_config(services).allowlist_entries()
    if after is not None:
        entries = [e for e in entries if (e.created_at.isoformat(), e.entry_id) > after]
    page = entries[:limit]
    more = len(entries) > limit
    return page, (page[-1].created_at.isoformat(), page[-1].entry_id) if more else None


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvaluateRisk:
    """A login attempt to score; `dry_run_*` evaluate a draft policy instead of the saved one."""

    user_id: str
    ip: str
    device_token: str | None = None
    user_agent: str | None = None
    signals: Mapping[str, bool | int | float] = field(default_factory=dict)
    dry_run_policy: RiskPolicyDraft | None = None
    dry_run_levels: Mapping[str, LevelPolicyDraft] = field(default_factory=dict)


def evaluate_risk(services: Services, request: EvaluateRisk) -> RiskAssessment:
    """Score a login attempt against the saved policy (or a draft one); saves nothing.

    Decisions come from aggregates: the allowlist from MfaConfig, failures and lockouts from
    the user's UserMfa; the caller adds what only it knows (`signals`).
    """
    address = parse_ip(request.ip)
    said = caller_signals(request.signals)
    policy, drafted_levels = _dry_run(request)
    now = services.clock.now()
    config = load_config(services)
    mfa = load_user(services, request.user_id)
    locks = list(mfa.locks.values()) if mfa is not None else []
    entry = config.allowlisted(address, now)
    trusted = (
        mfa is not None
        and bool(request.device_token)
        and mfa.find_trusted_device(hash_device_token(request.device_token or ""), now) is not None
    )
    signals = RiskSignals(
        allowlisted_network=entry is not None,
        allowlist_entry=None if entry is None else f"{entry.entry_id}, {entry.cidr}",
        trusted_device=trusted,
        known_device=said.known_device,
        recent_failures=sum(lock.failures for lock in locks),
        lockouts=sum(lock.level for lock in locks),
        locked=any(lock.is_locked(now) for lock in locks),
        fraud_reports=said.fraud_reports + (mfa.recent_fraud_reports(now) if mfa else 0),
        user_agent_changed=said.user_agent_changed,
        extra=said.extra,
    )
    levels = {**config.level_policies_in_force(), **drafted_levels}
    return assess_risk(signals, policy or config.risk_policy_in_force(), levels)


def _dry_run(request: EvaluateRisk) -> tuple[RiskPolicy | None, dict[str, LevelPolicy]]:
    """The draft policy and level policies to evaluate, validated; field names prefixed."""
    try:
        policy = request.dry_run_policy.build() if request.dry_run_policy else None
        levels: dict[str, LevelPolicy] = {}
        for level, draft in request.dry_run_levels.items():
            try:
                levels[risk_level(level)] = draft.build(level)
            except InvalidValueError as exc:
                raise InvalidValueError(f"levels.{level[:16]}.{exc.field}", exc.message) from None
    except InvalidValueError as exc:
        raise InvalidValueError(f"dry_run_policy.{exc.field}", exc.message) from None
    return policy, levels
