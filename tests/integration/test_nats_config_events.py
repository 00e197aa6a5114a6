"""Admin configuration changes reach MFA_EVENTS: one CloudEvent per change, in log order among
the users' events, with the config resource as `subject`, the new state and the acting admin
as `data`, `Nats-Msg-Id` = `id` (the id of the same change in the config audit log), and a
type docs/events.md lists."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api.app import build_runtime, close_runtime
from api.settings import Settings
from commands import backup_codes
from commands import config as config_commands
from commands.config import AllowlistEntryDraft, LevelPolicyDraft, RiskPolicyDraft
from domain.config import CONFIG_ID, ChangedBy
from domain.risk import DEFAULT_LEVEL_POLICIES
from projections import nats_relay
from projections.nats_relay import NatsRelay
from projections.public_events import config_subject, encode, event_id, is_published, to_public
from projections.tracking import set_position
from tests.conftest import LiveServer, MutableClock, make_settings, new_user
from tests.integration.nats_support import PrivateNats, stream_messages
from tests.projections.test_public_config_events import DOCS, catalogue_types

pytestmark = pytest.mark.nats
ADMIN = "ops-root"
CONFIG_TYPES = [
    "mfa.config.risk_policy_updated",
    "mfa.config.level_policy_updated",
    "mfa.config.level_policy_reset",
    "mfa.config.allowlist_entry_added",
    "mfa.config.allowlist_entry_updated",
    "mfa.config.allowlist_entry_removed",
]
DESCRIPTION = "Bob's home office"


def _wait(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_kind_of_config_change_made_over_http_is_published_with_its_resource_as_subject(
    tmp_path: Path,
    database_url: str,
    private_nats: PrivateNats,
    start_server: Callable[[Settings], LiveServer],
) -> None:
    server = start_server(make_settings(tmp_path, database_url, MFA_NATS_URL=private_nats.url))
    admin = server.client(ADMIN, "mfa:admin")
    user = new_user()
    client = server.client(user)
    _ok(client.post("/mfa/backup-codes/generate"), 201)

    policy = {"base_score": 5, "thresholds": {"medium": 20, "high": 50, "critical": 80}}
    policy["weights"] = {"impossible_travel": 45}
    _ok(admin.put("/admin/mfa/risk-policy", json=policy, headers={"X-Request-ID": "req-77"}))
    level = {"action": "deny", "allowed_methods": [], "step_up_max_age_s": 0}
    _ok(admin.put("/admin/mfa/risk-policies/critical", json=level))
    _ok(admin.delete("/admin/mfa/risk-policies/critical"))
    expires = server.clock.now() + timedelta(days=30)
    entry = {"cidr": "203.0.113.0/24", "description": DESCRIPTION}
    added = _ok(
        admin.post("/admin/mfa/ip-whitelist", json={**entry, "expires_at": expires.isoformat()}),
        201,
    )
    entry_id = added["id"]
    changed = {"cidr": "2001:db8::/48", "description": DESCRIPTION + " (v6)"}
    _ok(admin.put(f"/admin/mfa/ip-whitelist/{entry_id}", json=changed))
    _ok(admin.delete(f"/admin/mfa/ip-whitelist/{entry_id}"))
    _ok(client.post("/mfa/backup-codes/generate"), 201)

    _wait(lambda: len(stream_messages(private_nats.url)) >= 9)
    stream = stream_messages(private_nats.url)
    events = [m["event"] for m in stream]
    assert [e["type"] for e in events] == [
        "mfa.user.created",
        "mfa.backup_codes.generated",
        *CONFIG_TYPES,
        "mfa.backup_codes.generated",
    ]
    # In log order, like every other event (the stream is the log's public events).
    app = server.runtime.services.app
    expected_ids = [
        event_id(n.originator_id, n.originator_version)
        for n in app.recorder.select_notifications(start=1, limit=1000)
        if is_published(app.mapper.to_domain_event(n))
    ]
    assert [m["msg_id"] for m in stream] == expected_ids
    for message in stream:
        body = message["event"]
        assert message["msg_id"] == body["id"]
        assert message["subject"] == "mfa.events." + body["type"].removeprefix("mfa.")
        assert body["specversion"] == "1.0"
        assert body["source"] == "urn:mfa:service"
        assert body["datacontenttype"] == "application/json"
        assert body["dataschema"] == f"urn:mfa:events:{body['type']}:v1"
        assert body["time"].startswith("2026-03-01T12:00:00")

    user_events = [events[0], events[1], events[-1]]
    assert {e["subject"] for e in user_events} == {user}
    config = events[2:-1]
    assert [e["subject"] for e in config] == [
        "config:risk-policy",
        "config:risk-policies/critical",
        "config:risk-policies/critical",
        f"config:ip-whitelist/{entry_id}",
        f"config:ip-whitelist/{entry_id}",
        f"config:ip-whitelist/{entry_id}",
    ]
    risk, level_set, level_reset, entry_added, entry_updated, entry_removed = (
        e["data"] for e in config
    )
    saved = _ok(admin.get("/admin/mfa/risk-policy"))
    assert risk == {
        "base_score": 5,
        "thresholds": {"medium": 20, "high": 50, "critical": 80},
        "weights": saved["weights"],  # every weight in force, not only the ones sent
        "actor": ADMIN,
    }
    assert risk["weights"]["impossible_travel"] == 45
    assert level_set == {"level": "critical", **level, "actor": ADMIN}
    default = DEFAULT_LEVEL_POLICIES["critical"]
    assert level_reset == {
        "level": "critical",
        "action": default.action,
        "allowed_methods": list(default.allowed_methods),
        "step_up_max_age_s": default.step_up_max_age_s,
        "actor": ADMIN,
    }
    assert entry_added == {
        "entry_id": entry_id,
        "cidr": "203.0.113.0/24",
        "expires_at": expires.isoformat(),
        "actor": ADMIN,
    }
    assert entry_updated == {
        "entry_id": entry_id,
        "cidr": "2001:db8::/48",
        "expires_at": None,
        "actor": ADMIN,
    }
    assert entry_removed == {"entry_id": entry_id, "actor": ADMIN}
    text = json.dumps(events)
    assert DESCRIPTION not in text  # a label an admin typed, like a device name
    assert "req-77" not in text  # request details stay in the audit log

    # The same changes the config audit log shows, under the same ids, by the same admin.
    def audit() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _ok(admin.get("/admin/mfa/config-audit-logs"))["items"]
        return items

    _wait(lambda: len(audit()) == len(CONFIG_TYPES))
    oldest_first = list(reversed(audit()))
    assert [e["id"] for e in oldest_first] == [e["id"] for e in config]
    assert {e["actor"] for e in oldest_first} == {ADMIN}
    assert [e["after"] for e in oldest_first][3]["cidr"] == entry_added["cidr"]

    # docs/events.md lists every type that went out.
    assert {e["type"] for e in events} <= catalogue_types(DOCS.read_text())


def test_the_relay_publishes_config_changes_under_their_resource_and_dedupes_a_rerun(
    tmp_path: Path,
    database_url: str,
    private_nats: PrivateNats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Made through the commands and published by the relay itself: each message is the
    mapping's output with the config resource as subject (never the user-id lookup, which
    would name `urn:mfa:erased-user`), and publishing the log again from the start adds
    nothing (stable ids, deduplicated by JetStream)."""
    caplog.set_level(logging.WARNING, logger="mfa.relay")
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=MutableClock(), run_projections=False
    )
    services = runtime.services
    app = services.app
    relay: NatsRelay | None = None
    try:
        by = ChangedBy(ADMIN, "req-1")
        backup_codes.generate_backup_codes(services, new_user())
        config_commands.update_risk_policy(services, RiskPolicyDraft(base_score=0), by)
        medium = LevelPolicyDraft("require_mfa", ["totp", "webauthn"], 60)
        config_commands.set_level_policy(services, "medium", medium, by)
        config_commands.reset_level_policy(services, "medium", by)
        draft = AllowlistEntryDraft("10.20.0.0/16", DESCRIPTION)
        entry = config_commands.add_allowlist_entry(services, draft, by).value
        draft = AllowlistEntryDraft("10.21.0.0/16", DESCRIPTION)
        config_commands.update_allowlist_entry(services, entry.entry_id, draft, by)
        config_commands.remove_allowlist_entry(services, entry.entry_id, by)
        backup_codes.generate_backup_codes(services, new_user())

        public = [
            e
            for n in app.recorder.select_notifications(start=1, limit=1000)
            if is_published(e := app.mapper.to_domain_event(n))
        ]
        config = [e for e in public if e.originator_id == CONFIG_ID]
        assert [to_public(e, "-").type for e in config] == CONFIG_TYPES
        resource = f"config:ip-whitelist/{entry.entry_id}"
        assert [config_subject(e) for e in config] == [
            "config:risk-policy",
            "config:risk-policies/medium",
            "config:risk-policies/medium",
            resource,
            resource,
            resource,
        ]

        relay = NatsRelay(app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        _wait(lambda: relay is not None and relay.position() == app.max_position())
        relay.stop()
        first = stream_messages(private_nats.url)
        assert len(first) == len(public)
        for message, event in zip(first, public, strict=True):
            subject = config_subject(event) or message["event"]["subject"]
            expected = json.loads(encode(to_public(event, subject)))
            assert message["event"] == expected
            assert message["msg_id"] == expected["id"]
        published_config = [m["event"] for m in first if m["event"]["type"] in CONFIG_TYPES]
        assert [m["subject"] for m in published_config] == [config_subject(e) for e in config]
        assert all(m["data"]["actor"] == ADMIN for m in published_config)
        with runtime.db.transaction() as cur:
            cur.execute(
                "SELECT count(*) FROM mfa_relay_subjects WHERE aggregate_id = %s", (str(CONFIG_ID),)
            )
            assert cur.fetchone()[0] == 0  # config events taught the relay no user

        with runtime.db.transaction() as cur:
            set_position(cur, nats_relay.TRACKING_NAME, 0)
        relay = NatsRelay(app, runtime.db, private_nats.url, poll_interval=0.01)
        relay.start()
        _wait(lambda: relay is not None and relay.position() == app.max_position())
        relay.stop()
        assert stream_messages(private_nats.url) == first
        relay_warnings = [r for r in caplog.records if r.name == "mfa.relay"]
        assert not [r.getMessage() for r in relay_warnings if r.levelno >= logging.WARNING]
    finally:
        if relay is not None:
            relay.stop()
        close_runtime(runtime)
