"""Admin configuration changes on the public contract: the mapping of each MfaConfig event to
its CloudEvent (type, config-resource subject, data), and docs/events.md listing every public
type, with the exact examples the mapping gives."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.config import CONFIG_ID, ChangedBy, MfaConfig
from domain.risk import DEFAULT_LEVEL_POLICIES, draft_level_policy, draft_risk_policy
from domain.user_mfa import UserMfa
from projections.public_events import (
    CONFIG_RESOURCES,
    PUBLIC_EVENTS,
    config_subject,
    encode,
    event_id,
    is_published,
    to_public,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
ENTRY = "5b0c2f1e-8d3a-4c6b-9e7f-1a2b3c4d5e6f"
CONFIG_TYPES = {
    MfaConfig.RiskPolicyUpdated: "mfa.config.risk_policy_updated",
    MfaConfig.LevelPolicyUpdated: "mfa.config.level_policy_updated",
    MfaConfig.LevelPolicyReset: "mfa.config.level_policy_reset",
    MfaConfig.AllowlistEntryAdded: "mfa.config.allowlist_entry_added",
    MfaConfig.AllowlistEntryUpdated: "mfa.config.allowlist_entry_updated",
    MfaConfig.AllowlistEntryRemoved: "mfa.config.allowlist_entry_removed",
}


def catalogue_types(text: str) -> set[str]:
    """The types the catalogue table of docs/events.md lists (its first column)."""
    section = text.split("\n## Catalogue\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| [")]
    return {t for row in rows for t in re.findall(r"`(mfa\.[a-z_.]+)`", row.split(" | ")[0])}


def section_headings(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line.startswith("### ")]


def documented_examples(text: str) -> dict[str, dict[str, Any]]:
    """The JSON example of each `### <type>` section (the first block under its heading)."""
    examples: dict[str, dict[str, Any]] = {}
    for block in text.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        found = re.search(r"```json\n(.*?)\n```", body.split("\n## ", 1)[0], re.DOTALL)
        if found is not None:
            examples[heading.strip()] = json.loads(found.group(1))
    return examples


def sample_changes() -> list[Any]:
    """The configuration changes of the examples in docs/events.md, in order."""
    by = ChangedBy("ops-admin", "req-1")
    at = datetime(2026, 3, 1, 12, 3, 0, 123456, tzinfo=UTC)
    config = MfaConfig.start(at)
    config.update_risk_policy(
        draft_risk_policy(
            base_score=5,
            thresholds={"medium": 20, "high": 50, "critical": 80},
            weights={"impossible_travel": 45},
        ),
        by,
        at,
    )
    config.set_level_policy(
        "high",
        draft_level_policy("high", "require_mfa", ["totp", "webauthn"], 120),
        by,
        at + timedelta(seconds=10),
    )
    config.reset_level_policy("high", by, at + timedelta(seconds=20))
    fields: dict[str, Any] = {"cidr": "203.0.113.0/24", "description": "Bob's home office"}
    config.add_allowlist_entry(
        ENTRY, **fields, expires_at=None, by=by, at=at + timedelta(seconds=30)
    )
    config.update_allowlist_entry(
        ENTRY,
        **fields,
        expires_at=datetime(2026, 6, 30, tzinfo=UTC),
        by=by,
        at=at + timedelta(seconds=40),
    )
    config.remove_allowlist_entry(ENTRY, by, at + timedelta(seconds=50))
    events = config.collect_events()
    assert type(events[0]) is MfaConfig.Created
    return list(events[1:])


def public(event: Any) -> dict[str, Any]:
    subject = config_subject(event)
    assert subject is not None
    message: dict[str, Any] = json.loads(encode(to_public(event, subject)))
    return message


def test_every_config_event_has_one_public_type_named_after_it() -> None:
    for cls, public_type in CONFIG_TYPES.items():
        assert PUBLIC_EVENTS[cls][:2] == (public_type, 1)
        # named like the internal event: mfa.config.<event> for topic mfa.config.<event>.v1
        assert vars(cls)["TOPIC"].removesuffix(".v1") == public_type
    assert set(CONFIG_RESOURCES) == set(CONFIG_TYPES)
    assert MfaConfig.Created not in PUBLIC_EVENTS  # bookkeeping, written with the first change


def test_each_config_change_names_its_resource_and_its_new_state_and_actor() -> None:
    events = sample_changes()
    messages = [public(e) for e in events]

    assert [m["type"] for m in messages] == list(CONFIG_TYPES.values())
    assert [m["subject"] for m in messages] == [
        "config:risk-policy",
        "config:risk-policies/high",
        "config:risk-policies/high",
        f"config:ip-whitelist/{ENTRY}",
        f"config:ip-whitelist/{ENTRY}",
        f"config:ip-whitelist/{ENTRY}",
    ]
    for event, message in zip(events, messages, strict=True):
        assert message["id"] == event_id(CONFIG_ID, event.originator_version)
        assert message["dataschema"] == f"urn:mfa:events:{message['type']}:v1"
        assert message["data"]["actor"] == "ops-admin"
        assert to_public(event, "x").nats_subject == "mfa.events." + message["type"][4:]
        assert is_published(event)

    risk, level, reset, added, updated, removed = (m["data"] for m in messages)
    assert risk["base_score"] == 5
    assert risk["thresholds"] == {"medium": 20, "high": 50, "critical": 80}
    assert risk["weights"]["impossible_travel"] == 45
    assert risk["weights"]["known_device"] == -10  # the whole policy in force, defaults too
    assert level == {
        "level": "high",
        "action": "require_mfa",
        "allowed_methods": ["totp", "webauthn"],
        "step_up_max_age_s": 120,
        "actor": "ops-admin",
    }
    default = DEFAULT_LEVEL_POLICIES["high"]
    assert reset == {
        "level": "high",
        "action": default.action,
        "allowed_methods": list(default.allowed_methods),
        "step_up_max_age_s": default.step_up_max_age_s,
        "actor": "ops-admin",
    }
    assert added == {
        "entry_id": ENTRY,
        "cidr": "203.0.113.0/24",
        "expires_at": None,
        "actor": "ops-admin",
    }
    assert updated["expires_at"] == "2026-06-30T00:00:00+00:00"
    assert removed == {"entry_id": ENTRY, "actor": "ops-admin"}
    text = json.dumps(messages)
    for hidden in ("req-1", "Bob's home office", "before", "request_id", "description"):
        assert hidden not in text


def test_a_config_event_is_the_same_message_every_time_it_is_mapped() -> None:
    first, again = sample_changes(), sample_changes()
    assert [public(e) for e in first] == [public(e) for e in again]


def test_every_other_event_keeps_the_user_id_as_its_subject() -> None:
    """`config_subject` is None for them, so the relay looks the user id up as before."""
    others = [cls for cls in PUBLIC_EVENTS if cls not in CONFIG_TYPES]
    assert UserMfa.Created in others
    assert [cls for cls in others if config_subject(object.__new__(cls)) is not None] == []


def test_the_docs_catalogue_lists_every_public_type_with_a_section_of_its_own() -> None:
    text = DOCS.read_text()
    published = {public_type for public_type, _, _ in PUBLIC_EVENTS.values()}
    listed = catalogue_types(text)
    assert published - listed == set(), "types missing from the catalogue of docs/events.md"
    assert listed - published == set(), "the catalogue lists types that are not published"
    headings = section_headings(text)
    for public_type in published:
        assert any(re.search(rf"\b{re.escape(public_type)}\b", h) for h in headings), public_type
    assert "admin configuration changes, which\nhave their own audit log" not in text


@pytest.mark.parametrize("index", range(len(CONFIG_TYPES)))
def test_the_docs_example_of_each_config_type_is_the_mappings_exact_output(index: int) -> None:
    message = public(sample_changes()[index])
    assert documented_examples(DOCS.read_text())[message["type"]] == message
