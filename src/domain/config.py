"""The MfaConfig aggregate: the installation's risk policies and IP allowlist.

There is one, under a fixed id. Every change records who made it (`actor`, the admin's
token subject) and the request it came from, and carries the state before and after it, so
the audit log is a plain projection of these events. A change that changes nothing records
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.utils import register_topic

from domain.allowlist import AllowlistEntry, IpAddress, checked_entry_fields
from domain.errors import ConflictError, LimitExceededError, NotFoundError
from domain.risk import (
    DEFAULT_LEVEL_POLICIES,
    RISK_LEVELS,
    LevelPolicy,
    RiskPolicy,
    default_risk_policy,
    risk_level,
)

CONFIG_ID: UUID = uuid5(NAMESPACE_URL, "urn:mfa:config:installation")
MAX_ALLOWLIST_ENTRIES = 1000

RISK_POLICY = "risk_policy"
LEVEL_POLICY = "level_policy"
ALLOWLIST_ENTRY = "ip_allowlist_entry"
GLOBAL = "global"
USER = "user"  # an admin's reset of a user, recorded here for the config audit log


@dataclass(frozen=True)
class ChangedBy:
    """Who asked for a change (the admin's token subject) and in which request."""

    actor: str
    request_id: str


@dataclass(frozen=True)
class LastChange:
    """Who last changed a policy, and when (stored as a dataclass so that a snapshot gives it
    back as the same type: a tuple came back from JSON as a list)."""

    actor: str
    at: datetime


class MfaConfig(Aggregate):
    """The installation's MFA configuration: global risk policy, level policies, allowlist."""

    TOPIC = "mfa.config.v1"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "mfa.config.created.v1"

    class Snapshot(AggregateSnapshot):
        # Every admin reset adds an event (`UserResetRecorded`): the aggregate grows with them.
        TOPIC = "mfa.config.snapshot.v1"

    def __init__(self) -> None:
        self.risk_policy: RiskPolicy | None = None
        self.risk_policy_updated: LastChange | None = None
        self.level_policies: dict[str, LevelPolicy] = {}
        self.level_policies_updated: dict[str, LastChange] = {}
        self.allowlist: dict[str, AllowlistEntry] = {}

    @classmethod
    def start(cls, at: datetime) -> MfaConfig:
        """The configuration of a fresh installation: every default in force."""
        return cls._create(cls.Created, id=CONFIG_ID, timestamp=at)

    # ---------------------------------------------------------------- global risk policy

    def risk_policy_in_force(self) -> RiskPolicy:
        """The admin's policy, or the default one."""
        return self.risk_policy or default_risk_policy()

    def update_risk_policy(self, policy: RiskPolicy, by: ChangedBy, at: datetime) -> None:
        """Replace the global policy (validated by `draft_risk_policy`)."""
        before = self.risk_policy_in_force().as_dict()
        after = policy.as_dict()
        if before == after:
            return
        self.trigger_event(
            self.RiskPolicyUpdated,
            actor=by.actor,
            request_id=by.request_id,
            before=before,
            after=after,
            timestamp=at,
        )

    class RiskPolicyUpdated(Event):
        TOPIC = "mfa.config.risk_policy_updated.v1"
        actor: str
        request_id: str
        before: dict[str, Any]
        after: dict[str, Any]

        def apply(self, aggregate: MfaConfig) -> None:
            policy = RiskPolicy.from_dict(self.after)
            aggregate.risk_policy = None if policy == default_risk_policy() else policy
            aggregate.risk_policy_updated = LastChange(self.actor, self.timestamp)

    # ---------------------------------------------------------------- level policies

    def level_policy(self, level: str) -> LevelPolicy:
        """The policy of one level: the admin's, or the default for that level."""
        return self.level_policies.get(risk_level(level)) or DEFAULT_LEVEL_POLICIES[level]

    def level_policies_in_force(self) -> dict[str, LevelPolicy]:
        """Every level's policy, from low to critical."""
        return {level: self.level_policy(level) for level in RISK_LEVELS}

    def set_level_policy(
        self, level: str, policy: LevelPolicy, by: ChangedBy, at: datetime
    ) -> None:
        """Replace one level's policy (validated by `draft_level_policy`)."""
        before = self.level_policy(level).as_dict()
        after = policy.as_dict()
        if before == after:
            return
        self.trigger_event(
            self.LevelPolicyUpdated,
            level=level,
            actor=by.actor,
            request_id=by.request_id,
            before=before,
            after=after,
            timestamp=at,
        )

    def reset_level_policy(self, level: str, by: ChangedBy, at: datetime) -> None:
        """Put one level back to its default policy."""
        if risk_level(level) not in self.level_policies:
            return
        self.trigger_event(
            self.LevelPolicyReset,
            level=level,
            actor=by.actor,
            request_id=by.request_id,
            before=self.level_policy(level).as_dict(),
            after=DEFAULT_LEVEL_POLICIES[level].as_dict(),
            timestamp=at,
        )

    class LevelPolicyUpdated(Event):
        TOPIC = "mfa.config.level_policy_updated.v1"
        level: str
        actor: str
        request_id: str
        before: dict[str, Any]
        after: dict[str, Any]

        def apply(self, aggregate: MfaConfig) -> None:
            policy = LevelPolicy.from_dict(self.after)
            if policy == DEFAULT_LEVEL_POLICIES[self.level]:
                aggregate.level_policies.pop(self.level, None)
            else:
                aggregate.level_policies[self.level] = policy
            aggregate.level_policies_updated[self.level] = LastChange(self.actor, self.timestamp)

    class LevelPolicyReset(Event):
        TOPIC = "mfa.config.level_policy_reset.v1"
        level: str
        actor: str
        request_id: str
        before: dict[str, Any]
        after: dict[str, Any]

        def apply(self, aggregate: MfaConfig) -> None:
            aggregate.level_policies.pop(self.level, None)
            aggregate.level_policies_updated[self.level] = LastChange(self.actor, self.timestamp)

    # ---------------------------------------------------------------- IP allowlist

    def allowlist_entry(self, entry_id: str) -> AllowlistEntry:
        """One allowlist entry, or NotFoundError."""
        try:
            return self.allowlist[entry_id]
        except KeyError:
            raise NotFoundError(f"no IP allowlist entry {entry_id[:128]!r}") from None

    def allowlist_entries(self) -> list[AllowlistEntry]:
        """Every entry, expired ones included, oldest first."""
        return sorted(self.allowlist.values(), key=lambda e: (e.created_at, e.entry_id))

    def allowlisted(self, address: IpAddress, at: datetime) -> AllowlistEntry | None:
        """The first unexpired entry (oldest first) whose network holds the address."""
        return next((e for e in self.allowlist_entries() if e.contains(address, at)), None)

    def _refuse_duplicate(self, cidr: str, except_id: str | None = None) -> None:
        for entry in self.allowlist.values():
            if entry.cidr == cidr and entry.entry_id != except_id:
                raise ConflictError(
                    f"entry {entry.entry_id} already lists {cidr}; update that entry instead"
                )

    def add_allowlist_entry(
        self,
        entry_id: str,
        *,
        cidr: str,
        description: str,
        expires_at: datetime | None,
        by: ChangedBy,
        at: datetime,
    ) -> AllowlistEntry:
        """Add a network; host bits must be zero, an expiry must lie in the future, and a
        network is listed once."""
        cidr, description, expires_at = checked_entry_fields(cidr, description, expires_at, at)
        if len(self.allowlist) >= MAX_ALLOWLIST_ENTRIES:
            raise LimitExceededError(f"at most {MAX_ALLOWLIST_ENTRIES} allowlist entries")
        self._refuse_duplicate(cidr)
        if entry_id in self.allowlist:
            raise ConflictError(f"entry {entry_id} exists already")
        entry = AllowlistEntry(entry_id, cidr, description, expires_at, by.actor, at, by.actor, at)
        self.trigger_event(
            self.AllowlistEntryAdded,
            entry_id=entry_id,
            actor=by.actor,
            request_id=by.request_id,
            after=entry.as_dict(),
            timestamp=at,
        )
        return self.allowlist[entry_id]

    class AllowlistEntryAdded(Event):
        TOPIC = "mfa.config.allowlist_entry_added.v1"
        entry_id: str
        actor: str
        request_id: str
        after: dict[str, Any]

        def apply(self, aggregate: MfaConfig) -> None:
            aggregate.allowlist[self.entry_id] = AllowlistEntry.from_dict(self.after)

    def update_allowlist_entry(
        self,
        entry_id: str,
        *,
        cidr: str,
        description: str,
        expires_at: datetime | None,
        by: ChangedBy,
        at: datetime,
    ) -> AllowlistEntry:
        """Replace an entry's network, description and expiry (same rules as adding)."""
        current = self.allowlist_entry(entry_id)
        cidr, description, expires_at = checked_entry_fields(cidr, description, expires_at, at)
        self._refuse_duplicate(cidr, except_id=entry_id)
        if (cidr, description, expires_at) == (
            current.cidr,
            current.description,
            current.expires_at,
        ):
            return current
        updated = AllowlistEntry(
            entry_id,
            cidr,
            description,
            expires_at,
            current.created_by,
            current.created_at,
            by.actor,
            at,
        )
        self.trigger_event(
            self.AllowlistEntryUpdated,
            entry_id=entry_id,
            actor=by.actor,
            request_id=by.request_id,
            before=current.as_dict(),
            after=updated.as_dict(),
            timestamp=at,
        )
        return self.allowlist[entry_id]

    class AllowlistEntryUpdated(Event):
        TOPIC = "mfa.config.allowlist_entry_updated.v1"
        entry_id: str
        actor: str
        request_id: str
        before: dict[str, Any]
        after: dict[str, Any]

        def apply(self, aggregate: MfaConfig) -> None:
            aggregate.allowlist[self.entry_id] = AllowlistEntry.from_dict(self.after)

    def remove_allowlist_entry(self, entry_id: str, by: ChangedBy, at: datetime) -> AllowlistEntry:
        """Remove an entry; returns it as it was."""
        current = self.allowlist_entry(entry_id)
        self.trigger_event(
            self.AllowlistEntryRemoved,
            entry_id=entry_id,
            actor=by.actor,
            request_id=by.request_id,
            before=current.as_dict(),
            timestamp=at,
        )
        return current

    class AllowlistEntryRemoved(Event):
        TOPIC = "mfa.config.allowlist_entry_removed.v1"
        entry_id: str
        actor: str
        request_id: str
        before: dict[str, Any]

        def apply(self, aggregate: MfaConfig) -> None:
            aggregate.allowlist.pop(self.entry_id, None)

    # ---------------------------------------------------------------- admin resets

    def record_user_reset(
        self, aggregate_id: str, methods: list[str], by: ChangedBy, at: datetime
    ) -> None:
        """Record, for the config audit log, that an admin reset a user (saved with the reset
        itself). The user is named by their aggregate id, a keyed hash: the user id and the
        reason stay in the user's own events, which an erasure shreds."""
        self.trigger_event(
            self.UserResetRecorded,
            aggregate_id=aggregate_id,
            methods=list(methods),
            actor=by.actor,
            request_id=by.request_id,
            timestamp=at,
        )

    class UserResetRecorded(Event):
        TOPIC = "mfa.config.user_reset_recorded.v1"
        aggregate_id: str
        methods: list[str]
        actor: str
        request_id: str

        def apply(self, aggregate: MfaConfig) -> None:
            """Nothing in the configuration changes."""


register_topic(MfaConfig.Snapshot.TOPIC, MfaConfig.Snapshot)
