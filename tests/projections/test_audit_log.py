"""The config audit log projection: one row per change, rebuilt from position 0 identically."""

from __future__ import annotations

from pathlib import Path

from api.app import build_runtime
from api.deps import Runtime
from commands import config
from commands.config import AllowlistEntryDraft, LevelPolicyDraft, RiskPolicyDraft
from domain.config import ChangedBy
from projections.audit_log import list_config_audit_log
from projections.rebuild import rebuild_projection
from projections.runner import ProjectionRunner
from tests.conftest import MutableClock, close_runtime, make_settings


def _changes(runtime: Runtime, clock: MutableClock) -> None:
    services = runtime.services
    alice, bob = ChangedBy("alice", "r1"), ChangedBy("bob", "r2")
    config.update_risk_policy(services, RiskPolicyDraft(base_score=20), alice)
    clock.advance(1)
    config.set_level_policy(services, "high", LevelPolicyDraft("deny", []), bob)
    clock.advance(1)
    config.reset_level_policy(services, "high", alice)
    entry = config.add_allowlist_entry(services, AllowlistEntryDraft("10.0.0.0/8"), bob).value
    clock.advance(1)
    config.update_allowlist_entry(
        services, entry.entry_id, AllowlistEntryDraft("10.0.0.0/16", "lab"), alice
    )
    config.remove_allowlist_entry(services, entry.entry_id, bob)


def test_every_config_change_becomes_one_row_and_a_rebuild_equals_the_live_log(
    tmp_path: Path, database_url: str
) -> None:
    clock = MutableClock()
    runtime = build_runtime(
        make_settings(tmp_path, database_url), clock=clock, run_projections=False
    )
    try:
        _changes(runtime, clock)
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
        with runtime.db.transaction() as cur:
            live, _ = list_config_audit_log(cur, limit=50)

        report = rebuild_projection(
            runtime.services.app, runtime.read_models, "config_audit_log", compare=True
        )

        assert report.matched_live is True, report
        assert report.rows == 6
        assert [(r["action"], r["actor"]) for r in live] == [
            ("ip_allowlist_entry.deleted", "bob"),
            ("ip_allowlist_entry.updated", "alice"),
            ("ip_allowlist_entry.created", "bob"),
            ("level_policy.reset", "alice"),
            ("level_policy.updated", "bob"),
            ("risk_policy.updated", "alice"),
        ]
        assert live[-1]["before"]["base_score"] == 10
        assert live[-1]["after"]["base_score"] == 20
        with runtime.db.transaction() as cur:
            rebuilt, _ = list_config_audit_log(cur, limit=50)
        assert rebuilt == live
    finally:
        close_runtime(runtime)
