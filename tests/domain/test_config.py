"""The MfaConfig aggregate: defaults, policy changes, the IP allowlist, events and replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

import pytest
from eventsourcing.application import project_aggregate

from domain.allowlist import AllowlistEntry, parse_ip, parse_network
from domain.config import CONFIG_ID, ChangedBy, LastChange, MfaConfig
from domain.errors import ConflictError, NotFoundError
from domain.risk import (
    DEFAULT_LEVEL_POLICIES,
    InvalidValueError,
    default_risk_policy,
    draft_level_policy,
    draft_risk_policy,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ADMIN = ChangedBy(actor="admin-1", request_id="req-1")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_events(config: MfaConfig) -> list[Any]:
    return list(config.collect_events())


def fresh() -> MfaConfig:
    config = MfaConfig.start(T0)
    new_events(config)
    return config


def add(config: MfaConfig, entry_id: str = "e1", cidr: str = "10.0.0.0/8", **kwargs: Any) -> Any:
    fields: dict[str, Any] = {"description": "office", "expires_at": None, "by": ADMIN, "at": T0}
    fields.update(kwargs)
    return config.add_allowlist_entry(entry_id, cidr=cidr, **fields)


def test_a_fresh_configuration_has_a_fixed_id_and_every_default_in_force() -> None:
    config = MfaConfig.start(T0)
    assert config.id == CONFIG_ID
    assert config.risk_policy_in_force() == default_risk_policy()
    assert config.level_policies_in_force() == DEFAULT_LEVEL_POLICIES
    assert config.allowlist_entries() == []


def test_updating_the_risk_policy_records_actor_request_before_and_after() -> None:
    config = fresh()
    policy = draft_risk_policy(base_score=25, weights={"new_device": 40})

    config.update_risk_policy(policy, ADMIN, at(5))

    (event,) = new_events(config)
    assert isinstance(event, MfaConfig.RiskPolicyUpdated)
    assert (event.actor, event.request_id, event.timestamp) == ("admin-1", "req-1", at(5))
    assert event.before == default_risk_policy().as_dict()
    assert event.after == policy.as_dict()
    assert config.risk_policy_in_force() == policy
    assert config.risk_policy_updated == LastChange("admin-1", at(5))


def test_a_change_that_changes_nothing_records_nothing() -> None:
    config = fresh()
    config.update_risk_policy(default_risk_policy(), ADMIN, T0)
    config.set_level_policy("low", DEFAULT_LEVEL_POLICIES["low"], ADMIN, T0)
    config.reset_level_policy("high", ADMIN, T0)
    assert new_events(config) == []


def test_a_level_policy_can_be_replaced_and_reset_to_its_default() -> None:
    config = fresh()
    deny = draft_level_policy("critical", "deny", [])

    config.set_level_policy("critical", deny, ADMIN, at(1))
    assert config.level_policy("critical") == deny
    config.reset_level_policy("critical", ChangedBy("admin-2", "req-2"), at(2))

    updated, reset = new_events(config)
    assert isinstance(updated, MfaConfig.LevelPolicyUpdated)
    assert updated.before == DEFAULT_LEVEL_POLICIES["critical"].as_dict()
    assert updated.after == deny.as_dict()
    assert isinstance(reset, MfaConfig.LevelPolicyReset)
    assert (reset.actor, reset.before, reset.after) == (
        "admin-2",
        deny.as_dict(),
        DEFAULT_LEVEL_POLICIES["critical"].as_dict(),
    )
    assert config.level_policy("critical") == DEFAULT_LEVEL_POLICIES["critical"]
    assert "critical" not in config.level_policies


def test_an_unknown_level_is_a_validation_error() -> None:
    with pytest.raises(InvalidValueError) as refused:
        fresh().level_policy("severe")
    assert refused.value.field == "level"


def test_an_allowlist_entry_is_added_normalised_and_matches_addresses_inside_it() -> None:
    config = fresh()
    entry = add(config, cidr=" 2001:DB8::/32 ")

    (event,) = new_events(config)
    assert isinstance(event, MfaConfig.AllowlistEntryAdded)
    assert event.after["cidr"] == "2001:db8::/32"
    assert entry.created_by == "admin-1"
    assert config.allowlisted(ip_address("2001:db8::1"), T0) == entry
    assert config.allowlisted(ip_address("2001:db9::1"), T0) is None
    assert config.allowlisted(ip_address("10.0.0.1"), T0) is None


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("2001:db8::1/32", "host bits set"),
        ("10.0.0.0/33", "not an IPv4 or IPv6 network"),
        ("not-a-network", "not an IPv4 or IPv6 network"),
        ("", "not an IPv4 or IPv6 network"),
    ],
)
def test_a_bad_cidr_is_refused_naming_the_cidr_field(cidr: str, message: str) -> None:
    with pytest.raises(InvalidValueError) as refused:
        parse_network(cidr)
    assert refused.value.field == "cidr"
    assert message in refused.value.message


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "::ffff:0:0/96", "10.0.0.0/7", "2000::/3"])
def test_an_entry_cannot_allowlist_the_whole_internet(cidr: str) -> None:
    config = fresh()
    with pytest.raises(InvalidValueError) as refused:
        add(config, cidr=cidr)
    assert refused.value.field == "cidr"
    assert "at most a /" in refused.value.message
    assert config.allowlist_entries() == []
    add(config, cidr="10.0.0.0/8")
    add(config, "e2", cidr="2001:db8::/32")


def test_an_expiry_must_lie_in_the_future_and_carry_a_time_zone() -> None:
    config = fresh()
    for expires in (T0, at(-1), datetime(2030, 1, 1)):  # the last one is naive
        with pytest.raises(InvalidValueError) as refused:
            add(config, expires_at=expires)
        assert refused.value.field == "expires_at"
    assert new_events(config) == []


def test_an_expired_entry_no_longer_matches() -> None:
    config = fresh()
    add(config, expires_at=at(60))
    inside = ip_address("10.1.2.3")
    assert config.allowlisted(inside, at(59)) is not None
    assert config.allowlisted(inside, at(60)) is None


def test_a_network_is_listed_once() -> None:
    config = fresh()
    add(config, "e1", "10.0.0.0/8")
    with pytest.raises(ConflictError):
        add(config, "e2", "10.0.0.0/8")


def test_an_entry_is_updated_with_before_and_after_and_keeps_its_creator() -> None:
    config = fresh()
    add(config)
    new_events(config)
    other = ChangedBy("admin-2", "req-9")

    updated = config.update_allowlist_entry(
        "e1", cidr="192.168.0.0/16", description="vpn", expires_at=None, by=other, at=at(10)
    )

    (event,) = new_events(config)
    assert isinstance(event, MfaConfig.AllowlistEntryUpdated)
    assert event.before["cidr"] == "10.0.0.0/8"
    assert event.after["cidr"] == "192.168.0.0/16"
    assert (updated.created_by, updated.updated_by, updated.updated_at) == (
        "admin-1",
        "admin-2",
        at(10),
    )


def test_an_entry_is_removed_with_its_last_state_and_unknown_ids_are_not_found() -> None:
    config = fresh()
    add(config)
    new_events(config)

    config.remove_allowlist_entry("e1", ADMIN, at(3))

    (event,) = new_events(config)
    assert isinstance(event, MfaConfig.AllowlistEntryRemoved)
    assert event.before["id"] == "e1"
    for action in (
        lambda: config.allowlist_entry("e1"),
        lambda: config.remove_allowlist_entry("e1", ADMIN, at(4)),
        lambda: config.update_allowlist_entry(
            "e1", cidr="10.0.0.0/8", description="", expires_at=None, by=ADMIN, at=at(4)
        ),
    ):
        with pytest.raises(NotFoundError):
            action()


def test_an_ipv4_mapped_ipv6_address_counts_as_its_ipv4_address() -> None:
    assert parse_ip("::ffff:10.0.0.1") == ip_address("10.0.0.1")
    with pytest.raises(InvalidValueError) as refused:
        parse_ip("10.0.0.256")
    assert refused.value.field == "ip"


def test_the_configuration_is_rebuilt_identically_from_its_events() -> None:
    config = MfaConfig.start(T0)
    config.update_risk_policy(draft_risk_policy(base_score=5), ADMIN, at(1))
    config.set_level_policy("high", draft_level_policy("high", "deny", []), ADMIN, at(2))
    add(config, "e1", "10.0.0.0/8", at=at(3))
    add(config, "e2", "fd00::/48", at=at(4), expires_at=at(100))
    config.update_allowlist_entry(
        "e1", cidr="10.0.0.0/16", description="x", expires_at=None, by=ADMIN, at=at(5)
    )
    config.remove_allowlist_entry("e2", ADMIN, at(6))
    events = new_events(config)

    rebuilt = project_aggregate(None, events)

    assert isinstance(rebuilt, MfaConfig)
    assert rebuilt.version == len(events) == 7
    assert rebuilt.risk_policy_in_force() == config.risk_policy_in_force()
    assert rebuilt.level_policies_in_force() == config.level_policies_in_force()
    assert rebuilt.allowlist_entries() == config.allowlist_entries()


def test_an_entry_stored_before_the_limit_that_allowlists_the_internet_matches_nothing() -> None:
    config = fresh()
    broad = AllowlistEntry("e1", "0.0.0.0/0", "old", None, ADMIN.actor, T0, ADMIN.actor, T0)
    config.trigger_event(
        MfaConfig.AllowlistEntryAdded,
        entry_id="e1",
        actor=ADMIN.actor,
        request_id=ADMIN.request_id,
        after=broad.as_dict(),
        timestamp=T0,
    )
    assert config.allowlist_entry("e1").cidr == "0.0.0.0/0"  # listed, so it can be removed
    assert config.allowlisted(ip_address("198.51.100.7"), T0) is None
