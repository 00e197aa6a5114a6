"""Auditors: `mfa audit history|state|export`, `mfa projections status|rebuild`, and HTTP."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from api.settings import Settings
from tests.api.helpers import code_at
from tests.api.test_totp import enrol
from tests.conftest import LiveServer, new_user

MFA = Path(sys.executable).parent / "mfa"


def audit_env(tmp_path: Path, database_url: str = "") -> dict[str, str]:
    """The service's and the commands' environment: SQLite in `tmp_path` unless a URL."""
    return {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'mfa.sqlite'}",
        "MFA_JWT_SECRET": "audit-secret-" + "q" * 40,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }


def mfa(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MFA), *args],
        env={**os.environ, **settings_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_mfa(settings_env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = mfa(settings_env, *args)
    result.check_returncode()
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_history_state_export_and_projection_commands_replay_the_log(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    env = audit_env(tmp_path)
    server = start_server(Settings.from_env(env))
    user = new_user()
    client = server.client(user)
    _, secret = enrol(client, server)
    enrolled_at = server.clock.now()
    server.clock.advance(3600)
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    server.clock.advance(30)
    client.post("/mfa/totp/validate", json={"code": code_at(secret, server.clock.now())})
    assert server.runtime.read_models.wait_for(server.runtime.services.app.max_position(), 30)
    server.stop()

    history = run_mfa(env, "audit", "history", user)
    types = [entry["type"] for entry in history]
    assert types == [
        "mfa.user.created.v1",
        "mfa.totp.device_registered.v1",
        "mfa.totp.device_verified.v1",
        "mfa.backup_codes.generated.v1",
        "mfa.totp.code_accepted.v1",
    ]
    assert [entry["position"] for entry in history] == sorted(e["position"] for e in history)
    assert history[1]["data"]["secret"] == "***"
    unknown = mfa(env, "audit", "history", "user-never-seen")  # a typo is not an empty history
    assert unknown.returncode == 1, unknown
    assert unknown.stdout == ""
    assert "no MFA events for 'user-never-seen'" in unknown.stderr
    assert history[3]["data"]["codes"] == "***"
    text = json.dumps(history)
    assert secret not in text
    assert not any(code in text for code in codes)

    before = run_mfa(
        env, "audit", "state", user, "--at", (enrolled_at + timedelta(minutes=1)).isoformat()
    )
    assert before[0]["backup_codes"] is None
    assert before[0]["totp_devices"][0]["status"] == "active"
    after = run_mfa(env, "audit", "state", user, "--at", server.clock.now().isoformat())
    lower_case = server.clock.now().strftime("%Y-%m-%dt%H:%M:%S.%fz")
    assert run_mfa(env, "audit", "state", user, "--at", lower_case) == after
    assert after[0]["backup_codes"]["remaining"] == 10
    assert secret not in json.dumps(after)

    exported = run_mfa(env, "audit", "export")
    for beyond in (str(2**63), "-1"):  # clean usage errors, never a traceback
        refused = mfa(env, "audit", "export", "--after", beyond)
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
        assert "--after" in refused.stderr
    assert [e["position"] for e in exported] == list(range(1, len(exported) + 1))
    assert len(exported) >= len(history)

    status = {s["name"]: s for s in run_mfa(env, "projections", "status")}
    assert all(s["lag"] == 0 for s in status.values())
    rebuilt = run_mfa(env, "projections", "rebuild", "totp_devices")
    assert rebuilt[0]["matched_live"] is True


def test_admins_page_through_a_users_history_over_http(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    for _ in range(3):
        client.post("/mfa/backup-codes/generate")
    admin = server.client("root", "mfa:admin")
    first = admin.get(f"/admin/mfa/users/{user}/events", params={"limit": 2}).json()
    assert [e["version"] for e in first["items"]] == [1, 2]
    rest = admin.get(
        f"/admin/mfa/users/{user}/events", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [e["version"] for e in rest["items"]] == [3, 4]
    assert rest["next_cursor"] is None
    assert all(e["data"]["codes"] == "***" for e in first["items"][1:] + rest["items"])
    assert server.client(user).get(f"/admin/mfa/users/{user}/events").status_code == 403
    bad = admin.get(f"/admin/mfa/users/{user}/events", params={"cursor": "@@@"})
    assert bad.status_code == 400


def test_the_state_of_an_erased_user_reads_as_redacted_with_the_erasure_not_as_nothing(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    """`audit state` read only the current epoch: for an erased user it said "no MFA events",
    before and after the erasure, as if nothing had ever existed."""
    env = audit_env(tmp_path)
    server = start_server(Settings.from_env(env))
    user = new_user()
    client = server.client(user)
    enrol(client, server)
    enrolled = server.clock.now()
    server.clock.advance(60)
    erased = server.clock.now()
    internal = server.client("svc", "mfa:internal")
    assert internal.post("/internal/mfa/erase", json={"user_id": user}).status_code == 200
    server.clock.advance(60)
    between = server.clock.now()
    server.clock.advance(60)
    assert client.post("/mfa/backup-codes/generate").status_code == 201
    again = server.clock.now()
    server.stop()

    def state(at: datetime) -> dict[str, Any]:
        (answer,) = run_mfa(env, "audit", "state", user, "--at", at.isoformat())
        return answer

    assert state(enrolled)["redacted"] is True  # what it was then was shredded
    assert state(enrolled)["erased_at"] == state(between)["erased_at"]
    assert datetime.fromisoformat(state(between)["erased_at"]) == erased
    assert "totp_devices" not in state(between)
    now = state(again)
    assert (now["redacted"], now["erased_at"]) == (False, None)
    assert now["backup_codes"]["remaining"] == 10
    assert now["totp_devices"] == []

    too_early = mfa(env, "audit", "state", user, "--at", (enrolled - timedelta(days=1)).isoformat())
    assert too_early.returncode == 1, too_early.stderr
    assert "no MFA events" in too_early.stderr
    assert too_early.stderr.rstrip().endswith("Z"), too_early.stderr  # as the JSON answers


def test_audit_state_takes_rfc_3339_times_only_and_answers_in_utc(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    env = audit_env(tmp_path)
    server = start_server(Settings.from_env(env))
    user = new_user()
    assert server.client(user).post("/mfa/backup-codes/generate").status_code == 201
    server.stop()
    for vague in ("2026-03-01", "2026-W09-7", "2026-03-01T12", "20260301T120000Z", "soon"):
        refused = mfa(env, "audit", "state", user, "--at", vague)
        assert refused.returncode == 2, (vague, refused.stderr)
        assert "RFC 3339" in refused.stderr
        assert "Traceback" not in refused.stderr
    (answer,) = run_mfa(env, "audit", "state", user, "--at", "2999-01-01T02:00:00+02:00")
    assert answer["as_of"] == "2999-01-01T00:00:00Z"


def test_an_altered_event_is_reported_as_damaged_not_passed_off_as_an_erasure(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    """One event whose stored time was moved read as redacted, the user's whole state as
    erased, and every command exited 0: an alteration looked like a lawful erasure."""
    env = audit_env(tmp_path)
    server = start_server(Settings.from_env(env))
    user = new_user()
    client = server.client(user)
    assert client.post("/mfa/backup-codes/generate").status_code == 201
    server.clock.advance(3600)
    assert client.post("/mfa/backup-codes/generate").status_code == 201
    assert server.runtime.read_models.wait_for(server.runtime.services.app.max_position(), 30)
    server.stop()
    events = sqlite3.connect(tmp_path / "mfa-events.sqlite")
    (rowid, state) = events.execute(
        "SELECT rowid, state FROM stored_events ORDER BY rowid DESC LIMIT 1"
    ).fetchone()
    envelope = json.loads(state)
    envelope["ts"] = "2026-03-01T12:00:01+00:00"  # the second generation, an hour earlier
    events.execute(
        "UPDATE stored_events SET state = ? WHERE rowid = ?", (json.dumps(envelope), rowid)
    )
    events.commit()

    for command in (("audit", "history", user), ("audit", "export")):
        result = mfa(env, *command)
        assert result.returncode == 1, result
        entries = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["damaged"] for e in entries] == [False] * (len(entries) - 1) + [True]
        assert entries[-1]["redacted"] is True
        assert result.stderr.splitlines()[-1] == (
            'Error: 1 event(s) above ("damaged": true) do not decrypt with their key: the '
            "stored rows were altered or damaged"
        )
    state = mfa(env, "audit", "state", user, "--at", "2026-03-01T13:00:00Z")
    assert (state.returncode, state.stdout) == (1, "")
    assert state.stderr.splitlines()[-1].startswith("Error: event ")
    assert state.stderr.splitlines()[-1].endswith("the state cannot be replayed")

    events.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (b"{not json", rowid))
    events.commit()
    events.close()
    for command in (("audit", "history", user), ("audit", "export")):
        result = mfa(env, *command)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        assert result.stderr.endswith("cannot be read (the stored row was altered or damaged)\n"), (
            result.stderr
        )
